/* test_resilience_cfg: the configuration side of the resilience work.
 * Spring CircuitBreaker / Retry filters with resilience4j.* merging, the
 * native circuit_breaker / retry / respond route blocks, the cluster
 * blocks (connection_pool, outlier_detection, circuit_breaker,
 * retry_budget, health_check), config print round trips, and bad values
 * with their exact "FILE:LINE:COL: message". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "config/resilience_cfg.h"
#include "core/err.h"
#include "filter/resilience_filters.h"
#include "cfg_errors.h"

static mg_config_t *load1(const char *yaml, char *err, size_t errlen)
{
    mg_config_buffer_t b = { "t.yaml", yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    int rc = mg_config_load_buffers(&b, 1, &cfg, err, errlen);
    if (rc == 0) assert_non_null(cfg);
    else assert_null(cfg);
    return cfg;
}

static mg_config_t *must_load(const char *yaml)
{
    char err[1024] = "";
    mg_config_t *cfg = load1(yaml, err, sizeof err);
    if (!cfg) fail_msg("load failed: %s", err);
    return cfg;
}

static bool fail_status(const mg_breaker_cfg_t *b, int s) { return (b->fail_status[s / 64] >> (s % 64)) & 1; }
static bool retry_status(const mg_retry_policy_t *p, int s) { return (p->statuses[s / 64] >> (s % 64)) & 1; }
static int nfail_status(const mg_breaker_cfg_t *b)
{
    int n = 0;
    for (int s = 0; s < 600; s++) n += fail_status(b, s);
    return n;
}

static const mg_route_cfg_t *route(const mg_config_t *cfg, const char *id)
{
    for (size_t i = 0; i < cfg->nroutes; i++)
        if (!strcmp(cfg->routes[i].id, id)) return &cfg->routes[i];
    fail_msg("no route %s", id);
    return NULL;
}

static const mg_cluster_cfg_t *cluster(const mg_config_t *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, name)) return &cfg->clusters[i];
    fail_msg("no cluster %s", name);
    return NULL;
}

/* Spring preamble: one simple-discovery service "svc" */
#define SPRING_SVC \
    "spring:\n  cloud:\n    discovery: {client: {simple: {instances: {svc: [{uri: 'http://127.0.0.1:9001'}]}}}}\n" \
    "    gateway:\n      routes:\n"

/* The seed's user-service route, its fallback target as seed-local.yaml
 * adds it. */
static const char seed_cb[] =
    SPRING_SVC
    "        - id: user-service\n"
    "          uri: lb://svc\n"
    "          predicates:\n"
    "            - Path=/api/users/**\n"
    "          filters:\n"
    "            - StripPrefix=2\n"
    "            - name: CircuitBreaker\n"
    "              args:\n"
    "                name: user-service-cb\n"
    "                fallbackUri: forward:/fallback/users\n"
    "routes:\n"
    "  - id: user-service-fallback\n"
    "    path: /fallback/users\n"
    "    respond: {status: 503, headers: {Content-Type: application/json}, body: '{\"error\": \"down\"}'}\n";

static void test_seed_circuit_breaker(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(seed_cb);
    const mg_route_cfg_t *r = route(cfg, "user-service");
    assert_true(r->has_breaker);
    assert_string_equal(r->breaker_name, "user-service-cb");
    assert_string_equal(r->fallback_path, "/fallback/users");
    assert_false(r->resume_without_error);
    assert_int_equal(r->time_limit_ms, 1000); /* Resilience4j TimeLimiter default */
    /* Resilience4j defaults */
    mg_breaker_cfg_t d;
    mg_breaker_cfg_default(&d);
    assert_true(mg_breaker_cfg_equal(&r->breaker, &d));
    assert_int_equal(r->breaker.mode, MG_CB_MODE_RATE);
    assert_int_equal(r->breaker.window_size, 100);
    assert_int_equal(nfail_status(&r->breaker), 0); /* no statusCodes: only local failures count */
    assert_false(r->has_retry);
    /* the filter stays in the list (config print writes it as a native block) */
    assert_int_equal(r->filters.n, 2);
    assert_string_equal(r->filters.v[1].name, "CircuitBreaker");

    const mg_route_cfg_t *fb = route(cfg, "user-service-fallback");
    assert_true(fb->respond);
    assert_int_equal(fb->respond_status, 503);
    assert_null(fb->cluster);
    assert_int_equal(fb->cluster_index, SIZE_MAX);
    assert_int_equal(fb->nrespond_headers, 1);
    assert_string_equal(fb->respond_headers[0], "Content-Type: application/json");
    assert_string_equal(fb->respond_body, "{\"error\": \"down\"}");
    mg_config_free(cfg);
}

