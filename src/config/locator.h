/* locator: Spring Cloud Gateway's discovery locator
 * (DiscoveryClientRouteDefinitionLocator): one route per service known to
 * discovery, made fresh each time the set of services changes.
 *
 * For a service S (lower-cased in predicates and filters with
 * lower_case_service_id) the route is
 *   id          route_id_prefix + S   ("ReactiveCompositeDiscoveryClient_S")
 *   predicate   Path: /S and everything under it (pattern /S/ followed by **)
 *   filter      RewritePath='/'+serviceId+'/?(?<remaining>.*)', '/${remaining}'
 *   uri         lb://S                (the cluster S, fed by the registry)
 * unless custom predicates/filters are configured. Argument values are
 * expressions in a SpEL subset: 'text' / "text" literals, integers,
 * true/false and serviceId, joined with +.
 *
 * Ownership: mg_locator_derive() returns a config that borrows everything
 * from its base (holding one share of it) and owns only the generated
 * routes and clusters (mg_config_t.derived_from); mg_config_free() frees
 * it like any other config. Control thread only; the result is immutable. */
#ifndef MG_CONFIG_LOCATOR_H
#define MG_CONFIG_LOCATOR_H

#include <stddef.h>

#include "config/config.h"

#define MG_LOCATOR_DEFAULT_PREFIX "ReactiveCompositeDiscoveryClient_"

/* Takes ownership of base. With base->discovery.locator.enabled, *out is a
 * new config: base's routes first (so they match first at equal order),
 * then one route per service of services[0..n) (registry names; duplicates
 * are fine) and of base's clusters with static endpoints (native clusters:
 * and Spring simple-discovery instances; not those made for a route's
 * uri: http://host:port), in name order. A
 * service whose route would take a configured route's id, or whose route
 * does not compile (a name that makes a bad pattern), is skipped and
 * logged. Without the locator *out = base. Returns 0, or -ENOMEM (base
 * freed, message in err). */
int mg_locator_derive(mg_config_t *base, const char *const *services, size_t n, mg_config_t **out, char *err,
                      size_t errlen);

/* The loaded config a (possibly derived) config was made from. */
static inline mg_config_t *mg_config_base(mg_config_t *cfg)
{
    return cfg->derived_from ? cfg->derived_from : cfg;
}

/* Evaluates expr with serviceId = service_id into *out (malloc'd).
 * Returns 0, or MG_EPARSE with the reason in err (no position). */
int mg_locator_eval(const char *expr, const char *service_id, char **out, char *err, size_t errlen);

#endif
