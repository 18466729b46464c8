/* test_health: active health checking on a real libuv loop against tiny
 * in-test HTTP servers (plain sockets, one thread each) that answer 200,
 * 500, 404, garbage, close, or hang; plus a refused port. Checks the
 * request bytes, Envoy's first-check rule, both thresholds, the timeout,
 * expected statuses, a reload that keeps state (and one that drops an
 * endpoint), un-ejection from the outlier detector, warming, and a stop
 * with a check in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cluster/health.h"
#include "core/log.h"
#include "proxy/proxy.h"
#include "proxy/resil.h"
#include "resilience/outlier.h"

/* ---- tiny HTTP server ---- */

enum { SRV_200, SRV_500, SRV_404, SRV_204, SRV_GARBAGE, SRV_CLOSE, SRV_HANG, SRV_BIG };

typedef struct {
    int lfd;
    uint16_t port;
    _Atomic int mode;
    _Atomic int stop;
    _Atomic int conns;
    pthread_t th;
    pthread_mutex_t lock;
    char last_req[1024];
    int hang_fds[64];
    int nhang;
} srv_t;

static void *srv_main(void *arg)
{
    srv_t *s = arg;
    while (!atomic_load(&s->stop)) {
        struct pollfd p = { s->lfd, POLLIN, 0 };
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&s->conns, 1);
        char req[1024];
        size_t n = 0;
        while (n < sizeof req - 1) {
            struct pollfd q = { fd, POLLIN, 0 };
            if (poll(&q, 1, 500) <= 0)
                break;
            ssize_t r = read(fd, req + n, sizeof req - 1 - n);
            if (r <= 0)
                break;
            n += (size_t)r;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        req[n] = 0;
        pthread_mutex_lock(&s->lock);
        snprintf(s->last_req, sizeof s->last_req, "%s", req);
        pthread_mutex_unlock(&s->lock);
        const char *out = NULL;
        static char big[12000];
        switch (atomic_load(&s->mode)) {
        case SRV_200: out = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"; break;
        case SRV_500: out = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"; break;
        case SRV_404: out = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"; break;
        case SRV_204: out = "HTTP/1.1 204 No Content\r\n\r\n"; break;
        case SRV_GARBAGE: out = "HTTP/1.1 2000 Whatever\r\n\r\n"; break;
        case SRV_BIG:
            memset(big, 'a', sizeof big);
            memcpy(big, "HTTP/1.1 200 OK\r\nX-Big: ", 24);
            big[sizeof big - 1] = 0;
            out = big;
            break;
        case SRV_CLOSE: out = ""; break;
        case SRV_HANG:
            if (s->nhang < 64) {
                s->hang_fds[s->nhang++] = fd;
                fd = -1;
            }
            break;
        }
        if (fd >= 0) {
            if (out && *out) {
                ssize_t w = write(fd, out, strlen(out));
                (void)w;
            }
            close(fd);
        }
    }
    return NULL;
}

static void srv_start(srv_t *s, int mode)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    atomic_store(&s->mode, mode);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s->lfd >= 0);
    int one = 1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->lfd, 64), 0);
    socklen_t l = sizeof a;
    getsockname(s->lfd, (struct sockaddr *)&a, &l);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

static void srv_stop(srv_t *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    for (int i = 0; i < s->nhang; i++)
        close(s->hang_fds[i]);
    close(s->lfd);
    pthread_mutex_destroy(&s->lock);
}

static uint16_t refused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- loop / snapshot helpers ---- */

static uv_loop_t loop;
static uv_timer_t tick;

static void on_tick(uv_timer_t *t) { (void)t; }

static int setup(void **st)
{
    (void)st;
    assert_int_equal(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 2, 2); /* keeps UV_RUN_ONCE returning */
    return 0;
}

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Every handle must close. Bounded: a test that failed half-way (cmocka
 * jumps straight here) may leave a checker running; after 5 s its handles
 * are closed by force and the teardown reports the leak instead of
 * hanging the suite. */
