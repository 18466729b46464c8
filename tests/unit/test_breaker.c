/* test_breaker: every transition of the circuit breaker, driven by a fake
 * clock (the now_ms argument), plus multi-threaded smoke tests whose end
 * state checks the window's add-once/remove-once accounting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "core/err.h"
#include "resilience/breaker.h"

/* ---- helpers ---- */

typedef struct {
    mg_cb_event_t ev[64];
    int n;
} evlog_t;

static void hook(void *ud, const mg_cb_event_t *ev)
{
    evlog_t *l = ud;
    if (l->n < 64)
        l->ev[l->n++] = *ev;
}

/* One call: acquire, then record o with duration d. Returns false if not permitted. */
static bool call(mg_breaker_t *b, uint64_t now, mg_cb_outcome_t o, uint64_t d)
{
    uint32_t t;
    if (!mg_breaker_acquire(b, 0, now, &t))
        return false;
    mg_breaker_record(b, 0, t, o, d, now);
    return true;
}

static mg_breaker_t *mk(const mg_breaker_cfg_t *c, evlog_t *l)
{
    mg_breaker_t *b = mg_breaker_new("b", c, 2, 0, l ? hook : NULL, l);
    assert_non_null(b);
    return b;
}

static mg_breaker_cfg_t count_cfg(uint32_t size, uint32_t min, float thr)
{
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    c.window_size = size;
    c.minimum_calls = min;
    c.failure_rate_threshold = thr;
    c.wait_open_ms = 1000;
    c.half_open_permits = 3;
    return c;
}

/* ---- config ---- */

static void test_defaults(void **st)
{
    (void)st;
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    assert_int_equal(c.mode, MG_CB_MODE_RATE);
    assert_int_equal(c.window_type, MG_CB_COUNT_BASED);
    assert_int_equal(c.window_size, 100);
    assert_int_equal(c.minimum_calls, 100);
    assert_true(c.failure_rate_threshold == 50.0f);
    assert_true(c.slow_rate_threshold == 100.0f);
    assert_int_equal(c.slow_call_duration_ms, 60000);
    assert_int_equal(c.wait_open_ms, 60000);
    assert_int_equal(c.half_open_permits, 10);
    assert_false(c.automatic_half_open);
    assert_int_equal(mg_breaker_cfg_validate(&c, NULL, 0), 0);

    char err[128];
    mg_breaker_cfg_t bad = c;
    bad.failure_rate_threshold = 0;
    assert_int_equal(mg_breaker_cfg_validate(&bad, err, sizeof err), MG_ECONFIG);
    assert_non_null(strstr(err, "failureRateThreshold"));
    bad = c;
    bad.half_open_permits = 0;
    assert_int_equal(mg_breaker_cfg_validate(&bad, err, sizeof err), MG_ECONFIG);
    bad = c;
    bad.window_size = 0;
    assert_int_equal(mg_breaker_cfg_validate(&bad, err, sizeof err), MG_ECONFIG);
    assert_null(mg_breaker_new("x", &bad, 1, 0, NULL, NULL));
    bad = c;
    bad.mode = MG_CB_MODE_CONSECUTIVE;
    bad.failure_threshold = 0;
    assert_int_equal(mg_breaker_cfg_validate(&bad, err, sizeof err), MG_ECONFIG);
    assert_true(mg_breaker_cfg_equal(&c, &c));
    bad = c;
    bad.wait_open_ms++;
    assert_false(mg_breaker_cfg_equal(&c, &bad));
}

static void test_classify(void **st)
{
    (void)st;
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESPONSE, 500), MG_CB_SUCCESS); /* statuses opt-in */
    assert_int_equal(mg_breaker_cfg_fail_status(&c, 500, 599), 0);
    assert_int_equal(mg_breaker_cfg_fail_status(&c, 429, 429), 0);
    assert_int_equal(mg_breaker_cfg_fail_status(&c, 600, 700), -EINVAL);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESPONSE, 503), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESPONSE, 429), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESPONSE, 404), MG_CB_SUCCESS);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESPONSE, 200), MG_CB_SUCCESS);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_CONNECT_FAILURE, 0), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_TIMEOUT, 0), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_RESET, 0), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_PROTOCOL, 0), MG_CB_FAILURE);
    assert_int_equal(mg_breaker_classify(&c, MG_UP_CANCELLED, 0), MG_CB_IGNORED);
    c.fail_on_timeout = false; /* Resilience4j: a non-recorded error is a success */
    assert_int_equal(mg_breaker_classify(&c, MG_UP_TIMEOUT, 0), MG_CB_SUCCESS);
}

