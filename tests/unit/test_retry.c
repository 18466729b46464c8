/* test_retry: retry decisions (methods, statuses, series, local failures,
 * never after the response started), backoff bounds for Envoy's jitter and
 * Spring's exponential backoff, and the retry budget (min 3, 20 %). */
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
#include "resilience/retry.h"

static void test_native_defaults(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p);
    assert_int_equal(mg_retry_policy_validate(&p, NULL, 0), 0);
    assert_int_equal(p.max_retries, 1);
    assert_int_equal(p.backoff, MG_BACKOFF_JITTER);
    assert_int_equal(p.base_ms, 25);
    assert_int_equal(p.max_ms, 250);
    /* gateway-error: 502/503/504 and no answer at all */
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 502, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 504, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 500, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 200, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_PROTOCOL, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_CANCELLED, 0, MG_METHOD_GET, false));
}

static void test_methods(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p); /* idempotent only */
    const mg_method_t yes[] = { MG_METHOD_GET, MG_METHOD_HEAD, MG_METHOD_OPTIONS, MG_METHOD_TRACE,
                                MG_METHOD_PUT, MG_METHOD_DELETE };
    const mg_method_t no[] = { MG_METHOD_POST, MG_METHOD_PATCH, MG_METHOD_CONNECT, MG_METHOD_OTHER };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, yes[i], false));
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_false(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, no[i], false));
    assert_int_equal(mg_retry_add_method(&p, "post"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_POST, false));
    assert_int_equal(mg_retry_add_method(&p, "BREW"), MG_ECONFIG);

    mg_retry_policy_spring(&p); /* Spring: GET only */
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 500, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 500, MG_METHOD_PUT, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_POST, false));
}

static void test_never_after_response_started(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p);
    assert_int_equal(mg_retry_add_token(&p, "5xx"), 0);
    assert_false(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, true));
    assert_false(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, true));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 503, MG_METHOD_GET, true));
}

static void test_attempt_limit(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p);
    p.max_retries = 2;
    assert_true(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 2, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 3, MG_UP_RESET, 0, MG_METHOD_GET, false));
    p.max_retries = 0;
    assert_false(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
}

static void test_tokens(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    memset(&p, 0, sizeof p);
    p.max_retries = 1;
    p.methods = ~0u;
    /* connect-failure alone: nothing else */
    assert_int_equal(mg_retry_add_token(&p, "connect-failure"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    /* reset: disconnects, resets, read timeouts */
    assert_int_equal(mg_retry_add_token(&p, "reset"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    /* 5xx */
    assert_int_equal(mg_retry_add_token(&p, "5xx"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 500, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 599, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 409, MG_METHOD_GET, false));
    /* retriable-4xx = 409 only */
    assert_int_equal(mg_retry_add_token(&p, "retriable-4xx"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 409, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 429, MG_METHOD_GET, false));
    /* a status code */
    assert_int_equal(mg_retry_add_token(&p, "429"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 429, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 404, MG_METHOD_GET, false));
    assert_int_equal(mg_retry_add_token(&p, "retriable-status-codes"), 0);
    assert_int_equal(mg_retry_add_token(&p, "refused-stream"), 0);
    assert_int_equal(mg_retry_add_token(&p, "sometimes"), MG_ECONFIG);
    assert_int_equal(mg_retry_add_token(&p, "700"), MG_ECONFIG);
    assert_int_equal(mg_retry_add_status(&p, 99), MG_ECONFIG);
}

static void test_spring_statuses_series_exceptions(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_spring(&p);
    assert_int_equal(p.max_retries, 3);
    assert_int_equal(p.backoff, MG_BACKOFF_NONE);
    /* default series SERVER_ERROR */
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 500, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 3, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 4, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 404, MG_METHOD_GET, false));
    /* default exceptions IOException + TimeoutException */
    assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, false));

    /* an explicit configuration replaces the defaults */
    memset(&p, 0, sizeof p);
    p.max_retries = 2;
    assert_int_equal(mg_retry_add_method(&p, "GET"), 0);
    assert_int_equal(mg_retry_add_spring_status(&p, "BAD_GATEWAY"), 0);
    assert_int_equal(mg_retry_add_spring_status(&p, "429"), 0);
    assert_int_equal(mg_retry_add_spring_status(&p, "NOT_A_STATUS"), MG_ECONFIG);
    assert_int_equal(mg_retry_add_spring_series(&p, "CLIENT_ERROR"), 0);
    assert_int_equal(mg_retry_add_spring_series(&p, "SOMETIMES"), MG_ECONFIG);
    assert_int_equal(mg_retry_add_spring_exception(&p, "java.util.concurrent.TimeoutException"), 0);
    assert_int_equal(mg_retry_add_spring_exception(&p, "com.example.Weird"), MG_ECONFIG);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 502, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESPONSE, 503, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 404, MG_METHOD_GET, false)); /* series 4xx */
    assert_true(mg_retry_should(&p, 1, MG_UP_RESPONSE, 429, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_TIMEOUT, 0, MG_METHOD_GET, false));
    assert_false(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false)); /* no IOException */
    assert_false(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_GET, false));
    assert_int_equal(mg_retry_add_spring_exception(&p, "IOException"), 0);
    assert_true(mg_retry_should(&p, 1, MG_UP_RESET, 0, MG_METHOD_GET, false));
    assert_true(mg_retry_should(&p, 1, MG_UP_CONNECT_FAILURE, 0, MG_METHOD_GET, false));
    assert_int_equal(mg_retry_add_spring_exception(&p, "reactor.netty.http.client.PrematureCloseException"), 0);
    assert_int_equal(mg_retry_add_spring_exception(&p, "org.springframework.cloud.gateway.support.TimeoutException"), 0);
}

