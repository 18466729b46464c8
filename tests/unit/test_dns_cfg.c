/* test_dns_cfg: the dns: keys of clusters and discovery.dns -- values,
 * defaults, a DNS-only cluster, config print round trip, and errors with
 * FILE:LINE:COL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/config.h"
#include "cfg_errors.h"

static mg_config_t *load1(const char *yaml, char *err, size_t errlen)
{
    mg_config_buffer_t b = { "x.yaml", yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    if (mg_config_load_buffers(&b, 1, &cfg, err, errlen) != 0) return NULL;
    return cfg;
}

static const char *const GOOD =
    "discovery:\n"
    "  registry: false\n"
    "  dns: {resolvers: [\"127.0.0.1:5353\", \"::1\", 10.0.0.1], timeout: 250ms, attempts: 3,\n"
    "        min_refresh: 2s, max_refresh: 1m, hosts_file: off}\n"
    "clusters:\n"
    "  api:\n"
    "    dns:\n"
    "      - {name: api.example, port: 8080, family: v4, refresh: 5s}\n"
    "      - {srv: _http._tcp.api.example}\n"
    "  mixed:\n"
    "    endpoints: [127.0.0.1:9000]\n"
    "    dns: {name: Mixed.Example., port: 80}\n"
    "routes:\n"
    "  - {id: a, path: /a/**, to: api}\n";

static void test_values(void **st)
{
    (void)st;
    char err[512] = "";
    mg_config_t *cfg = load1(GOOD, err, sizeof err);
    if (!cfg) fail_msg("%s", err);
    assert_int_equal(cfg->discovery.dns.nresolvers, 3);
    assert_string_equal(cfg->discovery.dns.resolvers[0].host, "127.0.0.1");
    assert_int_equal(cfg->discovery.dns.resolvers[0].port, 5353);
    assert_string_equal(cfg->discovery.dns.resolvers[1].host, "::1");
    assert_int_equal(cfg->discovery.dns.resolvers[1].port, 53);
    assert_int_equal(cfg->discovery.dns.resolvers[2].port, 53);
    assert_int_equal(cfg->discovery.dns.timeout_ms, 250);
    assert_int_equal(cfg->discovery.dns.attempts, 3);
    assert_int_equal(cfg->discovery.dns.min_refresh_ms, 2000);
    assert_int_equal(cfg->discovery.dns.max_refresh_ms, 60000);
    assert_string_equal(cfg->discovery.dns.hosts_file, "off");
    const mg_cluster_cfg_t *c = &cfg->clusters[0];
    assert_string_equal(c->name, "api");
    assert_int_equal(c->nendpoints, 0);
    assert_int_equal(c->ndns, 2);
    assert_string_equal(c->dns[0].name, "api.example");
    assert_int_equal(c->dns[0].port, 8080);
    assert_int_equal(c->dns[0].family, MG_DNS_FAMILY_V4);
    assert_int_equal(c->dns[0].refresh_ms, 5000);
    assert_null(c->dns[1].name);
    assert_string_equal(c->dns[1].srv, "_http._tcp.api.example");
    assert_int_equal(c->dns[1].refresh_ms, 0);
    assert_int_equal(c->dns[0].pos.line, 8);
    assert_int_equal(cfg->clusters[1].nendpoints, 1);
    assert_int_equal(cfg->clusters[1].ndns, 1);

    /* config print loads back to the same dns settings */
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    assert_int_equal(mg_config_print(cfg, f), 0);
    fclose(f);
    mg_config_t *again = load1(out, err, sizeof err);
    if (!again) fail_msg("printed config does not load: %s\n%s", err, out);
    assert_int_equal(again->clusters[0].ndns, 2);
    assert_string_equal(again->clusters[0].dns[1].srv, "_http._tcp.api.example");
    assert_int_equal(again->clusters[0].dns[0].refresh_ms, 5000);
    assert_int_equal(again->discovery.dns.nresolvers, 3);
    assert_int_equal(again->discovery.dns.timeout_ms, 250);
    mg_config_free(again);
    free(out);
    mg_config_free(cfg);
}