/* ---- CLOSED -> OPEN ---- */

static void test_not_before_minimum_calls(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(10, 5, 50);
    mg_breaker_t *b = mk(&c, &l);
    for (int i = 0; i < 4; i++) {
        assert_true(call(b, 0, MG_CB_FAILURE, 1));
        assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    }
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.calls, 4);
    assert_int_equal(s.failed_calls, 4);
    assert_true(s.failure_rate < 0); /* not computed below the minimum */
    assert_true(call(b, 0, MG_CB_FAILURE, 1)); /* 5th call: 100 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0].from, MG_CB_CLOSED);
    assert_int_equal(l.ev[0].to, MG_CB_OPEN);
    assert_int_equal(l.ev[0].reason, MG_CB_WHY_FAILURE_RATE);
    assert_int_equal(l.ev[0].calls, 5);
    assert_true(l.ev[0].failure_rate == 100.0f);
    mg_breaker_free(b);
}

static void test_failure_rate_threshold(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(10, 5, 50);
    mg_breaker_t *b = mk(&c, NULL);
    /* 2 F + 3 S = 40 % at the minimum: stays closed */
    call(b, 0, MG_CB_FAILURE, 1);
    call(b, 0, MG_CB_FAILURE, 1);
    call(b, 0, MG_CB_SUCCESS, 1);
    call(b, 0, MG_CB_SUCCESS, 1);
    call(b, 0, MG_CB_SUCCESS, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 0, &s);
    assert_true(s.failure_rate == 40.0f);
    /* ignored calls do not count */
    call(b, 0, MG_CB_IGNORED, 1);
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.calls, 5);
    assert_int_equal(s.ignored, 1);
    /* 3 / 6 = 50 % >= 50: opens */
    call(b, 0, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_count_window_slides(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = mk(&c, NULL);
    mg_breaker_snap_t s;
    call(b, 0, MG_CB_FAILURE, 1); /* [F] */
    call(b, 0, MG_CB_SUCCESS, 1);
    call(b, 0, MG_CB_SUCCESS, 1);
    call(b, 0, MG_CB_SUCCESS, 1); /* [F S S S] 25 % */
    mg_breaker_snapshot(b, 0, &s);
    assert_true(s.failure_rate == 25.0f);
    call(b, 0, MG_CB_SUCCESS, 1); /* F falls out: [S S S S] */
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.calls, 4);
    assert_int_equal(s.failed_calls, 0);
    call(b, 0, MG_CB_FAILURE, 1); /* [S S S F] 25 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    call(b, 0, MG_CB_FAILURE, 1); /* [S S F F] 50 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_minimum_capped_at_window(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(5, 100, 50); /* Resilience4j caps 100 at 5 */
    mg_breaker_t *b = mk(&c, NULL);
    for (int i = 0; i < 4; i++)
        call(b, 0, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    call(b, 0, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_slow_call_rate(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.slow_rate_threshold = 50;
    c.slow_call_duration_ms = 100;
    mg_breaker_t *b = mk(&c, &l);
    call(b, 0, MG_CB_SUCCESS, 100); /* not slow: slow means > threshold */
    call(b, 0, MG_CB_SUCCESS, 101); /* slow */
    call(b, 0, MG_CB_SUCCESS, 5);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.slow_calls, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    call(b, 0, MG_CB_SUCCESS, 5000); /* 2 of 4 slow = 50 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0].reason, MG_CB_WHY_SLOW_RATE);
    assert_true(l.ev[0].slow_rate == 50.0f);
    assert_true(l.ev[0].failure_rate == 0.0f);
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.slow, 2);
    assert_int_equal(s.successes, 4);
    mg_breaker_free(b);
}

/* ---- OPEN ---- */

static mg_breaker_t *opened(mg_breaker_cfg_t *c, evlog_t *l, uint64_t now)
{
    mg_breaker_t *b = mk(c, l);
    for (uint32_t i = 0; i < c->minimum_calls; i++)
        call(b, now, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    return b;
}

static void test_open_rejects(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = opened(&c, NULL, 100);
    uint32_t t;
    assert_false(mg_breaker_acquire(b, 0, 100, &t));
    assert_false(mg_breaker_acquire(b, 1, 1099, &t));
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 600, &s);
    assert_int_equal(s.state, MG_CB_OPEN);
    assert_int_equal(s.ms_until_half_open, 500);
    assert_int_equal(s.not_permitted, 2); /* summed over both slots */
    assert_int_equal(s.entered[MG_CB_OPEN], 1);
    assert_int_equal(s.state_since_ms, 100);
    assert_true(s.failure_rate == 100.0f); /* the window that tripped it */
    mg_breaker_free(b);
}

static void test_open_to_half_open_lazy(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = opened(&c, &l, 0);
    /* without automatic transition the timer does nothing... */
    assert_int_equal(mg_breaker_tick(b, 5000), UINT64_MAX);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    /* ...and the next call after the wait turns it HALF_OPEN */
    uint32_t t;
    assert_false(mg_breaker_acquire(b, 0, 999, &t));
    assert_true(mg_breaker_acquire(b, 0, 5000, &t));
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.ev[1].from, MG_CB_OPEN);
    assert_int_equal(l.ev[1].to, MG_CB_HALF_OPEN);
    assert_int_equal(l.ev[1].reason, MG_CB_WHY_WAIT_ELAPSED);
    mg_breaker_free(b);
}

static void test_open_to_half_open_automatic(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.automatic_half_open = true;
    mg_breaker_t *b = opened(&c, &l, 0);
    assert_int_equal(mg_breaker_tick(b, 400), 600); /* due in 600 ms */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(mg_breaker_tick(b, 1000), UINT64_MAX);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN); /* without any call */
    assert_int_equal(l.ev[1].reason, MG_CB_WHY_AUTOMATIC);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 1000, &s);
    assert_int_equal(s.half_open_permits_left, 3);
    assert_int_equal(s.calls, 0);
    mg_breaker_free(b);
}

/* ---- HALF_OPEN ---- */

static mg_breaker_t *half_opened(mg_breaker_cfg_t *c, evlog_t *l)
{
    c->automatic_half_open = true;
    mg_breaker_t *b = opened(c, l, 0);
    mg_breaker_tick(b, c->wait_open_ms);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    return b;
}

static void test_half_open_permits(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = half_opened(&c, NULL);
    uint32_t t[4];
    assert_true(mg_breaker_acquire(b, 0, 1000, &t[0]));
    assert_true(mg_breaker_acquire(b, 0, 1000, &t[1]));
    assert_true(mg_breaker_acquire(b, 0, 1000, &t[2]));
    assert_false(mg_breaker_acquire(b, 0, 1000, &t[3])); /* exactly 3 */
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 1000, &s);
    assert_int_equal(s.half_open_permits_left, 0);
    /* an ignored call gives its permit back */
    mg_breaker_record(b, 0, t[0], MG_CB_IGNORED, 1, 1000);
    assert_true(mg_breaker_acquire(b, 0, 1000, &t[0]));
    assert_false(mg_breaker_acquire(b, 0, 1000, &t[3]));
    /* results so far don't decide until all permitted calls are in */
    mg_breaker_record(b, 0, t[0], MG_CB_FAILURE, 1, 1000);
    mg_breaker_record(b, 0, t[1], MG_CB_FAILURE, 1, 1000);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    mg_breaker_snapshot(b, 1000, &s);
    assert_int_equal(s.calls, 2);
    assert_true(s.failure_rate < 0);
    mg_breaker_free(b);
}

