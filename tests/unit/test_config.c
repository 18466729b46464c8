/* test_config: the native config loader. Happy paths check the resulting
 * mg_config_t; error cases check the exact "file:line:col: message". */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "config/config.h"
#include "config/yaml_tree.h"
#include "core/err.h"
#include "cfg_errors.h"
#include "repo_file.h"

static mg_config_t *load1(const char *name, const char *yaml, char *err, size_t errlen)
{
    mg_config_buffer_t b = { name, yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    int rc = mg_config_load_buffers(&b, 1, &cfg, err, errlen);
    if (rc == 0) assert_non_null(cfg);
    else assert_null(cfg);
    return cfg;
}

static mg_config_t *must_load(const char *yaml)
{
    char err[512] = "";
    mg_config_t *cfg = load1("t.yaml", yaml, err, sizeof err);
    if (!cfg) fail_msg("load failed: %s", err);
    return cfg;
}

static const char issue_example[] =
    "listen: 127.0.0.1:8080        # one address or a list\n"
    "admin: 127.0.0.1:9901         # admin API; loopback unless told otherwise\n"
    "workers: auto                 # one per core, or a number\n"
    "routes:                       # first match wins, in order\n"
    "  - id: users\n"
    "    path: /api/users/**       # Spring PathPattern syntax: ?, *, **, {name}\n"
    "    to: user-service          # a cluster\n"
    "clusters:\n"
    "  user-service:\n"
    "    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]\n"
    "    lb: round_robin           # round_robin | least_request (power of two choices) | random\n";

static void test_issue_example(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load(issue_example);
    assert_int_equal(cfg->nfiles, 1);
    assert_string_equal(cfg->files[0], "t.yaml");
    assert_int_equal(cfg->nlisten, 1);
    assert_string_equal(cfg->listen[0].host, "127.0.0.1");
    assert_int_equal(cfg->listen[0].port, 8080);
    assert_ptr_equal(cfg->listen[0].pos.file, cfg->files[0]);
    assert_int_equal(cfg->listen[0].pos.line, 1);
    assert_int_equal(cfg->listen[0].pos.col, 9);
    assert_true(cfg->admin_enabled);
    assert_string_equal(cfg->admin.host, "127.0.0.1");
    assert_int_equal(cfg->admin.port, 9901);
    assert_int_equal(cfg->workers, (uint32_t)sysconf(_SC_NPROCESSORS_ONLN));
    assert_int_equal(cfg->nroutes, 1);
    assert_string_equal(cfg->routes[0].id, "users");
    assert_string_equal(cfg->routes[0].path, "/api/users/**");
    assert_string_equal(cfg->routes[0].cluster, "user-service");
    assert_int_equal(cfg->routes[0].cluster_index, 0);
    assert_int_equal(cfg->routes[0].pos.line, 5);
    assert_int_equal(cfg->routes[0].pos.col, 5);
    assert_int_equal(cfg->routes[0].path_pos.line, 6);
    assert_int_equal(cfg->routes[0].path_pos.col, 11);
    assert_int_equal(cfg->nclusters, 1);
    const mg_cluster_cfg_t *c = &cfg->clusters[0];
    assert_string_equal(c->name, "user-service");
    assert_int_equal(c->pos.line, 9);
    assert_int_equal(c->pos.col, 3);
    assert_int_equal(c->nendpoints, 2);
    assert_string_equal(c->endpoints[0].host, "127.0.0.1");
    assert_int_equal(c->endpoints[0].port, 9001);
    assert_int_equal(c->endpoints[1].port, 9002);
    assert_int_equal(c->lb, MG_LB_ROUND_ROBIN);
    /* defaults */
    assert_int_equal(c->connect_timeout_ms, 2000);
    assert_int_equal(c->response_timeout_ms, 30000);
    assert_int_equal(c->max_idle, 64);
    assert_int_equal(c->idle_timeout_ms, 30000);
    assert_int_equal(cfg->max_request_line, 8192);
    assert_int_equal(cfg->max_header_bytes, 32768);
    assert_int_equal(cfg->max_headers, 100);
    assert_true(cfg->max_body_bytes == 0);
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->header_timeout_ms, 10000);
    assert_int_equal(cfg->idle_timeout_ms, 60000);
    assert_int_equal(cfg->body_timeout_ms, 60000);
    assert_int_equal(cfg->connect_timeout_ms, 2000);
    assert_int_equal(cfg->response_timeout_ms, 30000);
    assert_int_equal(cfg->drain_timeout_ms, 30000);
    assert_string_equal(cfg->access_log, "stderr");
    mg_config_free(cfg);
}

