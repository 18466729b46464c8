/* test_locator: the discovery locator's pure parts: the SpEL subset, the
 * routes a derived config gets (ids, predicates, filters, clusters, order),
 * sharing and freeing of the base config, and the config errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "config/locator.h"
#include "core/err.h"
#include "route/route.h"

static mg_config_t *load(const char *yaml, char *err, size_t errlen)
{
    mg_config_buffer_t b = { "t.yaml", yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    int rc = mg_config_load_buffers(&b, 1, &cfg, err, errlen);
    if (rc) assert_null(cfg);
    return cfg;
}

static mg_config_t *must_load(const char *yaml)
{
    char err[512] = "";
    mg_config_t *cfg = load(yaml, err, sizeof err);
    if (!cfg) fail_msg("load failed: %s", err);
    return cfg;
}

static void expect_error(const char *yaml, const char *prefix, const char *needle)
{
    char err[1024] = "";
    mg_config_t *cfg = load(yaml, err, sizeof err);
    if (cfg) fail_msg("loaded, expected %s", prefix);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, needle))
        fail_msg("got '%s', expected '%s...%s...'", err, prefix, needle);
}

static void eval_ok(const char *expr, const char *sid, const char *want)
{
    char err[256] = "", *out = NULL;
    int rc = mg_locator_eval(expr, sid, &out, err, sizeof err);
    if (rc) fail_msg("'%s': %s", expr, err);
    assert_string_equal(out, want);
    free(out);
}

static void eval_bad(const char *expr, const char *needle)
{
    char err[256] = "", *out = NULL;
    assert_int_equal(mg_locator_eval(expr, "svc", &out, err, sizeof err), MG_EPARSE);
    assert_null(out);
    if (!strstr(err, needle)) fail_msg("'%s': got '%s', expected '%s'", expr, err, needle);
}

static void test_eval(void **state)
{
    (void)state;
    eval_ok("'/'+serviceId+'/**'", "users", "/users/**");
    eval_ok("'/' + serviceId + '/?(?<remaining>.*)'", "users", "/users/?(?<remaining>.*)");
    eval_ok("'/${remaining}'", "users", "/${remaining}");
    eval_ok("\"a\" + 'it''s' + \"q\"\"q\"", "x", "ait'sq\"q");
    eval_ok("1", "x", "1");
    eval_ok("  2 + serviceId ", "x", "2x");
    eval_ok("true", "x", "true");
    eval_ok("serviceId", "Mixed-Case", "Mixed-Case");
    eval_ok("''", "x", "");
    eval_bad("host", "only serviceId is available");
    eval_bad("metadata['zone']", "'metadata' cannot be evaluated");
    eval_bad("'/'+", "expected a value");
    eval_bad("'/x", "unterminated");
    eval_bad("/x/**", "unexpected '/'");
    eval_bad("'a' 'b'", "after a value");
    eval_bad("1.5", "only integer");
    eval_bad("", "expected a value");
    char big[5000];
    memset(big, 'a', sizeof big);
    big[0] = '\'';
    big[sizeof big - 2] = '\'';
    big[sizeof big - 1] = '\0';
    eval_bad(big, "longer than");
}

static const mg_route_cfg_t *route(const mg_config_t *c, const char *id)
{
    for (size_t i = 0; i < c->nroutes; i++)
        if (!strcmp(c->routes[i].id, id)) return &c->routes[i];
    return NULL;
}

static const char spring_yaml[] =
    "spring:\n"
    "  cloud:\n"
    "    discovery:\n"
    "      client:\n"
    "        simple:\n"
    "          instances:\n"
    "            Inventory:\n"
    "              - uri: http://127.0.0.1:9\n"
    "    gateway:\n"
    "      discovery:\n"
    "        locator:\n"
    "          enabled: true\n"
    "          lowerCaseServiceId: true\n"
    "      routes:\n"
    "        - id: mine\n"
    "          uri: lb://user-service\n"
    "          predicates: [Path=/mine/**]\n"
    "        - id: direct\n"
    "          uri: http://127.0.0.1:10\n"
    "          predicates: [Path=/d/**]\n";

static void test_derive_default_routes(void **state)
{
    (void)state;
    mg_config_t *base = must_load(spring_yaml);
    assert_int_equal(base->nroutes, 2);
    size_t nclusters = base->nclusters; /* Inventory, user-service (registry), uri:http://... */
    assert_int_equal(nclusters, 3);
    const char *names[] = { "Order-Service", "user-service", "Order-Service" };
    mg_config_t *d = NULL;
    char err[256] = "";
    mg_config_t *keep = mg_config_share(base); /* still ours after d is freed */
    assert_int_equal(mg_locator_derive(base, names, 3, &d, err, sizeof err), 0);
    assert_ptr_not_equal(d, base);
    assert_ptr_equal(mg_config_base(d), keep);
    /* configured routes first, then one per service in name order (the
     * synthesized uri: cluster is not a service; duplicates count once) */
    assert_int_equal(d->nroutes, 5);
    assert_string_equal(d->routes[0].id, "mine");
    assert_string_equal(d->routes[1].id, "direct");
    assert_string_equal(d->routes[2].id, "ReactiveCompositeDiscoveryClient_Inventory");
    assert_string_equal(d->routes[3].id, "ReactiveCompositeDiscoveryClient_Order-Service");
    assert_string_equal(d->routes[4].id, "ReactiveCompositeDiscoveryClient_user-service");
    const mg_route_cfg_t *r = route(d, "ReactiveCompositeDiscoveryClient_Order-Service");
    assert_true(r->from_locator);
    assert_string_equal(r->uri, "lb://Order-Service");
    assert_string_equal(d->clusters[r->cluster_index].name, "Order-Service");
    assert_true(d->clusters[r->cluster_index].from_registry);
    assert_int_equal(r->predicates.n, 1);
    assert_string_equal(r->predicates.v[0].name, "Path");
    assert_string_equal(r->predicates.v[0].args[0].values[0], "/order-service/**");
    assert_int_equal(r->filters.n, 1);
    assert_string_equal(r->filters.v[0].name, "RewritePath");
    assert_string_equal(r->filters.v[0].args[0].values[0], "/order-service/?(?<remaining>.*)");
    assert_string_equal(r->filters.v[0].args[1].values[0], "/${remaining}");
    /* a service with a cluster already (a route's lb:// name) reuses it */
    r = route(d, "ReactiveCompositeDiscoveryClient_user-service");
    assert_int_equal(r->cluster_index, base->routes[0].cluster_index);
    assert_int_equal(d->nclusters, nclusters + 1);
    /* the derived config compiles to a route table */
    mg_route_table_t *t = NULL;
    if (mg_route_table_build(d, &t, err, sizeof err) != 0) fail_msg("%s", err);
    mg_route_table_free(t);
    mg_config_free(d);
    /* the base is intact and still owned through keep */
    assert_int_equal(keep->nroutes, 2);
    assert_int_equal(keep->nclusters, nclusters);
    mg_config_free(keep);
}

