/* ratelimit_cfg: the config side of rate limiting.
 *
 *   routes[i].rate_limit: {rate, burst, requested, key, status, deny_empty_key,
 *                          empty_key_status, trusted_proxies, fail_closed}
 *       -> a RequestRateLimiter filter appended to the route's filters, so
 *          both dialects end in one model (and `config print` writes it in
 *          the expanded Spring form with meshgate's extra args)
 *   redis: redis://host:port | {url | host + port, timeout}          (native)
 *   spring.data.redis.{host, port, url, timeout, database}           (Spring Boot 3)
 *   spring.redis.*                                                   (Spring Boot 2)
 *       -> cfg->redis; Redis configured once (a second place is an error)
 * Also: a route with two rate limiters is refused at the second. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_int.h"
#include "core/err.h"
#include "filter/rate_limit.h"

/* ---- native rate_limit: block ---- */

static const struct {
    const char *native, *arg;
    bool is_bool;
} rl_keys[] = {
    { "rate", "redis-rate-limiter.replenishRate", false },
    { "burst", "redis-rate-limiter.burstCapacity", false },
    { "requested", "redis-rate-limiter.requestedTokens", false },
    { "key", "key", false },
    { "status", "status-code", false },
    { "deny_empty_key", "deny-empty-key", true },
    { "empty_key_status", "empty-key-status-code", false },
    { "trusted_proxies", "trusted-proxies", false },
    { "fail_closed", "fail-closed", true },
};
#define NRL (sizeof rl_keys / sizeof rl_keys[0])

static int add_value(mg_cfg_ctx_t *ctx, mg_arg_cfg_t *a, const mg_ynode_t *at, const char *s)
{
    char **q = realloc(a->values, (a->nvalues + 1) * sizeof *q);
    if (!q) return mg_cfg_error(ctx, at, "out of memory");
    a->values = q;
    if (!(a->values[a->nvalues] = strdup(s))) return mg_cfg_error(ctx, at, "out of memory");
    a->nvalues++;
    return 0;
}

int mg_cfg_route_rate_limit(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    const mg_plugin_spec_t *spec = mg_plugin_find(MG_PLUGIN_FILTER, "RequestRateLimiter", 18);
    const mg_ynode_t *val[NRL] = { 0 };
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *key = v->pairs[i].key;
        size_t j = 0;
        while (j < NRL && strcmp(rl_keys[j].native, key->str) != 0) j++;
        if (j == NRL)
            return mg_cfg_error(ctx, key, "unknown key '%.60s' in rate_limit (expected one of: rate, burst, requested, key, "
                                          "status, deny_empty_key, empty_key_status, trusted_proxies, fail_closed)", key->str);
        if (!mg_ynode_is_null(v->pairs[i].value)) val[j] = v->pairs[i].value;
    }
    if (!val[0]) return mg_cfg_error(ctx, v, "rate_limit: missing 'rate' (tokens per second)");
    if (!val[1]) return mg_cfg_error(ctx, v, "rate_limit: missing 'burst' (bucket size; 0 blocks everything)");

    mg_plugin_cfg_t *nv = realloc(r->filters.v, (r->filters.n + 1) * sizeof *nv);
    if (!nv) return mg_cfg_error(ctx, v, "out of memory");
    r->filters.v = nv;
    mg_plugin_cfg_t *pc = &nv[r->filters.n++]; /* freed with the list, even on error */
    memset(pc, 0, sizeof *pc);
    pc->name = spec->name;
    pc->pos = mg_pos_of(v);
    if (!(pc->args = calloc(NRL, sizeof *pc->args))) return mg_cfg_error(ctx, v, "out of memory");
    /* args in the registry's field order */
    for (size_t f = 0; f < MG_MAX_ARGS && spec->args[f].name; f++) {
        size_t j = 0;
        while (j < NRL && strcmp(rl_keys[j].arg, spec->args[f].name) != 0) j++;
        if (j == NRL || !val[j]) continue;
        const mg_ynode_t *x = val[j];
        if (x->kind == MG_YNODE_SEQ && x->nitems == 0) continue; /* [] = none */
        mg_arg_cfg_t *a = &pc->args[pc->nargs++];
        a->key = spec->args[f].name;
        a->pos = mg_pos_of(x);
        const char *s;
        if (rl_keys[j].is_bool) {
            bool b;
            if ((rc = mg_cfg_bool(ctx, rl_keys[j].native, x, &b))) return rc;
            if ((rc = add_value(ctx, a, x, b ? "true" : "false"))) return rc;
        } else if (x->kind == MG_YNODE_SEQ && (spec->args[f].flags & MG_ARG_LIST)) {
            for (size_t n = 0; n < x->nitems; n++) {
                if ((rc = mg_cfg_scalar(ctx, rl_keys[j].native, x->items[n], &s))) return rc;
                if ((rc = add_value(ctx, a, x->items[n], s))) return rc;
            }
        } else {
            if ((rc = mg_cfg_scalar(ctx, rl_keys[j].native, x, &s))) return rc;
            if ((rc = add_value(ctx, a, x, s))) return rc;
        }
    }
    return mg_plugin_validate(pc, MG_PLUGIN_FILTER, ctx->err, ctx->errlen);
}

