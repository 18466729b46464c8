/* breaker: Resilience4j-style circuit breaker shared by all workers.
 * See breaker.h for the contract and the window design. Layout of the hot
 * words:
 *   state: [epoch:32 | half-open permits taken:28 | state:4]
 *   ho (HALF_OPEN trial results): [epoch:16 | calls:16 | failed:16 | slow:16] */
#include "resilience/breaker.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "resilience/res_int.h"

#define SW_STATE(w) ((mg_cb_state_t)((w) & 0xfu))
#define SW_USED(w) ((uint32_t)(((w) >> 4) & 0xfffffffu))
#define SW_EPOCH(w) ((uint32_t)((w) >> 32))
#define SW_MAKE(e, s, u) (((uint64_t)(e) << 32) | ((uint64_t)(u) << 4) | (uint64_t)(s))
#define SW_ONE_PERMIT ((uint64_t)1 << 4)

#define HO_EPOCH(h) ((uint32_t)((h) >> 48))
#define HO_CALLS(h) ((uint32_t)(((h) >> 32) & 0xffffu))
#define HO_FAIL(h) ((uint32_t)(((h) >> 16) & 0xffffu))
#define HO_SLOW(h) ((uint32_t)((h) & 0xffffu))
#define HO_MAKE(e) ((uint64_t)((e) & 0xffffu) << 48)

#define RING_PRESENT 1u
#define RING_FAILED 2u
#define RING_SLOW 4u

#define MAX_COUNT_WINDOW 1000000u
#define MAX_TIME_WINDOW 86400u

#define RLX memory_order_relaxed

typedef struct {
    _Atomic uint64_t sec; /* the second this bucket currently counts */
    _Atomic uint32_t calls, failed, slow;
} bucket_t;

typedef struct {
    _Atomic uint64_t success, failure, slow, ignored, not_permitted;
    char pad[MG_CACHELINE - 5 * sizeof(uint64_t)];
} slot_t;

struct mg_breaker {
    /* read-only after creation */
    char name[64];
    mg_breaker_cfg_t cfg;
    uint32_t min_calls; /* effective minimumNumberOfCalls */
    uint32_t wsize;     /* ring slots or buckets */
    uint32_t nslots;
    mg_breaker_hook_t hook;
    void *hook_ud;
    _Atomic uint8_t *ring; /* COUNT_BASED */
    bucket_t *buckets;     /* TIME_BASED */
    slot_t *slots;

    /* transition lock and what it guards */
    pthread_mutex_t lock;
    uint64_t since;
    uint64_t entered[MG_CB_NSTATES];
    uint64_t resets;

    /* read on every acquire, written on transitions */
    _Alignas(MG_CACHELINE) _Atomic uint64_t state;
    _Atomic uint64_t open_until;  /* OPEN: HALF_OPEN allowed from this ms */
    _Atomic uint64_t ho_deadline; /* HALF_OPEN: reopen at this ms (0 = never) */

    /* written by records */
    _Alignas(MG_CACHELINE) _Atomic uint64_t cursor; /* COUNT_BASED ring cursor */
    _Atomic uint64_t head_sec;                      /* TIME_BASED: newest second seen */
    _Alignas(MG_CACHELINE) _Atomic int64_t tot_calls, tot_failed, tot_slow;
    _Atomic uint32_t consecutive; /* simple mode */
    _Alignas(MG_CACHELINE) _Atomic uint64_t ho;
};

/* ---- config ---- */

void mg_breaker_cfg_default(mg_breaker_cfg_t *c)
{
    memset(c, 0, sizeof *c);
    c->mode = MG_CB_MODE_RATE;
    c->window_type = MG_CB_COUNT_BASED;
    c->window_size = 100;
    c->minimum_calls = 100;
    c->failure_rate_threshold = 50;
    c->slow_rate_threshold = 100;
    c->slow_call_duration_ms = 60000;
    c->wait_open_ms = 60000;
    c->half_open_permits = 10;
    c->automatic_half_open = false;
    c->max_wait_half_open_ms = 0;
    c->failure_threshold = 5;
    c->call_timeout_ms = 0;
    c->fail_on_connect = c->fail_on_timeout = c->fail_on_reset = c->fail_on_protocol = true;
}

