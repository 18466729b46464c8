/* test_rl_config: rate limiting as configured. The seed's order-service
 * RateLimiter loads verbatim (rate 10, burst 20, requested 1, key ip) and
 * its route exposes the limiter; Spring's RequestRateLimiter name, relaxed
 * argument names, and meshgate's key / trusted-proxies / fail-closed
 * extensions; the native rate_limit: block; bad values and Spring beans
 * are refused at FILE:LINE:COL; Redis from spring.data.redis,
 * spring.redis and the native redis: key; limits.rate_limit_keys; config
 * print round-trips all of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/err.h"
#include "ratelimit/limiter.h"
#include "ratelimit/local.h"
#include "route/route.h"
#include "repo_file.h"

/* The seed without its CircuitBreaker item (4 lines; the resilience work). */
static char *strip_cb(const char *seed)
{
    static char out[65536];
    size_t o = 0;
    int skip = 0;
    for (const char *p = seed; *p;) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p + 1) : strlen(p);
        const char *hit = strstr(p, "- name: CircuitBreaker");
        if (hit && hit < p + l) skip = 4;
        if (skip) skip--;
        else {
            memcpy(out + o, p, l);
            o += l;
        }
        p += l;
    }
    out[o] = '\0';
    return out;
}

typedef struct {
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[512];
} env_t;

static int load(env_t *e, const char *yaml)
{
    memset(e, 0, sizeof *e);
    mg_config_buffer_t b = { "t.yaml", yaml, strlen(yaml) };
    if (mg_config_load_buffers(&b, 1, &e->cfg, e->err, sizeof e->err) != 0) return -1;
    return mg_route_table_build(e->cfg, &e->t, e->err, sizeof e->err) != 0 ? -1 : 0;
}

static void unload(env_t *e)
{
    mg_route_table_free(e->t);
    mg_config_free(e->cfg);
}

static const mg_route_t *route_by_id(const mg_route_table_t *t, const char *id)
{
    for (size_t i = 0; i < mg_route_count(t); i++)
        if (!strcmp(mg_route_at(t, i)->cfg->id, id)) return mg_route_at(t, i);
    return NULL;
}

/* The seed's files, exactly (minus CircuitBreaker): the order-service route
 * gets rate 10, burst 20, requested 1, keyed by client IP. */