int mg_cfg_route_check_limiters(mg_cfg_ctx_t *ctx, const mg_ynode_t *item, const mg_route_cfg_t *r)
{
    const mg_plugin_cfg_t *first = NULL;
    for (size_t i = 0; i < r->filters.n; i++) {
        const mg_plugin_cfg_t *pc = &r->filters.v[i];
        if (!mg_plugin_is_rate_limiter(mg_plugin_find(MG_PLUGIN_FILTER, pc->name, strlen(pc->name)))) continue;
        if (first) {
            mg_ynode_t at = *item;
            at.file = pc->pos.file;
            at.line = pc->pos.line;
            at.col = pc->pos.col;
            return mg_cfg_error(ctx, &at, "a second rate limiter (the first is at %s:%d:%d); a route takes one",
                                first->pos.file, first->pos.line, first->pos.col);
        }
        first = pc;
    }
    return 0;
}

/* ---- Redis ---- */

typedef struct {
    const mg_ynode_t *url, *host, *port, *timeout, *database, *refused;
} redis_in_t;

#define RIN(fn, field)                                                                          \
    static int fn(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj) \
    {                                                                                           \
        (void)ctx;                                                                              \
        (void)k;                                                                                \
        ((redis_in_t *)obj)->field = v;                                                         \
        return 0;                                                                               \
    }
RIN(h_r_url, url)
RIN(h_r_host, host)
RIN(h_r_port, port)
RIN(h_r_timeout, timeout)
RIN(h_r_database, database)

static int h_r_auth(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    (void)obj;
    (void)v;
    return mg_cfg_error(ctx, v, "%s: Redis %s is not supported yet", k->name,
                        strcmp(k->name, "ssl") ? "authentication" : "TLS");
}

static const mg_cfg_key_t native_redis_keys[] = {
    { .name = "url", .type = MG_CFG_CUSTOM, .handler = h_r_url },
    { .name = "host", .type = MG_CFG_CUSTOM, .handler = h_r_host },
    { .name = "port", .type = MG_CFG_CUSTOM, .handler = h_r_port },
    { .name = "timeout", .type = MG_CFG_CUSTOM, .handler = h_r_timeout },
};
static const mg_cfg_table_t native_redis_table = MG_CFG_TABLE_OF("in redis", native_redis_keys);

