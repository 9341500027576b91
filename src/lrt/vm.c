#include "luagent/vm.h"

#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "luagent/bind.h"
#include "luagent/ids.h"
#include "luagent/json.h"
#include "luagent/schema.h"

#define TEMPLATE_KEY "luagent.sandbox_template"
#define SHARED_KEY "luagent.sandbox_shared" /* tables agents share instead of copying (json.array_mt) */

/* ---- allocator: size classes for small blocks, charging the current budget ----
 * Lua passes the old size on every call, so small blocks need no header: a block of class c is
 * c * 16 bytes, carved from 64 KiB chunks and kept on a per-class free list once freed. Blocks
 * above LG_SMALL_MAX go to malloc. This is the per-request hot path (every table and string). */

static void hook_on(lg_vm_t *vm);

#define CHUNK_BYTES (64u << 10)
#define CLASS_OF(n) (((n) + 15) >> 4)

static void *small_alloc(lg_vm_t *vm, size_t n)
{
    size_t c = CLASS_OF(n);
    void *p = vm->free_lists[c];
    if (p != NULL) {
        /* Freed blocks are mostly cold (the GC's sweep frees thousands at a time): fetch the next
         * one now, so the next allocation of this class neither waits for its link nor, later,
         * LuaJIT for the object it writes there. Without it this load was ~90% of vm_alloc. */
        void *next = *(void **)p;
        vm->free_lists[c] = next;
        if (next != NULL)
            __builtin_prefetch(next, 1);
        return p;
    }
    size_t bytes = c << 4;
    if (vm->chunk_left < bytes) {
        char *chunk = malloc(CHUNK_BYTES);
        if (chunk == NULL)
            return NULL;
        *(void **)chunk = vm->chunks; /* chunks are listed through their first 16 bytes */
        vm->chunks = chunk;
        vm->chunk_pos = chunk + 16;
        vm->chunk_left = CHUNK_BYTES - 16;
    }
    p = vm->chunk_pos;
    vm->chunk_pos += bytes;
    vm->chunk_left -= bytes;
    return p;
}

static void small_free(lg_vm_t *vm, void *p, size_t n)
{
    size_t c = CLASS_OF(n);
    *(void **)p = vm->free_lists[c];
    vm->free_lists[c] = p;
}

static void *vm_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lg_vm_t *vm = ud;
    lg_budget_t *b = vm->current;
    if (ptr == NULL)
        osize = 0;
    if (nsize == 0) {
        if (ptr == NULL)
            return NULL;
        if (osize <= LG_SMALL_MAX)
            small_free(vm, ptr, osize);
        else
            free(ptr);
        vm->bytes -= osize;
        if (b != NULL)
            b->mem_used -= (ssize_t)osize;
        return NULL;
    }
    if (b != NULL && b->mem_limit != 0 && nsize > osize && b->mem_used + (ssize_t)(nsize - osize) > (ssize_t)b->mem_limit) {
        b->mem_exceeded = 1;
        hook_on(vm);
        return NULL;
    }
    void *p;
    if (osize > LG_SMALL_MAX && nsize > LG_SMALL_MAX) {
        p = realloc(ptr, nsize);
        if (p == NULL)
            return nsize <= osize ? ptr : NULL;
    } else if (ptr != NULL && osize <= LG_SMALL_MAX && nsize <= LG_SMALL_MAX && CLASS_OF(osize) == CLASS_OF(nsize)) {
        p = ptr;
    } else {
        p = nsize <= LG_SMALL_MAX ? small_alloc(vm, nsize) : malloc(nsize);
        if (p == NULL)
            return nsize <= osize ? ptr : NULL;
        if (ptr != NULL) {
            memcpy(p, ptr, osize < nsize ? osize : nsize);
            if (osize <= LG_SMALL_MAX)
                small_free(vm, ptr, osize);
            else
                free(ptr);
        }
    }
    vm->bytes += nsize - osize;
    if (b != NULL)
        b->mem_used += (ssize_t)nsize - (ssize_t)osize;
    return p;
}

