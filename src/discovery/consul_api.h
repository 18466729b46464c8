/* consul_api: the subset of Consul's HTTP API that service libraries and
 * scripts use, as pure request handlers over the embedded registry.
 *
 *   PUT /v1/agent/service/register          (?replace-existing-checks)
 *   PUT /v1/agent/service/deregister/<id>
 *   PUT /v1/agent/check/pass|warn|fail/<check-id>   (?note=)
 *   PUT /v1/agent/check/update/<check-id>   ({"Status":..., "Output":...})
 *   GET /v1/agent/services, /v1/agent/service/<id>, /v1/agent/checks
 *   GET /v1/health/service/<name>           (?passing, ?tag=, blocking)
 *   GET /v1/catalog/services                (blocking, global index)
 *   GET /v1/catalog/service/<name>          (?tag=, blocking)
 *   GET /v1/status/leader                   (health indicators ask it)
 *
 * Threads: the control thread (it calls into the registry). No I/O: the
 * admin server parses the HTTP request, calls mg_consul_handle() and writes
 * the response; the body is in resp->body, extra header lines (X-Consul-
 * Index, X-Consul-KnownLeader, X-Consul-LastContact) in resp->headers.
 *
 * Writes (PUT) need the configured token, from X-Consul-Token,
 * "Authorization: Bearer <token>" or ?token= (Consul's three ways); else
 * 403 "Permission denied". Reads are open (the admin listener is loopback
 * by default). Errors are text/plain like Consul's; 400 bodies name the
 * field ("Request decode failed: Port: expected a number").
 *
 * Blocking queries (health/service, catalog/service(s)): with ?index=N
 * where N equals the current index of the watched resource, the handler
 * returns MG_CONSUL_BLOCK and fills resp->watch_* and resp->wait_ms
 * (?wait=, default 5 min, at most 10 min, plus up to wait/16 of jitter as
 * Consul adds). The admin server then parks the connection, keeping the
 * request, and calls mg_consul_handle() again with MG_CONSUL_NOBLOCK when
 * mg_consul_woken() turns true (from a registry listener) or when wait_ms
 * has passed; that call always answers (200 with the current result and
 * X-Consul-Index). An index different from the current one (also a larger
 * one, e.g. from before a data-directory reset) answers at once, so a
 * client never hangs on a stale index. X-Consul-Index is set on every
 * answer of those endpoints and is never 0.
 *
 * Departures from Consul (documented): no ACL policies (one token guards all
 * writes), no ?filter= (400), no hash-based blocking on agent endpoints,
 * a non-TTL check given to pass/warn/fail/update is 400 (Consul: 500),
 * only HTTP, TCP and TTL checks. */
#ifndef MG_DISCOVERY_CONSUL_API_H
#define MG_DISCOVERY_CONSUL_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "core/slice.h"
#include "discovery/registry.h"

typedef struct mg_consul_api mg_consul_api_t;

typedef struct {
    const char *token;       /* NULL or "" = writes need no token */
    size_t max_body;         /* 65536; larger registration bodies get 413 */
    int64_t default_wait_ms; /* 300000 */
    int64_t max_wait_ms;     /* 600000 */
} mg_consul_opts_t;

/* reg is borrowed (must outlive the api). opts NULL = defaults; the token
 * is copied. NULL on out of memory. */
mg_consul_api_t *mg_consul_api_new(mg_registry_t *reg, const mg_consul_opts_t *opts);
void mg_consul_api_free(mg_consul_api_t *api);

typedef struct {
    mg_slice_t method;         /* "GET", "PUT", ... */
    mg_slice_t path;           /* raw target path, percent-encoded, without the query */
    mg_slice_t query;          /* raw query string without '?', may be empty */
    mg_slice_t x_consul_token; /* X-Consul-Token header value, or empty */
    mg_slice_t authorization;  /* Authorization header value, or empty */
    mg_slice_t body;
} mg_consul_req_t;

typedef enum {
    MG_CONSUL_DONE = 0,  /* answer with status/headers/body now */
    MG_CONSUL_BLOCK = 1, /* park; see the header comment */
} mg_consul_verdict_t;

typedef struct {
    int status;
    const char *content_type; /* static string; NULL when the body is empty */
    char headers[160];        /* extra "Name: value\r\n" lines, maybe empty */
    mg_buf_t body;            /* caller frees with mg_consul_resp_free */
    /* MG_CONSUL_BLOCK only: */
    char watch_service[260];  /* service whose index is watched; "" = global */
    uint64_t watch_index;     /* wake when the index differs from this */
    int64_t wait_ms;          /* answer (with NOBLOCK) after this long at most */
} mg_consul_resp_t;

void mg_consul_resp_init(mg_consul_resp_t *r);
void mg_consul_resp_free(mg_consul_resp_t *r);

/* True for paths this module answers ("/v1/..."). */
bool mg_consul_match(mg_slice_t path);

#define MG_CONSUL_NOBLOCK 1u /* never return MG_CONSUL_BLOCK */

/* Handles one request. resp must be initialised; its previous content is
 * replaced. Returns MG_CONSUL_DONE or MG_CONSUL_BLOCK. */
mg_consul_verdict_t mg_consul_handle(mg_consul_api_t *api, const mg_consul_req_t *req, unsigned flags,
                                     int64_t now_ms, mg_consul_resp_t *resp);

/* For a parked request: has its watched index moved? */
bool mg_consul_woken(const mg_consul_api_t *api, const mg_consul_resp_t *blocked);

/* Counters for /metrics. */
typedef struct {
    uint64_t requests, writes, denied, bad_requests, blocked;
} mg_consul_stats_t;
const mg_consul_stats_t *mg_consul_stats(const mg_consul_api_t *api);

#endif