static void test_seed_rate_limiter(void **state)
{
    (void)state;
    const char *seed = strip_cb(mg_test_slurp("examples/seed-gateway.yaml")), *local = mg_test_slurp("examples/seed-local.yaml");
    assert_non_null(local);
    assert_non_null(strstr(seed, "redis-rate-limiter.burstCapacity: 20"));
    mg_config_buffer_t bufs[2] = { { "seed-gateway.yaml", seed, strlen(seed) }, { "seed-local.yaml", local, strlen(local) } };
    mg_config_t *cfg = NULL;
    mg_route_table_t *t = NULL;
    char err[512] = "";
    if (mg_config_load_buffers(bufs, 2, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_false(cfg->redis.enabled);
    assert_int_equal(cfg->rate_limit_max_keys, 1000000);
    const mg_route_cfg_t *rc = &cfg->routes[1];
    assert_string_equal(rc->id, "order-service");
    assert_int_equal(rc->filters.n, 3);
    assert_string_equal(rc->filters.v[2].name, "RateLimiter");
    assert_int_equal(rc->filters.v[2].pos.line, 30); /* 34 in the seed, 4 lines stripped */
    if (mg_route_table_build(cfg, &t, err, sizeof err) != 0) fail_msg("%s", err);
    assert_null(mg_route_rate_limiter(route_by_id(t, "user-service")));
    const mg_rl_limiter_t *l = mg_route_rate_limiter(route_by_id(t, "order-service"));
    assert_non_null(l);
    assert_true(l->cfg.params.rate == 10.0);
    assert_int_equal(l->cfg.params.burst, 20);
    assert_int_equal(l->cfg.params.requested, 1);
    assert_int_equal(l->cfg.key.kind, MG_RL_KEY_IP);
    assert_int_equal(l->cfg.key.ntrusted, 0);
    assert_int_equal(l->cfg.deny_status, 429);
    assert_true(l->cfg.deny_empty_key);
    assert_int_equal(l->cfg.empty_key_status, 403);
    assert_false(l->cfg.fail_closed);
    assert_true(mg_slice_eq(l->route_id, MG_SLICE_LIT("order-service")));
    assert_non_null(l->stats);
    assert_string_equal(l->stats->route_id, "order-service");
    assert_string_equal(l->txt_rate, "10");
    assert_string_equal(l->txt_burst, "20");

    /* and it limits: 20 at once, then the 21st is denied, per key */
    mg_rl_local_t *lt;
    assert_int_equal(mg_rl_local_new(NULL, &lt), 0);
    int64_t now = 1000000;
    for (int i = 0; i < 20; i++) assert_true(mg_rl_decide_local(l, 0, lt, MG_SLICE_LIT("10.0.0.1"), now).allowed);
    mg_rl_verdict_t v = mg_rl_decide_local(l, 0, lt, MG_SLICE_LIT("10.0.0.1"), now);
    assert_false(v.allowed);
    assert_int_equal(v.status, 429);
    assert_true(mg_rl_decide_local(l, 0, lt, MG_SLICE_LIT("10.0.0.2"), now).allowed);
    assert_true(mg_rl_decide_local(l, 0, lt, MG_SLICE_LIT("10.0.0.1"), now + 100000).allowed); /* 0.1 s = 1 token */
    mg_rl_local_free(lt);

    /* a reload gets the same counters */
    mg_route_table_t *t2 = NULL;
    assert_int_equal(mg_route_table_build(cfg, &t2, err, sizeof err), 0);
    assert_ptr_equal(((const mg_rl_limiter_t *)mg_route_rate_limiter(route_by_id(t2, "order-service")))->stats, l->stats);
    mg_route_table_free(t2);
    mg_route_table_free(t);
    mg_config_free(cfg);
}

#define SCG "spring:\n  cloud:\n    gateway:\n      routes:\n        - id: r\n          uri: http://127.0.0.1:1\n" \
            "          filters:\n"

/* Spring's own name, relaxed argument names, Spring's status names and the
 * meshgate extensions. */
static void test_spring_args(void **state)
{
    (void)state;
    env_t e;
    if (load(&e, SCG "            - name: RequestRateLimiter\n              args:\n"
                     "                redis-rate-limiter.replenish-rate: 0.5\n"
                     "                redis-rate-limiter.burst-capacity: 60\n"
                     "                redis-rate-limiter.requested-tokens: 60\n"
                     "                deny-empty-key: false\n"
                     "                empty-key-status: UNAUTHORIZED\n"
                     "                status-code: SERVICE_UNAVAILABLE\n"
                     "                key: header:X-User\n"
                     "                fail-closed: true\n") != 0)
        fail_msg("%s", e.err);
    const mg_rl_limiter_t *l = mg_route_rate_limiter(mg_route_at(e.t, 0));
    assert_non_null(l);
    assert_true(l->cfg.params.rate == 0.5);
    assert_int_equal(l->cfg.params.burst, 60);
    assert_int_equal(l->cfg.params.requested, 60);
    assert_false(l->cfg.deny_empty_key);
    assert_int_equal(l->cfg.empty_key_status, 401);
    assert_int_equal(l->cfg.deny_status, 503);
    assert_int_equal(l->cfg.key.kind, MG_RL_KEY_HEADER);
    assert_true(mg_slice_eq(l->cfg.key.name, MG_SLICE_LIT("X-User")));
    assert_true(l->cfg.fail_closed);
    assert_string_equal(l->txt_rate, "0.5");
    unload(&e);

    static const struct {
        const char *key;
        mg_rl_key_kind_t kind;
        const char *name, *fixed;
    } keys[] = {
        { "ip", MG_RL_KEY_IP, NULL, NULL },           { "remote-addr", MG_RL_KEY_IP, NULL, NULL },
        { "query:user", MG_RL_KEY_QUERY, "user", NULL }, { "route", MG_RL_KEY_ROUTE, NULL, NULL },
        { "path", MG_RL_KEY_PATH, NULL, NULL },       { "fixed:all", MG_RL_KEY_FIXED, NULL, "all" },
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char y[1024];
        snprintf(y, sizeof y, SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, "
                                  "redis-rate-limiter.burstCapacity: 1, key: '%s'}}\n", keys[i].key);
        if (load(&e, y) != 0) fail_msg("%s: %s", keys[i].key, e.err);
        l = mg_route_rate_limiter(mg_route_at(e.t, 0));
        assert_int_equal(l->cfg.key.kind, keys[i].kind);
        if (keys[i].name) assert_true(mg_slice_eq(l->cfg.key.name, mg_slice_cstr(keys[i].name)));
        if (keys[i].fixed) assert_true(mg_slice_eq(l->cfg.key.fixed, mg_slice_cstr(keys[i].fixed)));
        unload(&e);
    }

    /* trusted proxies for X-Forwarded-For, as a YAML list or "a,b" */
    if (load(&e, SCG "            - name: RateLimiter\n              args:\n"
                     "                redis-rate-limiter.replenishRate: 1\n"
                     "                redis-rate-limiter.burstCapacity: 0\n"
                     "                trusted-proxies: [10.0.0.0/8, '::1']\n") != 0)
        fail_msg("%s", e.err);
    l = mg_route_rate_limiter(mg_route_at(e.t, 0));
    assert_int_equal(l->cfg.params.burst, 0); /* blocks everything */
    assert_int_equal(l->cfg.key.ntrusted, 2);
    assert_int_equal(l->cfg.key.trusted[0].bits, 8);
    assert_int_equal(l->cfg.key.trusted[1].bits, 128);
    unload(&e);
}

/* The native block: same limiter, loaded as a RequestRateLimiter filter. */
static void test_native_block(void **state)
{
    (void)state;
    env_t e;
    if (load(&e, "clusters: {svc: {endpoints: ['127.0.0.1:1']}}\n"
                 "routes:\n"
                 "  - id: a\n    path: /a/**\n    to: svc\n    filters: ['StripPrefix=1']\n"
                 "    rate_limit: {rate: 10, burst: 20, requested: 2, key: 'header:X-Api-Key', status: 503,\n"
                 "                 deny_empty_key: false, empty_key_status: 401, fail_closed: true}\n"
                 "  - id: b\n    path: /b/**\n    to: svc\n"
                 "    rate_limit:\n      rate: 1\n      burst: 60\n      requested: 60\n"
                 "      trusted_proxies: [127.0.0.1, 10.0.0.0/8]\n"
                 "  - id: c\n    path: /c/**\n    to: svc\n") != 0)
        fail_msg("%s", e.err);
    const mg_route_cfg_t *ra = &e.cfg->routes[0];
    assert_int_equal(ra->filters.n, 2);
    assert_string_equal(ra->filters.v[1].name, "RequestRateLimiter");
    assert_int_equal(ra->filters.v[1].pos.line, 7);
    const mg_rl_limiter_t *l = mg_route_rate_limiter(mg_route_at(e.t, 0));
    assert_non_null(l);
    assert_true(l->cfg.params.rate == 10.0);
    assert_int_equal(l->cfg.params.burst, 20);
    assert_int_equal(l->cfg.params.requested, 2);
    assert_int_equal(l->cfg.key.kind, MG_RL_KEY_HEADER);
    assert_true(mg_slice_eq(l->cfg.key.name, MG_SLICE_LIT("X-Api-Key")));
    assert_int_equal(l->cfg.deny_status, 503);
    assert_false(l->cfg.deny_empty_key);
    assert_int_equal(l->cfg.empty_key_status, 401);
    assert_true(l->cfg.fail_closed);
    assert_true(mg_slice_eq(l->route_id, MG_SLICE_LIT("a")));
    l = mg_route_rate_limiter(mg_route_at(e.t, 1));
    assert_non_null(l);
    assert_int_equal(l->cfg.params.requested, 60);
    assert_int_equal(l->cfg.key.kind, MG_RL_KEY_IP);
    assert_int_equal(l->cfg.key.ntrusted, 2);
    assert_null(mg_route_rate_limiter(mg_route_at(e.t, 2)));
    assert_null(mg_route_rate_limiter(NULL));
    unload(&e);
}

/* A limiter in default-filters gives every route its own buckets (its id). */
static void test_default_filters(void **state)
{
    (void)state;
    env_t e;
    if (load(&e, "spring:\n  cloud:\n    gateway:\n"
                 "      default-filters:\n        - {name: RequestRateLimiter, args: {replenishRate: 5, burstCapacity: 5}}\n"
                 "      routes:\n        - {id: x, uri: 'http://127.0.0.1:1', predicates: ['Path=/x']}\n"
                 "        - {id: y, uri: 'http://127.0.0.1:1', predicates: ['Path=/y']}\n") == 0)
        fail_msg("the Spring arg names need the redis-rate-limiter. prefix");
    assert_non_null(strstr(e.err, "t.yaml:5:45: unknown argument 'replenishRate' for filter 'RequestRateLimiter' (expected: "
                                  "redis-rate-limiter.replenishRate, "));
    unload(&e);
    if (load(&e, "spring:\n  cloud:\n    gateway:\n"
                 "      default-filters:\n        - {name: RequestRateLimiter, args: {redis-rate-limiter.replenishRate: 5, "
                 "redis-rate-limiter.burstCapacity: 5}}\n"
                 "      routes:\n        - {id: x, uri: 'http://127.0.0.1:1', predicates: ['Path=/x']}\n"
                 "        - {id: y, uri: 'http://127.0.0.1:1', predicates: ['Path=/y']}\n") != 0)
        fail_msg("%s", e.err);
    const mg_rl_limiter_t *x = mg_route_rate_limiter(mg_route_at(e.t, 0)), *y = mg_route_rate_limiter(mg_route_at(e.t, 1));
    assert_non_null(x);
    assert_non_null(y);
    assert_true(mg_slice_eq(x->route_id, MG_SLICE_LIT("x")));
    assert_true(mg_slice_eq(y->route_id, MG_SLICE_LIT("y")));
    assert_ptr_not_equal(x->stats, y->stats);
    assert_int_equal(y->cfg.params.burst, 5);
    unload(&e);
}

static const struct {
    const char *what, *yaml, *error;
} errs[] = {
    { "SpEL key resolver",
      SCG "            - name: RateLimiter\n              args:\n                redis-rate-limiter.replenishRate: 10\n"
          "                redis-rate-limiter.burstCapacity: 20\n                key-resolver: \"#{@userKeyResolver}\"\n",
      "t.yaml:12:31: key-resolver '#{@userKeyResolver}' is a Spring bean and cannot be evaluated; use key: ip | "
      "header:NAME | query:NAME | route | path | fixed:VALUE" },
    { "SpEL rate limiter", SCG "            - {name: RequestRateLimiter, args: {rate-limiter: '#{@myRateLimiter}'}}\n",
      "t.yaml:8:63: rate-limiter '#{@myRateLimiter}' is a Spring bean and cannot be evaluated; use "
      "redis-rate-limiter.replenishRate, redis-rate-limiter.burstCapacity and redis-rate-limiter.requestedTokens" },
    { "shortcut", SCG "            - RateLimiter=10,20\n",
      "t.yaml:8:15: RateLimiter has no shortcut form (Spring refuses 'RateLimiter=...' too); write it as {name: "
      "RateLimiter, args: {...}}" },
    { "no burst", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 10}}\n",
      "t.yaml:8:15: RateLimiter: missing the burst capacity (redis-rate-limiter.burstCapacity)" },
    { "rate 0", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 0, redis-rate-limiter.burstCapacity: 1}}\n",
      "t.yaml:8:76: replenish rate: expected a number of tokens per second > 0, got '0'" },
    { "rate text", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: ten, redis-rate-limiter.burstCapacity: 1}}\n",
      "t.yaml:8:76: replenish rate: expected a number of tokens per second > 0, got 'ten'" },
    { "burst < rate", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 10, redis-rate-limiter.burstCapacity: 5}}\n",
      "t.yaml:8:114: burst capacity (5) must be >= the replenish rate (10), or 0 to block every request" },
    { "burst negative", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: -1}}\n",
      "t.yaml:8:113: burst capacity: expected an integer 0..4294967295, got '-1'" },
    { "requested 0", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, "
      "redis-rate-limiter.requestedTokens: 0}}\n",
      "t.yaml:8:152: requested tokens: expected an integer >= 1, got '0'" },
    { "bad key", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, key: user}}\n",
      "t.yaml:8:121: key: unknown key 'user' (expected ip | header:NAME | query:NAME | route | path | fixed:VALUE)" },
    { "header key without name", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, key: 'header:'}}\n",
      "t.yaml:8:121: key: 'header:' needs a name: header:NAME" },
    { "bad status", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, status-code: 200}}\n",
      "t.yaml:8:129: status-code: expected a status 400..599 or a name like TOO_MANY_REQUESTS, got '200'" },
    { "bad bool", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, deny-empty-key: no}}\n",
      "t.yaml:8:132: deny-empty-key: expected true or false, got 'no'" },
    { "bad cidr", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1, trusted-proxies: 10.0.0.0/33}}\n",
      "t.yaml:8:133: trusted-proxies: bad address or CIDR '10.0.0.0/33' (expected e.g. 10.0.0.0/8, ::1)" },
    { "trusted proxies with a header key", SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, "
      "redis-rate-limiter.burstCapacity: 1, key: 'header:X', trusted-proxies: 10.0.0.1}}\n",
      "t.yaml:8:150: trusted-proxies applies only to key: ip" },
    { "two rate limiters",
      SCG "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1}}\n"
          "            - {name: RequestRateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1}}\n",
      "t.yaml:9:15: a second rate limiter (the first is at t.yaml:8:15); a route takes one" },
    { "native unknown key", "clusters: {s: {endpoints: ['127.0.0.1:1']}}\nroutes: [{path: /, to: s, rate_limit: {rate: 1, burts: 2}}]\n",
      "t.yaml:2:49: unknown key 'burts' in rate_limit (expected one of: rate, burst, requested, key, status, deny_empty_key, "
      "empty_key_status, trusted_proxies, fail_closed)" },
    { "native missing burst", "clusters: {s: {endpoints: ['127.0.0.1:1']}}\nroutes: [{path: /, to: s, rate_limit: {rate: 1}}]\n",
      "t.yaml:2:39: rate_limit: missing 'burst' (bucket size; 0 blocks everything)" },
    { "native bad rate", "clusters: {s: {endpoints: ['127.0.0.1:1']}}\nroutes: [{path: /, to: s, rate_limit: {rate: -1, burst: 2}}]\n",
      "t.yaml:2:46: replenish rate: expected a number of tokens per second > 0, got '-1'" },
    { "native bad bool", "clusters: {s: {endpoints: ['127.0.0.1:1']}}\nroutes: [{path: /, to: s, rate_limit: {rate: 1, burst: 2, fail_closed: maybe}}]\n",
      "t.yaml:2:72: fail_closed: expected true or false, got a string" },
    { "native and filter",
      "clusters: {s: {endpoints: ['127.0.0.1:1']}}\nroutes:\n  - path: /\n    to: s\n"
      "    filters: [{name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1}}]\n"
      "    rate_limit: {rate: 1, burst: 1}\n",
      "t.yaml:6:17: a second rate limiter (the first is at t.yaml:5:15); a route takes one" },
    { "route and default-filters",
      "spring:\n  cloud:\n    gateway:\n      default-filters:\n"
      "        - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1}}\n"
      "      routes:\n        - id: r\n          uri: http://127.0.0.1:1\n          filters:\n"
      "            - {name: RateLimiter, args: {redis-rate-limiter.replenishRate: 1, redis-rate-limiter.burstCapacity: 1}}\n",
      "t.yaml:10:15: a second rate limiter (default-filters has one at t.yaml:5:11); a route takes one" },
    /* Redis */
    { "redis bad url", "redis: http://127.0.0.1:6379\n", "t.yaml:1:8: url: expected redis://host:port, got 'http://127.0.0.1:6379'" },
    { "redis tls", "redis: {url: 'rediss://h:1'}\n", "t.yaml:1:14: url: Redis over TLS (rediss://) is not supported yet" },
    { "redis auth", "redis: 'redis://:pw@h:1'\n", "t.yaml:1:8: url: Redis authentication is not supported yet" },
    { "redis db", "redis: 'redis://h:1/3'\n", "t.yaml:1:8: url: only database 0 and no options are supported ('/3')" },
    { "redis bad port", "redis: {host: 127.0.0.1, port: 70000}\n", "t.yaml:1:32: port: bad port '70000' (expected 1..65535)" },
    { "redis unknown key", "redis: {host: 127.0.0.1, db: 1}\n",
      "t.yaml:1:26: unknown key 'db' in redis (expected one of: url, host, port, timeout)" },
    { "redis bad timeout", "redis: {host: 127.0.0.1, timeout: 2m}\n", "t.yaml:1:35: timeout: '2m' is out of range (1..60000 ms)" },
    { "spring redis unknown key", "spring: {data: {redis: {hots: x}}}\n",
      "t.yaml:1:25: unknown key 'hots' in spring.data.redis (expected one of: url, host, port, timeout, database, "
      "password, username, ssl)" },
    { "spring redis password", "spring: {redis: {host: h, password: secret}}\n",
      "t.yaml:1:37: password: Redis authentication is not supported yet" },
    { "spring redis database", "spring: {data: {redis: {host: h, database: 2}}}\n",
      "t.yaml:1:44: database: only database 0 is supported" },
    { "redis twice", "redis: 'redis://127.0.0.1:1'\nspring: {data: {redis: {host: h}}}\n",
      "t.yaml:2:24: spring.data.redis: Redis is already configured at t.yaml:1:8; keep one" },
    { "spring redis twice", "spring: {data: {redis: {host: h}}, redis: {host: h}}\n",
      "t.yaml:1:43: spring.redis: Redis is already configured at t.yaml:1:24; keep one" },
    { "rate_limit_keys", "limits: {rate_limit_keys: 0}\n", "t.yaml:1:27: rate_limit_keys: '0' is out of range (64..268435456)" },
};

