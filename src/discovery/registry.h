/* registry: the embedded service registry (Consul agent model).
 *
 * Model: service name -> instances (ID, Name, Address, Port, Tags, Meta,
 * Weights) -> checks (TTL, HTTP + Interval, TCP + Interval) with a status
 * passing / warning / critical, an output, a TTL deadline and an optional
 * DeregisterCriticalServiceAfter.
 *
 * Threads: single owner, the control thread. No function here may be called
 * from a worker; workers only ever see an mg_disco_snapshot_t (immutable,
 * self-contained) built from it.
 *
 * Time: every function that needs time takes now_ms on one clock chosen by
 * the caller (uv_now() of the control loop is fine; the store converts to
 * wall time itself). The registry never reads a clock, so tests drive it
 * with a fake one.
 *
 * Indexes (Consul's X-Consul-Index): one global counter, strictly
 * increasing, never 0. Every visible change (instance added/changed/removed,
 * a check changing status) takes the next value; the changed service's
 * index is set to it. A service that has never existed (or whose tombstone
 * was pruned) reports the global index, so a blocking query on it still
 * wakes. Output-only changes of a check (a TTL heartbeat with a new note)
 * update the output in place without an index bump, as Consul's agent
 * defers output-only syncs.
 *
 * Ownership: mg_registry_register() always takes ownership of the def (it
 * is moved in or freed). Pointers returned by queries (instances, checks,
 * service views) are valid until the next mutating call. A listener is
 * called after each change is applied and must not mutate the registry.
 *
 * Atomicity: register validates everything and reserves all memory first,
 * then calls the persist hook (which may veto), then applies. On any error
 * nothing has changed. */
#ifndef MG_DISCOVERY_REGISTRY_H
#define MG_DISCOVERY_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Order matters: the aggregate status of an instance is the maximum. */
typedef enum { MG_CHECK_PASSING = 0, MG_CHECK_WARNING = 1, MG_CHECK_CRITICAL = 2 } mg_check_status_t;
typedef enum { MG_CHECK_TTL, MG_CHECK_HTTP, MG_CHECK_TCP } mg_check_kind_t;

const char *mg_check_status_name(mg_check_status_t s); /* "passing", ... */
/* -1 when s is not one of "passing", "warning", "critical". */
int mg_check_status_parse(const char *s);
const char *mg_check_kind_name(mg_check_kind_t k); /* "ttl", "http", "tcp" */

typedef struct {
    char *name, *value;
} mg_kv_t;

/* ---- definitions (what a client registers) ---------------------------- */

typedef struct {
    char *id;    /* CheckID; NULL -> "service:<sid>" or "service:<sid>:<n>" (n 1-based, when several) */
    char *name;  /* NULL -> "Service '<name>' check" */
    char *notes;
    mg_check_kind_t kind;
    char *http;  /* HTTP: URL */
    char *method; /* HTTP: NULL = GET */
    char *body;  /* HTTP: request body or NULL */
    mg_kv_t *headers; /* HTTP: one entry per value */
    size_t nheaders;
    bool tls_skip_verify;
    char *tcp;   /* TCP: "host:port" */
    int64_t interval_ms;  /* HTTP/TCP; clamped up to the minimum (1 s) */
    int64_t timeout_ms;   /* HTTP/TCP; 0 = checker default */
    int64_t ttl_ms;       /* TTL */
    int64_t deregister_after_ms; /* 0 = never; clamped up to the minimum (1 min) */
    int initial_status;   /* -1 = unset (critical, as Consul), else mg_check_status_t */
} mg_check_def_t;

typedef struct {
    char *id;      /* NULL -> Name */
    char *name;    /* required */
    char *address; /* NULL or "" -> the node address */
    uint16_t port;
    char **tags;
    size_t ntags;
    mg_kv_t *meta;
    size_t nmeta;
    bool has_weights;                        /* false -> Passing 1, Warning 1 (Consul's defaults) */
    uint32_t weight_passing, weight_warning; /* Passing >= 1 */
    bool enable_tag_override;
    mg_check_def_t *checks;
    size_t nchecks;
    bool single_check; /* came from "Check" (not "Checks"): only names fields in messages */
} mg_reg_def_t;

