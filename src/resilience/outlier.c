/* outlier: Envoy-style passive outlier detection. See outlier.h.
 * Per endpoint: one counter word [gateway:32 | 5xx:32] updated by CAS, and
 * a state word HEALTHY -> EJECTING (claimed by one worker, filling in the
 * times) -> EJECTED -> HEALTHY (only the sweep). The cluster-wide count of
 * ejected hosts is reserved by CAS before an endpoint is claimed, so
 * max_ejection_percent holds under concurrent ejections. */
#include "resilience/outlier.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "resilience/res_int.h"

#define RLX memory_order_relaxed

enum { EP_HEALTHY = 0, EP_EJECTING, EP_EJECTED };

typedef struct {
    _Atomic uint64_t consec; /* [gateway:32 | 5xx:32] */
    _Atomic uint32_t state;
    _Atomic uint32_t backoff; /* ejection-time multiplier */
    _Atomic uint64_t ejected_at, ejected_until, unejected_at;
    _Atomic uint64_t times_ejected;
    char pad[MG_CACHELINE - 6 * 8];
} ep_t;

struct mg_outlier {
    mg_outlier_cfg_t cfg;
    uint32_t neps;
    uint64_t max_eject_ms; /* max(max_ejection_time, base) */
    mg_outlier_hook_t hook;
    void *ud;
    ep_t *eps;
    _Alignas(MG_CACHELINE) _Atomic uint32_t nejected;
    _Atomic uint64_t detected_5xx, detected_gw, enforced_5xx, enforced_gw, overflow, unejected;
};

void mg_outlier_cfg_default(mg_outlier_cfg_t *c)
{
    *c = (mg_outlier_cfg_t){
        .consecutive_5xx = 5,
        .consecutive_gateway_errors = 0,
        .interval_ms = 10000,
        .base_ejection_time_ms = 30000,
        .max_ejection_time_ms = 300000,
        .max_ejection_percent = 10,
        .min_health_percent = 50,
    };
}

void mg_outlier_cfg_istio_defaults(mg_outlier_cfg_t *c)
{
    mg_outlier_cfg_default(c);
    c->min_health_percent = 0;
}

int mg_outlier_cfg_validate(const mg_outlier_cfg_t *c, char *err, size_t errlen)
{
    const char *why = NULL;
    if (c->interval_ms < 1)
        why = "outlier_detection.interval must be at least 1 ms";
    else if (c->base_ejection_time_ms < 1)
        why = "outlier_detection.base_ejection_time must be at least 1 ms";
    else if (c->max_ejection_percent > 100)
        why = "outlier_detection.max_ejection_percent must be 0..100";
    else if (c->min_health_percent > 100)
        why = "outlier_detection.min_health_percent must be 0..100";
    if (why) {
        if (err && errlen)
            snprintf(err, errlen, "%s", why);
        return MG_ECONFIG;
    }
    return 0;
}

mg_outlier_t *mg_outlier_new(const mg_outlier_cfg_t *cfg, uint32_t neps, mg_outlier_hook_t hook, void *ud)
{
    if (mg_outlier_cfg_validate(cfg, NULL, 0) || neps == 0)
        return NULL;
    mg_outlier_t *d = mg_aligned_calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->eps = mg_aligned_calloc(neps, sizeof *d->eps);
    if (!d->eps) {
        free(d);
        return NULL;
    }
    d->cfg = *cfg;
    d->neps = neps;
    d->hook = hook;
    d->ud = ud;
    d->max_eject_ms = cfg->max_ejection_time_ms > cfg->base_ejection_time_ms ? cfg->max_ejection_time_ms
                                                                               : cfg->base_ejection_time_ms;
    return d;
}

void mg_outlier_free(mg_outlier_t *d)
{
    if (!d)
        return;
    free(d->eps);
    free(d);
}

const mg_outlier_cfg_t *mg_outlier_cfg(const mg_outlier_t *d) { return &d->cfg; }
uint32_t mg_outlier_neps(const mg_outlier_t *d) { return d->neps; }

static bool panic_at(const mg_outlier_t *d, uint32_t nejected)
{
    uint32_t healthy = nejected < d->neps ? d->neps - nejected : 0;
    return d->cfg.min_health_percent &&
           (uint64_t)healthy * 100 < (uint64_t)d->cfg.min_health_percent * d->neps;
}

bool mg_outlier_panic(const mg_outlier_t *d)
{
    return panic_at(d, atomic_load_explicit(&((mg_outlier_t *)d)->nejected, RLX));
}

bool mg_outlier_excluded(const mg_outlier_t *d, uint32_t ep)
{
    if (ep >= d->neps || atomic_load_explicit(&d->eps[ep].state, RLX) == EP_HEALTHY)
        return false;
    return !mg_outlier_panic(d);
}

/* Eject ep now, if max_ejection_percent allows (Envoy: the share already
 * ejected must be below the maximum, so one host can always go). */
