/* locator: the discovery locator's configuration (both dialects) and the
 * derived configs it makes: one route per known service (see locator.h).
 *
 *   discovery.locator                       (native, snake_case)
 *   spring.cloud.gateway[.server.webflux].discovery.locator
 *     enabled, lower-case-service-id, route-id-prefix, include-expression
 *     (only 'true'), url-expression (only 'lb://'+serviceId), predicates,
 *     filters (their values: the SpEL subset of mg_locator_eval)
 *
 * Keys bind relaxed, as Spring's: lowerCaseServiceId, lower-case-service-id
 * and lower_case_service_id are one key in either dialect. */
#include "config/locator.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cfg_int.h"
#include "core/err.h"
#include "core/log.h"

#define MAX_EXPR_OUT 4096

/* ---- the SpEL subset ---- */

typedef struct {
    char *p;
    size_t n;
} sbuf_t;

static int sb_add(sbuf_t *b, const char *s, size_t n)
{
    if (b->n + n >= MAX_EXPR_OUT) return -1;
    char *q = realloc(b->p, b->n + n + 1);
    if (!q) return -ENOMEM;
    memcpy(q + b->n, s, n);
    b->p = q;
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static const char SUBSET[] = "supported: 'text' literals, integers, true, false and serviceId, joined with +";

int mg_locator_eval(const char *expr, const char *sid, char **out, char *err, size_t errlen)
{
    sbuf_t b = { 0 };
    const char *p = expr;
    int rc = 0;
    *out = NULL;
    if (sb_add(&b, "", 0)) return -ENOMEM;
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        const char *t = p;
        if (*p == '\'' || *p == '"') {
            char q = *p++;
            for (;;) {
                if (!*p) {
                    rc = mg_errf(err, errlen, "'%.120s': unterminated string literal", expr);
                    goto fail;
                }
                if (*p == q && p[1] == q) { /* SpEL: a doubled quote is one quote */
                    rc = sb_add(&b, p, 1);
                    p += 2;
                } else if (*p == q) {
                    p++;
                    break;
                } else {
                    rc = sb_add(&b, p++, 1);
                }
                if (rc) goto toolong;
            }
        } else if (isdigit((unsigned char)*p)) {
            while (isdigit((unsigned char)*p)) p++;
            if (isalpha((unsigned char)*p) || *p == '.') {
                rc = mg_errf(err, errlen, "'%.120s': only integer numbers are supported (%s)", expr, SUBSET);
                goto fail;
            }
            if (sb_add(&b, t, (size_t)(p - t))) goto toolong;
        } else if (isalpha((unsigned char)*p) || *p == '_' || *p == '#') {
            p++;
            while (isalnum((unsigned char)*p) || *p == '_') p++;
            size_t n = (size_t)(p - t);
            const char *val = NULL;
            if (n == 9 && !strncmp(t, "serviceId", 9)) val = sid;
            else if ((n == 4 && !strncmp(t, "true", 4)) || (n == 5 && !strncmp(t, "false", 5))) val = NULL;
            else {
                rc = mg_errf(err, errlen, "'%.120s': '%.*s' cannot be evaluated; only serviceId is available (%s)",
                             expr, (int)(n > 40 ? 40 : n), t, SUBSET);
                goto fail;
            }
            if (val ? sb_add(&b, val, strlen(val)) : sb_add(&b, t, n)) goto toolong;
        } else if (*p) {
            rc = mg_errf(err, errlen, "'%.120s': unexpected '%c' (%s)", expr, *p, SUBSET);
            goto fail;
        } else {
            rc = mg_errf(err, errlen, "'%.120s': expected a value (%s)", expr, SUBSET);
            goto fail;
        }
        while (isspace((unsigned char)*p)) p++;
        if (!*p) break;
        if (*p != '+') {
            rc = mg_errf(err, errlen, "'%.120s': unexpected '%c' after a value (%s)", expr, *p, SUBSET);
            goto fail;
        }
        p++;
    }
    *out = b.p;
    return 0;
toolong:
    rc = mg_errf(err, errlen, "'%.120s': value longer than %d bytes", expr, MAX_EXPR_OUT - 1);
fail:
    free(b.p);
    (void)rc;
    return MG_EPARSE;
}

/* ---- templates ---- */

static const mg_src_pos_t default_pos = { "<discovery locator>", 1, 1 };

