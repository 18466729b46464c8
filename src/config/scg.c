/* scg: the Spring Cloud Gateway dialect, as key tables over the same merged
 * tree as the native dialect (so several -c files combine like Spring
 * property sources: later files win key by key, lists replace whole).
 *
 *   server.port                                   -> listen 0.0.0.0:port
 *   management.server.port                        -> admin 127.0.0.1:port (-1: off)
 *   spring.cloud.gateway[.server.webflux].routes  -> routes (id, uri, order,
 *                                                    predicates, filters, metadata)
 *   spring.cloud.gateway[.server.webflux].default-filters
 *   spring.cloud.discovery.client.simple.instances.<svc>[i].uri (+metadata)
 *                                                 -> cluster <svc>, for uri: lb://<svc>
 *   spring.cloud.gateway[.server.webflux].discovery.locator.*
 *                                                 -> discovery locator (locator.c)
 *   spring.data.redis.{host,port,url,timeout}, spring.redis.* (older Boot)
 *                                                 -> redis (rate limiters use it)
 *
 * A Kubernetes ConfigMap is unwrapped first: each YAML file in its data is
 * parsed with line/column offsets so errors point into the outer file.
 * Everything else under these keys is an unknown-key error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_int.h"
#include "core/err.h"

static mg_config_t *cfg_of(mg_cfg_ctx_t *ctx) { return ((load_t *)ctx->user)->cfg; }

static bool root_has(mg_cfg_ctx_t *ctx, const char *key)
{
    const mg_ynode_t *root = ((load_t *)ctx->user)->root;
    const mg_ynode_t *v = root ? mg_ymap_get(root, key) : NULL;
    return v && !mg_ynode_is_null(v);
}

/* ---- server / management ---- */

typedef struct {
    const mg_ynode_t *port, *address;
} hostport_t;

static int h_port(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    ((hostport_t *)obj)->port = v;
    return 0;
}
static int h_address(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    ((hostport_t *)obj)->address = v;
    return 0;
}

static const mg_cfg_key_t server_keys[] = {
    { .name = "address", .type = MG_CFG_CUSTOM, .handler = h_address },
    { .name = "port", .type = MG_CFG_CUSTOM, .handler = h_port },
};
static const mg_cfg_table_t server_table = MG_CFG_TABLE_OF("in server", server_keys);

/* address + port -> one mg_addr_cfg_t, through the native address parser. */
static int hostport(mg_cfg_ctx_t *ctx, const hostport_t *hp, const char *what, const char *def_host,
                    mg_addr_cfg_t *out)
{
    const char *host = def_host, *port;
    int rc;
    if (hp->address && (rc = mg_cfg_scalar(ctx, "address", hp->address, &host))) return rc;
    if ((rc = mg_cfg_scalar(ctx, "port", hp->port, &port))) return rc;
    char buf[400];
    bool v6 = strchr(host, ':') != NULL;
    snprintf(buf, sizeof buf, v6 ? "[%.300s]:%.20s" : "%.300s:%.20s", host, port);
    mg_ynode_t tmp = *hp->port;
    tmp.str = buf;
    tmp.len = strlen(buf);
    return mg_cfg_parse_addr(ctx, what, &tmp, def_host, out);
}

int mg_scg_server(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    hostport_t hp = { 0 };
    int rc = mg_cfg_walk(ctx, &server_table, v, &hp);
    if (rc) return rc;
    if (!hp.port) {
        if (hp.address) return mg_cfg_error(ctx, hp.address, "server.address needs server.port");
        return 0;
    }
    if (root_has(ctx, "listen"))
        return mg_cfg_error(ctx, hp.port, "server.port and listen both set the listener; keep one");
    mg_addr_cfg_t a = { 0 };
    if ((rc = hostport(ctx, &hp, "server.port", "0.0.0.0", &a))) return rc;
    mg_cfg_free_addrs(cfg->listen, cfg->nlisten);
    if (!(cfg->listen = calloc(1, sizeof *cfg->listen))) {
        free(a.host);
        cfg->nlisten = 0;
        return mg_cfg_error(ctx, v, "out of memory");
    }
    cfg->listen[0] = a;
    cfg->nlisten = 1;
    return 0;
}