static void test_empty_is_defaults(void **state)
{
    (void)state;
    const char *inputs[] = { "", "\n# only a comment\n", "---\n", "~\n" };
    for (size_t i = 0; i < sizeof inputs / sizeof inputs[0]; i++) {
        mg_config_t *cfg = must_load(inputs[i]);
        assert_int_equal(cfg->nlisten, 1);
        assert_string_equal(cfg->listen[0].host, "0.0.0.0");
        assert_int_equal(cfg->listen[0].port, 8080);
        assert_true(cfg->admin_enabled);
        assert_string_equal(cfg->admin.host, "127.0.0.1");
        assert_int_equal(cfg->nroutes, 0);
        assert_int_equal(cfg->nclusters, 0);
        assert_true(cfg->workers >= 1);
        mg_config_free(cfg);
    }
    /* zero files: defaults as well */
    mg_config_t *cfg = NULL;
    char err[64];
    assert_int_equal(mg_config_load_buffers(NULL, 0, &cfg, err, sizeof err), 0);
    assert_int_equal(cfg->nfiles, 0);
    mg_config_free(cfg);
}

static void test_addresses(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load("listen: [127.0.0.1:80, '[::1]:8443', ':8080', 9000, localhost:81, \"7000\"]\n"
                                 "admin: 9902\n"
                                 "clusters:\n"
                                 "  c: {endpoints: [':9001', 9002, 'svc.local:80', '[fe80::1]:1']}\n");
    assert_int_equal(cfg->nlisten, 6);
    static const struct { const char *host; int port; } want[] = {
        { "127.0.0.1", 80 }, { "::1", 8443 }, { "0.0.0.0", 8080 }, { "0.0.0.0", 9000 }, { "localhost", 81 },
        { "0.0.0.0", 7000 },
    };
    for (size_t i = 0; i < 6; i++) {
        assert_string_equal(cfg->listen[i].host, want[i].host);
        assert_int_equal(cfg->listen[i].port, want[i].port);
    }
    assert_string_equal(cfg->admin.host, "127.0.0.1"); /* admin stays on loopback */
    assert_int_equal(cfg->admin.port, 9902);
    const mg_cluster_cfg_t *c = &cfg->clusters[0];
    assert_int_equal(c->nendpoints, 4);
    assert_string_equal(c->endpoints[0].host, "127.0.0.1");
    assert_int_equal(c->endpoints[1].port, 9002);
    assert_string_equal(c->endpoints[2].host, "svc.local");
    assert_string_equal(c->endpoints[3].host, "fe80::1");
    mg_config_free(cfg);

    cfg = must_load("admin: off\nworkers: 3\naccess_log: off\n");
    assert_false(cfg->admin_enabled);
    assert_int_equal(cfg->workers, 3);
    assert_null(cfg->access_log);
    mg_config_free(cfg);

    cfg = must_load("admin: '0.0.0.0:9901'\naccess_log: /var/log/meshgate.log\n");
    assert_true(cfg->admin_enabled);
    assert_string_equal(cfg->admin.host, "0.0.0.0");
    assert_string_equal(cfg->access_log, "/var/log/meshgate.log");
    mg_config_free(cfg);
}