static void test_jitter_bounds(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p);
    /* Envoy: interval doubles from 25 ms, capped at 250; delay in [0, interval) */
    const uint32_t iv[] = { 25, 50, 100, 200, 250, 250, 250 };
    for (uint32_t n = 1; n <= 7; n++) {
        assert_int_equal(mg_retry_backoff(&p, n, 0, 0), 0);
        assert_int_equal(mg_retry_backoff(&p, n, 0, iv[n - 1] - 1), iv[n - 1] - 1);
        assert_int_equal(mg_retry_backoff(&p, n, 0, iv[n - 1]), 0);
        uint64_t x = 88172645463325252ull;
        uint32_t hi = 0, lo = UINT32_MAX;
        for (int i = 0; i < 20000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            uint32_t d = mg_retry_backoff(&p, n, 0, x);
            assert_true(d < iv[n - 1]);
            hi = d > hi ? d : hi;
            lo = d < lo ? d : lo;
        }
        assert_int_equal(hi, iv[n - 1] - 1); /* the range is covered */
        assert_int_equal(lo, 0);
    }
    assert_int_equal(mg_retry_backoff(&p, 1000, 0, UINT64_MAX) < 250, 1);
    /* a custom base: max defaults are the config's business; cap respected */
    p.base_ms = 100;
    p.max_ms = 1000;
    assert_int_equal(mg_retry_backoff(&p, 5, 0, 999), 999);
    assert_int_equal(mg_retry_backoff(&p, 5, 0, 1000), 0);
}

static void test_spring_exponential(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_spring(&p);
    assert_int_equal(mg_retry_backoff(&p, 1, 0, 12345), 0); /* no backoff block: at once */
    mg_retry_spring_backoff(&p);
    assert_int_equal(p.base_ms, 5);
    assert_int_equal(p.factor, 2);
    assert_true(p.based_on_previous);
    p.base_ms = 10;
    p.max_ms = 50;
    uint32_t prev = 0;
    const uint32_t want[] = { 10, 20, 40, 50, 50 };
    for (uint32_t n = 1; n <= 5; n++) {
        prev = mg_retry_backoff(&p, n, prev, (uint64_t)n * 7919); /* no jitter */
        assert_int_equal(prev, want[n - 1]);
    }
    p.based_on_previous = false;
    for (uint32_t n = 1; n <= 5; n++)
        assert_int_equal(mg_retry_backoff(&p, n, 0, 0), want[n - 1]);
    p.max_ms = 0; /* no maxBackoff */
    p.factor = 3;
    assert_int_equal(mg_retry_backoff(&p, 4, 0, 0), 270);
    assert_int_equal(mg_retry_policy_validate(&p, NULL, 0), 0);
    p.factor = 0;
    char err[128];
    assert_int_equal(mg_retry_policy_validate(&p, err, sizeof err), MG_ECONFIG);
}

static void test_try_timeout(void **st)
{
    (void)st;
    mg_retry_policy_t p;
    mg_retry_policy_default(&p);
    p.per_try_timeout_ms = 1000;
    assert_int_equal(mg_retry_try_timeout(&p, 100, 0), 1000);
    assert_int_equal(mg_retry_try_timeout(&p, 100, 5000), 1000);
    assert_int_equal(mg_retry_try_timeout(&p, 100, 600), 500); /* the route deadline covers all */
    assert_int_equal(mg_retry_try_timeout(&p, 600, 600), 0);
    p.per_try_timeout_ms = 0;
    assert_int_equal(mg_retry_try_timeout(&p, 100, 600), 500);
}

