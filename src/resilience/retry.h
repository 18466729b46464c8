/* retry: when to retry an upstream attempt, how long to wait first, and
 * the per-cluster retry budget that stops retry storms.
 *
 * One policy model for both dialects: the native retry block (Envoy
 * words: attempts, per_try_timeout, retry_on tokens, retriable status
 * codes, jittered backoff 25 ms / 250 ms) and Spring Cloud Gateway's Retry
 * filter (retries, statuses, series, methods, exceptions, backoff
 * firstBackoff/maxBackoff/factor/basedOnPreviousValue), each mapped onto
 * the same condition bits (mg_retry_add_token, mg_retry_add_spring_*).
 *
 * Ownership: a policy is plain immutable data inside a config snapshot;
 * any thread reads it. A budget (mg_retry_budget_t) is per cluster, shared
 * by all workers (atomics), created and freed by the control thread like
 * the cluster's bulkhead.
 *
 * How the proxy calls it (one exchange; attempts counts tries made so far):
 *   attempt over with a failure or a retriable status, before anything was
 *   sent to the client:
 *     if (mg_retry_should(p, attempts, result, status, method, s->resp_started)
 *         && request body replayable (none, or fully buffered)
 *         && mg_retry_budget_acquire(budget, w->id, mg_bulkhead_active_requests(bh))) {
 *         delay = mg_retry_backoff(p, attempts, prev_delay, rng_next(w));
 *         if (now + delay >= route_deadline) { budget release; give up }
 *         -> timer(delay) -> pick another endpoint than the failed one when
 *            the cluster has one -> per-try timeout = mg_retry_try_timeout()
 *         -> when that retry attempt ends (any way): mg_retry_budget_release.
 *     }
 *   The route timeout is one deadline over all attempts; a per-try timeout
 *   is a retriable MG_UP_TIMEOUT, the route deadline never is.
 *
 * Cost: nothing per request unless an attempt fails; a retry costs one
 * fetch_add (+ rollback on refusal) on the budget. */
#ifndef MG_RESILIENCE_RETRY_H
#define MG_RESILIENCE_RETRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/http1.h"
#include "resilience/outcome.h"

/* Condition bits (what a retry may be for). Envoy's retry_on tokens and
 * Spring's exceptions expand to sets of these. */
enum {
    MG_RETRY_CONNECT_FAILURE = 1u << 0, /* connect refused / unreachable / timed out */
    MG_RETRY_RESET = 1u << 1,           /* dropped before the response head, or a malformed head */
    MG_RETRY_TIMEOUT = 1u << 2,         /* per-try response timeout */
    MG_RETRY_STATUS_5XX = 1u << 3,      /* any 5xx response */
    MG_RETRY_STATUS_GATEWAY = 1u << 4,  /* 502, 503, 504 */
    MG_RETRY_STATUS_409 = 1u << 5,      /* retriable-4xx */
    MG_RETRY_STATUS_LISTED = 1u << 6,   /* retriable-status-codes / Spring statuses */
    MG_RETRY_STATUS_SERIES = 1u << 7,   /* Spring series */
};

typedef enum {
    MG_BACKOFF_NONE = 0,  /* retry at once (Spring without backoff) */
    MG_BACKOFF_JITTER,    /* Envoy: full jitter, exponential, capped */
    MG_BACKOFF_EXPONENTIAL, /* Spring/Reactor: first x factor^(n-1), capped, no jitter */
} mg_backoff_kind_t;

#define MG_RETRY_STATUS_WORDS 10 /* bitmap over 0..639 */

typedef struct {
    uint32_t max_retries;        /* retries after the first try (Istio attempts, Spring retries) */
    uint32_t per_try_timeout_ms; /* 0 = only the route timeout */
    uint32_t on;                 /* MG_RETRY_* bits */
    uint64_t statuses[MG_RETRY_STATUS_WORDS]; /* for MG_RETRY_STATUS_LISTED */
    uint8_t series;              /* bit n = status class n (1..5), for MG_RETRY_STATUS_SERIES */
    uint32_t methods;            /* bit (1 << mg_method_t) */
    mg_backoff_kind_t backoff;
    uint32_t base_ms;            /* JITTER: base interval (25); EXPONENTIAL: firstBackoff (5) */
    uint32_t max_ms;             /* JITTER: cap (250 = 10 x base); EXPONENTIAL: maxBackoff, 0 = none */
    uint32_t factor;             /* EXPONENTIAL: 2 */
    bool based_on_previous;      /* EXPONENTIAL: basedOnPreviousValue (true) */
} mg_retry_policy_t;

/* Native defaults: 1 retry, retry_on gateway-error, idempotent methods
 * only (GET HEAD OPTIONS TRACE PUT DELETE), jittered backoff 25/250 ms. */
void mg_retry_policy_default(mg_retry_policy_t *p);
/* Spring Retry filter defaults: retries 3, series SERVER_ERROR, methods
 * GET, exceptions IOException + TimeoutException, no backoff. Setting a
 * backoff block: mg_retry_spring_backoff. */
