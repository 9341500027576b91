#include "luagent/timers.h"

#include <stdlib.h>

static inline void place(lg_timerheap_t *h, size_t i, lg_timerslot_t slot)
{
    h->v[i] = slot;
    slot.t->idx = i;
}

static void sift_up(lg_timerheap_t *h, size_t i)
{
    lg_timerslot_t s = h->v[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h->v[p].at_ms <= s.at_ms)
            break;
        place(h, i, h->v[p]);
        i = p;
    }
    place(h, i, s);
}

static void sift_down(lg_timerheap_t *h, size_t i)
{
    lg_timerslot_t s = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1].at_ms < h->v[c].at_ms)
            c++;
        if (s.at_ms <= h->v[c].at_ms)
            break;
        place(h, i, h->v[c]);
        i = c;
    }
    place(h, i, s);
}

void lg_timers_del(lg_timerheap_t *h, lg_timer_t *t)
{
    if (t->idx == LG_TIMER_IDLE)
        return;
    size_t i = t->idx;
    t->idx = LG_TIMER_IDLE;
    lg_timerslot_t last = h->v[--h->n];
    if (i == h->n)
        return;
    place(h, i, last);
    if (i > 0 && h->v[(i - 1) / 2].at_ms > last.at_ms)
        sift_up(h, i);
    else
        sift_down(h, i);
}

void lg_timers_add(lg_timerheap_t *h, lg_timer_t *t, uint64_t at_ms)
{
    lg_timers_del(h, t);
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        lg_timerslot_t *v = realloc(h->v, cap * sizeof(*v));
        if (v == NULL)
            abort();
        h->v = v;
        h->cap = cap;
    }
    t->at_ms = at_ms;
    place(h, h->n++, (lg_timerslot_t){at_ms, t});
    sift_up(h, t->idx);
}

int64_t lg_timers_wait_ms(const lg_timerheap_t *h, uint64_t now_ms)
{
    if (h->n == 0)
        return -1;
    uint64_t at = h->v[0].at_ms;
    return at <= now_ms ? 0 : (int64_t)(at - now_ms);
}

size_t lg_timers_run(lg_timerheap_t *h, uint64_t now_ms)
{
    size_t fired = 0;
    while (h->n > 0 && h->v[0].at_ms <= now_ms) {
        lg_timer_t *t = h->v[0].t;
        lg_timers_del(h, t);
        fired++;
        t->cb(t);
    }
    return fired;
}

void lg_timers_free(lg_timerheap_t *h)
{
    for (size_t i = 0; i < h->n; i++)
        h->v[i].t->idx = LG_TIMER_IDLE;
    free(h->v);
    h->v = NULL;
    h->n = h->cap = 0;
}
