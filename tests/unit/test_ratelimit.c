/* Unit tests for src/ratelimit: bucket arithmetic (fake clock), the local
 * table (bounds, eviction, threads), key resolution and the limiter glue. */
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
#include <pthread.h>

#include "core/err.h"
#include "http/http1.h"
#include "ratelimit/bucket.h"
#include "ratelimit/key.h"
#include "ratelimit/limiter.h"
#include "ratelimit/local.h"

#define SEC 1000000LL
#define T0 (1000 * SEC)

static const mg_rl_params_t SEED = { .rate = 10, .burst = 20, .requested = 1 };

/* ---- bucket ---- */

static void bucket_seed_10_20(void **state)
{
    (void)state;
    mg_rl_bucket_t b;
    mg_rl_bucket_init(&b, &SEED, T0);
    for (int i = 0; i < 20; i++) {
        mg_rl_result_t r = mg_rl_bucket_take(&b, &SEED, T0);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 19 - i);
        assert_int_equal(r.retry_after_s, 0);
    }
    mg_rl_result_t r = mg_rl_bucket_take(&b, &SEED, T0);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_s, 1);
    for (int i = 0; i < 10; i++)
        assert_true(mg_rl_bucket_take(&b, &SEED, T0 + SEC).allowed);
    assert_false(mg_rl_bucket_take(&b, &SEED, T0 + SEC).allowed);
}

static void bucket_continuous_refill(void **state)
{
    (void)state;
    mg_rl_bucket_t b;
    mg_rl_bucket_init(&b, &SEED, T0);
    for (int i = 0; i < 20; i++)
        mg_rl_bucket_take(&b, &SEED, T0);
    /* 0.25 s at 10/s = 2.5 tokens: 2 pass, the third does not */
    int passed = 0;
    for (int i = 0; i < 5; i++)
        passed += mg_rl_bucket_take(&b, &SEED, T0 + SEC / 4).allowed;
    assert_int_equal(passed, 2);
    assert_true(mg_rl_bucket_tokens(&b, &SEED, T0 + SEC / 4) > 0.49);
    /* the half token left plus 0.05 s more = 1 token */
    assert_true(mg_rl_bucket_take(&b, &SEED, T0 + SEC / 4 + SEC / 20).allowed);
    /* never above burst */
    assert_true(mg_rl_bucket_tokens(&b, &SEED, T0 + 100 * SEC) == 20.0);
}

static void bucket_one_per_minute(void **state)
{
    (void)state;
    mg_rl_params_t p = { .rate = 1, .burst = 60, .requested = 60 };
    mg_rl_bucket_t b;
    mg_rl_bucket_init(&b, &p, T0);
    mg_rl_result_t r = mg_rl_bucket_take(&b, &p, T0);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    r = mg_rl_bucket_take(&b, &p, T0 + SEC);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 59);
    r = mg_rl_bucket_take(&b, &p, T0 + 59 * SEC + SEC / 2);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_s, 1);
    assert_int_equal(r.remaining, 59);
    assert_true(mg_rl_bucket_take(&b, &p, T0 + 60 * SEC).allowed);
    assert_false(mg_rl_bucket_take(&b, &p, T0 + 61 * SEC).allowed);
}

static void bucket_burst_zero_and_oversize(void **state)
{
    (void)state;
    mg_rl_params_t z = { .rate = 10, .burst = 0, .requested = 1 };
    mg_rl_bucket_t b;
    mg_rl_bucket_init(&b, &z, T0);
    for (int i = 0; i < 5; i++) {
        mg_rl_result_t r = mg_rl_bucket_take(&b, &z, T0 + i * SEC);
        assert_false(r.allowed);
        assert_int_equal(r.remaining, 0);
        assert_int_equal(r.retry_after_s, MG_RL_RETRY_NEVER);
    }
    mg_rl_params_t big = { .rate = 10, .burst = 5, .requested = 6 };
    mg_rl_bucket_init(&b, &big, T0);
    mg_rl_result_t r = mg_rl_bucket_take(&b, &big, T0 + 10 * SEC);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 5);
    assert_int_equal(r.retry_after_s, MG_RL_RETRY_NEVER);
    mg_rl_params_t bad = { .rate = 0, .burst = 5, .requested = 1 };
    assert_int_not_equal(mg_rl_params_check(&bad), 0);
    assert_int_equal(mg_rl_params_check(&SEED), 0);
}