static void test_defaults(void **st)
{
    (void)st;
    char err[512] = "";
    mg_config_t *cfg = load1("clusters: {a: {dns: [{name: a.example, port: 80}]}}\n", err, sizeof err);
    if (!cfg) fail_msg("%s", err);
    assert_int_equal(cfg->discovery.dns.nresolvers, 0); /* /etc/resolv.conf at run time */
    assert_int_equal(cfg->discovery.dns.timeout_ms, 1000);
    assert_int_equal(cfg->discovery.dns.attempts, 2);
    assert_int_equal(cfg->discovery.dns.min_refresh_ms, 1000);
    assert_int_equal(cfg->discovery.dns.max_refresh_ms, 300000);
    assert_null(cfg->discovery.dns.hosts_file);
    assert_int_equal(cfg->clusters[0].dns[0].family, MG_DNS_FAMILY_ANY);
    mg_config_free(cfg);
}

static const mg_cfg_err_case_t errs[] = {
    { "no endpoints nor dns", "clusters:\n  a:\n    lb: random\n",
      "x.yaml:3:5: missing required key 'endpoints' in cluster (or 'dns')" },
    { "unknown entry key", "clusters:\n  a:\n    dns:\n      - {nmae: a.example, port: 80}\n",
      "x.yaml:4:10: unknown key 'nmae' in dns entry (expected one of: name, srv, port, family, refresh)" },
    { "name and srv", "clusters:\n  a:\n    dns:\n      - {name: a.example, srv: _x._tcp.a.example}\n",
      "x.yaml:4:9: dns entry: give either 'name' (with 'port') or 'srv'" },
    { "no port", "clusters:\n  a:\n    dns:\n      - name: a.example\n",
      "x.yaml:4:9: dns entry: 'name' needs a 'port'" },
    { "srv with port", "clusters:\n  a:\n    dns:\n      - {srv: _x._tcp.a.example, port: 80}\n",
      "x.yaml:4:40: dns entry: an SRV record gives the port; remove 'port'" },
    { "bad family", "clusters:\n  a:\n    dns:\n      - {name: a.example, port: 80, family: ipv4}\n",
      "x.yaml:4:45: family: unknown value 'ipv4' (expected one of: any, v4, v6)" },
    { "bad name", "clusters:\n  a:\n    dns:\n      - {name: 'a..example', port: 80}\n",
      "x.yaml:4:16: dns entry: bad DNS name 'a..example'" },
    { "address as name", "clusters:\n  a:\n    dns:\n      - {name: 10.0.0.1, port: 80}\n",
      "x.yaml:4:16: dns entry: '10.0.0.1' is an address, not a name (list it under endpoints:)" },
    { "duplicate", "clusters:\n  a:\n    dns:\n      - {name: a.example, port: 80}\n      - {name: A.example, port: 80}\n",
      "x.yaml:5:9: dns: duplicate entry (first at 4:9)" },
    { "port range", "clusters:\n  a:\n    dns:\n      - {name: a.example, port: 0}\n",
      "x.yaml:4:33: port: '0' is out of range (1..65535)" },
    { "refresh too small", "clusters:\n  a:\n    dns:\n      - {name: a.example, port: 80, refresh: 10ms}\n",
      "x.yaml:4:46: refresh: '10ms' is out of range (100..86400000 ms)" },
    { "not a list", "clusters:\n  a:\n    dns: a.example\n",
      "x.yaml:3:10: dns: expected a list of {name: HOST, port: N} or {srv: NAME}, got a string" },
    { "resolver not an IP", "discovery:\n  dns:\n    resolvers: [dns.example:53]\n",
      "x.yaml:3:17: resolvers: 'dns.example' is not an IP address" },
    { "unknown dns key", "discovery:\n  dns:\n    timout: 1s\n",
      "x.yaml:3:5: unknown key 'timout' in discovery.dns (expected one of: resolvers, timeout, attempts, "
      "min_refresh, max_refresh, hosts_file)" },
    { "min above max", "discovery:\n  dns: {min_refresh: 10s, max_refresh: 5s}\n",
      "x.yaml:2:8: dns: min_refresh (10000 ms) is above max_refresh (5000 ms)" },
};

static void test_errors(void **st)
{
    (void)st;
    MG_CFG_ERRORS_CHECK(errs, "x.yaml", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