static int h_mgmt_server(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    hostport_t hp = { 0 };
    int rc = mg_cfg_walk(ctx, &server_table, v, &hp);
    if (rc || !hp.port) return rc;
    if (root_has(ctx, "admin"))
        return mg_cfg_error(ctx, hp.port, "management.server.port and admin both set the admin API; keep one");
    if (hp.port->kind == MG_YNODE_SCALAR && strcmp(hp.port->str, "-1") == 0) {
        cfg->admin_enabled = false;
        return 0;
    }
    mg_addr_cfg_t a = { 0 };
    /* meshgate keeps the admin API on loopback unless an address says otherwise */
    if ((rc = hostport(ctx, &hp, "management.server.port", "127.0.0.1", &a))) return rc;
    free(cfg->admin.host);
    cfg->admin = a;
    cfg->admin_enabled = true;
    return 0;
}

static const mg_cfg_key_t management_keys[] = {
    { .name = "server", .type = MG_CFG_CUSTOM, .handler = h_mgmt_server },
};
static const mg_cfg_table_t management_table = MG_CFG_TABLE_OF("in management", management_keys);

int mg_scg_management(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    return rc ? rc : mg_cfg_walk(ctx, &management_table, v, obj);
}

/* ---- spring.cloud.discovery.client.simple.instances ---- */

typedef struct {
    mg_cfg_ctx_t *ctx;
    const mg_ynode_t *uri, *host, *port, *secure, *metadata, *id;
} inst_t;

#define INST_FIELD(fn, field)                                                                         \
    static int fn(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj) \
    {                                                                                                 \
        ((inst_t *)obj)->field = v;                                                                   \
        return 0;                                                                                     \
    }
INST_FIELD(h_i_uri, uri)
INST_FIELD(h_i_host, host)
INST_FIELD(h_i_port, port)
INST_FIELD(h_i_secure, secure)
INST_FIELD(h_i_metadata, metadata)
INST_FIELD(h_i_id, id)

static const mg_cfg_key_t instance_keys[] = {
    { .name = "uri", .type = MG_CFG_CUSTOM, .handler = h_i_uri },
    { .name = "host", .type = MG_CFG_CUSTOM, .handler = h_i_host },
    { .name = "port", .type = MG_CFG_CUSTOM, .handler = h_i_port },
    { .name = "secure", .type = MG_CFG_CUSTOM, .handler = h_i_secure },
    { .name = "metadata", .type = MG_CFG_CUSTOM, .handler = h_i_metadata },
    { .name = "instance-id", .type = MG_CFG_CUSTOM, .handler = h_i_id },
    { .name = "instanceId", .type = MG_CFG_CUSTOM, .handler = h_i_id },
};
static const mg_cfg_table_t instance_table = MG_CFG_TABLE_OF("in discovery instance", instance_keys);

