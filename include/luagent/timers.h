/**
 * timers.h - the per-worker timer heap (a binary min-heap on absolute monotonic milliseconds).
 *
 * Owned by one thread; no locking. A timer is embedded in its owner (an execution, a sleep, a
 * connection) and is either in exactly one heap (idx != LG_TIMER_IDLE) or idle. Adding an active
 * timer moves it. lg_timers_run pops every timer due at `now` and calls its callback once; a
 * callback may add or delete any timer, including itself.
 */
#ifndef LUAGENT_TIMERS_H
#define LUAGENT_TIMERS_H

#include <stddef.h>
#include <stdint.h>

#define LG_TIMER_IDLE ((size_t)-1)

typedef struct lg_timer lg_timer_t;
typedef void (*lg_timer_cb)(lg_timer_t *t);

struct lg_timer {
    uint64_t at_ms;
    size_t idx;
    lg_timer_cb cb;
};

/* Each slot keeps its timer's deadline next to the pointer: sifting compares within the array
 * instead of reading timers scattered over the heap (thousands of them at W2's concurrency). */
typedef struct lg_timerslot {
    uint64_t at_ms;
    lg_timer_t *t;
} lg_timerslot_t;

typedef struct lg_timerheap {
    lg_timerslot_t *v;
    size_t n, cap;
} lg_timerheap_t;

static inline void lg_timer_init(lg_timer_t *t, lg_timer_cb cb)
{
    t->at_ms = 0;
    t->idx = LG_TIMER_IDLE;
    t->cb = cb;
}
static inline int lg_timer_active(const lg_timer_t *t) { return t->idx != LG_TIMER_IDLE; }

void lg_timers_add(lg_timerheap_t *h, lg_timer_t *t, uint64_t at_ms);
void lg_timers_del(lg_timerheap_t *h, lg_timer_t *t); /* no-op when idle */
/** Milliseconds until the earliest timer (0 if due), or -1 when the heap is empty. */
int64_t lg_timers_wait_ms(const lg_timerheap_t *h, uint64_t now_ms);
/** Fire every timer with at_ms <= now_ms; returns how many fired. */
size_t lg_timers_run(lg_timerheap_t *h, uint64_t now_ms);
void lg_timers_free(lg_timerheap_t *h);

#endif
