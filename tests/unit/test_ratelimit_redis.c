/* Tests for src/ratelimit/redis.c against a real redis-server that the test
 * starts on a free port (skipped when /usr/bin/redis-server is missing).
 * The uv loop runs inside the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "core/err.h"
#include "core/log.h"
#include "ratelimit/limiter.h"
#include "ratelimit/redis.h"

#ifndef REDIS_BIN
#define REDIS_BIN "/usr/bin/redis-server"
#endif
#define S(lit) MG_SLICE_LIT(lit)

static pid_t redis_pid;
static int redis_port;
static bool have_redis;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static redisContext *sync_conn(void)
{
    struct timeval tv = { 0, 200000 };
    redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static bool redis_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    pid_t pid = fork();
    if (pid < 0)
        return false;
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 1);
            dup2(dn, 2);
        }
        execl(REDIS_BIN, "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
              "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    redis_pid = pid;
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        redisContext *c = sync_conn();
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return true;
        }
        usleep(10000);
    }
    return false;
}

static void redis_stop(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = 0;
    }
}

static void redis_cmd(const char *cmd)
{
    redisContext *c = sync_conn();
    assert_non_null(c);
    redisReply *r = redisCommand(c, cmd);
    assert_non_null(r);
    freeReplyObject(r);
    redisFree(c);
}

static long long redis_int(const char *fmt, const char *arg)
{
    redisContext *c = sync_conn();
    assert_non_null(c);
    redisReply *r = redisCommand(c, fmt, arg);
    assert_non_null(r);
    long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -999;
    freeReplyObject(r);
    redisFree(c);
    return v;
}

static int group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("MG_TEST_VERBOSE"))
        mg_log_min_level = MG_LOG_ERROR; /* the tests provoke the warnings on purpose */
    if (access(REDIS_BIN, X_OK) != 0)
        return 0;
    redis_port = free_port();
    have_redis = redis_port > 0 && redis_start();
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    redis_stop();
    return 0;
}

#define NEED_REDIS() do { if (!have_redis) skip(); } while (0)

/* ---- loop helpers ---- */

static uv_loop_t loop;
static uv_timer_t guard;

static void guard_cb(uv_timer_t *t) { (void)t; }

static void loop_open(void)
{
    uv_loop_init(&loop);
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, guard_cb, 5, 5); /* wakes uv_run(ONCE) regularly */
}

