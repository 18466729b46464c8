/* store: the registry's persistence, SQLite in WAL mode at
 * <data_dir>/registry.db, so registrations survive a restart.
 *
 * What is kept (as Consul's agent keeps in its data directory):
 *   - every registration (service and check definitions), written in the
 *     same transaction as the registry change, before it is applied: the
 *     persist hook vetoes the change if the write fails, so memory and
 *     disk never disagree about which instances exist;
 *   - TTL check state (status, output, expiry as wall-clock time), written
 *     in batches by mg_store_sync() (at most about two writes per TTL
 *     period per check). At load a TTL check whose saved state has not
 *     expired resumes it; every other check (expired TTL, HTTP, TCP)
 *     restarts critical, exactly as Consul's agent restores checks;
 *   - the global modify index, so X-Consul-Index never goes backwards
 *     across a restart.
 * Durability: synchronous=NORMAL (WAL): a crash of meshgate loses nothing
 * committed; a power loss may lose the last transactions.
 *
 * Threads: the control thread, like the registry (SQLite calls block
 * briefly: one small transaction per registration, one per sync).
 * Ownership: the store borrows the registry given to load/attach/sync; it
 * must be closed (or detached with mg_registry_set_persist(r, NULL, NULL))
 * before the registry is freed. */
#ifndef MG_DISCOVERY_STORE_H
#define MG_DISCOVERY_STORE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "discovery/registry.h"

typedef struct mg_store mg_store_t;

/* Creates data_dir (0700) if missing, opens/creates registry.db. 0, or a
 * negative code with the reason in err. */
int mg_store_open(const char *data_dir, mg_store_t **out, char *err, size_t errlen);
void mg_store_close(mg_store_t *s);

/* Loads every saved registration into r (normally empty): restores the
 * index, registers the definitions (checks start critical), then resumes
 * unexpired TTL state. A row that no longer validates or does not fit the
 * limits is skipped with a warning and counted. Call before
 * mg_store_attach(). Returns the number of instances loaded or a negative
 * code (message in err). now_ms is the registry's clock, wall_ms the
 * Unix time in milliseconds. */
int mg_store_load(mg_store_t *s, mg_registry_t *r, int64_t now_ms, int64_t wall_ms, char *err, size_t errlen);

/* Installs the persist hooks on r: from now on every registration and
 * removal is written through. */
void mg_store_attach(mg_store_t *s, mg_registry_t *r);
/* When no database exists yet: open it (into *slot) on the first
 * registration, so an unused registry costs no SQLite memory. */
void mg_store_attach_lazy(const char *data_dir, mg_registry_t *r, mg_store_t **slot);
bool mg_store_exists(const char *data_dir);

/* Writes dirty TTL check state and the index in one transaction. Call
 * every second or so and at shutdown. 0 or a negative code. */
int mg_store_sync(mg_store_t *s, mg_registry_t *r, int64_t now_ms, int64_t wall_ms);

typedef struct {
    uint64_t writes;       /* committed transactions */
    uint64_t write_errors; /* failed transactions (the change was refused or is retried) */
    uint64_t load_skipped; /* rows skipped at load */
} mg_store_stats_t;
const mg_store_stats_t *mg_store_stats(const mg_store_t *s);

#endif
