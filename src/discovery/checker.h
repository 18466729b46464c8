/* checker: runs the registry's HTTP and TCP checks (Consul's agent does
 * this; meshgate's registry only stores them).
 *
 * One mg_reg_checker_t on the control loop: one runner per HTTP/TCP check
 * of the registry (so at most as many as the registry holds checks). Each
 * runner probes with probe.h (the probe code of the cluster health
 * checker) every Interval (the first run right away, + at most 50 ms of
 * jitter; then Interval after the previous run ended) and reports with
 * mg_registry_check_result():
 *   HTTP  a response head with a 2xx status is passing, 429 warning,
 *         anything else, a timeout or a connection error critical. The
 *         request is Method (GET) path?query HTTP/1.1 with the check's
 *         Header values (Host, User-Agent "Consul Health Check" and Accept
 *         defaulted as Consul does), its Body, and Connection: close; only
 *         the response head is read. https:// URLs are not probed (no TLS
 *         in meshgate): the check is reported critical once, saying so.
 *   TCP   passing when the connect succeeds, critical otherwise.
 * Timeout: the check's Timeout, else 10 s; never more than the Interval.
 * Hosts: IP literals and "localhost" directly, other names through
 * uv_getaddrinfo (the first address) at each run.
 *
 * The set of runners follows the registry: mg_reg_checker_notify() from the
 * registry listener (registered / deregistered / reaped) schedules a
 * reconciliation on the next loop turn; mg_reg_checker_sync() does it now
 * (at start-up, after the store was loaded). A runner whose check kept its
 * ID and definition keeps its schedule. Control thread only. */
#ifndef MG_DISCOVERY_CHECKER_H
#define MG_DISCOVERY_CHECKER_H

#include <stdint.h>
#include <uv.h>

#include "discovery/registry.h"

typedef struct mg_reg_checker mg_reg_checker_t;

/* NULL on no memory. reg must outlive the checker's mg_reg_checker_stop. */
mg_reg_checker_t *mg_reg_checker_new(uv_loop_t *loop, mg_registry_t *reg);
/* Reconcile the runners with the registry's checks now. */
void mg_reg_checker_sync(mg_reg_checker_t *k);
/* Registry listener hook: schedules a sync when instances changed. */
void mg_reg_checker_notify(mg_reg_checker_t *k, const mg_reg_event_t *ev);
/* Number of runners. */
uint32_t mg_reg_checker_count(const mg_reg_checker_t *k);
/* Stops every runner; k is freed once its handles are closed (run the
 * loop). Nothing is reported to the registry afterwards. NULL is fine. */
void mg_reg_checker_stop(mg_reg_checker_t *k);

#endif
