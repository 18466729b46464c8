/* health: active HTTP health checking. See health.h.
 *
 * A checker owns its next-check timer and an mg_probe_t (probe.h: the
 * connection, the timeout and the response head parsing) for its whole
 * life. A checker is freed in the close callback of its timer (its probe
 * frees itself once closed); the mg_health_t after mg_health_stop, with its
 * last checker. */
#include "cluster/health.h"
#include "cluster/probe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy.h"
#include "proxy/resil.h"
#include "resilience/outlier.h"

#define RLX memory_order_relaxed

typedef struct {
    mg_outlier_t *od;
    uint32_t ep;
} hc_target_t;

typedef struct {
    uint32_t interval_ms, timeout_ms, healthy_threshold, unhealthy_threshold;
    uint64_t expected[10]; /* same layout as mg_cluster_cfg_t.health.expected */
} hc_cfg_t;

typedef struct hc_checker {
    mg_health_t *h;
    struct hc_checker *next;
    mg_ep_stats_t *st;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *cluster; /* owning cluster's name, for logs */
    char *req;     /* the request bytes */
    size_t reqlen;
    hc_cfg_t cfg;
    hc_target_t *targets;
    uint32_t ntargets, cap_targets;

    uv_timer_t next_timer;
    mg_probe_t *probe;
    bool dead;
    bool seen;      /* marked during an update */
    bool pending;   /* no result yet (counted in h->pending) */
    uint8_t state;  /* MG_HC_* (mirrors st->hc_state) */
    uint32_t passes, fails; /* consecutive */
} hc_checker_t;

struct mg_health {
    uv_loop_t *loop;
    hc_checker_t *list;
    hc_checker_t **by_index; /* by mg_ep_stats_t.index */
    uint32_t nindex;
    uint32_t nchk;    /* live (not dead) checkers */
    uint32_t nalloc;  /* allocated checkers, dead ones included */
    uint32_t pending; /* live checkers without a first result */
    bool stopping;
    mg_snapshot_t *snap;
    void (*warm_cb)(void *);
    void *warm_arg;
    bool warm_armed;
    uint64_t rng;
};

const char *mg_hc_result_name(uint8_t r)
{
    static const char *const names[MG_HC_R_N] = {
        "", "ok", "status", "connect_failure", "timeout", "closed", "bad_response",
    };
    return r < MG_HC_R_N ? names[r] : "?";
}

static uint32_t rnd(mg_health_t *h, uint32_t bound)
{
    /* xorshift64: jitter only */
    uint64_t x = h->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    h->rng = x;
    return bound ? (uint32_t)(x % (bound + 1)) : 0;
}

static bool expected(const hc_cfg_t *c, int status)
{
    if (status < 100 || status > 739)
        return false;
    unsigned b = (unsigned)(status - 100);
    return (c->expected[b / 64] >> (b % 64)) & 1;
}

/* ---- lifetime ---- */

static void start_check(struct hc_checker *c);

static void maybe_free_health(mg_health_t *h)
{
    if (h->stopping && h->nalloc == 0) {
        free(h->by_index);
        free(h);
    }
}

static void on_handle_closed(uv_handle_t *hd)
{
    hc_checker_t *c = hd->data;
    mg_health_t *h = c->h;
    free(c->targets);
    free(c->req);
    free(c->cluster);
    free(c);
    h->nalloc--;
    maybe_free_health(h);
}

static void warm_check(mg_health_t *h)
{
    if (h->warm_armed && h->pending == 0) {
        h->warm_armed = false;
        if (h->warm_cb)
            h->warm_cb(h->warm_arg);
    }
}

static void set_pending(hc_checker_t *c, bool p)
{
    if (c->pending == p)
        return;
    c->pending = p;
    if (p)
        c->h->pending++;
    else
        c->h->pending--;
}

/* ---- one check ---- */

static void on_next_timer(uv_timer_t *t)
{
    hc_checker_t *c = t->data;
    if (c->dead)
        return;
    start_check(c);
}

static void schedule(hc_checker_t *c, uint64_t delay_ms)
{
    if (!c->dead)
        uv_timer_start(&c->next_timer, on_next_timer, delay_ms, 0);
}