static void test_resilience4j_merging(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(
        SPRING_SVC
        "        - {id: a, uri: lb://svc, predicates: [Path=/a/**], filters: [CircuitBreaker=inst]}\n"
        "        - {id: b, uri: lb://svc, predicates: [Path=/b/**], filters: [CircuitBreaker=other]}\n"
        "        - id: c\n"
        "          uri: lb://svc\n"
        "          predicates: [Path=/c/**]\n"
        "          filters:\n"
        "            - {name: CircuitBreaker, args: {statusCodes: [500, BAD_GATEWAY, '503'], resumeWithoutError: true}}\n"
        "        - {id: d, uri: lb://svc, predicates: [Path=/d/**], filters: [CircuitBreaker=inst]}\n"
        "resilience4j:\n"
        "  circuitbreaker:\n"
        "    configs:\n"
        "      default: {slidingWindowSize: 20, failure-rate-threshold: 40, wait_duration_in_open_state: PT10S}\n"
        "      strict:\n"
        "        baseConfig: default\n"
        "        minimumNumberOfCalls: 5\n"
        "        recordExceptions: [java.io.IOException, java.util.concurrent.TimeoutException]\n"
        "    instances:\n"
        "      inst:\n"
        "        baseConfig: strict\n"
        "        slidingWindowType: TIME_BASED\n"
        "        slowCallDurationThreshold: 2s\n"
        "        slowCallRateThreshold: 80\n"
        "        permittedNumberOfCallsInHalfOpenState: 3\n"
        "        automaticTransitionFromOpenToHalfOpenEnabled: true\n"
        "        maxWaitDurationInHalfOpenState: 1500ms\n"
        "        registerHealthIndicator: true\n"
        "      c: {ignoreExceptions: [java.net.ConnectException]}\n"
        "  timelimiter:\n"
        "    configs: {default: {timeoutDuration: 3s}}\n"
        "    instances: {inst: {timeoutDuration: 500ms, cancelRunningFuture: true}}\n");
    const mg_route_cfg_t *a = route(cfg, "a");
    const mg_breaker_cfg_t *b = &a->breaker;
    assert_string_equal(a->breaker_name, "inst");
    assert_int_equal(b->window_type, MG_CB_TIME_BASED);
    assert_int_equal(b->window_size, 20);       /* from default, through strict */
    assert_true(b->failure_rate_threshold == 40.0f);
    assert_int_equal(b->wait_open_ms, 10000);   /* PT10S */
    assert_int_equal(b->minimum_calls, 5);      /* strict */
    assert_int_equal(b->slow_call_duration_ms, 2000);
    assert_true(b->slow_rate_threshold == 80.0f);
    assert_int_equal(b->half_open_permits, 3);
    assert_true(b->automatic_half_open);
    assert_int_equal(b->max_wait_half_open_ms, 1500);
    /* IOException: connect, reset, protocol; TimeoutException: timeout */
    assert_true(b->fail_on_connect && b->fail_on_reset && b->fail_on_protocol && b->fail_on_timeout);
    assert_int_equal(a->time_limit_ms, 500);

    /* no instance: configs.default for both */
    const mg_route_cfg_t *rb = route(cfg, "b");
    assert_string_equal(rb->breaker_name, "other");
    assert_int_equal(rb->breaker.window_size, 20);
    assert_int_equal(rb->breaker.minimum_calls, 100);
    assert_int_equal(rb->breaker.window_type, MG_CB_COUNT_BASED);
    assert_int_equal(rb->time_limit_ms, 3000);

    /* no name: the route id, which names instance "c" (over configs.default) */
    const mg_route_cfg_t *c = route(cfg, "c");
    assert_string_equal(c->breaker_name, "c");
    assert_int_equal(c->breaker.window_size, 20);
    assert_false(c->breaker.fail_on_connect); /* ignored */
    assert_true(c->breaker.fail_on_timeout);
    assert_true(c->resume_without_error);
    assert_int_equal(nfail_status(&c->breaker), 3);
    assert_true(fail_status(&c->breaker, 500) && fail_status(&c->breaker, 502) && fail_status(&c->breaker, 503));
    assert_null(c->fallback_path);

    /* d shares breaker "inst" with a */
    assert_string_equal(route(cfg, "d")->breaker_name, "inst");
    assert_true(mg_breaker_cfg_equal(&route(cfg, "d")->breaker, b));
    mg_config_free(cfg);
}

static void test_default_filters_and_retry(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(
        "spring:\n  cloud:\n    discovery: {client: {simple: {instances: {svc: [{uri: 'http://127.0.0.1:9001'}]}}}}\n"
        "    gateway:\n"
        "      default-filters: [CircuitBreaker, 'Retry=2']\n"
        "      routes:\n"
        "        - {id: a, uri: lb://svc, predicates: [Path=/a/**]}\n");
    const mg_route_cfg_t *a = route(cfg, "a");
    assert_true(a->has_breaker);
    assert_string_equal(a->breaker_name, "a"); /* Spring: the route id */
    assert_true(a->has_retry);
    assert_int_equal(a->retry.max_retries, 2);
    mg_config_free(cfg);
}

