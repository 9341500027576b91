/* The in-memory history: the last LUAGENT_HISTORY_SIZE executions, process-wide (every worker
 * records here and any worker answers GET /api/v1/executions), behind one mutex. Records sit in a
 * ring in arrival order (the oldest is dropped when full) and in a hash by id. Listing copies the
 * matches and sorts them by id (UUIDv7: creation order), which is O(n log n) on a rare request
 * instead of a sorted insert on every execution. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/store.h"

typedef struct {
    lg_rec_t *rec;  /* NULL: free slot */
    size_t hnext;   /* next slot in the same hash bucket, NONE at the end */
} slot_t;

#define NONE ((size_t)-1)

static struct {
    pthread_mutex_t lock;
    slot_t *slots;
    size_t cap, head, count; /* ring: the oldest is at head when full */
    size_t *buckets, nbuckets;
} H = {.lock = PTHREAD_MUTEX_INITIALIZER};


void lg_history_init(size_t capacity)
{
    lg_history_free();
    if (capacity == 0)
        return;
    H.cap = capacity;
    H.slots = calloc(capacity, sizeof(slot_t));
    H.nbuckets = 16;
    while (H.nbuckets < capacity * 2)
        H.nbuckets <<= 1;
    H.buckets = malloc(H.nbuckets * sizeof(size_t));
    if (H.slots == NULL || H.buckets == NULL)
        abort();
    for (size_t i = 0; i < H.nbuckets; i++)
        H.buckets[i] = NONE;
}

void lg_history_free(void)
{
    for (size_t i = 0; i < H.cap; i++)
        lg_rec_unref(H.slots[i].rec);
    free(H.slots);
    free(H.buckets);
    H.slots = NULL;
    H.buckets = NULL;
    H.cap = H.head = H.count = H.nbuckets = 0;
}

int lg_history_enabled(void) { return H.cap > 0; }

static size_t find_hashed(const char *id, size_t idlen, uint64_t h)
{
    for (size_t i = H.buckets[h & (H.nbuckets - 1)]; i != NONE; i = H.slots[i].hnext)
        if (H.slots[i].rec->id_hash == h && strlen(H.slots[i].rec->id) == idlen &&
            memcmp(H.slots[i].rec->id, id, idlen) == 0)
            return i;
    return NONE;
}

static size_t find(const char *id, size_t idlen) { return find_hashed(id, idlen, lg_rec_id_hash(id, idlen)); }

static void unlink_slot(size_t slot)
{
    size_t *p = &H.buckets[H.slots[slot].rec->id_hash & (H.nbuckets - 1)];
    while (*p != slot)
        p = &H.slots[*p].hnext;
    *p = H.slots[slot].hnext;
}

void lg_history_put(lg_rec_t *r)
{
    if (H.cap == 0) {
        lg_rec_unref(r);
        return;
    }
    lg_rec_t *copy = r, *old = NULL;
    pthread_mutex_lock(&H.lock);
    size_t i = find_hashed(r->id, strlen(r->id), r->id_hash);
    if (i != NONE) {
        if (H.slots[i].rec->status <= r->status) { /* status only moves forward */
            old = H.slots[i].rec;
            H.slots[i].rec = copy;
            copy = NULL;
        }
    } else {
        if (H.count == H.cap) { /* drop the oldest */
            i = H.head;
            H.head = (H.head + 1) % H.cap;
            unlink_slot(i);
            old = H.slots[i].rec;
        } else {
            i = (H.head + H.count++) % H.cap;
        }
        H.slots[i].rec = copy;
        size_t b = r->id_hash & (H.nbuckets - 1);
        H.slots[i].hnext = H.buckets[b];
        H.buckets[b] = i;
        copy = NULL;
    }
    pthread_mutex_unlock(&H.lock);
    lg_rec_unref(old);
    lg_rec_unref(copy); /* NULL when kept */
}

int lg_history_get(const char *id, size_t idlen, lg_buf_t *out)
{
    if (H.cap == 0)
        return 0;
    pthread_mutex_lock(&H.lock);
    size_t i = find(id, idlen);
    if (i != NONE)
        lg_buf_append(out, H.slots[i].rec->json, H.slots[i].rec->len);
    pthread_mutex_unlock(&H.lock);
    return i != NONE;
}

static int by_id_desc(const void *a, const void *b)
{
    return strcmp((*(lg_rec_t *const *)b)->id, (*(lg_rec_t *const *)a)->id);
}

void lg_history_list(const lg_history_query_t *q, lg_buf_t *out)
{
    lg_buf_lit(out, "{\"items\":[");
    if (H.cap == 0) {
        lg_buf_lit(out, "],\"next_cursor\":null}");
        return;
    }
    pthread_mutex_lock(&H.lock);
    lg_rec_t **match = malloc((H.count + 1) * sizeof(*match));
    size_t n = 0;
    for (size_t k = 0; k < H.count; k++) {
        lg_rec_t *r = H.slots[(H.head + k) % H.cap].rec;
        if (q->agent != NULL && (strlen(r->agent) != q->agent_len || memcmp(r->agent, q->agent, q->agent_len) != 0))
            continue;
        if (q->status >= 0 && (int)r->status != q->status)
            continue;
        if (r->created_ms < q->since_ms)
            continue;
        if (q->parent_id != NULL && strcmp(r->parent_id, q->parent_id) != 0)
            continue;
        if (q->cursor != NULL && strcmp(r->id, q->cursor) >= 0)
            continue;
        match[n++] = r;
    }
    qsort(match, n, sizeof(*match), by_id_desc);
    size_t limit = (size_t)q->limit;
    for (size_t k = 0; k < n && k < limit; k++) {
        if (k > 0)
            lg_buf_putc(out, ',');
        lg_buf_append(out, match[k]->json, match[k]->head_len);
        lg_buf_putc(out, '}');
    }
    lg_buf_lit(out, "],\"next_cursor\":");
    if (n > limit) {
        lg_buf_putc(out, '"');
        lg_buf_append(out, match[limit - 1]->id, strlen(match[limit - 1]->id));
        lg_buf_putc(out, '"');
    } else {
        lg_buf_lit(out, "null");
    }
    lg_buf_putc(out, '}');
    pthread_mutex_unlock(&H.lock);
    free(match);
}

void lg_history_finished_since(uint64_t since_ms, lg_rec_t ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (H.cap == 0)
        return;
    pthread_mutex_lock(&H.lock);
    lg_rec_t **recs = malloc((H.count + 1) * sizeof(*recs));
    size_t k = 0;
    for (size_t i = 0; recs != NULL && i < H.count; i++) {
        lg_rec_t *r = H.slots[(H.head + i) % H.cap].rec;
        if (r->status >= LG_REC_SUCCEEDED && r->created_ms >= since_ms)
            recs[k++] = lg_rec_ref(r);
    }
    pthread_mutex_unlock(&H.lock);
    *out = recs;
    *n = k;
}