static int instance(mg_cfg_ctx_t *ctx, const mg_ynode_t *item, mg_addr_cfg_t *a)
{
    inst_t in = { .ctx = ctx };
    int rc = mg_cfg_walk(ctx, &instance_table, item, &in);
    if (rc) return rc;
    if (in.secure) {
        bool sec;
        if ((rc = mg_cfg_bool(ctx, "secure", in.secure, &sec))) return rc;
        if (sec) return mg_cfg_error(ctx, in.secure, "secure: TLS to upstreams is not supported yet");
    }
    if (in.uri) {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, "uri", in.uri, &s))) return rc;
        if (in.host || in.port) return mg_cfg_error(ctx, in.host ? in.host : in.port, "give either uri or host and port");
        if (!strncmp(s, "https://", 8)) return mg_cfg_error(ctx, in.uri, "uri: TLS to upstreams is not supported yet ('%.80s')", s);
        if (strncmp(s, "http://", 7) != 0) return mg_cfg_error(ctx, in.uri, "uri: expected http://host:port, got '%.80s'", s);
        const char *hp = s + 7;
        size_t hl = strcspn(hp, "/?#");
        if (hp[hl] && strcmp(hp + hl, "/") != 0)
            return mg_cfg_error(ctx, in.uri, "uri: an instance address has no path ('%.60s')", hp + hl);
        char buf[320];
        if (hl == 0 || hl > 300) return mg_cfg_error(ctx, in.uri, "uri: missing host in '%.80s'", s);
        memcpy(buf, hp, hl);
        buf[hl] = '\0';
        bool has_port = buf[0] == '[' ? strstr(buf, "]:") != NULL : strchr(buf, ':') != NULL;
        if (!has_port) strcat(buf, ":80");
        mg_ynode_t tmp = *in.uri;
        tmp.str = buf;
        tmp.len = strlen(buf);
        if ((rc = mg_cfg_parse_addr(ctx, "uri", &tmp, "127.0.0.1", a))) return rc;
        a->pos = mg_pos_of(in.uri);
    } else {
        if (!in.host || !in.port) return mg_cfg_error(ctx, item, "discovery instance needs uri (or host and port)");
        hostport_t hp = { in.port, in.host };
        if ((rc = hostport(ctx, &hp, "port", "127.0.0.1", a))) return rc;
    }
    if (in.metadata && (rc = mg_cfg_labels(ctx, in.metadata, a))) return rc;
    if (in.id) {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, "instance-id", in.id, &s))) return rc;
        mg_label_t *l = realloc(a->labels, (a->nlabels + 1) * sizeof *l);
        if (!l) return mg_cfg_error(ctx, in.id, "out of memory");
        a->labels = l;
        l[a->nlabels].key = strdup("instance-id");
        l[a->nlabels].value = strdup(s);
        a->nlabels++;
        if (!l[a->nlabels - 1].key || !l[a->nlabels - 1].value) return mg_cfg_error(ctx, in.id, "out of memory");
    }
    return 0;
}

static int h_instances(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *key = v->pairs[i].key, *list = v->pairs[i].value;
        if (key->len == 0 || strlen(key->str) != key->len || strpbrk(key->str, "/:?# "))
            return mg_cfg_error(ctx, key, "bad service name '%.60s'", key->str);
        if ((rc = mg_cfg_expect(ctx, key->str, list, MG_YNODE_SEQ))) return rc;
        if (list->nitems == 0) return mg_cfg_error(ctx, list, "%s: needs at least one instance", key->str);
        for (size_t j = 0; j < cfg->nclusters; j++)
            if (strcmp(cfg->clusters[j].name, key->str) == 0)
                return mg_cfg_error(ctx, key, "duplicate cluster '%.80s' (first at %s:%d:%d)", key->str,
                                    cfg->clusters[j].pos.file, cfg->clusters[j].pos.line, cfg->clusters[j].pos.col);
        mg_addr_cfg_t *eps = calloc(list->nitems, sizeof *eps);
        if (!eps) return mg_cfg_error(ctx, list, "out of memory");
        size_t n = 0;
        for (; n < list->nitems && rc == 0; n++) {
            rc = instance(ctx, list->items[n], &eps[n]);
            for (size_t j = 0; rc == 0 && j < n; j++)
                if (eps[j].port == eps[n].port && strcmp(eps[j].host, eps[n].host) == 0)
                    rc = mg_cfg_error(ctx, list->items[n], "%s: duplicate instance %s:%u (first at %d:%d)", key->str,
                                      eps[n].host, eps[n].port, eps[j].pos.line, eps[j].pos.col);
        }
        mg_cluster_cfg_t *c = rc ? NULL : mg_cfg_add_cluster(cfg, key->str, key);
        if (!c) {
            mg_cfg_free_addrs(eps, list->nitems);
            return rc ? rc : mg_cfg_error(ctx, key, "out of memory");
        }
        c->endpoints = eps;
        c->nendpoints = n;
    }
    return 0;
}

static const mg_cfg_key_t simple_keys[] = {
    { .name = "instances", .type = MG_CFG_CUSTOM, .handler = h_instances },
};
static const mg_cfg_table_t simple_table = MG_CFG_TABLE_OF("in spring.cloud.discovery.client.simple", simple_keys);
static const mg_cfg_key_t client_keys[] = { { .name = "simple", .type = MG_CFG_TABLE, .sub = &simple_table } };
static const mg_cfg_table_t client_table = MG_CFG_TABLE_OF("in spring.cloud.discovery.client", client_keys);
static const mg_cfg_key_t discovery_keys[] = { { .name = "client", .type = MG_CFG_TABLE, .sub = &client_table } };
static const mg_cfg_table_t discovery_table = MG_CFG_TABLE_OF("in spring.cloud.discovery", discovery_keys);

