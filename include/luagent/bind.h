/**
 * bind.h - the `luagent` Lua API (DESIGN §3), one file per family under src/bind/.
 *
 * lg_bind_open pushes the complete API table; the VM stores it as the template every agent
 * environment copies. Functions that need the running execution find it with lg_sched_current();
 * outside an execution (an agent's top-level code) they raise "X can only be called inside
 * execute()". Yielding functions check that they run on the execution's own coroutine.
 */
#ifndef LUAGENT_BIND_H
#define LUAGENT_BIND_H

#include <lua.h>

/** Push the `luagent` table: sleep, now, uuid, log, json, crypto, http, cache, db, ai, redis, agents. It
 *  also leaves the result-cache wrapper factory in the registry under LG_CACHE_WRAP_KEY. */
void lg_bind_open(lua_State *L);
/** print(...) for agents: one info log line with the arguments joined by tabs. */
int lg_bind_print(lua_State *L);
/** Push `luagent.log` (debug/info/warn/error(msg, fields)); lines carry the current execution's ids. */
void lg_bind_open_log(lua_State *L);
/** Push `luagent.http` (request). */
void lg_bind_open_http(lua_State *L);
/** Push a function like luagent.http.request that rides H2O's own HTTP/1.1 client (upstream.h)
 *  instead of libcurl: luagent.ai's transport to providers. It also takes `lean = true`: a 2xx
 *  reply then comes without its headers and with the body decoded into `json` (or the raw `body`
 *  when it is not JSON), so a provider call builds no objects it does not need; with `shape =
 *  json.shape{...}` only the members it names are built (the request holds the shape). The same
 *  without an options table, lean: request(method, url, headers, body, timeout_ms, stream, shape). */
void lg_bind_push_upstream_request(lua_State *L);
/** Push `luagent.ai` (chat, run), given the index of the `luagent` table being built. */
void lg_bind_open_ai(lua_State *L, int luagent);
/** Push `luagent.cache` (get, set, delete). (src/bind/cache.c) */
void lg_bind_open_cache(lua_State *L);
/** Push ctx.session for the ctx table at ctx_idx: {get, set, delete} bound to its
 *  context.session_id (raising a clear error when the request has none). */
void lg_bind_push_session(lua_State *L, int ctx_idx);
/** Push the result-cache wrapper factory: wrap(execute, ttl_seconds) -> execute'. */
void lg_bind_push_cache_wrap(lua_State *L);
#define LG_CACHE_WRAP_KEY "luagent.cache_wrap"
/** Size the in-memory store behind the cache (once, before any worker runs). */
void lg_cache_init(void);
/** Push `luagent.db` (query, tx): PostgreSQL through the runtime's pool (src/bind/db.c). */
void lg_bind_open_db(lua_State *L);
/** Push `luagent.crypto` (sha256, hmac). */
void lg_bind_open_crypto(lua_State *L);
/** Push `luagent.redis` (call). */
void lg_bind_open_redis(lua_State *L);
/** Push `luagent.agents` (call, parallel): child executions on this worker (src/bind/agents.c). */
void lg_bind_open_agents(lua_State *L);

#endif
