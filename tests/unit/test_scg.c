/* test_scg: the Spring Cloud Gateway dialect. The seed's ConfigMap loads
 * verbatim with a second file adding instances and ports; errors point at
 * the right line and column (also inside the ConfigMap's block scalar);
 * `config print` output loads back to the same config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include "core/err.h"
#include "gw_harness.h"
#include "cfg_errors.h"
#include "repo_file.h"

static int load2(const char *a, const char *b, mg_config_t **cfg, char *err, size_t errlen)
{
    mg_config_buffer_t bufs[2] = { { "seed-gateway.yaml", a, strlen(a) }, { "seed-local.yaml", b, b ? strlen(b) : 0 } };
    return mg_config_load_buffers(bufs, b ? 2 : 1, cfg, err, errlen);
}

/* The seed minus CircuitBreaker (the breaker itself is tested by
 * test_seed_with_breaker here and test_resilience_cfg.c). */
static char *strip_resilience(const char *seed)
{
    static char out[65536];
    size_t o = 0;
    const char *p = seed;
    int skip = 0;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t l = nl ? (size_t)(nl - p + 1) : strlen(p);
        if (strstr(p, "- name: CircuitBreaker") == strchr(p, '-') && strstr(p, "- name: CircuitBreaker") && strstr(p, "- name: CircuitBreaker") < p + l)
            skip = 4;
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

static void test_seed_with_breaker(void **state)
{
    (void)state;
    const char *seed = mg_test_slurp("examples/seed-gateway.yaml"), *local = mg_test_slurp("examples/seed-local.yaml");
    assert_non_null(seed);
    assert_non_null(local);
    mg_config_t *cfg = NULL;
    char err[512] = "";
    if (load2(seed, local, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    const mg_route_cfg_t *r = &cfg->routes[0];
    assert_true(r->has_breaker);
    assert_string_equal(r->breaker_name, "user-service-cb");
    assert_string_equal(r->fallback_path, "/fallback/users");
    assert_true(cfg->routes[2].respond); /* seed-local.yaml's fallback target */
    mg_config_free(cfg);
}

static void test_seed_loads(void **state)
{
    (void)state;
    const char *seed = strip_resilience(mg_test_slurp("examples/seed-gateway.yaml")), *local = mg_test_slurp("examples/seed-local.yaml");
    mg_config_t *cfg = NULL;
    char err[512] = "";
    if (load2(seed, local, &cfg, err, sizeof err) != 0) fail_msg("%s\n%s", err, seed);
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].host, "0.0.0.0");
    assert_int_equal(cfg->listen[0].port, 8080);
    assert_int_equal(cfg->nroutes, 3); /* + seed-local.yaml's /fallback/users respond route */
    assert_int_equal(cfg->nclusters, 2);
    const mg_route_cfg_t *r = &cfg->routes[0];
    assert_string_equal(r->id, "user-service");
    assert_string_equal(r->uri, "lb://user-service");
    assert_string_equal(cfg->clusters[r->cluster_index].name, "user-service");
    assert_int_equal(cfg->clusters[r->cluster_index].nendpoints, 2);
    assert_int_equal(cfg->clusters[r->cluster_index].endpoints[1].port, 9002);
    assert_string_equal(cfg->clusters[r->cluster_index].endpoints[1].labels[0].key, "zone");
    assert_string_equal(cfg->clusters[r->cluster_index].endpoints[1].labels[0].value, "b");
    /* positions point into the outer ConfigMap file */
    assert_int_equal(r->pos.line, 15);
    assert_int_equal(r->pos.col, 15);
    assert_int_equal(r->predicates.n, 1);
    assert_string_equal(r->predicates.v[0].name, "Path");
    assert_string_equal(r->predicates.v[0].args[0].values[0], "/api/users/**");
    assert_int_equal(r->predicates.v[0].pos.line, 18);
    assert_int_equal(r->predicates.v[0].pos.col, 19);
    assert_int_equal(r->filters.n, 2);
    assert_string_equal(r->filters.v[1].name, "AddRequestHeader");
    assert_string_equal(r->filters.v[1].args[0].key, "name");
    assert_string_equal(r->filters.v[1].args[1].values[0], "user-service");

    mg_route_table_t *t;
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    static mg_http_msg_t m;
    const char raw[] = "GET /api/users/42 HTTP/1.1\r\nHost: gw\r\n\r\n";
    assert_true(mg_http_parse_request(raw, sizeof raw - 1, &m, NULL) > 0);
    mg_path_vars_t vars;
    const mg_route_t *rt = mg_route_match(t, &(mg_match_ctx_t){ .req = &m }, &vars);
    assert_non_null(rt);
    assert_string_equal(rt->cfg->id, "user-service");
    mg_arena_t *a = mg_arena_new(1024, 65536);
    mg_req_view_t rv = { .arena = a, .msg = &m, .path = m.path, .query = m.query, .host = m.host, .vars = vars };
    assert_int_equal(mg_filters_request(rt, &rv), 0);
    assert_true(mg_slice_eq(rv.path, MG_SLICE_LIT("/42")));
    assert_true(mg_slice_eq(mg_hdr_get(&rv.headers, MG_SLICE_LIT("x-service-name"))->value, MG_SLICE_LIT("user-service")));
    mg_buf_t b;
    mg_buf_init(&b);
    mg_route_hit(rt, 0);
    mg_route_describe_json(rt, &b);
    assert_non_null(strstr(b.p, "\"id\":\"user-service\""));
    assert_non_null(strstr(b.p, "\"predicates\":[{\"name\":\"Path\",\"args\":{\"patterns\":[\"/api/users/**\"]}}]"));
    assert_non_null(strstr(b.p, "{\"name\":\"StripPrefix\",\"args\":{\"parts\":\"2\"}}"));
    assert_non_null(strstr(b.p, "\"destination\":{\"cluster\":\"user-service\",\"uri\":\"lb://user-service\"}"));
    assert_non_null(strstr(b.p, "\"matches\":1}"));
    mg_buf_free(&b);
    mg_arena_free(a);
    mg_route_table_free(t);
    mg_config_free(cfg);
}

/* print -> load -> print is a fixed point, and the reload has the same routes */
static void test_print_roundtrip(void **state)
{
    (void)state;
    const char *seed = strip_resilience(mg_test_slurp("examples/seed-gateway.yaml")), *local = mg_test_slurp("examples/seed-local.yaml");
    const char *extra =
        "management: {server: {port: 9911}}\n"
        "spring:\n  cloud:\n    gateway:\n      default-filters: [SecureHeaders]\n"
        "      server:\n        webflux:\n          routes:\n"
        "            - id: direct\n              uri: http://127.0.0.1:7000\n              order: -5\n"
        "              predicates: ['Path=/d/{x}', 'Host=**.example.org', 'Method=GET,HEAD']\n"
        "              filters:\n                - 'RewritePath=/d/(?<x>.*), /$\\{x}'\n"
        "                - {name: SetStatus, args: {status: 201}}\n"
        "              metadata: {response-timeout: 1500, connect-timeout: 200}\n";
    mg_config_buffer_t bufs[3] = { { "a.yaml", seed, strlen(seed) }, { "b.yaml", local, strlen(local) }, { "c.yaml", extra, strlen(extra) } };
    mg_config_t *cfg = NULL, *cfg2 = NULL;
    char err[512] = "";
    if (mg_config_load_buffers(bufs, 3, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(cfg->admin.port, 9911);
    char *out1 = NULL, *out2 = NULL;
    size_t n1 = 0, n2 = 0;
    FILE *f = open_memstream(&out1, &n1);
    assert_int_equal(mg_config_print(cfg, f), 0);
    fclose(f);
    mg_config_buffer_t pb = { "printed.yaml", out1, n1 };
    if (mg_config_load_buffers(&pb, 1, &cfg2, err, sizeof err) != 0) fail_msg("%s\n%s", err, out1);
    f = open_memstream(&out2, &n2);
    assert_int_equal(mg_config_print(cfg2, f), 0);
    fclose(f);
    assert_string_equal(out1, out2);
    assert_int_equal(cfg2->nroutes, 4);
    assert_int_equal(cfg2->nclusters, cfg->nclusters);
    for (size_t i = 0; i < cfg->nclusters; i++) assert_string_equal(cfg->clusters[i].name, cfg2->clusters[i].name);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        assert_string_equal(cfg->routes[i].id, cfg2->routes[i].id);
        assert_int_equal(cfg->routes[i].cluster_index, cfg2->routes[i].cluster_index);
        assert_int_equal(cfg->routes[i].order, cfg2->routes[i].order);
        assert_int_equal(cfg->routes[i].response_timeout_ms, cfg2->routes[i].response_timeout_ms);
    }
    const mg_route_cfg_t *d = &cfg2->routes[2];
    assert_string_equal(d->id, "direct");
    assert_int_equal(d->order, -5);
    assert_int_equal(d->connect_timeout_ms, 200);
    assert_true(cfg2->clusters[d->cluster_index].synthesized);
    assert_int_equal(cfg2->clusters[d->cluster_index].endpoints[0].port, 7000);
    assert_int_equal(cfg2->default_filters.n, 1);
    free(out1);
    free(out2);
    mg_config_free(cfg);
    mg_config_free(cfg2);
}

static const char gw_head[] = "spring:\n  cloud:\n    gateway:\n      routes:\n        - id: r\n          uri: http://127.0.0.1:1\n";

static const mg_cfg_err_case_t errs[] = {
    { "misspelt filter", "          filters: [StripPrefx=2]\n",
      "x.yaml:7:21: unknown filter 'StripPrefx' (did you mean StripPrefix?)" },
    { "misspelt filter, expanded", "          filters:\n            - name: AddRequestHeaders\n              args: {name: a, value: b}\n",
      "x.yaml:8:21: unknown filter 'AddRequestHeaders' (did you mean AddRequestHeader?)" },
    { "unknown filter", "          filters: [Frobnicate=1]\n", "x.yaml:7:21: unknown filter 'Frobnicate'" },
    { "misspelt predicate", "          predicates: ['Paht=/x']\n",
      "x.yaml:7:24: unknown predicate 'Paht' (did you mean Path?)" },
    { "unknown argument", "          filters:\n            - {name: StripPrefix, args: {prts: 1}}\n",
      "x.yaml:8:42: unknown argument 'prts' for filter 'StripPrefix' (did you mean parts?)" },
    { "too many arguments", "          filters: ['AddRequestHeader=a,b,c']\n",
      "x.yaml:7:21: AddRequestHeader: too many arguments (3 given; expected name, value)" },
    { "missing argument", "          filters: ['AddRequestHeader=a']\n",
      "x.yaml:7:21: filter 'AddRequestHeader': missing argument 'value' (arguments: name, value)" },
    { "circuit breaker lb fallback", "          filters:\n            - name: CircuitBreaker\n              args: {name: cb, fallbackUri: 'lb://x'}\n",
      "x.yaml:9:45: CircuitBreaker: fallbackUri: only forward:/path is supported (as in Spring Cloud Gateway), got "
      "'lb://x'; to fall back to another service, add a route for the path and forward to it" },
    { "rate limiter without args", "          filters: [RequestRateLimiter]\n",
      "x.yaml:7:21: RequestRateLimiter: missing the replenish rate (redis-rate-limiter.replenishRate)" },
    { "rate limiter shortcut", "          filters: ['RequestRateLimiter=10, 20']\n",
      "x.yaml:7:21: RequestRateLimiter has no shortcut form (Spring refuses 'RequestRateLimiter=...' too); write it "
      "as {name: RequestRateLimiter, args: {...}}" },
    { "retry zero", "          filters: ['Retry=0']\n",
      "x.yaml:7:28: Retry: retries: expected an integer 1..100 (Spring requires retries > 0), got '0'" },
    { "bad regex", "          filters: ['RewritePath=/a(?=b), /x']\n",
      "x.yaml:7:34: regexp: unsupported regex group '(?' (lookaround, flags)" },
    { "bad group in replacement", "          filters: ['RewritePath=/a/(?<x>.*), /$\\{y}']\n",
      "x.yaml:7:47: replacement: replacement '/$\\{y}': no group named 'y' in the regex" },
    { "bad status", "          filters: ['SetStatus=NOT_A_STATUS']\n",
      "x.yaml:7:32: status: expected a status code 100..599 or a name like BAD_REQUEST, got 'NOT_A_STATUS'" },
    { "bad strip", "          filters: ['StripPrefix=two']\n",
      "x.yaml:7:34: parts: expected an integer 0..9999, got 'two'" },
    { "bad cidr", "          predicates: ['RemoteAddr=10.0.0.0/33']\n",
      "x.yaml:7:36: bad address or CIDR '10.0.0.0/33' (expected e.g. 192.168.1.1/24)" },
    { "bad date", "          predicates: ['After=tomorrow']\n",
      "x.yaml:7:31: datetime: bad date-time 'tomorrow' (expected e.g. 2017-01-20T17:42:47.789-07:00[America/Denver])" },
    { "bad path", "          predicates: ['Path=/a/**/b']\n", "x.yaml:7:30: bad path pattern '/a/**/b': '**' is only allowed as the last segment" },
    { "unknown route key", "          uris: x\n",
      "x.yaml:7:11: unknown key 'uris' in route (expected one of: id, order, predicates, filters, uri, metadata)" },
    { "unknown metadata", "          metadata: {timeout: 5}\n",
      "x.yaml:7:22: unknown key 'timeout' in route metadata (expected one of: response-timeout, connect-timeout)" },
    { "unknown gateway key", "      httpclient: {connect-timeout: 5}\n",
      "x.yaml:7:7: unknown key 'httpclient' in spring.cloud.gateway (expected one of: default-filters, discovery, loadbalancer, routes, server)" },
};

static void test_errors(void **state)
{
    (void)state;
    MG_CFG_ERRORS_CHECK(errs, "x.yaml", gw_head);
}

static const mg_cfg_err_case_t errs2[] = {
    { "unknown service", "spring.cloud.gateway.routes: x\n", "x.yaml:1:1: unknown key 'spring.cloud.gateway.routes' at top level "
      "(expected one of: listen, admin, workers, limits, timeouts, access_log, redis, clusters, discovery, server, management, spring, "
      "default_filters, routes, resilience4j)" },
    { "lb unknown", "spring: {cloud: {gateway: {routes: [{id: a, uri: 'lb://nope'}]}}}\ndiscovery: {registry: false}\n",
      "x.yaml:1:50: uri: unknown service 'nope'" },
    { "https", "spring: {cloud: {gateway: {routes: [{id: a, uri: 'https://x:1'}]}}}\n",
      "x.yaml:1:50: uri: TLS to upstreams is not supported yet ('https://x:1')" },
    { "forward", "spring: {cloud: {gateway: {routes: [{id: a, uri: 'forward:/x'}]}}}\n",
      "x.yaml:1:50: uri: 'forward:/x' is not supported (expected lb://SERVICE or http://host:port)" },
    { "uri path", "spring: {cloud: {gateway: {routes: [{id: a, uri: 'http://x:1/p'}]}}}\n",
      "x.yaml:1:50: uri: only scheme, host and port are used for routing; remove '/p' (use PrefixPath or SetPath to "
      "change the path)" },
    { "no uri", "spring: {cloud: {gateway: {routes: [{id: a}]}}}\n",
      "x.yaml:1:37: route needs a destination: 'uri: lb://SERVICE' or 'uri: http://host:port'" },
    { "listen and server.port", "listen: 1\nserver: {port: 2}\n",
      "x.yaml:2:16: server.port and listen both set the listener; keep one" },
    { "bad instance", "spring: {cloud: {discovery: {client: {simple: {instances: {svc: [{url: 'http://a:1'}]}}}}}}\n",
      "x.yaml:1:67: unknown key 'url' in discovery instance (expected one of: uri, host, port, secure, metadata, "
      "instance-id, instanceId)" },
    { "duplicate service", "clusters: {svc: {endpoints: ['1.1.1.1:1']}}\n"
      "spring: {cloud: {discovery: {client: {simple: {instances: {svc: [{uri: 'http://a:1'}]}}}}}}\n",
      "x.yaml:2:60: duplicate cluster 'svc' (first at x.yaml:1:12)" },
    { "configmap bad data key", "apiVersion: v1\nkind: ConfigMap\ndata:\n  app.properties: |\n    a=b\n",
      "x.yaml:4:3: ConfigMap data 'app.properties': only YAML files (.yml, .yaml) can be loaded" },
    { "configmap inner error", "apiVersion: v1\nkind: ConfigMap\ndata:\n  gw.yml: |\n    server:\n\n      portt: 1\n",
      "x.yaml:7:7: unknown key 'portt' in server (expected one of: address, port)" },
    { "configmap inner syntax", "kind: ConfigMap\ndata:\n  gw.yml: |\n      a: [\n",
      "x.yaml:5:7: did not find expected node content (while parsing a flow node at 5:7)" },
};

static void test_errors_top(void **state)
{
    (void)state;
    MG_CFG_ERRORS_CHECK(errs2, "x.yaml", NULL);
}

/* Spring 5 key, management port, host+port instances, -1 turns admin off */
static void test_dialect_keys(void **state)
{
    (void)state;
    const char *y = "server: {port: 8081, address: 127.0.0.1}\nmanagement: {server: {port: -1}}\n"
                    "spring:\n  application: {name: gw}\n  cloud:\n"
                    "    discovery: {client: {simple: {instances: {svc: [{host: 10.0.0.1, port: 81, instance-id: i1}]}}}}\n"
                    "    gateway:\n      server:\n        webflux:\n"
                    "          default-filters: ['AddResponseHeader=X-Gw, 1']\n"
                    "          routes: [{id: a, uri: 'lb://svc', predicates: ['Path=/a/**']}]\n";
    mg_config_buffer_t b = { "x.yaml", y, strlen(y) };
    mg_config_t *cfg = NULL;
    char err[512] = "";
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_int_equal(cfg->listen[0].port, 8081);
    assert_false(cfg->admin_enabled);
    assert_int_equal(cfg->nclusters, 1);
    assert_string_equal(cfg->clusters[0].endpoints[0].host, "10.0.0.1");
    assert_string_equal(cfg->clusters[0].endpoints[0].labels[0].value, "i1");
    assert_int_equal(cfg->default_filters.n, 1);
    assert_int_equal(cfg->nroutes, 1);
    mg_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_with_breaker),
        cmocka_unit_test(test_seed_loads),
        cmocka_unit_test(test_print_roundtrip),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_errors_top),
        cmocka_unit_test(test_dialect_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