/* ---- spring.cloud.gateway ---- */

static int h_gw_routes(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_SEQ);
    if (rc) return rc;
    for (size_t i = 0; i < v->nitems; i++)
        if ((rc = mg_cfg_route_walk(ctx, &mg_scg_route_table, v->items[i], cfg_of(ctx)->nroutes + 1))) return rc;
    return 0;
}

static int h_gw_default_filters(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    return mg_cfg_plugins(ctx, MG_PLUGIN_FILTER, v, &cfg_of(ctx)->default_filters);
}

/* spring.cloud.gateway.loadbalancer.use404: "no instance" is 404, not 503 */
static const mg_cfg_key_t gw_lb_keys[] = {
    { .name = "use404", .type = MG_CFG_BOOL, .offset = offsetof(mg_config_t, discovery.use404) },
};
static const mg_cfg_table_t gw_lb_table = MG_CFG_TABLE_OF("in spring.cloud.gateway.loadbalancer", gw_lb_keys);

/* spring.cloud.gateway.discovery.locator: locator.c */
static const mg_cfg_key_t gw_disco_keys[] = {
    { .name = "locator", .type = MG_CFG_CUSTOM, .handler = mg_cfg_locator },
};
static const mg_cfg_table_t gw_disco_table = MG_CFG_TABLE_OF("in spring.cloud.gateway.discovery", gw_disco_keys);

#define GATEWAY_KEYS                                                                          \
    { .name = "default-filters", .type = MG_CFG_CUSTOM, .handler = h_gw_default_filters }, \
    { .name = "discovery", .type = MG_CFG_TABLE, .sub = &gw_disco_table },                 \
    { .name = "loadbalancer", .type = MG_CFG_TABLE, .sub = &gw_lb_table },                 \
    { .name = "routes", .type = MG_CFG_CUSTOM, .handler = h_gw_routes }

static const mg_cfg_key_t webflux_keys[] = { GATEWAY_KEYS };
static const mg_cfg_table_t webflux_table = MG_CFG_TABLE_OF("in spring.cloud.gateway.server.webflux", webflux_keys);
static const mg_cfg_key_t gw_server_keys[] = { { .name = "webflux", .type = MG_CFG_TABLE, .sub = &webflux_table } };
static const mg_cfg_table_t gw_server_table = MG_CFG_TABLE_OF("in spring.cloud.gateway.server", gw_server_keys);
static const mg_cfg_key_t gateway_keys[] = {
    GATEWAY_KEYS,
    { .name = "server", .type = MG_CFG_TABLE, .sub = &gw_server_table },
};
static const mg_cfg_table_t gateway_table = MG_CFG_TABLE_OF("in spring.cloud.gateway", gateway_keys);

/* discovery before gateway: lb://service needs the instances' clusters */
static const mg_cfg_key_t cloud_keys[] = {
    { .name = "discovery", .type = MG_CFG_TABLE, .sub = &discovery_table },
    { .name = "gateway", .type = MG_CFG_TABLE, .sub = &gateway_table },
};
static const mg_cfg_table_t cloud_table = MG_CFG_TABLE_OF("in spring.cloud", cloud_keys);

static int h_app_name(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    const char *s;
    return mg_cfg_scalar(ctx, k->name, v, &s); /* informational: names the gateway app in Spring */
}
static const mg_cfg_key_t app_keys[] = { { .name = "name", .type = MG_CFG_CUSTOM, .handler = h_app_name } };
static const mg_cfg_table_t app_table = MG_CFG_TABLE_OF("in spring.application", app_keys);

/* spring.data.redis (Boot 3) / spring.redis (Boot 2): ratelimit_cfg.c */
static const mg_cfg_key_t data_keys[] = { { .name = "redis", .type = MG_CFG_CUSTOM, .handler = mg_scg_data_redis } };
static const mg_cfg_table_t data_table = MG_CFG_TABLE_OF("in spring.data", data_keys);