/* One plugin named name with field values vals[i] (NULL: absent). */
static int tpl_add(mg_plugin_list_t *l, mg_plugin_kind_t kind, const char *name, const char *const *vals, size_t nvals)
{
    const mg_plugin_spec_t *spec = mg_plugin_find(kind, name, strlen(name));
    mg_plugin_cfg_t *v = spec ? realloc(l->v, (l->n + 1) * sizeof *v) : NULL;
    if (!v) return -ENOMEM;
    l->v = v;
    mg_plugin_cfg_t *pc = &l->v[l->n++];
    memset(pc, 0, sizeof *pc);
    pc->name = spec->name;
    pc->pos = default_pos;
    if (!(pc->args = calloc(nvals, sizeof *pc->args))) return -ENOMEM;
    for (size_t i = 0; i < nvals; i++) {
        mg_arg_cfg_t *a = &pc->args[pc->nargs++];
        a->key = spec->args[i].name;
        a->pos = default_pos;
        if (!(a->values = calloc(1, sizeof *a->values)) || !(a->values[0] = strdup(vals[i]))) return -ENOMEM;
        a->nvalues = 1;
    }
    return 0;
}

/* Spring's defaults (GatewayDiscoveryClientAutoConfiguration). */
static int default_templates(mg_plugin_list_t *preds, mg_plugin_list_t *filters)
{
    static const char *const path[] = { "'/'+serviceId+'/**'" };
    static const char *const rewrite[] = { "'/' + serviceId + '/?(?<remaining>.*)'", "'/${remaining}'" };
    if (tpl_add(preds, MG_PLUGIN_PREDICATE, "Path", path, 1) ||
        tpl_add(filters, MG_PLUGIN_FILTER, "RewritePath", rewrite, 2))
        return -ENOMEM;
    return 0;
}

/* t with every value evaluated for sid. On MG_EPARSE, *bad is the arg. */
static int instantiate(const mg_plugin_cfg_t *t, const char *sid, mg_plugin_cfg_t *out, const mg_arg_cfg_t **bad,
                       char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->name = t->name;
    out->pos = t->pos;
    if (t->nargs && !(out->args = calloc(t->nargs, sizeof *out->args))) return -ENOMEM;
    for (size_t i = 0; i < t->nargs; i++) {
        const mg_arg_cfg_t *ta = &t->args[i];
        mg_arg_cfg_t *a = &out->args[out->nargs++];
        a->key = ta->key;
        a->pos = ta->pos;
        if (ta->nvalues && !(a->values = calloc(ta->nvalues, sizeof *a->values))) return -ENOMEM;
        for (size_t j = 0; j < ta->nvalues; j++) {
            int rc = mg_locator_eval(ta->values[j], sid, &a->values[a->nvalues], err, errlen);
            if (rc) {
                *bad = ta;
                return rc;
            }
            a->nvalues++;
        }
    }
    return 0;
}

/* The instantiated list, each plugin validated (compiled once). */
static int instantiate_list(const mg_plugin_list_t *t, mg_plugin_kind_t kind, const char *sid, mg_plugin_list_t *out,
                            const mg_arg_cfg_t **bad, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!t->n) return 0;
    if (!(out->v = calloc(t->n, sizeof *out->v))) return -ENOMEM;
    for (size_t i = 0; i < t->n; i++) {
        int rc = instantiate(&t->v[i], sid, &out->v[out->n], bad, err, errlen);
        out->n++; /* freed with the list even when incomplete */
        if (rc) return rc;
        if ((rc = mg_plugin_validate(&out->v[out->n - 1], kind, err, errlen))) return rc;
    }
    return 0;
}

/* ---- configuration ---- */

void mg_cfg_locator_free(mg_locator_cfg_t *l)
{
    free(l->route_id_prefix);
    l->route_id_prefix = NULL;
    mg_plugin_list_free(&l->predicates);
    mg_plugin_list_free(&l->filters);
    if (l->resil) {
        mg_cfg_route_free(l->resil);
        free(l->resil);
        l->resil = NULL;
    }
}

static bool key_is(const mg_ynode_t *k, const char *name) { return mg_cfg_relaxed_eq(k->str, k->len, name); }

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* s equals want once blanks are removed */
static bool same_expr(const char *s, const char *want)
{
    for (;;) {
        while (is_ws(*s)) s++;
        if (!*s || !*want) return !*s && !*want;
        if (*s++ != *want++) return false;
    }
}

#define TEMPLATE_HINT "write values as SpEL string expressions, e.g. '/'+serviceId+'/**'"

/* A predicates:/filters: template list: names resolved, every value a
 * valid expression, and the plugins valid for a sample service. */