static void test_errors(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        env_t e;
        if (load(&e, errs[i].yaml) == 0) {
            print_error("%s: loaded\n", errs[i].what);
            failures++;
        } else if (strcmp(e.err, errs[i].error) != 0) {
            print_error("%s:\n  got  '%s'\n  want '%s'\n", errs[i].what, e.err, errs[i].error);
            failures++;
        }
        unload(&e);
    }
    assert_int_equal(failures, 0);
}

static void test_redis(void **state)
{
    (void)state;
    static const struct {
        const char *yaml, *host;
        unsigned port, timeout;
    } ok[] = {
        { "spring: {data: {redis: {host: 10.1.2.3, port: 6380}}}\n", "10.1.2.3", 6380, 50 },
        { "spring: {data: {redis: {host: localhost, timeout: 20ms}}}\n", "localhost", 6379, 20 },
        { "spring: {data: {redis: {timeout: 75}}}\n", "localhost", 6379, 75 },
        { "spring: {redis: {host: 127.0.0.1}}\n", "127.0.0.1", 6379, 50 },
        { "spring: {redis: {url: 'redis://127.0.0.1:7000'}}\n", "127.0.0.1", 7000, 50 },
        { "redis: 'redis://127.0.0.1:6390'\n", "127.0.0.1", 6390, 50 },
        { "redis: {url: 'redis://[::1]:6391/0', timeout: 100ms}\n", "::1", 6391, 100 },
        { "redis: {host: redis.internal}\n", "redis.internal", 6379, 50 },
        { "redis: {host: 127.0.0.1, port: 1234, timeout: 1s}\n", "127.0.0.1", 1234, 1000 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        env_t e;
        if (load(&e, ok[i].yaml) != 0) fail_msg("%s: %s", ok[i].yaml, e.err);
        assert_true(e.cfg->redis.enabled);
        assert_string_equal(e.cfg->redis.host, ok[i].host);
        assert_int_equal(e.cfg->redis.port, ok[i].port);
        assert_int_equal(e.cfg->redis.timeout_ms, ok[i].timeout);
        assert_int_equal(e.cfg->redis.pos.line, 1);
        unload(&e);
    }
    env_t e;
    assert_int_equal(load(&e, "redis: off\nlimits: {rate_limit_keys: 5000}\n"), 0);
    assert_false(e.cfg->redis.enabled);
    assert_int_equal(e.cfg->rate_limit_max_keys, 5000);
    unload(&e);
    assert_int_equal(load(&e, "spring: {data: {redis: {}}}\n"), 0); /* nothing set: no Redis */
    assert_false(e.cfg->redis.enabled);
    unload(&e);
}

/* config print writes redis, rate_limit_keys and the limiter (as the
 * expanded filter) and the output loads back to the same thing. */
static void test_print_roundtrip(void **state)
{
    (void)state;
    const char *y = "clusters: {svc: {endpoints: ['127.0.0.1:1']}}\n"
                    "limits: {rate_limit_keys: 4096}\n"
                    "spring: {data: {redis: {host: 127.0.0.1, port: 6399, timeout: 30ms}}}\n"
                    "routes:\n  - id: a\n    path: /a/**\n    to: svc\n"
                    "    rate_limit: {rate: 2.5, burst: 5, key: 'query:u', trusted_proxies: []}\n"
                    "  - id: b\n    path: /b/**\n    to: svc\n"
                    "    rate_limit: {rate: 1, burst: 1, trusted_proxies: [10.0.0.0/8, 192.168.0.1], deny_empty_key: false}\n";
    env_t e;
    if (load(&e, y) != 0) fail_msg("%s", e.err);
    char *out1 = NULL, *out2 = NULL;
    size_t n1 = 0, n2 = 0;
    FILE *f = open_memstream(&out1, &n1);
    assert_int_equal(mg_config_print(e.cfg, f), 0);
    fclose(f);
    assert_non_null(strstr(out1, "rate_limit_keys: 4096"));
    assert_non_null(strstr(out1, "redis:\n  host: \"127.0.0.1\"\n  port: 6399\n  timeout: 30\n"));
    assert_non_null(strstr(out1, "\"redis-rate-limiter.replenishRate\": \"2.5\""));
    env_t e2;
    if (load(&e2, out1) != 0) fail_msg("%s\n%s", e2.err, out1);
    f = open_memstream(&out2, &n2);
    assert_int_equal(mg_config_print(e2.cfg, f), 0);
    fclose(f);
    assert_string_equal(out1, out2);
    assert_true(e2.cfg->redis.enabled);
    assert_int_equal(e2.cfg->redis.port, 6399);
    assert_int_equal(e2.cfg->redis.timeout_ms, 30);
    assert_int_equal(e2.cfg->rate_limit_max_keys, 4096);
    const mg_rl_limiter_t *l = mg_route_rate_limiter(mg_route_at(e2.t, 0));
    assert_true(l->cfg.params.rate == 2.5);
    assert_int_equal(l->cfg.key.kind, MG_RL_KEY_QUERY);
    l = mg_route_rate_limiter(mg_route_at(e2.t, 1));
    assert_int_equal(l->cfg.key.ntrusted, 2);
    assert_false(l->cfg.deny_empty_key);
    free(out1);
    free(out2);
    unload(&e);
    unload(&e2);
}

/* GET /routes shows the limiter as the filter it is. */
static void test_describe(void **state)
{
    (void)state;
    env_t e;
    if (load(&e, "clusters: {svc: {endpoints: ['127.0.0.1:1']}}\nroutes: [{id: a, path: /a, to: svc, rate_limit: {rate: 3, burst: 4}}]\n") != 0)
        fail_msg("%s", e.err);
    mg_buf_t b;
    mg_buf_init(&b);
    mg_route_describe_json(mg_route_at(e.t, 0), &b);
    assert_non_null(strstr(b.p, "{\"name\":\"RequestRateLimiter\",\"args\":{\"redis-rate-limiter.replenishRate\":\"3\","
                                "\"redis-rate-limiter.burstCapacity\":\"4\"}}"));
    mg_buf_free(&b);
    unload(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_rate_limiter),
        cmocka_unit_test(test_spring_args),
        cmocka_unit_test(test_native_block),
        cmocka_unit_test(test_default_filters),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_redis),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_describe),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mg_rl_registry_free();
    return rc;
}
