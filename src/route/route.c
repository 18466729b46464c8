/* route: the compiled route table.
 *
 * Build: each route's predicates (the native "path:" shorthand first) and
 * filters are compiled once; routes are ranked by (order, declaration);
 * each is filed in the trie under the literal prefix of its Path predicate
 * (routes without one sit at the root); Weight predicates are grouped.
 * Match: the trie gives the candidate rank lists along the request path;
 * a k-way merge visits candidates in rank order and the first whose
 * predicates all hold wins, so the result is exactly "first route by
 * (order, declaration)" while the work depends on the path, not on the
 * number of routes. No allocation per request. */
#include "route/route.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/json.h"
#include "filter/rate_limit.h"
#include "filter/registry.h"
#include "ratelimit/limiter.h"
#include "route/predicate.h"
#include "route/trie.h"

/* Per-worker match counters: one row per worker, each on its own cache
 * lines; a worker only writes its row (relaxed atomics, no RMW contention). */
typedef struct {
    uint32_t nworkers, nroutes;
    size_t stride; /* counters per row, rounded to a cache line */
    _Atomic uint64_t *c;
} hits_t;

struct mg_route_table {
    mg_route_t *routes;          /* declaration order */
    mg_route_compiled_t *comp;   /* parallel to routes */
    size_t n;
    uint32_t *by_rank;           /* rank -> index into routes */
    mg_trie_t *trie;
    mg_chain_t defaults;
    mg_weight_group_t *groups;
    size_t ngroups;
    hits_t hits;
};


static const mg_config_t *g_sort_cfg; /* qsort context (control thread only) */

