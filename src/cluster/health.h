/* health: active HTTP health checking of cluster endpoints.
 *
 * One mg_health_t runs on the control loop (never on a worker): one checker
 * per distinct endpoint (mg_ep_stats_t) of every cluster that has a
 * health_check. Each check is a fresh TCP connection to the endpoint's
 * resolved address sending
 *   GET <path> HTTP/1.1\r\nHost: <host:port>\r\nUser-Agent: meshgate-health\r\n
 *   Connection: close\r\n\r\n
 * and reading the response head (at most 8 KiB, parsed strictly with
 * mg_http_parse_response); the whole check is bounded by timeout_ms. A
 * refused/failed connect, a timeout, a connection closed before a complete
 * head, an invalid or oversized head, or a status outside expected_statuses
 * is a failure. The next check starts interval_ms (+ up to 10 %, at most
 * 1 s, of jitter) after the previous one ended; the first one right away
 * (+ at most 50 ms of jitter).
 *
 * Results are published lock-free in the endpoint's process-wide
 * mg_ep_stats_t (hc_* fields, cluster.h), which every worker can read.
 *
 * Semantics (Envoy's):
 *  - A host with a checker starts PENDING ("failed active health check"
 *    until its first check, as Envoy marks hosts of a health-checked
 *    cluster): mg_ep_hc_usable() is false. Envoy avoids a start-up outage
 *    by doing one health check round before the cluster initializes (before
 *    listeners accept); mg_health_set_warm_cb() lets the caller do the same.
 *  - The first check decides at once: a pass makes the host HEALTHY without
 *    waiting for healthy_threshold (Envoy HealthCheckAddHealthy.first_check:
 *    "the configured healthy threshold is bypassed"), a failure makes it
 *    UNHEALTHY (it never left the failed state).
 *  - Afterwards: HEALTHY -> UNHEALTHY after unhealthy_threshold consecutive
 *    failures, UNHEALTHY -> HEALTHY after healthy_threshold consecutive
 *    passes. Each transition is logged once.
 *  - Every passing check also un-ejects the host from the passive outlier
 *    detector of each health-checked cluster it belongs to
 *    (mg_outlier_uneject; Envoy's successful_active_health_check_uneject_host,
 *    default true).
 *
 * An endpoint (host:port) shared by several clusters has one checker and
 * one result: the first cluster in config order with a health_check gives
 * the settings; un-ejection applies to every health-checked cluster that
 * has it. All functions: control thread only. */
#ifndef MG_CLUSTER_HEALTH_H
#define MG_CLUSTER_HEALTH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "cluster/cluster.h"

/* mg_ep_stats_t.hc_state */
enum {
    MG_HC_NONE = 0,      /* no active health check on this endpoint: usable */
    MG_HC_HEALTHY = 1,
    MG_HC_UNHEALTHY = 2,
    MG_HC_PENDING = 3,   /* checked, no result yet: not usable (Envoy) */
};

/* mg_ep_stats_t.hc_last_result */
typedef enum {
    MG_HC_R_NONE = 0,        /* no check finished yet */
    MG_HC_R_OK,              /* expected status */
    MG_HC_R_STATUS,          /* a valid response with an unexpected status */
    MG_HC_R_CONNECT,         /* connect failed (refused, unreachable) */
    MG_HC_R_TIMEOUT,         /* no complete response head within timeout_ms */
    MG_HC_R_CLOSED,          /* connection closed/reset before a complete head */
    MG_HC_R_BAD_RESPONSE,    /* invalid response head, or over 8 KiB */
    MG_HC_R_N
} mg_hc_result_t;

/* Worker LB: may this endpoint get traffic as far as active health
 * checking goes? One relaxed load. True when the endpoint has no checker
 * or its last verdict is healthy; false while unhealthy or before its first
 * check. (When no endpoint of a cluster is usable, Envoy's panic mode
 * routes to all of them; that policy is the load balancer's.) */
static inline bool mg_ep_hc_usable(const mg_ep_stats_t *st)
{
    uint8_t s = atomic_load_explicit(&((mg_ep_stats_t *)st)->hc_state, memory_order_relaxed);
    return s == MG_HC_NONE || s == MG_HC_HEALTHY;
}

/* For GET /clusters: "healthy", "unhealthy", or "unknown" (no checker, or
 * no result yet). */
static inline const char *mg_hc_state_name(uint8_t s)
{
    return s == MG_HC_HEALTHY ? "healthy" : s == MG_HC_UNHEALTHY ? "unhealthy" : "unknown";
}

/* "ok", "status", "connect_failure", "timeout", "closed", "bad_response"; "" for none. */
const char *mg_hc_result_name(uint8_t r);

struct mg_snapshot; /* proxy/proxy.h */
typedef struct mg_health mg_health_t;

/* NULL on no memory. Nothing is checked until mg_health_update. */
mg_health_t *mg_health_new(uv_loop_t *control_loop);

/* At start and after every reload (snap = the snapshot being published):
 * starts checkers for new health-checked endpoints, retunes existing ones
 * (an endpoint kept across the reload keeps its verdict, counters and
 * schedule; a changed interval applies from the next check), stops the
 * rest (their hc_state returns to MG_HC_NONE). Takes a ref on snap (for its
 * outlier detectors) and drops the previous one. */
void mg_health_update(mg_health_t *h, const struct mg_snapshot *snap);

/* Optional start-up/reload warming: cb(arg) runs on the control loop once
 * every checker has a first result after an update (at the end of
 * mg_health_update itself if none is pending). Re-armed by each update;
 * cb may be NULL. A caller that starts listening (or swaps) in cb gets
 * Envoy's "one health check round before the cluster initializes"; the
 * wait is bounded by the largest timeout_ms plus 50 ms. */
void mg_health_set_warm_cb(mg_health_t *h, void (*cb)(void *arg), void *arg);

/* True when no checker is waiting for its first result. */
bool mg_health_warm(const mg_health_t *h);

/* Number of checkers (distinct health-checked endpoints). */
uint32_t mg_health_count(const mg_health_t *h);

/* Stop every checker, close all handles, drop the snapshot ref; h is freed
 * once the last close callback ran (run the loop). Endpoint verdicts are
 * left as they were (workers draining keep using them). NULL is fine. */
void mg_health_stop(mg_health_t *h);

#endif