static void test_half_open_to_closed(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = half_opened(&c, &l);
    assert_true(call(b, 1000, MG_CB_SUCCESS, 1));
    assert_true(call(b, 1000, MG_CB_FAILURE, 1));
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    assert_true(call(b, 1000, MG_CB_SUCCESS, 1)); /* 1 of 3 failed = 33 % < 50 */
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    assert_int_equal(l.ev[l.n - 1].reason, MG_CB_WHY_TRIAL_PASSED);
    assert_int_equal(l.ev[l.n - 1].calls, 3);
    /* a fresh window */
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 1000, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.failed_calls, 0);
    assert_int_equal(s.entered[MG_CB_CLOSED], 1);
    assert_int_equal(s.entered[MG_CB_OPEN], 1);
    assert_int_equal(s.entered[MG_CB_HALF_OPEN], 1);
    for (int i = 0; i < 3; i++)
        call(b, 1000, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED); /* needs 4 calls again */
    mg_breaker_free(b);
}

static void test_half_open_to_open(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    mg_breaker_t *b = half_opened(&c, &l);
    call(b, 1000, MG_CB_FAILURE, 1);
    call(b, 1000, MG_CB_FAILURE, 1);
    call(b, 1000, MG_CB_SUCCESS, 1); /* 67 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(l.ev[l.n - 1].reason, MG_CB_WHY_TRIAL_FAILED);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 1500, &s);
    assert_int_equal(s.ms_until_half_open, 500); /* a new full wait from 1000 */
    mg_breaker_free(b);
}

