/* Per-key rate limits (auth.h): GCRA, the "theoretical arrival time" of each key kept in one
 * process-wide table. A request is allowed when, after it, the key's TAT is at most one window
 * ahead of now; the table holds a few entries per API key, scanned under a mutex. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "luagent/auth.h"

typedef struct {
    char id[40];
    double tat_ms;
} bucket_t;

static struct {
    pthread_mutex_t lock;
    bucket_t *v;
    size_t n, cap;
} R = {.lock = PTHREAD_MUTEX_INITIALIZER};

void lg_rate_check(const char *id, int limit, int window_s, uint64_t now_ms, lg_rate_t *out)
{
    double window = (double)window_s * 1000.0, t = window / limit, now = (double)now_ms;
    pthread_mutex_lock(&R.lock);
    bucket_t *b = NULL;
    for (size_t i = 0; i < R.n && b == NULL; i++)
        if (strcmp(R.v[i].id, id) == 0)
            b = &R.v[i];
    if (b == NULL) {
        if (R.n == R.cap)
            R.v = realloc(R.v, (R.cap = R.cap ? R.cap * 2 : 16) * sizeof(bucket_t));
        b = &R.v[R.n++];
        memset(b, 0, sizeof(*b));
        strncpy(b->id, id, sizeof(b->id) - 1);
    }
    double tat = b->tat_ms > now ? b->tat_ms : now, next = tat + t;
    out->limit = limit;
    out->allowed = next - now <= window + 1e-6;
    if (out->allowed)
        b->tat_ms = next;
    else
        next = tat;
    pthread_mutex_unlock(&R.lock);
    double ahead = next - now; /* how far the key is ahead of an idle one */
    out->remaining = out->allowed ? (int)floor((window - ahead) / t + 1e-9) : 0;
    out->reset_s = (unsigned)ceil(ahead / 1000.0);
    out->retry_after_s = out->allowed ? 0 : (unsigned)ceil((tat + t - window - now) / 1000.0);
    if (!out->allowed && out->retry_after_s < 1)
        out->retry_after_s = 1;
}

void lg_rate_free(void)
{
    pthread_mutex_lock(&R.lock);
    free(R.v);
    R.v = NULL;
    R.n = R.cap = 0;
    pthread_mutex_unlock(&R.lock);
}
