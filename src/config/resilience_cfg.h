/* resilience_cfg: the configuration side of the resilience features
 * (internal to src/config). Native blocks are key-table handlers that
 * config.c lists; the Spring side (CircuitBreaker / Retry filters with the
 * resilience4j.* section) is resolved by mg_rcfg_finish() once the whole
 * tree has been walked, because it needs every route (default-filters,
 * fallback targets, shared breaker names) and the resilience4j section,
 * wherever they appear. See docs/resilience-config.md. */
#ifndef MG_CONFIG_RESILIENCE_CFG_H
#define MG_CONFIG_RESILIENCE_CFG_H

#include <stdbool.h>
#include <stdio.h>

#include "config/cfg_walk.h"
#include "config/config.h"

/* native route keys (obj: mg_route_cfg_t) */
int mg_rcfg_route_breaker(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_route_retry(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_route_respond(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);

/* native cluster keys (obj: mg_cluster_cfg_t) */
int mg_rcfg_cluster_breaker(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_cluster_pool(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_cluster_outlier(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_cluster_retry_budget(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_rcfg_cluster_health(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);

/* top-level "resilience4j:" (shape only; read by mg_rcfg_finish) */
int mg_rcfg_resilience4j(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);

/* Cluster resilience defaults (bulkhead off, retry budget 20 % / 3). */
void mg_rcfg_cluster_defaults(mg_cluster_cfg_t *c);

/* After the walk: Spring CircuitBreaker/Retry filters -> route fields,
 * resilience4j.* merging, shared breaker names, fallback targets. */
int mg_rcfg_finish(mg_cfg_ctx_t *ctx);

void mg_rcfg_route_free(mg_route_cfg_t *r);
void mg_rcfg_cluster_free(mg_cluster_cfg_t *c);

/* config print */
void mg_rcfg_print_cluster(FILE *f, const mg_cluster_cfg_t *c);
void mg_rcfg_print_route(FILE *f, const mg_config_t *cfg, const mg_route_cfg_t *r);
/* true for plugins written back as native blocks instead (CircuitBreaker) */
bool mg_rcfg_print_skip(const mg_plugin_cfg_t *pc);

/* Health-check expected statuses: bit (status - 100) of health.expected. */
static inline bool mg_rcfg_health_expected(const mg_cluster_cfg_t *c, int status)
{
    if (status < 100 || status > 739) return false;
    unsigned b = (unsigned)(status - 100);
    return (c->health.expected[b / 64] >> (b % 64)) & 1;
}

#endif