void mg_breaker_cfg_simple(mg_breaker_cfg_t *c, uint32_t failure_threshold, uint32_t timeout_ms,
                           uint32_t reset_timeout_ms)
{
    mg_breaker_cfg_default(c);
    c->mode = MG_CB_MODE_CONSECUTIVE;
    c->failure_threshold = failure_threshold;
    c->call_timeout_ms = timeout_ms;
    c->wait_open_ms = reset_timeout_ms;
    c->half_open_permits = 1;
}

int mg_breaker_cfg_fail_status(mg_breaker_cfg_t *c, int lo, int hi)
{
    if (lo < 100 || hi > 599 || lo > hi)
        return -EINVAL;
    for (int s = lo; s <= hi; s++)
        c->fail_status[s / 64] |= (uint64_t)1 << (s % 64);
    return 0;
}

int mg_breaker_cfg_validate(const mg_breaker_cfg_t *c, char *err, size_t errlen)
{
    const char *why = NULL;
    if (c->mode == MG_CB_MODE_CONSECUTIVE) {
        if (c->failure_threshold < 1)
            why = "failureThreshold must be at least 1";
    } else if (c->mode != MG_CB_MODE_RATE) {
        why = "unknown breaker mode";
    } else if (c->window_type != MG_CB_COUNT_BASED && c->window_type != MG_CB_TIME_BASED) {
        why = "slidingWindowType must be COUNT_BASED or TIME_BASED";
    } else if (c->window_size < 1 ||
               c->window_size > (c->window_type == MG_CB_COUNT_BASED ? MAX_COUNT_WINDOW : MAX_TIME_WINDOW)) {
        why = c->window_type == MG_CB_COUNT_BASED ? "slidingWindowSize must be 1..1000000 calls"
                                                  : "slidingWindowSize must be 1..86400 seconds";
    } else if (c->minimum_calls < 1) {
        why = "minimumNumberOfCalls must be at least 1";
    } else if (!(c->failure_rate_threshold > 0 && c->failure_rate_threshold <= 100)) {
        why = "failureRateThreshold must be in (0, 100]";
    } else if (!(c->slow_rate_threshold > 0 && c->slow_rate_threshold <= 100)) {
        why = "slowCallRateThreshold must be in (0, 100]";
    } else if (c->slow_call_duration_ms < 1) {
        why = "slowCallDurationThreshold must be at least 1 ms";
    }
    if (!why && c->wait_open_ms < 1)
        why = "waitDurationInOpenState must be at least 1 ms";
    if (!why && (c->half_open_permits < 1 || c->half_open_permits > 65535))
        why = "permittedNumberOfCallsInHalfOpenState must be 1..65535";
    if (why) {
        if (err && errlen)
            snprintf(err, errlen, "%s", why);
        return MG_ECONFIG;
    }
    return 0;
}

bool mg_breaker_cfg_equal(const mg_breaker_cfg_t *a, const mg_breaker_cfg_t *b)
{
    return a->mode == b->mode && a->window_type == b->window_type && a->window_size == b->window_size &&
           a->minimum_calls == b->minimum_calls && a->failure_rate_threshold == b->failure_rate_threshold &&
           a->slow_rate_threshold == b->slow_rate_threshold &&
           a->slow_call_duration_ms == b->slow_call_duration_ms && a->wait_open_ms == b->wait_open_ms &&
           a->half_open_permits == b->half_open_permits && a->automatic_half_open == b->automatic_half_open &&
           a->max_wait_half_open_ms == b->max_wait_half_open_ms && a->failure_threshold == b->failure_threshold &&
           a->call_timeout_ms == b->call_timeout_ms && a->fail_on_connect == b->fail_on_connect &&
           a->fail_on_timeout == b->fail_on_timeout && a->fail_on_reset == b->fail_on_reset &&
           a->fail_on_protocol == b->fail_on_protocol &&
           memcmp(a->fail_status, b->fail_status, sizeof a->fail_status) == 0;
}

