/* rate_limit: the RequestRateLimiter filter (and the seed's RateLimiter,
 * an alias) as the route table sees it.
 *
 * The filter's compile turns its arguments (Spring's names, plus meshgate's
 * key / trusted-proxies / fail-closed) into an mg_rl_cfg_t owned by the
 * filter state; its request/response hooks do nothing, because the proxy
 * runs the limiter as its own asynchronous step (a Redis decision is
 * async). route.c builds each route's mg_rl_limiter_t from that config
 * with the route's id (mg_route_rate_limiter()). The native `rate_limit:`
 * block of a route is loaded as this same filter.
 *
 * Control thread only; the config is read-only once compiled. */
#ifndef MG_FILTER_RATE_LIMIT_H
#define MG_FILTER_RATE_LIMIT_H

#include <stdbool.h>

#include "filter/registry.h"
#include "ratelimit/limiter.h"

/* Whether s is RequestRateLimiter or RateLimiter. */
bool mg_plugin_is_rate_limiter(const mg_plugin_spec_t *s);

/* The config a rate limiter filter compiled to (state from its compile).
 * Its slices (header/query name, fixed key, trusted CIDRs) live as long as
 * the state. */
const mg_rl_cfg_t *mg_rate_limit_cfg(const void *state);

/* The meshgate key syntax in messages. */
#define MG_RL_KEY_SYNTAX "ip | header:NAME | query:NAME | route | path | fixed:VALUE"

#endif
