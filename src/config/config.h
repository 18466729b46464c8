/* config: YAML files -> one immutable mg_config_t.
 *
 * The loader reads each file with libyaml into a node tree that keeps
 * file:line:col, merges the trees (maps merge key by key, later files win;
 * scalars and sequences are replaced whole), then walks the merged tree
 * with declarative key tables (see config.c) that give each key's type,
 * bounds and default. Later dialects (Spring Cloud Gateway, Istio) are
 * further tables over the same tree. Errors are "FILE:LINE:COL: message".
 * A loaded config is owned by the caller and freed with mg_config_free();
 * nothing in it changes after load, so any thread may read it. */
#ifndef MG_CONFIG_CONFIG_H
#define MG_CONFIG_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "resilience/breaker.h"
#include "resilience/bulkhead.h"
#include "resilience/outlier.h"
#include "resilience/retry.h"

typedef struct {
    const char *file; /* points into mg_config_t.files[] */
    int line, col;    /* 1-based */
} mg_src_pos_t;

typedef struct {
    char *key, *value;
} mg_label_t;

typedef struct {
    char *host; /* literal IP or host name, as written ("127.0.0.1", "::1", "localhost") */
    uint16_t port;
    mg_src_pos_t pos;
    mg_label_t *labels; /* endpoint metadata (Spring simple-discovery "metadata"); may be NULL */
    size_t nlabels;
} mg_addr_cfg_t;

/* One DNS discovery entry of a cluster (dns: list; src/discovery/dnssrc.h):
 * A/AAAA of name with port, or the SRV records of srv. */
typedef enum { MG_DNS_FAMILY_ANY = 0, MG_DNS_FAMILY_V4, MG_DNS_FAMILY_V6 } mg_dns_family_t;
typedef struct {
    char *name;          /* host name for A/AAAA, or NULL */
    char *srv;           /* SRV name (_http._tcp.svc.example), or NULL */
    uint16_t port;       /* with name */
    int family;          /* mg_dns_family_t (an int: MG_CFG_ENUM) */
    uint32_t refresh_ms; /* fixed re-resolution interval; 0 = on the records' TTL */
    mg_src_pos_t pos;
} mg_dns_cfg_t;

typedef enum {
    MG_LB_ROUND_ROBIN = 0,
    MG_LB_LEAST_REQUEST, /* power of two choices on active requests */
    MG_LB_RANDOM,
} mg_lb_kind_t;

typedef struct {
    char *name;
    mg_addr_cfg_t *endpoints;
    size_t nendpoints;
    mg_dns_cfg_t *dns;   /* dns: entries (config/dns_cfg.c); a cluster needs endpoints or dns */
    size_t ndns;
    mg_lb_kind_t lb;
    uint32_t connect_timeout_ms;  /* default: timeouts.connect */
    uint32_t response_timeout_ms; /* default: timeouts.response */
    uint32_t max_idle;            /* idle keep-alive conns per endpoint per worker (64) */
    uint32_t idle_timeout_ms;     /* pooled conn idle timeout (30000) */
    mg_src_pos_t pos;
    bool synthesized;             /* made for a route's "uri: http://host:port" */
    bool from_registry;           /* made for a route naming no configured cluster
                                   * (discovery.registry on): no static endpoints,
                                   * fed by the service registry's instances */

    /* resilience (cluster level) */
    mg_bulkhead_cfg_t bulkhead;   /* connection_pool limits; default: all off */
    bool has_outlier;
    mg_outlier_cfg_t outlier;     /* outlier_detection: */
    bool has_breaker;             /* native circuit_breaker: on the cluster */
    mg_breaker_cfg_t breaker;
    mg_retry_budget_cfg_t retry_budget; /* default 20 %, min 3 */
    bool has_health;
    struct {
        char *path;                  /* GET path, e.g. /health */
        uint32_t interval_ms;        /* 10000 */
        uint32_t timeout_ms;         /* 1000 */
        uint32_t healthy_threshold;  /* 1 */
        uint32_t unhealthy_threshold;/* 3 */
        uint64_t expected[10];       /* bit set of expected statuses 100..739 (default 200..399) */
    } health;
} mg_cluster_cfg_t;

/* One predicate or filter as configured, after name resolution and the
 * mapping of Spring's shortcut form ("StripPrefix=2") onto named arguments:
 * both forms give the same mg_plugin_cfg_t. Argument keys are the canonical
 * field names of the registry (src/filter/registry.h); a list argument
 * (Path patterns, Method methods...) has several values. */
typedef struct {
    const char *key; /* static: the registry's field name */
    char **values;
    size_t nvalues;
    mg_src_pos_t pos; /* of the value (or of the shortcut text) */
} mg_arg_cfg_t;