mg_cb_outcome_t mg_breaker_classify(const mg_breaker_cfg_t *c, mg_up_result_t r, int status)
{
    /* As Resilience4j: an error that is not recordable counts as a success. */
    switch (r) {
    case MG_UP_RESPONSE:
        if (status >= 0 && status < 600 && (c->fail_status[status / 64] >> (status % 64)) & 1)
            return MG_CB_FAILURE;
        return MG_CB_SUCCESS;
    case MG_UP_CONNECT_FAILURE: return c->fail_on_connect ? MG_CB_FAILURE : MG_CB_SUCCESS;
    case MG_UP_TIMEOUT: return c->fail_on_timeout ? MG_CB_FAILURE : MG_CB_SUCCESS;
    case MG_UP_RESET: return c->fail_on_reset ? MG_CB_FAILURE : MG_CB_SUCCESS;
    case MG_UP_PROTOCOL: return c->fail_on_protocol ? MG_CB_FAILURE : MG_CB_SUCCESS;
    default: return MG_CB_IGNORED;
    }
}

/* ---- names ---- */

const char *mg_cb_state_name(mg_cb_state_t s)
{
    static const char *const n[MG_CB_NSTATES] = { "CLOSED", "OPEN", "HALF_OPEN", "FORCED_OPEN", "DISABLED" };
    return (unsigned)s < MG_CB_NSTATES ? n[s] : "?";
}

const char *mg_cb_reason_name(mg_cb_reason_t r)
{
    static const char *const n[MG_CB_NWHY] = {
        "failure_rate", "slow_call_rate", "consecutive_failures", "wait_elapsed", "automatic",
        "trial_passed", "trial_failed", "half_open_timeout", "forced", "reset",
    };
    return (unsigned)r < MG_CB_NWHY ? n[r] : "?";
}

/* ---- windows ---- */

static inline void totals_add(mg_breaker_t *b, int64_t dc, int64_t df, int64_t ds)
{
    if (dc)
        atomic_fetch_add_explicit(&b->tot_calls, dc, RLX);
    if (df)
        atomic_fetch_add_explicit(&b->tot_failed, df, RLX);
    if (ds)
        atomic_fetch_add_explicit(&b->tot_slow, ds, RLX);
}

/* Recycle bucket bk for second t, if it holds an older second. The CAS
 * winner alone takes the old counts out of the totals. True if it held
 * calls (the rates may have moved). */
static bool tw_evict_to(mg_breaker_t *b, bucket_t *bk, uint64_t t)
{
    uint64_t cur = atomic_load_explicit(&bk->sec, RLX);
    while (cur < t) {
        if (atomic_compare_exchange_weak_explicit(&bk->sec, &cur, t, RLX, RLX)) {
            uint32_t c = atomic_exchange_explicit(&bk->calls, 0, RLX);
            uint32_t f = atomic_exchange_explicit(&bk->failed, 0, RLX);
            uint32_t s = atomic_exchange_explicit(&bk->slow, 0, RLX);
            totals_add(b, -(int64_t)c, -(int64_t)f, -(int64_t)s);
            return c != 0;
        }
    }
    return false;
}

/* Move the time window to end at second sec: the one thread that moves
 * head_sec recycles the buckets of the seconds it skipped. */
static bool tw_advance(mg_breaker_t *b, uint64_t sec)
{
    uint64_t h = atomic_load_explicit(&b->head_sec, RLX);
    if (sec <= h || !atomic_compare_exchange_strong_explicit(&b->head_sec, &h, sec, RLX, RLX))
        return false;
    uint64_t from = sec - h >= b->wsize ? sec - b->wsize + 1 : h + 1;
    bool moved = false;
    for (uint64_t t = from; t <= sec; t++)
        moved |= tw_evict_to(b, &b->buckets[t % b->wsize], t);
    return moved;
}