static void test_half_open_slow_reopens(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.slow_rate_threshold = 60;
    c.slow_call_duration_ms = 100;
    mg_breaker_t *b = half_opened(&c, NULL);
    call(b, 1000, MG_CB_SUCCESS, 500);
    call(b, 1000, MG_CB_SUCCESS, 500);
    call(b, 1000, MG_CB_SUCCESS, 5); /* 67 % slow */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_half_open_max_wait(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.max_wait_half_open_ms = 300;
    mg_breaker_t *b = half_opened(&c, &l); /* HALF_OPEN at 1000 */
    uint32_t t;
    assert_true(mg_breaker_acquire(b, 0, 1000, &t)); /* a trial call that never ends */
    assert_int_equal(mg_breaker_tick(b, 1100), 200);
    assert_int_equal(mg_breaker_tick(b, 1300), 1000); /* OPEN again: next due is the wait */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(l.ev[l.n - 1].reason, MG_CB_WHY_HALF_OPEN_TIMEOUT);
    /* the straggler's result arrives later: not counted anywhere but the totals */
    mg_breaker_record(b, 0, t, MG_CB_SUCCESS, 1, 1400);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_stale_ticket_ignored(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.automatic_half_open = true;
    mg_breaker_t *b = mk(&c, NULL);
    uint32_t old;
    assert_true(mg_breaker_acquire(b, 0, 0, &old)); /* a slow call from CLOSED */
    for (int i = 0; i < 4; i++)
        call(b, 0, MG_CB_FAILURE, 1);
    mg_breaker_tick(b, 1000);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    /* the CLOSED-era call finishes during the trial: it must not judge it */
    mg_breaker_record(b, 0, old, MG_CB_SUCCESS, 1, 1000);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 1000, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.successes, 1);
    mg_breaker_free(b);
}

/* ---- TIME_BASED ---- */

static void test_time_window_expiry(void **st)
{
    (void)st;
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    c.window_type = MG_CB_TIME_BASED;
    c.window_size = 10; /* seconds */
    c.minimum_calls = 5;
    c.failure_rate_threshold = 50;
    mg_breaker_t *b = mk(&c, NULL);
    mg_breaker_snap_t s;
    call(b, 500, MG_CB_FAILURE, 1); /* second 0 */
    call(b, 900, MG_CB_FAILURE, 1);
    call(b, 5000, MG_CB_SUCCESS, 1); /* second 5 */
    call(b, 5100, MG_CB_SUCCESS, 1);
    call(b, 5200, MG_CB_SUCCESS, 1); /* 2 / 5 = 40 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snapshot(b, 9999, &s); /* seconds 0..9: all in */
    assert_int_equal(s.calls, 5);
    mg_breaker_snapshot(b, 10000, &s); /* second 10: second 0 has left */
    assert_int_equal(s.calls, 3);
    assert_int_equal(s.failed_calls, 0);
    /* 2 more failures: 2 / 5 = 40 % (4 / 7 = 57 % had second 0 stayed) */
    call(b, 10100, MG_CB_FAILURE, 1);
    call(b, 10200, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snapshot(b, 10200, &s);
    assert_true(s.failure_rate == 40.0f);
    /* long idle: the whole window is gone */
    mg_breaker_snapshot(b, 100000, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.failed_calls, 0);
    /* failures within one second trip it once the minimum is met */
    for (int i = 0; i < 4; i++)
        call(b, 200000 + i, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    call(b, 200999, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

static void test_time_window_trips_on_eviction(void **st)
{
    (void)st;
    /* Successes leaving the window raise the failure rate; the next
     * record (even a success) re-evaluates, as Resilience4j does. */
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    c.window_type = MG_CB_TIME_BASED;
    c.window_size = 2;
    c.minimum_calls = 3;
    c.failure_rate_threshold = 50;
    mg_breaker_t *b = mk(&c, NULL);
    for (int i = 0; i < 4; i++)
        call(b, 0, MG_CB_SUCCESS, 1); /* second 0: 4 S */
    call(b, 1000, MG_CB_FAILURE, 1);
    call(b, 1000, MG_CB_FAILURE, 1); /* 2 / 6 */
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    call(b, 2000, MG_CB_SUCCESS, 1); /* second 0 leaves: F F S = 67 % */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    mg_breaker_free(b);
}

/* ---- forced states ---- */

static void test_forced(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.automatic_half_open = true;
    mg_breaker_t *b = mk(&c, &l);
    uint32_t t;

    assert_int_equal(mg_breaker_force(b, MG_CB_FORCED_OPEN, 0), 0);
    assert_int_equal(mg_breaker_state(b), MG_CB_FORCED_OPEN);
    assert_false(mg_breaker_acquire(b, 0, 0, &t));
    assert_int_equal(mg_breaker_tick(b, 10000000), UINT64_MAX); /* never half-opens by itself */
    assert_false(mg_breaker_acquire(b, 0, 10000000, &t));
    assert_int_equal(l.ev[0].reason, MG_CB_WHY_FORCED);
    assert_int_equal(mg_breaker_force(b, MG_CB_FORCED_OPEN, 0), 0); /* same state: no-op */
    assert_int_equal(l.n, 1);

    assert_int_equal(mg_breaker_force(b, MG_CB_DISABLED, 0), 0); /* admin "close" */
    for (int i = 0; i < 20; i++)
        assert_true(call(b, 0, MG_CB_FAILURE, 1));
    assert_int_equal(mg_breaker_state(b), MG_CB_DISABLED);

    mg_breaker_reset(b, 50);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 50, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.resets, 1);
    assert_int_equal(s.failures, 20);
    assert_int_equal(s.not_permitted, 2);
    assert_int_equal(l.ev[l.n - 1].reason, MG_CB_WHY_RESET);

    /* reset from CLOSED clears the window too */
    call(b, 50, MG_CB_FAILURE, 1);
    call(b, 50, MG_CB_FAILURE, 1);
    call(b, 50, MG_CB_FAILURE, 1);
    mg_breaker_reset(b, 60);
    call(b, 60, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);

    /* forcing a normal OPEN: the usual wait, then HALF_OPEN */
    assert_int_equal(mg_breaker_force(b, MG_CB_OPEN, 100), 0);
    assert_false(mg_breaker_acquire(b, 0, 500, &t));
    mg_breaker_tick(b, 1100);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    assert_int_equal(mg_breaker_force(b, MG_CB_CLOSED, 1200), 0);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    assert_int_equal(mg_breaker_force(b, MG_CB_NSTATES, 0), -EINVAL);
    mg_breaker_free(b);
}

/* ---- the seed's simple form ---- */

static void test_simple_mode(void **st)
{
    (void)st;
    evlog_t l = { 0 };
    mg_breaker_cfg_t c;
    mg_breaker_cfg_simple(&c, 3, 200, 5000); /* failureThreshold, timeoutMs, resetTimeoutMs */
    assert_int_equal(mg_breaker_cfg_validate(&c, NULL, 0), 0);
    mg_breaker_t *b = mk(&c, &l);
    call(b, 0, MG_CB_FAILURE, 1);
    call(b, 0, MG_CB_FAILURE, 1);
    call(b, 0, MG_CB_SUCCESS, 1); /* a success resets the count */
    call(b, 0, MG_CB_FAILURE, 1);
    call(b, 0, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.consecutive_failures, 2);
    call(b, 10, MG_CB_SUCCESS, 201); /* over timeoutMs: a failure */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);
    assert_int_equal(l.ev[0].reason, MG_CB_WHY_CONSECUTIVE);

    uint32_t t, t2;
    assert_false(mg_breaker_acquire(b, 0, 5009, &t)); /* resetTimeoutMs not over */
    assert_true(mg_breaker_acquire(b, 0, 5010, &t));
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    assert_false(mg_breaker_acquire(b, 0, 5010, &t2)); /* one trial call */
    mg_breaker_record(b, 0, t, MG_CB_FAILURE, 1, 5020); /* trial fails */
    assert_int_equal(mg_breaker_state(b), MG_CB_OPEN);

    assert_true(mg_breaker_acquire(b, 0, 10020, &t));
    mg_breaker_record(b, 0, t, MG_CB_SUCCESS, 1, 10030); /* trial passes */
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED);
    mg_breaker_snapshot(b, 10030, &s);
    assert_int_equal(s.consecutive_failures, 0);
    call(b, 10040, MG_CB_FAILURE, 1);
    call(b, 10040, MG_CB_FAILURE, 1);
    assert_int_equal(mg_breaker_state(b), MG_CB_CLOSED); /* counts from zero again */
    mg_breaker_free(b);
}

static void test_names(void **st)
{
    (void)st;
    assert_string_equal(mg_cb_state_name(MG_CB_HALF_OPEN), "HALF_OPEN");
    assert_string_equal(mg_cb_state_name(MG_CB_FORCED_OPEN), "FORCED_OPEN");
    assert_string_equal(mg_cb_reason_name(MG_CB_WHY_SLOW_RATE), "slow_call_rate");
    assert_string_equal(mg_cb_state_name((mg_cb_state_t)42), "?");
}

/* ---- threads ---- */

typedef struct {
    mg_breaker_t *b;
    uint32_t slot;
    _Atomic uint64_t *clock;
    int iters;
    int fail_pct;
    uint64_t permitted, failed;
} worker_t;

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *hammer(void *arg)
{
    worker_t *w = arg;
    uint64_t r = 0x9e3779b97f4a7c15ull * (w->slot + 1);
    for (int i = 0; i < w->iters; i++) {
        uint64_t now = w->clock ? atomic_fetch_add(w->clock, 1) : 0;
        uint32_t t;
        if (!mg_breaker_acquire(w->b, w->slot, now, &t))
            continue;
        w->permitted++;
        bool f = (int)(xs(&r) % 100) < w->fail_pct;
        w->failed += f;
        mg_breaker_record(w->b, w->slot, t, f ? MG_CB_FAILURE : MG_CB_SUCCESS, xs(&r) % 3, now);
    }
    return NULL;
}

#define NTHREADS 4

static void run_threads(worker_t *w)
{
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
}

/* Never trips (threshold 100 % with 30 % failures): at the end the count
 * window must hold exactly window_size calls, and a reset must empty it
 * exactly: any lost or doubled add/remove would show. */
static void test_mt_count_window_exact(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(97, 10, 100);
    mg_breaker_t *b = mg_breaker_new("mt", &c, NTHREADS, 0, NULL, NULL);
    worker_t w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        w[i] = (worker_t){ .b = b, .slot = (uint32_t)i, .iters = 200000, .fail_pct = 30 };
    run_threads(w);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.state, MG_CB_CLOSED);
    assert_int_equal(s.calls, 97);
    assert_true(s.failed_calls <= 97);
    uint64_t failed = 0;
    for (int i = 0; i < NTHREADS; i++)
        failed += w[i].failed;
    assert_int_equal(s.failures, failed);
    assert_int_equal(s.successes + s.failures, (uint64_t)NTHREADS * 200000);
    mg_breaker_reset(b, 0);
    mg_breaker_snapshot(b, 0, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.failed_calls, 0);
    assert_int_equal(s.slow_calls, 0);
    mg_breaker_free(b);
}

/* Same for the time window: once every second has left, it is empty. */
static void test_mt_time_window_exact(void **st)
{
    (void)st;
    mg_breaker_cfg_t c;
    mg_breaker_cfg_default(&c);
    c.window_type = MG_CB_TIME_BASED;
    c.window_size = 5;
    c.minimum_calls = 10;
    c.failure_rate_threshold = 100;
    _Atomic uint64_t clock = 0;
    mg_breaker_t *b = mg_breaker_new("mt", &c, NTHREADS, 0, NULL, NULL);
    worker_t w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        w[i] = (worker_t){ .b = b, .slot = (uint32_t)i, .clock = &clock, .iters = 100000, .fail_pct = 30 };
    run_threads(w); /* the clock runs 400 s in 1 ms steps */
    mg_breaker_snap_t s;
    uint64_t end = atomic_load(&clock);
    mg_breaker_snapshot(b, end, &s);
    assert_true(s.calls > 0 && s.calls <= 5 * 1000 + NTHREADS);
    assert_true(s.failed_calls <= s.calls);
    mg_breaker_snapshot(b, end + 6000, &s);
    assert_int_equal(s.calls, 0);
    assert_int_equal(s.failed_calls, 0);
    mg_breaker_free(b);
}

/* Concurrent half-open: exactly N permits across threads. */
static void *grab(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < w->iters; i++) {
        uint32_t t;
        if (mg_breaker_acquire(w->b, w->slot, 1000, &t))
            w->permitted++;
    }
    return NULL;
}