static const mg_cfg_key_t spring_keys[] = {
    { .name = "application", .type = MG_CFG_TABLE, .sub = &app_table },
    { .name = "data", .type = MG_CFG_TABLE, .sub = &data_table },
    { .name = "redis", .type = MG_CFG_CUSTOM, .handler = mg_scg_redis },
    { .name = "cloud", .type = MG_CFG_TABLE, .sub = &cloud_table },
};
static const mg_cfg_table_t spring_table = MG_CFG_TABLE_OF("in spring", spring_keys);

int mg_scg_spring(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    return rc ? rc : mg_cfg_walk(ctx, &spring_table, v, obj);
}

/* ---- Kubernetes ConfigMap ---- */

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* Indentation of the first non-blank line after line `line` (1-based). */
static int block_indent(const char *data, size_t len, int line)
{
    size_t i = 0;
    for (int l = 1; l <= line && i < len; i++)
        if (data[i] == '\n') l++;
    while (i < len) {
        size_t s = i;
        while (i < len && data[i] == ' ') i++;
        if (i < len && data[i] != '\n' && data[i] != '\r') return (int)(i - s);
        while (i < len && data[i] != '\n') i++;
        i++;
    }
    return 0;
}

int mg_scg_unwrap_configmap(mg_cfg_ctx_t *ctx, mg_yarena_t *a, mg_ynode_t *root, const char *data, size_t len,
                            mg_ynode_t **out)
{
    *out = root;
    const mg_ynode_t *kind = mg_ymap_get(root, "kind");
    if (!kind || kind->kind != MG_YNODE_SCALAR || strcmp(kind->str, "ConfigMap") != 0) return 0;
    const mg_ynode_t *d = NULL;
    for (size_t i = 0; i < root->npairs; i++) {
        const mg_ynode_t *k = root->pairs[i].key;
        if (!strcmp(k->str, "data")) d = root->pairs[i].value;
        else if (strcmp(k->str, "apiVersion") && strcmp(k->str, "kind") && strcmp(k->str, "metadata") &&
                 strcmp(k->str, "immutable"))
            return mg_cfg_error(ctx, k, "unknown key '%.60s' in ConfigMap (expected one of: apiVersion, kind, metadata, data, immutable)", k->str);
    }
    if (!d || mg_ynode_is_null(d)) return mg_cfg_error(ctx, root, "ConfigMap has no data");
    int rc = mg_cfg_expect(ctx, "data", d, MG_YNODE_MAP);
    if (rc) return rc;
    mg_ynode_t *merged = NULL;
    for (size_t i = 0; i < d->npairs; i++) {
        const mg_ynode_t *k = d->pairs[i].key, *v = d->pairs[i].value;
        if (!ends_with(k->str, ".yml") && !ends_with(k->str, ".yaml"))
            return mg_cfg_error(ctx, k, "ConfigMap data '%.60s': only YAML files (.yml, .yaml) can be loaded", k->str);
        if (v->kind != MG_YNODE_SCALAR) return mg_cfg_error(ctx, v, "%s: expected the file's text, got %s", k->str, mg_ynode_describe(v));
        int loff, coff;
        if (v->style == MG_YSTYLE_LITERAL || v->style == MG_YSTYLE_FOLDED) {
            loff = v->line; /* the text starts on the line after '|' */
            coff = block_indent(data, len, v->line);
        } else {
            loff = v->line - 1;
            coff = v->col - 1 + (v->style == MG_YSTYLE_PLAIN ? 0 : 1);
        }
        mg_ynode_t *docs;
        if (mg_yaml_parse(a, v->file, v->str, v->len, loff, coff, &docs, ctx->err, ctx->errlen) != 0) return MG_ECONFIG;
        if (docs->nitems > 1) return mg_cfg_error(ctx, docs->items[1], "only one YAML document per file is supported");
        mg_ynode_t *r = docs->nitems ? docs->items[0] : NULL;
        if (!r || mg_ynode_is_null(r)) continue;
        if (r->kind != MG_YNODE_MAP) return mg_cfg_error(ctx, r, "expected a map at top level, got %s", mg_ynode_describe(r));
        if (!(merged = merged ? mg_ynode_merge(a, merged, r) : r)) return mg_cfg_error(ctx, v, "out of memory");
    }
    if (!merged) return mg_cfg_error(ctx, d, "ConfigMap data holds no configuration");
    *out = merged;
    return 0;
}
