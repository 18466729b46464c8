/* cfg_int: what the files of src/config share (native dialect in config.c,
 * Spring Cloud Gateway dialect in scg.c, predicate/filter lists in
 * plugins.c). Internal to src/config. */
#ifndef MG_CONFIG_CFG_INT_H
#define MG_CONFIG_CFG_INT_H

#include "config/cfg_walk.h"
#include "config/config.h"
#include "config/yaml_tree.h"
#include "filter/registry.h"

typedef struct {
    mg_config_t *cfg;
    const mg_ynode_t *root; /* the merged tree */
} load_t;

static inline mg_src_pos_t mg_pos_of(const mg_ynode_t *n) { return (mg_src_pos_t){ n->file, n->line, n->col }; }

/* plugins.c: a predicates:/filters: sequence (shortcut or expanded items)
 * appended to out, each resolved against the registry and validated. */
int mg_cfg_plugins(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out);
/* Spring relaxed binding: a[0..an) and b name the same key
 * ("lower-case-service-id", "lowerCaseServiceId", "lower_case_service_id"). */
bool mg_cfg_relaxed_eq(const char *a, size_t an, const char *b);
/* Same, names and arguments resolved but values not validated (templates
 * whose values are expressions: the discovery locator's). As Spring's
 * GATHER_LIST normalization, any argument key of a list predicate (Path,
 * Host, Method...) adds to its list: Spring's documented args[pattern]. */
int mg_cfg_plugins_raw(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out);

/* config.c: shared route/cluster helpers */
int mg_cfg_route_walk(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const mg_ynode_t *item, size_t ordinal);
extern const mg_cfg_table_t mg_scg_route_table;
void mg_cfg_route_free(mg_route_cfg_t *r);
void mg_cfg_cluster_free(mg_cluster_cfg_t *c);
/* c (not yet in cfg->clusters) set to the defaults of cfg; 0 or -ENOMEM */
int mg_cfg_cluster_init(const mg_config_t *cfg, mg_cluster_cfg_t *c, const char *name, const mg_ynode_t *at);
mg_cluster_cfg_t *mg_cfg_add_cluster(mg_config_t *cfg, const char *name, const mg_ynode_t *at);
int mg_cfg_parse_addr(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *def_host,
                      mg_addr_cfg_t *out);
void mg_cfg_free_addrs(mg_addr_cfg_t *a, size_t n);
/* {key: value} scalars -> a->labels (replacing them) */
int mg_cfg_labels(mg_cfg_ctx_t *ctx, const mg_ynode_t *v, mg_addr_cfg_t *a);

/* scg.c: top-level keys of the Spring Cloud Gateway dialect */
int mg_scg_server(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_scg_management(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_scg_spring(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);

/* locator.c: discovery.locator (native) and
 * spring.cloud.gateway[.server.webflux].discovery.locator, one handler
 * (obj: the mg_config_t) for both; relaxed key spellings. */
int mg_cfg_locator(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
void mg_cfg_locator_free(mg_locator_cfg_t *l);
/* After the whole file is walked (default-filters known). */
int mg_cfg_locator_finish(mg_cfg_ctx_t *ctx);

/* ratelimit_cfg.c: a native route's rate_limit: block (appended to its
 * filters as a RequestRateLimiter), the one-limiter-per-route check, the
 * native redis: key and Spring's spring.data.redis / spring.redis. */
int mg_cfg_route_rate_limit(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_cfg_route_check_limiters(mg_cfg_ctx_t *ctx, const mg_ynode_t *item, const mg_route_cfg_t *r);
int mg_cfg_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_scg_data_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_scg_redis(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);

/* discovery_cfg.c: discovery.backend / url / prefix, and the check after
 * the walk (backend redis without url takes the redis: block). */
int mg_cfg_discovery_backend(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_cfg_discovery_url(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_cfg_discovery_prefix(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_cfg_discovery_finish(mg_cfg_ctx_t *ctx);
/* dns_cfg.c: a cluster's dns: list, discovery.dns, defaults and frees. */
int mg_cfg_cluster_dns(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
int mg_cfg_discovery_dns(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj);
void mg_cfg_dns_defaults(mg_config_t *cfg);
void mg_cfg_dns_free(mg_dns_cfg_t *d, size_t n);
void mg_cfg_discovery_dns_free(mg_config_t *cfg);

/* print.c: s as a YAML double-quoted scalar (escapes ", \, controls; NULL
 * prints ""). Shared by every part of `meshgate config print`. */
void mg_cfg_print_str(FILE *f, const char *s);

/* scg.c: if root is a Kubernetes ConfigMap, parse the YAML files of its
 * data (positions into the outer file, whose raw text is data[0..len)) and
 * return their merge in *out; otherwise *out = root. */
int mg_scg_unwrap_configmap(mg_cfg_ctx_t *ctx, mg_yarena_t *a, mg_ynode_t *root, const char *data, size_t len,
                            mg_ynode_t **out);

#endif
