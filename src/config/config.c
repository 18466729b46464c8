/* config: the native meshgate dialect. Files are parsed into yaml_tree
 * trees, deep-merged in order (later wins per key; sequences and scalars
 * replace whole), then walked with the key tables below. To add a key, add
 * a row; to add a dialect, add tables over the same tree (cfg_walk.h).
 *
 * Defaults that differ from the obvious: a bare port or ":port" means
 * 0.0.0.0 for listen, but 127.0.0.1 for admin (admin stays on loopback
 * unless an address says otherwise) and for cluster endpoints. A null
 * value ("key:" or "key: ~") means "use the default"; a later file can use
 * it to reset a key. */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/cfg_int.h"
#include "config/cfg_walk.h"
#include "config/resilience_cfg.h"
#include "config/yaml_tree.h"
#include "core/err.h"
#include "http/http1.h"
#include "route/path.h"

#define MG_CONFIG_MAX_FILE (64u << 20)
#define DAY_MS 86400000u

_Static_assert(sizeof(mg_lb_kind_t) == sizeof(int), "MG_CFG_ENUM stores an int");

#define pos_of mg_pos_of

/* ---- addresses ---- */

static bool host_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253) return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

static int parse_port(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *p, uint16_t *out)
{
    size_t n = strlen(p);
    unsigned long x = 0;
    bool ok = n > 0 && n <= 5;
    for (size_t i = 0; ok && i < n; i++) {
        if (p[i] < '0' || p[i] > '9') ok = false;
        else x = x * 10 + (unsigned long)(p[i] - '0');
    }
    if (!ok || x < 1 || x > 65535)
        return mg_cfg_error(ctx, v, "%s: bad port '%.20s' in '%.80s' (expected 1..65535)", what, p, v->str);
    *out = (uint16_t)x;
    return 0;
}

/* "host:port", "[v6]:port", ":port" or "port"; an empty host is def_host. */
static int parse_addr(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                      mg_addr_cfg_t *out)
{
    const char *s;
    int rc = mg_cfg_scalar(ctx, what, v, &s);
    if (rc) return rc;
    const char *host = def_host, *port;
    size_t hlen = strlen(def_host);
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        char buf[INET6_ADDRSTRLEN + 1];
        struct in6_addr a6;
        if (!rb || rb[1] != ':')
            return mg_cfg_error(ctx, v, "%s: bad address '%.80s' (expected [ipv6]:port)", what, s);
        hlen = (size_t)(rb - s - 1);
        if (hlen == 0 || hlen >= sizeof buf) goto bad_v6;
        memcpy(buf, s + 1, hlen);
        buf[hlen] = '\0';
        if (inet_pton(AF_INET6, buf, &a6) != 1) goto bad_v6;
        host = s + 1;
        port = rb + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon) {
            if (s[0] >= '0' && s[0] <= '9' && strspn(s, "0123456789") == strlen(s)) {
                port = s;
            } else {
                return mg_cfg_error(ctx, v, "%s: missing port in '%.80s' (expected host:port, [ipv6]:port, "
                                            ":port or port)", what, s);
            }
        } else {
            if (strchr(s, ':') != colon)
                return mg_cfg_error(ctx, v, "%s: IPv6 address '%.80s' needs brackets, e.g. [::1]:8080", what, s);
            if (colon != s) {
                host = s;
                hlen = (size_t)(colon - s);
                if (!host_ok(host, hlen))
                    return mg_cfg_error(ctx, v, "%s: bad host '%.*s'", what, (int)(hlen > 80 ? 80 : hlen), host);
            }
            port = colon + 1;
        }
    }
    if ((rc = parse_port(ctx, what, v, port, &out->port))) return rc;
    free(out->host);
    if (!(out->host = strndup(host, hlen))) return mg_cfg_error(ctx, v, "out of memory");
    out->pos = pos_of(v);
    return 0;
bad_v6:
    return mg_cfg_error(ctx, v, "%s: bad IPv6 address in '%.80s'", what, s);
}

static void free_labels(mg_label_t *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].key);
        free(l[i].value);
    }
    free(l);
}

static void free_addrs(mg_addr_cfg_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].host);
        free_labels(a[i].labels, a[i].nlabels);
    }
    free(a);
}

void mg_cfg_free_addrs(mg_addr_cfg_t *a, size_t n) { free_addrs(a, n); }

int mg_cfg_parse_addr(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                      mg_addr_cfg_t *out)
{
    return parse_addr(ctx, what, v, def_host, out);
}

