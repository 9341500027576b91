/**
 * registry.h - the process-wide script registries: what is in the agents directory and in the
 * providers directory, validated. Agents and providers are handled the same way; only the
 * contract their files must meet differs (vm.h).
 *
 * One thread (the main thread, which also watches the directory) calls lg_registry_scan(); it reads
 * every `*.lua` under the directory (nested folders name agents with dots: team/review.lua ->
 * team.review), and for each new or changed file compiles and runs it once in its own validation
 * VM. A file that loads and passes the contract replaces the agent's source and version and bumps
 * the registry generation; a file that fails leaves the last good version in place and records its
 * error (shown by the REST API, logged once). A file that disappears unregisters its agent.
 * Workers never block on the scan: they compare lg_registry_gen() with the generation they last
 * synced and, when it moved, copy the changed sources under the lock (lg_registry_each) and compile
 * them in their own VM outside it (src/lrt/agents.c).
 */
#ifndef LUAGENT_REGISTRY_H
#define LUAGENT_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "luagent/buf.h"
#include "luagent/vm.h"

typedef struct lg_agent_entry {
    char *name;         /* "team.review" */
    char *relpath;      /* "team/review.lua" (also the chunk name, so errors read "team/review.lua:3: ...") */
    char *source;       /* last good source, NULL if the file never loaded */
    size_t source_len;
    char version[17];   /* first 16 hex digits of SHA-256(source); "" when never loaded */
    char *description;  /* NULL when none */
    char *input_json;   /* the agent's `input` schema as JSON, NULL when none */
    int timeout_ms;     /* 0: the server default */
    char *error;        /* last load error, NULL when the file as it is now loads */
    uint64_t gen;       /* registry generation of the last good load */
    uint64_t updated_at_ms;
    char seen_hash[65]; /* SHA-256 of the content last examined */
    int mark;
} lg_agent_entry_t;

/** Set a kind's directory and the memory limit for top-level code. Call before its first scan. A
 *  kind never initialised stays empty. */
int lg_registry_init(lg_script_kind_t kind, const char *dir, size_t mem_limit);
/** Free every kind and the validation VM. */
void lg_registry_dispose(void);
/** Bring the registry in line with the directory. Returns the number of scripts changed. */
int lg_registry_scan(lg_script_kind_t kind);
/** Errors found by the last scans that are still present (for `luagent check`). */
size_t lg_registry_error_count(lg_script_kind_t kind);
uint64_t lg_registry_gen(lg_script_kind_t kind);
size_t lg_registry_count(lg_script_kind_t kind);
/** Call fn for every entry with the registry locked; fn must only copy what it needs. */
void lg_registry_each(lg_script_kind_t kind, void (*fn)(void *ud, const lg_agent_entry_t *e), void *ud);
/** Append {"items": [...]} (sorted by name) or one script's object; the latter returns -1 if unknown. */
void lg_registry_json_all(lg_script_kind_t kind, lg_buf_t *out);
int lg_registry_json_one(lg_script_kind_t kind, lg_buf_t *out, const char *name, size_t len);

#endif
