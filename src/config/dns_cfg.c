/* dns_cfg: the native dialect's DNS discovery keys.
 *
 *   clusters: {NAME: {dns: [{name: HOST, port: N, family: any|v4|v6, refresh: 30s},
 *                           {srv: _http._tcp.svc.example, refresh: 10s}]}}
 *   discovery: {dns: {resolvers: ["127.0.0.1:5353"], timeout: 1s, attempts: 2,
 *                     min_refresh: 1s, max_refresh: 300s, hosts_file: /etc/hosts}}
 *
 * Only the shape is checked here; resolution happens at run time on the
 * control loop (src/discovery/dnssrc.c). */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_int.h"

#define DAY_MS 86400000u
#define MAX_DNS_ENTRIES 64 /* per cluster */
#define MAX_RESOLVERS 8

static const char *const family_names[] = { "any", "v4", "v6", NULL };

static int h_dns_port(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    uint64_t x;
    int rc = mg_cfg_uint(ctx, k->name, v, 1, 65535, &x);
    if (rc == 0) ((mg_dns_cfg_t *)obj)->port = (uint16_t)x;
    return rc;
}

static const mg_cfg_key_t dns_entry_keys[] = {
    { .name = "name", .type = MG_CFG_STRING, .offset = offsetof(mg_dns_cfg_t, name) },
    { .name = "srv", .type = MG_CFG_STRING, .offset = offsetof(mg_dns_cfg_t, srv) },
    { .name = "port", .type = MG_CFG_CUSTOM, .handler = h_dns_port },
    { .name = "family", .type = MG_CFG_ENUM, .offset = offsetof(mg_dns_cfg_t, family), .names = family_names },
    { .name = "refresh", .type = MG_CFG_DURATION, .offset = offsetof(mg_dns_cfg_t, refresh_ms), .min = 100,
      .max = DAY_MS },
};
static const mg_cfg_table_t dns_entry_table = MG_CFG_TABLE_OF("in dns entry", dns_entry_keys);

/* A DNS name as it may be queried: labels of [A-Za-z0-9_-], 1..63 bytes,
 * 253 in all, one optional trailing dot; not a literal address. */
static bool dns_name_ok(const char *s)
{
    size_t n = strlen(s), lab = 0;
    if (n && s[n - 1] == '.') n--;
    if (n == 0 || n > 253) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            if (lab == 0) return false;
            lab = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                   c == '_') {
            if (++lab > 63) return false;
        } else {
            return false;
        }
    }
    return lab > 0;
}

void mg_cfg_dns_free(mg_dns_cfg_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(d[i].name);
        free(d[i].srv);
    }
    free(d);
}

static int check_entry(mg_cfg_ctx_t *ctx, const mg_ynode_t *item, mg_dns_cfg_t *e)
{
    if (!e->name == !e->srv)
        return mg_cfg_error(ctx, item, "dns entry: give either 'name' (with 'port') or 'srv'");
    const char *nm = e->name ? e->name : e->srv;
    const mg_ynode_t *at = mg_ymap_get(item, e->name ? "name" : "srv");
    struct in6_addr a6;
    if (inet_pton(AF_INET, nm, &a6) == 1 || inet_pton(AF_INET6, nm, &a6) == 1)
        return mg_cfg_error(ctx, at, "dns entry: '%.80s' is an address, not a name (list it under endpoints:)", nm);
    if (!dns_name_ok(nm)) return mg_cfg_error(ctx, at, "dns entry: bad DNS name '%.80s'", nm);
    if (e->name && !e->port) return mg_cfg_error(ctx, item, "dns entry: 'name' needs a 'port'");
    if (e->srv && e->port)
        return mg_cfg_error(ctx, mg_ymap_get(item, "port"), "dns entry: an SRV record gives the port; remove 'port'");
    return 0;
}

static bool same_entry(const mg_dns_cfg_t *a, const mg_dns_cfg_t *b)
{
    if (!a->name != !b->name) return false;
    if (a->name) return strcasecmp(a->name, b->name) == 0 && a->port == b->port;
    return strcasecmp(a->srv, b->srv) == 0;
}

/* cluster dns: a sequence of entries (or one entry map). */
int mg_cfg_cluster_dns(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    if (v->kind != MG_YNODE_SEQ && v->kind != MG_YNODE_MAP)
        return mg_cfg_error(ctx, v, "%s: expected a list of {name: HOST, port: N} or {srv: NAME}, got %s", k->name,
                            mg_ynode_describe(v));
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (n == 0) return mg_cfg_error(ctx, v, "%s: needs at least one entry", k->name);
    if (n > MAX_DNS_ENTRIES) return mg_cfg_error(ctx, v, "%s: at most %d entries per cluster", k->name, MAX_DNS_ENTRIES);
    mg_dns_cfg_t *d = calloc(n, sizeof *d);
    if (!d) return mg_cfg_error(ctx, v, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const mg_ynode_t *item = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        if (item->kind != MG_YNODE_MAP) {
            rc = mg_cfg_error(ctx, item, "%s: expected {name: HOST, port: N} or {srv: NAME}, got %s", k->name,
                              mg_ynode_describe(item));
            break;
        }
        d[i].pos = mg_pos_of(item);
        if ((rc = mg_cfg_walk(ctx, &dns_entry_table, item, &d[i])) || (rc = check_entry(ctx, item, &d[i]))) break;
        for (size_t j = 0; j < i && rc == 0; j++)
            if (same_entry(&d[j], &d[i]))
                rc = mg_cfg_error(ctx, item, "%s: duplicate entry (first at %d:%d)", k->name, d[j].pos.line,
                                  d[j].pos.col);
    }
    if (rc) {
        mg_cfg_dns_free(d, n);
        return rc;
    }
    mg_cfg_dns_free(c->dns, c->ndns);
    c->dns = d;
    c->ndns = n;
    return 0;
}