static void test_spring_retry(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(
        SPRING_SVC
        "        - {id: def, uri: lb://svc, predicates: [Path=/def/**], filters: [Retry]}\n"
        "        - id: full\n"
        "          uri: lb://svc\n"
        "          predicates: [Path=/full/**]\n"
        "          filters:\n"
        "            - name: Retry\n"
        "              args:\n"
        "                retries: 4\n"
        "                statuses: BAD_GATEWAY,503\n"
        "                series: [CLIENT_ERROR]\n"
        "                methods: [GET, POST]\n"
        "                exceptions: [java.net.ConnectException]\n"
        "                backoff: {firstBackoff: 10ms, maxBackoff: 50ms, factor: 3, basedOnPreviousValue: false}\n"
        "        - {id: short, uri: lb://svc, predicates: [Path=/s/**], filters: ['Retry=5,INTERNAL_SERVER_ERROR,PUT,20ms,1s,2,true']}\n");
    const mg_retry_policy_t *p = &route(cfg, "def")->retry;
    assert_true(route(cfg, "def")->has_retry);
    assert_int_equal(p->max_retries, 3);
    assert_int_equal(p->series, 1u << 5);
    assert_int_equal(p->methods, 1u << MG_METHOD_GET);
    assert_int_equal(p->on, MG_RETRY_STATUS_SERIES | MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET | MG_RETRY_TIMEOUT);
    assert_int_equal(p->backoff, MG_BACKOFF_NONE);

    p = &route(cfg, "full")->retry;
    assert_int_equal(p->max_retries, 4);
    assert_true(retry_status(p, 502) && retry_status(p, 503) && !retry_status(p, 500));
    assert_int_equal(p->series, 1u << 4);
    assert_int_equal(p->methods, (1u << MG_METHOD_GET) | (1u << MG_METHOD_POST));
    assert_int_equal(p->on, MG_RETRY_STATUS_LISTED | MG_RETRY_STATUS_SERIES | MG_RETRY_CONNECT_FAILURE);
    assert_int_equal(p->backoff, MG_BACKOFF_EXPONENTIAL);
    assert_int_equal(p->base_ms, 10);
    assert_int_equal(p->max_ms, 50);
    assert_int_equal(p->factor, 3);
    assert_false(p->based_on_previous);

    p = &route(cfg, "short")->retry;
    assert_int_equal(p->max_retries, 5);
    assert_true(retry_status(p, 500));
    assert_int_equal(p->methods, 1u << MG_METHOD_PUT);
    assert_int_equal(p->base_ms, 20);
    assert_int_equal(p->max_ms, 1000);
    assert_int_equal(p->factor, 2);
    assert_true(p->based_on_previous);
    mg_config_free(cfg);
}

static const char native_all[] =
    "clusters:\n"
    "  users:\n"
    "    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]\n"
    "    connection_pool: {max_connections: 10, max_requests: 100, max_pending: 5, max_requests_per_connection: 50}\n"
    "    outlier_detection: {consecutive_5xx: 3, consecutive_gateway_errors: 2, interval: 5s, base_ejection_time: 10s,\n"
    "                        max_ejection_time: 60s, max_ejection_percent: 50, min_health_percent: 0}\n"
    "    retry_budget: {percent: 25, min_concurrency: 2}\n"
    "    health_check: {path: /health, interval: 5s, timeout: 500ms, healthy_threshold: 2, unhealthy_threshold: 4,\n"
    "                   expected_statuses: [200-299, 404]}\n"
    "    circuit_breaker: {failure_threshold: 5, timeout: 2s, reset_timeout: 30s}\n"
    "  plain:\n"
    "    endpoints: [127.0.0.1:9003]\n"
    "routes:\n"
    "  - id: rate\n"
    "    path: /rate/**\n"
    "    to: users\n"
    "    circuit_breaker:\n"
    "      sliding_window_type: time_based\n"
    "      sliding_window_size: 30\n"
    "      minimum_calls: 10\n"
    "      failure_rate_threshold: 25.5\n"
    "      slow_call_rate_threshold: 90\n"
    "      slow_call_duration: 1500ms\n"
    "      wait_in_open: 20s\n"
    "      half_open_calls: 4\n"
    "      automatic_half_open: true\n"
    "      max_wait_in_half_open: 10s\n"
    "      failure_statuses: [500, 502-504, 4xx]\n"
    "      failure_kinds: [connect_failure, timeout]\n"
    "      fallback: /fb\n"
    "      time_limit: 3s\n"
    "    retry: {attempts: 2, per_try_timeout: 1s, retry_on: [5xx, retriable-4xx, 503], backoff: {base: 25ms, max: 250ms}}\n"
    "  - id: simple\n"
    "    path: /simple/**\n"
    "    to: plain\n"
    "    circuit_breaker: {failure_threshold: 3, timeout: 2s, reset_timeout: 30s}\n"
    "    retry: {num_retries: 1, retry_on: [connect-failure], methods: [GET, POST], backoff: {base: 10ms}}\n"
    "  - id: defaults\n"
    "    path: /defaults/**\n"
    "    to: plain\n"
    "    circuit_breaker: {}\n"
    "    retry: {}\n"
    "  - id: fb\n"
    "    path: /fb\n"
    "    respond: {status: 503, body: down}\n";

