/* resilience_filters: Spring Cloud Gateway's CircuitBreaker and Retry
 * filters. They have no request/response hooks: the proxy runs breakers
 * and retries itself from the route's config (mg_route_cfg_t.has_breaker,
 * .breaker, .has_retry, .retry...). The registry entries only resolve and
 * validate the arguments at load (FILE:LINE:COL errors); the config loader
 * (src/config/resilience_cfg.c) turns the validated arguments into the
 * route's fields with the functions below, after all routes and the
 * resilience4j.* section are known. Pure functions; any thread. */
#ifndef MG_FILTER_RESILIENCE_FILTERS_H
#define MG_FILTER_RESILIENCE_FILTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "resilience/breaker.h"
#include "resilience/retry.h"

/* The CircuitBreaker filter's own arguments. */
typedef struct {
    const char *name;          /* args.name (points into pc), or NULL: the route id */
    const char *fallback_path; /* forward:/x -> "/x" (points into pc), or NULL */
    bool resume_without_error;
    bool has_status_codes;
    uint64_t fail_status[MG_CB_STATUS_WORDS]; /* statusCodes, as mg_breaker_cfg_t.fail_status */
} mg_cb_filter_args_t;

/* Read and validate a CircuitBreaker filter's arguments. 0 or MG_ECONFIG
 * with "FILE:LINE:COL: message" in err. */
int mg_cb_filter_args(const mg_plugin_cfg_t *pc, mg_cb_filter_args_t *out, char *err, size_t errlen);

/* A Spring Retry filter's arguments -> a policy (starting from Spring's
 * defaults, mg_retry_policy_spring). 0 or MG_ECONFIG with position. */
int mg_retry_filter_policy(const mg_plugin_cfg_t *pc, mg_retry_policy_t *out, char *err, size_t errlen);

/* Spring Boot Duration text: "500" (ms), "500ms", "2s", "1m", "1h", "1d",
 * "100us", "10ns" (rounded up to whole ms), or ISO-8601 "PT2S", "PT0.5S",
 * "P1DT2H". 0, or -1 when malformed, negative or over ~49 days. */
int mg_spring_duration_ms(const char *s, uint64_t *out_ms);

#endif
