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

#include "config/cfg_walk.h"
#include "config/yaml_tree.h"
#include "core/err.h"
#include "http/http1.h"
#include "route/path.h"

#define MG_CONFIG_MAX_FILE (64u << 20)
#define DAY_MS 86400000u

_Static_assert(sizeof(mg_lb_kind_t) == sizeof(int), "MG_CFG_ENUM stores an int");

typedef struct {
    mg_config_t *cfg;
} load_t;

static mg_src_pos_t pos_of(const mg_ynode_t *n) { return (mg_src_pos_t){ n->file, n->line, n->col }; }

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

static void free_addrs(mg_addr_cfg_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) free(a[i].host);
    free(a);
}

/* One address or a sequence of them (at least one, no repeats). */
static int parse_addr_list(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                           mg_addr_cfg_t **out, size_t *nout)
{
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP)
        return mg_cfg_error(ctx, v, "%s: expected an address or a list of addresses, got a map", what);
    if (n == 0) return mg_cfg_error(ctx, v, "%s: needs at least one address", what);
    mg_addr_cfg_t *a = calloc(n, sizeof *a);
    if (!a) return mg_cfg_error(ctx, v, "out of memory");
    int rc = 0;
    size_t i;
    for (i = 0; i < n && rc == 0; i++) {
        const mg_ynode_t *item = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        rc = parse_addr(ctx, what, item, def_host, &a[i]);
        for (size_t j = 0; rc == 0 && j < i; j++)
            if (a[j].port == a[i].port && strcmp(a[j].host, a[i].host) == 0)
                rc = mg_cfg_error(ctx, item, "%s: duplicate address '%s' (first at %d:%d)", what, item->str,
                                  a[j].pos.line, a[j].pos.col);
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
    return parse_addr_list(ctx, k->name, v, "127.0.0.1", &c->endpoints, &c->nendpoints);
}

static const char *const lb_names[] = { "round_robin", "least_request", "random", NULL };

static const mg_cfg_key_t cluster_keys[] = {
    { .name = "endpoints", .type = MG_CFG_CUSTOM, .handler = h_endpoints, .flags = MG_CFG_REQUIRED },
    { .name = "lb", .type = MG_CFG_ENUM, .offset = offsetof(mg_cluster_cfg_t, lb), .names = lb_names },
    { .name = "connect_timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_cluster_cfg_t, connect_timeout_ms),
      .min = 1, .max = DAY_MS },
    { .name = "response_timeout", .type = MG_CFG_DURATION,
      .offset = offsetof(mg_cluster_cfg_t, response_timeout_ms), .min = 1, .max = DAY_MS },
    { .name = "max_idle", .type = MG_CFG_U32, .offset = offsetof(mg_cluster_cfg_t, max_idle), .min = 0,
      .max = 100000 },
    { .name = "idle_timeout", .type = MG_CFG_DURATION, .offset = offsetof(mg_cluster_cfg_t, idle_timeout_ms),
      .min = 1, .max = DAY_MS },
};
static const mg_cfg_table_t cluster_table = MG_CFG_TABLE_OF("in cluster", cluster_keys);

static int h_clusters(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    if (v->npairs == 0) return 0;
    if (!(cfg->clusters = calloc(v->npairs, sizeof *cfg->clusters))) return mg_cfg_error(ctx, v, "out of memory");
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *key = v->pairs[i].key;
        mg_cluster_cfg_t *c = &cfg->clusters[cfg->nclusters++];
        if (key->len == 0 || strlen(key->str) != key->len)
            return mg_cfg_error(ctx, key, "cluster name must be a non-empty string");
        if (!(c->name = strdup(key->str))) return mg_cfg_error(ctx, key, "out of memory");
        c->lb = MG_LB_ROUND_ROBIN;
        c->connect_timeout_ms = cfg->connect_timeout_ms;
        c->response_timeout_ms = cfg->response_timeout_ms;
        c->max_idle = 64;
        c->idle_timeout_ms = 30000;
        c->pos = pos_of(key);
        if ((rc = mg_cfg_walk(ctx, &cluster_table, v->pairs[i].value, c))) return rc;
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

static int h_route_to(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    const mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        if (strcmp(cfg->clusters[i].name, s) == 0) {
            if (!(r->cluster = strdup(s))) return mg_cfg_error(ctx, v, "out of memory");
            r->cluster_index = i;
            return 0;
        }
    }
    return mg_cfg_error(ctx, v, "%s: unknown cluster '%.80s'", k->name, s);
}