static int teardown(void **st)
{
    (void)st;
    uv_close((uv_handle_t *)&tick, NULL);
    uint64_t end = uv_hrtime() + 5000000000ull;
    while (uv_run(&loop, UV_RUN_NOWAIT) && uv_hrtime() < end)
        uv_sleep(5);
    int leaked = uv_loop_alive(&loop);
    if (leaked) {
        uv_walk(&loop, close_any, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(leaked, 0);
    return 0;
}

typedef bool (*pred_t)(void *);

/* Run the loop until pred(arg) or timeout_ms; returns whether pred held. */
static bool run_until(pred_t pred, void *arg, uint64_t timeout_ms)
{
    uint64_t end = uv_hrtime() / 1000000 + timeout_ms;
    while (!pred(arg)) {
        if (uv_hrtime() / 1000000 >= end)
            return false;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return true;
}

static void run_for(uint64_t ms)
{
    uint64_t end = uv_hrtime() / 1000000 + ms;
    while (uv_hrtime() / 1000000 < end)
        uv_run(&loop, UV_RUN_ONCE);
}

typedef struct {
    mg_ep_stats_t *st;
    uint64_t n;
} checks_t;

static bool p_checks(void *a)
{
    checks_t *c = a;
    return atomic_load(&c->st->hc_checks) >= c->n;
}

/* Wait until st has completed at least n checks in total. */
static void wait_checks(mg_ep_stats_t *st, uint64_t n, uint64_t timeout_ms)
{
    checks_t c = { st, n };
    if (!run_until(p_checks, &c, timeout_ms))
        fail_msg("endpoint %s: %llu checks after %llu ms, wanted %llu", st->name,
                 (unsigned long long)atomic_load(&st->hc_checks), (unsigned long long)timeout_ms,
                 (unsigned long long)n);
}

static uint8_t state(const mg_ep_stats_t *st) { return atomic_load(&((mg_ep_stats_t *)st)->hc_state); }

static mg_snapshot_t *snap_of(const char *yaml)
{
    mg_config_buffer_t b = { "t.yaml", yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    char err[512] = "";
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    mg_snapshot_t *s = NULL;
    if (mg_snapshot_build(cfg, &s, err, sizeof err) != 0)
        fail_msg("snapshot: %s", err);
    return s;
}

/* One cluster "c" with the given endpoints (ports) and health_check body. */
static mg_snapshot_t *snap_c(const uint16_t *ports, int n, const char *hc, const char *extra)
{
    char eps[256] = "", yaml[1024];
    for (int i = 0; i < n; i++) {
        size_t l = strlen(eps);
        snprintf(eps + l, sizeof eps - l, "%s127.0.0.1:%u", i ? ", " : "", ports[i]);
    }
    snprintf(yaml, sizeof yaml,
             "clusters:\n"
             "  c:\n"
             "    endpoints: [%s]\n"
             "    health_check: {%s}\n"
             "%s",
             eps, hc, extra ? extra : "");
    return snap_of(yaml);
}

static mg_ep_stats_t *ep(mg_snapshot_t *s, size_t cl, uint32_t i) { return s->clusters.clusters[cl].eps[i].stats; }

/* ---- tests ---- */

static void test_first_pass_and_request(void **unused)
{
    (void)unused;
    srv_t s;
    srv_start(&s, SRV_200);
    mg_snapshot_t *snap = snap_c(&s.port, 1, "path: /health?x=1, interval: 100ms, timeout: 100ms, healthy_threshold: 3", NULL);
    mg_ep_stats_t *st = ep(snap, 0, 0);
    assert_true(mg_ep_hc_usable(st)); /* no checker yet */
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, snap);
    assert_int_equal(mg_health_count(h), 1);
    assert_int_equal(state(st), MG_HC_PENDING); /* Envoy: not usable before the first check */
    assert_false(mg_ep_hc_usable(st));
    assert_string_equal(mg_hc_state_name(state(st)), "unknown");
    wait_checks(st, 1, 2000);
    /* first pass bypasses healthy_threshold (3) */
    assert_int_equal(state(st), MG_HC_HEALTHY);
    assert_true(mg_ep_hc_usable(st));
    assert_int_equal(atomic_load(&st->hc_last_status), 200);
    assert_int_equal(atomic_load(&st->hc_last_result), MG_HC_R_OK);
    assert_true(atomic_load(&st->hc_last_ms) > 0);
    assert_true(mg_now_ms() - atomic_load(&st->hc_last_ms) < 1000);
    char want[256];
    snprintf(want, sizeof want,
             "GET /health?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nUser-Agent: meshgate-health\r\nConnection: close\r\n\r\n",
             s.port);
    pthread_mutex_lock(&s.lock);
    assert_string_equal(s.last_req, want);
    pthread_mutex_unlock(&s.lock);
    /* the interval is respected: about 100 ms between checks (the upper
     * bound only catches a lost timer; the machine may be loaded) */
    uint64_t t0 = mg_now_ms();
    wait_checks(st, 3, 2000);
    uint64_t dt = mg_now_ms() - t0;
    assert_true(dt >= 150 && dt < 1900);
    mg_health_update(h, snap); /* same snapshot: nothing changes */
    assert_int_equal(mg_health_count(h), 1);
    mg_health_stop(h);
    run_for(20);
    assert_int_equal(state(st), MG_HC_HEALTHY); /* stop leaves verdicts */
    mg_snapshot_unref(snap);
    srv_stop(&s);
}

static void test_thresholds(void **unused)
{
    (void)unused;
    srv_t s;
    srv_start(&s, SRV_200);
    mg_snapshot_t *snap = snap_c(&s.port, 1,
                                 "path: /h, interval: 30ms, timeout: 30ms, healthy_threshold: 2, unhealthy_threshold: 3",
                                 NULL);
    mg_ep_stats_t *st = ep(snap, 0, 0);
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, snap);
    wait_checks(st, 1, 2000);
    assert_int_equal(state(st), MG_HC_HEALTHY);

    uint64_t n = atomic_load(&st->hc_checks);
    atomic_store(&s.mode, SRV_500);
    /* wait for the first 500 (a check may have been in flight while switching) */
    while (atomic_load(&st->hc_last_status) != 500)
        wait_checks(st, ++n, 2000);
    n = atomic_load(&st->hc_checks);
    assert_int_equal(atomic_load(&st->hc_failures), 1);
    assert_int_equal(atomic_load(&st->hc_last_result), MG_HC_R_STATUS);
    assert_int_equal(state(st), MG_HC_HEALTHY);
    wait_checks(st, n + 1, 2000);
    assert_int_equal(atomic_load(&st->hc_failures), 2);
    assert_int_equal(state(st), MG_HC_HEALTHY);
    wait_checks(st, n + 2, 2000);
    assert_int_equal(atomic_load(&st->hc_failures), 3);
    assert_int_equal(state(st), MG_HC_UNHEALTHY);
    assert_false(mg_ep_hc_usable(st));
    assert_string_equal(mg_hc_state_name(state(st)), "unhealthy");

    atomic_store(&s.mode, SRV_200);
    n = atomic_load(&st->hc_checks);
    while (atomic_load(&st->hc_last_status) != 200)
        wait_checks(st, ++n, 2000);
    n = atomic_load(&st->hc_checks);
    assert_int_equal(atomic_load(&st->hc_failures), 0);
    assert_int_equal(state(st), MG_HC_UNHEALTHY); /* 1 of 2 passes */
    wait_checks(st, n + 1, 2000);
    assert_int_equal(state(st), MG_HC_HEALTHY);
    assert_true(mg_ep_hc_usable(st));

    /* an interleaved pass resets the failure count */
    atomic_store(&s.mode, SRV_500);
    n = atomic_load(&st->hc_checks);
    while (atomic_load(&st->hc_failures) != 2)
        wait_checks(st, ++n, 2000);
    atomic_store(&s.mode, SRV_200);
    while (atomic_load(&st->hc_failures) != 0)
        wait_checks(st, ++n, 2000);
    assert_int_equal(state(st), MG_HC_HEALTHY);

    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);
    srv_stop(&s);
}

static void test_failure_kinds(void **unused)
{
    (void)unused;
    srv_t hang, garbage, closer, big;
    srv_start(&hang, SRV_HANG);
    srv_start(&garbage, SRV_GARBAGE);
    srv_start(&closer, SRV_CLOSE);
    srv_start(&big, SRV_BIG);
    uint16_t ports[5] = { hang.port, garbage.port, closer.port, big.port, refused_port() };
    mg_snapshot_t *snap = snap_c(ports, 5, "path: /h, interval: 1s, timeout: 60ms, unhealthy_threshold: 5", NULL);
    mg_health_t *h = mg_health_new(&loop);
    uint64_t t0 = mg_now_ms();
    mg_health_update(h, snap);
    for (uint32_t i = 0; i < 5; i++)
        wait_checks(ep(snap, 0, i), 1, 2000);
    /* a failing first check: unhealthy at once (never passed), whatever the threshold */
    static const uint8_t want[5] = { MG_HC_R_TIMEOUT, MG_HC_R_BAD_RESPONSE, MG_HC_R_CLOSED, MG_HC_R_BAD_RESPONSE,
                                     MG_HC_R_CONNECT };
    for (uint32_t i = 0; i < 5; i++) {
        mg_ep_stats_t *st = ep(snap, 0, i);
        assert_int_equal(state(st), MG_HC_UNHEALTHY);
        assert_int_equal(atomic_load(&st->hc_last_status), 0);
        if (atomic_load(&st->hc_last_result) != want[i])
            fail_msg("endpoint %u: result %s, wanted %s", i, mg_hc_result_name(atomic_load(&st->hc_last_result)),
                     mg_hc_result_name(want[i]));
    }
    /* the hanging one took the timeout (60 ms), not the interval (1 s) */
    uint64_t hung = atomic_load(&ep(snap, 0, 0)->hc_last_ms) - t0;
    assert_true(hung >= 55 && hung < 900);
    assert_string_equal(mg_hc_result_name(MG_HC_R_CONNECT), "connect_failure");
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);
    srv_stop(&hang);
    srv_stop(&garbage);
    srv_stop(&closer);
    srv_stop(&big);
}