/* Adds one call to the CLOSED window. True if the rates may now be over a
 * threshold (so they are worth evaluating). */
static bool window_add(mg_breaker_t *b, bool failed, bool slow, uint64_t now_ms)
{
    if (b->cfg.window_type == MG_CB_COUNT_BASED) {
        uint8_t v = (uint8_t)(RING_PRESENT | (failed ? RING_FAILED : 0) | (slow ? RING_SLOW : 0));
        uint64_t i = atomic_fetch_add_explicit(&b->cursor, 1, RLX) % b->wsize;
        uint8_t old = atomic_exchange_explicit(&b->ring[i], v, RLX);
        if (old == v)
            return false; /* steady state: nothing moves */
        int64_t dc = !(old & RING_PRESENT);
        int64_t df = (int64_t)!!(v & RING_FAILED) - !!(old & RING_FAILED);
        int64_t ds = (int64_t)!!(v & RING_SLOW) - !!(old & RING_SLOW);
        totals_add(b, dc, df, ds);
        return dc > 0 || df > 0 || ds > 0;
    }
    uint64_t sec = now_ms / 1000;
    bool moved = tw_advance(b, sec);
    bucket_t *bk = &b->buckets[sec % b->wsize];
    if (atomic_load_explicit(&bk->sec, RLX) < sec)
        moved |= tw_evict_to(b, bk, sec);
    atomic_fetch_add_explicit(&bk->calls, 1, RLX);
    if (failed)
        atomic_fetch_add_explicit(&bk->failed, 1, RLX);
    if (slow)
        atomic_fetch_add_explicit(&bk->slow, 1, RLX);
    int64_t calls = atomic_fetch_add_explicit(&b->tot_calls, 1, RLX) + 1;
    if (failed)
        atomic_fetch_add_explicit(&b->tot_failed, 1, RLX);
    if (slow)
        atomic_fetch_add_explicit(&b->tot_slow, 1, RLX);
    return moved || failed || slow || calls == (int64_t)b->min_calls;
}

/* Empties the CLOSED window (transition lock held). Every slot/bucket is
 * exchanged out, so the add-once/remove-once rule holds even against a
 * straggling writer. */
static void window_reset(mg_breaker_t *b)
{
    if (b->ring) {
        for (uint32_t i = 0; i < b->wsize; i++) {
            uint8_t old = atomic_exchange_explicit(&b->ring[i], 0, RLX);
            if (old)
                totals_add(b, -1, -(int64_t)!!(old & RING_FAILED), -(int64_t)!!(old & RING_SLOW));
        }
    } else if (b->buckets) {
        for (uint32_t i = 0; i < b->wsize; i++) {
            bucket_t *bk = &b->buckets[i];
            uint32_t c = atomic_exchange_explicit(&bk->calls, 0, RLX);
            uint32_t f = atomic_exchange_explicit(&bk->failed, 0, RLX);
            uint32_t s = atomic_exchange_explicit(&bk->slow, 0, RLX);
            totals_add(b, -(int64_t)c, -(int64_t)f, -(int64_t)s);
        }
    }
}

typedef struct {
    uint32_t calls, failed, slow;
    float fr, sr; /* -1 when not computed */
} rates_t;