static uint64_t next_delay(hc_checker_t *c)
{
    uint32_t j = c->cfg.interval_ms / 10;
    return (uint64_t)c->cfg.interval_ms + rnd(c->h, j > 1000 ? 1000 : j);
}

static const char *state_word(uint8_t s)
{
    return s == MG_HC_HEALTHY ? "healthy" : s == MG_HC_UNHEALTHY ? "unhealthy" : "pending";
}

static void set_state(hc_checker_t *c, uint8_t to, mg_hc_result_t r, int status)
{
    uint8_t from = c->state;
    c->state = to;
    atomic_store_explicit(&c->st->hc_state, to, memory_order_release);
    if (to == MG_HC_HEALTHY)
        mg_info("health: cluster '%s' endpoint %s: %s -> healthy (%u consecutive pass%s%s)", c->cluster,
                c->st->name, state_word(from), c->passes, c->passes == 1 ? "" : "es",
                from == MG_HC_PENDING ? ", first check" : "");
    else if (status)
        mg_warn("health: cluster '%s' endpoint %s: %s -> unhealthy (%u consecutive failure%s, last: status %d)",
                c->cluster, c->st->name, state_word(from), c->fails, c->fails == 1 ? "" : "s", status);
    else
        mg_warn("health: cluster '%s' endpoint %s: %s -> unhealthy (%u consecutive failure%s, last: %s)",
                c->cluster, c->st->name, state_word(from), c->fails, c->fails == 1 ? "" : "s",
                mg_hc_result_name((uint8_t)r));
}

/* The check ended with result r (status: the HTTP status read, or 0). */
static void finish(hc_checker_t *c, mg_hc_result_t r, int status)
{
    mg_ep_stats_t *st = c->st;
    uint64_t now = mg_now_ms();
    bool pass = r == MG_HC_R_OK;
    atomic_store_explicit(&st->hc_last_status, (uint16_t)status, RLX);
    atomic_store_explicit(&st->hc_last_result, (uint8_t)r, RLX);
    atomic_store_explicit(&st->hc_last_ms, now, RLX);
    atomic_fetch_add_explicit(&st->hc_checks, 1, RLX);
    if (pass) {
        c->fails = 0;
        c->passes++;
        atomic_store_explicit(&st->hc_failures, 0, RLX);
        if (c->state == MG_HC_PENDING || (c->state == MG_HC_UNHEALTHY && c->passes >= c->cfg.healthy_threshold))
            set_state(c, MG_HC_HEALTHY, r, status);
        for (uint32_t i = 0; i < c->ntargets; i++)
            if (mg_outlier_uneject(c->targets[i].od, c->targets[i].ep, now))
                mg_info("health: cluster '%s' endpoint %s: un-ejected by a passing health check", c->cluster,
                        st->name);
    } else {
        c->passes = 0;
        c->fails++;
        atomic_store_explicit(&st->hc_failures, c->fails, RLX);
        if (c->state == MG_HC_PENDING || (c->state == MG_HC_HEALTHY && c->fails >= c->cfg.unhealthy_threshold))
            set_state(c, MG_HC_UNHEALTHY, r, status);
        else if (status)
            mg_debug("health: cluster '%s' endpoint %s: check failed: status %d", c->cluster, st->name, status);
        else
            mg_debug("health: cluster '%s' endpoint %s: check failed: %s", c->cluster, st->name,
                     mg_hc_result_name((uint8_t)r));
    }
    schedule(c, next_delay(c));
    if (c->pending) {
        set_pending(c, false);
        warm_check(c->h);
    }
}

/* probe.c reports a complete head as OK; the expected statuses are ours. */
static void on_probe_done(void *ud, mg_hc_result_t r, int status)
{
    hc_checker_t *c = ud;
    if (c->dead)
        return;
    if (r == MG_HC_R_OK && !expected(&c->cfg, status))
        r = MG_HC_R_STATUS;
    finish(c, r, status);
}