static void test_mt_half_open_permits(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(4, 4, 50);
    c.half_open_permits = 7;
    mg_breaker_t *b = opened(&c, NULL, 0);
    worker_t w[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (worker_t){ .b = b, .slot = (uint32_t)i, .iters = 10000 };
        assert_int_equal(pthread_create(&th[i], NULL, grab, &w[i]), 0);
    }
    uint64_t total = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        total += w[i].permitted;
    }
    assert_int_equal(total, 7);
    assert_int_equal(mg_breaker_state(b), MG_CB_HALF_OPEN);
    mg_breaker_free(b);
}

/* Transitions under load (TSan food): a breaker that trips and recovers
 * again and again while the control thread ticks and snapshots. */
typedef struct {
    mg_breaker_t *b;
    _Atomic uint64_t *clock;
    _Atomic int *stop;
} ctl_t;

static void *control(void *arg)
{
    ctl_t *c = arg;
    while (!atomic_load(c->stop)) {
        uint64_t now = atomic_load(c->clock);
        mg_breaker_tick(c->b, now);
        mg_breaker_snap_t s;
        mg_breaker_snapshot(c->b, now, &s);
        if ((now / 1000) % 97 == 0)
            mg_breaker_force(c->b, MG_CB_CLOSED, now);
    }
    return NULL;
}

