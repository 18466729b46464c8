/* outlier: passive outlier detection for one cluster, with Envoy's
 * semantics (consecutive 5xx, consecutive gateway errors, interval sweep,
 * ejection time = base x multiplier capped at max, max ejection percent
 * with at least one host always ejectable, panic below min health).
 *
 * Ownership: the control thread creates one detector per cluster (endpoint
 * i = the cluster's i-th endpoint) and frees it only when no worker can
 * still reach it. Threads: workers call mg_outlier_report (after each
 * attempt) and mg_outlier_excluded (in the load balancer) concurrently;
 * an ejection triggered by a report happens right there on the worker, by
 * CAS, as Envoy ejects on the consecutive-error event. The control thread
 * calls mg_outlier_sweep every interval_ms (returns hosts to service,
 * decays the multiplier) and reads mg_outlier_ep_info / mg_outlier_stats
 * for GET /clusters.
 *
 * How the proxy calls it (one exchange):
 *   LB, for each candidate endpoint i: skip it if mg_outlier_excluded(d, i)
 *     (one relaxed atomic load when the host is in rotation; false for
 *     everyone while the cluster is in panic).
 *   attempt over (response head parsed, or connect failure / timeout /
 *     reset / bad response): mg_outlier_report(d, i, result, status, now).
 *     Client cancellations report nothing.
 *   control thread: a uv timer every cfg.interval_ms -> mg_outlier_sweep.
 *
 * Cost per request: a non-5xx response costs one atomic load of the
 * endpoint's counter word (plus a store only if it was non-zero); a 5xx or
 * local failure costs one CAS on it. No lock anywhere. Each endpoint's
 * state lives on its own cache line.
 *
 * Model mapping (the config loader's job):
 *   native outlier_detection: {consecutive_5xx, consecutive_gateway_errors,
 *     interval, base_ejection_time, max_ejection_time, max_ejection_percent,
 *     min_health_percent} -> the fields of the same names.
 *   Istio outlierDetection (and the legacy trafficPolicy.circuitBreaker of
 *     the seed): consecutive5xxErrors -> consecutive_5xx,
 *     consecutiveGatewayErrors -> consecutive_gateway_errors, and the
 *     deprecated consecutiveErrors (when neither of those is set) ->
 *     consecutive_gateway_errors with consecutive_5xx = 0 (what Istio
 *     generates for Envoy); interval, baseEjectionTime, maxEjectionPercent,
 *     minHealthPercent as named. Start from mg_outlier_cfg_istio_defaults.
 *   The seed's {consecutiveErrors: 3, interval: 30s, baseEjectionTime: 30s,
 *     maxEjectionPercent: 50} = {gw 3, 5xx 0, 30000, 30000, 50, min health 0}. */
#ifndef MG_RESILIENCE_OUTLIER_H
#define MG_RESILIENCE_OUTLIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "resilience/outcome.h"

typedef struct {
    uint32_t consecutive_5xx;            /* 5; 0 = off. 5xx and local failures count */
    uint32_t consecutive_gateway_errors; /* 0 = off (Envoy counts 5 but does not enforce by default);
                                          * 502/503/504 and local failures count */
    uint32_t interval_ms;                /* 10000: sweep period */
    uint32_t base_ejection_time_ms;      /* 30000 */
    uint32_t max_ejection_time_ms;       /* 300000; the cap is max(this, base) */
    uint32_t max_ejection_percent;       /* 10; one host may always be ejected */
    uint32_t min_health_percent;         /* 50 (Envoy's panic threshold); 0 = never panic */
} mg_outlier_cfg_t;

void mg_outlier_cfg_default(mg_outlier_cfg_t *c);
/* Istio's defaults: 5xx 5, gateway off, 10 s, 30 s, 300 s, 10 %, min health 0. */
void mg_outlier_cfg_istio_defaults(mg_outlier_cfg_t *c);
/* 0, or MG_ECONFIG with the reason (no position) in err. */
int mg_outlier_cfg_validate(const mg_outlier_cfg_t *c, char *err, size_t errlen);