/* labels: {key: value} of scalars */
static int parse_labels(mg_cfg_ctx_t *ctx, const mg_ynode_t *v, mg_label_t **out, size_t *nout)
{
    int rc = mg_cfg_expect(ctx, "labels", v, MG_YNODE_MAP);
    if (rc) return rc;
    mg_label_t *l = calloc(v->npairs ? v->npairs : 1, sizeof *l);
    if (!l) return mg_cfg_error(ctx, v, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < v->npairs && rc == 0; i++) {
        const char *val;
        if ((rc = mg_cfg_scalar(ctx, v->pairs[i].key->str, v->pairs[i].value, &val))) break;
        if (!(l[n].key = strdup(v->pairs[i].key->str)) || !(l[n].value = strdup(val))) {
            n++;
            rc = mg_cfg_error(ctx, v, "out of memory");
            break;
        }
        n++;
    }
    if (rc) {
        free_labels(l, n);
        return rc;
    }
    free_labels(*out, *nout);
    *out = l;
    *nout = n;
    return 0;
}

int mg_cfg_labels(mg_cfg_ctx_t *ctx, const mg_ynode_t *v, mg_addr_cfg_t *a)
{
    return parse_labels(ctx, v, &a->labels, &a->nlabels);
}

/* An endpoint: "host:port", or {address: host:port, labels: {...}}. */
static int parse_endpoint(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                          mg_addr_cfg_t *out)
{
    if (v->kind != MG_YNODE_MAP) return parse_addr(ctx, what, v, def_host, out);
    const mg_ynode_t *addr = NULL, *labels = NULL;
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *k = v->pairs[i].key;
        if (!strcmp(k->str, "address")) addr = v->pairs[i].value;
        else if (!strcmp(k->str, "labels")) labels = v->pairs[i].value;
        else return mg_cfg_error(ctx, k, "unknown key '%.60s' in endpoint (expected one of: address, labels)", k->str);
    }
    if (!addr || mg_ynode_is_null(addr)) return mg_cfg_error(ctx, v, "missing required key 'address' in endpoint");
    int rc = parse_addr(ctx, what, addr, def_host, out);
    if (rc == 0 && labels && !mg_ynode_is_null(labels)) rc = parse_labels(ctx, labels, &out->labels, &out->nlabels);
    return rc;
}

/* One address or a sequence of them (at least one, no repeats). */
static int parse_addr_list_x(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                             mg_addr_cfg_t **out, size_t *nout, bool endpoints)
{
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP && !endpoints)
        return mg_cfg_error(ctx, v, "%s: expected an address or a list of addresses, got a map", what);
    if (n == 0) return mg_cfg_error(ctx, v, "%s: needs at least one address", what);
    mg_addr_cfg_t *a = calloc(n, sizeof *a);
    if (!a) return mg_cfg_error(ctx, v, "out of memory");
    int rc = 0;
    size_t i;
    for (i = 0; i < n && rc == 0; i++) {
        const mg_ynode_t *item = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        rc = endpoints ? parse_endpoint(ctx, what, item, def_host, &a[i]) : parse_addr(ctx, what, item, def_host, &a[i]);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (a[j].port == a[i].port && strcmp(a[j].host, a[i].host) == 0)
                rc = mg_cfg_error(ctx, item, "%s: duplicate address '%s' (first at %d:%d)", what,
                                  item->kind == MG_YNODE_SCALAR ? item->str : a[i].host, a[j].pos.line, a[j].pos.col);
    }
    if (rc) {
        free_addrs(a, n);
        return rc;
    }
    free_addrs(*out, *nout);
    *out = a;
    *nout = n;
    return 0;
}

static int parse_addr_list(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                           mg_addr_cfg_t **out, size_t *nout)
{
    return parse_addr_list_x(ctx, what, v, def_host, out, nout, false);
}

/* ---- top-level handlers ---- */

static int h_listen(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    return parse_addr_list(ctx, k->name, v, "0.0.0.0", &cfg->listen, &cfg->nlisten);
}

static bool is_off(const mg_ynode_t *v)
{
    return v->kind == MG_YNODE_SCALAR &&
           (strcmp(v->str, "off") == 0 || (mg_ynode_is_plain(v) && strcmp(v->str, "false") == 0));
}

static int h_admin(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    if (is_off(v)) {
        cfg->admin_enabled = false;
        return 0;
    }
    cfg->admin_enabled = true;
    return parse_addr(ctx, k->name, v, "127.0.0.1", &cfg->admin);
}

static uint32_t online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (uint32_t)n;
}

static int h_workers(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    uint64_t x;
    if (v->kind == MG_YNODE_SCALAR && strcmp(v->str, "auto") == 0) {
        cfg->workers = online_cpus();
        return 0;
    }
    if (v->kind != MG_YNODE_SCALAR)
        return mg_cfg_error(ctx, v, "%s: expected 'auto' or an integer 1..256, got %s", k->name,
                            mg_ynode_describe(v));
    if (!mg_ynode_is_plain(v) || v->str[0] < '0' || v->str[0] > '9')
        return mg_cfg_error(ctx, v, "%s: expected 'auto' or an integer 1..256, got '%.40s'", k->name, v->str);
    int rc = mg_cfg_uint(ctx, k->name, v, 1, 256, &x);
    if (rc == 0) cfg->workers = (uint32_t)x;
    return rc;
}