static int by_order(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    int32_t ox = g_sort_cfg->routes[x].order, oy = g_sort_cfg->routes[y].order;
    if (ox != oy) return ox < oy ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Index of the one rate limiter in a compiled chain (-1: none); a second
 * one is an error at its position. */
static int find_limiter(const mg_chain_t *ch, const mg_plugin_list_t *l, int *out, char *err, size_t errlen)
{
    *out = -1;
    for (size_t k = 0; k < ch->n; k++) {
        if (!mg_plugin_is_rate_limiter(ch->v[k].spec)) continue;
        if (*out >= 0) {
            const mg_src_pos_t *p = &l->v[k].pos, *f = &l->v[*out].pos;
            return mg_errf(err, errlen, "%s:%d:%d: a second rate limiter (the first is at %s:%d:%d); a route takes one",
                        p->file, p->line, p->col, f->file, f->line, f->col);
        }
        *out = (int)k;
    }
    return 0;
}

/* The route's limiter: its own RequestRateLimiter/RateLimiter filter (or
 * native rate_limit: block), else one in default-filters (then each route
 * still gets its own buckets, keyed by its id, as in Spring). */
static int build_limiter(mg_route_table_t *t, const mg_config_t *cfg, size_t i, char *err, size_t errlen)
{
    const mg_route_cfg_t *rc = &cfg->routes[i];
    mg_route_compiled_t *c = &t->comp[i];
    int own, def, x;
    if ((x = find_limiter(&c->filters, &rc->filters, &own, err, errlen))) return x;
    if ((x = find_limiter(&t->defaults, &cfg->default_filters, &def, err, errlen))) return x;
    if (own >= 0 && def >= 0) {
        const mg_src_pos_t *p = &rc->filters.v[own].pos, *f = &cfg->default_filters.v[def].pos;
        return mg_errf(err, errlen, "%s:%d:%d: a second rate limiter (default-filters has one at %s:%d:%d); a route takes one",
                    p->file, p->line, p->col, f->file, f->line, f->col);
    }
    if (own < 0 && def < 0) return 0;
    const mg_plugin_inst_t *in = own >= 0 ? &c->filters.v[own] : &t->defaults.v[def];
    const mg_src_pos_t *p = own >= 0 ? &rc->filters.v[own].pos : &cfg->default_filters.v[def].pos;
    mg_slice_t id = mg_slice_cstr(rc->id);
    char why[200];
    if (!(c->limiter = calloc(1, sizeof *c->limiter))) return mg_errf(err, errlen, "out of memory");
    if (mg_rl_limiter_init(c->limiter, mg_rate_limit_cfg(in->state), id, mg_rl_registry_get(id), why, sizeof why) != 0)
        return mg_errf(err, errlen, "%s:%d:%d: %s", p->file, p->line, p->col, why);
    return 0;
}

static int compile_route(mg_route_table_t *t, const mg_config_t *cfg, size_t i, char *err, size_t errlen)
{
    const mg_route_cfg_t *rc = &cfg->routes[i];
    mg_route_t *r = &t->routes[i];
    mg_route_compiled_t *c = &t->comp[i];
    r->cfg = rc;
    r->compiled = c;
    c->defaults = &t->defaults;
    c->path_pred = -1;
    c->hits = &t->hits;
    c->index = (uint32_t)i;

    /* the native "path:" shorthand is a Path predicate put first */
    mg_plugin_list_t preds = rc->predicates;
    mg_plugin_cfg_t *tmp = NULL;
    char *pv[1];
    mg_arg_cfg_t pa;
    if (rc->path) {
        if (!(tmp = calloc(rc->predicates.n + 1, sizeof *tmp))) return mg_errf(err, errlen, "out of memory");
        pv[0] = rc->path;
        pa = (mg_arg_cfg_t){ "patterns", pv, 1, rc->path_pos.file ? rc->path_pos : rc->pos };
        tmp[0] = (mg_plugin_cfg_t){ mg_pred_path.name, &pa, 1, pa.pos };
        if (rc->predicates.n) memcpy(tmp + 1, rc->predicates.v, rc->predicates.n * sizeof *tmp);
        preds = (mg_plugin_list_t){ tmp, rc->predicates.n + 1 };
    }
    int x = mg_chain_build(MG_PLUGIN_PREDICATE, &preds, &c->preds, err, errlen);
    free(tmp);
    if (x) return x;
    if ((x = mg_chain_build(MG_PLUGIN_FILTER, &rc->filters, &c->filters, err, errlen))) return x;
    for (size_t k = 0; k < c->preds.n; k++)
        if (c->preds.v[k].spec == &mg_pred_path) {
            c->path_pred = (int)k;
            break;
        }
    r->path = c->path_pred >= 0 && mg_pred_path_count(c->preds.v[c->path_pred].state)
                  ? (mg_path_pattern_t *)mg_pred_path_at(c->preds.v[c->path_pred].state, 0)
                  : NULL;
    if ((x = build_limiter(t, cfg, i, err, errlen))) return x;
    r->has_filters = c->filters.n > 0 || t->defaults.n > 0;
    r->has_response_filters = c->filters.any_response || t->defaults.any_response;
    return 0;
}

static int build_weights(mg_route_table_t *t, char *err, size_t errlen)
{
    const char *names[MG_MAX_WEIGHT_GROUPS];
    for (size_t i = 0; i < t->n; i++) {
        mg_route_compiled_t *c = &t->comp[i];
        for (size_t k = 0; k < c->preds.n; k++) {
            if (c->preds.v[k].spec != &mg_pred_weight) continue;
            void *st = c->preds.v[k].state;
            const char *g = mg_pred_weight_group(st);
            size_t gid = 0;
            while (gid < t->ngroups && strcmp(names[gid], g) != 0) gid++;
            if (gid == t->ngroups) {
                if (gid == MG_MAX_WEIGHT_GROUPS) {
                    const mg_src_pos_t *p = &t->routes[i].cfg->pos;
                    return mg_errf(err, errlen, "%s:%d:%d: too many Weight groups (at most %d)", p->file, p->line, p->col,
                                MG_MAX_WEIGHT_GROUPS);
                }
                mg_weight_group_t *q = realloc(t->groups, (t->ngroups + 1) * sizeof *q);
                if (!q) return mg_errf(err, errlen, "out of memory");
                t->groups = q;
                memset(&t->groups[gid], 0, sizeof t->groups[gid]);
                names[gid] = g;
                t->ngroups++;
            }
            mg_weight_group_t *wg = &t->groups[gid];
            if (wg->nslots >= UINT16_MAX - 1) return mg_errf(err, errlen, "too many routes in Weight group '%s'", g);
            uint32_t *q = realloc(wg->cum, (wg->nslots + 1) * sizeof *q);
            if (!q) return mg_errf(err, errlen, "out of memory");
            wg->cum = q;
            uint64_t prev = wg->nslots ? wg->cum[wg->nslots - 1] : 0, w = mg_pred_weight_value(st);
            if (prev + w > UINT32_MAX) return mg_errf(err, errlen, "Weight group '%s': weights add up to too much", g);
            wg->cum[wg->nslots] = (uint32_t)(prev + w);
            mg_pred_weight_assign(st, (uint32_t)gid, wg->nslots);
            wg->nslots++;
        }
    }
    return 0;
}

int mg_route_table_build(const mg_config_t *cfg, mg_route_table_t **out, char *err, size_t errlen)
{
    *out = NULL;
    mg_route_table_t *t = calloc(1, sizeof *t);
    size_t n = cfg->nroutes;
    if (!t) return mg_errf(err, errlen, "out of memory");
    if (!(t->trie = mg_trie_new()) ||
        (n && (!(t->routes = calloc(n, sizeof *t->routes)) || !(t->comp = calloc(n, sizeof *t->comp)) ||
               !(t->by_rank = calloc(n, sizeof *t->by_rank))))) {
        mg_route_table_free(t);
        return mg_errf(err, errlen, "out of memory");
    }
    int rc = mg_chain_build(MG_PLUGIN_FILTER, &cfg->default_filters, &t->defaults, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = compile_route(t, cfg, i, err, errlen);
        t->n = i + 1; /* so free() releases what was compiled, even the failed one */
    }
    if (rc == 0) rc = build_weights(t, err, errlen);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) t->by_rank[i] = (uint32_t)i;
        g_sort_cfg = cfg;
        if (n) qsort(t->by_rank, n, sizeof *t->by_rank, by_order);
        for (uint32_t rank = 0; rc == 0 && rank < n; rank++) {
            const mg_route_compiled_t *c = &t->comp[t->by_rank[rank]];
            if (c->path_pred < 0) {
                rc = mg_trie_insert(t->trie, NULL, rank);
                continue;
            }
            const void *st = c->preds.v[c->path_pred].state;
            for (size_t k = 0; rc == 0 && k < mg_pred_path_count(st); k++)
                rc = mg_trie_insert(t->trie, mg_path_pattern_text(mg_pred_path_at(st, k)), rank);
        }
        if (rc) rc = mg_errf(err, errlen, "out of memory");
    }
    if (rc == 0) {
        hits_t *h = &t->hits;
        h->nworkers = cfg->workers ? cfg->workers : 1;
        h->nroutes = (uint32_t)n;
        h->stride = (n + 7) / 8 * 8;
        if (h->stride == 0) h->stride = 8;
        size_t bytes = h->stride * h->nworkers * sizeof *h->c;
        if (!(h->c = aligned_alloc(64, bytes))) rc = mg_errf(err, errlen, "out of memory");
        else
            for (size_t i = 0; i < h->stride * h->nworkers; i++) atomic_init(&h->c[i], 0);
    }
    if (rc) {
        mg_route_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void mg_route_table_free(mg_route_table_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) {
        mg_chain_free(&t->comp[i].preds);
        mg_chain_free(&t->comp[i].filters);
        free(t->comp[i].limiter);
    }
    mg_chain_free(&t->defaults);
    for (size_t i = 0; i < t->ngroups; i++) free(t->groups[i].cum);
    free(t->groups);
    mg_trie_free(t->trie);
    free(t->by_rank);
    free(t->comp);
    free(t->routes);
    free(t->hits.c);
    free(t);
}