static uint32_t clamp_u32(int64_t v)
{
    return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void rates_compute(rates_t *r, uint32_t min_calls)
{
    if (r->calls == 0 || r->calls < min_calls) {
        r->fr = r->sr = -1;
        return;
    }
    r->fr = (float)r->failed * 100.0f / (float)r->calls;
    r->sr = (float)r->slow * 100.0f / (float)r->calls;
}

static void window_rates(mg_breaker_t *b, rates_t *r)
{
    r->calls = clamp_u32(atomic_load_explicit(&b->tot_calls, RLX));
    r->failed = clamp_u32(atomic_load_explicit(&b->tot_failed, RLX));
    r->slow = clamp_u32(atomic_load_explicit(&b->tot_slow, RLX));
    if (r->failed > r->calls)
        r->failed = r->calls;
    if (r->slow > r->calls)
        r->slow = r->calls;
    rates_compute(r, b->min_calls);
}

/* ---- transitions ---- */

/* Enter state `to` from the state word cur (lock held). */
static void enter_locked(mg_breaker_t *b, uint64_t cur, mg_cb_state_t to, mg_cb_reason_t why,
                         uint64_t now, const rates_t *r)
{
    mg_cb_state_t from = SW_STATE(cur);
    uint32_t epoch = SW_EPOCH(cur) + 1;
    switch (to) {
    case MG_CB_CLOSED:
        window_reset(b);
        atomic_store_explicit(&b->consecutive, 0, RLX);
        break;
    case MG_CB_OPEN:
        atomic_store_explicit(&b->open_until, now + b->cfg.wait_open_ms, RLX);
        break;
    case MG_CB_HALF_OPEN:
        atomic_store_explicit(&b->ho, HO_MAKE(epoch), RLX);
        atomic_store_explicit(&b->ho_deadline,
                              b->cfg.max_wait_half_open_ms ? now + b->cfg.max_wait_half_open_ms : 0, RLX);
        break;
    default:
        break;
    }
    b->since = now;
    if (from != to)
        b->entered[to]++;
    if (why == MG_CB_WHY_RESET)
        b->resets++;
    /* Release: a worker that sees the new epoch also sees the reset above. */
    atomic_store_explicit(&b->state, SW_MAKE(epoch, to, 0), memory_order_release);
    if (b->hook) {
        mg_cb_event_t ev = {
            .name = b->name, .from = from, .to = to, .reason = why,
            .failure_rate = r ? r->fr : -1, .slow_rate = r ? r->sr : -1,
            .calls = r ? r->calls : 0, .now_ms = now,
        };
        b->hook(b->hook_ud, &ev);
    }
}

/* Moves from the state (and epoch) of `expect` to `to`, unless another
 * thread moved first. */
static bool transition(mg_breaker_t *b, uint64_t expect, mg_cb_state_t to, mg_cb_reason_t why, uint64_t now,
                       const rates_t *r)
{
    pthread_mutex_lock(&b->lock);
    uint64_t cur = atomic_load_explicit(&b->state, RLX);
    bool ok = SW_EPOCH(cur) == SW_EPOCH(expect) && SW_STATE(cur) == SW_STATE(expect);
    if (ok)
        enter_locked(b, cur, to, why, now, r);
    pthread_mutex_unlock(&b->lock);
    return ok;
}

/* ---- lifecycle ---- */

mg_breaker_t *mg_breaker_new(const char *name, const mg_breaker_cfg_t *cfg, uint32_t nslots,
                             uint64_t now_ms, mg_breaker_hook_t hook, void *hook_ud)
{
    if (mg_breaker_cfg_validate(cfg, NULL, 0) || nslots == 0)
        return NULL;
    mg_breaker_t *b = mg_aligned_calloc(1, sizeof *b);
    if (!b)
        return NULL;
    snprintf(b->name, sizeof b->name, "%s", name ? name : "");
    b->cfg = *cfg;
    b->nslots = nslots;
    b->hook = hook;
    b->hook_ud = hook_ud;
    b->wsize = cfg->window_size;
    b->min_calls = cfg->minimum_calls;
    if (cfg->window_type == MG_CB_COUNT_BASED && b->min_calls > b->wsize)
        b->min_calls = b->wsize; /* as Resilience4j */
    b->slots = mg_aligned_calloc(nslots, sizeof *b->slots);
    if (cfg->mode == MG_CB_MODE_RATE) {
        if (cfg->window_type == MG_CB_COUNT_BASED)
            b->ring = mg_aligned_calloc(b->wsize, sizeof *b->ring);
        else
            b->buckets = mg_aligned_calloc(b->wsize, sizeof *b->buckets);
    }
    if (!b->slots || (cfg->mode == MG_CB_MODE_RATE && !b->ring && !b->buckets) ||
        pthread_mutex_init(&b->lock, NULL)) {
        free(b->slots);
        free(b->ring);
        free(b->buckets);
        free(b);
        return NULL;
    }
    atomic_init(&b->head_sec, now_ms / 1000);
    atomic_init(&b->state, SW_MAKE(1, MG_CB_CLOSED, 0));
    b->since = now_ms;
    return b;
}

void mg_breaker_free(mg_breaker_t *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b->slots);
    free(b->ring);
    free(b->buckets);
    free(b);
}

