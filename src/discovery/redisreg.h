/* redisreg: the service registry shared by several meshgate processes
 * through Redis (`discovery: {backend: redis}`); docs/discovery-redis.md.
 *
 * Redis is the source of truth; each gateway's mg_registry_t is a replica.
 * Keys (PREFIX = discovery.prefix, "meshgate:registry"):
 *   PREFIX:instances  hash  instance ID -> registration JSON (regjson.h)
 *   PREFIX:checks     hash  TTL check ID -> state (mg_redisreg_state_*)
 *   PREFIX:epoch      string, a random ID written once per Redis data set:
 *                     its absence (or change) tells a replica that Redis lost
 *                     its data, and the replica re-seeds it (HSETNX)
 *   PREFIX:events     pub/sub channel: "<origin> I <instance ID>" (instance
 *                     added, changed or removed), "<origin> C <check ID>"
 *                     (TTL state), "<origin> *" (resync everything)
 * Writes go through the registry's persist hooks on a synchronous hiredis
 * connection (MULTI/EXEC with the PUBLISH inside, timeout bounded): a write
 * Redis does not take is refused (-EAGAIN: the Consul API answers 503). A
 * message makes the other gateways fetch the named key and apply it to
 * their replica (persist hooks off while applying: no echo). The
 * subscription runs on an async connection on the control loop; after it is
 * confirmed (start, reconnect) and every resync_ms the replica is
 * resynchronised in full (HGETALL).
 *
 * Threads: the control thread only, like the registry. */
#ifndef MG_DISCOVERY_REDISREG_H
#define MG_DISCOVERY_REDISREG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/json.h"
#include "discovery/registry.h"

typedef struct mg_redisreg mg_redisreg_t;

typedef struct {
    const char *host;     /* required */
    uint16_t port;        /* 6379 */
    uint32_t db;          /* SELECT db (0) */
    const char *password; /* NULL: no AUTH */
    const char *prefix;   /* "meshgate:registry" */
    uint32_t timeout_ms;  /* connect and per-command timeout (500) */
    uint32_t resync_ms;   /* periodic full resync (30000) */
    uint32_t backoff_max_ms; /* reconnect backoff cap (5000); starts at 250 */
} mg_redisreg_opts_t;

typedef struct {
    uint64_t backend_errors;  /* failed connects, commands, refused writes */
    uint64_t writes;          /* transactions Redis took */
    uint64_t writes_refused;  /* registry writes refused: Redis down or erroring */
    uint64_t resyncs;         /* full resyncs done */
    uint64_t reseeds;         /* Redis found empty (epoch lost): local state written back */
    uint64_t remote_applied;  /* remote changes applied to the replica */
    uint64_t messages;        /* pub/sub messages received */
    uint64_t messages_dropped; /* malformed or oversized */
    uint64_t entries_skipped; /* keys in Redis that did not parse or fit */
    uint64_t connects, disconnects;
    bool connected;
} mg_redisreg_stats_t;

/* Installs the persist hooks on reg, connects and loads everything from
 * Redis synchronously (so the first snapshot has it), then subscribes on
 * loop. If Redis cannot be reached the gateway still starts (empty
 * replica, writes refused) and keeps reconnecting. 0, or -ENOMEM. */
int mg_redisreg_start(uv_loop_t *loop, mg_registry_t *reg, const mg_redisreg_opts_t *o, mg_redisreg_t **out);
/* Detaches the hooks, closes the connections; rr is freed once its handles
 * are closed (run the loop). NULL is fine. */
void mg_redisreg_stop(mg_redisreg_t *rr);
const mg_redisreg_stats_t *mg_redisreg_stats(const mg_redisreg_t *rr);
/* ,"registry_backend":{...} for GET /stats */
void mg_redisreg_stats_json(const mg_redisreg_t *rr, mg_buf_t *b);

/* ---- TTL check state encoding (pure; unit-tested, fuzzed) ------------- */

typedef struct {
    char *instance_id;
    mg_check_status_t status;
    char *output;
    int64_t deadline_ms; /* Unix time, milliseconds */
} mg_redisreg_state_t;

/* {"Instance":"...","Status":"passing","Output":"...","DeadlineMs":N};
 * output is cut to 4096 bytes on a UTF-8 boundary (the registry's limit). */
void mg_redisreg_state_encode(mg_buf_t *b, const char *instance_id, mg_check_status_t st, const char *output,
                              int64_t deadline_ms);
/* 0 or MG_EPARSE (out then empty). Bounded: at most 64 KiB of input. */
int mg_redisreg_state_decode(const char *s, size_t n, mg_redisreg_state_t *out);
void mg_redisreg_state_free(mg_redisreg_state_t *s);

#endif