static void test_native_blocks(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(native_all);
    const mg_cluster_cfg_t *c = cluster(cfg, "users");
    assert_int_equal(c->bulkhead.max_connections, 10);
    assert_int_equal(c->bulkhead.max_requests, 100);
    assert_int_equal(c->bulkhead.max_pending, 5);
    assert_int_equal(c->bulkhead.max_requests_per_connection, 50);
    assert_true(c->has_outlier);
    assert_int_equal(c->outlier.consecutive_5xx, 3);
    assert_int_equal(c->outlier.consecutive_gateway_errors, 2);
    assert_int_equal(c->outlier.interval_ms, 5000);
    assert_int_equal(c->outlier.base_ejection_time_ms, 10000);
    assert_int_equal(c->outlier.max_ejection_time_ms, 60000);
    assert_int_equal(c->outlier.max_ejection_percent, 50);
    assert_int_equal(c->outlier.min_health_percent, 0);
    assert_int_equal(c->retry_budget.budget_percent, 25);
    assert_int_equal(c->retry_budget.min_concurrency, 2);
    assert_true(c->has_health);
    assert_string_equal(c->health.path, "/health");
    assert_int_equal(c->health.interval_ms, 5000);
    assert_int_equal(c->health.timeout_ms, 500);
    assert_int_equal(c->health.healthy_threshold, 2);
    assert_int_equal(c->health.unhealthy_threshold, 4);
    assert_true(mg_rcfg_health_expected(c, 200) && mg_rcfg_health_expected(c, 299) && mg_rcfg_health_expected(c, 404));
    assert_false(mg_rcfg_health_expected(c, 300) || mg_rcfg_health_expected(c, 500));
    assert_true(c->has_breaker);
    assert_int_equal(c->breaker.mode, MG_CB_MODE_CONSECUTIVE);
    assert_int_equal(c->breaker.failure_threshold, 5);
    assert_int_equal(c->breaker.call_timeout_ms, 2000);
    assert_int_equal(c->breaker.wait_open_ms, 30000);
    assert_int_equal(c->breaker.half_open_permits, 1);
    assert_true(fail_status(&c->breaker, 500) && fail_status(&c->breaker, 599)); /* native default: 5xx */

    /* defaults of a cluster without any block */
    const mg_cluster_cfg_t *pl = cluster(cfg, "plain");
    assert_int_equal(pl->bulkhead.max_connections, 0);
    assert_int_equal(pl->bulkhead.max_requests, 0);
    assert_false(pl->has_outlier || pl->has_breaker || pl->has_health);
    assert_int_equal(pl->retry_budget.budget_percent, 20);
    assert_int_equal(pl->retry_budget.min_concurrency, 3);

    const mg_route_cfg_t *r = route(cfg, "rate");
    const mg_breaker_cfg_t *b = &r->breaker;
    assert_true(r->has_breaker);
    assert_string_equal(r->breaker_name, "route:rate");
    assert_int_equal(b->mode, MG_CB_MODE_RATE);
    assert_int_equal(b->window_type, MG_CB_TIME_BASED);
    assert_int_equal(b->window_size, 30);
    assert_int_equal(b->minimum_calls, 10);
    assert_true(b->failure_rate_threshold == 25.5f);
    assert_true(b->slow_rate_threshold == 90.0f);
    assert_int_equal(b->slow_call_duration_ms, 1500);
    assert_int_equal(b->wait_open_ms, 20000);
    assert_int_equal(b->half_open_permits, 4);
    assert_true(b->automatic_half_open);
    assert_int_equal(b->max_wait_half_open_ms, 10000);
    assert_int_equal(nfail_status(b), 1 + 3 + 100);
    assert_true(fail_status(b, 404) && fail_status(b, 503) && !fail_status(b, 501));
    assert_true(b->fail_on_connect && b->fail_on_timeout && !b->fail_on_reset && !b->fail_on_protocol);
    assert_string_equal(r->fallback_path, "/fb");
    assert_int_equal(r->time_limit_ms, 3000);
    assert_true(r->has_retry);
    assert_int_equal(r->retry.max_retries, 2);
    assert_int_equal(r->retry.per_try_timeout_ms, 1000);
    assert_true(r->retry.on & MG_RETRY_STATUS_5XX);
    assert_true(r->retry.on & MG_RETRY_STATUS_409);
    assert_true(retry_status(&r->retry, 503));
    assert_int_equal(r->retry.backoff, MG_BACKOFF_JITTER);
    assert_int_equal(r->retry.base_ms, 25);
    assert_int_equal(r->retry.max_ms, 250);

    r = route(cfg, "simple");
    assert_int_equal(r->breaker.mode, MG_CB_MODE_CONSECUTIVE);
    assert_int_equal(r->breaker.failure_threshold, 3);
    assert_int_equal(r->time_limit_ms, 0);
    assert_int_equal(r->retry.max_retries, 1);
    assert_int_equal(r->retry.on, MG_RETRY_CONNECT_FAILURE);
    assert_int_equal(r->retry.methods, (1u << MG_METHOD_GET) | (1u << MG_METHOD_POST));
    assert_int_equal(r->retry.base_ms, 10);
    assert_int_equal(r->retry.max_ms, 100); /* Envoy: 10 x base */

    r = route(cfg, "defaults");
    mg_breaker_cfg_t d;
    mg_breaker_cfg_default(&d);
    mg_breaker_cfg_fail_status(&d, 500, 599);
    assert_true(mg_breaker_cfg_equal(&r->breaker, &d));
    mg_retry_policy_t rp;
    mg_retry_policy_default(&rp);
    assert_memory_equal(&r->retry, &rp, sizeof rp);
    mg_config_free(cfg);
}