static bool route_holds(const mg_route_compiled_t *c, mg_pred_env_t *env)
{
    env->vars->n = 0;
    for (size_t k = 0; k < c->preds.n; k++)
        if (!c->preds.v[k].spec->test(c->preds.v[k].state, env)) return false;
    return true;
}

const mg_route_t *mg_route_match(const mg_route_table_t *t, const mg_match_ctx_t *ctx, mg_path_vars_t *vars)
{
    mg_path_vars_t local;
    mg_pred_env_t env;
    env.ctx = ctx;
    env.vars = vars ? vars : &local;
    env.groups = t->groups;
    memset(env.drawn, 0, sizeof env.drawn);
    env.local_rng = (uint64_t)(uintptr_t)&env ^ 0x2545F4914F6CDD1Dull;
    env.vars->n = 0;

    const mg_http_msg_t *req = ctx->req;
    const char *p = req->path.p ? req->path.p : "";
    size_t n = req->path.p ? req->path.n : 0;
    mg_trie_list_t lists[MG_TRIE_MAX_DEPTH + 1];
    uint32_t at[MG_TRIE_MAX_DEPTH + 1] = { 0 };
    size_t k = mg_trie_collect(t->trie, p, n, lists);

    if (k == 1) { /* the common case: one list, no merge */
        for (uint32_t i = 0; i < lists[0].n; i++) {
            uint32_t idx = t->by_rank[lists[0].v[i]];
            if (route_holds(&t->comp[idx], &env)) return &t->routes[idx];
        }
    } else {
        for (;;) {
            uint32_t best = UINT32_MAX;
            for (size_t j = 0; j < k; j++)
                if (at[j] < lists[j].n && lists[j].v[at[j]] < best) best = lists[j].v[at[j]];
            if (best == UINT32_MAX) break;
            for (size_t j = 0; j < k; j++)
                if (at[j] < lists[j].n && lists[j].v[at[j]] == best) at[j]++;
            uint32_t idx = t->by_rank[best];
            if (route_holds(&t->comp[idx], &env)) return &t->routes[idx];
        }
    }
    env.vars->n = 0;
    return NULL;
}

