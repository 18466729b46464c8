/* route: the compiled route table of one config snapshot.
 *
 * Built by the control thread from mg_config_t, immutable afterwards and
 * shared read-only by every worker; it lives as long as its snapshot.
 * Matching returns the first route, in order, whose predicates all hold. */
#ifndef MG_ROUTE_ROUTE_H
#define MG_ROUTE_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <stdint.h>

#include "config/config.h"
#include "core/json.h"
#include "http/http1.h"
#include "route/path.h"

typedef struct mg_route {
    const mg_route_cfg_t *cfg; /* id, cluster name and index, position */
    mg_path_pattern_t *path;   /* first pattern of the route's Path predicate, or NULL */
    bool has_filters;          /* any request/response filter (incl. default-filters) */
    bool has_response_filters; /* any filter with a response part: else skip mg_filters_response */
    void *compiled;            /* private to route/ and filter/: predicates, filters */
} mg_route_t;

/* What predicates may look at besides the parsed request. */
typedef struct {
    const mg_http_msg_t *req;
    const struct sockaddr *peer; /* client address (RemoteAddr); may be NULL */
    uint64_t *rng;               /* the worker's xorshift64 state (Weight draws) */
    int64_t now_ms;              /* wall clock, ms since epoch (After/Before/Between) */
} mg_match_ctx_t;

typedef struct mg_route_table mg_route_table_t;

/* Returns 0, or MG_ECONFIG with "FILE:LINE:COL: message" in err. */
int mg_route_table_build(const mg_config_t *cfg, mg_route_table_t **out, char *err, size_t errlen);
void mg_route_table_free(mg_route_table_t *t);

/* First matching route (by order, then declaration) or NULL. vars (may be
 * NULL) receives the URI variables of the Path and Host predicates. */
const mg_route_t *mg_route_match(const mg_route_table_t *t, const mg_match_ctx_t *ctx, mg_path_vars_t *vars);

/* The route's rate limiter (a RequestRateLimiter / RateLimiter filter, or a
 * native `rate_limit:` block), or NULL. Built with the table, read-only. */
struct mg_rl_limiter;
const struct mg_rl_limiter *mg_route_rate_limiter(const mg_route_t *r);

size_t mg_route_count(const mg_route_table_t *t);
const mg_route_t *mg_route_at(const mg_route_table_t *t, size_t i); /* declaration order */
size_t mg_route_index(const mg_route_table_t *t, const mg_route_t *r);

/* Match counters, per worker and lock-free: worker w (0..cfg->workers-1)
 * calls mg_route_hit after a match; only it writes its row (relaxed
 * atomics), readers (admin) sum the rows. Counters start at 0 with each
 * table, i.e. each config (re)load. */
void mg_route_hit(const mg_route_t *r, uint32_t worker);
uint64_t mg_route_hits(const mg_route_t *r);

/* JSON for GET /routes: {"id","order","predicates":[{"name","args"}],
 * "filters":[...],"destination":{"cluster","uri"},"metadata":{...},
 * "matches"}. */
void mg_route_describe_json(const mg_route_t *r, mg_buf_t *out);
/* A configured predicate/filter list as JSON (e.g. default-filters). */
void mg_plugin_list_json(const mg_plugin_list_t *l, mg_buf_t *out);

#endif