static int templates(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out)
{
    mg_plugin_list_free(out);
    int rc = mg_cfg_plugins_raw(ctx, kind, v, out);
    if (rc) return rc;
    for (size_t i = 0; i < out->n; i++) {
        const mg_plugin_cfg_t *t = &out->v[i];
        if (kind == MG_PLUGIN_FILTER && (!strcmp(t->name, "CircuitBreaker") || !strcmp(t->name, "Retry")))
            return mg_errf(ctx->err, ctx->errlen,
                           "%s:%d:%d: %s in discovery locator filters is not supported (its state is set up per "
                           "configured route); give the service a configured route with this filter",
                           t->pos.file, t->pos.line, t->pos.col, t->name);
        mg_plugin_list_t one = { .v = (mg_plugin_cfg_t *)t, .n = 1 }, inst;
        const mg_arg_cfg_t *bad = NULL;
        char msg[400] = "";
        rc = instantiate_list(&one, kind, "service", &inst, &bad, msg, sizeof msg);
        mg_plugin_list_free(&inst);
        if (rc == -ENOMEM) return mg_cfg_error(ctx, v, "out of memory");
        if (rc && bad)
            return mg_errf(ctx->err, ctx->errlen, "%s:%d:%d: discovery locator %s %s, argument '%s': %s; %s",
                           bad->pos.file, bad->pos.line, bad->pos.col, kind == MG_PLUGIN_FILTER ? "filter" : "predicate",
                           t->name, bad->key, msg, TEMPLATE_HINT);
        if (rc) /* msg: "FILE:LINE:COL: ..." from the plugin */
            return mg_errf(ctx->err, ctx->errlen, "%s (discovery locator, evaluated for serviceId 'service')", msg);
    }
    return 0;
}

static const char *const locator_keys[] = { "enabled",  "lower-case-service-id", "route-id-prefix",
                                            "include-expression", "url-expression", "predicates",
                                            "filters", NULL };

int mg_cfg_locator(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_locator_cfg_t *l = &((mg_config_t *)obj)->discovery.locator;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *key = v->pairs[i].key, *val = v->pairs[i].value;
        const char *s;
        if (mg_ynode_is_null(val)) continue; /* null: the default */
        if (key_is(key, "enabled")) {
            rc = mg_cfg_bool(ctx, key->str, val, &l->enabled);
        } else if (key_is(key, "lower-case-service-id")) {
            rc = mg_cfg_bool(ctx, key->str, val, &l->lower_case_service_id);
        } else if (key_is(key, "route-id-prefix")) {
            if ((rc = mg_cfg_scalar(ctx, key->str, val, &s))) return rc;
            free(l->route_id_prefix);
            l->route_id_prefix = NULL;
            const char *t = s;
            while (is_ws(*t)) t++;
            if (*t && !(l->route_id_prefix = strdup(s))) return mg_cfg_error(ctx, val, "out of memory");
        } else if (key_is(key, "include-expression")) {
            if ((rc = mg_cfg_scalar(ctx, key->str, val, &s))) return rc;
            const char *t = s;
            while (is_ws(*t)) t++;
            size_t n = strlen(t);
            while (n && is_ws(t[n - 1])) n--;
            if (!(n == 4 && !strncasecmp(t, "true", 4)))
                return mg_cfg_error(ctx, val,
                                    "%s '%.80s' is a SpEL expression meshgate cannot evaluate; only the default "
                                    "'true' (every service) is supported. To expose some services only, leave the "
                                    "locator off and give each a route: {path: /SERVICE/**, to: SERVICE, filters: "
                                    "[StripPrefix=1]}",
                                    key->str, s);
        } else if (key_is(key, "url-expression")) {
            if ((rc = mg_cfg_scalar(ctx, key->str, val, &s))) return rc;
            if (!same_expr(s, "'lb://'+serviceId"))
                return mg_cfg_error(ctx, val,
                                    "%s '%.80s' is not supported; only the default 'lb://'+serviceId (the service's "
                                    "registered instances). For another destination give the service a route with "
                                    "its own uri:",
                                    key->str, s);
        } else if (key_is(key, "predicates")) {
            if ((rc = templates(ctx, MG_PLUGIN_PREDICATE, val, &l->predicates))) return rc;
            l->custom_predicates = true;
        } else if (key_is(key, "filters")) {
            if ((rc = templates(ctx, MG_PLUGIN_FILTER, val, &l->filters))) return rc;
            l->custom_filters = true;
        } else {
            const char *sug = mg_suggest(key->str, key->len, locator_keys, 7);
            return mg_cfg_error(ctx, key, "unknown key '%.60s' in discovery locator%s%s%s", key->str,
                                sug ? " (did you mean " : " (expected one of: enabled, lower-case-service-id, "
                                                          "route-id-prefix, include-expression, url-expression, "
                                                          "predicates, filters",
                                sug ? sug : "", sug ? "?)" : ")");
        }
        if (rc) return rc;
    }
    return 0;
}

