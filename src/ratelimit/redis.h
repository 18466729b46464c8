/* redis: the shared rate-limit backend. One client per worker thread talks
 * to Redis over one hiredis async connection driven by that worker's libuv
 * loop, so a decision never blocks the worker. Each check is one atomic Lua
 * script run (EVALSHA; the script is SCRIPT LOADed first on every
 * connection and reloaded on NOSCRIPT) over Spring Cloud Gateway's keys
 * request_rate_limiter.{<route>.<key>}.tokens / .timestamp, with Spring's
 * arithmetic and TTL (floor(2 * burst / rate) s, at least 1 s), but with
 * time from Redis TIME in microseconds, so refill is continuous and every
 * gateway instance sharing the Redis agrees on the clock. Checks in flight
 * are pipelined on the connection (replies come in order).
 *
 * Failure: a check not answered within timeout_ms (default 50) completes
 * with status -ETIMEDOUT; the caller fails open or closed (limiter.h). A
 * lost connection is re-made with exponential backoff (100 ms .. 5 s,
 * with jitter); while it is down, checks fail at once (-ENOTCONN) instead
 * of queueing. A connection with replies outstanding and none arriving for
 * dead_after_ms is treated as lost. Problems are logged at most once per
 * warn_interval_ms (with a count of what was not logged).
 *
 * Threads: a client belongs to the thread running its loop; every call,
 * and every callback, happens on that thread. Cost per check: one request
 * slot (preallocated, max_inflight of them), one hiredis command buffer
 * append, no syscall until the loop flushes the pipeline.
 *
 * Lifetime: create at worker start (mg_rl_redis_new on the worker's loop,
 * before it runs), close at worker stop (mg_rl_redis_close); the memory is
 * freed in the close callbacks of its handles, so the worker's final
 * uv_run() must run after the close. */
#ifndef MG_RATELIMIT_REDIS_H
#define MG_RATELIMIT_REDIS_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/slice.h"
#include "ratelimit/bucket.h"

typedef struct mg_rl_redis mg_rl_redis_t;
typedef struct mg_rl_redis_req mg_rl_redis_req_t;

typedef struct {
    const char *host;             /* numeric IPv4/IPv6 or "localhost": names are resolved
                                     by the config loader on the control thread, never here */
    uint16_t port;                /* 0 = 6379 */
    uint32_t timeout_ms;          /* per check; 0 = 50 */
    uint32_t max_inflight;        /* checks in flight (incl. timed-out ones still owed a
                                     reply); beyond it checks fail at once; 0 = 1024 */
    uint32_t backoff_min_ms;      /* 0 = 100 */
    uint32_t backoff_max_ms;      /* 0 = 5000 */
    uint32_t connect_timeout_ms;  /* 0 = 1000 */
    uint32_t dead_after_ms;       /* 0 = max(1000, 20 * timeout_ms) */
    uint32_t warn_interval_ms;    /* 0 = 10000 */
} mg_rl_redis_opts_t;

typedef struct {
    int status;            /* 0: Redis decided (result valid); else a backend error:
                              -ETIMEDOUT, -ECONNRESET (connection lost), -EPROTO (error
                              or unexpected reply), UV_ECANCELED (client closed) */
    mg_rl_result_t result; /* when status == 0 */
    double tokens;         /* when status == 0: tokens left in the bucket */
} mg_rl_redis_reply_t;

/* Called once per successful mg_rl_redis_check, on the loop thread, unless
 * cancelled first. It may call mg_rl_redis_check again, but must not call
 * mg_rl_redis_close. */
typedef void (*mg_rl_redis_cb)(void *arg, const mg_rl_redis_reply_t *reply);

typedef struct {
    uint64_t checks;       /* checks sent */
    uint64_t decided;      /* answered by Redis in time */
    uint64_t timeouts;     /* completed with -ETIMEDOUT */
    uint64_t errors;       /* completed with -ECONNRESET / -EPROTO */
    uint64_t unavailable;  /* refused at once: not connected (-ENOTCONN) */
    uint64_t overflow;     /* refused at once: max_inflight reached (MG_ELIMIT) */
    uint64_t noscript;     /* NOSCRIPT replies (script reloaded, check retried) */
    uint64_t connects;     /* successful connections (first one included) */
    uint64_t disconnects;  /* connections lost or given up */
    uint32_t inflight;     /* slots in use now */
    bool connected;
} mg_rl_redis_stats_t;

/* Starts connecting at once (asynchronously). Returns 0, MG_ECONFIG (host
 * not numeric) or -ENOMEM. Call on the loop's thread. */
int mg_rl_redis_new(uv_loop_t *loop, const mg_rl_redis_opts_t *opts, mg_rl_redis_t **out);

/* Closes the connection; checks still pending complete at once with
 * UV_ECANCELED (callbacks run inside this call). Memory is freed once the
 * loop has run the close callbacks. Not from inside a check callback. */
void mg_rl_redis_close(mg_rl_redis_t *r);

/* Ask Redis for one decision on (route, key) with params p (copied).
 * Returns 0: cb will run exactly once (reply, timeout or error), unless
 * mg_rl_redis_cancel(*handle) is called before. Returns < 0: cb will
 * never run (libuv convention): -ENOTCONN (Redis down, reconnecting),
 * MG_ELIMIT (max_inflight reached), -ENOMEM. The caller treats those as
 * a backend error at once. handle may be NULL. */
int mg_rl_redis_check(mg_rl_redis_t *r, mg_slice_t route, mg_slice_t key, const mg_rl_params_t *p,
                      mg_rl_redis_cb cb, void *arg, mg_rl_redis_req_t **handle);

/* The caller no longer wants the answer (its client connection died):
 * the cb will not run. Only between a successful check and its cb. The
 * request slot itself stays in use until Redis answers or the connection
 * drops. */
void mg_rl_redis_cancel(mg_rl_redis_req_t *handle);

/* Safe from any thread (relaxed counters). */
void mg_rl_redis_stats(const mg_rl_redis_t *r, mg_rl_redis_stats_t *out);

/* The Lua script (for tests and the docs). */
extern const char mg_rl_redis_script[];

#endif
