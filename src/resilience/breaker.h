/* breaker: a circuit breaker with Resilience4j semantics, plus the seed's
 * simple consecutive-failures form.
 *
 * Ownership: the control thread creates a breaker (one per configured
 * breaker name, kept across reloads while its config is unchanged) and
 * frees it only when no worker can still reach it (after the last snapshot
 * referring to it is released). Threads: every worker calls
 * mg_breaker_acquire / mg_breaker_record on the hot path, concurrently;
 * the control thread calls mg_breaker_tick (timer), mg_breaker_force /
 * mg_breaker_reset (admin drills) and mg_breaker_snapshot (admin API).
 * Time is always passed in (monotonic ms, e.g. uv_now of the caller's
 * loop), so tests drive a fake clock and the hot path never reads a clock.
 *
 * How the proxy calls it (one exchange):
 *   route matched, cluster known, before picking an endpoint:
 *       if (!mg_breaker_acquire(b, w->id, now, &s->cb_ticket))
 *           -> answer 503 at once (nothing is sent upstream; count it)
 *   attempt over (response head parsed, or connect/timeout/reset/protocol
 *   failure, or client gone):
 *       o = mg_breaker_classify(&cfg, result, status);
 *       mg_breaker_record(b, w->id, s->cb_ticket, o, now - t_attempt_start, now);
 *   Exactly one record per successful acquire (a call that never reached
 *   the upstream, e.g. bulkhead overflow after acquire, records
 *   MG_CB_IGNORED, which gives a HALF_OPEN permit back). A retry is a new
 *   call: acquire again before it.
 *   Control thread: call mg_breaker_tick(b, now) when the delay it returned
 *   has passed (automatic OPEN -> HALF_OPEN, half-open max wait).
 *
 * Cost per request in CLOSED (the common case): acquire = one atomic load;
 * record of a success = one relaxed per-worker counter add, one atomic
 * fetch_add (the count window's cursor) and one atomic exchange (the
 * window slot) for COUNT_BASED, or two fetch_adds (bucket, total) for
 * TIME_BASED. No lock. Rates are re-evaluated only when a record changes
 * the window's failure/slow/call totals. The transition lock is taken only
 * to change state.
 *
 * Window design (why not striped per worker): Resilience4j's COUNT_BASED
 * window is "the last N calls of this breaker", which a per-worker stripe
 * cannot give without summing stripes on every record. A ring of N one-byte
 * outcomes with an atomic cursor gives it exactly: a writer exchanges its
 * outcome into slot cursor % N and applies (new - old) to three total
 * counters, so every outcome is added once and removed once (by whoever
 * exchanges it out, a later writer or a reset); the totals equal the ring
 * at every quiescent point and are off by at most the number of
 * concurrently recording threads in between. TIME_BASED keeps one bucket
 * per second (ring of window_size buckets) with the same add-once /
 * remove-once rule: a bucket is recycled by the one thread that wins a CAS
 * on its second stamp, which then exchanges its counts out. Records carry
 * the epoch of the state their permit came from; a result that finishes
 * after a transition counts in the totals by outcome but not in the new
 * state's window (so CLOSED-era calls never decide a HALF_OPEN trial). */
#ifndef MG_RESILIENCE_BREAKER_H
#define MG_RESILIENCE_BREAKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resilience/outcome.h"

typedef enum {
    MG_CB_CLOSED = 0,
    MG_CB_OPEN,
    MG_CB_HALF_OPEN,
    MG_CB_FORCED_OPEN, /* admin: rejects everything until reset */
    MG_CB_DISABLED,    /* admin "close": permits everything, never trips, until reset */
    MG_CB_NSTATES
} mg_cb_state_t;

typedef enum { MG_CB_COUNT_BASED = 0, MG_CB_TIME_BASED } mg_cb_window_t;

typedef enum {
    MG_CB_MODE_RATE = 0,    /* Resilience4j: failure / slow-call rates over a window */
    MG_CB_MODE_CONSECUTIVE, /* seed: failure_threshold consecutive failures */
} mg_cb_mode_t;

typedef enum { MG_CB_SUCCESS = 0, MG_CB_FAILURE, MG_CB_IGNORED } mg_cb_outcome_t;

