/**
 * vm.h - one LuaJIT VM per thread: allocator accounting, runaway control, and the agent sandbox.
 *
 * Memory: the VM is created with our own lua_Alloc. While an execution runs, every allocation and
 * free is charged to its budget; growth past budget->mem_limit is refused (LuaJIT raises "not enough
 * memory" inside the agent) and the budget is marked exceeded, so the execution ends with
 * `memory_limit` even if the agent catches the error.
 * Time: no hook runs while executions keep to their budgets (a count hook would tax every
 * interpreted instruction). A watchdog thread, started with the first VM, looks every
 * LG_VM_WATCH_MS at each VM that is running Lua under a deadline (lg_vm_charge publishes it);
 * once the deadline has passed it sends that VM's thread LG_VM_SIGNAL, whose handler installs a
 * hook that runs on every instruction and raises an error in the running execution. The allocator
 * installs the same hook when a budget's memory limit is hit. The hook stays until nothing of the
 * stopped execution runs any more. Agent chunks are compiled with the JIT off for all their
 * functions so the hook always sees them; library code stays JIT-compiled.
 * Sandbox: each agent gets a fresh environment built from an allow-list (lg_vm_sandbox_env), with its
 * own copies of the library tables, so no write by one agent is ever seen by another. After the
 * chunk's top level has run, creating new globals raises an error.
 */
#ifndef LUAGENT_VM_H
#define LUAGENT_VM_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <lua.h>

#define LG_VM_WATCH_MS 10           /* how often the watchdog looks at running VMs */
#define LG_VM_SIGNAL SIGURG         /* watchdog -> VM thread (ignored by default) */
#define LG_VM_LOAD_TIMEOUT_MS 2000 /* budget for an agent file's top-level code */
/* The collector's pause (LuaJIT's default is 200: a cycle starts when the heap doubles). At 300 a
 * cycle starts at three times the live heap: half as many cycles for the same garbage, so marking
 * costs half and sweeping three quarters as much per request (W2: +3-8% throughput, peak RSS
 * (VmHWM) 32.8 -> 36.5 MB at 1000 calls in flight; docs/architecture.md). */
#define LG_VM_GC_PAUSE 300

/** What one execution may spend. Embedded in the execution; the VM charges the current one. */
typedef struct lg_budget {
    ssize_t mem_used;     /* net bytes allocated while this budget was current */
    size_t mem_limit;     /* 0 = unlimited */
    uint64_t deadline_ms; /* monotonic ms; 0 = none */
    int mem_exceeded;
    int timed_out;
} lg_budget_t;

#define LG_SMALL_MAX 512 /* blocks up to this size come from the VM's size-class free lists */

typedef struct lg_vm {
    lua_State *L;
    size_t bytes;          /* whole-VM heap size */
    lg_budget_t *current;  /* budget being charged, NULL between executions: set with lg_vm_charge */
    void *rt;              /* the runtime that owns this VM (lg_rt_t *), for bindings */
    void *free_lists[LG_SMALL_MAX / 16 + 1];
    char *chunks, *chunk_pos;
    size_t chunk_left;
    /* runaway control, shared with the watchdog thread and the signal handler */
    _Atomic uint64_t watch_deadline; /* current->deadline_ms while Lua runs under it, else 0 */
    _Atomic int hook_on;              /* the every-instruction hook is installed */
    pthread_t thread;                 /* the thread that last charged a budget */
    struct lg_vm *watch_prev, *watch_next;
} lg_vm_t;

/** The thread's running VM, for the watchdog's signal handler. */
extern __thread lg_vm_t *lg_vm_running;

/** Charge `b` (NULL: nothing) for what the VM does from now on, and show its deadline to the
 *  watchdog. Called on the VM's own thread around every resume. */
static inline void lg_vm_charge(lg_vm_t *vm, lg_budget_t *b)
{
    vm->current = b;
    if (b != NULL && lg_vm_running != vm) {
        lg_vm_running = vm;
        vm->thread = pthread_self();
    }
    atomic_store_explicit(&vm->watch_deadline, b != NULL ? b->deadline_ms : 0, memory_order_release);
}

/** Create the VM with the luagent API installed. 0 on success, -1 on failure. */
int lg_vm_open(lg_vm_t *vm, void *rt);
void lg_vm_close(lg_vm_t *vm);
/** The VM a lua_State (or any of its coroutines) belongs to. */
lg_vm_t *lg_vm_of(lua_State *L);

struct lg_schema;

typedef enum { LG_SCRIPT_AGENT = 0, LG_SCRIPT_PROVIDER, LG_SCRIPT_KINDS } lg_script_kind_t;

/** Compile `src` as a script of `kind` in a fresh sandbox and run its top level (under the load
 *  budget). On success pushes the module table and returns 0. On failure pushes nothing, writes a
 *  one-line message to err ("hello.lua:3: '=' expected near 'x'") and returns -1.
 *  The module contract: a table with a function `execute`; optional `description` (string),
 *  `input` (table: JSON schema), `timeout_ms` (positive number), `config` (table),
 *  `cache_ttl` (number >= 0). A provider (docs/providers.md): a table with either `local_call` or both
 *  `build_request` and `parse_response` functions; `stream_init`, `stream_event`, `stream_finish`,
 *  `classify_error` functions, `name`/`default_model`/`default_base_url` strings and a `families`
 *  table are optional. */
/*  An agent's `input` must also be a valid schema (schema.h): it is compiled here; when `input` is
 *  not NULL it receives the compiled schema (NULL when the agent has none) and the caller owns it,
 *  otherwise it is freed. A malformed schema fails the load like any other contract error:
 *  "hello.lua: field 'input' is not a valid schema: /properties/age/minimum: must be a number". */
int lg_vm_load_script(lg_vm_t *vm, lg_script_kind_t kind, const char *chunkname, const char *src, size_t len,
                      size_t mem_limit, char *err, size_t errlen, struct lg_schema **input);

/** Push a new sandbox environment table (see above). Used by lg_vm_load_agent and tests. */
void lg_vm_sandbox_env(lua_State *L);

#endif