static char *print_cfg(const mg_config_t *cfg)
{
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    assert_int_equal(mg_config_print(cfg, f), 0);
    fclose(f);
    return out;
}

/* print -> load -> print is a fixed point and keeps every field */
static void roundtrip(const char *yaml)
{
    mg_config_t *cfg = must_load(yaml);
    char *out1 = print_cfg(cfg);
    char err[1024] = "";
    mg_config_t *cfg2 = load1(out1, err, sizeof err);
    if (!cfg2) fail_msg("%s\n%s", err, out1);
    char *out2 = print_cfg(cfg2);
    assert_string_equal(out1, out2);
    assert_int_equal(cfg->nroutes, cfg2->nroutes);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const mg_route_cfg_t *a = &cfg->routes[i], *b = &cfg2->routes[i];
        assert_int_equal(a->has_breaker, b->has_breaker);
        if (a->has_breaker) {
            assert_true(mg_breaker_cfg_equal(&a->breaker, &b->breaker));
            assert_string_equal(a->breaker_name, b->breaker_name);
            assert_int_equal(a->time_limit_ms, b->time_limit_ms);
            assert_int_equal(a->resume_without_error, b->resume_without_error);
            assert_true((a->fallback_path == NULL) == (b->fallback_path == NULL));
        }
        assert_int_equal(a->has_retry, b->has_retry);
        if (a->has_retry) assert_memory_equal(&a->retry, &b->retry, sizeof a->retry);
        assert_int_equal(a->respond, b->respond);
        assert_int_equal(a->respond_status, b->respond_status);
        assert_int_equal(a->nrespond_headers, b->nrespond_headers);
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const mg_cluster_cfg_t *a = &cfg->clusters[i], *b = &cfg2->clusters[i];
        if (a->synthesized) continue;
        assert_memory_equal(&a->bulkhead, &b->bulkhead, sizeof a->bulkhead);
        assert_memory_equal(&a->retry_budget, &b->retry_budget, sizeof a->retry_budget);
        assert_int_equal(a->has_outlier, b->has_outlier);
        assert_memory_equal(&a->outlier, &b->outlier, sizeof a->outlier);
        assert_int_equal(a->has_breaker, b->has_breaker);
        if (a->has_breaker) assert_true(mg_breaker_cfg_equal(&a->breaker, &b->breaker));
        assert_int_equal(a->has_health, b->has_health);
        if (a->has_health) assert_memory_equal(a->health.expected, b->health.expected, sizeof a->health.expected);
    }
    free(out1);
    free(out2);
    mg_config_free(cfg);
    mg_config_free(cfg2);
}

