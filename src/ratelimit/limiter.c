/* limiter: see limiter.h. */
#include "ratelimit/limiter.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"

void mg_rl_cfg_default(mg_rl_cfg_t *c)
{
    *c = (mg_rl_cfg_t){
        .params = { .rate = 0, .burst = 0, .requested = 1 },
        .key = { .kind = MG_RL_KEY_IP },
        .deny_status = 429,
        .deny_empty_key = true,
        .empty_key_status = 403,
        .fail_closed = false,
        .include_headers = true,
    };
}

/* ---- registry of per-route counters ---- */

static struct {
    uint32_t nworkers;
    mg_rl_stats_t **v;
    uint32_t n, cap;
} reg;

void mg_rl_registry_init(uint32_t nworkers)
{
    reg.nworkers = nworkers ? nworkers : 1;
}

mg_rl_stats_t *mg_rl_registry_get(mg_slice_t id)
{
    if (id.n >= sizeof reg.v[0]->route_id)
        id.n = sizeof reg.v[0]->route_id - 1;
    for (uint32_t i = 0; i < reg.n; i++)
        if (mg_slice_eq(mg_slice_cstr(reg.v[i]->route_id), id))
            return reg.v[i];
    if (!reg.nworkers)
        reg.nworkers = 1;
    if (reg.n == reg.cap) {
        uint32_t ncap = reg.cap ? reg.cap * 2 : 16;
        mg_rl_stats_t **nv = realloc(reg.v, ncap * sizeof *nv);
        if (!nv)
            return NULL;
        reg.v = nv;
        reg.cap = ncap;
    }
    mg_rl_stats_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (posix_memalign((void **)&s->w, 64, reg.nworkers * sizeof *s->w)) {
        free(s);
        return NULL;
    }
    memset(s->w, 0, reg.nworkers * sizeof *s->w);
    s->nworkers = reg.nworkers;
    s->tag = reg.n;
    if (id.n)
        memcpy(s->route_id, id.p, id.n);
    reg.v[reg.n++] = s;
    return s;
}

uint32_t mg_rl_registry_count(void) { return reg.n; }

mg_rl_stats_t *mg_rl_registry_at(uint32_t i) { return i < reg.n ? reg.v[i] : NULL; }

void mg_rl_registry_free(void)
{
    for (uint32_t i = 0; i < reg.n; i++) {
        free(reg.v[i]->w);
        free(reg.v[i]);
    }
    free(reg.v);
    reg.v = NULL;
    reg.n = reg.cap = 0;
}

void mg_rl_stats_sum(const mg_rl_stats_t *s, mg_rl_local_t *t, mg_rl_counts_t *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < s->nworkers; i++) {
        const mg_rl_wcounters_t *w = &s->w[i];
        out->allowed += atomic_load_explicit(&w->allowed, memory_order_relaxed);
        out->denied += atomic_load_explicit(&w->denied, memory_order_relaxed);
        out->empty_key += atomic_load_explicit(&w->empty_key, memory_order_relaxed);
        out->backend_error += atomic_load_explicit(&w->backend_error, memory_order_relaxed);
    }
    if (t)
        out->evictions = mg_rl_local_evictions(t, s->tag);
}