static void bucket_fractional_rate(void **state)
{
    (void)state;
    /* rate 3/s: three 1/3 s steps must give exactly one token back each */
    mg_rl_params_t p = { .rate = 3, .burst = 3, .requested = 1 };
    mg_rl_bucket_t b;
    mg_rl_bucket_init(&b, &p, T0);
    for (int i = 0; i < 3; i++)
        assert_true(mg_rl_bucket_take(&b, &p, T0).allowed);
    int64_t t = T0;
    for (int i = 0; i < 30; i++) {
        t += 333334;
        assert_true(mg_rl_bucket_take(&b, &p, t).allowed);
        assert_false(mg_rl_bucket_take(&b, &p, t).allowed);
    }
    /* clock going backwards counts as no time */
    assert_false(mg_rl_bucket_take(&b, &p, t - SEC).allowed);
}

/* ---- local table ---- */

#define S(lit) MG_SLICE_LIT(lit)

static void local_seed_10_20(void **state)
{
    (void)state;
    mg_rl_local_t *t;
    assert_int_equal(mg_rl_local_new(NULL, &t), 0);
    for (int i = 0; i < 20; i++) {
        mg_rl_result_t r = mg_rl_local_take(t, &SEED, 0, S("order-service"), S("10.0.0.1"), T0);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 19 - i);
    }
    mg_rl_result_t r = mg_rl_local_take(t, &SEED, 0, S("order-service"), S("10.0.0.1"), T0);
    assert_false(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_s, 1);
    /* other keys and other routes are independent */
    assert_true(mg_rl_local_take(t, &SEED, 0, S("order-service"), S("10.0.0.2"), T0).allowed);
    assert_true(mg_rl_local_take(t, &SEED, 0, S("user-service"), S("10.0.0.1"), T0).allowed);
    assert_true(mg_rl_local_tokens(t, &SEED, S("order-service"), S("10.0.0.1"), T0) < 1e-6);
    assert_true(mg_rl_local_tokens(t, &SEED, S("order-service"), S("10.0.0.1"), T0 + SEC / 2) > 4.99);
    assert_true(mg_rl_local_tokens(t, &SEED, S("order-service"), S("nobody"), T0) == 20.0);
    for (int i = 0; i < 10; i++)
        assert_true(mg_rl_local_take(t, &SEED, 0, S("order-service"), S("10.0.0.1"), T0 + SEC).allowed);
    assert_false(mg_rl_local_take(t, &SEED, 0, S("order-service"), S("10.0.0.1"), T0 + SEC).allowed);
    /* a bucket that refilled is dropped on its next use (same as absent) */
    mg_rl_local_stats_t st;
    mg_rl_local_stats(t, &st);
    assert_int_equal(st.keys, 3);
    mg_rl_local_free(t);
}

static void local_burst_zero_stores_nothing(void **state)
{
    (void)state;
    mg_rl_local_t *t;
    assert_int_equal(mg_rl_local_new(NULL, &t), 0);
    mg_rl_params_t z = { .rate = 10, .burst = 0, .requested = 1 };
    char k[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(k, sizeof k, "k%d", i);
        assert_false(mg_rl_local_take(t, &z, 0, S("r"), mg_slice_cstr(k), T0).allowed);
    }
    mg_rl_local_stats_t st;
    mg_rl_local_stats(t, &st);
    assert_int_equal(st.keys, 0);
    mg_rl_local_free(t);
}