const char *mg_breaker_name(const mg_breaker_t *b) { return b->name; }
const mg_breaker_cfg_t *mg_breaker_cfg(const mg_breaker_t *b) { return &b->cfg; }

mg_cb_state_t mg_breaker_state(const mg_breaker_t *b)
{
    return SW_STATE(atomic_load_explicit(&((mg_breaker_t *)b)->state, memory_order_acquire));
}

/* ---- hot path ---- */

bool mg_breaker_acquire(mg_breaker_t *b, uint32_t slot, uint64_t now_ms, uint32_t *ticket)
{
    uint64_t w = atomic_load_explicit(&b->state, memory_order_acquire);
    for (;;) {
        switch (SW_STATE(w)) {
        case MG_CB_CLOSED:
        case MG_CB_DISABLED:
            *ticket = SW_EPOCH(w);
            return true;
        case MG_CB_OPEN:
            if (now_ms >= atomic_load_explicit(&b->open_until, RLX)) {
                transition(b, w, MG_CB_HALF_OPEN, MG_CB_WHY_WAIT_ELAPSED, now_ms, NULL);
                w = atomic_load_explicit(&b->state, memory_order_acquire);
                continue;
            }
            break;
        case MG_CB_HALF_OPEN: {
            uint64_t dl = atomic_load_explicit(&b->ho_deadline, RLX);
            if (dl && now_ms >= dl) {
                transition(b, w, MG_CB_OPEN, MG_CB_WHY_HALF_OPEN_TIMEOUT, now_ms, NULL);
                w = atomic_load_explicit(&b->state, memory_order_acquire);
                continue;
            }
            if (SW_USED(w) >= b->cfg.half_open_permits)
                break;
            if (atomic_compare_exchange_weak_explicit(&b->state, &w, w + SW_ONE_PERMIT, memory_order_acquire,
                                                      memory_order_acquire)) {
                *ticket = SW_EPOCH(w);
                return true;
            }
            continue; /* w reloaded by the failed CAS */
        }
        default: /* FORCED_OPEN */
            break;
        }
        mg_ctr_inc(&b->slots[mg_slot_clamp(slot, b->nslots)].not_permitted);
        return false;
    }
}

static void record_half_open(mg_breaker_t *b, uint64_t w, uint32_t ticket, bool failed, bool slow, uint64_t now)
{
    if (b->cfg.mode == MG_CB_MODE_CONSECUTIVE) { /* the seed: the first trial result decides */
        if (failed)
            transition(b, w, MG_CB_OPEN, MG_CB_WHY_TRIAL_FAILED, now, NULL);
        else
            transition(b, w, MG_CB_CLOSED, MG_CB_WHY_TRIAL_PASSED, now, NULL);
        return;
    }
    uint64_t h = atomic_load_explicit(&b->ho, RLX), nh;
    do {
        if (HO_EPOCH(h) != (ticket & 0xffffu) || HO_CALLS(h) >= b->cfg.half_open_permits)
            return; /* a result from another trial */
        nh = h + ((uint64_t)1 << 32) + (failed ? (uint64_t)1 << 16 : 0) + (slow ? 1 : 0);
    } while (!atomic_compare_exchange_weak_explicit(&b->ho, &h, nh, RLX, RLX));
    if (HO_CALLS(nh) < b->cfg.half_open_permits)
        return;
    /* All permitted calls are in: judge the trial (Resilience4j's
     * half-open window has minimumNumberOfCalls = permitted calls). */
    rates_t r = { .calls = HO_CALLS(nh), .failed = HO_FAIL(nh), .slow = HO_SLOW(nh) };
    rates_compute(&r, 1);
    bool bad = r.fr >= b->cfg.failure_rate_threshold || r.sr >= b->cfg.slow_rate_threshold;
    transition(b, w, bad ? MG_CB_OPEN : MG_CB_CLOSED, bad ? MG_CB_WHY_TRIAL_FAILED : MG_CB_WHY_TRIAL_PASSED,
               now, &r);
}