static int h_access_log(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    const char *s;
    if (is_off(v)) {
        free(cfg->access_log);
        cfg->access_log = NULL;
        return 0;
    }
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (!*s) return mg_cfg_error(ctx, v, "%s: expected stderr, off or a file path", k->name);
    char *copy = strdup(s);
    if (!copy) return mg_cfg_error(ctx, v, "out of memory");
    free(cfg->access_log);
    cfg->access_log = copy;
    return 0;
}

/* ---- clusters ---- */

static int h_endpoints(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    return parse_addr_list_x(ctx, k->name, v, "127.0.0.1", &c->endpoints, &c->nendpoints, true);
}

static const char *const lb_names[] = { "round_robin", "least_request", "random", NULL };

static const mg_cfg_key_t cluster_keys[] = {
    { .name = "endpoints", .type = MG_CFG_CUSTOM, .handler = h_endpoints }, /* or dns: (h_clusters) */
    { .name = "dns", .type = MG_CFG_CUSTOM, .handler = mg_cfg_cluster_dns },
    { .name = "lb", .type = MG_CFG_ENUM, .offset = offsetof(mg_cluster_cfg_t, lb), .names = lb_names },
    { .name = "connect_timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_cluster_cfg_t, connect_timeout_ms),
      .min = 1, .max = DAY_MS },
    { .name = "response_timeout", .type = MG_CFG_DURATION,
      .offset = offsetof(mg_cluster_cfg_t, response_timeout_ms), .min = 1, .max = DAY_MS },
    { .name = "max_idle", .type = MG_CFG_U32, .offset = offsetof(mg_cluster_cfg_t, max_idle), .min = 0,
      .max = 100000 },
    { .name = "idle_timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_cluster_cfg_t, idle_timeout_ms),
      .min = 1, .max = DAY_MS },
    /* resilience (resilience_cfg.c) */
    { .name = "connection_pool", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_cluster_pool },
    { .name = "outlier_detection", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_cluster_outlier },
    { .name = "circuit_breaker", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_cluster_breaker },
    { .name = "retry_budget", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_cluster_retry_budget },
    { .name = "health_check", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_cluster_health },
};
static const mg_cfg_table_t cluster_table = MG_CFG_TABLE_OF("in cluster", cluster_keys);

/* Append a cluster with the defaults; NULL (error set) on a duplicate
 * name or out of memory. Pointers into cfg->clusters move: keep indices. */
mg_cluster_cfg_t *mg_cfg_add_cluster(mg_config_t *cfg, const char *name, const mg_ynode_t *at)
{
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (strcmp(cfg->clusters[i].name, name) == 0) return NULL;
    mg_cluster_cfg_t *nc = realloc(cfg->clusters, (cfg->nclusters + 1) * sizeof *nc);
    if (!nc) return NULL;
    cfg->clusters = nc;
    mg_cluster_cfg_t *c = &cfg->clusters[cfg->nclusters];
    if (mg_cfg_cluster_init(cfg, c, name, at) != 0) return NULL;
    cfg->nclusters++;
    return c;
}

int mg_cfg_cluster_init(const mg_config_t *cfg, mg_cluster_cfg_t *c, const char *name, const mg_ynode_t *at)
{
    memset(c, 0, sizeof *c);
    if (!(c->name = strdup(name))) return -ENOMEM;
    c->lb = MG_LB_ROUND_ROBIN;
    c->connect_timeout_ms = cfg->connect_timeout_ms;
    c->response_timeout_ms = cfg->response_timeout_ms;
    c->max_idle = 64;
    c->idle_timeout_ms = 30000;
    c->pos = pos_of(at);
    mg_rcfg_cluster_defaults(c);
    return 0;
}

static int add_cluster_err(mg_cfg_ctx_t *ctx, mg_config_t *cfg, const char *name, const mg_ynode_t *at,
                           mg_cluster_cfg_t **out)
{
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (strcmp(cfg->clusters[i].name, name) == 0)
            return mg_cfg_error(ctx, at, "duplicate cluster '%.80s' (first at %s:%d:%d)", name, cfg->clusters[i].pos.file,
                                cfg->clusters[i].pos.line, cfg->clusters[i].pos.col);
    if (!(*out = mg_cfg_add_cluster(cfg, name, at))) return mg_cfg_error(ctx, at, "out of memory");
    return 0;
}

static int h_clusters(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *key = v->pairs[i].key;
        mg_cluster_cfg_t *c;
        if (key->len == 0 || strlen(key->str) != key->len)
            return mg_cfg_error(ctx, key, "cluster name must be a non-empty string");
        if ((rc = add_cluster_err(ctx, cfg, key->str, key, &c))) return rc;
        if ((rc = mg_cfg_walk(ctx, &cluster_table, v->pairs[i].value, c))) return rc;
        if (c->nendpoints == 0 && c->ndns == 0)
            return mg_cfg_error(ctx, v->pairs[i].value, "missing required key 'endpoints' in cluster (or 'dns')");
    }
    return 0;
}