/* A CircuitBreaker or Retry default filter applies to locator routes too:
 * resilience_cfg.c resolved it into lc->resil, which make_route copies. */
int mg_cfg_locator_finish(mg_cfg_ctx_t *ctx)
{
    (void)ctx;
    return 0;
}

/* ---- derived configs ---- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static char *concat(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *s = malloc(na + nb + 1);
    if (s) {
        memcpy(s, a, na);
        memcpy(s + na, b, nb + 1);
    }
    return s;
}

/* A skipped service is logged again at every rebuild (<= 10 per second):
 * at most one warning per 10 s. Control thread only. */
static mg_warn_limit_t skip_warn;

/* The route for service name into *r; 1 = skipped (logged), 0, -ENOMEM. */
static int make_route(const mg_locator_cfg_t *lc, const mg_plugin_list_t *pt, const mg_plugin_list_t *ft,
                      const char *name, mg_route_cfg_t *r)
{
    char sid[256];
    memset(r, 0, sizeof *r);
    if (strlen(name) >= sizeof sid) {
        mg_warn_limited(&skip_warn, 10000, "discovery locator: service '%.60s...' skipped: name longer than %zu bytes",
                        name, sizeof sid - 1);
        return 1;
    }
    snprintf(sid, sizeof sid, "%s", name);
    if (lc->lower_case_service_id)
        for (char *p = sid; *p; p++) *p = (char)tolower((unsigned char)*p);
    r->from_locator = true;
    r->pos = default_pos;
    r->id = concat(lc->route_id_prefix ? lc->route_id_prefix : MG_LOCATOR_DEFAULT_PREFIX, name);
    r->uri = concat("lb://", name);
    r->cluster = strdup(name);
    if (!r->id || !r->uri || !r->cluster) return -ENOMEM;
    const mg_route_cfg_t *t = lc->resil; /* default-filters' CircuitBreaker / Retry */
    if (t && t->has_breaker) {
        r->has_breaker = true;
        r->breaker = t->breaker;
        r->time_limit_ms = t->time_limit_ms;
        r->resume_without_error = t->resume_without_error;
        if (!(r->breaker_name = strdup(t->breaker_name ? t->breaker_name : r->id))) return -ENOMEM;
        if (t->fallback_path && !(r->fallback_path = strdup(t->fallback_path))) return -ENOMEM;
    }
    if (t && t->has_retry) {
        r->has_retry = true;
        r->retry = t->retry;
    }
    const mg_arg_cfg_t *bad = NULL;
    char msg[400] = "";
    int rc = instantiate_list(pt, MG_PLUGIN_PREDICATE, sid, &r->predicates, &bad, msg, sizeof msg);
    if (!rc) rc = instantiate_list(ft, MG_PLUGIN_FILTER, sid, &r->filters, &bad, msg, sizeof msg);
    if (rc == -ENOMEM) return rc;
    if (rc) {
        size_t np = strlen(default_pos.file);
        const char *m = strncmp(msg, default_pos.file, np) ? msg : msg + np + strlen(":1:1: ");
        mg_warn_limited(&skip_warn, 10000, "discovery locator: service '%s' skipped: %s", name, m);
        return 1;
    }
    return 0;
}

/* Name -> index lookups over the base config (sorted, binary search): a
 * rebuild with 10 000 services stays well under 0.1 s. */
typedef struct {
    const char *name;
    size_t i;
} named_t;

static int cmp_named(const void *a, const void *b)
{
    return strcmp(((const named_t *)a)->name, ((const named_t *)b)->name);
}

static named_t *index_of(size_t n, const char *(*key)(const mg_config_t *, size_t), const mg_config_t *cfg)
{
    named_t *idx = malloc((n ? n : 1) * sizeof *idx);
    if (!idx) return NULL;
    for (size_t i = 0; i < n; i++) idx[i] = (named_t){ key(cfg, i), i };
    qsort(idx, n, sizeof *idx, cmp_named);
    return idx;
}