const struct mg_rl_limiter *mg_route_rate_limiter(const mg_route_t *r)
{
    const mg_route_compiled_t *c = r ? r->compiled : NULL;
    return c ? c->limiter : NULL;
}

size_t mg_route_count(const mg_route_table_t *t) { return t->n; }

const mg_route_t *mg_route_at(const mg_route_table_t *t, size_t i) { return i < t->n ? &t->routes[i] : NULL; }

/* ---- counters ---- */

size_t mg_route_index(const mg_route_table_t *t, const mg_route_t *r) { return (size_t)(r - t->routes); }

void mg_route_hit(const mg_route_t *r, uint32_t worker)
{
    const mg_route_compiled_t *rc = r->compiled;
    const hits_t *h = rc->hits;
    if (worker >= h->nworkers) worker = h->nworkers - 1;
    _Atomic uint64_t *c = &h->c[worker * h->stride + rc->index];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

uint64_t mg_route_hits(const mg_route_t *r)
{
    const mg_route_compiled_t *rc = r->compiled;
    const hits_t *h = rc->hits;
    uint64_t sum = 0;
    for (uint32_t w = 0; w < h->nworkers; w++)
        sum += atomic_load_explicit(&h->c[w * h->stride + rc->index], memory_order_relaxed);
    return sum;
}

/* ---- description (admin GET /routes) ---- */

void mg_plugin_list_json(const mg_plugin_list_t *l, mg_buf_t *out)
{
    mg_buf_add(out, "[", 1);
    for (size_t i = 0; i < l->n; i++) {
        const mg_plugin_cfg_t *pc = &l->v[i];
        mg_buf_add(out, i ? ",{\"name\":" : "{\"name\":", i ? 9 : 8);
        mg_buf_json_str(out, mg_slice_cstr(pc->name));
        mg_buf_add(out, ",\"args\":{", 9);
        for (size_t j = 0; j < pc->nargs; j++) {
            const mg_arg_cfg_t *a = &pc->args[j];
            if (j) mg_buf_add(out, ",", 1);
            mg_buf_json_str(out, mg_slice_cstr(a->key));
            mg_buf_add(out, ":", 1);
            bool list = a->nvalues != 1;
            const mg_plugin_spec_t *s = mg_plugin_find(MG_PLUGIN_PREDICATE, pc->name, strlen(pc->name));
            if (!s) s = mg_plugin_find(MG_PLUGIN_FILTER, pc->name, strlen(pc->name));
            for (size_t f = 0; s && f < MG_MAX_ARGS && s->args[f].name; f++)
                if (!strcmp(s->args[f].name, a->key) && (s->args[f].flags & MG_ARG_LIST)) list = true;
            if (list) mg_buf_add(out, "[", 1);
            for (size_t v = 0; v < a->nvalues; v++) {
                if (v) mg_buf_add(out, ",", 1);
                mg_buf_json_str(out, mg_slice_cstr(a->values[v]));
            }
            if (list) mg_buf_add(out, "]", 1);
        }
        mg_buf_add(out, "}}", 2);
    }
    mg_buf_add(out, "]", 1);
}

void mg_route_describe_json(const mg_route_t *r, mg_buf_t *out)
{
    const mg_route_cfg_t *rc = r->cfg;
    mg_buf_add(out, "{\"id\":", 6);
    mg_buf_json_str(out, mg_slice_cstr(rc->id));
    /* flat summary first (path shorthand, cluster), then the full model */
    mg_buf_add(out, ",\"path\":", 8);
    if (rc->path)
        mg_buf_json_str(out, mg_slice_cstr(rc->path));
    else
        mg_buf_add(out, "null", 4);
    mg_buf_add(out, ",\"cluster\":", 11);
    mg_buf_json_str(out, mg_slice_cstr(rc->cluster));
    mg_buf_addf(out, ",\"order\":%d,\"predicates\":", (int)rc->order);
    if (rc->path) {
        /* the path: shorthand, shown as the Path predicate it is */
        mg_buf_add(out, "[{\"name\":\"Path\",\"args\":{\"patterns\":[", 36);
        mg_buf_json_str(out, mg_slice_cstr(rc->path));
        mg_buf_add(out, "]}}", 3);
        if (rc->predicates.n) {
            mg_buf_t tmp;
            mg_buf_init(&tmp);
            mg_plugin_list_json(&rc->predicates, &tmp);
            if (tmp.p && tmp.len > 2) {
                mg_buf_add(out, ",", 1);
                mg_buf_add(out, tmp.p + 1, tmp.len - 1);
            } else {
                mg_buf_add(out, "]", 1);
            }
            mg_buf_free(&tmp);
        } else {
            mg_buf_add(out, "]", 1);
        }
    } else {
        mg_plugin_list_json(&rc->predicates, out);
    }
    mg_buf_add(out, ",\"filters\":", 11);
    mg_plugin_list_json(&rc->filters, out);
    mg_buf_add(out, ",\"destination\":{\"cluster\":", 26);
    mg_buf_json_str(out, mg_slice_cstr(rc->cluster));
    if (rc->uri) {
        mg_buf_add(out, ",\"uri\":", 7);
        mg_buf_json_str(out, mg_slice_cstr(rc->uri));
    }
    mg_buf_add(out, "}", 1);
    mg_buf_addf(out, ",\"metadata\":{\"response-timeout\":%u,\"connect-timeout\":%u}", rc->response_timeout_ms,
                rc->connect_timeout_ms);
    if (rc->from_locator)
        mg_buf_lit(out, ",\"source\":\"discovery-locator\"");
    mg_buf_addf(out, ",\"matches\":%llu}", (unsigned long long)mg_route_hits(r));
}