/* ---- routes ---- */

static int h_route_id(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (!*s) return mg_cfg_error(ctx, v, "%s: must not be empty", k->name);
    if (!(r->id = strdup(s))) return mg_cfg_error(ctx, v, "out of memory");
    return 0;
}

static int h_route_order(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    const char *d = s + (s[0] == '-' || s[0] == '+');
    size_t nd = strspn(d, "0123456789");
    if (!mg_ynode_is_plain(v) || nd == 0 || nd > 10 || d[nd])
        return mg_cfg_error(ctx, v, "%s: expected an integer, got '%.40s'", k->name, s);
    long long x = strtoll(s, NULL, 10);
    if (x < INT32_MIN || x > INT32_MAX) return mg_cfg_error(ctx, v, "%s: '%.40s' is out of range", k->name, s);
    r->order = (int32_t)x;
    return 0;
}

static int h_route_path(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    const char *s;
    char msg[256];
    mg_path_pattern_t *p;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (mg_path_compile(s, &p, msg, sizeof msg) != 0) return mg_cfg_error(ctx, v, "bad path pattern: %s", msg);
    mg_path_free(p);
    if (!(r->path = strdup(s))) return mg_cfg_error(ctx, v, "out of memory");
    r->path_pos = pos_of(v);
    return 0;
}

static int set_cluster(mg_cfg_ctx_t *ctx, mg_route_cfg_t *r, const mg_ynode_t *v, const char *name, const char *what)
{
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    if (r->cluster) return mg_cfg_error(ctx, v, "a route takes one destination: 'to' or 'uri', not both");
    for (size_t i = 0; i < cfg->nclusters; i++) {
        if (strcmp(cfg->clusters[i].name, name) == 0) {
            if (!(r->cluster = strdup(name))) return mg_cfg_error(ctx, v, "out of memory");
            r->cluster_index = i;
            return 0;
        }
    }
    /* With the registry on, an unknown name is a service whose instances
     * register at run time: a cluster with no static endpoints. */
    if (cfg->discovery.registry) {
        mg_cluster_cfg_t *c = mg_cfg_add_cluster(cfg, name, v);
        if (!c || !(r->cluster = strdup(name))) return mg_cfg_error(ctx, v, "out of memory");
        c->from_registry = true;
        r->cluster_index = cfg->nclusters - 1;
        return 0;
    }
    return mg_cfg_error(ctx, v, "%s: unknown %s '%.80s'", what, strcmp(what, "to") ? "service" : "cluster", name);
}

static int h_route_to(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    return set_cluster(ctx, obj, v, s, k->name);
}

/* uri: lb://service -> the cluster of that name (simple-discovery instances
 * or a native cluster); http://host:port -> a cluster made for it. */
static int h_route_uri(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (!(r->uri = strdup(s))) return mg_cfg_error(ctx, v, "out of memory");
    if (!strncmp(s, "lb://", 5)) {
        const char *svc = s + 5;
        if (!*svc || strpbrk(svc, "/?#:"))
            return mg_cfg_error(ctx, v, "uri: expected lb://SERVICE, got '%.80s'", s);
        return set_cluster(ctx, r, v, svc, "uri");
    }
    if (!strncmp(s, "http://", 7)) {
        const char *hp = s + 7;
        size_t hl = strcspn(hp, "/?#");
        const char *rest = hp + hl;
        if (*rest && strcmp(rest, "/") != 0)
            return mg_cfg_error(ctx, v, "uri: only scheme, host and port are used for routing; remove '%.60s' "
                                        "(use PrefixPath or SetPath to change the path)", rest);
        if (hl == 0 || hl > 300) return mg_cfg_error(ctx, v, "uri: missing host in '%.80s'", s);
        char hostport[320], name[340];
        memcpy(hostport, hp, hl);
        hostport[hl] = '\0';
        bool has_port = hostport[0] == '[' ? strstr(hostport, "]:") != NULL : strchr(hostport, ':') != NULL;
        if (!has_port) strcat(hostport, ":80");
        snprintf(name, sizeof name, "uri:http://%s", hostport);
        if (r->cluster) return mg_cfg_error(ctx, v, "a route takes one destination: 'to' or 'uri', not both");
        for (size_t i = 0; i < cfg->nclusters; i++)
            if (strcmp(cfg->clusters[i].name, name) == 0) return set_cluster(ctx, r, v, name, "uri");
        mg_addr_cfg_t a = { 0 };
        mg_ynode_t tmp = *v;
        tmp.str = hostport;
        tmp.len = strlen(hostport);
        if ((rc = parse_addr(ctx, "uri", &tmp, "127.0.0.1", &a))) return rc;
        mg_cluster_cfg_t *c;
        if ((rc = add_cluster_err(ctx, cfg, name, v, &c))) {
            free(a.host);
            return rc;
        }
        if (!(c->endpoints = calloc(1, sizeof *c->endpoints))) {
            free(a.host);
            return mg_cfg_error(ctx, v, "out of memory");
        }
        c->endpoints[0] = a;
        c->nendpoints = 1;
        c->synthesized = true;
        return set_cluster(ctx, r, v, name, "uri");
    }
    if (!strncmp(s, "https://", 8) || !strncmp(s, "wss://", 6) || !strncmp(s, "lbs://", 6))
        return mg_cfg_error(ctx, v, "uri: TLS to upstreams is not supported yet ('%.80s')", s);
    if (!strncmp(s, "forward:", 8) || !strncmp(s, "no://", 5) || !strncmp(s, "ws://", 5))
        return mg_cfg_error(ctx, v, "uri: '%.80s' is not supported (expected lb://SERVICE or http://host:port)", s);
    return mg_cfg_error(ctx, v, "uri: expected lb://SERVICE or http://host:port, got '%.80s'", s);
}

