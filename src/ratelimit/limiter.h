/* limiter: a route's rate limiter as the proxy uses it (Spring's
 * RequestRateLimiter / the seed's RateLimiter filter): its config, the
 * decision steps, the per-route counters and the X-RateLimit-* headers.
 *
 * Where each call belongs in an exchange (worker thread, after the route
 * matched and before an upstream is picked):
 *   1. mg_rl_begin()        resolve the key; an empty key may already decide
 *                           (403, no X-RateLimit headers, as Spring).
 *   2a. local backend:      v = mg_rl_decide_local()           (synchronous)
 *   2b. Redis backend:      mg_rl_redis_check(worker's client, l->route_id,
 *                           key, &l->cfg.params, cb, session, &handle);
 *                           if it returns < 0: v = mg_rl_verdict_redis(l, w, rc, NULL)
 *                           at once; else in cb: v = mg_rl_verdict_redis(l, w, 0, reply).
 *                           If the client connection dies first:
 *                           mg_rl_redis_cancel(handle).
 *   3. !v.allowed:          reply v.status locally with mg_rl_headers() (and
 *                           Retry-After); never reach the upstream.
 *      v.allowed:           forward; add mg_rl_headers() to the response
 *                           sent to the client.
 * Every verdict is counted in the route's counters (one slot per worker,
 * written only by that worker, summed by readers: no shared cache line on
 * the hot path). Cost of steps 1+2a+3: a key lookup in the request, one
 * shard lock, a few float operations, ~100 bytes of header text.
 *
 * Ownership: an mg_rl_limiter_t is built by the config loader (control
 * thread) into a snapshot and is read-only after; its slices point into
 * that snapshot's config. mg_rl_stats_t objects outlive snapshots (a
 * registry keyed by route id, like endpoint stats), so counters survive a
 * reload. */
#ifndef MG_RATELIMIT_LIMITER_H
#define MG_RATELIMIT_LIMITER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"
#include "ratelimit/bucket.h"
#include "ratelimit/key.h"
#include "ratelimit/local.h"
#include "ratelimit/redis.h"

typedef struct {
    mg_rl_params_t params;  /* replenishRate, burstCapacity, requestedTokens */
    mg_rl_key_cfg_t key;    /* default: client IP */
    int deny_status;        /* status of a limited request (429) */
    bool deny_empty_key;    /* deny-empty-key (true) */
    int empty_key_status;   /* empty-key-status-code (403) */
    bool fail_closed;       /* Redis error: deny (deny_status) instead of allow */
    bool include_headers;   /* include-headers (true) */
} mg_rl_cfg_t;

/* The defaults above; params zero (the caller must set rate and burst). */
void mg_rl_cfg_default(mg_rl_cfg_t *c);

/* Per-route counters: one cache line per worker. */
typedef struct {
    _Atomic uint64_t allowed, denied, empty_key, backend_error;
    char pad[64 - 4 * sizeof(uint64_t)];
} mg_rl_wcounters_t;

typedef struct mg_rl_stats {
    uint32_t tag;           /* dense process-wide index (local backend eviction tag) */
    char route_id[128];
    uint32_t nworkers;
    mg_rl_wcounters_t *w;   /* [nworkers] */
} mg_rl_stats_t;

typedef struct {
    uint64_t allowed, denied, empty_key, backend_error, evictions;
} mg_rl_counts_t;

/* Registry: control thread only. init once at start-up; get creates on
 * first use and returns the same object for the same route id for the
 * life of the process (NULL on out of memory). */
void mg_rl_registry_init(uint32_t nworkers);
mg_rl_stats_t *mg_rl_registry_get(mg_slice_t route_id);
uint32_t mg_rl_registry_count(void);
mg_rl_stats_t *mg_rl_registry_at(uint32_t index);
void mg_rl_registry_free(void); /* at exit, for leak checkers */

/* Sum the worker slots (any thread); t (may be NULL) adds the local
 * backend's evictions of this route. */
void mg_rl_stats_sum(const mg_rl_stats_t *s, mg_rl_local_t *t, mg_rl_counts_t *out);

typedef struct mg_rl_limiter {
    mg_rl_cfg_t cfg;
    mg_slice_t route_id;
    mg_rl_stats_t *stats;   /* may be NULL (not counted) */
    /* header values that never change, formatted once by init */
    char txt_rate[32], txt_burst[12], txt_requested[12];
} mg_rl_limiter_t;

/* Validates cfg (rate > 0, requested >= 1, statuses 100..599). Returns 0
 * or MG_ECONFIG with a message in err. */
int mg_rl_limiter_init(mg_rl_limiter_t *l, const mg_rl_cfg_t *cfg, mg_slice_t route_id,
                       mg_rl_stats_t *stats, char *err, size_t errlen);

typedef struct {
    bool allowed;
    int status;             /* 0 when allowed; else the status to reply with */
    bool headers;           /* X-RateLimit-* headers apply (include_headers, key not empty) */
    bool backend_error;     /* Redis failed; the verdict is the fail-open/closed policy */
    mg_rl_result_t r;       /* remaining (-1 on backend error), retry_after_s */
} mg_rl_verdict_t;

/* Step 1. Resolves the key into *key (buf: MG_RL_KEY_BUF bytes advised).
 * Returns true when the request is decided already (empty key): *v is the
 * verdict (allowed when deny_empty_key is false, unlimited). */
bool mg_rl_begin(const mg_rl_limiter_t *l, uint32_t worker, const mg_rl_key_input_t *in,
                 char *buf, size_t cap, mg_slice_t *key, mg_rl_verdict_t *v);

/* Step 2a: one decision against the in-process table. */
mg_rl_verdict_t mg_rl_decide_local(const mg_rl_limiter_t *l, uint32_t worker, mg_rl_local_t *t,
                                   mg_slice_t key, int64_t now_us);

/* Step 2b: the verdict from a Redis reply (rc == 0, reply != NULL) or from
 * a check that could not start (rc < 0, reply NULL). A backend error is
 * allowed with remaining -1 (fail open, Spring) or denied with deny_status
 * and Retry-After 1 (fail_closed). */
mg_rl_verdict_t mg_rl_verdict_redis(const mg_rl_limiter_t *l, uint32_t worker, int rc,
                                    const mg_rl_redis_reply_t *reply);

/* Step 3: the headers of a verdict, as name/value slices into h->buf and
 * into l (so do not copy an mg_rl_hdrs_t after filling it, nor use it
 * after l is gone). X-RateLimit-Remaining,
 * -Replenish-Rate, -Burst-Capacity, -Requested-Tokens when v->headers;
 * Retry-After when denied for the rate (not for an empty key). */
#define MG_RL_MAX_HDRS 5
typedef struct {
    mg_slice_t name[MG_RL_MAX_HDRS], value[MG_RL_MAX_HDRS];
    uint32_t n;
    char buf[48];
} mg_rl_hdrs_t;
void mg_rl_headers(const mg_rl_limiter_t *l, const mg_rl_verdict_t *v, mg_rl_hdrs_t *h);

/* The same as "Name: value\r\n" lines into buf. Returns the length, or 0
 * when there is nothing to add or cap is too small (256 always suffices). */
size_t mg_rl_format_headers(const mg_rl_limiter_t *l, const mg_rl_verdict_t *v, char *buf, size_t cap);

#endif
