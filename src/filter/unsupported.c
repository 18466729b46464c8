/* unsupported: Spring names meshgate recognises but refuses, so a config
 * using them fails at load with a clear message instead of a did-you-mean.
 * (RequestRateLimiter/RateLimiter: rate_limit.c; CircuitBreaker and Retry:
 * resilience_filters.c.) */
#include "filter/filters_int.h"

#define SOON "is not supported yet (coming with the resilience work)"
#define NEVER "is not supported by meshgate"

#define REFUSED(var, nm, why, kd) const mg_plugin_spec_t var = { .name = nm, .kind = kd, .unsupported = why }

REFUSED(mg_pred_unsupported_readbody, "ReadBody", NEVER, MG_PLUGIN_PREDICATE);
REFUSED(mg_pred_unsupported_cfroute, "CloudFoundryRouteService", NEVER, MG_PLUGIN_PREDICATE);

const mg_plugin_spec_t mg_f_unsupported[10] = {
    { .name = "FallbackHeaders", .kind = MG_PLUGIN_FILTER, .unsupported = SOON },
    { .name = "Hystrix", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER " (removed from Spring; use CircuitBreaker)" },
    { .name = "ModifyRequestBody", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER " (Java code)" },
    { .name = "ModifyResponseBody", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER " (Java code)" },
    { .name = "SaveSession", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
    { .name = "TokenRelay", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
    { .name = "JsonToGrpc", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
    { .name = "CacheRequestBody", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
    { .name = "LocalResponseCache", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
    { .name = "SetRequestUri", .kind = MG_PLUGIN_FILTER, .unsupported = NEVER },
};
