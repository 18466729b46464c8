/* bucket: the token-bucket arithmetic of meshgate's rate limiter, with
 * Spring Cloud Gateway's meanings (RedisRateLimiter): replenishRate tokens
 * per second, burstCapacity tokens at most, requestedTokens per request.
 * Refill is continuous: after dt microseconds a bucket has gained
 * dt * rate / 1e6 tokens (never more than burst). A missing bucket is a
 * full one. burst 0 denies every request; "one request per minute" is
 * rate 1, requested 60, burst 60.
 *
 * Pure functions over caller-owned values; the clock is injected (now_us,
 * any monotonic microsecond clock the caller uses consistently). No
 * allocation, no globals, any thread. A take costs a few floating-point
 * operations. The local backend (local.h) and the Redis script (redis.c)
 * both follow exactly this arithmetic. */
#ifndef MG_RATELIMIT_BUCKET_H
#define MG_RATELIMIT_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

/* Retry-After (seconds) for a request that can never pass: burst 0 or
 * requested > burst. */
#define MG_RL_RETRY_NEVER 3600u

typedef struct {
    double rate;        /* replenishRate: tokens per second, > 0 */
    uint32_t burst;     /* burstCapacity: most tokens a bucket holds; 0 = deny all */
    uint32_t requested; /* requestedTokens: cost of one request, >= 1 */
} mg_rl_params_t;

typedef struct {
    double tokens; /* tokens at t_us (may be fractional) */
    int64_t t_us;  /* time of the last refresh */
} mg_rl_bucket_t;

typedef struct {
    bool allowed;
    int64_t remaining;      /* floor(tokens left) after this request; -1 = unknown
                               (backend error), as Spring's X-RateLimit-Remaining */
    uint32_t retry_after_s; /* 0 when allowed; else ceil(seconds until `requested`
                               tokens are there), >= 1; MG_RL_RETRY_NEVER if never */
} mg_rl_result_t;

/* 0 if p is usable, else MG_ECONFIG (rate <= 0 or not finite, requested 0). */
int mg_rl_params_check(const mg_rl_params_t *p);

/* A full bucket as of now_us (what a missing bucket means). */
void mg_rl_bucket_init(mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us);

/* Tokens the bucket holds at now_us (refill applied; b unchanged). A now_us
 * before b->t_us counts as no time passed. */
double mg_rl_bucket_tokens(const mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us);

/* One decision: refill to now_us, take p->requested tokens if they are all
 * there, and update b (t_us never moves backwards). */
mg_rl_result_t mg_rl_bucket_take(mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us);

/* The time (us, fractional) at which b will be full again; <= b->t_us when
 * it already is. A bucket past this time is equivalent to no bucket. */
double mg_rl_bucket_full_at(const mg_rl_bucket_t *b, const mg_rl_params_t *p);

/* The result for a decision made elsewhere (the Redis script): `tokens` is
 * what the bucket holds after the decision. */
mg_rl_result_t mg_rl_result_make(const mg_rl_params_t *p, bool allowed, double tokens);

#endif