static void test_print_roundtrip(void **state)
{
    (void)state;
    roundtrip(native_all);
    roundtrip(seed_cb);
    roundtrip(SPRING_SVC
              "        - id: a\n"
              "          uri: lb://svc\n"
              "          predicates: [Path=/a/**]\n"
              "          filters:\n"
              "            - {name: CircuitBreaker, args: {name: x, statusCodes: [500], fallbackUri: 'forward:/b'}}\n"
              "            - {name: Retry, args: {retries: 2, backoff: {firstBackoff: 10ms}}}\n"
              "        - {id: b, uri: lb://svc, predicates: [Path=/b]}\n"
              "resilience4j: {circuitbreaker: {instances: {x: {slidingWindowSize: 7, minimumNumberOfCalls: 7}}}}\n");
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int64_t ms; /* -1: refused */
    } cases[] = {
        { "500", 500 },  { "500ms", 500 },  { "2s", 2000 },     { "1m", 60000 },   { "1h", 3600000 },
        { "1d", 86400000 }, { "100us", 1 }, { "1500us", 2 },    { "PT2S", 2000 },  { "PT0.5S", 500 },
        { "pt1m30s", 90000 }, { "P1DT1H", 90000000 }, { "PT0.0001S", 1 }, { "2x", -1 }, { "", -1 },
        { "-1s", -1 }, { "PT", -1 }, { "P1H", -1 }, { "PT1.5M", -1 }, { "ms", -1 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t ms = 0;
        int rc = mg_spring_duration_ms(cases[i].s, &ms);
        if (cases[i].ms < 0) {
            if (rc == 0) fail_msg("'%s' accepted as %llu", cases[i].s, (unsigned long long)ms);
        } else {
            if (rc != 0 || ms != (uint64_t)cases[i].ms)
                fail_msg("'%s': rc %d, %llu ms, want %lld", cases[i].s, rc, (unsigned long long)ms, (long long)cases[i].ms);
        }
    }
}

#define SVC_ROUTE(extra) SPRING_SVC "        - id: a\n          uri: lb://svc\n          predicates: [Path=/a/**]\n" extra

