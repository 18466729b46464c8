/* test_outlier: Envoy outlier-detection semantics with a fake clock:
 * consecutive 5xx / gateway errors, ejection time growth and cap, max
 * ejection percent, panic, return to service; and a threaded smoke test. */
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
#include "resilience/outlier.h"

typedef struct {
    uint32_t ep[64];
    mg_od_event_t ev[64];
    uint64_t dur[64];
    int n;
} odlog_t;

static void hook(void *ud, uint32_t ep, mg_od_event_t ev, uint64_t dur, uint64_t now)
{
    (void)now;
    odlog_t *l = ud;
    if (l->n < 64) {
        l->ep[l->n] = ep;
        l->ev[l->n] = ev;
        l->dur[l->n] = dur;
        l->n++;
    }
}

static mg_outlier_cfg_t cfg5(void)
{
    mg_outlier_cfg_t c;
    mg_outlier_cfg_default(&c);
    c.min_health_percent = 0;
    c.max_ejection_percent = 100;
    return c;
}

static void resp(mg_outlier_t *d, uint32_t ep, int status, int n, uint64_t now)
{
    for (int i = 0; i < n; i++)
        mg_outlier_report(d, ep, MG_UP_RESPONSE, status, now);
}

static void test_defaults(void **st)
{
    (void)st;
    mg_outlier_cfg_t c;
    mg_outlier_cfg_default(&c);
    assert_int_equal(c.consecutive_5xx, 5);
    assert_int_equal(c.consecutive_gateway_errors, 0);
    assert_int_equal(c.interval_ms, 10000);
    assert_int_equal(c.base_ejection_time_ms, 30000);
    assert_int_equal(c.max_ejection_time_ms, 300000);
    assert_int_equal(c.max_ejection_percent, 10);
    assert_int_equal(c.min_health_percent, 50);
    mg_outlier_cfg_istio_defaults(&c);
    assert_int_equal(c.min_health_percent, 0);
    char err[128];
    c.max_ejection_percent = 101;
    assert_int_equal(mg_outlier_cfg_validate(&c, err, sizeof err), MG_ECONFIG);
    assert_non_null(strstr(err, "max_ejection_percent"));
    assert_null(mg_outlier_new(&c, 3, NULL, NULL));
    mg_outlier_cfg_default(&c);
    assert_null(mg_outlier_new(&c, 0, NULL, NULL));
}

static void test_consecutive_5xx(void **st)
{
    (void)st;
    odlog_t l = { 0 };
    mg_outlier_cfg_t c = cfg5();
    mg_outlier_t *d = mg_outlier_new(&c, 3, hook, &l);
    resp(d, 1, 500, 4, 0);
    resp(d, 1, 404, 1, 0); /* a non-5xx breaks the run */
    resp(d, 1, 503, 4, 0);
    assert_false(mg_outlier_excluded(d, 1));
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(d, 1, &info);
    assert_int_equal(info.consecutive_5xx, 4);
    assert_int_equal(info.consecutive_gateway_errors, 4);
    resp(d, 1, 500, 1, 1000); /* the 5th in a row */
    assert_true(mg_outlier_excluded(d, 1));
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_ep_info(d, 1, &info);
    assert_true(info.ejected);
    assert_int_equal(info.times_ejected, 1);
    assert_int_equal(info.multiplier, 1);
    assert_int_equal(info.ejected_at_ms, 1000);
    assert_int_equal(info.ejected_until_ms, 31000);
    assert_int_equal(info.consecutive_5xx, 0); /* restarted on detection */
    assert_int_equal(l.n, 1);
    assert_int_equal(l.ev[0], MG_OD_EJECT_5XX);
    assert_int_equal(l.dur[0], 30000);
    mg_outlier_stats_t s;
    mg_outlier_stats(d, &s);
    assert_int_equal(s.ejected, 1);
    assert_int_equal(s.detected_5xx, 1);
    assert_int_equal(s.enforced_5xx, 1);
    /* local failures count as 5xx too (connect failure = 503 etc.) */
    mg_outlier_report(d, 2, MG_UP_CONNECT_FAILURE, 0, 0);
    mg_outlier_report(d, 2, MG_UP_RESET, 0, 0);
    mg_outlier_report(d, 2, MG_UP_TIMEOUT, 0, 0);
    mg_outlier_report(d, 2, MG_UP_PROTOCOL, 0, 0);
    mg_outlier_report(d, 2, MG_UP_CANCELLED, 0, 0); /* says nothing */
    mg_outlier_ep_info(d, 2, &info);
    assert_int_equal(info.consecutive_5xx, 4);
    mg_outlier_report(d, 2, MG_UP_RESPONSE, 502, 0);
    assert_true(mg_outlier_excluded(d, 2));
    mg_outlier_free(d);
}