static void test_expected_statuses(void **unused)
{
    (void)unused;
    srv_t a, b;
    srv_start(&a, SRV_404);
    srv_start(&b, SRV_204);
    uint16_t ports[2] = { a.port, b.port };
    mg_snapshot_t *snap = snap_c(ports, 2, "path: /h, interval: 50ms, timeout: 50ms, expected_statuses: [200, 404]", NULL);
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, snap);
    wait_checks(ep(snap, 0, 0), 1, 2000);
    wait_checks(ep(snap, 0, 1), 1, 2000);
    assert_int_equal(state(ep(snap, 0, 0)), MG_HC_HEALTHY);
    assert_int_equal(atomic_load(&ep(snap, 0, 0)->hc_last_status), 404);
    assert_int_equal(state(ep(snap, 0, 1)), MG_HC_UNHEALTHY);
    assert_int_equal(atomic_load(&ep(snap, 0, 1)->hc_last_status), 204);
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);

    /* the default (200..399): 204 passes, 404 fails */
    snap = snap_c(ports, 2, "path: /h, interval: 50ms, timeout: 50ms, unhealthy_threshold: 1", NULL);
    h = mg_health_new(&loop);
    mg_health_update(h, snap);
    uint64_t n0 = atomic_load(&ep(snap, 0, 0)->hc_checks), n1 = atomic_load(&ep(snap, 0, 1)->hc_checks);
    wait_checks(ep(snap, 0, 0), n0 + 1, 2000);
    wait_checks(ep(snap, 0, 1), n1 + 1, 2000);
    assert_int_equal(state(ep(snap, 0, 0)), MG_HC_UNHEALTHY);
    assert_int_equal(state(ep(snap, 0, 1)), MG_HC_HEALTHY);
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);
    srv_stop(&a);
    srv_stop(&b);
}