static void local_bounded(void **state)
{
    (void)state;
    mg_rl_local_t *t;
    mg_rl_local_opts_t o = { .max_keys = 1024, .shards = 16, .max_tags = 8 };
    assert_int_equal(mg_rl_local_new(&o, &t), 0);
    mg_rl_params_t p = { .rate = 1, .burst = 10, .requested = 1 };
    char k[32];
    /* a flood of unique keys, no time passing: nothing is idle-full, so the
     * bound holds by forced eviction */
    for (int i = 0; i < 1024 + 20000; i++) {
        snprintf(k, sizeof k, "flood-%d", i);
        assert_true(mg_rl_local_take(t, &p, 3, S("r"), mg_slice_cstr(k), T0).allowed);
        if (i % 997 == 0) {
            mg_rl_local_stats_t st;
            mg_rl_local_stats(t, &st);
            assert_true(st.keys <= 1024);
        }
    }
    mg_rl_local_stats_t st;
    mg_rl_local_stats(t, &st);
    assert_true(st.keys <= 1024);
    assert_true(st.keys >= 1024 - 16); /* shards fill up to their share */
    assert_true(st.forced_evictions >= 20000 - 16);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(mg_rl_local_evictions(t, 3), st.forced_evictions);
    /* 10 s later every bucket is full again: new keys evict idle ones only */
    uint64_t forced = st.forced_evictions;
    for (int i = 0; i < 512; i++) {
        snprintf(k, sizeof k, "later-%d", i);
        assert_true(mg_rl_local_take(t, &p, 5, S("r"), mg_slice_cstr(k), T0 + 10 * SEC).allowed);
    }
    mg_rl_local_stats(t, &st);
    assert_true(st.keys <= 1024);
    assert_true(st.evictions >= 400);
    assert_int_equal(st.forced_evictions, forced);
    assert_true(mg_rl_local_evictions(t, 3) >= forced + 400);
    /* a periodic sweep drops the idle full buckets */
    size_t dropped = mg_rl_local_sweep(t, T0 + 100 * SEC, 1 << 20);
    mg_rl_local_stats(t, &st);
    assert_true(dropped > 0);
    assert_int_equal(st.keys, 0);
    mg_rl_local_free(t);
}

/* Threads share one bucket with no refill: exactly burst requests pass.
 * The table is large enough that the churn keys never force an eviction
 * (a forced eviction drops the bucket closest to full, which could be the
 * shared one and hand back a few tokens); the bound itself is tested in
 * local_bounded. */
#define HAMMER_THREADS 4
#define HAMMER_N 50000
static mg_rl_local_t *hammer_t;
static _Atomic uint64_t hammer_allowed;

static void *hammer(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    mg_rl_params_t shared = { .rate = 1e-9, .burst = 5000, .requested = 1 };
    mg_rl_params_t churn = { .rate = 1, .burst = 3, .requested = 1 };
    char k[32];
    uint64_t ok = 0;
    for (int i = 0; i < HAMMER_N; i++) {
        ok += mg_rl_local_take(hammer_t, &shared, 0, S("r"), S("shared"), T0).allowed;
        snprintf(k, sizeof k, "t%lu-%d", (unsigned long)id, i);
        mg_rl_local_take(hammer_t, &churn, 1, S("r"), mg_slice_cstr(k), T0 + i);
    }
    atomic_fetch_add(&hammer_allowed, ok);
    return NULL;
}

static void local_threads(void **state)
{
    (void)state;
    mg_rl_local_opts_t o = { .max_keys = 1u << 20, .shards = 8 };
    assert_int_equal(mg_rl_local_new(&o, &hammer_t), 0);
    pthread_t th[HAMMER_THREADS];
    for (uintptr_t i = 0; i < HAMMER_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, (void *)i), 0);
    for (int i = 0; i < HAMMER_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&hammer_allowed), 5000);
    mg_rl_local_stats_t st;
    mg_rl_local_stats(hammer_t, &st);
    assert_true(st.keys <= 1u << 20);
    assert_int_equal(st.forced_evictions, 0);
    mg_rl_local_free(hammer_t);
}