static void start_check(hc_checker_t *c)
{
    if (mg_probe_start(c->probe, (const struct sockaddr *)&c->addr, c->req, c->reqlen, c->cfg.timeout_ms))
        schedule(c, next_delay(c)); /* out of memory: try again later */
}

/* ---- checkers ---- */

static int build_request(hc_checker_t *c, const char *path)
{
#define HC_REQ_FMT "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meshgate-health\r\nConnection: close\r\n\r\n"
    int n = snprintf(NULL, 0, HC_REQ_FMT, path, c->st->name);
    char *r = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (!r)
        return -ENOMEM;
    snprintf(r, (size_t)n + 1, HC_REQ_FMT, path, c->st->name);
#undef HC_REQ_FMT
    free(c->req);
    c->req = r;
    c->reqlen = (size_t)n;
    return 0;
}

static void cfg_from(hc_cfg_t *o, const mg_cluster_cfg_t *cc)
{
    o->interval_ms = cc->health.interval_ms ? cc->health.interval_ms : 1;
    o->timeout_ms = cc->health.timeout_ms ? cc->health.timeout_ms : 1;
    o->healthy_threshold = cc->health.healthy_threshold ? cc->health.healthy_threshold : 1;
    o->unhealthy_threshold = cc->health.unhealthy_threshold ? cc->health.unhealthy_threshold : 1;
    memcpy(o->expected, cc->health.expected, sizeof o->expected);
}

