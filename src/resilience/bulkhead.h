/* bulkhead: per-cluster concurrency limits with Envoy's circuit-breaker
 * thresholds / Istio connectionPool semantics: max_connections,
 * max_pending (requests waiting for a connection), max_requests (requests
 * in flight), max_requests_per_connection. Limits are per cluster across
 * all workers (as Envoy), so the gauges are shared atomics: admission is
 * fetch_add, check, and roll back on overflow (a racing thread may briefly
 * see one too many and be refused: the limits are soft by at most the
 * number of workers, never exceeded for long).
 *
 * Ownership: the control thread creates one per cluster, keeps it across
 * reloads (mg_bulkhead_update changes the limits in place; the gauges must
 * survive because requests in flight will leave), frees it when no worker
 * can reach it. Threads: workers call enter/leave on the hot path; the
 * control thread reads mg_bulkhead_stats.
 *
 * How the proxy calls it (one exchange):
 *   cluster chosen (after the breaker permitted the call):
 *       if (mg_bulkhead_request_enter(bh, w->id)) -> 503 at once with
 *           "x-meshgate-overflow: max_requests" (counted here)
 *       ... mg_bulkhead_request_leave(bh) when the exchange ends, whatever
 *           the outcome (retries stay inside the same request).
 *   no idle pooled connection to the endpoint:
 *       if (mg_bulkhead_pending_enter(bh, w->id)) -> 503
 *           "x-meshgate-overflow: max_pending"
 *       if (mg_bulkhead_conn_open(bh, w->id)) connect (the request stays
 *           pending until the connection is ready, as in Envoy);
 *       else wait (worker-local queue) for a pooled connection to be
 *           released, or retry mg_bulkhead_conn_open when any connection
 *           closes; the connect timeout bounds the wait.
 *       bound to a connection (or given up) -> mg_bulkhead_pending_leave.
 *   a connection counted by conn_open closes -> mg_bulkhead_conn_closed.
 *   before returning a connection to the pool:
 *       mg_bulkhead_conn_reusable(bh, requests_served_on_it).
 * The bulkhead counts active requests even with every limit off, and the
 * retry budget reads that gauge (mg_bulkhead_active_requests).
 *
 * Cost per request: two atomic RMWs on the cluster's request gauge (enter,
 * leave); pending/connection gauges only when a new connection is needed. */
#ifndef MG_RESILIENCE_BULKHEAD_H
#define MG_RESILIENCE_BULKHEAD_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint32_t max_connections;             /* 0 = unlimited (Envoy default 1024) */
    uint32_t max_pending;                 /* 0 = unlimited (Envoy max_pending_requests 1024) */
    uint32_t max_requests;                /* 0 = unlimited (Envoy 1024) */
    uint32_t max_requests_per_connection; /* 0 = unlimited */
} mg_bulkhead_cfg_t;

/* All unlimited. */
void mg_bulkhead_cfg_default(mg_bulkhead_cfg_t *c);
/* Envoy's default thresholds: 1024 / 1024 / 1024, per connection unlimited. */
void mg_bulkhead_cfg_envoy(mg_bulkhead_cfg_t *c);

typedef enum {
    MG_OVERFLOW_NONE = 0,
    MG_OVERFLOW_REQUESTS,    /* 503 */
    MG_OVERFLOW_PENDING,     /* 503 */
    MG_OVERFLOW_CONNECTIONS, /* not an error: the request waits (Envoy's upstream_cx_overflow) */
    MG_OVERFLOW_N
} mg_overflow_t;

/* Value of the x-meshgate-overflow header: "max_requests", "max_pending",
 * "max_connections". */
const char *mg_overflow_name(mg_overflow_t o);

typedef struct mg_bulkhead mg_bulkhead_t;

/* nslots: per-thread counter slots, as for the breaker. NULL on no memory. */
mg_bulkhead_t *mg_bulkhead_new(const mg_bulkhead_cfg_t *c, uint32_t nslots);
void mg_bulkhead_free(mg_bulkhead_t *bh);
void mg_bulkhead_update(mg_bulkhead_t *bh, const mg_bulkhead_cfg_t *c);

/* 0, or MG_ELIMIT (max_requests reached; counted). */
int mg_bulkhead_request_enter(mg_bulkhead_t *bh, uint32_t slot);
void mg_bulkhead_request_leave(mg_bulkhead_t *bh);
/* 0, or MG_ELIMIT (max_pending reached; counted). */
int mg_bulkhead_pending_enter(mg_bulkhead_t *bh, uint32_t slot);
void mg_bulkhead_pending_leave(mg_bulkhead_t *bh);
/* True: a new connection may be opened (and is counted). False: at
 * max_connections (counted); wait for one. */
bool mg_bulkhead_conn_open(mg_bulkhead_t *bh, uint32_t slot);
void mg_bulkhead_conn_closed(mg_bulkhead_t *bh);
/* May a connection that has served `served` requests serve another? */
bool mg_bulkhead_conn_reusable(const mg_bulkhead_t *bh, uint32_t served);

uint32_t mg_bulkhead_active_requests(const mg_bulkhead_t *bh);

typedef struct {
    uint32_t requests, pending, connections; /* gauges */
    uint64_t overflow[MG_OVERFLOW_N];        /* lifetime, summed over slots */
    mg_bulkhead_cfg_t cfg;
} mg_bulkhead_stats_t;

void mg_bulkhead_stats(const mg_bulkhead_t *bh, mg_bulkhead_stats_t *out);

#endif