void mg_breaker_record(mg_breaker_t *b, uint32_t slot, uint32_t ticket, mg_cb_outcome_t o,
                       uint64_t duration_ms, uint64_t now_ms)
{
    slot_t *st = &b->slots[mg_slot_clamp(slot, b->nslots)];
    bool rate = b->cfg.mode == MG_CB_MODE_RATE;
    if (!rate && o == MG_CB_SUCCESS && b->cfg.call_timeout_ms && duration_ms > b->cfg.call_timeout_ms)
        o = MG_CB_FAILURE; /* the seed's timeoutMs */
    bool failed = o == MG_CB_FAILURE;
    bool slow = rate && o != MG_CB_IGNORED && duration_ms > b->cfg.slow_call_duration_ms;
    mg_ctr_inc(o == MG_CB_SUCCESS ? &st->success : failed ? &st->failure : &st->ignored);
    if (slow)
        mg_ctr_inc(&st->slow);

    uint64_t w = atomic_load_explicit(&b->state, memory_order_acquire);
    if (SW_EPOCH(w) != ticket)
        return; /* permit from an earlier state: not this window's business */
    switch (SW_STATE(w)) {
    case MG_CB_CLOSED:
        if (o == MG_CB_IGNORED)
            return;
        if (!rate) {
            if (failed) {
                uint32_t n = atomic_fetch_add_explicit(&b->consecutive, 1, RLX) + 1;
                if (n >= b->cfg.failure_threshold) {
                    rates_t r = { .calls = n, .failed = n, .fr = -1, .sr = -1 };
                    transition(b, w, MG_CB_OPEN, MG_CB_WHY_CONSECUTIVE, now_ms, &r);
                }
            } else if (atomic_load_explicit(&b->consecutive, RLX)) {
                atomic_store_explicit(&b->consecutive, 0, RLX);
            }
            return;
        }
        if (window_add(b, failed, slow, now_ms)) {
            rates_t r;
            window_rates(b, &r);
            if (r.fr >= 0 && r.fr >= b->cfg.failure_rate_threshold)
                transition(b, w, MG_CB_OPEN, MG_CB_WHY_FAILURE_RATE, now_ms, &r);
            else if (r.sr >= 0 && r.sr >= b->cfg.slow_rate_threshold)
                transition(b, w, MG_CB_OPEN, MG_CB_WHY_SLOW_RATE, now_ms, &r);
        }
        return;
    case MG_CB_HALF_OPEN:
        if (o == MG_CB_IGNORED) { /* give the permit back */
            while (SW_EPOCH(w) == ticket && SW_STATE(w) == MG_CB_HALF_OPEN && SW_USED(w) > 0 &&
                   !atomic_compare_exchange_weak_explicit(&b->state, &w, w - SW_ONE_PERMIT, memory_order_acquire,
                                                          memory_order_acquire)) {
            }
            return;
        }
        record_half_open(b, w, ticket, failed, slow, now_ms);
        return;
    default: /* OPEN, FORCED_OPEN, DISABLED: counted above, nothing to decide */
        return;
    }
}

/* ---- control thread ---- */

