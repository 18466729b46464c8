/* resil: see resil.h. */
#include "proxy/resil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "core/err.h"
#include "core/log.h"
#include "proxy/proxy.h"

typedef enum { R_BREAKER, R_BULKHEAD, R_BUDGET, R_OUTLIER } rkind_t;

struct mg_resil_ref {
    rkind_t kind;
    char name[160];
    void *obj;
    uint32_t refs;
    bool current;         /* the registry's answer for this name */
    uint32_t *ep_index;   /* R_OUTLIER: endpoint stats indices, for carry */
    uint32_t neps;
    uint64_t next_sweep;  /* R_OUTLIER: next sweep (control thread only) */
    mg_resil_ref_t *next;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static mg_resil_ref_t *reg;
static uint32_t nslots = 2;

void mg_resil_init(uint32_t nworkers) { nslots = nworkers + 1; }
uint32_t mg_resil_control_slot(void) { return nslots - 1; }
uint64_t mg_now_ms(void) { return uv_hrtime() / 1000000; }

static void on_breaker_event(void *ud, const mg_cb_event_t *ev)
{
    (void)ud;
    mg_warn("circuit breaker '%s': %s -> %s (%s; failure rate %.1f%%, slow rate %.1f%%, %u calls)", ev->name,
            mg_cb_state_name(ev->from), mg_cb_state_name(ev->to), mg_cb_reason_name(ev->reason),
            (double)ev->failure_rate, (double)ev->slow_rate, ev->calls);
}

static void on_outlier_event(void *ud, uint32_t ep, mg_od_event_t ev, uint64_t duration_ms, uint64_t now_ms)
{
    (void)now_ms;
    const char *cluster = ud;
    static const char *what[] = { "ejected (consecutive 5xx)", "ejected (consecutive gateway errors)",
                                  "not ejected (max_ejection_percent)", "back in rotation" };
    if (ev <= MG_OD_EJECT_GATEWAY)
        mg_warn("%s endpoint #%u %s for %llu ms", cluster, ep, what[ev], (unsigned long long)duration_ms);
    else
        mg_warn("%s endpoint #%u %s", cluster, ep, what[ev]);
}

static mg_resil_ref_t *find_current(rkind_t kind, const char *name)
{
    for (mg_resil_ref_t *r = reg; r; r = r->next)
        if (r->current && r->kind == kind && strcmp(r->name, name) == 0)
            return r;
    return NULL;
}

static mg_resil_ref_t *add(rkind_t kind, const char *name, void *obj)
{
    mg_resil_ref_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    snprintf(r->name, sizeof r->name, "%s", name);
    r->obj = obj;
    r->refs = 1;
    r->current = true;
    r->next = reg;
    reg = r;
    return r;
}

static void obj_free(mg_resil_ref_t *r)
{
    switch (r->kind) {
    case R_BREAKER: mg_breaker_free(r->obj); break;
    case R_BULKHEAD: mg_bulkhead_free(r->obj); break;
    case R_BUDGET: mg_retry_budget_free(r->obj); break;
    case R_OUTLIER: mg_outlier_free(r->obj); break;
    }
    free(r->ep_index);
}

static void unref(mg_resil_ref_t *r)
{
    if (!r || --r->refs > 0)
        return;
    for (mg_resil_ref_t **pp = &reg; *pp; pp = &(*pp)->next) {
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    }
    obj_free(r);
    free(r);
}

static mg_resil_ref_t *get_breaker(const char *name, const mg_breaker_cfg_t *cfg)
{
    mg_resil_ref_t *r = find_current(R_BREAKER, name);
    if (r && mg_breaker_cfg_equal(mg_breaker_cfg(r->obj), cfg)) {
        r->refs++;
        return r;
    }
    mg_breaker_t *b = mg_breaker_new(name, cfg, nslots, mg_now_ms(), on_breaker_event, NULL);
    if (!b)
        return NULL;
    if (r)
        r->current = false; /* config changed: a fresh breaker from now on */
    mg_resil_ref_t *n = add(R_BREAKER, name, b);
    if (!n)
        mg_breaker_free(b);
    return n;
}

static mg_resil_ref_t *get_bulkhead(const char *name, const mg_bulkhead_cfg_t *cfg)
{
    mg_resil_ref_t *r = find_current(R_BULKHEAD, name);
    if (r) {
        mg_bulkhead_update(r->obj, cfg);
        r->refs++;
        return r;
    }
    mg_bulkhead_t *bh = mg_bulkhead_new(cfg, nslots);
    mg_resil_ref_t *n = bh ? add(R_BULKHEAD, name, bh) : NULL;
    if (bh && !n)
        mg_bulkhead_free(bh);
    return n;
}

static mg_resil_ref_t *get_budget(const char *name, const mg_retry_budget_cfg_t *cfg)
{
    mg_resil_ref_t *r = find_current(R_BUDGET, name);
    if (r) {
        mg_retry_budget_update(r->obj, cfg);
        r->refs++;
        return r;
    }
    mg_retry_budget_t *b = mg_retry_budget_new(cfg, nslots);
    mg_resil_ref_t *n = b ? add(R_BUDGET, name, b) : NULL;
    if (b && !n)
        mg_retry_budget_free(b);
    return n;
}

static bool outlier_cfg_eq(const mg_outlier_cfg_t *a, const mg_outlier_cfg_t *b)
{
    return memcmp(a, b, sizeof *a) == 0;
}

static mg_resil_ref_t *get_outlier(const char *name, const mg_outlier_cfg_t *cfg, const mg_cluster_t *c)
{
    mg_resil_ref_t *r = find_current(R_OUTLIER, name);
    if (r && r->neps == c->neps && outlier_cfg_eq(mg_outlier_cfg(r->obj), cfg)) {
        bool same = true;
        for (uint32_t i = 0; i < c->neps && same; i++)
            same = r->ep_index[i] == c->eps[i].stats->index;
        if (same) {
            r->refs++;
            return r;
        }
    }
    /* the detector's hook gets the cluster name; it lives in the ref */
    mg_resil_ref_t *n = calloc(1, sizeof *n);
    uint32_t *idx = calloc(c->neps ? c->neps : 1, sizeof *idx);
    if (!n || !idx) {
        free(n);
        free(idx);
        return NULL;
    }
    snprintf(n->name, sizeof n->name, "%s", name);
    mg_outlier_t *d = mg_outlier_new(cfg, c->neps, on_outlier_event, n->name);
    if (!d) {
        free(n);
        free(idx);
        return NULL;
    }
    for (uint32_t i = 0; i < c->neps; i++) {
        idx[i] = c->eps[i].stats->index;
        for (uint32_t j = 0; r && j < r->neps; j++)
            if (r->ep_index[j] == idx[i])
                mg_outlier_carry(d, i, r->obj, j);
    }
    if (r)
        r->current = false;
    n->kind = R_OUTLIER;
    n->obj = d;
    n->refs = 1;
    n->current = true;
    n->ep_index = idx;
    n->neps = c->neps;
    n->next = reg;
    reg = n;
    return n;
}

int mg_resil_build(mg_snapshot_t *s, mg_resil_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->nclusters = s->clusters.n;
    out->nroutes = mg_route_count(s->routes);
    out->clusters = calloc(out->nclusters ? out->nclusters : 1, sizeof *out->clusters);
    out->route_breakers = calloc(out->nroutes ? out->nroutes : 1, sizeof *out->route_breakers);
    out->route_refs = calloc(out->nroutes ? out->nroutes : 1, sizeof *out->route_refs);
    if (!out->clusters || !out->route_breakers || !out->route_refs) {
        mg_resil_release(out);
        return -ENOMEM;
    }
    int rc = 0;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < out->nclusters && rc == 0; i++) {
        const mg_cluster_t *c = &s->clusters.clusters[i];
        const mg_cluster_cfg_t *cc = c->cfg;
        mg_cluster_rt_t *rt = &out->clusters[i];
        char name[160];
        snprintf(name, sizeof name, "cluster:%s", cc->name);
        rt->refs[0] = get_bulkhead(name, &cc->bulkhead);
        rt->refs[1] = get_budget(name, &cc->retry_budget);
        if (cc->has_breaker)
            rt->refs[2] = get_breaker(name, &cc->breaker);
        if (cc->has_outlier)
            rt->refs[3] = get_outlier(name, &cc->outlier, c);
        if (!rt->refs[0] || !rt->refs[1] || (cc->has_breaker && !rt->refs[2]) || (cc->has_outlier && !rt->refs[3])) {
            snprintf(err, errlen, "%s:%d:%d: cluster '%s': invalid resilience settings",
                     cc->pos.file ? cc->pos.file : "?", cc->pos.line, cc->pos.col, cc->name);
            rc = MG_ECONFIG;
            break;
        }
        rt->bulkhead = rt->refs[0]->obj;
        rt->budget = rt->refs[1]->obj;
        rt->breaker = rt->refs[2] ? rt->refs[2]->obj : NULL;
        rt->outlier = rt->refs[3] ? rt->refs[3]->obj : NULL;
    }
    for (size_t i = 0; i < out->nroutes && rc == 0; i++) {
        const mg_route_t *r = mg_route_at(s->routes, i);
        const mg_route_cfg_t *rcfg = r->cfg;
        if (!rcfg->has_breaker)
            continue;
        char name[160];
        if (rcfg->breaker_name)
            snprintf(name, sizeof name, "%s", rcfg->breaker_name);
        else
            snprintf(name, sizeof name, "route:%s", rcfg->id);
        out->route_refs[i] = get_breaker(name, &rcfg->breaker);
        if (!out->route_refs[i]) {
            snprintf(err, errlen, "%s:%d:%d: route '%s': invalid circuit breaker settings",
                     rcfg->pos.file ? rcfg->pos.file : "?", rcfg->pos.line, rcfg->pos.col, rcfg->id);
            rc = MG_ECONFIG;
            break;
        }
        out->route_breakers[i] = out->route_refs[i]->obj;
    }
    pthread_mutex_unlock(&reg_mu);
    if (rc)
        mg_resil_release(out);
    return rc;
}