void mg_retry_policy_spring(mg_retry_policy_t *p);
/* Spring's BackoffConfig defaults: first 5 ms, max none, factor 2,
 * basedOnPreviousValue true. */
void mg_retry_spring_backoff(mg_retry_policy_t *p);

/* Native / Envoy retry_on token: "5xx", "gateway-error", "reset",
 * "connect-failure", "retriable-4xx", "refused-stream" (= reset),
 * "retriable-status-codes", or a status code ("503", also listed).
 * 0 or MG_ECONFIG. */
int mg_retry_add_token(mg_retry_policy_t *p, const char *tok);
/* A status code to retry on (100..599); sets MG_RETRY_STATUS_LISTED. */
int mg_retry_add_status(mg_retry_policy_t *p, int status);
/* Spring statuses entry: "BAD_GATEWAY", "502". */
int mg_retry_add_spring_status(mg_retry_policy_t *p, const char *name);
/* Spring series: "INFORMATIONAL", "SUCCESSFUL", "REDIRECTION",
 * "CLIENT_ERROR", "SERVER_ERROR". */
int mg_retry_add_spring_series(mg_retry_policy_t *p, const char *name);
/* Spring exceptions entry (simple or fully qualified class name):
 * IOException -> connect failure + reset, TimeoutException (java or
 * Spring's) / ReadTimeoutException -> timeout, ConnectException /
 * ConnectTimeoutException / UnknownHostException -> connect failure,
 * PrematureCloseException / SocketException -> reset (+ connect failure
 * for SocketException), Exception / Throwable -> all three. */
int mg_retry_add_spring_exception(mg_retry_policy_t *p, const char *cls);
/* A method name ("GET"); MG_ECONFIG for a non-standard one. */
int mg_retry_add_method(mg_retry_policy_t *p, const char *name);
int mg_retry_policy_validate(const mg_retry_policy_t *p, char *err, size_t errlen);

/* May the exchange try again? attempts: tries made so far (>= 1).
 * Never once a response byte reached the client, never for a cancelled
 * attempt, only for the policy's methods, at most max_retries times. */
bool mg_retry_should(const mg_retry_policy_t *p, uint32_t attempts, mg_up_result_t r, int status,
                     mg_method_t method, bool response_started);

/* Wait before retry number `retry` (1 = first retry). prev_ms: the delay
 * returned for the previous retry (0 before the first). rnd: a fresh
 * random 64-bit value (used by JITTER only).
 *   JITTER (Envoy's JitteredExponentialBackOffStrategy): interval =
 *     min(base x 2^(retry-1), max); delay uniform in [0, interval).
 *   EXPONENTIAL (Reactor's exponential backoff behind Spring's filter):
 *     basedOnPreviousValue: max(prev x factor, first), capped at max;
 *     else first x factor^(retry-1), capped at max. */
uint32_t mg_retry_backoff(const mg_retry_policy_t *p, uint32_t retry, uint32_t prev_ms, uint64_t rnd);

/* Timeout for the next try: the per-try timeout if set, never past the
 * route deadline (0 = no route deadline). 0 means the deadline passed. */
uint64_t mg_retry_try_timeout(const mg_retry_policy_t *p, uint64_t now_ms, uint64_t route_deadline_ms);

/* ---- retry budget (per cluster, all workers) ---- */

typedef struct {
    uint32_t budget_percent;  /* 20: concurrent retries allowed per 100 active requests */
    uint32_t min_concurrency; /* 3: always allowed, however few requests are active */
} mg_retry_budget_cfg_t;

void mg_retry_budget_cfg_default(mg_retry_budget_cfg_t *c);
/* Retries allowed at once with `active` requests in flight:
 * max(min_concurrency, active x percent / 100) (Envoy's retry budget). */
uint32_t mg_retry_budget_max(const mg_retry_budget_cfg_t *c, uint32_t active);

typedef struct mg_retry_budget mg_retry_budget_t;

/* nslots: per-thread counter slots, as for the breaker. NULL on no memory. */
mg_retry_budget_t *mg_retry_budget_new(const mg_retry_budget_cfg_t *c, uint32_t nslots);
void mg_retry_budget_free(mg_retry_budget_t *b);
/* Change percent/min in place (reload); counts carry on. */
void mg_retry_budget_update(mg_retry_budget_t *b, const mg_retry_budget_cfg_t *c);
/* Take a retry slot given the cluster's active requests (the bulkhead's
 * gauge). False: budget exhausted (counted as overflow); do not retry. */
bool mg_retry_budget_acquire(mg_retry_budget_t *b, uint32_t slot, uint32_t active_requests);
/* The retry attempt is over (whatever its result). */
void mg_retry_budget_release(mg_retry_budget_t *b);

typedef struct {
    uint32_t active_retries;
    uint64_t granted, overflow; /* lifetime, summed over slots */
} mg_retry_budget_stats_t;

void mg_retry_budget_stats(const mg_retry_budget_t *b, mg_retry_budget_stats_t *out);

#endif