static int h_route_predicates(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    return mg_cfg_plugins(ctx, MG_PLUGIN_PREDICATE, v, &r->predicates);
}

static int h_route_filters(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    return mg_cfg_plugins(ctx, MG_PLUGIN_FILTER, v, &r->filters);
}

static const mg_cfg_key_t metadata_keys[] = {
    { .name = "response-timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_route_cfg_t, response_timeout_ms),
      .min = 1, .max = DAY_MS },
    { .name = "connect-timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_route_cfg_t, connect_timeout_ms),
      .min = 1, .max = DAY_MS },
};
static const mg_cfg_table_t metadata_table = MG_CFG_TABLE_OF("in route metadata", metadata_keys);

#define ROUTE_COMMON \
    { .name = "order", .type = MG_CFG_CUSTOM, .handler = h_route_order }, \
    { .name = "predicates", .type = MG_CFG_CUSTOM, .handler = h_route_predicates }, \
    { .name = "filters", .type = MG_CFG_CUSTOM, .handler = h_route_filters }, \
    { .name = "uri", .type = MG_CFG_CUSTOM, .handler = h_route_uri }, \
    { .name = "metadata", .type = MG_CFG_TABLE, .sub = &metadata_table }

static const mg_cfg_key_t route_keys[] = {
    { .name = "id", .type = MG_CFG_CUSTOM, .handler = h_route_id },
    { .name = "path", .type = MG_CFG_CUSTOM, .handler = h_route_path },
    { .name = "to", .type = MG_CFG_CUSTOM, .handler = h_route_to },
    ROUTE_COMMON,
    /* resilience_cfg.c; respond: is a destination, after to/uri */
    { .name = "circuit_breaker", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_route_breaker },
    { .name = "retry", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_route_retry },
    { .name = "respond", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_route_respond },
    /* after filters: appended to them as a RequestRateLimiter */
    { .name = "rate_limit", .type = MG_CFG_CUSTOM, .handler = mg_cfg_route_rate_limit },
};
static const mg_cfg_table_t route_table = MG_CFG_TABLE_OF("in route", route_keys);

static const mg_cfg_key_t scg_route_keys[] = {
    { .name = "id", .type = MG_CFG_CUSTOM, .handler = h_route_id },
    ROUTE_COMMON,
};
const mg_cfg_table_t mg_scg_route_table = MG_CFG_TABLE_OF("in route", scg_route_keys);

static void route_free(mg_route_cfg_t *r)
{
    free(r->id);
    free(r->path);
    free(r->cluster);
    free(r->uri);
    mg_plugin_list_free(&r->predicates);
    mg_plugin_list_free(&r->filters);
    mg_rcfg_route_free(r);
}

void mg_cfg_route_free(mg_route_cfg_t *r) { route_free(r); }

void mg_cfg_cluster_free(mg_cluster_cfg_t *c)
{
    free(c->name);
    mg_rcfg_cluster_free(c);
    free_addrs(c->endpoints, c->nendpoints);
    mg_cfg_dns_free(c->dns, c->ndns);
}

