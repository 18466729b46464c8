/* resil: the runtime resilience objects of a snapshot.
 *
 * Breakers, bulkheads, retry budgets and outlier detectors hold state that
 * must survive a reload (a breaker stays OPEN, a bulkhead keeps counting
 * the requests in flight, an ejected host stays ejected), so they live in a
 * process-wide registry keyed by name and are shared by every snapshot that
 * names them, refcounted. A breaker whose config changed is replaced by a
 * fresh one; a bulkhead or budget is updated in place; an outlier detector
 * is rebuilt when the cluster's endpoints change, carrying each remaining
 * endpoint's state. Built and released with snapshots (control thread;
 * release may run on a worker that drops the last ref, hence a mutex). */
#ifndef MG_PROXY_RESIL_H
#define MG_PROXY_RESIL_H

#include <stdint.h>

#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/outlier.h"
#include "resilience/retry.h"

struct mg_snapshot;
typedef struct mg_resil_ref mg_resil_ref_t;

typedef struct {
    mg_breaker_t *breaker;     /* native circuit_breaker on the cluster, or NULL */
    mg_bulkhead_t *bulkhead;   /* always (it also counts active requests) */
    mg_retry_budget_t *budget; /* always */
    mg_outlier_t *outlier;     /* when outlier_detection is configured */
    mg_resil_ref_t *refs[4];
} mg_cluster_rt_t;

typedef struct {
    mg_cluster_rt_t *clusters;  /* [cfg->nclusters] */
    mg_breaker_t **route_breakers; /* [nroutes] by mg_route_index, NULL when none */
    mg_resil_ref_t **route_refs;
    size_t nroutes, nclusters;
} mg_resil_t;

/* Once at start-up: slots = workers + 1 (the last one is the control thread's). */
void mg_resil_init(uint32_t nworkers);
uint32_t mg_resil_control_slot(void);

int mg_resil_build(struct mg_snapshot *s, mg_resil_t *out, char *err, size_t errlen);

/* One more owner of an object (e.g. a pooled connection counted in a
 * bulkhead outlives the snapshot that created it); any thread. */
void mg_resil_hold(mg_resil_ref_t *r);
void mg_resil_drop(mg_resil_ref_t *r);
void mg_resil_release(mg_resil_t *r);

/* Control thread, every ~100 ms: timed breaker transitions, outlier sweeps. */
void mg_resil_tick(mg_resil_t *r, const struct mg_snapshot *s, uint64_t now_ms);

/* Monotonic ms comparable across threads (libuv's loop clock). */
uint64_t mg_now_ms(void);

#endif