static void test_limits_timeouts(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load("limits:\n"
                                 "  max_request_line: 4k\n"
                                 "  max_header_bytes: 65536\n"
                                 "  max_headers: 128\n"
                                 "  max_body: 10m\n"
                                 "  max_connections: 50000\n"
                                 "timeouts:\n"
                                 "  header: 500ms\n"
                                 "  idle: 2s\n"
                                 "  body: 1m\n"
                                 "  connect: 250\n"
                                 "  response: '1m30s'\n"
                                 "  drain: 0\n"
                                 "clusters:\n"
                                 "  a: {endpoints: [1.2.3.4:80]}\n"
                                 "  b:\n"
                                 "    endpoints: 1.2.3.4:81\n"
                                 "    lb: least_request\n"
                                 "    connect_timeout: 1s\n"
                                 "    response_timeout: 1h\n"
                                 "    max_idle: 0\n"
                                 "    idle_timeout: 5s\n"
                                 "  c: {endpoints: [1.2.3.4:82], lb: random}\n");
    assert_int_equal(cfg->max_request_line, 4096);
    assert_int_equal(cfg->max_header_bytes, 65536);
    assert_int_equal(cfg->max_headers, 128);
    assert_true(cfg->max_body_bytes == 10ull << 20);
    assert_int_equal(cfg->max_connections, 50000);
    assert_int_equal(cfg->header_timeout_ms, 500);
    assert_int_equal(cfg->idle_timeout_ms, 2000);
    assert_int_equal(cfg->body_timeout_ms, 60000);
    assert_int_equal(cfg->connect_timeout_ms, 250);
    assert_int_equal(cfg->response_timeout_ms, 90000);
    assert_int_equal(cfg->drain_timeout_ms, 0);
    assert_int_equal(cfg->nclusters, 3);
    /* cluster timeouts default to the global ones */
    assert_int_equal(cfg->clusters[0].connect_timeout_ms, 250);
    assert_int_equal(cfg->clusters[0].response_timeout_ms, 90000);
    assert_int_equal(cfg->clusters[1].lb, MG_LB_LEAST_REQUEST);
    assert_int_equal(cfg->clusters[1].connect_timeout_ms, 1000);
    assert_int_equal(cfg->clusters[1].response_timeout_ms, 3600000);
    assert_int_equal(cfg->clusters[1].max_idle, 0);
    assert_int_equal(cfg->clusters[1].idle_timeout_ms, 5000);
    assert_int_equal(cfg->clusters[1].nendpoints, 1);
    assert_int_equal(cfg->clusters[2].lb, MG_LB_RANDOM);
    mg_config_free(cfg);

    static const struct { const char *v; uint64_t bytes; } sizes[] = {
        { "0", 0 }, { "512k", 512 << 10 }, { "512K", 512 << 10 }, { "1g", 1ull << 30 }, { "1GiB", 1ull << 30 },
        { "2mb", 2 << 20 }, { "100b", 100 }, { "'77'", 77 }, { "3t", 3ull << 40 },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char y[64];
        snprintf(y, sizeof y, "limits: {max_body: %s}\n", sizes[i].v);
        cfg = must_load(y);
        if (cfg->max_body_bytes != sizes[i].bytes) fail_msg("%s: %llu", sizes[i].v, (unsigned long long)cfg->max_body_bytes);
        mg_config_free(cfg);
    }
}

static void test_merge_keys(void **state)
{
    (void)state;
    mg_config_t *cfg = must_load("clusters:\n"
                                 "  a: &base\n"
                                 "    endpoints: [10.0.0.1:80]\n"
                                 "    lb: random\n"
                                 "    max_idle: 5\n"
                                 "  b:\n"
                                 "    <<: *base\n"
                                 "    max_idle: 7\n"
                                 "routes:\n"
                                 "  - {path: /a/**, to: a}\n"
                                 "  - {path: /b, to: b}\n");
    assert_int_equal(cfg->nclusters, 2);
    assert_int_equal(cfg->clusters[1].lb, MG_LB_RANDOM);
    assert_int_equal(cfg->clusters[1].max_idle, 7);
    assert_int_equal(cfg->clusters[1].nendpoints, 1);
    assert_string_equal(cfg->routes[0].id, "route-1");
    assert_string_equal(cfg->routes[1].id, "route-2");
    assert_int_equal(cfg->routes[1].cluster_index, 1);
    mg_config_free(cfg);
}