static void test_mt_transitions(void **st)
{
    (void)st;
    mg_breaker_cfg_t c = count_cfg(20, 10, 40);
    c.wait_open_ms = 50;
    c.automatic_half_open = true;
    c.slow_rate_threshold = 80;
    c.slow_call_duration_ms = 1;
    _Atomic uint64_t clock = 0;
    _Atomic int stop = 0;
    mg_breaker_t *b = mg_breaker_new("mt", &c, NTHREADS + 1, 0, NULL, NULL);
    worker_t w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        w[i] = (worker_t){ .b = b, .slot = (uint32_t)i, .clock = &clock, .iters = 100000, .fail_pct = 40 };
    ctl_t ctl = { b, &clock, &stop };
    pthread_t ct;
    assert_int_equal(pthread_create(&ct, NULL, control, &ctl), 0);
    run_threads(w);
    atomic_store(&stop, 1);
    pthread_join(ct, NULL);
    mg_breaker_snap_t s;
    mg_breaker_snapshot(b, atomic_load(&clock), &s);
    assert_true(s.entered[MG_CB_OPEN] > 0);
    assert_true(s.entered[MG_CB_HALF_OPEN] > 0);
    assert_true(s.entered[MG_CB_CLOSED] > 0);
    uint64_t permitted = 0;
    for (int i = 0; i < NTHREADS; i++)
        permitted += w[i].permitted;
    assert_int_equal(s.successes + s.failures, permitted);
    assert_int_equal(permitted + s.not_permitted, (uint64_t)NTHREADS * 100000);
    mg_breaker_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_not_before_minimum_calls),
        cmocka_unit_test(test_failure_rate_threshold),
        cmocka_unit_test(test_count_window_slides),
        cmocka_unit_test(test_minimum_capped_at_window),
        cmocka_unit_test(test_slow_call_rate),
        cmocka_unit_test(test_open_rejects),
        cmocka_unit_test(test_open_to_half_open_lazy),
        cmocka_unit_test(test_open_to_half_open_automatic),
        cmocka_unit_test(test_half_open_permits),
        cmocka_unit_test(test_half_open_to_closed),
        cmocka_unit_test(test_half_open_to_open),
        cmocka_unit_test(test_half_open_slow_reopens),
        cmocka_unit_test(test_half_open_max_wait),
        cmocka_unit_test(test_stale_ticket_ignored),
        cmocka_unit_test(test_time_window_expiry),
        cmocka_unit_test(test_time_window_trips_on_eviction),
        cmocka_unit_test(test_forced),
        cmocka_unit_test(test_simple_mode),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_mt_count_window_exact),
        cmocka_unit_test(test_mt_time_window_exact),
        cmocka_unit_test(test_mt_half_open_permits),
        cmocka_unit_test(test_mt_transitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
