/* predicate: Spring Cloud Gateway route predicates (Path, Host, Method,
 * Header, Query, Cookie, After, Before, Between, RemoteAddr,
 * XForwardedRemoteAddr, Weight), compiled at load, evaluated by the route
 * matcher on a worker. Evaluation never allocates; regexes run only where
 * the configured value has metacharacters. Internal to src/route (and the
 * registry in src/filter). */
#ifndef MG_ROUTE_PREDICATE_H
#define MG_ROUTE_PREDICATE_H

#include <stdbool.h>
#include <stdint.h>

#include "filter/registry.h"
#include "route/path.h"
#include "route/route.h"

#define MG_MAX_WEIGHT_GROUPS 256

typedef struct {
    uint32_t nslots;
    uint32_t *cum; /* cumulative weights, cum[nslots-1] = total */
} mg_weight_group_t;

/* Per-request evaluation state, on the matcher's stack. */
typedef struct mg_pred_env {
    const mg_match_ctx_t *ctx;
    mg_path_vars_t *vars; /* variables of the route being evaluated */
    const mg_weight_group_t *groups;
    uint64_t drawn[MG_MAX_WEIGHT_GROUPS / 64];
    uint16_t chosen[MG_MAX_WEIGHT_GROUPS];
    uint64_t local_rng; /* when ctx->rng is NULL */
} mg_pred_env_t;

extern const mg_plugin_spec_t mg_pred_path, mg_pred_host, mg_pred_method, mg_pred_header, mg_pred_query,
    mg_pred_cookie, mg_pred_after, mg_pred_before, mg_pred_between, mg_pred_remote_addr,
    mg_pred_xff_remote_addr, mg_pred_weight;

/* Path predicate: its compiled patterns (for the trie). */
size_t mg_pred_path_count(const void *state);
const mg_path_pattern_t *mg_pred_path_at(const void *state, size_t i);

/* Weight predicate: group name and weight; the table assigns the group id
 * and the slot of this route inside the group. */
const char *mg_pred_weight_group(const void *state);
uint32_t mg_pred_weight_value(const void *state);
void mg_pred_weight_assign(void *state, uint32_t gid, uint32_t slot);

/* Parse Spring's ZonedDateTime text ("2017-01-20T17:42:47.789-07:00[America/Denver]")
 * or epoch milliseconds. Returns 0 and ms since the epoch, or -1. */
int mg_parse_zoned_datetime(const char *s, int64_t *ms);

#endif
