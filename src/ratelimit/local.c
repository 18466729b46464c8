/* local: see local.h. Each shard is a linear-probing table with
 * backward-shift deletion (no tombstones, so lookups stay short however
 * many keys come and go), grown by doubling up to its share of max_keys. */
#include "ratelimit/local.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"

#define SWEEP_PER_INSERT 2 /* slots examined at each insert */
#define EVICT_SCAN 64      /* slots examined when a shard is full */
#define FIRST_CAP 16

typedef struct {
    uint64_t h;      /* 0 = empty slot */
    uint32_t check;  /* 32 more bits of the key hash */
    uint32_t tag;
    double full_at;  /* us at which the bucket is full again (see bucket.h) */
} slot_t;

typedef struct {
    pthread_mutex_t mu;
    slot_t *slots;
    uint32_t mask;      /* capacity - 1 */
    uint32_t cap_max;
    uint32_t count, max_count;
    uint32_t hand;      /* sweep position */
    uint64_t evictions, forced;
} __attribute__((aligned(64))) shard_t;

struct mg_rl_local {
    shard_t *shards;
    uint32_t nshards, shard_shift;
    uint32_t max_tags;
    uint64_t seed;
    _Atomic uint64_t *tag_evictions; /* [max_tags] */
};

int64_t mg_rl_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- hashing: two 64-bit lanes over route, then key ---- */

static inline uint64_t fmix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static void absorb(uint64_t st[2], mg_slice_t s)
{
    const unsigned char *p = (const unsigned char *)s.p;
    size_t n = s.n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        st[0] = rotl((st[0] ^ w) * 0x9e3779b97f4a7c15ULL, 29);
        st[1] = rotl((st[1] + w) * 0xc2b2ae3d27d4eb4fULL, 31) ^ st[0];
        p += 8;
        n -= 8;
    }
    uint64_t w = (uint64_t)s.n << 56; /* length ends the field: unambiguous */
    for (size_t i = 0; i < n; i++)
        w |= (uint64_t)p[i] << (8 * i);
    st[0] = rotl((st[0] ^ w) * 0x9e3779b97f4a7c15ULL, 29);
    st[1] = rotl((st[1] + w) * 0xc2b2ae3d27d4eb4fULL, 31) ^ st[0];
}

static void key_hash(const mg_rl_local_t *t, mg_slice_t route, mg_slice_t key, uint64_t *h, uint32_t *check)
{
    uint64_t st[2] = { t->seed, ~t->seed };
    absorb(st, route);
    absorb(st, key);
    uint64_t a = fmix(st[0] ^ rotl(st[1], 17)), b = fmix(st[1] + a);
    *h = a ? a : 1;
    *check = (uint32_t)b;
}

/* ---- one shard ---- */

static inline uint32_t home(const shard_t *sh, uint64_t h) { return (uint32_t)h & sh->mask; }

/* Backward-shift delete of slot i. */
static void slot_delete(shard_t *sh, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & sh->mask;
        if (sh->slots[j].h == 0)
            break;
        uint32_t k = home(sh, sh->slots[j].h);
        /* slot j may move to i unless its home lies cyclically in (i, j] */
        bool stays = (i <= j) ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            sh->slots[i] = sh->slots[j];
            i = j;
        }
    }
    sh->slots[i].h = 0;
    sh->count--;
}

static void count_eviction(mg_rl_local_t *t, uint32_t tag)
{
    if (tag >= t->max_tags)
        tag = t->max_tags - 1;
    atomic_fetch_add_explicit(&t->tag_evictions[tag], 1, memory_order_relaxed);
}

/* Examine up to max slots from the hand, dropping idle full buckets. */
static size_t sweep(mg_rl_local_t *t, shard_t *sh, double now, uint32_t max)
{
    size_t dropped = 0;
    uint32_t i = sh->hand;
    for (uint32_t n = 0; n < max && sh->count; n++) {
        slot_t *s = &sh->slots[i];
        if (s->h && s->full_at <= now) {
            count_eviction(t, s->tag);
            slot_delete(sh, i); /* a later slot may now be at i: look again */
            sh->evictions++;
            dropped++;
            continue;
        }
        i = (i + 1) & sh->mask;
    }
    sh->hand = i;
    return dropped;
}