static void test_consecutive_gateway(void **st)
{
    (void)st;
    mg_outlier_cfg_t c = cfg5();
    c.consecutive_5xx = 0;
    c.consecutive_gateway_errors = 3;
    mg_outlier_t *d = mg_outlier_new(&c, 2, NULL, NULL);
    resp(d, 0, 502, 1, 0);
    resp(d, 0, 503, 1, 0);
    resp(d, 0, 500, 1, 0); /* a 5xx that is not a gateway error restarts the count */
    resp(d, 0, 504, 1, 0);
    mg_outlier_report(d, 0, MG_UP_CONNECT_FAILURE, 0, 0);
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_report(d, 0, MG_UP_TIMEOUT, 0, 0); /* 3rd gateway error in a row */
    assert_true(mg_outlier_excluded(d, 0));
    resp(d, 1, 500, 50, 0); /* 5xx detection is off */
    assert_false(mg_outlier_excluded(d, 1));
    mg_outlier_stats_t s;
    mg_outlier_stats(d, &s);
    assert_int_equal(s.enforced_gateway, 1);
    assert_int_equal(s.enforced_5xx, 0);
    mg_outlier_free(d);
}

static void eject(mg_outlier_t *d, uint32_t ep, uint64_t now)
{
    resp(d, ep, 500, (int)mg_outlier_cfg(d)->consecutive_5xx, now);
}

static void test_ejection_time_grows_and_caps(void **st)
{
    (void)st;
    mg_outlier_cfg_t c = cfg5();
    c.base_ejection_time_ms = 10000;
    c.max_ejection_time_ms = 25000;
    c.interval_ms = 1000;
    mg_outlier_t *d = mg_outlier_new(&c, 2, NULL, NULL);
    mg_outlier_ep_info_t info;
    uint64_t now = 0;
    const uint64_t want[] = { 10000, 20000, 25000, 25000 };
    for (int i = 0; i < 4; i++) {
        eject(d, 0, now);
        mg_outlier_ep_info(d, 0, &info);
        assert_int_equal(info.ejected_until_ms - now, want[i]);
        assert_int_equal(info.times_ejected, (uint64_t)i + 1);
        /* not back a millisecond early */
        assert_int_equal(mg_outlier_sweep(d, now + want[i] - 1), 0);
        assert_true(mg_outlier_excluded(d, 0));
        now += want[i];
        assert_int_equal(mg_outlier_sweep(d, now), 1);
        assert_false(mg_outlier_excluded(d, 0));
    }
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.multiplier, 4); /* grows while base x m < max + base (Envoy) */
    /* healthy for an interval: one step of decay per sweep */
    assert_int_equal(mg_outlier_sweep(d, now + 999), 0);
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.multiplier, 4);
    mg_outlier_sweep(d, now + 1000);
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.multiplier, 3);
    now += 2000;
    eject(d, 0, now); /* back to 4 x base, capped at 25 s */
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.ejected_until_ms - now, 25000);
    mg_outlier_sweep(d, now + 25000);
    for (int i = 0; i < 5; i++)
        mg_outlier_sweep(d, now + 25000 + 1000 * (uint64_t)(i + 1));
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.multiplier, 0);
    eject(d, 0, now + 40000);
    mg_outlier_ep_info(d, 0, &info);
    assert_int_equal(info.ejected_until_ms - (now + 40000), 10000);
    mg_outlier_free(d);
}

static void test_max_ejection_percent(void **st)
{
    (void)st;
    odlog_t l = { 0 };
    mg_outlier_cfg_t c = cfg5();
    c.max_ejection_percent = 50;
    mg_outlier_t *d = mg_outlier_new(&c, 4, hook, &l);
    eject(d, 0, 0);
    eject(d, 1, 0); /* 1 of 4 = 25 % < 50: allowed */
    eject(d, 2, 0); /* 2 of 4 = 50 %: refused */
    assert_true(mg_outlier_excluded(d, 0));
    assert_true(mg_outlier_excluded(d, 1));
    assert_false(mg_outlier_excluded(d, 2));
    mg_outlier_stats_t s;
    mg_outlier_stats(d, &s);
    assert_int_equal(s.ejected, 2);
    assert_int_equal(s.overflow, 1);
    assert_int_equal(s.detected_5xx, 3);
    assert_int_equal(l.ev[2], MG_OD_OVERFLOW);
    /* the refused host's count restarted: it takes a full run again */
    resp(d, 2, 500, 4, 0);
    mg_outlier_stats(d, &s);
    assert_int_equal(s.overflow, 1);
    mg_outlier_free(d);

    /* 10 % of 3 hosts is less than one host: one may still go */
    c.max_ejection_percent = 10;
    d = mg_outlier_new(&c, 3, NULL, NULL);
    eject(d, 0, 0);
    eject(d, 1, 0);
    assert_true(mg_outlier_excluded(d, 0));
    assert_false(mg_outlier_excluded(d, 1));
    mg_outlier_free(d);

    /* a single-host cluster can lose its host (and then panics, below) */
    c.max_ejection_percent = 10;
    d = mg_outlier_new(&c, 1, NULL, NULL);
    eject(d, 0, 0);
    mg_outlier_stats(d, &s);
    assert_int_equal(s.ejected, 1);
    mg_outlier_free(d);
}