static const mg_cfg_key_t spring_redis_keys[] = {
    { .name = "url", .type = MG_CFG_CUSTOM, .handler = h_r_url },
    { .name = "host", .type = MG_CFG_CUSTOM, .handler = h_r_host },
    { .name = "port", .type = MG_CFG_CUSTOM, .handler = h_r_port },
    { .name = "timeout", .type = MG_CFG_CUSTOM, .handler = h_r_timeout },
    { .name = "database", .type = MG_CFG_CUSTOM, .handler = h_r_database },
    { .name = "password", .type = MG_CFG_CUSTOM, .handler = h_r_auth },
    { .name = "username", .type = MG_CFG_CUSTOM, .handler = h_r_auth },
    { .name = "ssl", .type = MG_CFG_CUSTOM, .handler = h_r_auth },
};
static const mg_cfg_table_t spring_data_redis_table = MG_CFG_TABLE_OF("in spring.data.redis", spring_redis_keys);
static const mg_cfg_table_t spring_redis_table = MG_CFG_TABLE_OF("in spring.redis", spring_redis_keys);

static bool host_ok(const char *h, size_t n)
{
    if (n == 0 || n > 253) return false;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_'))
            return false;
    }
    return true;
}

static bool v6_ok(const char *h, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    struct in6_addr a;
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, h, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, &a) == 1;
}

static int port_of(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *at, const char *p, size_t n, uint16_t *out)
{
    unsigned long x = 0;
    bool ok = n > 0 && n <= 5;
    for (size_t i = 0; ok && i < n; i++) {
        if (p[i] < '0' || p[i] > '9') ok = false;
        else x = x * 10 + (unsigned long)(p[i] - '0');
    }
    if (!ok || x < 1 || x > 65535)
        return mg_cfg_error(ctx, at, "%s: bad port '%.*s' (expected 1..65535)", what, (int)(n > 20 ? 20 : n), p);
    *out = (uint16_t)x;
    return 0;
}

static int set_host(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *at, const char *h, size_t n, char **out)
{
    if (n && h[0] == '[' && h[n - 1] == ']') {
        h++;
        n -= 2;
        if (!v6_ok(h, n)) return mg_cfg_error(ctx, at, "%s: bad IPv6 address '%.*s'", what, (int)(n > 60 ? 60 : n), h);
    } else if (!host_ok(h, n) && !v6_ok(h, n)) {
        return mg_cfg_error(ctx, at, "%s: bad host '%.*s'", what, (int)(n > 60 ? 60 : n), h);
    }
    char *c = strndup(h, n);
    if (!c) return mg_cfg_error(ctx, at, "out of memory");
    free(*out);
    *out = c;
    return 0;
}

/* redis://host[:port][/0]; [v6] hosts in brackets. */
static int parse_url(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, char **host, uint16_t *port)
{
    const char *s;
    int rc = mg_cfg_scalar(ctx, what, v, &s);
    if (rc) return rc;
    if (!strncmp(s, "rediss://", 9)) return mg_cfg_error(ctx, v, "%s: Redis over TLS (rediss://) is not supported yet", what);
    if (strncmp(s, "redis://", 8) != 0)
        return mg_cfg_error(ctx, v, "%s: expected redis://host:port, got '%.80s'", what, s);
    const char *hp = s + 8;
    size_t hl = strcspn(hp, "/?#");
    const char *rest = hp + hl;
    if (memchr(hp, '@', hl)) return mg_cfg_error(ctx, v, "%s: Redis authentication is not supported yet", what);
    if (*rest && strcmp(rest, "/") != 0 && strcmp(rest, "/0") != 0)
        return mg_cfg_error(ctx, v, "%s: only database 0 and no options are supported ('%.60s')", what, rest);
    const char *colon = NULL;
    if (hl && hp[0] == '[') {
        const char *rb = memchr(hp, ']', hl);
        if (!rb) return mg_cfg_error(ctx, v, "%s: bad address in '%.80s'", what, s);
        if ((size_t)(rb - hp) + 1 < hl) {
            if (rb[1] != ':') return mg_cfg_error(ctx, v, "%s: bad address in '%.80s'", what, s);
            colon = rb + 1;
        }
    } else {
        colon = memchr(hp, ':', hl);
    }
    size_t host_len = colon ? (size_t)(colon - hp) : hl;
    if ((rc = set_host(ctx, what, v, hp, host_len, host))) return rc;
    *port = 6379;
    if (colon && (rc = port_of(ctx, what, v, colon + 1, hl - host_len - 1, port))) return rc;
    return 0;
}