static const mg_cfg_key_t route_keys[] = {
    { .name = "id", .type = MG_CFG_CUSTOM, .handler = h_route_id },
    { .name = "path", .type = MG_CFG_CUSTOM, .handler = h_route_path, .flags = MG_CFG_REQUIRED },
    { .name = "to", .type = MG_CFG_CUSTOM, .handler = h_route_to, .flags = MG_CFG_REQUIRED },
};
static const mg_cfg_table_t route_table = MG_CFG_TABLE_OF("in route", route_keys);

static int h_routes(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_SEQ);
    if (rc) return rc;
    if (v->nitems == 0) return 0;
    if (!(cfg->routes = calloc(v->nitems, sizeof *cfg->routes))) return mg_cfg_error(ctx, v, "out of memory");
    for (size_t i = 0; i < v->nitems; i++) {
        const mg_ynode_t *item = v->items[i];
        mg_route_cfg_t *r = &cfg->routes[cfg->nroutes++];
        r->pos = pos_of(item);
        if ((rc = mg_cfg_walk(ctx, &route_table, item, r))) return rc;
        if (!r->id) {
            char buf[32];
            snprintf(buf, sizeof buf, "route-%zu", i + 1);
            if (!(r->id = strdup(buf))) return mg_cfg_error(ctx, item, "out of memory");
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->routes[j].id, r->id) == 0) {
                const mg_ynode_t *at = mg_ymap_get(item, "id");
                return mg_cfg_error(ctx, at ? at : item, "duplicate route id '%.80s' (first at %s:%d:%d)", r->id,
                                    cfg->routes[j].pos.file, cfg->routes[j].pos.line, cfg->routes[j].pos.col);
            }
        }
    }
    return 0;
}

/* ---- top level ---- */

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
 * before routes (route "to" is resolved while walking). */
static const mg_cfg_key_t top_keys[] = {
    { .name = "listen", .type = MG_CFG_CUSTOM, .handler = h_listen },
    { .name = "admin", .type = MG_CFG_CUSTOM, .handler = h_admin },
    { .name = "workers", .type = MG_CFG_CUSTOM, .handler = h_workers },
    { .name = "limits", .type = MG_CFG_TABLE, .sub = &limits_table },
    { .name = "timeouts", .type = MG_CFG_TABLE, .sub = &timeouts_table },
    { .name = "access_log", .type = MG_CFG_CUSTOM, .handler = h_access_log },
    { .name = "clusters", .type = MG_CFG_CUSTOM, .handler = h_clusters },
    { .name = "routes", .type = MG_CFG_CUSTOM, .handler = h_routes },
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
    return 0;
}

void mg_config_free(mg_config_t *cfg)
{
    if (!cfg) return;
    for (size_t i = 0; i < cfg->nfiles; i++) free(cfg->files[i]);
    free(cfg->files);
    free_addrs(cfg->listen, cfg->nlisten);
    free(cfg->admin.host);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].id);
        free(cfg->routes[i].path);
        free(cfg->routes[i].cluster);
    }
    free(cfg->routes);
    for (size_t i = 0; i < cfg->nclusters; i++) {
        free(cfg->clusters[i].name);
        free_addrs(cfg->clusters[i].endpoints, cfg->clusters[i].nendpoints);
    }
    free(cfg->clusters);
    free(cfg->access_log);
    free(cfg);
}

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MG_ECONFIG;
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
        errf(err, errlen, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nbufs; i++) {
        if (!(cfg->files[i] = strdup(bufs[i].name ? bufs[i].name : "<config>"))) {
            errf(err, errlen, "out of memory");
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
        if (!(merged = merged ? mg_ynode_merge(arena, merged, root) : root)) {
            errf(err, errlen, "out of memory");
            goto done;
        }
    }

    load_t st = { cfg };
    ctx.user = &st;
    static const mg_ynode_t empty = { .kind = MG_YNODE_SCALAR, .str = "", .file = "<empty>", .line = 1, .col = 1 };
    if ((rc = mg_cfg_walk(&ctx, &top_table, merged ? merged : &empty, cfg)) != 0) goto done;
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
    if (!f) return errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = 0;
    while (buf) {
        if (n == cap) {
            if (cap >= MG_CONFIG_MAX_FILE) {
                rc = errf(err, errlen, "%s: file too large (more than %u bytes)", path, MG_CONFIG_MAX_FILE);
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
            if (ferror(f)) rc = errf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
            break;
        }
    }
    fclose(f);
    if (!buf) return errf(err, errlen, "%s: out of memory", path);
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
    if (!bufs) return errf(err, errlen, "out of memory");
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