static void test_panic(void **st)
{
    (void)st;
    mg_outlier_cfg_t c = cfg5();
    c.min_health_percent = 50;
    mg_outlier_t *d = mg_outlier_new(&c, 2, NULL, NULL);
    eject(d, 0, 0); /* 1 of 2 healthy = 50 %: not below */
    assert_false(mg_outlier_panic(d));
    assert_true(mg_outlier_excluded(d, 0));
    eject(d, 1, 0); /* 0 healthy: panic, the LB uses every host */
    assert_true(mg_outlier_panic(d));
    assert_false(mg_outlier_excluded(d, 0));
    assert_false(mg_outlier_excluded(d, 1));
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(d, 1, &info);
    assert_true(info.ejected); /* still ejected, just ignored */
    mg_outlier_stats_t s;
    mg_outlier_stats(d, &s);
    assert_true(s.panic);
    mg_outlier_sweep(d, 30000); /* both back */
    assert_false(mg_outlier_panic(d));
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_free(d);
}

static void test_uneject_after_time(void **st)
{
    (void)st;
    odlog_t l = { 0 };
    mg_outlier_cfg_t c = cfg5();
    mg_outlier_t *d = mg_outlier_new(&c, 2, hook, &l);
    resp(d, 0, 500, 5, 100);
    resp(d, 0, 500, 3, 200); /* errors while ejected (e.g. panic traffic) */
    assert_int_equal(mg_outlier_sweep(d, 10100), 0);
    assert_int_equal(mg_outlier_sweep(d, 30099), 0);
    assert_true(mg_outlier_excluded(d, 0));
    assert_int_equal(mg_outlier_sweep(d, 30100), 1);
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(d, 0, &info);
    assert_false(info.ejected);
    assert_int_equal(info.ejected_until_ms, 0);
    assert_int_equal(info.consecutive_5xx, 0); /* starts clean */
    assert_int_equal(l.ev[l.n - 1], MG_OD_UNEJECT);
    assert_int_equal(l.dur[l.n - 1], 30000);
    resp(d, 0, 500, 4, 30200); /* needs a full run again */
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_stats_t s;
    mg_outlier_stats(d, &s);
    assert_int_equal(s.unejected, 1);
    assert_int_equal(s.ejected, 0);
    mg_outlier_free(d);
}

/* The seed's DestinationRule: trafficPolicy.circuitBreaker
 * {consecutiveErrors: 3, interval: 30s, baseEjectionTime: 30s,
 * maxEjectionPercent: 50}, as Istio maps it. */
static void test_seed_istio_rule(void **st)
{
    (void)st;
    mg_outlier_cfg_t c;
    mg_outlier_cfg_istio_defaults(&c);
    c.consecutive_gateway_errors = 3;
    c.consecutive_5xx = 0;
    c.interval_ms = 30000;
    c.base_ejection_time_ms = 30000;
    c.max_ejection_percent = 50;
    assert_int_equal(mg_outlier_cfg_validate(&c, NULL, 0), 0);
    mg_outlier_t *d = mg_outlier_new(&c, 2, NULL, NULL);
    resp(d, 1, 500, 10, 0); /* plain 500s are not "errors" for it */
    assert_false(mg_outlier_excluded(d, 1));
    resp(d, 0, 503, 3, 0);
    assert_true(mg_outlier_excluded(d, 0));
    resp(d, 1, 502, 3, 0); /* 50 % already out */
    assert_false(mg_outlier_excluded(d, 1));
    mg_outlier_sweep(d, 30000);
    assert_false(mg_outlier_excluded(d, 0));
    mg_outlier_free(d);
}

