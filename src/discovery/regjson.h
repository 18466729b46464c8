/* regjson: Consul's service registration JSON <-> mg_reg_def_t.
 *
 * Parsing is strict about types and names the field in every error
 * ("Port: expected a number", "Checks[1].TTL: expected a duration like
 * \"10s\""), and tolerant about keys the way Consul (Go's encoding/json plus
 * its snake_case translation) is: keys match case-insensitively and with
 * underscores ignored ("deregister_critical_service_after" is
 * DeregisterCriticalServiceAfter); unknown keys are ignored. Durations are
 * Go duration strings ("10s", "1m30s", "500ms") or numbers of nanoseconds.
 *
 * Check types: HTTP + Interval, TCP + Interval, TTL. Script, gRPC, Docker,
 * alias, H2PING, UDP and OS-service checks are refused with 400 (meshgate
 * does not run them), as is a non-typical Kind (connect proxies, gateways).
 *
 * Pure functions, any thread. Semantic validation (defaults, limits, Meta
 * rules) is mg_registry_register()'s job. */
#ifndef MG_DISCOVERY_REGJSON_H
#define MG_DISCOVERY_REGJSON_H

#include <stddef.h>
#include <stdint.h>

#include "core/json.h"
#include "discovery/registry.h"

/* 0, or MG_EPARSE with the message in err (out is then empty). */
int mg_regjson_parse(const char *body, size_t len, mg_reg_def_t *out, char *err, size_t errlen);

/* The definition as registration JSON (re-parsable by mg_regjson_parse;
 * the store keeps this). */
void mg_regjson_write(mg_buf_t *b, const mg_reg_def_t *d);

/* Go duration ("1h2m3.5s", "300ms", "0") -> milliseconds, sub-millisecond
 * non-zero values rounded up to 1. 0, or -EINVAL (also for negatives). */
int mg_duration_parse(const char *s, int64_t *ms);

#endif