/* Frees everything a def owns and zeroes it. NULL-safe. */
void mg_reg_def_free(mg_reg_def_t *d);
void mg_check_def_free(mg_check_def_t *c);

/* ---- runtime state (read-only to everyone but registry.c) -------------- */

struct mg_reg_instance;

typedef struct mg_reg_check {
    const mg_check_def_t *def; /* &inst->def.checks[i] */
    const struct mg_reg_instance *inst;
    mg_check_status_t status;
    char *output;              /* never NULL; at most 4096 bytes */
    int64_t ttl_deadline_ms;   /* TTL: when it turns critical unless refreshed */
    int64_t critical_since_ms; /* meaningful while status == critical */
    uint64_t create_index, modify_index;
    /* persistence bookkeeping, see mg_registry_foreach_dirty_check() */
    bool state_dirty;
    int64_t persisted_deadline_ms;
} mg_reg_check_t;

typedef struct mg_reg_instance {
    mg_reg_def_t def;       /* defaults filled in: id, check ids and names */
    mg_reg_check_t *checks; /* [def.nchecks], parallel to def.checks */
    uint64_t create_index, modify_index;
} mg_reg_instance_t;

/* Worst status over the instance's checks; passing when it has none. */
mg_check_status_t mg_reg_instance_status(const mg_reg_instance_t *inst);

typedef struct {
    const char *name;
    uint64_t index;
    const mg_reg_instance_t *const *instances; /* sorted by ID */
    size_t n;
} mg_reg_service_view_t;

/* ---- the registry ------------------------------------------------------ */

typedef struct mg_registry mg_registry_t;

typedef struct {
    uint32_t max_instances;           /* 10000 */
    uint32_t max_services;            /* 10000 distinct names */
    uint32_t max_checks_per_instance; /* 32 */
    int64_t min_deregister_ms;        /* 60000: Consul's floor for DeregisterCriticalServiceAfter */
    int64_t min_interval_ms;          /* 1000: Consul's floor for check intervals */
    const char *node_name;            /* "meshgate" */
    const char *node_address;         /* "127.0.0.1": used for instances without Address */
    const char *node_id;              /* "" */
    const char *datacenter;           /* "dc1" */
} mg_registry_opts_t;

void mg_registry_opts_default(mg_registry_opts_t *o);
/* opts NULL = defaults. Strings are copied. NULL on out of memory. */
mg_registry_t *mg_registry_new(const mg_registry_opts_t *opts);
void mg_registry_free(mg_registry_t *r);
const mg_registry_opts_t *mg_registry_opts(const mg_registry_t *r);

typedef struct {
    uint64_t registered;       /* successful registrations that changed something */
    uint64_t deregistered;     /* by API */
    uint64_t reaped;           /* removed by DeregisterCriticalServiceAfter */
    uint64_t ttl_expired;      /* TTL checks turned critical by expiry */
    uint64_t rejected_invalid; /* 400 */
    uint64_t rejected_full;    /* 429: limits reached */
    uint64_t persist_errors;   /* persist hook failures */
} mg_registry_stats_t;
const mg_registry_stats_t *mg_registry_stats(const mg_registry_t *r);

/* Register flags. */
#define MG_REG_REPLACE_CHECKS 1u /* ?replace-existing-checks: drop checks of a
                                  * previous registration not in this one
                                  * (Consul keeps them by default) */
#define MG_REG_RESTORING 2u      /* loading persisted registrations: every new
                                  * check starts critical whatever its Status,
                                  * as Consul's agent does on restart */

/* Registers (or updates) def->id. Always consumes def. Returns 0, or
 *   MG_EPARSE  invalid definition ("Field: problem" in err) -> HTTP 400
 *   MG_ELIMIT  a configured limit was reached (message in err) -> HTTP 429
 *   -ENOMEM, or the persist hook's negative code (message in err) -> 500.
 * A re-registration identical to the current one changes nothing (no index
 * bump, no event). Checks that keep their ID and kind keep their status,
 * output and TTL deadline; new checks start at their initial status
 * (critical unless Status was given) and a TTL check's deadline starts at
 * registration. */