static void loop_close(void)
{
    uv_close((uv_handle_t *)&guard, NULL);
    while (uv_run(&loop, UV_RUN_DEFAULT))
        ;
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Run until *done >= want or ms pass. Returns true if reached. */
static bool run_until(const int *done, int want, uint64_t ms)
{
    uv_update_time(&loop);
    uint64_t end = uv_now(&loop) + ms;
    while (*done < want && uv_now(&loop) < end)
        uv_run(&loop, UV_RUN_ONCE);
    return *done >= want;
}

static mg_rl_redis_t *client(uint32_t max_inflight)
{
    mg_rl_redis_opts_t o = { .host = "127.0.0.1", .port = (uint16_t)redis_port, .max_inflight = max_inflight };
    mg_rl_redis_t *r;
    assert_int_equal(mg_rl_redis_new(&loop, &o, &r), 0);
    return r;
}

typedef struct {
    int done;
    int n;
    mg_rl_redis_reply_t rep[256];
} results_t;

static void on_result(void *arg, const mg_rl_redis_reply_t *rep)
{
    results_t *res = arg;
    res->rep[res->n++] = *rep;
    res->done++;
}

static const mg_rl_params_t SEED = { .rate = 10, .burst = 20, .requested = 1 };

/* ---- tests ---- */

static void redis_seed_10_20(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(0);
    static results_t res;
    memset(&res, 0, sizeof res);
    for (int i = 0; i < 21; i++) /* all in flight at once: pipelined */
        assert_int_equal(mg_rl_redis_check(r, S("order-service"), S("10.0.0.1"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 21, 3000));
    for (int i = 0; i < 20; i++) {
        assert_int_equal(res.rep[i].status, 0);
        assert_true(res.rep[i].result.allowed);
        assert_int_equal(res.rep[i].result.remaining, 19 - i);
    }
    assert_int_equal(res.rep[20].status, 0);
    assert_false(res.rep[20].result.allowed);
    assert_int_equal(res.rep[20].result.remaining, 0);
    assert_int_equal(res.rep[20].result.retry_after_s, 1);
    /* Spring's keys and TTL: floor(2 * 20 / 10) = 4 s */
    long long ttl = redis_int("TTL %s", "request_rate_limiter.{order-service.10.0.0.1}.tokens");
    assert_true(ttl >= 3 && ttl <= 4);
    ttl = redis_int("TTL %s", "request_rate_limiter.{order-service.10.0.0.1}.timestamp");
    assert_true(ttl >= 3 && ttl <= 4);

    usleep(1000 * 1000);
    memset(&res, 0, sizeof res);
    for (int i = 0; i < 11; i++)
        assert_int_equal(mg_rl_redis_check(r, S("order-service"), S("10.0.0.1"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 11, 3000));
    for (int i = 0; i < 10; i++)
        assert_true(res.rep[i].status == 0 && res.rep[i].result.allowed);
    assert_false(res.rep[10].result.allowed);

    /* continuous refill: 0.25 s later 2 or 3 tokens (Redis time, not ours) */
    usleep(250 * 1000);
    memset(&res, 0, sizeof res);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mg_rl_redis_check(r, S("order-service"), S("10.0.0.1"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 5, 3000));
    int passed = 0;
    for (int i = 0; i < 5; i++)
        passed += res.rep[i].result.allowed;
    assert_true(passed >= 2 && passed <= 3);

    mg_rl_redis_stats_t st;
    mg_rl_redis_stats(r, &st);
    assert_int_equal(st.decided, 37);
    assert_int_equal(st.connects, 1);
    assert_true(st.connected);
    mg_rl_redis_close(r);
    loop_close();
}

static void redis_two_instances_share_budget(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *a = client(0), *b = client(0);
    mg_rl_params_t p = { .rate = 0.001, .burst = 20, .requested = 1 }; /* no refill to speak of */
    static results_t ra, rb;
    memset(&ra, 0, sizeof ra);
    memset(&rb, 0, sizeof rb);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(mg_rl_redis_check(a, S("r2"), S("shared"), &p, on_result, &ra, NULL), 0);
        assert_int_equal(mg_rl_redis_check(b, S("r2"), S("shared"), &p, on_result, &rb, NULL), 0);
    }
    assert_true(run_until(&ra.done, 30, 3000));
    assert_true(run_until(&rb.done, 30, 3000));
    int allowed = 0;
    for (int i = 0; i < 30; i++)
        allowed += ra.rep[i].result.allowed + rb.rep[i].result.allowed;
    assert_int_equal(allowed, 20); /* one budget, not two */
    mg_rl_redis_close(a);
    mg_rl_redis_close(b);
    loop_close();
}

static void redis_noscript_reload(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(0);
    static results_t res;
    memset(&res, 0, sizeof res);
    assert_int_equal(mg_rl_redis_check(r, S("r3"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 1, 3000));
    redis_cmd("SCRIPT FLUSH");
    for (int i = 0; i < 3; i++)
        assert_int_equal(mg_rl_redis_check(r, S("r3"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 4, 3000));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res.rep[i].status, 0);
        assert_int_equal(res.rep[i].result.remaining, 19 - i);
    }
    mg_rl_redis_stats_t st;
    mg_rl_redis_stats(r, &st);
    assert_true(st.noscript >= 1);
    mg_rl_redis_close(r);
    loop_close();
}

static void redis_cancel_overflow_close(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(4);
    static results_t res;
    memset(&res, 0, sizeof res);
    mg_rl_redis_req_t *h[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(mg_rl_redis_check(r, S("r4"), S("k"), &SEED, on_result, &res, &h[i]), 0);
    assert_int_equal(mg_rl_redis_check(r, S("r4"), S("k"), &SEED, on_result, &res, NULL), MG_ELIMIT);
    mg_rl_redis_cancel(h[1]);
    mg_rl_redis_cancel(h[3]);
    assert_true(run_until(&res.done, 2, 3000));
    run_until(&res.done, 3, 100); /* a cancelled one must not arrive */
    assert_int_equal(res.done, 2);
    assert_int_equal(res.rep[1].result.remaining, 17); /* cancelled checks still count in Redis */
    mg_rl_redis_stats_t st;
    mg_rl_redis_stats(r, &st);
    assert_int_equal(st.inflight, 0);
    assert_int_equal(st.overflow, 1);
    /* long keys (heap) work too */
    char longkey[600];
    memset(longkey, 'x', sizeof longkey);
    assert_int_equal(mg_rl_redis_check(r, S("r4"), mg_slice(longkey, sizeof longkey), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 3, 3000));
    assert_int_equal(res.rep[2].status, 0);
    /* close with checks in flight: they complete with UV_ECANCELED */
    memset(&res, 0, sizeof res);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mg_rl_redis_check(r, S("r4"), S("k2"), &SEED, on_result, &res, NULL), 0);
    mg_rl_redis_close(r);
    assert_int_equal(res.done, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(res.rep[i].status, UV_ECANCELED);
        assert_int_equal(res.rep[i].result.remaining, -1);
    }
    loop_close();
}

static void redis_slow_times_out(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(0);
    static results_t res;
    memset(&res, 0, sizeof res);
    assert_int_equal(mg_rl_redis_check(r, S("r5"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 1, 3000));
    kill(redis_pid, SIGSTOP); /* Redis alive but silent */
    uv_update_time(&loop);
    uint64_t t0 = uv_now(&loop);
    for (int i = 0; i < 5; i++)
        assert_int_equal(mg_rl_redis_check(r, S("r5"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 6, 1000));
    uint64_t took = uv_now(&loop) - t0;
    for (int i = 1; i < 6; i++) {
        assert_int_equal(res.rep[i].status, -ETIMEDOUT);
        assert_int_equal(res.rep[i].result.remaining, -1);
    }
    assert_true(took >= 45 && took < 500); /* 50 ms timeout, slack for loaded CI */
    kill(redis_pid, SIGCONT);
    /* late replies are discarded; new checks work on the same connection */
    assert_int_equal(mg_rl_redis_check(r, S("r5"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 7, 3000));
    assert_int_equal(res.rep[6].status, 0);
    assert_int_equal(res.rep[6].result.remaining, 13); /* the timed-out ones did count */
    mg_rl_redis_stats_t st;
    mg_rl_redis_stats(r, &st);
    assert_int_equal(st.timeouts, 5);
    assert_int_equal(st.inflight, 0);
    mg_rl_redis_close(r);
    loop_close();
}

static void redis_down_and_back(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(0);
    static results_t res;
    memset(&res, 0, sizeof res);
    assert_int_equal(mg_rl_redis_check(r, S("r6"), S("k"), &SEED, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 1, 3000));
    assert_int_equal(res.rep[0].status, 0);

    redis_stop();
    /* each check fails at once (rc < 0) or in its callback, never hangs */
    int immediate = 0, late = 0;
    for (int i = 0; i < 20; i++) {
        uv_update_time(&loop);
        uint64_t t0 = uv_now(&loop);
        int want = res.done + 1;
        int rc = mg_rl_redis_check(r, S("r6"), S("k"), &SEED, on_result, &res, NULL);
        if (rc < 0) {
            assert_int_equal(rc, -ENOTCONN);
            immediate++;
        } else {
            assert_true(run_until(&res.done, want, 1000));
            assert_true(uv_now(&loop) - t0 < 500);
            assert_int_not_equal(res.rep[res.n - 1].status, 0);
            late++;
        }
        run_until(&res.done, 1 << 30, 20);
    }
    assert_true(immediate > 0);

    assert_true(redis_start()); /* same port */
    /* reconnects by itself (backoff <= 5 s); no new client */
    bool ok = false;
    for (int i = 0; i < 400 && !ok; i++) {
        int want = res.done + 1;
        if (mg_rl_redis_check(r, S("r6"), S("k"), &SEED, on_result, &res, NULL) == 0 &&
            run_until(&res.done, want, 500))
            ok = res.rep[res.n - 1].status == 0;
        if (!ok)
            run_until(&res.done, 1 << 30, 25);
        if (res.n > 200)
            res.n = res.done = 0;
    }
    assert_true(ok);
    mg_rl_redis_stats_t st;
    mg_rl_redis_stats(r, &st);
    assert_true(st.connects >= 2);
    assert_true(st.disconnects >= 1);
    assert_true(st.unavailable >= 1);
    (void)late;
    mg_rl_redis_close(r);
    loop_close();
}

static void redis_through_limiter(void **state)
{
    (void)state;
    NEED_REDIS();
    loop_open();
    mg_rl_redis_t *r = client(0);
    mg_rl_registry_init(1);
    mg_rl_cfg_t cfg;
    mg_rl_cfg_default(&cfg);
    cfg.params = (mg_rl_params_t){ .rate = 1, .burst = 2, .requested = 1 };
    mg_rl_limiter_t l;
    mg_rl_stats_t *st = mg_rl_registry_get(S("r7"));
    assert_int_equal(mg_rl_limiter_init(&l, &cfg, S("r7"), st, NULL, 0), 0);
    static results_t res;
    memset(&res, 0, sizeof res);
    for (int i = 0; i < 3; i++)
        assert_int_equal(mg_rl_redis_check(r, l.route_id, S("c"), &l.cfg.params, on_result, &res, NULL), 0);
    assert_true(run_until(&res.done, 3, 3000));
    mg_rl_verdict_t v = { 0 };
    for (int i = 0; i < 3; i++)
        v = mg_rl_verdict_redis(&l, 0, 0, &res.rep[i]);
    assert_false(v.allowed);
    assert_int_equal(v.status, 429);
    char hb[256];
    mg_rl_format_headers(&l, &v, hb, sizeof hb);
    assert_string_equal(hb, "X-RateLimit-Remaining: 0\r\nX-RateLimit-Replenish-Rate: 1\r\n"
                            "X-RateLimit-Burst-Capacity: 2\r\nX-RateLimit-Requested-Tokens: 1\r\n"
                            "Retry-After: 1\r\n");
    mg_rl_counts_t n;
    mg_rl_stats_sum(st, NULL, &n);
    assert_int_equal(n.allowed, 2);
    assert_int_equal(n.denied, 1);
    mg_rl_registry_free();
    mg_rl_redis_close(r);
    loop_close();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(redis_seed_10_20),
        cmocka_unit_test(redis_two_instances_share_budget),
        cmocka_unit_test(redis_noscript_reload),
        cmocka_unit_test(redis_cancel_overflow_close),
        cmocka_unit_test(redis_slow_times_out),
        cmocka_unit_test(redis_through_limiter),
        cmocka_unit_test(redis_down_and_back),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