static void test_reload_keeps_state(void **unused)
{
    (void)unused;
    srv_t a, b, c;
    srv_start(&a, SRV_500);
    srv_start(&b, SRV_200);
    srv_start(&c, SRV_200);
    uint16_t p1[2] = { a.port, b.port };
    mg_snapshot_t *s1 = snap_c(p1, 2, "path: /h, interval: 1s, timeout: 300ms, healthy_threshold: 2", NULL);
    mg_ep_stats_t *sa = ep(s1, 0, 0), *sb = ep(s1, 0, 1);
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, s1);
    wait_checks(sa, 1, 2000);
    wait_checks(sb, 1, 2000);
    assert_int_equal(state(sa), MG_HC_UNHEALTHY);
    assert_int_equal(state(sb), MG_HC_HEALTHY);
    uint64_t na = atomic_load(&sa->hc_checks), last_a = atomic_load(&sa->hc_last_ms);

    /* reload: a moves to the second position, b leaves, c arrives; same settings */
    uint16_t p2[2] = { c.port, a.port };
    mg_snapshot_t *s2 = snap_c(p2, 2, "path: /h, interval: 1s, timeout: 300ms, healthy_threshold: 2", NULL);
    mg_snapshot_unref(s1); /* h holds its own ref until the update below */
    mg_health_update(h, s2);
    assert_int_equal(mg_health_count(h), 2);
    assert_ptr_equal(ep(s2, 0, 1), sa);
    assert_int_equal(state(sa), MG_HC_UNHEALTHY); /* kept, not PENDING again */
    assert_int_equal(atomic_load(&sa->hc_checks), na);
    assert_int_equal(state(sb), MG_HC_NONE);      /* no longer checked: usable elsewhere */
    assert_true(mg_ep_hc_usable(sb));
    mg_ep_stats_t *sc = ep(s2, 0, 0);
    assert_int_equal(state(sc), MG_HC_PENDING);
    /* the kept schedule: a is not checked again right away */
    wait_checks(sc, 1, 2000);
    assert_int_equal(state(sc), MG_HC_HEALTHY);
    wait_checks(sa, na + 1, 2000);
    assert_true(atomic_load(&sa->hc_last_ms) - last_a >= 900);
    /* a starts passing: threshold 2 still applies (state was kept) */
    atomic_store(&a.mode, SRV_200);
    uint64_t n = atomic_load(&sa->hc_checks);
    while (atomic_load(&sa->hc_last_status) != 200)
        wait_checks(sa, ++n, 2000);
    assert_int_equal(state(sa), MG_HC_UNHEALTHY);
    wait_checks(sa, n + 1, 2000);
    assert_int_equal(state(sa), MG_HC_HEALTHY);

    /* reload with a shorter interval: retuned without a restart */
    mg_snapshot_t *s3 = snap_c(p2, 2, "path: /other, interval: 40ms, timeout: 40ms", NULL);
    mg_snapshot_unref(s2);
    mg_health_update(h, s3);
    n = atomic_load(&sa->hc_checks);
    uint64_t t0 = mg_now_ms();
    wait_checks(sa, n + 3, 2000);
    assert_true(mg_now_ms() - t0 < 1800); /* the old 1 s interval would need >= 2 s */
    assert_int_equal(state(sa), MG_HC_HEALTHY);
    pthread_mutex_lock(&a.lock);
    assert_non_null(strstr(a.last_req, "GET /other HTTP/1.1\r\n"));
    pthread_mutex_unlock(&a.lock);

    /* reload without health_check: everything stops, verdicts cleared */
    mg_snapshot_t *s4 = snap_of("clusters: {c: {endpoints: [127.0.0.1:1]}}\n");
    mg_health_update(h, s4);
    assert_int_equal(mg_health_count(h), 0);
    assert_int_equal(state(sa), MG_HC_NONE);
    assert_int_equal(state(sc), MG_HC_NONE);
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(s3);
    mg_snapshot_unref(s4);
    srv_stop(&a);
    srv_stop(&b);
    srv_stop(&c);
}