int mg_registry_register(mg_registry_t *r, mg_reg_def_t *def, unsigned flags, int64_t now_ms,
                         char *err, size_t errlen);

/* 0, -ENOENT, or the persist hook's error (then nothing changed). */
int mg_registry_deregister(mg_registry_t *r, const char *id, int64_t now_ms);

/* TTL heartbeat (agent/check/pass|warn|fail|update). output may be NULL
 * (""). Re-arms the deadline to now + TTL. Returns 0, -ENOENT (unknown
 * check), MG_EPARSE (the check is not a TTL check). */
int mg_registry_check_ttl(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                          const char *output, int64_t now_ms);

/* A result of meshgate's active health checker for an HTTP/TCP check.
 * 0, -ENOENT, MG_EPARSE (a TTL check). */
int mg_registry_check_result(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                             const char *output, int64_t now_ms);

/* Turns overdue TTL checks critical ("TTL expired") and removes instances
 * one of whose checks has been critical longer than its
 * DeregisterCriticalServiceAfter. Returns the number of changes. Call when
 * mg_registry_next_deadline() is reached (or on a periodic timer). */
int mg_registry_expire(mg_registry_t *r, int64_t now_ms);
/* The earliest time expire() has work to do; INT64_MAX when none. */
int64_t mg_registry_next_deadline(const mg_registry_t *r);

/* Index of one service (NULL = global). Never 0. */
uint64_t mg_registry_index(const mg_registry_t *r, const char *service);
/* Raise the global index to at least idx (the store restores it at load). */
void mg_registry_raise_index(mg_registry_t *r, uint64_t idx);

/* ---- queries ----------------------------------------------------------- */

size_t mg_registry_instance_count(const mg_registry_t *r);
const mg_reg_instance_t *mg_registry_instance_at(const mg_registry_t *r, size_t i); /* by ID */
const mg_reg_instance_t *mg_registry_instance_get(const mg_registry_t *r, const char *id);
const mg_reg_check_t *mg_registry_check_get(const mg_registry_t *r, const char *check_id);
size_t mg_registry_check_count(const mg_registry_t *r);
const mg_reg_check_t *mg_registry_check_at(const mg_registry_t *r, size_t i); /* by check ID */

/* Services that have at least one instance, in name order: iterate
 * i = 0.. while it returns true (views of empty tombstones are skipped). */
bool mg_registry_service_next(const mg_registry_t *r, size_t *cursor, mg_reg_service_view_t *out);
/* false when the service has no instance. */
bool mg_registry_service_get(const mg_registry_t *r, const char *name, mg_reg_service_view_t *out);
size_t mg_registry_service_count(const mg_registry_t *r); /* non-empty services */

/* ---- change listener --------------------------------------------------- */

typedef enum {
    MG_REG_EV_REGISTERED,   /* instance added or its definition changed */
    MG_REG_EV_DEREGISTERED, /* removed by the API (or moved to another name) */
    MG_REG_EV_REAPED,       /* removed by DeregisterCriticalServiceAfter */
    MG_REG_EV_CHECK,        /* a check changed status */
} mg_reg_event_kind_t;

typedef struct {
    mg_reg_event_kind_t kind;
    const char *service;     /* service name */
    const char *instance_id;
    const char *check_id;    /* MG_REG_EV_CHECK only */
    mg_check_status_t status; /* MG_REG_EV_CHECK: the instance's new aggregate status */
    bool endpoints_changed;  /* the service's passing endpoint set may differ */
    uint64_t index;          /* the new index of the service */
} mg_reg_event_t;

typedef void (*mg_reg_listener_fn)(void *ud, const mg_reg_event_t *ev);
/* Up to 8 listeners; 0 or MG_ELIMIT. */
int mg_registry_add_listener(mg_registry_t *r, mg_reg_listener_fn fn, void *ud);