lg_vm_t *lg_vm_of(lua_State *L)
{
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

/* ---- runaway control (vm.h) ---- */

__thread lg_vm_t *lg_vm_running;

static void vm_hook(lua_State *L, lua_Debug *ar);

/* Install the every-instruction hook. On the VM's thread only: from normal code or from the
 * watchdog's signal handler (lua_sethook is async-signal-safe, as luajit.c's SIGINT handler uses it). */
static void hook_on(lg_vm_t *vm)
{
    if (!atomic_exchange_explicit(&vm->hook_on, 1, memory_order_relaxed))
        lua_sethook(vm->L, vm_hook, LUA_MASKCOUNT, 1);
}

static void vm_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lg_vm_t *vm = lg_vm_of(L);
    lg_budget_t *b = vm->current;
    const char *why = NULL;
    if (b == NULL) {
        /* between executions */
    } else if (b->mem_exceeded) {
        why = "memory limit exceeded";
    } else if (b->timed_out || (b->deadline_ms != 0 && lg_now_mono_ms() >= b->deadline_ms)) {
        b->timed_out = 1;
        why = "execution deadline exceeded";
    }
    if (why == NULL) { /* the execution that was being stopped is gone (or a late signal) */
        atomic_store_explicit(&vm->hook_on, 0, memory_order_relaxed);
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    /* The hook stays on every instruction: an agent that catches this error with pcall gets it
     * again at its next instruction outside the pcall, until nothing of it is left running. */
    luaL_error(L, "%s", why);
}

static void on_watch_signal(int sig)
{
    (void)sig;
    lg_vm_t *vm = lg_vm_running;
    if (vm != NULL && vm->current != NULL)
        hook_on(vm);
}

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
static lg_vm_t *watched; /* every open VM, under watch_lock */

static void *watchdog(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, LG_VM_WATCH_MS * 1000000L};
        nanosleep(&ts, NULL);
        uint64_t now = lg_now_mono_ms();
        pthread_mutex_lock(&watch_lock); /* a VM is closed, and its thread ends, only after it left the list */
        for (lg_vm_t *vm = watched; vm != NULL; vm = vm->watch_next) {
            uint64_t d = atomic_load_explicit(&vm->watch_deadline, memory_order_acquire);
            if (d != 0 && now >= d && !atomic_load_explicit(&vm->hook_on, memory_order_relaxed))
                pthread_kill(vm->thread, LG_VM_SIGNAL);
        }
        pthread_mutex_unlock(&watch_lock);
    }
    return NULL;
}

static void watch_start(void)
{
    struct sigaction sa = {.sa_handler = on_watch_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(LG_VM_SIGNAL, &sa, NULL);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the watchdog takes no signals */
    pthread_t t;
    if (pthread_create(&t, NULL, watchdog, NULL) != 0)
        abort();
    pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void watch_add(lg_vm_t *vm)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, watch_start);
    pthread_mutex_lock(&watch_lock);
    vm->watch_next = watched;
    if (watched != NULL)
        watched->watch_prev = vm;
    watched = vm;
    pthread_mutex_unlock(&watch_lock);
}

static void watch_remove(lg_vm_t *vm)
{
    pthread_mutex_lock(&watch_lock);
    if (vm->watch_prev != NULL)
        vm->watch_prev->watch_next = vm->watch_next;
    else
        watched = vm->watch_next;
    if (vm->watch_next != NULL)
        vm->watch_next->watch_prev = vm->watch_prev;
    pthread_mutex_unlock(&watch_lock);
    if (lg_vm_running == vm)
        lg_vm_running = NULL;
}

/* ---- sandbox ---- */

/* load(chunk [, chunkname [, mode [, env]]]) / loadstring: text chunks only, JIT off, agent env. */
static int sandbox_load(lua_State *L)
{
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    if (s == NULL || lua_type(L, 1) != LUA_TSTRING)
        return luaL_argerror(L, 1, "a string is required (function readers are not supported)");
    const char *name = luaL_optstring(L, 2, "=(load)");
    const char *mode = luaL_optstring(L, 3, "t");
    if (strchr(mode, 't') == NULL || (len > 0 && s[0] == LUA_SIGNATURE[0])) {
        lua_pushnil(L);
        lua_pushstring(L, "attempt to load a binary chunk (only text chunks are allowed)");
        return 2;
    }
    if (luaL_loadbuffer(L, s, len, name) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        return 2;
    }
    luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    if (lua_istable(L, 4))
        lua_pushvalue(L, 4);
    else
        lua_pushvalue(L, lua_upvalueindex(1));
    lua_setfenv(L, -2);
    return 1;
}

static int sandbox_newindex(lua_State *L)
{
    return luaL_error(L, "attempt to set global '%s': agents cannot create globals inside execute (use local)",
                      lua_isstring(L, 2) ? lua_tostring(L, 2) : "?");
}

static int is_shared(lua_State *L, int idx)
{
    lua_getfield(L, LUA_REGISTRYINDEX, SHARED_KEY);
    lua_pushvalue(L, idx < 0 ? idx - 1 : idx);
    lua_rawget(L, -2);
    int shared = lua_toboolean(L, -1);
    lua_pop(L, 2);
    return shared;
}