/* discovery.dns.resolvers: "IP", "IP:PORT" or "[IPv6]:PORT" (port 53). */
static int h_resolvers(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP) return mg_cfg_error(ctx, v, "%s: expected a list of IP[:PORT]", k->name);
    if (n == 0 || n > MAX_RESOLVERS)
        return mg_cfg_error(ctx, v, "%s: expected 1..%d resolver addresses", k->name, MAX_RESOLVERS);
    mg_addr_cfg_t *a = calloc(n, sizeof *a);
    if (!a) return mg_cfg_error(ctx, v, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const mg_ynode_t *item = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, k->name, item, &s))) break;
        struct in6_addr a6;
        char tmp[80];
        mg_ynode_t t = *item;
        if (inet_pton(AF_INET, s, &a6) == 1 || inet_pton(AF_INET6, s, &a6) == 1) {
            /* a bare address: port 53 */
            snprintf(tmp, sizeof tmp, strchr(s, ':') ? "[%s]:53" : "%s:53", s);
            t.str = tmp;
            t.len = strlen(tmp);
        } else if (!strchr(s, ':')) {
            rc = mg_cfg_error(ctx, item, "%s: '%.80s' is not an IP address", k->name, s);
            break;
        }
        if ((rc = mg_cfg_parse_addr(ctx, k->name, &t, "127.0.0.1", &a[i]))) break;
        a[i].pos = mg_pos_of(item);
        if (inet_pton(AF_INET, a[i].host, &a6) != 1 && inet_pton(AF_INET6, a[i].host, &a6) != 1)
            rc = mg_cfg_error(ctx, item, "%s: '%.80s' is not an IP address", k->name, a[i].host);
    }
    if (rc) {
        mg_cfg_free_addrs(a, n);
        return rc;
    }
    mg_cfg_free_addrs(cfg->discovery.dns.resolvers, cfg->discovery.dns.nresolvers);
    cfg->discovery.dns.resolvers = a;
    cfg->discovery.dns.nresolvers = n;
    return 0;
}

#define DNS_OFF(f) offsetof(mg_config_t, discovery.dns.f)
static const mg_cfg_key_t dns_keys[] = {
    { .name = "resolvers", .type = MG_CFG_CUSTOM, .handler = h_resolvers },
    { .name = "timeout", .type = MG_CFG_DURATION, .offset = DNS_OFF(timeout_ms), .min = 10, .max = 60000 },
    { .name = "attempts", .type = MG_CFG_U32, .offset = DNS_OFF(attempts), .min = 1, .max = 10 },
    { .name = "min_refresh", .type = MG_CFG_DURATION, .offset = DNS_OFF(min_refresh_ms), .min = 100, .max = DAY_MS },
    { .name = "max_refresh", .type = MG_CFG_DURATION, .offset = DNS_OFF(max_refresh_ms), .min = 100, .max = DAY_MS },
    { .name = "hosts_file", .type = MG_CFG_STRING, .offset = DNS_OFF(hosts_file) },
};
static const mg_cfg_table_t dns_table = MG_CFG_TABLE_OF("in discovery.dns", dns_keys);

int mg_cfg_discovery_dns(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    int rc = mg_cfg_walk(ctx, &dns_table, v, cfg);
    if (rc) return rc;
    if (cfg->discovery.dns.min_refresh_ms > cfg->discovery.dns.max_refresh_ms)
        return mg_cfg_error(ctx, v, "%s: min_refresh (%u ms) is above max_refresh (%u ms)", k->name,
                            cfg->discovery.dns.min_refresh_ms, cfg->discovery.dns.max_refresh_ms);
    return 0;
}

void mg_cfg_dns_defaults(mg_config_t *cfg)
{
    cfg->discovery.dns.timeout_ms = 1000;
    cfg->discovery.dns.attempts = 2;
    cfg->discovery.dns.min_refresh_ms = 1000;
    cfg->discovery.dns.max_refresh_ms = 300000;
}

void mg_cfg_discovery_dns_free(mg_config_t *cfg)
{
    mg_cfg_free_addrs(cfg->discovery.dns.resolvers, cfg->discovery.dns.nresolvers);
    free(cfg->discovery.dns.hosts_file);
}