/* The shard is at its bound: make room for one bucket. */
static void evict_for_room(mg_rl_local_t *t, shard_t *sh, double now)
{
    if (sweep(t, sh, now, EVICT_SCAN))
        return;
    /* No idle full bucket near the hand: drop the one closest to full. */
    uint32_t best = UINT32_MAX, i = sh->hand;
    for (uint32_t n = 0; n <= sh->mask && (n < EVICT_SCAN || best == UINT32_MAX); n++) {
        if (sh->slots[i].h && (best == UINT32_MAX || sh->slots[i].full_at < sh->slots[best].full_at))
            best = i;
        i = (i + 1) & sh->mask;
    }
    if (best == UINT32_MAX)
        return;
    count_eviction(t, sh->slots[best].tag);
    slot_delete(sh, best);
    sh->forced++;
}

static int grow(shard_t *sh)
{
    uint32_t ncap = (sh->mask + 1) * 2;
    if (ncap > sh->cap_max)
        return -ENOSPC;
    slot_t *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    slot_t *old = sh->slots;
    uint32_t ocap = sh->mask + 1;
    sh->slots = ns;
    sh->mask = ncap - 1;
    for (uint32_t i = 0; i < ocap; i++) {
        if (!old[i].h)
            continue;
        uint32_t j = home(sh, old[i].h);
        while (ns[j].h)
            j = (j + 1) & sh->mask;
        ns[j] = old[i];
    }
    free(old);
    sh->hand &= sh->mask;
    return 0;
}

static slot_t *find(shard_t *sh, uint64_t h, uint32_t check, uint32_t *pos)
{
    uint32_t i = home(sh, h);
    for (;;) {
        slot_t *s = &sh->slots[i];
        if (s->h == 0) {
            *pos = i;
            return NULL;
        }
        if (s->h == h && s->check == check) {
            *pos = i;
            return s;
        }
        i = (i + 1) & sh->mask;
    }
}

/* ---- public ---- */

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 1;
    while (p < n && p < (1u << 31))
        p <<= 1;
    return p;
}

static uint64_t random_seed(void)
{
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s)
        s = 0; /* still seeded by time and pid below */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return fmix(s ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32)) | 1;
}

int mg_rl_local_new(const mg_rl_local_opts_t *opts, mg_rl_local_t **out)
{
    mg_rl_local_opts_t o = opts ? *opts : (mg_rl_local_opts_t){ 0 };
    if (!o.max_keys)
        o.max_keys = MG_RL_LOCAL_DEFAULT_MAX_KEYS;
    if (!o.shards)
        o.shards = 64;
    if (!o.max_tags)
        o.max_tags = 1024;
    o.shards = pow2_at_least(o.shards);
    if (o.shards > 4096)
        o.shards = 4096;
    while (o.shards > 1 && o.shards > o.max_keys)
        o.shards >>= 1;

    mg_rl_local_t *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->nshards = o.shards;
    t->shard_shift = 0;
    while ((1u << t->shard_shift) < o.shards)
        t->shard_shift++;
    t->max_tags = o.max_tags;
    t->seed = random_seed();
    t->tag_evictions = calloc(o.max_tags, sizeof *t->tag_evictions);
    if (posix_memalign((void **)&t->shards, 64, o.shards * sizeof(shard_t)) || !t->tag_evictions) {
        free(t->tag_evictions);
        free(t);
        return -ENOMEM;
    }
    memset(t->shards, 0, o.shards * sizeof(shard_t));
    for (uint32_t i = 0; i < o.shards; i++) {
        shard_t *sh = &t->shards[i];
        pthread_mutex_init(&sh->mu, NULL);
        sh->max_count = o.max_keys / o.shards;
        if (sh->max_count == 0)
            sh->max_count = 1;
        /* load factor at most 3/4 at the bound */
        sh->cap_max = pow2_at_least((uint64_t)sh->max_count * 4 / 3 + 2);
        uint32_t cap = sh->cap_max < FIRST_CAP ? sh->cap_max : FIRST_CAP;
        sh->slots = calloc(cap, sizeof(slot_t));
        if (!sh->slots) {
            t->nshards = i;
            mg_rl_local_free(t);
            return -ENOMEM;
        }
        sh->mask = cap - 1;
    }
    *out = t;
    return 0;
}

void mg_rl_local_free(mg_rl_local_t *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->nshards; i++) {
        pthread_mutex_destroy(&t->shards[i].mu);
        free(t->shards[i].slots);
    }
    free(t->shards);
    free(t->tag_evictions);
    free(t);
}