static bool path_ok(const char *p)
{
    if (!p || p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            return false;
    return true;
}

static void kill_checker(hc_checker_t *c, bool reset_stats)
{
    mg_health_t *h = c->h;
    c->dead = true;
    set_pending(c, false);
    if (c->st->index < h->nindex && h->by_index[c->st->index] == c)
        h->by_index[c->st->index] = NULL;
    if (reset_stats) {
        atomic_store_explicit(&c->st->hc_state, MG_HC_NONE, memory_order_release);
        atomic_store_explicit(&c->st->hc_failures, 0, RLX);
    }
    h->nchk--;
    uv_timer_stop(&c->next_timer);
    mg_probe_free(c->probe);
    c->probe = NULL;
    uv_close((uv_handle_t *)&c->next_timer, on_handle_closed);
}

static int add_target(hc_checker_t *c, mg_outlier_t *od, uint32_t ep)
{
    if (c->ntargets == c->cap_targets) {
        uint32_t n = c->cap_targets ? c->cap_targets * 2 : 2;
        hc_target_t *t = realloc(c->targets, n * sizeof *t);
        if (!t)
            return -ENOMEM;
        c->targets = t;
        c->cap_targets = n;
    }
    c->targets[c->ntargets++] = (hc_target_t){ od, ep };
    return 0;
}

static hc_checker_t *new_checker(mg_health_t *h, mg_ep_stats_t *st)
{
    if (st->index >= h->nindex) {
        uint32_t n = h->nindex ? h->nindex : 16;
        while (n <= st->index)
            n *= 2;
        hc_checker_t **bi = realloc(h->by_index, n * sizeof *bi);
        if (!bi)
            return NULL;
        memset(bi + h->nindex, 0, (n - h->nindex) * sizeof *bi);
        h->by_index = bi;
        h->nindex = n;
    }
    hc_checker_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (!(c->probe = mg_probe_new(h->loop, on_probe_done, c))) {
        free(c);
        return NULL;
    }
    c->h = h;
    c->st = st;
    uv_timer_init(h->loop, &c->next_timer);
    c->next_timer.data = c;
    c->state = MG_HC_PENDING;
    c->next = h->list;
    h->list = c;
    h->by_index[st->index] = c;
    h->nchk++;
    h->nalloc++;
    set_pending(c, true);
    atomic_store_explicit(&st->hc_failures, 0, RLX);
    atomic_store_explicit(&st->hc_state, MG_HC_PENDING, memory_order_release);
    return c;
}

mg_health_t *mg_health_new(uv_loop_t *loop)
{
    mg_health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->loop = loop;
    h->rng = uv_hrtime() | 1;
    return h;
}

void mg_health_set_warm_cb(mg_health_t *h, void (*cb)(void *), void *arg)
{
    h->warm_cb = cb;
    h->warm_arg = arg;
}

bool mg_health_warm(const mg_health_t *h) { return h->pending == 0; }
uint32_t mg_health_count(const mg_health_t *h) { return h->nchk; }

void mg_health_update(mg_health_t *h, const struct mg_snapshot *csnap)
{
    mg_snapshot_t *snap = (mg_snapshot_t *)csnap; /* only its refcount changes */
    if (h->stopping || !snap)
        return;
    for (hc_checker_t *c = h->list; c; c = c->next) {
        c->seen = false;
        c->ntargets = 0;
    }
    for (size_t i = 0; i < snap->clusters.n; i++) {
        const mg_cluster_t *cl = &snap->clusters.clusters[i];
        const mg_cluster_cfg_t *cc = cl->cfg;
        if (!cc || !cc->has_health)
            continue;
        if (!path_ok(cc->health.path)) {
            mg_error("health: cluster '%s': bad health_check path; not checking it", cc->name);
            continue;
        }
        mg_outlier_t *od = i < snap->resil.nclusters && snap->resil.clusters ? snap->resil.clusters[i].outlier : NULL;
        for (uint32_t j = 0; j < cl->neps; j++) {
            const mg_endpoint_t *ep = &cl->eps[j];
            mg_ep_stats_t *st = ep->stats;
            hc_checker_t *c = st->index < h->nindex ? h->by_index[st->index] : NULL;
            bool fresh = false;
            if (c && c->seen) { /* the same endpoint in an earlier cluster: it owns the check */
                if (od && add_target(c, od, j))
                    mg_error("health: out of memory");
                continue;
            }
            if (!c) {
                if (!(c = new_checker(h, st))) {
                    mg_error("health: cluster '%s' endpoint %s: out of memory; not checking it", cc->name, st->name);
                    continue;
                }
                fresh = true;
            }
            c->seen = true;
            memcpy(&c->addr, &ep->addr, ep->addrlen);
            c->addrlen = ep->addrlen;
            char *name = strdup(cc->name);
            if (name) {
                free(c->cluster);
                c->cluster = name;
            }
            hc_cfg_t nc;
            cfg_from(&nc, cc);
            uint32_t old_interval = c->cfg.interval_ms;
            c->cfg = nc;
            if (build_request(c, cc->health.path)) {
                mg_error("health: out of memory");
                if (fresh) {
                    kill_checker(c, true);
                    continue;
                }
            }
            if (od && add_target(c, od, j))
                mg_error("health: out of memory");
            if (fresh) {
                uint32_t j0 = nc.interval_ms / 10;
                schedule(c, rnd(h, j0 > 50 ? 50 : j0));
            } else if (old_interval != nc.interval_ms && !mg_probe_running(c->probe)) {
                /* retuned: the next check comes no later than the new interval */
                uint64_t due = uv_timer_get_due_in(&c->next_timer);
                if (due > nc.interval_ms)
                    schedule(c, next_delay(c));
            }
        }
    }
    for (hc_checker_t **pp = &h->list; *pp;) {
        hc_checker_t *c = *pp;
        if (!c->dead && !c->seen) {
            mg_info("health: endpoint %s: no longer health checked", c->st->name);
            kill_checker(c, true);
        }
        if (c->dead) {
            *pp = c->next; /* freed by its close callbacks */
            continue;
        }
        pp = &c->next;
    }
    mg_snapshot_ref(snap);
    if (h->snap)
        mg_snapshot_unref(h->snap);
    h->snap = snap;
    h->warm_armed = true;
    warm_check(h);
}

void mg_health_stop(mg_health_t *h)
{
    if (!h || h->stopping)
        return;
    h->stopping = true;
    h->warm_armed = false;
    for (hc_checker_t *c = h->list, *n; c; c = n) {
        n = c->next;
        if (!c->dead)
            kill_checker(c, false);
    }
    h->list = NULL;
    if (h->snap) {
        mg_snapshot_unref(h->snap);
        h->snap = NULL;
    }
    maybe_free_health(h);
}
