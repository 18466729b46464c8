/* admin: the admin HTTP API, served on the control thread's loop.
 * Loopback by default (config `admin:`). Read-only views of the running
 * snapshot and of the per-worker counters:
 *   GET /health    {"status":"ok", ...}
 *   GET /routes    the routes of the current snapshot
 *   GET /clusters  clusters, endpoints and their pool counts
 *   GET /registry  the service registry's instances and checks (+ "dns" sets)
 *   GET /dns       the DNS discovery entries and their resolved addresses
 *   /v1/...        the Consul-compatible registry API (discovery/consul_api.h),
 *                  once mg_admin_set_discovery() was called; request bodies
 *                  up to 1 MiB (Content-Length; chunked gets 411); blocking
 *                  queries park the connection until a registry change or
 *                  their wait time. */
#ifndef MG_ADMIN_ADMIN_H
#define MG_ADMIN_ADMIN_H

#include "core/json.h"
#include <uv.h>

#include "proxy/proxy.h"

typedef struct mg_admin mg_admin_t;

/* Binds cfg->admin on loop. Returns 0 or a negative error with text in err. */
int mg_admin_start(uv_loop_t *loop, mg_server_t *srv, const mg_config_t *cfg, mg_admin_t **out, char *err,
                   size_t errlen);
struct mg_registry;
struct mg_consul_api;
/* Mount the registry views and the Consul API (both borrowed: they must
 * outlive the admin's connections, i.e. be freed after the loop ended).
 * Adds a registry listener that wakes parked blocking queries. */
void mg_admin_set_discovery(mg_admin_t *a, struct mg_registry *reg, struct mg_consul_api *api);
/* GET /stats calls fn(ud, b) to append ,"name":{...} members (the shared
 * registry backend's counters). fn NULL removes it. */
void mg_admin_set_stats_extra(mg_admin_t *a, void (*fn)(void *ud, mg_buf_t *b), void *ud);

struct mg_dnssrc;
/* Mount the DNS discovery views (/dns, "dns" in /stats and /registry);
 * borrowed, NULL unmounts. */
void mg_admin_set_dns(mg_admin_t *a, struct mg_dnssrc *dns);

/* Close the listener and every admin connection; frees itself once closed. */
void mg_admin_stop(mg_admin_t *a);

#endif
