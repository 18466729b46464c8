/* proxy: the data plane. N worker threads, each with its own libuv loop
 * and SO_REUSEPORT listeners, proxy HTTP/1.1 requests to clusters.
 *
 * A snapshot is one loaded config compiled for serving (route table,
 * resolved clusters). It is immutable and refcounted: the control thread
 * builds it, mg_server_swap() publishes it, each worker adopts it between
 * requests, and in-flight requests finish on the snapshot they started
 * with. The server and its snapshots are driven from the control thread
 * only (the one that called mg_server_start). */
#ifndef MG_PROXY_PROXY_H
#define MG_PROXY_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "config/config.h"
#include "proxy/resil.h"
#include "route/route.h"

typedef struct mg_snapshot {
    _Atomic int refs;
    uint64_t generation;
    mg_config_t *cfg; /* owned (one share of it, see mg_config_share) */
    mg_route_table_t *routes;
    mg_cluster_set_t clusters;
    mg_http_limits_t limits;
    char redis_addr[64]; /* cfg->redis.host resolved to a numeric address */
    mg_resil_t resil;    /* breakers, bulkheads, budgets, outlier detectors */
} mg_snapshot_t;

/* Takes ownership of cfg (freed on failure too; pass mg_config_share(cfg)
 * to build several snapshots over one config). disco (may be NULL): the
 * registry's instances, added to the clusters of the same name (see
 * mg_cluster_set_build). Returns 0 or MG_ECONFIG with "FILE:LINE:COL:
 * message" in err. The new snapshot has one ref. */
struct mg_disco_snapshot;
int mg_snapshot_build_disco(mg_config_t *cfg, const struct mg_disco_snapshot *disco, mg_snapshot_t **out,
                            char *err, size_t errlen);
int mg_snapshot_build(mg_config_t *cfg, mg_snapshot_t **out, char *err, size_t errlen); /* disco NULL */
/* Same with every discovery source (registry and DNS; see mg_cluster_set_build_src). */
int mg_snapshot_build_src(mg_config_t *cfg, const mg_cluster_sources_t *src, mg_snapshot_t **out, char *err,
                          size_t errlen);
void mg_snapshot_ref(mg_snapshot_t *s);
void mg_snapshot_unref(mg_snapshot_t *s);

typedef struct mg_server mg_server_t;

/* Binds every listen address (one socket per worker and address, with
 * SO_REUSEPORT) and starts the workers. Takes a ref on snap. on_exit is
 * called on the control loop once every worker has stopped. */
int mg_server_start(void *control_loop, mg_snapshot_t *snap, void (*on_exit)(void *), void *arg,
                    mg_server_t **out, char *err, size_t errlen);

/* Publish a new snapshot to every worker (takes a ref on snap). */
void mg_server_swap(mg_server_t *srv, mg_snapshot_t *snap);

/* The snapshot currently published, with a ref the caller drops. */
mg_snapshot_t *mg_server_current(mg_server_t *srv);

/* Stop accepting, finish in-flight requests, close idle connections;
 * after timeout_ms force-close what remains. Workers then exit. */
void mg_server_drain(mg_server_t *srv, uint32_t timeout_ms);

/* Join the worker threads and free the server (after on_exit ran). */
void mg_server_free(mg_server_t *srv);

uint32_t mg_server_workers(const mg_server_t *srv);

/* The process-wide local rate-limit table (buckets outlive reloads). */
struct mg_rl_local;
struct mg_rl_local *mg_proxy_rl_local(void);

#endif