static void test_carry(void **st)
{
    (void)st;
    mg_outlier_cfg_t c = cfg5();
    mg_outlier_t *a = mg_outlier_new(&c, 2, NULL, NULL);
    mg_outlier_t *b = mg_outlier_new(&c, 3, NULL, NULL);
    eject(a, 1, 0);
    assert_int_equal(mg_outlier_carry(b, 2, a, 1), 0);
    assert_int_equal(mg_outlier_carry(b, 0, a, 0), 0);
    assert_int_equal(mg_outlier_carry(b, 3, a, 0), -EINVAL);
    assert_true(mg_outlier_excluded(b, 2));
    assert_false(mg_outlier_excluded(b, 0));
    mg_outlier_stats_t s;
    mg_outlier_stats(b, &s);
    assert_int_equal(s.ejected, 1);
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(b, 2, &info);
    assert_int_equal(info.ejected_until_ms, 30000);
    assert_int_equal(mg_outlier_sweep(b, 30000), 1);
    mg_outlier_free(a);
    mg_outlier_free(b);
}

/* ---- threads ---- */

#define NTHREADS 4
#define NEPS 8

typedef struct {
    mg_outlier_t *d;
    _Atomic uint64_t *clock;
    int iters;
    uint64_t seed;
} rep_t;

static void *reporter(void *arg)
{
    rep_t *r = arg;
    uint64_t x = r->seed;
    for (int i = 0; i < r->iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint32_t ep = (uint32_t)(x % NEPS);
        if (mg_outlier_excluded(r->d, ep))
            continue;
        int status = (x >> 8) % 100 < 70 ? 503 : 200;
        mg_outlier_report(r->d, ep, MG_UP_RESPONSE, status, atomic_load(r->clock));
    }
    return NULL;
}

typedef struct {
    mg_outlier_t *d;
    _Atomic uint64_t *clock;
    _Atomic int *stop;
    uint32_t max_seen;
} sweeper_t;

static void *sweeper(void *arg)
{
    sweeper_t *s = arg;
    while (!atomic_load(s->stop)) {
        uint64_t now = atomic_fetch_add(s->clock, 7);
        mg_outlier_sweep(s->d, now);
        mg_outlier_stats_t st;
        mg_outlier_stats(s->d, &st);
        if (st.ejected > s->max_seen)
            s->max_seen = st.ejected;
        for (uint32_t i = 0; i < NEPS; i++) {
            mg_outlier_ep_info_t info;
            mg_outlier_ep_info(s->d, i, &info);
        }
    }
    return NULL;
}

static void test_mt_smoke(void **st)
{
    (void)st;
    mg_outlier_cfg_t c = cfg5();
    c.consecutive_5xx = 3;
    c.consecutive_gateway_errors = 2;
    c.max_ejection_percent = 50; /* at most 4 of 8 */
    c.base_ejection_time_ms = 50;
    c.max_ejection_time_ms = 200;
    c.interval_ms = 10;
    _Atomic uint64_t clock = 0;
    _Atomic int stop = 0;
    mg_outlier_t *d = mg_outlier_new(&c, NEPS, NULL, NULL);
    rep_t r[NTHREADS];
    pthread_t th[NTHREADS], sw;
    sweeper_t s = { d, &clock, &stop, 0 };
    assert_int_equal(pthread_create(&sw, NULL, sweeper, &s), 0);
    for (int i = 0; i < NTHREADS; i++) {
        r[i] = (rep_t){ d, &clock, 200000, 0x2545f4914f6cdd1dull * (uint64_t)(i + 1) };
        assert_int_equal(pthread_create(&th[i], NULL, reporter, &r[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&stop, 1);
    pthread_join(sw, NULL);
    mg_outlier_stats_t stats;
    mg_outlier_stats(d, &stats);
    assert_true(s.max_seen <= 4);
    uint32_t out = 0;
    for (uint32_t i = 0; i < NEPS; i++) {
        mg_outlier_ep_info_t info;
        mg_outlier_ep_info(d, i, &info);
        out += info.ejected;
    }
    assert_int_equal(out, stats.ejected); /* the gauge matches the hosts */
    assert_true(stats.enforced_5xx + stats.enforced_gateway > 0);
    assert_int_equal(stats.enforced_5xx + stats.enforced_gateway - stats.unejected, stats.ejected);
    /* everyone comes back once the time is up */
    mg_outlier_sweep(d, atomic_load(&clock) + 1000000);
    mg_outlier_stats(d, &stats);
    assert_int_equal(stats.ejected, 0);
    mg_outlier_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_consecutive_5xx),
        cmocka_unit_test(test_consecutive_gateway),
        cmocka_unit_test(test_ejection_time_grows_and_caps),
        cmocka_unit_test(test_max_ejection_percent),
        cmocka_unit_test(test_panic),
        cmocka_unit_test(test_uneject_after_time),
        cmocka_unit_test(test_seed_istio_rule),
        cmocka_unit_test(test_carry),
        cmocka_unit_test(test_mt_smoke),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
