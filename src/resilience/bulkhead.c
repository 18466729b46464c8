/* bulkhead: shared per-cluster gauges with fetch_add/check/rollback
 * admission. See bulkhead.h. */
#include "resilience/bulkhead.h"

#include <stdatomic.h>
#include <string.h>

#include "core/err.h"
#include "resilience/res_int.h"

#define RLX memory_order_relaxed

typedef struct {
    _Atomic uint64_t overflow[MG_OVERFLOW_N];
    char pad[MG_CACHELINE - MG_OVERFLOW_N * sizeof(uint64_t)];
} slot_t;

struct mg_bulkhead {
    _Atomic uint32_t max_conn, max_pending, max_req, max_per_conn; /* 0 = unlimited */
    uint32_t nslots;
    slot_t *slots;
    /* each gauge on its own line: requests moves on every request */
    _Alignas(MG_CACHELINE) _Atomic uint32_t requests;
    _Alignas(MG_CACHELINE) _Atomic uint32_t pending;
    _Alignas(MG_CACHELINE) _Atomic uint32_t connections;
};

void mg_bulkhead_cfg_default(mg_bulkhead_cfg_t *c)
{
    memset(c, 0, sizeof *c);
}

void mg_bulkhead_cfg_envoy(mg_bulkhead_cfg_t *c)
{
    *c = (mg_bulkhead_cfg_t){ .max_connections = 1024, .max_pending = 1024, .max_requests = 1024 };
}

const char *mg_overflow_name(mg_overflow_t o)
{
    switch (o) {
    case MG_OVERFLOW_REQUESTS: return "max_requests";
    case MG_OVERFLOW_PENDING: return "max_pending";
    case MG_OVERFLOW_CONNECTIONS: return "max_connections";
    default: return "none";
    }
}

mg_bulkhead_t *mg_bulkhead_new(const mg_bulkhead_cfg_t *c, uint32_t nslots)
{
    if (nslots == 0)
        return NULL;
    mg_bulkhead_t *bh = mg_aligned_calloc(1, sizeof *bh);
    if (!bh)
        return NULL;
    bh->slots = mg_aligned_calloc(nslots, sizeof *bh->slots);
    if (!bh->slots) {
        free(bh);
        return NULL;
    }
    bh->nslots = nslots;
    mg_bulkhead_update(bh, c);
    return bh;
}

void mg_bulkhead_free(mg_bulkhead_t *bh)
{
    if (!bh)
        return;
    free(bh->slots);
    free(bh);
}

void mg_bulkhead_update(mg_bulkhead_t *bh, const mg_bulkhead_cfg_t *c)
{
    atomic_store_explicit(&bh->max_conn, c->max_connections, RLX);
    atomic_store_explicit(&bh->max_pending, c->max_pending, RLX);
    atomic_store_explicit(&bh->max_req, c->max_requests, RLX);
    atomic_store_explicit(&bh->max_per_conn, c->max_requests_per_connection, RLX);
}

/* fetch_add, then give it back if that went past the limit. */
static bool admit(_Atomic uint32_t *gauge, uint32_t limit)
{
    uint32_t n = atomic_fetch_add_explicit(gauge, 1, RLX);
    if (limit && n >= limit) {
        atomic_fetch_sub_explicit(gauge, 1, RLX);
        return false;
    }
    return true;
}

static void overflow(mg_bulkhead_t *bh, uint32_t slot, mg_overflow_t o)
{
    mg_ctr_inc(&bh->slots[mg_slot_clamp(slot, bh->nslots)].overflow[o]);
}

int mg_bulkhead_request_enter(mg_bulkhead_t *bh, uint32_t slot)
{
    if (admit(&bh->requests, atomic_load_explicit(&bh->max_req, RLX)))
        return 0;
    overflow(bh, slot, MG_OVERFLOW_REQUESTS);
    return MG_ELIMIT;
}

void mg_bulkhead_request_leave(mg_bulkhead_t *bh)
{
    atomic_fetch_sub_explicit(&bh->requests, 1, RLX);
}

int mg_bulkhead_pending_enter(mg_bulkhead_t *bh, uint32_t slot)
{
    if (admit(&bh->pending, atomic_load_explicit(&bh->max_pending, RLX)))
        return 0;
    overflow(bh, slot, MG_OVERFLOW_PENDING);
    return MG_ELIMIT;
}

void mg_bulkhead_pending_leave(mg_bulkhead_t *bh)
{
    atomic_fetch_sub_explicit(&bh->pending, 1, RLX);
}

bool mg_bulkhead_conn_open(mg_bulkhead_t *bh, uint32_t slot)
{
    if (admit(&bh->connections, atomic_load_explicit(&bh->max_conn, RLX)))
        return true;
    overflow(bh, slot, MG_OVERFLOW_CONNECTIONS);
    return false;
}

void mg_bulkhead_conn_closed(mg_bulkhead_t *bh)
{
    atomic_fetch_sub_explicit(&bh->connections, 1, RLX);
}

bool mg_bulkhead_conn_reusable(const mg_bulkhead_t *bh, uint32_t served)
{
    uint32_t max = atomic_load_explicit(&((mg_bulkhead_t *)bh)->max_per_conn, RLX);
    return max == 0 || served < max;
}

uint32_t mg_bulkhead_active_requests(const mg_bulkhead_t *bh)
{
    return atomic_load_explicit(&((mg_bulkhead_t *)bh)->requests, RLX);
}

void mg_bulkhead_stats(const mg_bulkhead_t *bh, mg_bulkhead_stats_t *out)
{
    mg_bulkhead_t *m = (mg_bulkhead_t *)bh;
    memset(out, 0, sizeof *out);
    out->requests = atomic_load_explicit(&m->requests, RLX);
    out->pending = atomic_load_explicit(&m->pending, RLX);
    out->connections = atomic_load_explicit(&m->connections, RLX);
    out->cfg.max_connections = atomic_load_explicit(&m->max_conn, RLX);
    out->cfg.max_pending = atomic_load_explicit(&m->max_pending, RLX);
    out->cfg.max_requests = atomic_load_explicit(&m->max_req, RLX);
    out->cfg.max_requests_per_connection = atomic_load_explicit(&m->max_per_conn, RLX);
    for (uint32_t i = 0; i < bh->nslots; i++)
        for (int o = 0; o < MG_OVERFLOW_N; o++)
            out->overflow[o] += mg_ctr_get(&bh->slots[i].overflow[o]);
}