static void local_cost(void **state)
{
    (void)state;
    mg_rl_local_t *t;
    assert_int_equal(mg_rl_local_new(NULL, &t), 0);
    mg_rl_params_t p = { .rate = 1e6, .burst = 1000000, .requested = 1 };
    const char *ips[] = { "10.0.0.1", "10.0.0.2", "192.168.100.200", "2001:db8::1" };
    int n = 2000000;
    int64_t a = mg_rl_now_us();
    uint64_t ok = 0;
    for (int i = 0; i < n; i++)
        ok += mg_rl_local_take(t, &p, 0, S("order-service"), mg_slice_cstr(ips[i & 3]), mg_rl_now_us()).allowed;
    int64_t b = mg_rl_now_us();
    assert_int_equal(ok, (uint64_t)n);
    printf("local decision: %.1f ns (incl. clock read)\n", (double)(b - a) * 1000.0 / n);
    mg_rl_local_free(t);
}

/* ---- key resolution ---- */

static mg_http_msg_t M;

static void parse(const char *req)
{
    mg_http_msg_reset(&M);
    assert_true(mg_http_parse_request(req, strlen(req), &M, NULL) > 0);
}

static struct sockaddr_storage peer4(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &s4->sin_addr);
    }
    return ss;
}

static char kbuf[MG_RL_KEY_BUF];

static const char *resolve(const mg_rl_key_cfg_t *c, const char *peer)
{
    static char out[MG_RL_KEY_BUF + 1];
    struct sockaddr_storage ss = peer4(peer);
    mg_rl_key_input_t in = { .msg = &M, .peer = (struct sockaddr *)&ss, .route_id = S("order-service") };
    mg_slice_t k;
    assert_int_equal(mg_rl_key_resolve(c, &in, kbuf, sizeof kbuf, &k), 0);
    memcpy(out, k.p, k.n);
    out[k.n] = 0;
    return out;
}

static void key_kinds(void **state)
{
    (void)state;
    parse("GET /api/orders/%41b?x=1&api%5Fkey=a%20b+c&empty=&flag HTTP/1.1\r\nHost: h\r\n"
          "X-User: alice\r\nX-Empty: \r\n\r\n");
    mg_rl_key_cfg_t c = { .kind = MG_RL_KEY_IP };
    assert_string_equal(resolve(&c, "203.0.113.9"), "203.0.113.9");
    assert_string_equal(resolve(&c, "::ffff:203.0.113.9"), "203.0.113.9");
    assert_string_equal(resolve(&c, "2001:db8::7"), "2001:db8::7");
    c = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_HEADER, .name = S("x-user") };
    assert_string_equal(resolve(&c, "1.2.3.4"), "alice");
    c.name = S("X-Empty");
    assert_string_equal(resolve(&c, "1.2.3.4"), "");
    c.name = S("X-Missing");
    assert_string_equal(resolve(&c, "1.2.3.4"), "");
    c = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_QUERY, .name = S("api_key") };
    assert_string_equal(resolve(&c, "1.2.3.4"), "a b c");
    c.name = S("x");
    assert_string_equal(resolve(&c, "1.2.3.4"), "1");
    c.name = S("empty");
    assert_string_equal(resolve(&c, "1.2.3.4"), "");
    c.name = S("flag");
    assert_string_equal(resolve(&c, "1.2.3.4"), "");
    c.name = S("nope");
    assert_string_equal(resolve(&c, "1.2.3.4"), "");
    c = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_ROUTE };
    assert_string_equal(resolve(&c, "1.2.3.4"), "order-service");
    c = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_PATH };
    assert_string_equal(resolve(&c, "1.2.3.4"), "/api/orders/Ab");
    c = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_FIXED, .fixed = S("all") };
    assert_string_equal(resolve(&c, "1.2.3.4"), "all");
    mg_rl_key_kind_t k;
    assert_int_equal(mg_rl_key_kind_parse(S("Header"), &k), 0);
    assert_int_equal(k, MG_RL_KEY_HEADER);
    assert_int_not_equal(mg_rl_key_kind_parse(S("cookie"), &k), 0);
}