static const mg_cfg_err_case_t err_cases[] = {
    { "unknown resilience4j key",
      "resilience4j:\n  circuitbreaker:\n    instances:\n      x: {slidingWindowSiz: 5}\n",
      "t.yaml:4:11: unknown key 'slidingWindowSiz' in resilience4j.circuitbreaker.instances.x (did you mean "
      "slidingWindowSize?)" },
    { "unsupported resilience4j key",
      "resilience4j: {circuitbreaker: {configs: {default: {enableExponentialBackoff: true}}}}\n",
      "t.yaml:1:53: unknown key 'enableExponentialBackoff' in resilience4j.circuitbreaker.configs.default "
      "(meshgate supports: baseConfig, slidingWindowType, slidingWindowSize, minimumNumberOfCalls, "
      "failureRateThreshold, slowCallRateThreshold, slowCallDurationThreshold, waitDurationInOpenState, "
      "permittedNumberOfCallsInHalfOpenState, automaticTransitionFromOpenToHalfOpenEnabled, "
      "maxWaitDurationInHalfOpenState, recordExceptions, ignoreExceptions, registerHealthIndicator, "
      "allowHealthIndicatorToFail, eventConsumerBufferSize, writableStackTraceEnabled)" },
    { "resilience4j retry module",
      "resilience4j:\n  retry: {instances: {x: {maxAttempts: 3}}}\n",
      "t.yaml:2:3: unknown key 'retry' in resilience4j: meshgate reads resilience4j.circuitbreaker and "
      "resilience4j.timelimiter (for the CircuitBreaker filter); use the Retry filter or the native "
      "retry/connection_pool blocks for the rest" },
    { "unknown timelimiter key",
      "resilience4j:\n  timelimiter:\n    configs:\n      default: {timeout: 2s}\n",
      "t.yaml:4:17: unknown key 'timeout' in resilience4j.timelimiter.configs.default (meshgate supports: "
      "baseConfig, timeoutDuration, cancelRunningFuture)" },
    { "bad duration",
      "resilience4j:\n  timelimiter:\n    instances:\n      x: {timeoutDuration: 2 seconds}\n",
      "t.yaml:4:28: timeoutDuration: expected a duration of at least 1ms and at most 1 day (e.g. 500ms, 2s, PT2S; a "
      "plain number is ms), got '2 seconds'" },
    { "bad rate",
      "resilience4j:\n  circuitbreaker:\n    instances:\n      x: {failureRateThreshold: 150}\n",
      "t.yaml:4:33: failureRateThreshold: expected a percentage in (0, 100], got '150'" },
    { "unknown exception",
      "resilience4j:\n  circuitbreaker:\n    instances:\n      x:\n        recordExceptions:\n"
      "          - com.example.MyException\n",
      "t.yaml:6:13: recordExceptions: unknown exception class 'com.example.MyException' (meshgate maps "
      "java.io.IOException, java.util.concurrent.TimeoutException, java.net.ConnectException, "
      "java.net.UnknownHostException, reactor.netty.http.client.PrematureCloseException, java.lang.Exception and a "
      "few more; see docs/resilience-config.md)" },
    { "unknown baseConfig",
      "resilience4j:\n  circuitbreaker:\n    instances:\n      x: {baseConfig: nope}\n",
      "t.yaml:4:23: baseConfig: no config 'nope' under resilience4j.circuitbreaker.configs" },
    { "baseConfig cycle",
      "resilience4j:\n  circuitbreaker:\n    configs:\n      p: {baseConfig: q}\n      q: {baseConfig: p}\n",
      "t.yaml:5:10: resilience4j.circuitbreaker.configs.q: baseConfig chain too deep (a cycle?)" },
    { "fallback lb",
      SVC_ROUTE("          filters:\n            - {name: CircuitBreaker, args: {fallbackUri: 'lb://other'}}\n"),
      "t.yaml:10:58: CircuitBreaker: fallbackUri: only forward:/path is supported (as in Spring Cloud "
      "Gateway), got 'lb://other'; to fall back to another service, add a route for the path and forward "
      "to it" },
    { "fallback matches no route",
      SVC_ROUTE("          filters: ['CircuitBreaker=cb,forward:/nowhere']\n"),
      "t.yaml:6:11: route 'a': circuit breaker fallback forward:/nowhere matches no other route; add one "
      "for it (e.g. a native route with path: /nowhere and respond: {status: 503, body: ...})" },
    { "fallback to itself",
      SVC_ROUTE("          filters: ['CircuitBreaker=cb,forward:/a/fb']\n"),
      "t.yaml:6:11: route 'a': circuit breaker fallback forward:/a/fb matches no other route; add one for "
      "it (e.g. a native route with path: /a/fb and respond: {status: 503, body: ...})" },
    { "status series",
      SVC_ROUTE("          filters:\n            - {name: CircuitBreaker, args: {statusCodes: [5XX]}}\n"),
      "t.yaml:10:58: CircuitBreaker: statusCodes: expected a status code 100..599 or a name like "
      "INTERNAL_SERVER_ERROR, got '5XX' (Spring ignores anything else, e.g. a series)" },
    { "two breakers",
      "spring:\n  cloud:\n    discovery: {client: {simple: {instances: {svc: [{uri: 'http://127.0.0.1:9001'}]}}}}\n"
      "    gateway:\n      default-filters: [CircuitBreaker]\n      routes:\n"
      "        - {id: a, uri: lb://svc, filters: [CircuitBreaker=x]}\n",
      "t.yaml:7:44: route 'a': one CircuitBreaker per route (this one is the second, counting "
      "default-filters)" },
    { "statusCodes never recorded",
      SVC_ROUTE("          filters: [{name: CircuitBreaker, args: {name: x, statusCodes: [500]}}]\n"
                "resilience4j: {circuitbreaker: {instances: {x: {recordExceptions: java.io.IOException}}}}\n"),
      "t.yaml:9:73: CircuitBreaker 'x': statusCodes can never count as failures: "
      "recordExceptions/ignoreExceptions of its resilience4j config leave out "
      "CircuitBreakerStatusCodeException" },
    { "retry series",
      SVC_ROUTE("          filters: [{name: Retry, args: {series: [SERVER_ERRORS]}}]\n"),
      "t.yaml:9:50: Retry: series: unknown series (expected INFORMATIONAL, SUCCESSFUL, REDIRECTION, "
      "CLIENT_ERROR or SERVER_ERROR) 'SERVER_ERRORS'" },
    { "retry backoff key",
      SVC_ROUTE("          filters: [{name: Retry, args: {backoff: {first: 5ms}}}]\n"),
      "t.yaml:9:52: unknown argument 'backoff.first' for filter 'Retry'" },
    { "retry no methods",
      SVC_ROUTE("          filters: [{name: Retry, args: {methods: [FETCH]}}]\n"),
      "t.yaml:9:51: Retry: methods: unknown method 'FETCH'" },
    { "native mixed forms",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n"
      "  - {id: a, to: c, circuit_breaker: {failure_threshold: 3, sliding_window_size: 10}}\n",
      "t.yaml:3:81: circuit_breaker: the simple form (failure_threshold, timeout, reset_timeout) cannot be "
      "mixed with the sliding-window keys" },
    { "native bad window type",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n"
      "  - {id: a, to: c, circuit_breaker: {sliding_window_type: sliding}}\n",
      "t.yaml:3:59: sliding_window_type: unknown value 'sliding' (expected one of: count_based, time_based)" },
    { "native bad status",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n"
      "  - {id: a, to: c, circuit_breaker: {failure_statuses: [500, 504-502]}}\n",
      "t.yaml:3:62: failure_statuses: expected a status 100..599, a range like 502-504 or a class like "
      "5xx, got '504-502'" },
    { "native unknown breaker key",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n  - {id: a, to: c, circuit_breaker: {window: 5}}\n",
      "t.yaml:3:38: unknown key 'window' in route circuit_breaker (expected one of: name, sliding_window_type, "
      "sliding_window_size, minimum_calls, failure_rate_threshold, slow_call_rate_threshold, slow_call_duration, "
      "wait_in_open, half_open_calls, automatic_half_open, max_wait_in_half_open, failure_statuses, failure_kinds, "
      "failure_threshold, timeout, reset_timeout, fallback, time_limit, resume_without_error)" },
    { "cluster breaker fallback",
      "clusters: {c: {endpoints: [1.1.1.1:80], circuit_breaker: {fallback: /x}}}\n",
      "t.yaml:1:59: unknown key 'fallback' in cluster circuit_breaker (expected one of: sliding_window_type, "
      "sliding_window_size, minimum_calls, failure_rate_threshold, slow_call_rate_threshold, slow_call_duration, "
      "wait_in_open, half_open_calls, automatic_half_open, max_wait_in_half_open, failure_statuses, failure_kinds, "
      "failure_threshold, timeout, reset_timeout)" },
    { "native retry token",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n  - {id: a, to: c, retry: {retry_on: [5xx, sometimes]}}\n",
      "t.yaml:3:44: retry_on: unknown value 'sometimes' (expected 5xx, gateway-error, reset, connect-failure, "
      "retriable-4xx, refused-stream, retriable-status-codes or a status code)" },
    { "native retry both counts",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n  - {id: a, to: c, retry: {attempts: 2, num_retries: 2}}\n",
      "t.yaml:3:54: retry: attempts (Istio) and num_retries (Envoy) mean the same thing (retries after the "
      "first try); give one" },
    { "native retry backoff",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n"
      "  - {id: a, to: c, retry: {backoff: {base: 100ms, max: 10ms}}}\n",
      "t.yaml:3:56: backoff.max must be at least backoff.base" },
    { "respond and to",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n  - {id: a, to: c, respond: {status: 200}}\n",
      "t.yaml:3:29: a route takes exactly one destination: 'to', 'uri' or 'respond'" },
    { "respond bad status",
      "routes:\n  - {id: a, respond: {status: 99}}\n",
      "t.yaml:2:31: status: '99' is out of range (200..599)" },
    { "respond framing header",
      "routes:\n  - {id: a, respond: {headers: {Content-Length: 5}}}\n",
      "t.yaml:2:33: respond.headers: Content-Length is set by meshgate itself" },
    { "respond with breaker",
      "routes:\n  - {id: a, respond: {status: 200}, circuit_breaker: {}}\n",
      "t.yaml:2:5: route 'a' answers with respond: and has no upstream, so it takes no circuit breaker or retry" },
    { "shared native name, different settings",
      "clusters: {c: {endpoints: [1.1.1.1:80]}}\nroutes:\n"
      "  - {id: a, path: /a, to: c, circuit_breaker: {name: s, sliding_window_size: 10}}\n"
      "  - {id: b, path: /b, to: c, circuit_breaker: {name: s, sliding_window_size: 20}}\n",
      "t.yaml:4:5: route 'b' shares circuit breaker 's' with route 'a' but with different settings (one breaker, one "
      "config)" },
    { "outlier percent",
      "clusters: {c: {endpoints: [1.1.1.1:80], outlier_detection: {max_ejection_percent: 101}}}\n",
      "t.yaml:1:83: max_ejection_percent: '101' is out of range (0..100)" },
    { "pool key",
      "clusters: {c: {endpoints: [1.1.1.1:80], connection_pool: {maxConnections: 1}}}\n",
      "t.yaml:1:59: unknown key 'maxConnections' in cluster connection_pool (expected one of: max_connections, "
      "max_requests, max_pending, max_requests_per_connection)" },
    { "health without path",
      "clusters: {c: {endpoints: [1.1.1.1:80], health_check: {interval: 5s}}}\n",
      "t.yaml:1:55: missing required key 'path' in cluster health_check" },
    { "health timeout over interval",
      "clusters: {c: {endpoints: [1.1.1.1:80], health_check: {path: /h, interval: 1s, timeout: 2s}}}\n",
      "t.yaml:1:55: health_check: timeout (2000 ms) must not exceed interval (1000 ms)" },
    { "retry budget percent",
      "clusters: {c: {endpoints: [1.1.1.1:80], retry_budget: {percent: 200}}}\n",
      "t.yaml:1:65: percent: '200' is out of range (0..100)" },
};

static void test_errors(void **state)
{
    (void)state;
    MG_CFG_ERRORS_CHECK(err_cases, "t.yaml", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_circuit_breaker),
        cmocka_unit_test(test_resilience4j_merging),
        cmocka_unit_test(test_default_filters_and_retry),
        cmocka_unit_test(test_spring_retry),
        cmocka_unit_test(test_native_blocks),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