static void test_budget(void **st)
{
    (void)st;
    mg_retry_budget_cfg_t c;
    mg_retry_budget_cfg_default(&c);
    assert_int_equal(c.budget_percent, 20);
    assert_int_equal(c.min_concurrency, 3);
    assert_int_equal(mg_retry_budget_max(&c, 0), 3);
    assert_int_equal(mg_retry_budget_max(&c, 14), 3);  /* 2.8 -> 2 < 3 */
    assert_int_equal(mg_retry_budget_max(&c, 20), 4);
    assert_int_equal(mg_retry_budget_max(&c, 50), 10);
    assert_int_equal(mg_retry_budget_max(&c, 100), 20);

    mg_retry_budget_t *b = mg_retry_budget_new(&c, 2);
    assert_non_null(b);
    /* few requests: the minimum of 3 */
    assert_true(mg_retry_budget_acquire(b, 0, 1));
    assert_true(mg_retry_budget_acquire(b, 0, 1));
    assert_true(mg_retry_budget_acquire(b, 1, 1));
    assert_false(mg_retry_budget_acquire(b, 1, 1));
    mg_retry_budget_stats_t s;
    mg_retry_budget_stats(b, &s);
    assert_int_equal(s.active_retries, 3);
    assert_int_equal(s.granted, 3);
    assert_int_equal(s.overflow, 1);
    mg_retry_budget_release(b);
    assert_true(mg_retry_budget_acquire(b, 0, 1));
    /* 100 active requests: 20 concurrent retries */
    for (int i = 3; i < 20; i++)
        assert_true(mg_retry_budget_acquire(b, 0, 100));
    assert_false(mg_retry_budget_acquire(b, 0, 100));
    assert_false(mg_retry_budget_acquire(b, 0, 50)); /* fewer requests, smaller budget */
    for (int i = 0; i < 20; i++)
        mg_retry_budget_release(b);
    mg_retry_budget_stats(b, &s);
    assert_int_equal(s.active_retries, 0);
    /* reload: new percent applies at once */
    c.budget_percent = 50;
    c.min_concurrency = 0;
    mg_retry_budget_update(b, &c);
    for (int i = 0; i < 5; i++)
        assert_true(mg_retry_budget_acquire(b, 0, 10));
    assert_false(mg_retry_budget_acquire(b, 0, 10));
    assert_false(mg_retry_budget_acquire(b, 0, 0)); /* min 0, no requests: none */
    mg_retry_budget_free(b);
}

/* Threads: the number of retries in flight never passes the budget. */
#define NTHREADS 4

typedef struct {
    mg_retry_budget_t *b;
    _Atomic uint32_t *inside;
    _Atomic uint32_t *max_inside;
    uint32_t slot;
} bw_t;

static void *budget_hammer(void *arg)
{
    bw_t *w = arg;
    for (int i = 0; i < 100000; i++) {
        if (!mg_retry_budget_acquire(w->b, w->slot, 10)) /* max(3, 2) = 3 */
            continue;
        uint32_t n = atomic_fetch_add(w->inside, 1) + 1;
        uint32_t m = atomic_load(w->max_inside);
        while (n > m && !atomic_compare_exchange_weak(w->max_inside, &m, n)) {
        }
        atomic_fetch_sub(w->inside, 1);
        mg_retry_budget_release(w->b);
    }
    return NULL;
}

static void test_budget_mt(void **st)
{
    (void)st;
    mg_retry_budget_cfg_t c;
    mg_retry_budget_cfg_default(&c);
    mg_retry_budget_t *b = mg_retry_budget_new(&c, NTHREADS);
    _Atomic uint32_t inside = 0, max_inside = 0;
    bw_t w[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (bw_t){ b, &inside, &max_inside, (uint32_t)i };
        assert_int_equal(pthread_create(&th[i], NULL, budget_hammer, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    assert_true(atomic_load(&max_inside) <= 3);
    mg_retry_budget_stats_t s;
    mg_retry_budget_stats(b, &s);
    assert_int_equal(s.active_retries, 0);
    assert_int_equal(s.granted + s.overflow, (uint64_t)NTHREADS * 100000);
    mg_retry_budget_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native_defaults),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_never_after_response_started),
        cmocka_unit_test(test_attempt_limit),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_spring_statuses_series_exceptions),
        cmocka_unit_test(test_jitter_bounds),
        cmocka_unit_test(test_spring_exponential),
        cmocka_unit_test(test_try_timeout),
        cmocka_unit_test(test_budget),
        cmocka_unit_test(test_budget_mt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
