/* cluster: the runtime form of configured clusters and their endpoints.
 *
 * A cluster set is built by the control thread for each config snapshot
 * (addresses resolved there, never on a worker) and is immutable after.
 * Endpoint statistics (mg_ep_stats_t) outlive snapshots: they are keyed by
 * address in a process-wide registry, so a reload that keeps an endpoint
 * keeps its counters and its pooled connections (pools are indexed by
 * mg_ep_stats_t.index, see proxy/pool.h). Each worker writes only its own
 * slot of the per-worker counters; readers (admin) sum the slots. */
#ifndef MG_CLUSTER_CLUSTER_H
#define MG_CLUSTER_CLUSTER_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

#define MG_MAX_WORKERS 256

typedef struct {
    _Atomic uint32_t idle;     /* pooled idle connections */
    _Atomic uint32_t active;   /* connections carrying a request */
    _Atomic uint64_t requests; /* requests sent */
    _Atomic uint64_t connects; /* connections opened */
    _Atomic uint64_t failures; /* connect errors, resets, timeouts, bad responses */
    char pad[64 - 4 - 4 - 8 - 8 - 8];
} mg_ep_worker_stats_t;

typedef struct mg_ep_stats {
    uint32_t index; /* dense, process-wide; the slot is stable for the life of the process */
    char name[96];  /* "host:port" as configured (a recycled slot gets a new name) */
    mg_ep_worker_stats_t *w; /* [nworkers] */
    _Atomic uint32_t refs;   /* live cluster sets holding this endpoint */
    uint32_t hnext;          /* name hash chain: next index + 1, 0 = end (registry lock) */

    /* Active health checking (cluster/health.h). Written only by the
     * control thread's checker of this endpoint, read by workers (relaxed
     * loads, see mg_ep_hc_usable) and the admin API. All zero = no checker. */
    _Atomic uint8_t hc_state;        /* MG_HC_NONE / HEALTHY / UNHEALTHY / PENDING */
    _Atomic uint8_t hc_last_result;  /* mg_hc_result_t of the last check (0 = none yet) */
    _Atomic uint16_t hc_last_status; /* HTTP status of the last check; 0 if none was read */
    _Atomic uint32_t hc_failures;    /* consecutive failed checks (0 after a pass) */
    _Atomic uint64_t hc_last_ms;     /* when the last check ended, mg_now_ms() clock (monotonic); 0 = never */
    _Atomic uint64_t hc_checks;      /* checks completed, lifetime */
} mg_ep_stats_t;

/* Where an endpoint came from (GET /clusters "source"). */
typedef enum { MG_EP_STATIC = 0, MG_EP_DNS, MG_EP_REGISTRY } mg_ep_source_t;
const char *mg_ep_source_name(unsigned source);

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    mg_ep_stats_t *stats;
    /* provenance, for the admin API; the strings belong to the config
     * (static) or to the cluster set (copies of registry/DNS data) */
    uint8_t source;           /* mg_ep_source_t */
    uint8_t check_status;     /* registry: mg_check_status_t */
    const mg_label_t *labels; /* static: endpoint labels; registry: Meta + k=v tags; dns: dns/srv_target */
    size_t nlabels;
    const char *instance_id;  /* registry: the instance ID; else NULL */
} mg_endpoint_t;

typedef struct {
    const mg_cluster_cfg_t *cfg;
    mg_endpoint_t *eps;
    uint32_t neps;
} mg_cluster_t;

typedef struct {
    mg_cluster_t *clusters; /* parallel to cfg->clusters */
    size_t n;
    void *owned; /* arena for the copied labels and IDs */
} mg_cluster_set_t;

/* Once at start-up, before any cluster set is built. */
void mg_ep_registry_init(uint32_t nworkers);
uint32_t mg_ep_registry_count(void);
mg_ep_stats_t *mg_ep_registry_at(uint32_t index);
/* The registry holds at most max distinct endpoints (65536; tests set less).
 * When it is full, a slot that no live cluster set holds and that has no
 * connection open is recycled for a new address (its counters restart), so
 * a long-lived gateway whose instances keep changing addresses (autoscaling,
 * pod churn) does not run out. Only when every slot is in use is a new
 * endpoint refused (a warning names it). */
void mg_ep_registry_limit(uint32_t max);
uint64_t mg_ep_registry_recycled(void); /* slots recycled, lifetime */

struct mg_disco_snapshot; /* discovery/registry.h */
struct mg_dns_snapshot;   /* discovery/dnssrc.h */

/* The run-time discovery sources a cluster set is built with (each may be NULL). */
typedef struct {
    const struct mg_disco_snapshot *registry;
    const struct mg_dns_snapshot *dns;
} mg_cluster_sources_t;

/* Resolve every endpoint of cfg (getaddrinfo; blocking: control thread
 * only). With disco (may be NULL), each cluster also gets the instances of
 * the registry service of the same name, after its static endpoints; an
 * instance that does not resolve is skipped with a warning (it is not a
 * config error). Returns 0, or MG_ECONFIG with "FILE:LINE:COL: message"
 * in err. */
int mg_cluster_set_build(const mg_config_t *cfg, const struct mg_disco_snapshot *disco, mg_cluster_set_t *out,
                         char *err, size_t errlen);
/* Same with every source: static endpoints, then the registry's instances,
 * then the resolved addresses of the cluster's dns: entries (an address
 * already present is not added twice). Nothing of src is kept: what the
 * set shows (labels, IDs) is copied. */
int mg_cluster_set_build_src(const mg_config_t *cfg, const mg_cluster_sources_t *src, mg_cluster_set_t *out,
                             char *err, size_t errlen);
void mg_cluster_set_free(mg_cluster_set_t *set);

#endif