static void test_off_and_conflicts(void **state)
{
    (void)state;
    mg_config_t *base = must_load("routes:\n  - {id: x, path: /x/**, to: a}\nclusters:\n  a: {endpoints: [1.2.3.4:5]}\n");
    mg_config_t *d = NULL;
    char err[128];
    const char *names[] = { "s" };
    assert_int_equal(mg_locator_derive(base, names, 1, &d, err, sizeof err), 0);
    assert_ptr_equal(d, base); /* locator off: the config itself */
    mg_config_free(d);

    base = must_load("discovery:\n  locator: {enabled: true, route_id_prefix: ''}\n"
                     "routes:\n  - {id: ReactiveCompositeDiscoveryClient_a, path: /x/**, to: a}\n"
                     "clusters:\n  a: {endpoints: [1.2.3.4:5]}\n");
    const char *bad[] = { "bad{name" };
    assert_int_equal(mg_locator_derive(base, bad, 1, &d, err, sizeof err), 0);
    /* a's generated id is a configured route's; bad{name makes a bad pattern */
    assert_int_equal(d->nroutes, 1);
    mg_config_free(d);
}

static void test_custom_templates(void **state)
{
    (void)state;
    mg_config_t *base = must_load("discovery:\n"
                                  "  locator:\n"
                                  "    enabled: true\n"
                                  "    route-id-prefix: 'p-'\n"
                                  "    predicates:\n"
                                  "      - Path='/api/'+serviceId+'/**', '/v2/'+serviceId\n"
                                  "      - name: Host\n" /* Spring's documented form: any key gathers */
                                  "        args: {pattern: \"serviceId+'.example.com'\"}\n"
                                  "    filters:\n"
                                  "      - StripPrefix=2\n"
                                  "      - name: AddRequestHeader\n"
                                  "        args: {name: \"'X-Svc'\", value: serviceId}\n");
    const char *names[] = { "Users" };
    mg_config_t *d = NULL;
    char err[256];
    assert_int_equal(mg_locator_derive(base, names, 1, &d, err, sizeof err), 0);
    const mg_route_cfg_t *r = route(d, "p-Users");
    assert_non_null(r);
    assert_int_equal(r->predicates.v[0].args[0].nvalues, 2);
    assert_string_equal(r->predicates.v[0].args[0].values[0], "/api/Users/**");
    assert_string_equal(r->predicates.v[0].args[0].values[1], "/v2/Users");
    assert_string_equal(r->predicates.v[1].name, "Host");
    assert_string_equal(r->predicates.v[1].args[0].values[0], "Users.example.com");
    assert_string_equal(r->filters.v[0].args[0].values[0], "2");
    assert_string_equal(r->filters.v[1].args[1].values[0], "Users");
    mg_config_free(d);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("discovery:\n  locator:\n    include-expression: \"metadata['a']=='b'\"\n", "t.yaml:3:25: ",
                 "only the default 'true'");
    expect_error("discovery:\n  locator:\n    urlExpression: \"'lb:'+serviceId\"\n", "t.yaml:3:20: ",
                 "only the default 'lb://'+serviceId");
    expect_error("discovery:\n  locator:\n    enabled: yes\n", "t.yaml:3:14: ", "");
    expect_error("discovery:\n  locator:\n    lower-case: true\n", "t.yaml:3:5: ", "unknown key 'lower-case'");
    expect_error("discovery:\n  locator:\n    filters: [CircuitBreaker]\n", "t.yaml:3:15: ", "not supported");
    expect_error("discovery:\n  locator:\n    predicates: [Path=/x/**]\n", "t.yaml:3:23: ", "unexpected '/'");
    /* the defaults and Spring's spellings load */
    mg_config_t *c = must_load("discovery:\n  locator:\n    include-expression: ' TRUE '\n"
                               "    url_expression: \"'lb://' + serviceId\"\n    lower_case_service_id: true\n");
    assert_true(c->discovery.locator.lower_case_service_id);
    assert_false(c->discovery.locator.enabled);
    mg_config_free(c);
}