typedef struct {
    const char *name; /* static: the registry's canonical name ("Path", "StripPrefix") */
    mg_arg_cfg_t *args; /* in the registry's field order; absent optional args are left out */
    size_t nargs;
    mg_src_pos_t pos; /* of the list item */
} mg_plugin_cfg_t;

typedef struct {
    mg_plugin_cfg_t *v;
    size_t n;
} mg_plugin_list_t;

typedef struct mg_route_cfg {
    char *id;
    char *path;      /* native "path:" shorthand (a Path predicate put first), or NULL */
    char *cluster;   /* name, validated to exist */
    size_t cluster_index; /* index into mg_config_t.clusters: the only destination the proxy needs */
    mg_src_pos_t pos;      /* the route's map */
    mg_src_pos_t path_pos; /* the path value (for pattern errors) */

    int32_t order;                /* routes sort by (order, declaration); default 0 */
    uint32_t response_timeout_ms; /* metadata response-timeout; 0 = the cluster's */
    uint32_t connect_timeout_ms;  /* metadata connect-timeout; 0 = the cluster's */
    mg_plugin_list_t predicates;  /* all must hold (the "path:" shorthand is not in here) */
    mg_plugin_list_t filters;     /* in order, after default_filters */
    char *uri;                    /* the destination as written ("lb://svc", "http://h:p"), or NULL for "to:" */

    /* resilience (route level): the Spring CircuitBreaker filter with
     * resilience4j.* config, or a native circuit_breaker: block */
    bool has_breaker;
    char *breaker_name;        /* Spring args.name, or "route:<id>" for native */
    mg_breaker_cfg_t breaker;
    char *fallback_path;       /* fallbackUri forward:/path -> "/path"; NULL = none */
    bool resume_without_error; /* Spring resumeWithoutError */
    uint32_t time_limit_ms;    /* resilience4j.timelimiter timeoutDuration; 0 = none */
    bool has_retry;            /* Spring Retry filter or native retry: */
    mg_retry_policy_t retry;
    /* a native route answered by meshgate itself: respond: {status, headers, body} */
    bool respond;
    int respond_status;
    char **respond_headers;    /* "Name: value" strings */
    size_t nrespond_headers;
    char *respond_body;
    bool from_locator;         /* generated by the discovery locator (locator.h) */
} mg_route_cfg_t;

/* discovery.backend */
enum { MG_DISCO_EMBEDDED = 0, MG_DISCO_REDIS = 1 };

/* The discovery locator (Spring's DiscoveryClientRouteDefinitionLocator):
 * one route per known service, see src/config/locator.h. The predicate and
 * filter argument values are expressions in a small SpEL subset ('text',
 * numbers, serviceId, joined with +), evaluated per service. */
typedef struct {
    bool enabled;
    bool lower_case_service_id;
    char *route_id_prefix;       /* NULL: "ReactiveCompositeDiscoveryClient_" (Spring's) */
    bool custom_predicates;      /* predicates: given (they replace Spring's Path default) */
    bool custom_filters;         /* filters: given (they replace Spring's RewritePath default) */
    mg_plugin_list_t predicates; /* templates: values are expressions */
    mg_plugin_list_t filters;
    struct mg_route_cfg *resil;  /* a CircuitBreaker / Retry default filter resolved for the
                                  * locator's routes (resilience_cfg.c), or NULL */
} mg_locator_cfg_t;

