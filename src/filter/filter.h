/* filter: what route filters see and change, and how the proxy calls them.
 *
 * The proxy parses a request, matches a route, then (only if the route or
 * default-filters have any filter) fills an mg_req_view_t with zero-copy
 * views of the request and calls mg_filters_request(). Filters change the
 * view: a changed field points at new bytes from the per-request arena
 * (never into the read buffer being written). The proxy then serializes
 * the view upstream (adding X-Forwarded-*, Via and framing itself). On the
 * response side, mg_filters_response() edits an mg_resp_view_t before the
 * proxy serializes it to the client. A route without filters costs nothing:
 * the proxy skips the views entirely (mg_route_t.has_filters == false).
 * All functions run on a worker thread, touch only their arguments and the
 * route's immutable compiled filters, and never block. */
#ifndef MG_FILTER_FILTER_H
#define MG_FILTER_FILTER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/arena.h"
#include "core/slice.h"
#include "http/http1.h"
#include "route/path.h"

typedef struct {
    mg_slice_t name, value;
} mg_hdr_t;

/* A growable header list; storage from the arena. Order is kept. */
typedef struct {
    mg_hdr_t *v;
    uint32_t n, cap;
} mg_hdr_list_t;

typedef struct {
    mg_arena_t *arena;            /* per request; reset by the proxy between requests */
    const mg_http_msg_t *msg;     /* the parsed request, read-only */
    mg_slice_t client_ip;         /* peer address text */
    mg_slice_t method;
    mg_slice_t path;              /* without the query; what goes upstream */
    mg_slice_t query;             /* without '?'; p == NULL means no query */
    mg_slice_t host;              /* Host to send upstream (the client's unless changed) */
    bool preserve_host;           /* PreserveHostHeader: keep the client's Host (default in
                                     meshgate; see docs) */
    mg_hdr_list_t headers;        /* end-to-end request headers to forward: hop-by-hop,
                                     Host and framing fields are NOT in this list */
    mg_path_vars_t vars;          /* URI variables from Path and Host predicates */
    uint64_t max_body;            /* RequestSize: 0 = no route limit */

    /* A filter may answer the request itself (RedirectTo, a size limit):
     * status != 0 means "do not forward; reply with this status, these
     * headers (e.g. Location) and an empty or JSON error body". */
    int local_status;
    mg_hdr_list_t local_headers;
} mg_req_view_t;

typedef struct {
    mg_arena_t *arena;
    int status;            /* may be changed (SetStatus) */
    mg_slice_t reason;     /* emptied by the proxy when status changes */
    mg_hdr_list_t headers; /* end-to-end response headers (no hop-by-hop, no framing) */
} mg_resp_view_t;

struct mg_route; /* route/route.h */

/* Run the request filters of route r (default-filters first, then the
 * route's, in order). Returns 0, or a negative HTTP status for a request
 * the filters reject (e.g. -431 RequestHeaderSize, -413 RequestSize). */
int mg_filters_request(const struct mg_route *r, mg_req_view_t *req);

/* Run the response filters of route r on a response to req. */
void mg_filters_response(const struct mg_route *r, const mg_req_view_t *req, mg_resp_view_t *resp);

/* Header list helpers (case-insensitive names). */
int mg_hdr_add(mg_arena_t *a, mg_hdr_list_t *l, mg_slice_t name, mg_slice_t value);
const mg_hdr_t *mg_hdr_get(const mg_hdr_list_t *l, mg_slice_t name);
void mg_hdr_remove(mg_hdr_list_t *l, mg_slice_t name);
int mg_hdr_set(mg_arena_t *a, mg_hdr_list_t *l, mg_slice_t name, mg_slice_t value);

#endif