/* Many services (twice each, as two sources would give them): one route
 * and one cluster per name, each route's cluster the right one. */
static void test_many_services(void **state)
{
    (void)state;
    enum { N = 3000 };
    mg_config_t *base = must_load("discovery:\n  locator: {enabled: true}\n"
                                  "routes:\n  - {id: r, path: /r/**, to: s-000042}\n");
    static char buf[N][16];
    const char *names[2 * N];
    for (int i = 0; i < N; i++) {
        snprintf(buf[i], sizeof buf[i], "s-%06d", N - 1 - i);
        names[i] = names[N + i] = buf[i];
    }
    mg_config_t *d = NULL;
    char err[128];
    assert_int_equal(mg_locator_derive(base, names, 2 * N, &d, err, sizeof err), 0);
    assert_int_equal(d->nroutes, 1 + N);
    assert_int_equal(d->nclusters, N); /* s-000042 reused the route's cluster */
    for (size_t i = 1; i < d->nroutes; i++) {
        const mg_route_cfg_t *r = &d->routes[i];
        assert_string_equal(d->clusters[r->cluster_index].name, r->uri + 5);
        assert_string_equal(r->id + strlen(MG_LOCATOR_DEFAULT_PREFIX), r->uri + 5);
    }
    mg_config_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_derive_default_routes),
        cmocka_unit_test(test_off_and_conflicts),
        cmocka_unit_test(test_custom_templates),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_many_services),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