static void share(lua_State *L, const char *lib, const char *field)
{
    lua_getfield(L, LUA_REGISTRYINDEX, SHARED_KEY);
    lua_getfield(L, -2, lib);
    lua_getfield(L, -1, field);
    lua_pushboolean(L, 1);
    lua_rawset(L, -4);
    lua_pop(L, 2);
}

/* Push a copy of the table at idx; nested plain tables (no metatable) are copied too. */
static void copy_table(lua_State *L, int idx, int depth)
{
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (depth > 0 && lua_type(L, -1) == LUA_TTABLE && !is_shared(L, -1)) {
            int has_mt = lua_getmetatable(L, -1);
            if (has_mt) {
                lua_pop(L, 1); /* tables with a metatable are shared as they are */
            } else {
                int v = lua_gettop(L);
                copy_table(L, v, depth - 1);
                lua_replace(L, v);
            }
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, -4);
    }
}

void lg_vm_sandbox_env(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, TEMPLATE_KEY);
    copy_table(L, -1, 3);
    lua_remove(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, sandbox_load, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "load");
    lua_setfield(L, -2, "loadstring");
}

static void copy_fields(lua_State *L, const char *lib, const char *const *names)
{
    lua_getglobal(L, lib);
    lua_newtable(L);
    for (; *names; names++) {
        lua_getfield(L, -2, *names);
        lua_setfield(L, -2, *names);
    }
    lua_setfield(L, -3, lib);
    lua_pop(L, 1);
}

static void build_template(lua_State *L)
{
    static const char *const base[] = {"assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
                                       "tonumber", "tostring", "type", "unpack", "rawequal", "rawget", "rawset",
                                       "setmetatable", "getmetatable", "_VERSION", NULL};
    static const char *const os_safe[] = {"time", "clock", "date", "difftime", NULL};
    static const char *const string_safe[] = {"byte", "char", "find", "format", "gmatch", "gsub", "len", "lower",
                                              "match", "rep", "reverse", "sub", "upper", NULL};
    static const char *const libs[] = {"table", "math", "bit", "coroutine", NULL};
    lua_newtable(L);
    for (const char *const *n = base; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, -2, *n);
    }
    for (const char *const *n = libs; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, -2, *n);
    }
    copy_fields(L, "os", os_safe);
    copy_fields(L, "string", string_safe);
    lua_pushcfunction(L, lg_bind_print);
    lua_setfield(L, -2, "print");
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, SHARED_KEY);
    lg_bind_open(L);
    share(L, "json", "array_mt");
    share(L, "json", "empty_array");
    lua_setfield(L, -2, "luagent");
    lua_setfield(L, LUA_REGISTRYINDEX, TEMPLATE_KEY);
}

int lg_vm_open(lg_vm_t *vm, void *rt)
{
    memset(vm, 0, sizeof(*vm));
    vm->rt = rt;
    lua_State *L = lua_newstate(vm_alloc, vm);
    if (L == NULL)
        return -1;
    vm->L = L;
    lua_gc(L, LUA_GCSETPAUSE, LG_VM_GC_PAUSE);
    luaL_openlibs(L);
    /* strings share one metatable: hide it so no agent can reach or change the real string table */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "string");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
    build_template(L);
    watch_add(vm);
    return 0;
}

void lg_vm_close(lg_vm_t *vm)
{
    if (vm->L != NULL) {
        watch_remove(vm);
        lua_close(vm->L);
    }
    vm->L = NULL;
    while (vm->chunks != NULL) {
        char *next = *(char **)vm->chunks;
        free(vm->chunks);
        vm->chunks = next;
    }
}

/* ---- agents ---- */

static const char *check_field(lua_State *L, const char *field, int type, int optional)
{
    lua_getfield(L, -1, field);
    int t = lua_type(L, -1);
    lua_pop(L, 1);
    if (t == type || (optional && t == LUA_TNIL))
        return NULL;
    return lua_typename(L, type);
}