/* Why a transition happened (logs, admin). */
typedef enum {
    MG_CB_WHY_FAILURE_RATE = 0, /* CLOSED -> OPEN */
    MG_CB_WHY_SLOW_RATE,        /* CLOSED -> OPEN */
    MG_CB_WHY_CONSECUTIVE,      /* CLOSED -> OPEN (simple mode) */
    MG_CB_WHY_WAIT_ELAPSED,     /* OPEN -> HALF_OPEN, lazily on a call */
    MG_CB_WHY_AUTOMATIC,        /* OPEN -> HALF_OPEN, by mg_breaker_tick */
    MG_CB_WHY_TRIAL_PASSED,     /* HALF_OPEN -> CLOSED */
    MG_CB_WHY_TRIAL_FAILED,     /* HALF_OPEN -> OPEN */
    MG_CB_WHY_HALF_OPEN_TIMEOUT, /* HALF_OPEN -> OPEN after max_wait_half_open_ms */
    MG_CB_WHY_FORCED,           /* mg_breaker_force */
    MG_CB_WHY_RESET,            /* mg_breaker_reset */
    MG_CB_NWHY
} mg_cb_reason_t;

/* Status codes that count as failures: a bitmap over 0..599. */
#define MG_CB_STATUS_WORDS 10

typedef struct {
    mg_cb_mode_t mode;
    /* Resilience4j (defaults from mg_breaker_cfg_default): */
    mg_cb_window_t window_type;       /* slidingWindowType: COUNT_BASED */
    uint32_t window_size;             /* slidingWindowSize: 100 (calls, or seconds when TIME_BASED) */
    uint32_t minimum_calls;           /* minimumNumberOfCalls: 100 (capped at window_size when COUNT_BASED) */
    float failure_rate_threshold;     /* failureRateThreshold: 50 (percent, >=) */
    float slow_rate_threshold;        /* slowCallRateThreshold: 100 (percent, >=) */
    uint32_t slow_call_duration_ms;   /* slowCallDurationThreshold: 60000 (slow when duration > it) */
    uint32_t wait_open_ms;            /* waitDurationInOpenState: 60000 (simple mode: resetTimeoutMs) */
    uint32_t half_open_permits;       /* permittedNumberOfCallsInHalfOpenState: 10 */
    bool automatic_half_open;         /* automaticTransitionFromOpenToHalfOpenEnabled: false */
    uint32_t max_wait_half_open_ms;   /* maxWaitDurationInHalfOpenState: 0 = wait for the permitted calls */
    /* seed's simple form (mode MG_CB_MODE_CONSECUTIVE): */
    uint32_t failure_threshold;       /* failureThreshold: consecutive failures that open it (5) */
    uint32_t call_timeout_ms;         /* timeoutMs: a call lasting longer is a failure; 0 = off.
                                       * The proxy should also use it as the response timeout. */
    /* What counts as a failure (mg_breaker_classify): */
    bool fail_on_connect, fail_on_timeout, fail_on_reset, fail_on_protocol; /* all true */
    uint64_t fail_status[MG_CB_STATUS_WORDS]; /* none by default; see mg_breaker_cfg_fail_status */
} mg_breaker_cfg_t;

/* Resilience4j defaults (mode RATE) and the simple-mode defaults. */
void mg_breaker_cfg_default(mg_breaker_cfg_t *c);
/* The seed's CircuitBreakerConfig: failureThreshold, timeoutMs,
 * resetTimeoutMs. One trial call in HALF_OPEN (its first result decides). */
void mg_breaker_cfg_simple(mg_breaker_cfg_t *c, uint32_t failure_threshold, uint32_t timeout_ms,
                           uint32_t reset_timeout_ms);
/* Count statuses lo..hi (inclusive, 100..599) as failures. */
int mg_breaker_cfg_fail_status(mg_breaker_cfg_t *c, int lo, int hi);
/* 0, or MG_ECONFIG with the reason (no position) in err. */
int mg_breaker_cfg_validate(const mg_breaker_cfg_t *c, char *err, size_t errlen);
bool mg_breaker_cfg_equal(const mg_breaker_cfg_t *a, const mg_breaker_cfg_t *b);

/* Outcome of an attempt for this breaker: cancelled -> IGNORED; local
 * failures per the fail_on_* flags; a response is a FAILURE when its
 * status is in fail_status, else SUCCESS. */
