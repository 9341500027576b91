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

/** Push the `luagent` table: sleep, now, uuid, log, json, crypto, http, db, ai. */
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
 *  when it is not JSON), so a provider call builds no objects it does not need. */
void lg_bind_push_upstream_request(lua_State *L);
/** Push `luagent.ai` (chat, run), given the index of the `luagent` table being built. */
void lg_bind_open_ai(lua_State *L, int luagent);
/** Push `luagent.db` (query, tx): PostgreSQL through the runtime's pool (src/bind/db.c). */
void lg_bind_open_db(lua_State *L);
/** Push `luagent.crypto` (sha256, hmac). */
void lg_bind_open_crypto(lua_State *L);

#endif