static inline shard_t *shard_of(mg_rl_local_t *t, uint64_t h)
{
    return &t->shards[t->shard_shift ? h >> (64 - t->shard_shift) : 0];
}

/* The bucket a slot stands for, as of now. */
static mg_rl_bucket_t slot_bucket(const slot_t *s, const mg_rl_params_t *p, int64_t now_us)
{
    double owed = s->full_at - (double)now_us; /* us of refill still missing */
    double tokens = owed > 0 ? (double)p->burst - owed * p->rate / 1e6 : (double)p->burst;
    return (mg_rl_bucket_t){ .tokens = tokens < 0 ? 0 : tokens, .t_us = now_us };
}

mg_rl_result_t mg_rl_local_take(mg_rl_local_t *t, const mg_rl_params_t *p, uint32_t tag,
                                mg_slice_t route, mg_slice_t key, int64_t now_us)
{
    uint64_t h;
    uint32_t check, pos;
    key_hash(t, route, key, &h, &check);
    shard_t *sh = shard_of(t, h);
    double now = (double)now_us;

    pthread_mutex_lock(&sh->mu);
    slot_t *s = find(sh, h, check, &pos);
    mg_rl_bucket_t b;
    if (s)
        b = slot_bucket(s, p, now_us);
    else
        mg_rl_bucket_init(&b, p, now_us);
    mg_rl_result_t r = mg_rl_bucket_take(&b, p, now_us);
    double full_at = mg_rl_bucket_full_at(&b, p);

    if (s) {
        if (full_at <= now)
            slot_delete(sh, pos); /* full again: same as absent */
        else
            s->full_at = full_at, s->tag = tag;
    } else if (full_at > now) { /* a new, non-full bucket: insert it */
        sweep(t, sh, now, SWEEP_PER_INSERT);
        if (sh->count >= sh->max_count)
            evict_for_room(t, sh, now);
        /* cap_max always fits max_count at 3/4 load, so only ENOMEM stops
         * growth; then fill up to one free slot (probes need one). */
        if (sh->count + 1 > (sh->mask + 1) / 4 * 3 && grow(sh) != 0 && sh->count + 2 > sh->mask + 1)
            evict_for_room(t, sh, now);
        find(sh, h, check, &pos); /* deletions and growth move slots */
        sh->slots[pos] = (slot_t){ .h = h, .check = check, .tag = tag, .full_at = full_at };
        sh->count++;
    }
    pthread_mutex_unlock(&sh->mu);
    return r;
}

double mg_rl_local_tokens(mg_rl_local_t *t, const mg_rl_params_t *p, mg_slice_t route,
                          mg_slice_t key, int64_t now_us)
{
    uint64_t h;
    uint32_t check, pos;
    key_hash(t, route, key, &h, &check);
    shard_t *sh = shard_of(t, h);
    pthread_mutex_lock(&sh->mu);
    slot_t *s = find(sh, h, check, &pos);
    double tokens = s ? slot_bucket(s, p, now_us).tokens : (double)p->burst;
    pthread_mutex_unlock(&sh->mu);
    return tokens;
}

size_t mg_rl_local_sweep(mg_rl_local_t *t, int64_t now_us, size_t max_slots)
{
    size_t dropped = 0;
    uint32_t per = (uint32_t)(max_slots / t->nshards);
    if (per == 0)
        per = 1;
    for (uint32_t i = 0; i < t->nshards; i++) {
        shard_t *sh = &t->shards[i];
        pthread_mutex_lock(&sh->mu);
        dropped += sweep(t, sh, (double)now_us, per);
        pthread_mutex_unlock(&sh->mu);
    }
    return dropped;
}

void mg_rl_local_stats(mg_rl_local_t *t, mg_rl_local_stats_t *out)
{
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < t->nshards; i++) {
        shard_t *sh = &t->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->keys += sh->count;
        out->evictions += sh->evictions;
        out->forced_evictions += sh->forced;
        pthread_mutex_unlock(&sh->mu);
    }
}

uint64_t mg_rl_local_evictions(mg_rl_local_t *t, uint32_t tag)
{
    if (tag >= t->max_tags)
        tag = t->max_tags - 1;
    return atomic_load_explicit(&t->tag_evictions[tag], memory_order_relaxed);
}