int lg_vm_load_script(lg_vm_t *vm, lg_script_kind_t kind, const char *chunkname, const char *src, size_t len,
                      size_t mem_limit, char *err, size_t errlen, lg_schema_t **input)
{
    if (input != NULL)
        *input = NULL;
    lua_State *L = vm->L;
    int top = lua_gettop(L);
    if (len > 0 && src[0] == LUA_SIGNATURE[0]) {
        snprintf(err, errlen, "%s: binary chunks are not allowed", chunkname + 1);
        return -1;
    }
    if (luaL_loadbuffer(L, src, len, chunkname) != 0) {
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
        lua_settop(L, top);
        return -1;
    }
    luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
    lg_vm_sandbox_env(L);
    lua_pushvalue(L, -1);
    lua_setfenv(L, -3); /* stack: chunk env */
    lua_insert(L, -2);  /* env chunk */

    lg_budget_t budget = {.mem_limit = mem_limit, .deadline_ms = lg_now_mono_ms() + LG_VM_LOAD_TIMEOUT_MS};
    lg_budget_t *saved = vm->current;
    lg_vm_charge(vm, &budget);
    int rc = lua_pcall(L, 0, 1, 0);
    lg_vm_charge(vm, saved);
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        if (budget.timed_out)
            snprintf(err, errlen, "%s: top-level code ran longer than %d ms", chunkname + 1, LG_VM_LOAD_TIMEOUT_MS);
        else if (budget.mem_exceeded)
            snprintf(err, errlen, "%s: top-level code exceeded the memory limit", chunkname + 1);
        else
            snprintf(err, errlen, "%s", msg ? msg : "error object is not a string");
        lua_settop(L, top);
        return -1;
    }
    const char *bad = NULL, *field = NULL;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "%s: the file must return a table %s (got %s)", chunkname + 1,
                 kind == LG_SCRIPT_AGENT ? "with an execute function" : "of provider functions", luaL_typename(L, -1));
        lua_settop(L, top);
        return -1;
    }
    typedef struct { const char *name; int type, optional; } field_t;
    static const field_t agent_fields[] = {
        {"execute", LUA_TFUNCTION, 0}, {"description", LUA_TSTRING, 1}, {"input", LUA_TTABLE, 1},
        {"timeout_ms", LUA_TNUMBER, 1}, {"config", LUA_TTABLE, 1},      {"cache_ttl", LUA_TNUMBER, 1}, {NULL, 0, 0}};
    static const field_t provider_fields[] = {
        {"name", LUA_TSTRING, 1},           {"default_model", LUA_TSTRING, 1},   {"default_base_url", LUA_TSTRING, 1},
        {"families", LUA_TTABLE, 1},        {"build_request", LUA_TFUNCTION, 1}, {"parse_response", LUA_TFUNCTION, 1},
        {"stream_init", LUA_TFUNCTION, 1},  {"stream_event", LUA_TFUNCTION, 1},  {"stream_finish", LUA_TFUNCTION, 1},
        {"classify_error", LUA_TFUNCTION, 1}, {"local_call", LUA_TFUNCTION, 1}, {"description", LUA_TSTRING, 1},
        {NULL, 0, 0}};
    for (const field_t *f = kind == LG_SCRIPT_AGENT ? agent_fields : provider_fields; f->name && bad == NULL; f++)
        if ((bad = check_field(L, f->name, f->type, f->optional)) != NULL)
            field = f->name;
    if (bad == NULL && kind == LG_SCRIPT_AGENT) {
        lua_getfield(L, -1, "timeout_ms");
        if (lua_isnumber(L, -1) && !(lua_tonumber(L, -1) >= 1 && lua_tonumber(L, -1) <= 86400000))
            bad = "number from 1 to 86400000", field = "timeout_ms";
        lua_pop(L, 1);
    }
    if (bad == NULL && kind == LG_SCRIPT_PROVIDER) {
        lua_getfield(L, -1, "local_call");
        lua_getfield(L, -2, "build_request");
        lua_getfield(L, -3, "parse_response");
        if (lua_isnil(L, -3) && (lua_isnil(L, -2) || lua_isnil(L, -1)))
            bad = "function (a provider needs local_call, or build_request and parse_response)", field = "build_request";
        lua_pop(L, 3);
        lua_getfield(L, -1, "reply_shape");
        if (bad == NULL && !lua_isnil(L, -1) && lg_json_toshape(L, -1) == NULL)
            bad = "json.shape (luagent.json.shape{...})", field = "reply_shape";
        lua_pop(L, 1);
    }
    if (bad != NULL) {
        snprintf(err, errlen, "%s: field '%s' must be a %s", chunkname + 1, field, bad);
        lua_settop(L, top);
        return -1;
    }
    if (kind == LG_SCRIPT_AGENT) { /* the input schema is compiled here, once per VM (schema.h) */
        lua_getfield(L, -1, "input");
        if (lua_istable(L, -1)) {
            char why[384];
            lg_schema_t *schema = lg_schema_compile(L, -1, why, sizeof(why));
            if (schema == NULL) {
                snprintf(err, errlen, "%s: field 'input' is not a valid schema: %s", chunkname + 1, why);
                lua_settop(L, top);
                return -1;
            }
            if (input != NULL)
                *input = schema;
            else
                lg_schema_free(schema);
        }
        lua_pop(L, 1);
    }
    /* lock the environment: from now on a new global is a bug (shared by concurrent executions) */
    lua_newtable(L);
    lua_pushcfunction(L, sandbox_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "sandbox");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -3);
    lua_remove(L, -2); /* env */
    return 0;
}
