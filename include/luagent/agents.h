/**
 * agents.h - a runtime's own copy of the agents: each worker VM loads the registry's sources
 * (registry.h) lazily, before its next execution after a change. Executions already running keep
 * the function they started with, so they finish on the old version.
 */
#ifndef LUAGENT_AGENTS_H
#define LUAGENT_AGENTS_H

#include "luagent/sched.h"

/** Record fields, at these array indices of the record table. */
enum { LG_AGENT_EXECUTE = 1, LG_AGENT_VERSION, LG_AGENT_CONFIG, LG_AGENT_TIMEOUT, LG_AGENT_GEN, LG_AGENT_STAMP };

/** Bring this runtime's agents in line with the registry (cheap when nothing changed). */
void lg_agents_sync(lg_rt_t *rt);
/** Push the record of agent `name` on L (a thread of rt's VM) and return 1, or push nothing and
 *  return 0 when there is no such agent. Syncs first. */
int lg_agents_push(lg_rt_t *rt, lua_State *L, const char *name, size_t len);

#endif