/* Walk one route item with table t and append it to cfg->routes. */
int mg_cfg_route_walk(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const mg_ynode_t *item, size_t ordinal)
{
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    mg_route_cfg_t *nr = realloc(cfg->routes, (cfg->nroutes + 1) * sizeof *nr);
    if (!nr) return mg_cfg_error(ctx, item, "out of memory");
    cfg->routes = nr;
    mg_route_cfg_t *r = &cfg->routes[cfg->nroutes++];
    memset(r, 0, sizeof *r);
    r->pos = pos_of(item);
    int rc = mg_cfg_walk(ctx, t, item, r);
    if (rc || (rc = mg_cfg_route_check_limiters(ctx, item, r))) return rc;
    if (!r->cluster && !r->respond)
        return mg_cfg_error(ctx, item, "route needs a destination: %s",
                            t == &route_table ? "'to: CLUSTER' or 'uri: lb://SERVICE' / 'uri: http://host:port'"
                                              : "'uri: lb://SERVICE' or 'uri: http://host:port'");
    if (!r->id) {
        char buf[32];
        snprintf(buf, sizeof buf, "route-%zu", ordinal);
        if (!(r->id = strdup(buf))) return mg_cfg_error(ctx, item, "out of memory");
    }
    for (size_t j = 0; j + 1 < cfg->nroutes; j++) {
        if (strcmp(cfg->routes[j].id, r->id) == 0) {
            const mg_ynode_t *at = mg_ymap_get(item, "id");
            return mg_cfg_error(ctx, at ? at : item, "duplicate route id '%.80s' (first at %s:%d:%d)", r->id,
                                cfg->routes[j].pos.file, cfg->routes[j].pos.line, cfg->routes[j].pos.col);
        }
    }
    return 0;
}

static int h_routes(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_SEQ);
    if (rc) return rc;
    for (size_t i = 0; i < v->nitems; i++)
        if ((rc = mg_cfg_route_walk(ctx, &route_table, v->items[i], i + 1))) return rc;
    return 0;
}

static int h_default_filters(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    return mg_cfg_plugins(ctx, MG_PLUGIN_FILTER, v, &cfg->default_filters);
}

/* ---- top level ---- */

static const mg_cfg_key_t discovery_keys[] = {
    { .name = "registry", .type = MG_CFG_BOOL, .offset = offsetof(mg_config_t, discovery.registry) },
    { .name = "data_dir", .type = MG_CFG_STRING, .offset = offsetof(mg_config_t, discovery.data_dir) },
    { .name = "token", .type = MG_CFG_STRING, .offset = offsetof(mg_config_t, discovery.token) },
    { .name = "use404", .type = MG_CFG_BOOL, .offset = offsetof(mg_config_t, discovery.use404) },
    { .name = "max_instances", .type = MG_CFG_U32, .offset = offsetof(mg_config_t, discovery.max_instances),
      .min = 1, .max = 1000000 },
    /* shared registry (discovery_cfg.c) */
    { .name = "backend", .type = MG_CFG_CUSTOM, .handler = mg_cfg_discovery_backend },
    { .name = "url", .type = MG_CFG_CUSTOM, .handler = mg_cfg_discovery_url },
    { .name = "prefix", .type = MG_CFG_CUSTOM, .handler = mg_cfg_discovery_prefix },
    { .name = "locator", .type = MG_CFG_CUSTOM, .handler = mg_cfg_locator }, /* locator.c */
    { .name = "dns", .type = MG_CFG_CUSTOM, .handler = mg_cfg_discovery_dns },
};
static const mg_cfg_table_t discovery_table = MG_CFG_TABLE_OF("in discovery", discovery_keys);

static const mg_cfg_key_t limits_keys[] = {
    { .name = "max_request_line", .type = MG_CFG_SIZE32, .offset = offsetof(mg_config_t, max_request_line),
      .min = 16, .max = 1u << 20 },
    { .name = "max_header_bytes", .type = MG_CFG_SIZE32, .offset = offsetof(mg_config_t, max_header_bytes),
      .min = 64, .max = 16u << 20 },
    { .name = "max_headers", .type = MG_CFG_U32, .offset = offsetof(mg_config_t, max_headers), .min = 1,
      .max = MG_HTTP_MAX_HEADERS },
    { .name = "max_body", .type = MG_CFG_SIZE64, .offset = offsetof(mg_config_t, max_body_bytes), .min = 0 },
    { .name = "max_connections", .type = MG_CFG_U32, .offset = offsetof(mg_config_t, max_connections),
      .min = 1, .max = 10000000 },
    { .name = "rate_limit_keys", .type = MG_CFG_U32, .offset = offsetof(mg_config_t, rate_limit_max_keys),
      .min = 64, .max = 1u << 28 },
};
static const mg_cfg_table_t limits_table = MG_CFG_TABLE_OF("in limits", limits_keys);

#define TIMEOUT(key, field, lo) \
    { .name = key, .type = MG_CFG_DURATION, .offset = offsetof(mg_config_t, field), .min = lo, .max = DAY_MS }
static const mg_cfg_key_t timeouts_keys[] = {
    TIMEOUT("header", header_timeout_ms, 1),   TIMEOUT("idle", idle_timeout_ms, 1),
    TIMEOUT("body", body_timeout_ms, 1),       TIMEOUT("connect", connect_timeout_ms, 1),
    TIMEOUT("response", response_timeout_ms, 1), TIMEOUT("drain", drain_timeout_ms, 0),
};
static const mg_cfg_table_t timeouts_table = MG_CFG_TABLE_OF("in timeouts", timeouts_keys);

/* Order matters: timeouts before clusters (their defaults), clusters
 * (native, then Spring simple-discovery instances under "spring") before
 * routes (route "to"/"uri" is resolved while walking). */