uint64_t mg_breaker_tick(mg_breaker_t *b, uint64_t now_ms)
{
    for (;;) {
        uint64_t w = atomic_load_explicit(&b->state, memory_order_acquire);
        if (SW_STATE(w) == MG_CB_OPEN && b->cfg.automatic_half_open) {
            uint64_t due = atomic_load_explicit(&b->open_until, RLX);
            if (now_ms < due)
                return due - now_ms;
            transition(b, w, MG_CB_HALF_OPEN, MG_CB_WHY_AUTOMATIC, now_ms, NULL);
            continue;
        }
        if (SW_STATE(w) == MG_CB_HALF_OPEN) {
            uint64_t dl = atomic_load_explicit(&b->ho_deadline, RLX);
            if (!dl)
                return UINT64_MAX;
            if (now_ms < dl)
                return dl - now_ms;
            transition(b, w, MG_CB_OPEN, MG_CB_WHY_HALF_OPEN_TIMEOUT, now_ms, NULL);
            continue;
        }
        return UINT64_MAX;
    }
}

int mg_breaker_force(mg_breaker_t *b, mg_cb_state_t to, uint64_t now_ms)
{
    if ((unsigned)to >= MG_CB_NSTATES)
        return -EINVAL;
    pthread_mutex_lock(&b->lock);
    uint64_t cur = atomic_load_explicit(&b->state, RLX);
    if (SW_STATE(cur) != to)
        enter_locked(b, cur, to, MG_CB_WHY_FORCED, now_ms, NULL);
    pthread_mutex_unlock(&b->lock);
    return 0;
}

void mg_breaker_reset(mg_breaker_t *b, uint64_t now_ms)
{
    pthread_mutex_lock(&b->lock);
    enter_locked(b, atomic_load_explicit(&b->state, RLX), MG_CB_CLOSED, MG_CB_WHY_RESET, now_ms, NULL);
    pthread_mutex_unlock(&b->lock);
}

void mg_breaker_snapshot(mg_breaker_t *b, uint64_t now_ms, mg_breaker_snap_t *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&b->lock);
    uint64_t w = atomic_load_explicit(&b->state, memory_order_acquire);
    mg_cb_state_t st = SW_STATE(w);
    out->state = st;
    out->state_since_ms = b->since;
    memcpy(out->entered, b->entered, sizeof out->entered);
    out->resets = b->resets;
    rates_t r = { .fr = -1, .sr = -1 };
    if (b->cfg.mode == MG_CB_MODE_RATE) {
        if (st == MG_CB_HALF_OPEN) {
            uint64_t h = atomic_load_explicit(&b->ho, RLX);
            if (HO_EPOCH(h) == (SW_EPOCH(w) & 0xffffu)) {
                r.calls = HO_CALLS(h);
                r.failed = HO_FAIL(h);
                r.slow = HO_SLOW(h);
                rates_compute(&r, b->cfg.half_open_permits);
            }
        } else {
            if (st == MG_CB_CLOSED && b->buckets)
                tw_advance(b, now_ms / 1000); /* drop seconds that left the window */
            window_rates(b, &r);
        }
    }
    pthread_mutex_unlock(&b->lock);
    out->failure_rate = r.fr;
    out->slow_rate = r.sr;
    out->calls = r.calls;
    out->failed_calls = r.failed;
    out->slow_calls = r.slow;
    out->consecutive_failures = atomic_load_explicit(&b->consecutive, RLX);
    if (st == MG_CB_HALF_OPEN)
        out->half_open_permits_left = b->cfg.half_open_permits - SW_USED(w);
    if (st == MG_CB_OPEN) {
        uint64_t due = atomic_load_explicit(&b->open_until, RLX);
        out->ms_until_half_open = due > now_ms ? due - now_ms : 0;
    }
    for (uint32_t i = 0; i < b->nslots; i++) {
        const slot_t *s = &b->slots[i];
        out->successes += mg_ctr_get(&s->success);
        out->failures += mg_ctr_get(&s->failure);
        out->slow += mg_ctr_get(&s->slow);
        out->ignored += mg_ctr_get(&s->ignored);
        out->not_permitted += mg_ctr_get(&s->not_permitted);
    }
}