static void try_eject(mg_outlier_t *d, uint32_t i, mg_od_event_t why, uint64_t now)
{
    ep_t *e = &d->eps[i];
    uint32_t n = atomic_load_explicit(&d->nejected, RLX);
    do {
        if (n != 0 && (uint64_t)n * 100 >= (uint64_t)d->cfg.max_ejection_percent * d->neps) {
            atomic_fetch_add_explicit(&d->overflow, 1, RLX);
            if (d->hook)
                d->hook(d->ud, i, MG_OD_OVERFLOW, 0, now);
            return;
        }
    } while (!atomic_compare_exchange_weak_explicit(&d->nejected, &n, n + 1, RLX, RLX));

    uint32_t expect = EP_HEALTHY;
    if (!atomic_compare_exchange_strong_explicit(&e->state, &expect, EP_EJECTING, memory_order_acquire, RLX)) {
        atomic_fetch_sub_explicit(&d->nejected, 1, RLX); /* already out */
        return;
    }
    /* Multiplier grows while base x multiplier < max + base (Envoy), so
     * one decay step after reaching the cap still ejects for the cap. */
    uint64_t base = d->cfg.base_ejection_time_ms;
    uint32_t m = atomic_load_explicit(&e->backoff, RLX), nm;
    do {
        nm = (uint64_t)m * base < d->max_eject_ms + base ? m + 1 : m;
    } while (!atomic_compare_exchange_weak_explicit(&e->backoff, &m, nm, RLX, RLX));
    uint64_t dur = (uint64_t)nm * base;
    if (dur > d->max_eject_ms)
        dur = d->max_eject_ms;
    atomic_store_explicit(&e->ejected_at, now, RLX);
    atomic_store_explicit(&e->ejected_until, now + dur, RLX);
    atomic_fetch_add_explicit(&e->times_ejected, 1, RLX);
    /* Release: the sweep that sees EJECTED sees the times above. */
    atomic_store_explicit(&e->state, EP_EJECTED, memory_order_release);
    atomic_fetch_add_explicit(why == MG_OD_EJECT_5XX ? &d->enforced_5xx : &d->enforced_gw, 1, RLX);
    if (d->hook)
        d->hook(d->ud, i, why, dur, now);
}

void mg_outlier_report(mg_outlier_t *d, uint32_t ep, mg_up_result_t r, int status, uint64_t now_ms)
{
    uint32_t t5 = d->cfg.consecutive_5xx, tg = d->cfg.consecutive_gateway_errors;
    int code = mg_up_result_status(r, status);
    if (ep >= d->neps || code == 0 || (!t5 && !tg))
        return;
    ep_t *e = &d->eps[ep];
    if (code < 500 || code > 599) {
        if (atomic_load_explicit(&e->consec, RLX) != 0)
            atomic_store_explicit(&e->consec, 0, RLX);
        return;
    }
    bool gw = code >= 502 && code <= 504;
    uint64_t c = atomic_load_explicit(&e->consec, RLX), n;
    bool fire5, fireg;
    do {
        uint32_t c5 = (uint32_t)c + 1;
        uint32_t cg = gw ? (uint32_t)(c >> 32) + 1 : 0;
        /* Exactly the CAS that reaches a threshold fires it and restarts
         * that count (Envoy resets the counter on detection, ejected or not). */
        fire5 = t5 && c5 == t5;
        fireg = tg && cg == tg;
        if (fire5)
            c5 = 0;
        if (fireg)
            cg = 0;
        n = ((uint64_t)cg << 32) | c5;
    } while (!atomic_compare_exchange_weak_explicit(&e->consec, &c, n, RLX, RLX));
    if (fireg)
        atomic_fetch_add_explicit(&d->detected_gw, 1, RLX);
    if (fire5)
        atomic_fetch_add_explicit(&d->detected_5xx, 1, RLX);
    /* Envoy looks at the gateway counter first. */
    if (fireg)
        try_eject(d, ep, MG_OD_EJECT_GATEWAY, now_ms);
    else if (fire5)
        try_eject(d, ep, MG_OD_EJECT_5XX, now_ms);
}

/* Return an EJECTED host to service. The claim EJECTED -> EJECTING makes
 * it exclusive against a concurrent sweep or un-eject (and keeps workers
 * from re-ejecting it while the fields are reset); the release store of
 * HEALTHY publishes them. False when ep was not (fully) ejected. */
