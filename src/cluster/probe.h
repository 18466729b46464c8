/* probe: one asynchronous health probe on a libuv loop (control thread).
 *
 * A probe is a fresh TCP connection to an address; with request bytes it
 * writes them and reads the response head (at most 8 KiB, parsed strictly
 * with mg_http_parse_response), without them (a TCP check) it ends as soon
 * as the connect succeeds. The whole probe is bounded by timeout_ms. The
 * result is reported once through the done callback:
 *   MG_HC_R_OK            a complete response head (status = its code), or
 *                         for a TCP probe a successful connect (status 0)
 *   MG_HC_R_CONNECT       connect (or the write) failed
 *   MG_HC_R_TIMEOUT       nothing complete within timeout_ms
 *   MG_HC_R_CLOSED        closed/reset before a complete head
 *   MG_HC_R_BAD_RESPONSE  invalid head, or over 8 KiB
 * Whether the status is acceptable is the caller's policy.
 *
 * One mg_probe_t runs one probe at a time and is reused: mg_probe_start
 * while the previous connection is still closing defers the start until it
 * is closed. Used by the cluster health checker (health.c) and the
 * registry's HTTP/TCP check runner (discovery/checker.c). */
#ifndef MG_CLUSTER_PROBE_H
#define MG_CLUSTER_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "cluster/health.h"

typedef struct mg_probe mg_probe_t;
typedef void (*mg_probe_done_fn)(void *ud, mg_hc_result_t r, int status);

/* NULL on no memory. */
mg_probe_t *mg_probe_new(uv_loop_t *loop, mg_probe_done_fn done, void *ud);

/* Starts a probe to addr. req/reqlen: the request bytes (copied), or
 * NULL/0 for a TCP connect probe. A probe already running is abandoned
 * (its result is never reported). Returns 0 or -ENOMEM (nothing started). */
int mg_probe_start(mg_probe_t *p, const struct sockaddr *addr, const char *req, size_t reqlen,
                   uint32_t timeout_ms);

/* True from mg_probe_start until done was called. */
bool mg_probe_running(const mg_probe_t *p);

/* Abandons any running probe (done is not called) and frees p once its
 * handles are closed (run the loop). NULL is fine. */
void mg_probe_free(mg_probe_t *p);

#endif