typedef enum {
    MG_OD_EJECT_5XX = 0,   /* ejected: consecutive 5xx */
    MG_OD_EJECT_GATEWAY,   /* ejected: consecutive gateway errors */
    MG_OD_OVERFLOW,        /* an outlier was detected but max_ejection_percent said no */
    MG_OD_UNEJECT,         /* back in rotation */
} mg_od_event_t;

/* Called on ejection (on the worker that caused it, no lock held) and on
 * return to service (on the sweeping thread). Must be thread-safe and
 * quick (a log line, a counter). duration_ms: the ejection's length. */
typedef void (*mg_outlier_hook_t)(void *ud, uint32_t ep, mg_od_event_t ev, uint64_t duration_ms,
                                  uint64_t now_ms);

typedef struct mg_outlier mg_outlier_t;

/* NULL on bad config, neps == 0, or no memory. Copies cfg. */
mg_outlier_t *mg_outlier_new(const mg_outlier_cfg_t *cfg, uint32_t neps, mg_outlier_hook_t hook, void *ud);
void mg_outlier_free(mg_outlier_t *d);
const mg_outlier_cfg_t *mg_outlier_cfg(const mg_outlier_t *d);
uint32_t mg_outlier_neps(const mg_outlier_t *d);

/* Worker: the result of one attempt to endpoint ep. */
void mg_outlier_report(mg_outlier_t *d, uint32_t ep, mg_up_result_t r, int status, uint64_t now_ms);

/* Worker LB: true when ep must be skipped (ejected and not in panic). */
bool mg_outlier_excluded(const mg_outlier_t *d, uint32_t ep);
/* Fewer than min_health_percent of the hosts are in rotation: the LB
 * ignores ejections. */
bool mg_outlier_panic(const mg_outlier_t *d);

/* Control thread, every interval_ms: returns hosts whose time is up,
 * decays multipliers of hosts that stayed healthy for an interval.
 * Returns the number of hosts returned to service. */
uint32_t mg_outlier_sweep(mg_outlier_t *d, uint64_t now_ms);

/* Active health checking passed for ep: return it to service now if it is
 * ejected (Envoy's outlier_detection.successful_active_health_check_uneject_host,
 * default true). Like a sweep that found the time up: consecutive counters
 * restart, the multiplier is kept (and decays as usual), the hook gets
 * MG_OD_UNEJECT. Any thread; safe against concurrent sweeps, reports and
 * other un-ejects (one CAS claims the host). True when it was un-ejected;
 * false when ep was in rotation, is being ejected right now, or is out of
 * range (d may be NULL). */
bool mg_outlier_uneject(mg_outlier_t *d, uint32_t ep, uint64_t now_ms);

typedef struct {
    bool ejected;               /* out of rotation (panic aside) */
    uint64_t ejected_at_ms;     /* last ejection, 0 = never */
    uint64_t ejected_until_ms;  /* when the sweep may return it; 0 if in rotation */
    uint64_t times_ejected;     /* lifetime */
    uint32_t multiplier;        /* current ejection-time multiplier */
    uint32_t consecutive_5xx, consecutive_gateway_errors;
} mg_outlier_ep_info_t;

typedef struct {
    uint32_t neps, ejected; /* ejected now */
    bool panic;
    uint64_t detected_5xx, detected_gateway; /* thresholds reached */
    uint64_t enforced_5xx, enforced_gateway; /* ejections made */
    uint64_t overflow;                       /* refused by max_ejection_percent */
    uint64_t unejected;
} mg_outlier_stats_t;

void mg_outlier_ep_info(const mg_outlier_t *d, uint32_t ep, mg_outlier_ep_info_t *out);
void mg_outlier_stats(const mg_outlier_t *d, mg_outlier_stats_t *out);

/* Control thread, on reload, before the new snapshot is published: carry
 * endpoint from_ep of `from` (still possibly in use) to to_ep of `to`
 * (not yet visible to workers), ejection included. 0 or -EINVAL. */
int mg_outlier_carry(mg_outlier_t *to, uint32_t to_ep, const mg_outlier_t *from, uint32_t from_ep);

#endif