static bool return_to_service(mg_outlier_t *d, uint32_t i, uint64_t now_ms, bool only_if_due)
{
    ep_t *e = &d->eps[i];
    uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
    if (st != EP_EJECTED || (only_if_due && now_ms < atomic_load_explicit(&e->ejected_until, RLX)))
        return false; /* EJECTING: a worker is still filling it in */
    if (!atomic_compare_exchange_strong_explicit(&e->state, &st, EP_EJECTING, memory_order_acquire, RLX))
        return false;
    atomic_store_explicit(&e->consec, 0, RLX); /* start clean, as Envoy */
    atomic_store_explicit(&e->unejected_at, now_ms, RLX);
    atomic_store_explicit(&e->ejected_until, 0, RLX);
    atomic_store_explicit(&e->state, EP_HEALTHY, memory_order_release);
    atomic_fetch_sub_explicit(&d->nejected, 1, RLX);
    atomic_fetch_add_explicit(&d->unejected, 1, RLX);
    if (d->hook)
        d->hook(d->ud, i, MG_OD_UNEJECT, now_ms - atomic_load_explicit(&e->ejected_at, RLX), now_ms);
    return true;
}

uint32_t mg_outlier_sweep(mg_outlier_t *d, uint64_t now_ms)
{
    uint32_t back = 0;
    for (uint32_t i = 0; i < d->neps; i++) {
        ep_t *e = &d->eps[i];
        uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
        if (st == EP_HEALTHY) {
            /* Healthy for a whole interval since it came back: decay. */
            uint32_t m = atomic_load_explicit(&e->backoff, RLX);
            if (m && now_ms - atomic_load_explicit(&e->unejected_at, RLX) >= d->cfg.interval_ms)
                atomic_compare_exchange_strong_explicit(&e->backoff, &m, m - 1, RLX, RLX);
            continue;
        }
        if (return_to_service(d, i, now_ms, true))
            back++;
    }
    return back;
}

bool mg_outlier_uneject(mg_outlier_t *d, uint32_t ep, uint64_t now_ms)
{
    if (!d || ep >= d->neps)
        return false;
    return return_to_service(d, ep, now_ms, false);
}

void mg_outlier_ep_info(const mg_outlier_t *d, uint32_t ep, mg_outlier_ep_info_t *out)
{
    memset(out, 0, sizeof *out);
    if (ep >= d->neps)
        return;
    ep_t *e = &d->eps[ep];
    uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
    uint64_t c = atomic_load_explicit(&e->consec, RLX);
    out->ejected = st != EP_HEALTHY;
    out->ejected_at_ms = atomic_load_explicit(&e->ejected_at, RLX);
    out->ejected_until_ms = st == EP_EJECTED ? atomic_load_explicit(&e->ejected_until, RLX) : 0;
    out->times_ejected = atomic_load_explicit(&e->times_ejected, RLX);
    out->multiplier = atomic_load_explicit(&e->backoff, RLX);
    out->consecutive_5xx = (uint32_t)c;
    out->consecutive_gateway_errors = (uint32_t)(c >> 32);
}

void mg_outlier_stats(const mg_outlier_t *d, mg_outlier_stats_t *out)
{
    mg_outlier_t *m = (mg_outlier_t *)d;
    uint32_t n = atomic_load_explicit(&m->nejected, RLX);
    *out = (mg_outlier_stats_t){
        .neps = d->neps,
        .ejected = n,
        .panic = panic_at(d, n),
        .detected_5xx = atomic_load_explicit(&m->detected_5xx, RLX),
        .detected_gateway = atomic_load_explicit(&m->detected_gw, RLX),
        .enforced_5xx = atomic_load_explicit(&m->enforced_5xx, RLX),
        .enforced_gateway = atomic_load_explicit(&m->enforced_gw, RLX),
        .overflow = atomic_load_explicit(&m->overflow, RLX),
        .unejected = atomic_load_explicit(&m->unejected, RLX),
    };
}

int mg_outlier_carry(mg_outlier_t *to, uint32_t to_ep, const mg_outlier_t *from, uint32_t from_ep)
{
    if (to_ep >= to->neps || from_ep >= from->neps)
        return -EINVAL;
    ep_t *s = &from->eps[from_ep], *t = &to->eps[to_ep];
    uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);
    if (atomic_load_explicit(&t->state, RLX) != EP_HEALTHY)
        atomic_fetch_sub_explicit(&to->nejected, 1, RLX);
    atomic_store_explicit(&t->consec, atomic_load_explicit(&s->consec, RLX), RLX);
    atomic_store_explicit(&t->backoff, atomic_load_explicit(&s->backoff, RLX), RLX);
    atomic_store_explicit(&t->ejected_at, atomic_load_explicit(&s->ejected_at, RLX), RLX);
    atomic_store_explicit(&t->ejected_until, atomic_load_explicit(&s->ejected_until, RLX), RLX);
    atomic_store_explicit(&t->unejected_at, atomic_load_explicit(&s->unejected_at, RLX), RLX);
    atomic_store_explicit(&t->times_ejected, atomic_load_explicit(&s->times_ejected, RLX), RLX);
    /* An endpoint caught mid-ejection is taken as ejected. */
    bool out = st != EP_HEALTHY;
    atomic_store_explicit(&t->state, out ? EP_EJECTED : EP_HEALTHY, memory_order_release);
    if (out)
        atomic_fetch_add_explicit(&to->nejected, 1, RLX);
    return 0;
}