static void test_uneject(void **unused)
{
    (void)unused;
    srv_t a, b;
    srv_start(&a, SRV_200);
    srv_start(&b, SRV_200);
    uint16_t ports[2] = { a.port, b.port };
    mg_snapshot_t *snap =
        snap_c(ports, 2, "path: /h, interval: 60ms, timeout: 50ms",
               "    outlier_detection: {consecutive_5xx: 2, interval: 10s, base_ejection_time: 30s, "
               "max_ejection_percent: 100, min_health_percent: 0}\n");
    mg_outlier_t *od = snap->resil.clusters[0].outlier;
    assert_non_null(od);
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, snap);
    wait_checks(ep(snap, 0, 0), 1, 2000);

    /* eject endpoint 0 passively; the next passing check returns it at once
     * although its ejection time (30 s) has not run out */
    uint64_t now = mg_now_ms();
    mg_outlier_report(od, 0, MG_UP_RESPONSE, 503, now);
    mg_outlier_report(od, 0, MG_UP_RESPONSE, 503, now);
    assert_true(mg_outlier_excluded(od, 0));
    uint64_t n = atomic_load(&ep(snap, 0, 0)->hc_checks);
    wait_checks(ep(snap, 0, 0), n + 1, 2000);
    assert_false(mg_outlier_excluded(od, 0));
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(od, 0, &info);
    assert_false(info.ejected);
    assert_int_equal(info.times_ejected, 1);
    mg_outlier_stats_t os;
    mg_outlier_stats(od, &os);
    assert_int_equal(os.ejected, 0);
    assert_int_equal(os.unejected, 1);

    /* a failing host is not un-ejected */
    atomic_store(&b.mode, SRV_500);
    now = mg_now_ms();
    mg_outlier_report(od, 1, MG_UP_RESPONSE, 503, now);
    mg_outlier_report(od, 1, MG_UP_RESPONSE, 503, now);
    assert_true(mg_outlier_excluded(od, 1));
    n = atomic_load(&ep(snap, 0, 1)->hc_checks);
    wait_checks(ep(snap, 0, 1), n + 2, 2000);
    assert_true(mg_outlier_excluded(od, 1));
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);
    srv_stop(&a);
    srv_stop(&b);
}