static const mg_cfg_key_t top_keys[] = {
    { .name = "listen", .type = MG_CFG_CUSTOM, .handler = h_listen },
    { .name = "admin", .type = MG_CFG_CUSTOM, .handler = h_admin },
    { .name = "workers", .type = MG_CFG_CUSTOM, .handler = h_workers },
    { .name = "limits", .type = MG_CFG_TABLE, .sub = &limits_table },
    { .name = "timeouts", .type = MG_CFG_TABLE, .sub = &timeouts_table },
    { .name = "access_log", .type = MG_CFG_CUSTOM, .handler = h_access_log },
    { .name = "redis", .type = MG_CFG_CUSTOM, .handler = mg_cfg_redis }, /* before spring.data.redis */
    { .name = "clusters", .type = MG_CFG_CUSTOM, .handler = h_clusters },
    /* before routes: an unknown route destination is a registry service */
    { .name = "discovery", .type = MG_CFG_TABLE, .sub = &discovery_table },
    /* Spring Cloud Gateway dialect (scg.c): after clusters, before native routes */
    { .name = "server", .type = MG_CFG_CUSTOM, .handler = mg_scg_server },
    { .name = "management", .type = MG_CFG_CUSTOM, .handler = mg_scg_management },
    { .name = "spring", .type = MG_CFG_CUSTOM, .handler = mg_scg_spring },
    { .name = "default_filters", .type = MG_CFG_CUSTOM, .handler = h_default_filters },
    { .name = "routes", .type = MG_CFG_CUSTOM, .handler = h_routes },
    /* read with the routes' CircuitBreaker filters by mg_rcfg_finish */
    { .name = "resilience4j", .type = MG_CFG_CUSTOM, .handler = mg_rcfg_resilience4j },
};
static const mg_cfg_table_t top_table = MG_CFG_TABLE_OF("at top level", top_keys);

static int set_defaults(mg_config_t *cfg)
{
    cfg->listen = calloc(1, sizeof *cfg->listen);
    if (!cfg->listen || !(cfg->listen[0].host = strdup("0.0.0.0"))) return -1;
    cfg->listen[0].port = 8080;
    cfg->nlisten = 1;
    if (!(cfg->admin.host = strdup("127.0.0.1"))) return -1;
    cfg->admin.port = 9901;
    cfg->admin_enabled = true;
    cfg->workers = online_cpus();
    cfg->max_request_line = 8192;
    cfg->max_header_bytes = 32768;
    cfg->max_headers = 100;
    cfg->max_body_bytes = 0;
    cfg->max_connections = 10000;
    cfg->header_timeout_ms = 10000;
    cfg->idle_timeout_ms = 60000;
    cfg->body_timeout_ms = 60000;
    cfg->connect_timeout_ms = 2000;
    cfg->response_timeout_ms = 30000;
    cfg->drain_timeout_ms = 30000;
    if (!(cfg->access_log = strdup("stderr"))) return -1;
    cfg->redis.port = 6379;
    cfg->redis.timeout_ms = 50;
    cfg->rate_limit_max_keys = 1000000;
    cfg->discovery.registry = true;
    cfg->discovery.max_instances = 10000;
    mg_cfg_dns_defaults(cfg);
    return 0;
}

void mg_config_free(mg_config_t *cfg)
{
    if (!cfg) return;
    unsigned sh = atomic_load(&cfg->shares);
    while (sh > 0)
        if (atomic_compare_exchange_weak(&cfg->shares, &sh, sh - 1)) return;
    if (cfg->derived_from) { /* locator.h: only the generated part is ours */
        for (size_t i = cfg->nbase_routes; i < cfg->nroutes; i++) route_free(&cfg->routes[i]);
        for (size_t i = cfg->nbase_clusters; i < cfg->nclusters; i++) mg_cfg_cluster_free(&cfg->clusters[i]);
        free(cfg->routes);
        free(cfg->clusters);
        mg_config_free(cfg->derived_from);
        free(cfg);
        return;
    }
    free(cfg->discovery.data_dir);
    free(cfg->discovery.token);
    free(cfg->discovery.redis.host);
    free(cfg->discovery.redis.password);
    free(cfg->discovery.prefix);
    mg_cfg_discovery_dns_free(cfg);
    for (size_t i = 0; i < cfg->nfiles; i++) free(cfg->files[i]);
    free(cfg->files);
    free_addrs(cfg->listen, cfg->nlisten);
    free(cfg->admin.host);
    for (size_t i = 0; i < cfg->nroutes; i++) route_free(&cfg->routes[i]);
    free(cfg->routes);
    mg_plugin_list_free(&cfg->default_filters);
    for (size_t i = 0; i < cfg->nclusters; i++) mg_cfg_cluster_free(&cfg->clusters[i]);
    free(cfg->clusters);
    mg_cfg_locator_free(&cfg->discovery.locator);
    free(cfg->access_log);
    free(cfg->redis.host);
    free(cfg);
}


