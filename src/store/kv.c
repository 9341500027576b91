/* The in-memory key-value store (kv.h): a chained hash table plus an LRU list, one mutex. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/ids.h"
#include "luagent/kv.h"

typedef struct entry {
    struct entry *hnext;          /* hash chain */
    struct entry *lprev, *lnext;  /* LRU list: head is the most recently used */
    uint64_t expires_ms;          /* 0: never */
    size_t klen, vlen;
    char data[];                  /* key then value */
} entry_t;

static struct {
    pthread_mutex_t lock;
    entry_t **buckets;
    size_t nbuckets, count, bytes, max_bytes;
    entry_t *lru_head, *lru_tail;
} K = {.lock = PTHREAD_MUTEX_INITIALIZER};

static uint64_t hash(const char *k, size_t n) { return lg_fnv1a(k, n, LG_FNV_OFFSET); }

static size_t cost(const entry_t *e) { return sizeof(*e) + e->klen + e->vlen; }

void lg_kv_init(size_t max_bytes)
{
    lg_kv_free();
    K.max_bytes = max_bytes;
    K.nbuckets = 1024;
    K.buckets = calloc(K.nbuckets, sizeof(entry_t *));
    if (K.buckets == NULL)
        abort();
}

void lg_kv_free(void)
{
    for (entry_t *e = K.lru_head, *n; e != NULL; e = n) {
        n = e->lnext;
        free(e);
    }
    free(K.buckets);
    K.buckets = NULL;
    K.lru_head = K.lru_tail = NULL;
    K.nbuckets = K.count = K.bytes = 0;
}

static void lru_unlink(entry_t *e)
{
    if (e->lprev)
        e->lprev->lnext = e->lnext;
    else
        K.lru_head = e->lnext;
    if (e->lnext)
        e->lnext->lprev = e->lprev;
    else
        K.lru_tail = e->lprev;
}

static void lru_push(entry_t *e)
{
    e->lprev = NULL;
    e->lnext = K.lru_head;
    if (K.lru_head)
        K.lru_head->lprev = e;
    K.lru_head = e;
    if (K.lru_tail == NULL)
        K.lru_tail = e;
}

static entry_t **slot_of(const char *key, size_t klen)
{
    entry_t **p = &K.buckets[hash(key, klen) & (K.nbuckets - 1)];
    while (*p != NULL && !((*p)->klen == klen && memcmp((*p)->data, key, klen) == 0))
        p = &(*p)->hnext;
    return p;
}

static void drop(entry_t **slot)
{
    entry_t *e = *slot;
    *slot = e->hnext;
    lru_unlink(e);
    K.count--;
    K.bytes -= cost(e);
    free(e);
}

static void grow(void)
{
    size_t n = K.nbuckets * 2;
    entry_t **b = calloc(n, sizeof(entry_t *));
    if (b == NULL)
        return; /* keep the longer chains */
    for (size_t i = 0; i < K.nbuckets; i++)
        for (entry_t *e = K.buckets[i], *next; e != NULL; e = next) {
            next = e->hnext;
            size_t j = hash(e->data, e->klen) & (n - 1);
            e->hnext = b[j];
            b[j] = e;
        }
    free(K.buckets);
    K.buckets = b;
    K.nbuckets = n;
}

/* The live entry for key (expired ones are dropped on the way), or NULL; *slot is where it is or
 * would go. */
static entry_t *lookup(const char *key, size_t klen, entry_t ***slot)
{
    *slot = slot_of(key, klen);
    entry_t *e = **slot;
    if (e != NULL && e->expires_ms != 0 && e->expires_ms <= lg_now_mono_ms()) {
        drop(*slot);
        e = NULL;
    }
    return e;
}

static void insert(entry_t **slot, const char *key, size_t klen, const char *val, size_t vlen, uint64_t ttl_ms)
{
    if (*slot != NULL)
        drop(slot);
    entry_t *e = malloc(sizeof(*e) + klen + vlen);
    if (e == NULL)
        abort();
    e->klen = klen;
    e->vlen = vlen;
    e->expires_ms = ttl_ms ? lg_now_mono_ms() + ttl_ms : 0;
    memcpy(e->data, key, klen);
    memcpy(e->data + klen, val, vlen);
    e->hnext = NULL;
    *slot = e;
    lru_push(e);
    K.count++;
    K.bytes += cost(e);
    while (K.bytes > K.max_bytes && K.lru_tail != NULL && K.lru_tail != e) { /* evict the least recently used */
        entry_t *old = K.lru_tail;
        drop(slot_of(old->data, old->klen));
    }
    if (K.count > K.nbuckets)
        grow();
}

int lg_kv_get(const char *key, size_t klen, lg_buf_t *out)
{
    if (K.buckets == NULL)
        return 0;
    pthread_mutex_lock(&K.lock);
    entry_t **slot, *e = lookup(key, klen, &slot);
    if (e != NULL) {
        lru_unlink(e);
        lru_push(e);
        lg_buf_append(out, e->data + e->klen, e->vlen);
    }
    pthread_mutex_unlock(&K.lock);
    return e != NULL;
}

void lg_kv_set(const char *key, size_t klen, const char *val, size_t vlen, uint64_t ttl_ms)
{
    if (K.buckets == NULL)
        return;
    pthread_mutex_lock(&K.lock);
    entry_t **slot;
    lookup(key, klen, &slot);
    insert(slot, key, klen, val, vlen, ttl_ms);
    pthread_mutex_unlock(&K.lock);
}

int lg_kv_add(const char *key, size_t klen, const char *val, size_t vlen, uint64_t ttl_ms, lg_buf_t *old)
{
    if (K.buckets == NULL)
        return 1;
    pthread_mutex_lock(&K.lock);
    entry_t **slot, *e = lookup(key, klen, &slot);
    if (e != NULL && old != NULL)
        lg_buf_append(old, e->data + e->klen, e->vlen);
    if (e == NULL)
        insert(slot, key, klen, val, vlen, ttl_ms);
    pthread_mutex_unlock(&K.lock);
    return e == NULL;
}

int lg_kv_del(const char *key, size_t klen)
{
    if (K.buckets == NULL)
        return 0;
    pthread_mutex_lock(&K.lock);
    entry_t **slot, *e = lookup(key, klen, &slot);
    if (e != NULL)
        drop(slot);
    pthread_mutex_unlock(&K.lock);
    return e != NULL;
}

void lg_kv_stats(size_t *entries, size_t *bytes)
{
    pthread_mutex_lock(&K.lock);
    *entries = K.count;
    *bytes = K.bytes;
    pthread_mutex_unlock(&K.lock);
}