/* default_host: no url/host/port given means localhost:6379 (Spring Boot's default). */
static int redis_apply(mg_cfg_ctx_t *ctx, const char *where, const mg_ynode_t *v, const redis_in_t *in, bool default_host)
{
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    int rc;
    if (cfg->redis.pos.file)
        return mg_cfg_error(ctx, v, "%s: Redis is already configured at %s:%d:%d; keep one", where, cfg->redis.pos.file,
                            cfg->redis.pos.line, cfg->redis.pos.col);
    if (in->url && (in->host || in->port))
        return mg_cfg_error(ctx, in->host ? in->host : in->port, "%s: give url or host and port, not both", where);
    if (in->database) {
        const char *d;
        if ((rc = mg_cfg_scalar(ctx, "database", in->database, &d))) return rc;
        if (strcmp(d, "0") != 0) return mg_cfg_error(ctx, in->database, "database: only database 0 is supported");
    }
    char *host = NULL;
    uint16_t port = 6379;
    if (in->url) {
        rc = parse_url(ctx, "url", in->url, &host, &port);
    } else if (in->host || in->port || default_host) {
        const char *h = "localhost", *p;
        rc = 0;
        if (in->host && (rc = mg_cfg_scalar(ctx, "host", in->host, &h)) == 0)
            rc = set_host(ctx, "host", in->host, h, strlen(h), &host);
        else if (!in->host && !(host = strdup(h)))
            rc = mg_cfg_error(ctx, v, "out of memory");
        if (rc == 0 && in->port && (rc = mg_cfg_scalar(ctx, "port", in->port, &p)) == 0)
            rc = port_of(ctx, "port", in->port, p, strlen(p), &port);
    } else {
        return mg_cfg_error(ctx, v, "%s: needs url (redis://host:port) or host and port", where);
    }
    if (rc == 0 && in->timeout) {
        uint64_t ms;
        if ((rc = mg_cfg_duration(ctx, "timeout", in->timeout, 1, 60000, &ms)) == 0) cfg->redis.timeout_ms = (uint32_t)ms;
    }
    if (rc) {
        free(host);
        return rc;
    }
    free(cfg->redis.host);
    cfg->redis.host = host;
    cfg->redis.port = port;
    cfg->redis.enabled = true;
    cfg->redis.pos = mg_pos_of(v);
    return 0;
}

int mg_cfg_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    (void)obj;
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    redis_in_t in = { 0 };
    if (v->kind == MG_YNODE_SCALAR &&
        (!strcmp(v->str, "off") || (mg_ynode_is_plain(v) && !strcmp(v->str, "false")))) {
        cfg->redis.enabled = false;
        cfg->redis.pos = mg_pos_of(v);
        return 0;
    }
    if (v->kind == MG_YNODE_SCALAR) {
        in.url = v;
    } else {
        int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
        if (rc || (rc = mg_cfg_walk(ctx, &native_redis_table, v, &in))) return rc;
    }
    return redis_apply(ctx, "redis", v, &in, false);
}

static int spring_redis(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const char *where, const mg_ynode_t *v)
{
    redis_in_t in = { 0 };
    int rc = mg_cfg_expect(ctx, where, v, MG_YNODE_MAP);
    if (rc || (rc = mg_cfg_walk(ctx, t, v, &in))) return rc;
    if (!in.url && !in.host && !in.port && !in.timeout && !in.database) return 0; /* empty map */
    return redis_apply(ctx, where, v, &in, true);
}

int mg_scg_data_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    (void)k;
    (void)obj;
    return spring_redis(ctx, &spring_data_redis_table, "spring.data.redis", v);
}

int mg_scg_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    (void)k;
    (void)obj;
    return spring_redis(ctx, &spring_redis_table, "spring.redis", v);
}