int mg_config_load_buffers(const mg_config_buffer_t *bufs, size_t nbufs, mg_config_t **out, char *err,
                           size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = '\0';
    mg_config_t *cfg = calloc(1, sizeof *cfg);
    mg_yarena_t *arena = mg_yarena_new();
    int rc = MG_ECONFIG;
    if (!cfg || !arena || set_defaults(cfg) != 0 ||
        !(cfg->files = calloc(nbufs ? nbufs : 1, sizeof *cfg->files))) {
        mg_errf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nbufs; i++) {
        if (!(cfg->files[i] = strdup(bufs[i].name ? bufs[i].name : "<config>"))) {
            mg_errf(err, errlen, "out of memory");
            goto done;
        }
        cfg->nfiles++;
    }

    mg_ynode_t *merged = NULL;
    mg_cfg_ctx_t ctx = { .err = err, .errlen = errlen };
    for (size_t i = 0; i < nbufs; i++) {
        mg_ynode_t *docs;
        if (mg_yaml_parse(arena, cfg->files[i], bufs[i].data, bufs[i].len, 0, 0, &docs, err, errlen) != 0)
            goto done;
        if (docs->nitems > 1) {
            mg_cfg_error(&ctx, docs->items[1], "only one YAML document per file is supported");
            goto done;
        }
        mg_ynode_t *root = docs->nitems ? docs->items[0] : NULL;
        if (!root || mg_ynode_is_null(root)) continue;
        if (root->kind != MG_YNODE_MAP) {
            mg_cfg_error(&ctx, root, "expected a map at top level, got %s", mg_ynode_describe(root));
            goto done;
        }
        if (mg_scg_unwrap_configmap(&ctx, arena, root, bufs[i].data, bufs[i].len, &root) != 0) goto done;
        if (!(merged = merged ? mg_ynode_merge(arena, merged, root) : root)) {
            mg_errf(err, errlen, "out of memory");
            goto done;
        }
    }

    load_t st = { cfg, merged };
    ctx.user = &st;
    static const mg_ynode_t empty = { .kind = MG_YNODE_SCALAR, .str = "", .file = "<empty>", .line = 1, .col = 1 };
    if ((rc = mg_cfg_walk(&ctx, &top_table, merged ? merged : &empty, cfg)) != 0) goto done;
    if ((rc = mg_rcfg_finish(&ctx)) != 0) goto done;
    if ((rc = mg_cfg_discovery_finish(&ctx)) != 0) goto done;
    if ((rc = mg_cfg_locator_finish(&ctx)) != 0) goto done;
    if (!cfg->discovery.data_dir) {
        /* ".meshgate" next to the first config file */
        const char *f0 = cfg->nfiles ? cfg->files[0] : "";
        const char *slash = strrchr(f0, '/');
        int dl = slash ? (int)(slash - f0) : 1;
        size_t n = (size_t)dl + 11;
        if (!(cfg->discovery.data_dir = malloc(n))) {
            rc = mg_errf(err, errlen, "out of memory");
            goto done;
        }
        snprintf(cfg->discovery.data_dir, n, "%.*s/.meshgate", dl, slash ? (slash == f0 ? "" : f0) : ".");
    }
    rc = 0;
    *out = cfg;
    cfg = NULL;
done:
    mg_yarena_free(arena);
    mg_config_free(cfg);
    return rc;
}

static int read_file(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) return mg_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = 0;
    while (buf) {
        if (n == cap) {
            if (cap >= MG_CONFIG_MAX_FILE) {
                rc = mg_errf(err, errlen, "%s: file too large (more than %u bytes)", path, MG_CONFIG_MAX_FILE);
                break;
            }
            char *q = realloc(buf, cap * 2);
            if (!q) break;
            buf = q;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) rc = mg_errf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!buf) return mg_errf(err, errlen, "%s: out of memory", path);
    if (rc) {
        free(buf);
        return rc;
    }
    *data = buf;
    *len = n;
    return 0;
}

int mg_config_load(const char *const *files, size_t nfiles, mg_config_t **out, char *err, size_t errlen)
{
    *out = NULL;
    mg_config_buffer_t *bufs = calloc(nfiles ? nfiles : 1, sizeof *bufs);
    if (!bufs) return mg_errf(err, errlen, "out of memory");
    int rc = 0;
    size_t i;
    for (i = 0; i < nfiles && rc == 0; i++) {
        char *data = NULL;
        size_t len = 0;
        rc = read_file(files[i], &data, &len, err, errlen);
        bufs[i] = (mg_config_buffer_t){ files[i], data, len };
    }
    if (rc == 0) rc = mg_config_load_buffers(bufs, nfiles, out, err, errlen);
    for (size_t j = 0; j < nfiles; j++) free((char *)bufs[j].data);
    free(bufs);
    return rc;
}