static void key_xff_trust(void **state)
{
    (void)state;
    mg_rl_cidr_t trusted[2];
    assert_int_equal(mg_rl_cidr_parse(S("10.0.0.0/8"), &trusted[0]), 0);
    assert_int_equal(mg_rl_cidr_parse(S("2001:db8::/32"), &trusted[1]), 0);
    mg_rl_cidr_t bad;
    assert_int_not_equal(mg_rl_cidr_parse(S("10.0.0.0/33"), &bad), 0);
    assert_int_not_equal(mg_rl_cidr_parse(S("10.0.0.1:80"), &bad), 0);
    assert_int_not_equal(mg_rl_cidr_parse(S("nonsense"), &bad), 0);
    assert_int_equal(mg_rl_cidr_parse(S("192.168.1.77/24"), &bad), 0);
    uint8_t a[4] = { 192, 168, 1, 200 };
    assert_true(mg_rl_cidr_contains(&bad, 1, AF_INET, a));
    a[2] = 2;
    assert_false(mg_rl_cidr_contains(&bad, 1, AF_INET, a));

    mg_rl_key_cfg_t c = { .kind = MG_RL_KEY_IP, .trusted = trusted, .ntrusted = 2 };
    /* spoofed entry on the left, real client appended by our proxy */
    parse("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "198.51.100.7");
    /* peer not trusted: header ignored */
    assert_string_equal(resolve(&c, "192.0.2.1"), "192.0.2.1");
    /* two trusted hops, over two fields, with ports and IPv6 */
    parse("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6, [2001:db9::5]:443\r\n"
          "X-Forwarded-For: 10.9.9.9:8080, 2001:db8::2\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "2001:db9::5");
    /* everything trusted: the leftmost */
    parse("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.7, 10.0.0.8\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "10.0.0.7");
    /* garbage stops at the hop that wrote it (not the client's choice) */
    parse("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: pick-me, 10.0.0.8\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "10.0.0.8");
    parse("GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: garbage\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "10.1.2.3");
    /* no header */
    parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_string_equal(resolve(&c, "10.1.2.3"), "10.1.2.3");
}

/* ---- limiter ---- */

static void limiter_flow(void **state)
{
    (void)state;
    mg_rl_registry_init(2);
    mg_rl_stats_t *st = mg_rl_registry_get(S("order-service"));
    assert_non_null(st);
    assert_ptr_equal(mg_rl_registry_get(S("order-service")), st);
    mg_rl_cfg_t cfg;
    mg_rl_cfg_default(&cfg);
    cfg.params = SEED;
    mg_rl_limiter_t l;
    char err[128];
    mg_rl_cfg_t badcfg = cfg;
    badcfg.params.rate = 0;
    assert_int_equal(mg_rl_limiter_init(&l, &badcfg, S("order-service"), st, err, sizeof err), MG_ECONFIG);
    assert_int_equal(mg_rl_limiter_init(&l, &cfg, S("order-service"), st, err, sizeof err), 0);

    mg_rl_local_t *t;
    assert_int_equal(mg_rl_local_new(NULL, &t), 0);
    parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    struct sockaddr_storage ss = peer4("198.51.100.1");
    mg_rl_key_input_t in = { .msg = &M, .peer = (struct sockaddr *)&ss, .route_id = S("order-service") };
    mg_slice_t key;
    mg_rl_verdict_t v;
    char hb[256];
    for (int i = 0; i < 21; i++) {
        assert_false(mg_rl_begin(&l, 1, &in, kbuf, sizeof kbuf, &key, &v));
        v = mg_rl_decide_local(&l, 1, t, key, T0);
        if (i == 0) {
            assert_true(v.allowed);
            mg_rl_format_headers(&l, &v, hb, sizeof hb);
            assert_string_equal(hb, "X-RateLimit-Remaining: 19\r\nX-RateLimit-Replenish-Rate: 10\r\n"
                                    "X-RateLimit-Burst-Capacity: 20\r\nX-RateLimit-Requested-Tokens: 1\r\n");
        }
    }
    assert_false(v.allowed);
    assert_int_equal(v.status, 429);
    mg_rl_format_headers(&l, &v, hb, sizeof hb);
    assert_string_equal(hb, "X-RateLimit-Remaining: 0\r\nX-RateLimit-Replenish-Rate: 10\r\n"
                            "X-RateLimit-Burst-Capacity: 20\r\nX-RateLimit-Requested-Tokens: 1\r\n"
                            "Retry-After: 1\r\n");
    mg_rl_hdrs_t h;
    mg_rl_headers(&l, &v, &h);
    assert_int_equal(h.n, 5);
    assert_true(mg_slice_eq(h.name[4], S("Retry-After")));
    assert_true(mg_slice_eq(h.value[4], S("1")));
    assert_int_equal(mg_rl_format_headers(&l, &v, hb, 20), 0);

    /* backend errors: fail open with Remaining -1, or closed */
    v = mg_rl_verdict_redis(&l, 0, -ENOTCONN, NULL);
    assert_true(v.allowed && v.backend_error);
    assert_int_equal(v.r.remaining, -1);
    mg_rl_format_headers(&l, &v, hb, sizeof hb);
    assert_non_null(strstr(hb, "X-RateLimit-Remaining: -1\r\n"));
    mg_rl_limiter_t lc;
    cfg.fail_closed = true;
    assert_int_equal(mg_rl_limiter_init(&lc, &cfg, S("order-service"), st, err, sizeof err), 0);
    mg_rl_redis_reply_t timeout = { .status = -ETIMEDOUT };
    v = mg_rl_verdict_redis(&lc, 0, 0, &timeout);
    assert_false(v.allowed);
    assert_int_equal(v.status, 429);
    mg_rl_redis_reply_t ok = { .status = 0, .result = { .allowed = true, .remaining = 7 } };
    v = mg_rl_verdict_redis(&lc, 0, 0, &ok);
    assert_true(v.allowed && !v.backend_error);

    /* empty key: 403, no X-RateLimit headers, or allowed when configured */
    cfg.fail_closed = false;
    cfg.key = (mg_rl_key_cfg_t){ .kind = MG_RL_KEY_HEADER, .name = S("X-User") };
    mg_rl_limiter_t le;
    assert_int_equal(mg_rl_limiter_init(&le, &cfg, S("order-service"), st, err, sizeof err), 0);
    assert_true(mg_rl_begin(&le, 0, &in, kbuf, sizeof kbuf, &key, &v));
    assert_false(v.allowed);
    assert_int_equal(v.status, 403);
    assert_int_equal(mg_rl_format_headers(&le, &v, hb, sizeof hb), 0);
    cfg.deny_empty_key = false;
    assert_int_equal(mg_rl_limiter_init(&le, &cfg, S("order-service"), st, err, sizeof err), 0);
    assert_true(mg_rl_begin(&le, 0, &in, kbuf, sizeof kbuf, &key, &v));
    assert_true(v.allowed);

    mg_rl_counts_t n;
    mg_rl_stats_sum(st, t, &n);
    assert_int_equal(n.allowed, 20 + 1 + 1);
    assert_int_equal(n.denied, 1 + 1);
    assert_int_equal(n.backend_error, 2);
    assert_int_equal(n.empty_key, 2);
    mg_rl_local_free(t);
    mg_rl_registry_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bucket_seed_10_20),
        cmocka_unit_test(bucket_continuous_refill),
        cmocka_unit_test(bucket_one_per_minute),
        cmocka_unit_test(bucket_burst_zero_and_oversize),
        cmocka_unit_test(bucket_fractional_rate),
        cmocka_unit_test(local_seed_10_20),
        cmocka_unit_test(local_burst_zero_stores_nothing),
        cmocka_unit_test(local_bounded),
        cmocka_unit_test(local_threads),
        cmocka_unit_test(local_cost),
        cmocka_unit_test(key_kinds),
        cmocka_unit_test(key_xff_trust),
        cmocka_unit_test(limiter_flow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