typedef struct mg_config {
    char **files; /* the files loaded, in order (owned) */
    size_t nfiles;

    mg_addr_cfg_t *listen; /* one or more; default 0.0.0.0:8080 */
    size_t nlisten;
    mg_addr_cfg_t admin;   /* default 127.0.0.1:9901 */
    bool admin_enabled;    /* "admin: off" disables it */
    uint32_t workers;      /* resolved: "auto" -> number of online CPUs */

    mg_route_cfg_t *routes; /* in declaration order */
    size_t nroutes;
    mg_cluster_cfg_t *clusters;
    size_t nclusters;
    mg_plugin_list_t default_filters; /* run before every route's filters */

    /* limits: */
    uint32_t max_request_line;  /* 8192 */
    uint32_t max_header_bytes;  /* 32768 */
    uint32_t max_headers;       /* 100, at most MG_HTTP_MAX_HEADERS */
    uint64_t max_body_bytes;    /* 0 = unlimited; default 0 */
    uint32_t max_connections;   /* 10000, across workers */

    /* timeouts (ms): */
    uint32_t header_timeout_ms;   /* 10000: whole request head, not per read */
    uint32_t idle_timeout_ms;     /* 60000: keep-alive idle client */
    uint32_t body_timeout_ms;     /* 60000: no body progress from client/upstream */
    uint32_t connect_timeout_ms;  /* 2000 */
    uint32_t response_timeout_ms; /* 30000 */
    uint32_t drain_timeout_ms;    /* 30000: SIGTERM drain bound */

    /* access log: */
    char *access_log; /* NULL/"off" = off, "stderr" (default), or a file path */

    /* Redis for shared state (rate limits now; the registry later).
     * Set by native `redis: {url: redis://host:port, timeout: 50ms}` or by
     * Spring's spring.data.redis.host/port (and the older spring.redis.*). */
    struct {
        bool enabled;
        char *host; /* as written; resolved to a numeric address at snapshot build */
        uint16_t port;
        uint32_t timeout_ms; /* per rate-limit decision (50) */
        mg_src_pos_t pos;
    } redis;
    uint32_t rate_limit_max_keys; /* limits.rate_limit_keys: local table bound (1M) */

    /* discovery: the embedded service registry (src/discovery). */
    struct {
        bool registry;          /* true (default): serve the Consul API, feed clusters */
        char *data_dir;         /* default: ".meshgate" next to the first config file */
        char *token;            /* NULL = registry writes need no token */
        uint32_t max_instances; /* 10000 */
        bool use404;            /* "no instance of service" answers 404, not 503
                                 * (spring.cloud.gateway.loadbalancer.use404) */
        /* backend: where registrations live (docs/discovery-redis.md) */
        int backend;            /* MG_DISCO_EMBEDDED (default: SQLite in data_dir) or MG_DISCO_REDIS */
        struct {
            char *host;         /* from url, else the top-level redis: block */
            uint16_t port;
            uint32_t db;
            char *password;     /* NULL: no AUTH; "user:pass" for a Redis 6 ACL user */
        } redis;
        char *prefix;           /* key prefix, "meshgate:registry" */
        mg_src_pos_t backend_pos;
        mg_locator_cfg_t locator;
        struct {                /* discovery.dns (config/dns_cfg.c) */
            mg_addr_cfg_t *resolvers; /* literal IPs; NULL = /etc/resolv.conf at start */
            size_t nresolvers;
            uint32_t timeout_ms;      /* per attempt (1000) */
            uint32_t attempts;        /* rounds over the resolvers (2) */
            uint32_t min_refresh_ms;  /* TTL clamp (1000) */
            uint32_t max_refresh_ms;  /* TTL clamp (300000) */
            char *hosts_file;         /* default /etc/hosts; "off" = none */
        } dns;
    } discovery;

    /* Extra owners beyond the first (see mg_config_share). */
    _Atomic unsigned shares;
    /* A config derived by the discovery locator (locator.h): everything is
     * borrowed from derived_from (owned: one share) except routes[] and
     * clusters[] and their entries from nbase_routes / nbase_clusters on. */
    struct mg_config *derived_from;
    size_t nbase_routes, nbase_clusters;
} mg_config_t;

/* Load and validate files[0..nfiles) (later ones win). On success returns 0
 * and sets *out. On failure returns MG_ECONFIG and writes
 * "FILE:LINE:COL: message" (NUL-terminated, truncated to errlen) to err. */
int mg_config_load(const char *const *files, size_t nfiles, mg_config_t **out,
                   char *err, size_t errlen);

/* Same from memory: each buffer is parsed as if it were a file of that
 * name (used by tests, fuzzers and anything that gets config inline). */
typedef struct {
    const char *name; /* for positions in messages */
    const char *data;
    size_t len;
} mg_config_buffer_t;

int mg_config_load_buffers(const mg_config_buffer_t *bufs, size_t nbufs, mg_config_t **out,
                           char *err, size_t errlen);

/* Drops one owner; frees the config when the last one goes. NULL is fine. */
void mg_config_free(mg_config_t *cfg);

/* Adds an owner (one more mg_config_free is then needed): lets several
 * snapshots (e.g. rebuilt on a registry change) serve one loaded config. */
static inline mg_config_t *mg_config_share(mg_config_t *cfg)
{
    atomic_fetch_add(&cfg->shares, 1);
    return cfg;
}

/* Write cfg as a native meshgate YAML file that loads back to the same
 * config (same routes, clusters, filters, limits; positions aside): the
 * migration aid behind `meshgate config print`. Returns 0 or -errno. */
int mg_config_print(const mg_config_t *cfg, FILE *out);

/* Free a plugin list (used by the loader and by tests). */
void mg_plugin_list_free(mg_plugin_list_t *l);

#endif