static void test_merge_files(void **state)
{
    (void)state;
    const char *base = "listen: [127.0.0.1:8080, 127.0.0.1:8081]\n"
                       "timeouts: {connect: 1s, idle: 5s}\n"
                       "routes:\n"
                       "  - id: users\n"
                       "    path: /api/users/**\n"
                       "    to: user-service\n"
                       "clusters:\n"
                       "  user-service:\n"
                       "    endpoints: [127.0.0.1:9001, 127.0.0.1:9002]\n"
                       "    lb: least_request\n"
                       "  order-service:\n"
                       "    endpoints: [127.0.0.1:9101]\n";
    const char *over = "listen: 127.0.0.1:9090\n"
                       "timeouts: {connect: 3s}\n"
                       "routes:          # sequences replace whole: repeat 'users'\n"
                       "  - id: users\n"
                       "    path: /api/users/**\n"
                       "    to: user-service\n"
                       "  - id: orders\n"
                       "    path: /api/orders/{id}\n"
                       "    to: order-service\n"
                       "clusters:\n"
                       "  user-service:\n"
                       "    endpoints: [10.0.0.5:80]\n";
    mg_config_buffer_t b[2] = { { "base.yaml", base, strlen(base) }, { "prod.yaml", over, strlen(over) } };
    mg_config_t *cfg = NULL;
    char err[256] = "";
    if (mg_config_load_buffers(b, 2, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(cfg->nfiles, 2);
    assert_int_equal(cfg->nlisten, 1);
    assert_int_equal(cfg->listen[0].port, 9090);
    assert_string_equal(cfg->listen[0].pos.file, "prod.yaml");
    assert_int_equal(cfg->connect_timeout_ms, 3000);
    assert_int_equal(cfg->idle_timeout_ms, 5000); /* kept from base */
    assert_int_equal(cfg->nroutes, 2);
    assert_string_equal(cfg->routes[1].id, "orders");
    assert_string_equal(cfg->routes[1].pos.file, "prod.yaml");
    assert_int_equal(cfg->nclusters, 2);
    const mg_cluster_cfg_t *u = &cfg->clusters[0];
    assert_string_equal(u->name, "user-service");
    assert_int_equal(u->nendpoints, 1); /* replaced, not appended */
    assert_string_equal(u->endpoints[0].host, "10.0.0.5");
    assert_string_equal(u->endpoints[0].pos.file, "prod.yaml");
    assert_int_equal(u->lb, MG_LB_LEAST_REQUEST); /* merged key by key */
    assert_int_equal(u->connect_timeout_ms, 3000);
    assert_string_equal(cfg->clusters[1].name, "order-service");
    assert_string_equal(cfg->clusters[1].pos.file, "base.yaml");
    assert_int_equal(cfg->routes[1].cluster_index, 1);
    mg_config_free(cfg);

    /* a later null resets to the default; an error points into the right file */
    const char *reset = "timeouts: {connect: ~}\nclusters: {order-service: {lb: bogus}}\n";
    b[1] = (mg_config_buffer_t){ "reset.yaml", reset, strlen(reset) };
    assert_int_equal(mg_config_load_buffers(b, 2, &cfg, err, sizeof err), MG_ECONFIG);
    assert_string_equal(err, "reset.yaml:2:32: lb: unknown value 'bogus' (expected one of: round_robin, "
                             "least_request, random)");
}

static const mg_cfg_err_case_t err_cases[] = {
    { "unknown top-level key", "listen: 8080\nlisen: 8081\n",
      "x.yaml:2:1: unknown key 'lisen' at top level (expected one of: listen, admin, workers, limits, timeouts, "
      "access_log, redis, clusters, discovery, server, management, spring, default_filters, routes, resilience4j)" },
    { "unknown nested key",
      "clusters:\n  c: {endpoints: [1.1.1.1:80]}\nroutes:\n  - id: r\n    to: c\n    pathh: /x\n",
      "x.yaml:6:5: unknown key 'pathh' in route (expected one of: id, path, to, order, predicates, filters, uri, "
      "metadata, circuit_breaker, retry, respond, rate_limit)" },
    { "unknown key in limits", "limits:\n  max_bodyy: 1\n",
      "x.yaml:2:3: unknown key 'max_bodyy' in limits (expected one of: max_request_line, max_header_bytes, "
      "max_headers, max_body, max_connections, rate_limit_keys)" },
    { "unknown key in cluster", "clusters:\n  c:\n    endpoint: [1.1.1.1:80]\n",
      "x.yaml:3:5: unknown key 'endpoint' in cluster (expected one of: endpoints, dns, lb, connect_timeout, "
      "response_timeout, max_idle, idle_timeout, connection_pool, outlier_detection, circuit_breaker, retry_budget, "
      "health_check)" },
    { "wrong type: map expected", "limits: [1, 2]\n", "x.yaml:1:9: limits: expected a map, got a sequence" },
    { "wrong type: seq expected", "routes: {id: x}\n", "x.yaml:1:9: routes: expected a sequence, got a map" },
    { "wrong type: quoted int", "limits: {max_headers: \"50\"}\n",
      "x.yaml:1:23: max_headers: expected an integer, got a string" },
    { "wrong type: not a number", "limits:\n  max_connections: lots\n",
      "x.yaml:2:20: max_connections: expected an integer, got 'lots'" },
    { "out of range", "limits:\n  max_headers: 129\n",
      "x.yaml:2:16: max_headers: '129' is out of range (1..128)" },
    { "negative", "limits:\n  max_headers: -1\n", "x.yaml:2:16: max_headers: must not be negative" },
    { "route not a map", "routes:\n  - /x\n", "x.yaml:2:5: expected a map in route, got a string" },
    { "dangling cluster", "clusters:\n  a: {endpoints: [1.1.1.1:80]}\nroutes:\n  - path: /x\n    to: b\ndiscovery: {registry: false}\n",
      "x.yaml:5:9: to: unknown cluster 'b'" },
    { "dangling cluster, no clusters", "routes:\n  - {path: /x, to: nowhere}\ndiscovery: {registry: false}\n",
      "x.yaml:2:20: to: unknown cluster 'nowhere'" },
    { "duplicate key", "listen: 8080\nworkers: 2\nlisten: 8081\n", "x.yaml:3:1: duplicate key 'listen' (first at 1:1)" },
    { "duplicate nested key", "clusters:\n  a:\n    endpoints: [1.1.1.1:80]\n    lb: random\n    lb: random\n",
      "x.yaml:5:5: duplicate key 'lb' (first at 4:5)" },
    { "duplicate cluster", "clusters:\n  a: {endpoints: [1.1.1.1:80]}\n  a: {endpoints: [1.1.1.1:81]}\n",
      "x.yaml:3:3: duplicate key 'a' (first at 2:3)" },
    { "bad port", "listen: 127.0.0.1:70000\n",
      "x.yaml:1:9: listen: bad port '70000' in '127.0.0.1:70000' (expected 1..65535)" },
    { "port zero", "listen: [8080, ':0']\n", "x.yaml:1:16: listen: bad port '0' in ':0' (expected 1..65535)" },
    { "no port", "listen: localhost\n",
      "x.yaml:1:9: listen: missing port in 'localhost' (expected host:port, [ipv6]:port, :port or port)" },
    { "v6 without brackets", "listen: ::1:80\n",
      "x.yaml:1:9: listen: IPv6 address '::1:80' needs brackets, e.g. [::1]:8080" },
    { "bad v6", "listen: '[zz::1]:80'\n", "x.yaml:1:9: listen: bad IPv6 address in '[zz::1]:80'" },
    { "bad host", "listen: 'a b:80'\n", "x.yaml:1:9: listen: bad host 'a b'" },
    { "duplicate listen", "listen: [8080, '0.0.0.0:8080']\n",
      "x.yaml:1:16: listen: duplicate address '0.0.0.0:8080' (first at 1:10)" },
    { "empty listen", "listen: []\n", "x.yaml:1:9: listen: needs at least one address" },
    { "bad duration", "timeouts:\n  connect: 5x\n",
      "x.yaml:2:12: connect: bad duration '5x' (expected milliseconds, or e.g. 500ms, 2s, 1m, 1h)" },
    { "bad duration unit", "timeouts: {idle: 2sec}\n",
      "x.yaml:1:18: idle: bad duration '2sec' (expected milliseconds, or e.g. 500ms, 2s, 1m, 1h)" },
    { "zero timeout", "timeouts: {header: 0}\n", "x.yaml:1:20: header: '0' is out of range (1..86400000 ms)" },
    { "duration too long", "clusters:\n  a:\n    endpoints: 1.1.1.1:80\n    idle_timeout: 2000h\n",
      "x.yaml:4:19: idle_timeout: '2000h' is out of range (1..86400000 ms)" },
    { "bad size", "limits: {max_body: 10x}\n",
      "x.yaml:1:20: max_body: bad size '10x' (expected bytes, or a number with a k, m or g suffix)" },
    { "size overflow", "limits: {max_body: 99999999999999999999}\n",
      "x.yaml:1:20: max_body: '99999999999999999999' is out of range (0..18446744073709551615 bytes)" },
    { "bad lb", "clusters:\n  a:\n    endpoints: [1.1.1.1:80]\n    lb: fastest\n",
      "x.yaml:4:9: lb: unknown value 'fastest' (expected one of: round_robin, least_request, random)" },
    { "to and uri", "clusters:\n  a: {endpoints: [1.1.1.1:80]}\nroutes:\n  - {path: /x, to: a, uri: lb://a}\n",
      "x.yaml:4:28: a route takes one destination: 'to' or 'uri', not both" },
    { "missing to", "routes:\n  - path: /x\n",
      "x.yaml:2:5: route needs a destination: 'to: CLUSTER' or 'uri: lb://SERVICE' / 'uri: http://host:port'" },
    { "missing endpoints", "clusters:\n  a:\n    lb: random\n",
      "x.yaml:3:5: missing required key 'endpoints' in cluster (or 'dns')" },
    { "empty endpoints", "clusters:\n  a:\n    endpoints: []\n", "x.yaml:3:16: endpoints: needs at least one address" },
    { "bad path pattern", "clusters:\n  a: {endpoints: [1.1.1.1:80]}\nroutes:\n  - path: /a/**/b\n    to: a\n",
      "x.yaml:4:11: bad path pattern: '**' is only allowed as the last segment" },
    { "duplicate route id",
      "clusters:\n  a: {endpoints: [1.1.1.1:80]}\nroutes:\n  - id: r\n    path: /x\n    to: a\n"
      "  - id: r\n    path: /y\n    to: a\n",
      "x.yaml:7:9: duplicate route id 'r' (first at x.yaml:4:5)" },
    { "duplicate default route id",
      "clusters:\n  a: {endpoints: [1.1.1.1:80]}\nroutes:\n  - {path: /x, to: a}\n  - {id: route-1, path: /y, to: a}\n",
      "x.yaml:5:10: duplicate route id 'route-1' (first at x.yaml:4:5)" },
    { "workers out of range", "workers: 0\n", "x.yaml:1:10: workers: '0' is out of range (1..256)" },
    { "workers bad", "workers: many\n", "x.yaml:1:10: workers: expected 'auto' or an integer 1..256, got 'many'" },
    { "workers quoted", "workers: '4'\n", "x.yaml:1:10: workers: expected 'auto' or an integer 1..256, got '4'" },
    { "top level not a map", "- a\n- b\n", "x.yaml:1:1: expected a map at top level, got a sequence" },
    { "two documents", "listen: 80\n---\nlisten: 81\n",
      "x.yaml:3:1: only one YAML document per file is supported" },
    { "syntax error", "listen: 8080\nroutes:\n  - id: a\n   path: /x\n",
      "x.yaml:4:4: did not find expected '-' indicator (while parsing a block collection at 3:3)" },
    { "syntax error: unclosed flow", "listen: [8080\n",
      "x.yaml:2:1: did not find expected ',' or ']' (while parsing a flow sequence at 1:9)" },
    { "undefined alias", "listen: *nope\n", "x.yaml:1:9: undefined alias '*nope'" },
    { "non-scalar key", "? [a]\n: b\n", "x.yaml:1:3: map keys must be scalars" },
    { "bad merge key", "clusters:\n  a:\n    <<: 5\n", "x.yaml:3:9: '<<' expects a map or a list of maps" },
    { "unknown key via anchor", "x-defaults: &d {lb: random}\n",
      "x.yaml:1:1: unknown key 'x-defaults' at top level (expected one of: listen, admin, workers, limits, "
      "timeouts, access_log, redis, clusters, discovery, server, management, spring, default_filters, routes, resilience4j)" },
    { "cluster name empty", "clusters:\n  '': {endpoints: [1.1.1.1:80]}\n",
      "x.yaml:2:3: cluster name must be a non-empty string" },
    { "empty access log", "access_log: ''\n", "x.yaml:1:13: access_log: expected stderr, off or a file path" },
    { "string expected", "routes:\n  - {id: [a], path: /x, to: a}\n",
      "x.yaml:2:10: id: expected a string, got a sequence" },
};

static void test_errors(void **state)
{
    (void)state;
    MG_CFG_ERRORS_CHECK(err_cases, "x.yaml", NULL);
}

static void test_files(void **state)
{
    (void)state;
    char path[4096], err[512] = "";
    mg_test_repo_path(path, sizeof path, "examples/gateway.yaml");
    const char *files[] = { path };
    mg_config_t *cfg = NULL;
    if (mg_config_load(files, 1, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_true(cfg->nroutes >= 1);
    assert_true(cfg->nclusters >= 1);
    assert_string_equal(cfg->files[0], path);
    mg_config_free(cfg);

    const char *missing[] = { path, "/nonexistent/meshgate.yaml" };
    assert_int_equal(mg_config_load(missing, 2, &cfg, err, sizeof err), MG_ECONFIG);
    assert_null(cfg);
    assert_string_equal(err, "/nonexistent/meshgate.yaml: cannot open: No such file or directory");

    /* truncation never overflows */
    char small[12];
    mg_config_buffer_t b = { "long-file-name.yaml", "bogus: 1\n", 9 };
    assert_int_equal(mg_config_load_buffers(&b, 1, &cfg, small, sizeof small), MG_ECONFIG);
    assert_int_equal(strlen(small), sizeof small - 1);
}

static void test_yaml_tree(void **state)
{
    (void)state;
    mg_yarena_t *a = mg_yarena_new();
    mg_ynode_t *docs;
    char err[256];
    const char *y = "a: 'true'\nb: true\nc: ~\nd: \"x\"\n";
    assert_int_equal(mg_yaml_parse(a, "k.yaml", y, strlen(y), 10, 4, &docs, err, sizeof err), 0);
    assert_int_equal(docs->nitems, 1);
    const mg_ynode_t *root = docs->items[0];
    assert_int_equal(root->kind, MG_YNODE_MAP);
    const mg_ynode_t *va = mg_ymap_get(root, "a"), *vb = mg_ymap_get(root, "b");
    assert_false(mg_ynode_is_plain(va));
    assert_int_equal(va->style, MG_YSTYLE_SINGLE);
    assert_string_equal(mg_ynode_describe(va), "a string");
    assert_string_equal(mg_ynode_describe(vb), "a boolean");
    assert_true(mg_ynode_is_null(mg_ymap_get(root, "c")));
    assert_null(mg_ymap_get(root, "zz"));
    /* offsets shift positions (embedded YAML, e.g. a ConfigMap value) */
    assert_int_equal(vb->line, 12);
    assert_int_equal(vb->col, 8);
    assert_string_equal(vb->file, "k.yaml");
    /* multi-document stream */
    const char *m = "a: 1\n---\nb: 2\n---\n";
    assert_int_equal(mg_yaml_parse(a, "m.yaml", m, strlen(m), 0, 0, &docs, err, sizeof err), 0);
    assert_int_equal(docs->nitems, 3);
    assert_true(mg_ynode_is_null(docs->items[2]));
    /* errors with offsets */
    const char *bad = "a: [1\n";
    assert_int_equal(mg_yaml_parse(a, "k.yaml", bad, strlen(bad), 10, 4, &docs, err, sizeof err), MG_ECONFIG);
    assert_string_equal(err, "k.yaml:12:5: did not find expected ',' or ']' (while parsing a flow sequence at 11:8)");
    /* alias bombs are bounded */
    char bomb[2048];
    size_t w = (size_t)snprintf(bomb, sizeof bomb, "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for (int i = 1; i < 9; i++)
        w += (size_t)snprintf(bomb + w, sizeof bomb - w, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n",
                              i, i, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1, i - 1);
    assert_int_equal(mg_yaml_parse(a, "b.yaml", bomb, w, 0, 0, &docs, err, sizeof err), MG_ECONFIG);
    assert_non_null(strstr(err, "document too large"));
    mg_yarena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_example),
        cmocka_unit_test(test_empty_is_defaults),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_limits_timeouts),
        cmocka_unit_test(test_merge_keys),
        cmocka_unit_test(test_merge_files),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_yaml_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