static void test_outlier_uneject_direct(void **unused)
{
    (void)unused;
    mg_outlier_cfg_t c;
    mg_outlier_cfg_default(&c);
    c.consecutive_5xx = 1;
    c.max_ejection_percent = 100;
    c.min_health_percent = 0;
    mg_outlier_t *d = mg_outlier_new(&c, 2, NULL, NULL);
    assert_false(mg_outlier_uneject(d, 0, 100)); /* not ejected */
    assert_false(mg_outlier_uneject(d, 7, 100)); /* out of range */
    assert_false(mg_outlier_uneject(NULL, 0, 100));
    mg_outlier_report(d, 0, MG_UP_RESPONSE, 500, 1000);
    assert_true(mg_outlier_excluded(d, 0));
    assert_true(mg_outlier_uneject(d, 0, 2000));
    assert_false(mg_outlier_uneject(d, 0, 2000)); /* once */
    assert_false(mg_outlier_excluded(d, 0));
    /* the sweep does not return it a second time, and it can be ejected
     * again with a grown multiplier */
    assert_int_equal(mg_outlier_sweep(d, 2500), 0); /* within an interval: no decay either */
    mg_outlier_report(d, 0, MG_UP_RESPONSE, 500, 3000);
    mg_outlier_ep_info_t info;
    mg_outlier_ep_info(d, 0, &info);
    assert_true(info.ejected);
    assert_int_equal(info.times_ejected, 2);
    assert_int_equal(info.multiplier, 2);
    assert_int_equal(info.ejected_until_ms, 3000 + 2 * 30000);
    mg_outlier_stats_t os;
    mg_outlier_stats(d, &os);
    assert_int_equal(os.ejected, 1);
    assert_int_equal(os.unejected, 1);
    mg_outlier_free(d);
}

static int warm_calls;
static void on_warm(void *arg)
{
    (void)arg;
    warm_calls++;
}

static bool p_warm(void *a) { return warm_calls >= *(int *)a; }

