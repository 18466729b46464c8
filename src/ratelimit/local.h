/* local: the in-process rate-limit backend. One table per process holds a
 * token bucket per (route, key), shared by every worker thread.
 *
 * Threads: any thread may call any function except mg_rl_local_free (no
 * other call may run or follow). There is no global lock: the table is
 * split into shards by key hash, each with its own mutex held only for one
 * probe and a few float operations (tens of ns). A mutex rather than a
 * spinlock because a preempted holder must not make other workers spin
 * for a time slice; uncontended, both cost one atomic each way, and with
 * 64+ shards two workers rarely meet on one.
 *
 * Memory is bounded: at most max_keys buckets (each shard at most
 * max_keys / shards), 24 bytes each plus open-addressing slack. A bucket
 * that refilled to capacity is the same as no bucket, so such "idle full"
 * buckets are dropped: a few slots are swept at every insert, and a full
 * shard first evicts every idle full bucket near its sweep hand; only if
 * there is none does it drop the bucket closest to full (a forced
 * eviction: that key gets a fresh bucket early - the price of a bound).
 * Both are counted per tag (the caller's dense route index).
 *
 * Keys are stored as a 96-bit seeded hash of (route, key), never as text:
 * entries are fixed-size and a collision (p ~ n^2 / 2^97) cannot be forced
 * without the per-table random seed. */
#ifndef MG_RATELIMIT_LOCAL_H
#define MG_RATELIMIT_LOCAL_H

#include <stddef.h>
#include <stdint.h>

#include "core/slice.h"
#include "ratelimit/bucket.h"

#define MG_RL_LOCAL_DEFAULT_MAX_KEYS (1u << 20)

typedef struct mg_rl_local mg_rl_local_t;

typedef struct {
    uint32_t max_keys; /* 0 = MG_RL_LOCAL_DEFAULT_MAX_KEYS */
    uint32_t shards;   /* rounded up to a power of two; 0 = 64 */
    uint32_t max_tags; /* per-tag eviction counters; tags >= this share the last one; 0 = 1024 */
} mg_rl_local_opts_t;

typedef struct {
    uint64_t keys;             /* buckets held now */
    uint64_t evictions;        /* idle full buckets dropped (no state lost) */
    uint64_t forced_evictions; /* non-full buckets dropped because a shard was full */
} mg_rl_local_stats_t;

/* opts may be NULL. Returns 0 or -ENOMEM. Control thread, at start-up. */
int mg_rl_local_new(const mg_rl_local_opts_t *opts, mg_rl_local_t **out);
void mg_rl_local_free(mg_rl_local_t *t);

/* One decision for (route, key) at now_us (a monotonic clock shared by all
 * callers, e.g. mg_rl_now_us()). tag is the caller's dense route index,
 * used only to count evictions. Never fails: when memory for a new bucket
 * cannot be had, the shard evicts (see above). */
mg_rl_result_t mg_rl_local_take(mg_rl_local_t *t, const mg_rl_params_t *p, uint32_t tag,
                                mg_slice_t route, mg_slice_t key, int64_t now_us);

/* Tokens the bucket of (route, key) holds at now_us (p->burst when it has
 * no bucket). Read-only: for the admin API. */
double mg_rl_local_tokens(mg_rl_local_t *t, const mg_rl_params_t *p, mg_slice_t route,
                          mg_slice_t key, int64_t now_us);

/* Drop idle full buckets, examining at most max_slots slots in total
 * (e.g. from a periodic control-thread timer). Returns buckets dropped. */
size_t mg_rl_local_sweep(mg_rl_local_t *t, int64_t now_us, size_t max_slots);

void mg_rl_local_stats(mg_rl_local_t *t, mg_rl_local_stats_t *out);
/* Evictions (idle full + forced) of buckets inserted with this tag. */
uint64_t mg_rl_local_evictions(mg_rl_local_t *t, uint32_t tag);

/* CLOCK_MONOTONIC in microseconds. */
int64_t mg_rl_now_us(void);

#endif