static const named_t *find(const named_t *idx, size_t n, const char *name)
{
    named_t k = { name, 0 };
    return bsearch(&k, idx, n, sizeof *idx, cmp_named);
}

static const char *cluster_name(const mg_config_t *c, size_t i) { return c->clusters[i].name; }
static const char *route_id(const mg_config_t *c, size_t i) { return c->routes[i].id; }

int mg_locator_derive(mg_config_t *base, const char *const *services, size_t n, mg_config_t **out, char *err,
                      size_t errlen)
{
    const mg_locator_cfg_t *lc = &base->discovery.locator;
    *out = base;
    if (!lc->enabled) return 0;
    *out = NULL;
    mg_plugin_list_t defp = { 0 }, deff = { 0 };
    mg_config_t *d = NULL;
    const char **names = malloc((n + base->nclusters + 1) * sizeof *names);
    named_t *cidx = index_of(base->nclusters, cluster_name, base);
    named_t *ridx = index_of(base->nroutes, route_id, base);
    size_t nn = 0;
    int rc = -ENOMEM;
    if (!names || !cidx || !ridx) goto done;
    for (size_t i = 0; i < n; i++) names[nn++] = services[i];
    for (size_t i = 0; i < base->nclusters; i++)
        if (!base->clusters[i].synthesized && !base->clusters[i].from_registry) names[nn++] = base->clusters[i].name;
    qsort(names, nn, sizeof *names, cmp_str);
    if ((!lc->custom_predicates || !lc->custom_filters) && default_templates(&defp, &deff)) goto done;
    const mg_plugin_list_t *pt = lc->custom_predicates ? &lc->predicates : &defp;
    const mg_plugin_list_t *ft = lc->custom_filters ? &lc->filters : &deff;

    if (!(d = malloc(sizeof *d))) goto done;
    memcpy(d, base, sizeof *d);
    atomic_init(&d->shares, 0);
    d->derived_from = base;
    base = NULL; /* owned by d from here */
    d->nbase_routes = d->nroutes;
    d->nbase_clusters = d->nclusters;
    /* at most one route and one cluster per name: no reallocation below */
    mg_route_cfg_t *routes = malloc((d->nroutes + nn + 1) * sizeof *routes);
    mg_cluster_cfg_t *clusters = malloc((d->nclusters + nn + 1) * sizeof *clusters);
    if (routes && d->nroutes) memcpy(routes, d->routes, d->nroutes * sizeof *routes);
    if (clusters && d->nclusters) memcpy(clusters, d->clusters, d->nclusters * sizeof *clusters);
    d->routes = routes;
    d->clusters = clusters;
    if (!routes || !clusters) {
        d->nroutes = d->nbase_routes = 0; /* nothing generated to free */
        d->nclusters = d->nbase_clusters = 0;
        goto done;
    }
    static const mg_ynode_t at = { .kind = MG_YNODE_SCALAR, .str = "", .file = "<discovery locator>", .line = 1, .col = 1 };
    for (size_t i = 0; i < nn; i++) {
        if (i && !strcmp(names[i], names[i - 1])) continue;
        mg_route_cfg_t r;
        int mr = make_route(lc, pt, ft, names[i], &r);
        bool taken = mr == 0 && find(ridx, d->nbase_routes, r.id);
        if (taken) mg_debug("discovery locator: route id '%s' is a configured route's; service skipped", r.id);
        if (mr || taken) {
            mg_cfg_route_free(&r);
            if (mr < 0) goto done;
            continue;
        }
        const named_t *c = find(cidx, d->nbase_clusters, names[i]);
        if (c) {
            r.cluster_index = c->i;
        } else { /* a registry service no route named: its cluster */
            if (mg_cfg_cluster_init(d, &d->clusters[d->nclusters], names[i], &at) != 0) {
                mg_cfg_cluster_free(&d->clusters[d->nclusters]);
                mg_cfg_route_free(&r);
                goto done;
            }
            d->clusters[d->nclusters].from_registry = true;
            r.cluster_index = d->nclusters++;
        }
        d->routes[d->nroutes++] = r;
    }
    rc = 0;
    *out = d;
    d = NULL;
done:
    if (rc) mg_errf(err, errlen, "discovery locator: out of memory");
    mg_plugin_list_free(&defp);
    mg_plugin_list_free(&deff);
    free(names);
    free(cidx);
    free(ridx);
    mg_config_free(d);
    mg_config_free(base);
    return rc;
}