void mg_resil_hold(mg_resil_ref_t *r)
{
    pthread_mutex_lock(&reg_mu);
    r->refs++;
    pthread_mutex_unlock(&reg_mu);
}

void mg_resil_drop(mg_resil_ref_t *r)
{
    pthread_mutex_lock(&reg_mu);
    unref(r);
    pthread_mutex_unlock(&reg_mu);
}

void mg_resil_release(mg_resil_t *r)
{
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; r->clusters && i < r->nclusters; i++)
        for (int k = 0; k < 4; k++)
            unref(r->clusters[i].refs[k]);
    for (size_t i = 0; r->route_refs && i < r->nroutes; i++)
        unref(r->route_refs[i]);
    pthread_mutex_unlock(&reg_mu);
    free(r->clusters);
    free(r->route_breakers);
    free(r->route_refs);
    memset(r, 0, sizeof *r);
}

void mg_resil_tick(mg_resil_t *r, const mg_snapshot_t *s, uint64_t now_ms)
{
    (void)s;
    for (size_t i = 0; i < r->nclusters; i++) {
        mg_cluster_rt_t *rt = &r->clusters[i];
        if (rt->breaker)
            mg_breaker_tick(rt->breaker, now_ms);
        mg_resil_ref_t *od = rt->refs[3];
        if (rt->outlier && now_ms >= od->next_sweep) {
            mg_outlier_sweep(rt->outlier, now_ms);
            od->next_sweep = now_ms + mg_outlier_cfg(rt->outlier)->interval_ms;
        }
    }
    for (size_t i = 0; i < r->nroutes; i++)
        if (r->route_breakers[i])
            mg_breaker_tick(r->route_breakers[i], now_ms);
}
