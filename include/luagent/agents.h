/**
 * agents.h - a runtime's own copy of the agents and providers: each worker VM loads the registry's sources
 * (registry.h) lazily, before its next execution after a change. Executions already running keep
 * the function they started with, so they finish on the old version.
 */
#ifndef LUAGENT_AGENTS_H
#define LUAGENT_AGENTS_H

#include "luagent/schema.h"
#include "luagent/sched.h"

/** Record fields, at these array indices of the record table. */
enum {
    LG_AGENT_EXECUTE = 1, /* agents only */
    LG_AGENT_VERSION,
    LG_AGENT_CONFIG,      /* agents only */
    LG_AGENT_TIMEOUT,     /* agents only */
    LG_AGENT_GEN,
    LG_AGENT_STAMP,
    LG_REC_MODULE,        /* the table the file returned */
    LG_AGENT_INPUT,       /* agents only: the compiled `input` schema (userdata, schema.h), nil when none */
};

/** Bring this runtime's agents and providers in line with the registry (cheap when nothing changed). */
void lg_agents_sync(lg_rt_t *rt);
/** Push the record of script `name` on L (a thread of rt's VM) and return 1, or push nothing and
 *  return 0 when there is no such script. Syncs that kind first. */
int lg_scripts_push(lg_rt_t *rt, lg_script_kind_t kind, lua_State *L, const char *name, size_t len);
#define lg_agents_push(rt, L, name, len) lg_scripts_push((rt), LG_SCRIPT_AGENT, (L), (name), (len))
/** Check the task at stack index `task` of L against the input schema of the agent record at `rec`.
 *  Returns 0 when the agent has no schema or the task satisfies it, else the number of failures
 *  (lg_schema_validate: exact up to LG_SCHEMA_MAX_ERRORS), also stored in `report` (may be NULL)
 *  with the details. Leaves the stack as it was. Costs one table read for an agent without `input`. */
size_t lg_agent_check_input(lua_State *L, int rec, int task, lg_schema_report_t *report);

#endif