/* ---- persistence hooks (store.c installs them) ------------------------- */

typedef struct {
    /* Called before a registration is applied; non-zero vetoes it. */
    int (*save)(void *ud, const mg_reg_instance_t *inst, uint64_t index);
    /* Called before a removal; non-zero vetoes an API deregistration
     * (a reap proceeds anyway and counts a persist error). */
    int (*remove)(void *ud, const char *instance_id, uint64_t index);
    /* Optional (NULL for the SQLite store, which syncs TTL state in
     * batches): called before a TTL heartbeat is applied, with the state it
     * is about to set (output as given, "" for NULL; the new deadline on
     * the registry's clock). Non-zero vetoes the heartbeat (nothing
     * changes; the code is returned to the caller). A shared backend writes
     * through here so other gateways see every heartbeat. */
    int (*check)(void *ud, const mg_reg_check_t *c, mg_check_status_t st, const char *output,
                 int64_t deadline_ms);
} mg_reg_persist_t;
void mg_registry_set_persist(mg_registry_t *r, const mg_reg_persist_t *p, void *ud);

/* Calls fn for every TTL check whose state (status, output, deadline)
 * changed enough to be worth persisting; clears the mark when fn returns 0. */
void mg_registry_foreach_dirty_check(mg_registry_t *r, int (*fn)(void *ud, const mg_reg_check_t *c), void *ud);

/* Restores a TTL check's state at load (no index bump, no event). */
int mg_registry_check_restore(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                              const char *output, int64_t deadline_ms, int64_t now_ms);

/* Applies a TTL check state learned from another gateway sharing the
 * registry (src/discovery/redisreg.c): output, deadline and status, with
 * an index bump and an MG_REG_EV_CHECK event when the status changes,
 * exactly like a local heartbeat, but without calling any persist hook
 * (no echo) and without marking the state dirty. A non-critical state
 * whose deadline has already passed is applied as expired: critical,
 * "TTL expired", critical since the deadline (so DeregisterCritical-
 * ServiceAfter counts from the same moment on every gateway); when the
 * check is already critical that changes nothing. Returns 0, -ENOENT,
 * MG_EPARSE (not a TTL check) or -ENOMEM. */
int mg_registry_check_apply(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                            const char *output, int64_t deadline_ms, int64_t now_ms);

/* ---- snapshot for clusters --------------------------------------------- */

typedef struct {
    const char *name, *value;
} mg_disco_label_t;

typedef struct {
    const char *id;
    const char *address; /* the instance's Address, else the node address */
    uint16_t port;
    mg_check_status_t status; /* aggregate */
    uint32_t weight;          /* Weights.Passing or Weights.Warning by status */
    const mg_disco_label_t *labels; /* Meta, then "k=v" tags whose k is not in Meta; sorted by name */
    size_t nlabels;
    const char *const *tags;
    size_t ntags;
} mg_disco_endpoint_t;

typedef struct {
    const char *name;
    uint64_t index;
    const mg_disco_endpoint_t *eps; /* sorted by ID */
    size_t neps;
} mg_disco_service_t;

typedef struct mg_disco_snapshot {
    uint64_t index; /* global index at build time */
    const mg_disco_service_t *services; /* sorted by name; services with no eligible endpoint included (neps 0) */
    size_t nservices;
    void *priv;
} mg_disco_snapshot_t;

/* Self-contained copy: the passing instances of every service (plus the
 * warning ones with include_warning). Immutable, may be handed to other
 * threads. NULL on out of memory. */
mg_disco_snapshot_t *mg_registry_snapshot(const mg_registry_t *r, bool include_warning);
void mg_disco_snapshot_free(mg_disco_snapshot_t *s);
const mg_disco_service_t *mg_disco_snapshot_find(const mg_disco_snapshot_t *s, const char *name);
/* Value of a label or NULL. */
const char *mg_disco_endpoint_label(const mg_disco_endpoint_t *ep, const char *name);

#endif