/* Only worker `worker` writes its slot: a relaxed load+store, no lock prefix. */
static inline void bump(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static inline mg_rl_wcounters_t *slot(const mg_rl_limiter_t *l, uint32_t worker)
{
    if (!l->stats)
        return NULL;
    return &l->stats->w[worker < l->stats->nworkers ? worker : l->stats->nworkers - 1];
}

/* ---- decisions ---- */

int mg_rl_limiter_init(mg_rl_limiter_t *l, const mg_rl_cfg_t *cfg, mg_slice_t route_id,
                       mg_rl_stats_t *stats, char *err, size_t errlen)
{
    const char *why = NULL;
    if (mg_rl_params_check(&cfg->params))
        why = cfg->params.requested ? "replenishRate must be a number > 0" : "requestedTokens must be >= 1";
    else if (cfg->deny_status < 100 || cfg->deny_status > 599)
        why = "status code must be 100..599";
    else if (cfg->empty_key_status < 100 || cfg->empty_key_status > 599)
        why = "empty-key-status-code must be 100..599";
    else if ((cfg->key.kind == MG_RL_KEY_HEADER || cfg->key.kind == MG_RL_KEY_QUERY) && !cfg->key.name.n)
        why = "a header or query key needs a name";
    if (why) {
        if (err && errlen)
            snprintf(err, errlen, "rate limiter: %s", why);
        return MG_ECONFIG;
    }
    l->cfg = *cfg;
    l->route_id = route_id;
    l->stats = stats;
    double rt = cfg->params.rate;
    if (rt == floor(rt) && rt < 1e15)
        snprintf(l->txt_rate, sizeof l->txt_rate, "%.0f", rt);
    else
        snprintf(l->txt_rate, sizeof l->txt_rate, "%g", rt);
    snprintf(l->txt_burst, sizeof l->txt_burst, "%u", cfg->params.burst);
    snprintf(l->txt_requested, sizeof l->txt_requested, "%u", cfg->params.requested);
    return 0;
}

bool mg_rl_begin(const mg_rl_limiter_t *l, uint32_t worker, const mg_rl_key_input_t *in,
                 char *buf, size_t cap, mg_slice_t *key, mg_rl_verdict_t *v)
{
    mg_rl_key_resolve(&l->cfg.key, in, buf, cap, key);
    if (key->n)
        return false;
    mg_rl_wcounters_t *c = slot(l, worker);
    if (c)
        bump(&c->empty_key);
    *v = (mg_rl_verdict_t){ .allowed = !l->cfg.deny_empty_key,
                            .status = l->cfg.deny_empty_key ? l->cfg.empty_key_status : 0,
                            .r = { .allowed = !l->cfg.deny_empty_key, .remaining = -1 } };
    return true;
}

static mg_rl_verdict_t verdict(const mg_rl_limiter_t *l, uint32_t worker, mg_rl_result_t r, bool backend_error)
{
    mg_rl_wcounters_t *c = slot(l, worker);
    if (c) {
        if (backend_error)
            bump(&c->backend_error);
        bump(r.allowed ? &c->allowed : &c->denied);
    }
    return (mg_rl_verdict_t){ .allowed = r.allowed, .status = r.allowed ? 0 : l->cfg.deny_status,
                              .headers = l->cfg.include_headers, .backend_error = backend_error, .r = r };
}

mg_rl_verdict_t mg_rl_decide_local(const mg_rl_limiter_t *l, uint32_t worker, mg_rl_local_t *t,
                                   mg_slice_t key, int64_t now_us)
{
    uint32_t tag = l->stats ? l->stats->tag : 0;
    return verdict(l, worker, mg_rl_local_take(t, &l->cfg.params, tag, l->route_id, key, now_us), false);
}

mg_rl_verdict_t mg_rl_verdict_redis(const mg_rl_limiter_t *l, uint32_t worker, int rc,
                                    const mg_rl_redis_reply_t *reply)
{
    if (rc == 0 && reply && reply->status == 0)
        return verdict(l, worker, reply->result, false);
    mg_rl_result_t r = { .allowed = !l->cfg.fail_closed, .remaining = -1,
                         .retry_after_s = l->cfg.fail_closed ? 1 : 0 };
    return verdict(l, worker, r, true);
}

/* ---- headers ---- */

static const mg_slice_t hdr_names[] = {
    MG_SLICE_LIT("X-RateLimit-Remaining"),       MG_SLICE_LIT("X-RateLimit-Replenish-Rate"),
    MG_SLICE_LIT("X-RateLimit-Burst-Capacity"),  MG_SLICE_LIT("X-RateLimit-Requested-Tokens"),
    MG_SLICE_LIT("Retry-After"),
};

/* Decimal text of v at p (no printf on the request path). */
static size_t put_int(char *p, long long v)
{
    char tmp[24];
    size_t n = 0, o = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        p[o++] = '-';
    while (n)
        p[o++] = tmp[--n];
    return o;
}

void mg_rl_headers(const mg_rl_limiter_t *l, const mg_rl_verdict_t *v, mg_rl_hdrs_t *h)
{
    h->n = 0;
    size_t used = 0;
    if (v->headers) {
        size_t n = put_int(h->buf, v->r.remaining);
        h->name[0] = (hdr_names[0]);
        h->value[0] = mg_slice(h->buf, n);
        used = n;
        h->name[1] = (hdr_names[1]);
        h->value[1] = mg_slice_cstr(l->txt_rate);
        h->name[2] = (hdr_names[2]);
        h->value[2] = mg_slice_cstr(l->txt_burst);
        h->name[3] = (hdr_names[3]);
        h->value[3] = mg_slice_cstr(l->txt_requested);
        h->n = 4;
    }
    if (!v->allowed && v->r.retry_after_s > 0) {
        size_t n = put_int(h->buf + used, v->r.retry_after_s);
        h->name[h->n] = (hdr_names[4]);
        h->value[h->n] = mg_slice(h->buf + used, n);
        h->n++;
    }
}

size_t mg_rl_format_headers(const mg_rl_limiter_t *l, const mg_rl_verdict_t *v, char *buf, size_t cap)
{
    mg_rl_hdrs_t h;
    mg_rl_headers(l, v, &h);
    size_t o = 0;
    for (uint32_t i = 0; i < h.n; i++) {
        size_t need = h.name[i].n + 2 + h.value[i].n + 2;
        if (o + need + 1 > cap)
            return 0;
        memcpy(buf + o, h.name[i].p, h.name[i].n);
        o += h.name[i].n;
        memcpy(buf + o, ": ", 2);
        o += 2;
        memcpy(buf + o, h.value[i].p, h.value[i].n);
        o += h.value[i].n;
        memcpy(buf + o, "\r\n", 2);
        o += 2;
    }
    if (cap)
        buf[o] = 0;
    return o;
}