mg_cb_outcome_t mg_breaker_classify(const mg_breaker_cfg_t *c, mg_up_result_t r, int status);

/* Passed to the transition hook. */
typedef struct {
    const char *name;
    mg_cb_state_t from, to;
    mg_cb_reason_t reason;
    float failure_rate, slow_rate; /* percent of the window that decided; -1 if not computed */
    uint32_t calls;                /* calls in that window */
    uint64_t now_ms;
} mg_cb_event_t;

/* Called on every transition (and reset) with the breaker's transition
 * lock held, in transition order, on whichever thread caused it (a worker,
 * or the control thread). Must be quick and must not call into the same
 * breaker: log a line, bump a counter. */
typedef void (*mg_breaker_hook_t)(void *ud, const mg_cb_event_t *ev);

typedef struct mg_breaker mg_breaker_t;

/* nslots: per-thread counter slots (workers + 1 for the control thread,
 * say); slot arguments below must be < nslots and each slot used by one
 * thread only. Copies cfg and name. NULL on bad config or no memory. */
mg_breaker_t *mg_breaker_new(const char *name, const mg_breaker_cfg_t *cfg, uint32_t nslots,
                             uint64_t now_ms, mg_breaker_hook_t hook, void *hook_ud);
void mg_breaker_free(mg_breaker_t *b);
const char *mg_breaker_name(const mg_breaker_t *b);
const mg_breaker_cfg_t *mg_breaker_cfg(const mg_breaker_t *b);

/* May this call go ahead? On true, *ticket identifies the permit; pass it
 * to mg_breaker_record. False: not permitted (OPEN, FORCED_OPEN, or
 * HALF_OPEN with all permits taken). OPEN turns HALF_OPEN here once the
 * wait has elapsed (Resilience4j's lazy transition). */
bool mg_breaker_acquire(mg_breaker_t *b, uint32_t slot, uint64_t now_ms, uint32_t *ticket);

/* The result of a permitted call. duration_ms decides slowness. */
void mg_breaker_record(mg_breaker_t *b, uint32_t slot, uint32_t ticket, mg_cb_outcome_t o,
                       uint64_t duration_ms, uint64_t now_ms);

/* Timed transitions: automatic OPEN -> HALF_OPEN (when enabled) and
 * HALF_OPEN -> OPEN after max_wait_half_open_ms. Returns ms until the next
 * timed event is due (call again then), or UINT64_MAX if none is pending. */
uint64_t mg_breaker_tick(mg_breaker_t *b, uint64_t now_ms);

/* Admin drills. to: MG_CB_FORCED_OPEN ("open"), MG_CB_DISABLED ("close"),
 * or a normal state (OPEN starts the wait, HALF_OPEN starts a trial,
 * CLOSED starts a fresh window). Forcing the current state is a no-op.
 * 0 or -EINVAL. */
int mg_breaker_force(mg_breaker_t *b, mg_cb_state_t to, uint64_t now_ms);
/* Back to CLOSED with an empty window, from any state ("reset"). */
void mg_breaker_reset(mg_breaker_t *b, uint64_t now_ms);

typedef struct {
    mg_cb_state_t state;
    uint64_t state_since_ms;
    float failure_rate, slow_rate; /* percent; -1 while calls < minimum (as Resilience4j) */
    uint32_t calls, failed_calls, slow_calls; /* in the window (HALF_OPEN: the trial so far) */
    uint32_t consecutive_failures; /* simple mode */
    uint32_t half_open_permits_left;
    uint64_t ms_until_half_open;   /* OPEN: 0 when due */
    /* lifetime counters (summed over slots) */
    uint64_t successes, failures, slow, ignored, not_permitted;
    uint64_t entered[MG_CB_NSTATES]; /* transitions into each state */
    uint64_t resets;
} mg_breaker_snap_t;

void mg_breaker_snapshot(mg_breaker_t *b, uint64_t now_ms, mg_breaker_snap_t *out);

/* The current state with one atomic load (gauges, quick checks). */
mg_cb_state_t mg_breaker_state(const mg_breaker_t *b);

const char *mg_cb_state_name(mg_cb_state_t s);   /* "CLOSED", "OPEN", ... (Resilience4j's names) */
const char *mg_cb_reason_name(mg_cb_reason_t r); /* "failure_rate", ... */

#endif