static void test_warm_and_stop_in_flight(void **unused)
{
    (void)unused;
    srv_t ok, hang;
    srv_start(&ok, SRV_200);
    srv_start(&hang, SRV_HANG);
    uint16_t ports[2] = { ok.port, hang.port };
    mg_snapshot_t *snap = snap_c(ports, 2, "path: /h, interval: 1s, timeout: 100ms", NULL);
    mg_health_t *h = mg_health_new(&loop);
    warm_calls = 0;
    mg_health_set_warm_cb(h, on_warm, NULL);
    mg_health_update(h, snap);
    assert_false(mg_health_warm(h));
    assert_int_equal(warm_calls, 0);
    int one = 1;
    assert_true(run_until(p_warm, &one, 2000)); /* after the hanging one timed out */
    assert_true(mg_health_warm(h));
    assert_int_equal(state(ep(snap, 0, 0)), MG_HC_HEALTHY);
    assert_int_equal(state(ep(snap, 0, 1)), MG_HC_UNHEALTHY);
    run_for(50);
    assert_int_equal(warm_calls, 1);
    /* an update with nothing new is warm at once */
    mg_health_update(h, snap);
    assert_int_equal(warm_calls, 2);
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);

    /* stop while a check hangs mid-flight: all handles close (teardown
     * checks uv_loop_close), nothing leaks (ASan) */
    snap = snap_c(&hang.port, 1, "path: /h, interval: 1s, timeout: 1s", NULL);
    h = mg_health_new(&loop);
    mg_health_update(h, snap);
    int conns = atomic_load(&hang.conns);
    struct {
        srv_t *s;
        int n;
    } w = { &hang, conns + 1 };
    uint64_t end = mg_now_ms() + 2000;
    while (atomic_load(&w.s->conns) < w.n && mg_now_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
    assert_true(atomic_load(&hang.conns) >= w.n);
    mg_health_stop(h);
    mg_health_stop(NULL);
    run_for(20);
    assert_int_equal(state(ep(snap, 0, 0)), MG_HC_PENDING); /* left as it was */
    mg_snapshot_unref(snap);
    srv_stop(&ok);
    srv_stop(&hang);
}

static void test_shared_endpoint(void **unused)
{
    (void)unused;
    srv_t a;
    srv_start(&a, SRV_200);
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "clusters:\n"
             "  c1:\n"
             "    endpoints: [127.0.0.1:%u]\n"
             "    health_check: {path: /one, interval: 50ms, timeout: 50ms}\n"
             "    outlier_detection: {consecutive_5xx: 1, max_ejection_percent: 100, min_health_percent: 0}\n"
             "  c2:\n"
             "    endpoints: [127.0.0.1:1, 127.0.0.1:%u]\n"
             "    health_check: {path: /two, interval: 50ms, timeout: 50ms}\n"
             "    outlier_detection: {consecutive_5xx: 1, max_ejection_percent: 100, min_health_percent: 0}\n",
             a.port, a.port);
    mg_snapshot_t *snap = snap_of(yaml);
    assert_ptr_equal(ep(snap, 0, 0), ep(snap, 1, 1));
    mg_health_t *h = mg_health_new(&loop);
    mg_health_update(h, snap);
    assert_int_equal(mg_health_count(h), 2); /* a once, plus 127.0.0.1:1 */
    mg_outlier_t *o1 = snap->resil.clusters[0].outlier, *o2 = snap->resil.clusters[1].outlier;
    uint64_t now = mg_now_ms();
    mg_outlier_report(o1, 0, MG_UP_RESPONSE, 500, now);
    mg_outlier_report(o2, 1, MG_UP_RESPONSE, 500, now);
    assert_true(mg_outlier_excluded(o1, 0));
    assert_true(mg_outlier_excluded(o2, 1));
    uint64_t n = atomic_load(&ep(snap, 0, 0)->hc_checks);
    wait_checks(ep(snap, 0, 0), n + 1, 2000);
    assert_false(mg_outlier_excluded(o1, 0));
    assert_false(mg_outlier_excluded(o2, 1));
    pthread_mutex_lock(&a.lock);
    assert_non_null(strstr(a.last_req, "GET /one ")); /* the first cluster's settings */
    pthread_mutex_unlock(&a.lock);
    mg_health_stop(h);
    run_for(10);
    mg_snapshot_unref(snap);
    srv_stop(&a);
}

int main(void)
{
    mg_log_min_level = getenv("MG_TEST_LOG") ? MG_LOG_DEBUG : MG_LOG_ERROR;
    mg_ep_registry_init(1);
    mg_resil_init(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_pass_and_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_thresholds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_kinds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expected_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_keeps_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uneject, setup, teardown),
        cmocka_unit_test(test_outlier_uneject_direct),
        cmocka_unit_test_setup_teardown(test_warm_and_stop_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shared_endpoint, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
