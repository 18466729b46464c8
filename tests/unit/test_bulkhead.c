/* test_bulkhead: Envoy connectionPool limits (requests, pending,
 * connections, requests per connection), overflow counters, and a
 * threaded check that admitted requests never exceed the limit. */
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
#include "resilience/bulkhead.h"

static void test_limits(void **st)
{
    (void)st;
    mg_bulkhead_cfg_t c = { .max_requests = 2, .max_pending = 1, .max_connections = 2,
                            .max_requests_per_connection = 3 };
    mg_bulkhead_t *bh = mg_bulkhead_new(&c, 2);
    assert_non_null(bh);

    assert_int_equal(mg_bulkhead_request_enter(bh, 0), 0);
    assert_int_equal(mg_bulkhead_request_enter(bh, 1), 0);
    assert_int_equal(mg_bulkhead_request_enter(bh, 0), MG_ELIMIT);
    assert_int_equal(mg_bulkhead_active_requests(bh), 2); /* the refused one rolled back */
    mg_bulkhead_request_leave(bh);
    assert_int_equal(mg_bulkhead_request_enter(bh, 0), 0);

    assert_int_equal(mg_bulkhead_pending_enter(bh, 0), 0);
    assert_int_equal(mg_bulkhead_pending_enter(bh, 0), MG_ELIMIT);
    mg_bulkhead_pending_leave(bh);
    assert_int_equal(mg_bulkhead_pending_enter(bh, 1), 0);
    mg_bulkhead_pending_leave(bh);

    assert_true(mg_bulkhead_conn_open(bh, 0));
    assert_true(mg_bulkhead_conn_open(bh, 0));
    assert_false(mg_bulkhead_conn_open(bh, 1)); /* wait for one, not an error */
    mg_bulkhead_conn_closed(bh);
    assert_true(mg_bulkhead_conn_open(bh, 1));

    assert_true(mg_bulkhead_conn_reusable(bh, 1));
    assert_true(mg_bulkhead_conn_reusable(bh, 2));
    assert_false(mg_bulkhead_conn_reusable(bh, 3));

    mg_bulkhead_stats_t s;
    mg_bulkhead_stats(bh, &s);
    assert_int_equal(s.requests, 2);
    assert_int_equal(s.pending, 0);
    assert_int_equal(s.connections, 2);
    assert_int_equal(s.overflow[MG_OVERFLOW_REQUESTS], 1);
    assert_int_equal(s.overflow[MG_OVERFLOW_PENDING], 1);
    assert_int_equal(s.overflow[MG_OVERFLOW_CONNECTIONS], 1);
    assert_int_equal(s.cfg.max_requests, 2);

    /* reload raises the limit; gauges carry on */
    c.max_requests = 3;
    mg_bulkhead_update(bh, &c);
    assert_int_equal(mg_bulkhead_request_enter(bh, 0), 0);
    assert_int_equal(mg_bulkhead_request_enter(bh, 0), MG_ELIMIT);
    mg_bulkhead_free(bh);
}

static void test_unlimited_still_counts(void **st)
{
    (void)st;
    mg_bulkhead_cfg_t c;
    mg_bulkhead_cfg_default(&c);
    mg_bulkhead_t *bh = mg_bulkhead_new(&c, 1);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(mg_bulkhead_request_enter(bh, 0), 0);
    assert_int_equal(mg_bulkhead_active_requests(bh), 5000); /* the retry budget's input */
    assert_true(mg_bulkhead_conn_reusable(bh, 1000000));
    for (int i = 0; i < 5000; i++)
        mg_bulkhead_request_leave(bh);
    assert_int_equal(mg_bulkhead_active_requests(bh), 0);
    mg_bulkhead_cfg_envoy(&c);
    assert_int_equal(c.max_requests, 1024);
    assert_int_equal(c.max_pending, 1024);
    assert_int_equal(c.max_connections, 1024);
    assert_string_equal(mg_overflow_name(MG_OVERFLOW_REQUESTS), "max_requests");
    assert_string_equal(mg_overflow_name(MG_OVERFLOW_PENDING), "max_pending");
    assert_string_equal(mg_overflow_name(MG_OVERFLOW_CONNECTIONS), "max_connections");
    mg_bulkhead_free(bh);
}

#define NTHREADS 4

typedef struct {
    mg_bulkhead_t *bh;
    _Atomic uint32_t *inside, *max_inside;
    uint32_t slot;
    uint64_t admitted, refused;
} bw_t;

static void *hammer(void *arg)
{
    bw_t *w = arg;
    for (int i = 0; i < 100000; i++) {
        if (mg_bulkhead_request_enter(w->bh, w->slot)) {
            w->refused++;
            continue;
        }
        w->admitted++;
        uint32_t n = atomic_fetch_add(w->inside, 1) + 1;
        uint32_t m = atomic_load(w->max_inside);
        while (n > m && !atomic_compare_exchange_weak(w->max_inside, &m, n)) {
        }
        atomic_fetch_sub(w->inside, 1);
        mg_bulkhead_request_leave(w->bh);
    }
    return NULL;
}

static void test_mt_never_over(void **st)
{
    (void)st;
    mg_bulkhead_cfg_t c = { .max_requests = 2 };
    mg_bulkhead_t *bh = mg_bulkhead_new(&c, NTHREADS);
    _Atomic uint32_t inside = 0, max_inside = 0;
    bw_t w[NTHREADS];
    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (bw_t){ .bh = bh, .inside = &inside, .max_inside = &max_inside, .slot = (uint32_t)i };
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &w[i]), 0);
    }
    uint64_t refused = 0;
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
        refused += w[i].refused;
    }
    assert_true(atomic_load(&max_inside) <= 2);
    mg_bulkhead_stats_t s;
    mg_bulkhead_stats(bh, &s);
    assert_int_equal(s.requests, 0);
    assert_int_equal(s.overflow[MG_OVERFLOW_REQUESTS], refused);
    mg_bulkhead_free(bh);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_unlimited_still_counts),
        cmocka_unit_test(test_mt_never_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
