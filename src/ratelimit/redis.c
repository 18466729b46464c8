/* redis: see redis.h.
 *
 * Request slots are preallocated (max_inflight). A slot is in use while
 * either party still owes something: the caller its callback (cb != NULL,
 * and then it sits on the `waiting` list, oldest first) or hiredis its
 * reply (in_redis). Since every check has the same timeout, the head of
 * `waiting` always has the earliest deadline, so one timer serves all. */
#include "ratelimit/redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>

#include "core/err.h"
#include "core/log.h"

/* Spring's request_rate_limiter.lua, with the time taken from Redis TIME in
 * microseconds (timestamps stored as fractional seconds, so a Spring
 * instance reading them still understands them), a 1e-9 slack on the
 * comparison as in bucket.c, and a TTL of at least 1 s: Spring's
 * floor(2 * fill_time) is 0 for burst < rate / 2, which would store
 * nothing and never limit. Returns { allowed (0/1), tokens left (text) }. */
const char mg_rl_redis_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n"
    "local tokens_key = KEYS[1]\n"
    "local timestamp_key = KEYS[2]\n"
    "local rate = tonumber(ARGV[1])\n"
    "local capacity = tonumber(ARGV[2])\n"
    "local requested = tonumber(ARGV[3])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"
    "local fill_time = capacity / rate\n"
    "local ttl = math.floor(fill_time * 2)\n"
    "if capacity > 0 and ttl < 1 then ttl = 1 end\n"
    "local last_tokens = tonumber(redis.call('GET', tokens_key))\n"
    "if last_tokens == nil then last_tokens = capacity end\n"
    "local last_refreshed = tonumber(redis.call('GET', timestamp_key))\n"
    "if last_refreshed == nil then last_refreshed = 0 end\n"
    "local delta = math.max(0, now - last_refreshed)\n"
    "local filled = math.min(capacity, last_tokens + delta * rate)\n"
    "local allowed_num = 0\n"
    "local new_tokens = filled\n"
    "if filled + 1e-9 >= requested then\n"
    "  allowed_num = 1\n"
    "  new_tokens = math.max(0, filled - requested)\n"
    "end\n"
    "if ttl > 0 then\n"
    "  redis.call('SETEX', tokens_key, ttl, string.format('%.9f', new_tokens))\n"
    "  redis.call('SETEX', timestamp_key, ttl, string.format('%.6f', now))\n"
    "end\n"
    "return { allowed_num, string.format('%.9f', new_tokens) }\n";

#define KEY_PREFIX "request_rate_limiter.{"
#define KEYS_INLINE 256

typedef enum { C_DOWN, C_CONNECTING, C_UP } conn_state_t;

struct mg_rl_redis_req {
    mg_rl_redis_t *r;
    mg_rl_redis_cb cb; /* NULL once called or cancelled */
    void *arg;
    mg_rl_params_t p;
    uint64_t deadline; /* loop ms */
    mg_rl_redis_req_t *prev, *next; /* waiting list, or free list (next) */
    bool in_use, in_redis, retried;
    /* "request_rate_limiter.{route.key}.tokens" then "...}.timestamp" */
    char *keys;
    size_t tokens_len, ts_len;
    char keys_inline[KEYS_INLINE];
};

typedef struct {
    _Atomic uint64_t checks, decided, timeouts, errors, unavailable, overflow, noscript, connects, disconnects;
    _Atomic uint32_t inflight;
    _Atomic bool connected;
} stats_t;

struct mg_rl_redis {
    uv_loop_t *loop;
    mg_rl_redis_opts_t o;
    char host[64];
    redisAsyncContext *ac; /* NULL while down */
    conn_state_t state;
    bool closing;
    uint32_t backoff_ms;
    uint64_t rng;

    uv_timer_t req_timer;  /* deadline of the oldest waiting check; dead-connection watch */
    uv_timer_t conn_timer; /* reconnect backoff; connect timeout */
    int open_handles;

    mg_rl_redis_req_t *slots, *free_list;
    mg_rl_redis_req_t *wait_head, *wait_tail;
    uint32_t used;        /* slots in use */
    uint32_t outstanding; /* replies owed by the connection */
    uint64_t progress_ms; /* last reply, or when `outstanding` left 0 */

    char sha[41];         /* of the script; "" until the first SCRIPT LOAD answered */
    bool loading;         /* a SCRIPT LOAD is in flight on this connection */

    mg_warn_limit_t warn;

    stats_t st;
};

#define INC(x) atomic_fetch_add_explicit(&(x), 1, memory_order_relaxed)

static void start_connect(mg_rl_redis_t *r);
static void schedule_reconnect(mg_rl_redis_t *r);

/* Deadlines use the real clock, not the loop's cached time: a check made
 * late in a long loop iteration must still get its full timeout. */
static inline uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* ---- warnings, at most one per interval ---- */

static void rl_warn(mg_rl_redis_t *r, const char *what, const char *detail)
{
    mg_warn_limited(&r->warn, r->o.warn_interval_ms, "rate limiter: redis %s:%u: %s%s%s", r->host, r->o.port, what,
                    detail ? ": " : "", detail ? detail : "");
}

/* ---- slots and the waiting list ---- */

static void wait_remove(mg_rl_redis_t *r, mg_rl_redis_req_t *q)
{
    if (q->prev)
        q->prev->next = q->next;
    else
        r->wait_head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        r->wait_tail = q->prev;
    q->prev = q->next = NULL;
}

static void slot_release(mg_rl_redis_t *r, mg_rl_redis_req_t *q)
{
    if (q->keys != q->keys_inline)
        free(q->keys);
    q->keys = NULL;
    q->in_use = false;
    q->next = r->free_list;
    r->free_list = q;
    r->used--;
    atomic_store_explicit(&r->st.inflight, r->used, memory_order_relaxed);
}

/* Complete a check for its caller (if it still wants it). */
static void complete(mg_rl_redis_t *r, mg_rl_redis_req_t *q, const mg_rl_redis_reply_t *rep)
{
    if (!q->cb)
        return;
    mg_rl_redis_cb cb = q->cb;
    q->cb = NULL;
    wait_remove(r, q);
    if (rep->status == 0)
        INC(r->st.decided);
    else if (rep->status == -ETIMEDOUT)
        INC(r->st.timeouts);
    else if (rep->status != UV_ECANCELED)
        INC(r->st.errors);
    cb(q->arg, rep);
}

/* ---- connection ---- */

static void drop_connection(mg_rl_redis_t *r)
{
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    r->state = C_DOWN;
    atomic_store_explicit(&r->st.connected, false, memory_order_relaxed);
    if (ac) {
        INC(r->st.disconnects);
        redisAsyncFree(ac); /* pending replies come back NULL, synchronously */
    }
}

static void on_conn_timer(uv_timer_t *t)
{
    mg_rl_redis_t *r = t->data;
    if (r->closing)
        return;
    if (r->state == C_DOWN) {
        start_connect(r);
    } else if (r->state == C_CONNECTING) {
        rl_warn(r, "connect timed out", NULL);
        drop_connection(r);
        schedule_reconnect(r);
    }
}

static void schedule_reconnect(mg_rl_redis_t *r)
{
    if (r->closing)
        return;
    uint32_t b = r->backoff_ms;
    /* +-20% jitter so the workers of many instances do not reconnect in step */
    r->rng ^= r->rng << 13;
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    uint32_t jitter = b / 5 ? (uint32_t)(r->rng % (2 * (b / 5) + 1)) : 0;
    uint64_t delay = (uint64_t)b - b / 5 + jitter;
    r->backoff_ms = b * 2 > r->o.backoff_max_ms ? r->o.backoff_max_ms : b * 2;
    uv_timer_start(&r->conn_timer, on_conn_timer, delay, 0);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    mg_rl_redis_t *r = ac->data;
    if (r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac right after this; its pending replies come back NULL */
        rl_warn(r, "connect failed", ac->errstr);
        r->ac = NULL;
        r->state = C_DOWN;
        INC(r->st.disconnects);
        schedule_reconnect(r);
        return;
    }
    uv_timer_stop(&r->conn_timer);
    r->state = C_UP;
    r->backoff_ms = r->o.backoff_min_ms;
    if (atomic_load_explicit(&r->st.connects, memory_order_relaxed) > 0)
        mg_info("rate limiter: redis %s:%u: reconnected", r->host, r->o.port);
    INC(r->st.connects);
    atomic_store_explicit(&r->st.connected, true, memory_order_relaxed);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    mg_rl_redis_t *r = ac->data;
    if (r->ac != ac) /* we dropped it ourselves */
        return;
    rl_warn(r, "connection lost", ac->errstr[0] ? ac->errstr : NULL);
    r->ac = NULL;
    r->state = C_DOWN;
    INC(r->st.disconnects);
    atomic_store_explicit(&r->st.connected, false, memory_order_relaxed);
    schedule_reconnect(r);
}

static void on_script_loaded(redisAsyncContext *ac, void *reply, void *priv)
{
    mg_rl_redis_t *r = priv;
    redisReply *rep = reply;
    if (r->ac == ac)
        r->loading = false;
    if (rep && rep->type == REDIS_REPLY_STRING && rep->len == 40) {
        memcpy(r->sha, rep->str, 40);
        r->sha[40] = 0;
    } else if (rep && rep->type == REDIS_REPLY_ERROR) {
        rl_warn(r, "SCRIPT LOAD failed", rep->str);
    }
}

static int send_script_load(mg_rl_redis_t *r)
{
    if (r->loading) /* checks sent after it will find the script */
        return 0;
    const char *argv[3] = { "SCRIPT", "LOAD", mg_rl_redis_script };
    size_t argl[3] = { 6, 4, sizeof mg_rl_redis_script - 1 };
    if (redisAsyncCommandArgv(r->ac, on_script_loaded, r, 3, argv, argl) != REDIS_OK)
        return -ENOTCONN;
    r->loading = true;
    return 0;
}

static void start_connect(mg_rl_redis_t *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->o.port);
    if (!ac) {
        rl_warn(r, "connect failed", "out of memory");
        schedule_reconnect(r);
        return;
    }
    if (ac->err) {
        rl_warn(r, "connect failed", ac->errstr);
        redisAsyncFree(ac);
        INC(r->st.disconnects);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        rl_warn(r, "connect failed", "cannot attach to the loop");
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = C_CONNECTING;
    r->loading = false;
    /* Pipelined ahead of every check on this connection, so EVALSHA after
     * it always finds the script. */
    send_script_load(r);
    uv_timer_start(&r->conn_timer, on_conn_timer, r->o.connect_timeout_ms, 0);
}

/* ---- checks ---- */

static int send_check(mg_rl_redis_t *r, mg_rl_redis_req_t *q);

static void on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    mg_rl_redis_req_t *q = priv;
    mg_rl_redis_t *r = q->r;
    redisReply *rep = reply;
    q->in_redis = false;
    r->outstanding--;
    r->progress_ms = now_ms();

    if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 &&
        !q->retried && r->ac == ac) {
        INC(r->st.noscript);
        q->retried = true;
        if (send_script_load(r) == 0 && send_check(r, q) == 0)
            return;
    }

    mg_rl_redis_reply_t out = { .status = -EPROTO, .result = { .remaining = -1 } };
    if (!rep) {
        out.status = r->closing ? UV_ECANCELED : -ECONNRESET;
    } else if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
               rep->element[0]->type == REDIS_REPLY_INTEGER &&
               rep->element[1]->type == REDIS_REPLY_STRING) {
        char *end;
        double tokens = strtod(rep->element[1]->str, &end);
        if (end != rep->element[1]->str) {
            out.status = 0;
            out.tokens = tokens;
            out.result = mg_rl_result_make(&q->p, rep->element[0]->integer == 1, tokens);
        }
    } else if (rep->type == REDIS_REPLY_ERROR) {
        rl_warn(r, "script failed", rep->str);
    } else {
        rl_warn(r, "unexpected script reply", NULL);
    }
    complete(r, q, &out);
    slot_release(r, q);
}

static int send_check(mg_rl_redis_t *r, mg_rl_redis_req_t *q)
{
    char rate[32], burst[16], req[16];
    snprintf(rate, sizeof rate, "%.17g", q->p.rate);
    snprintf(burst, sizeof burst, "%u", q->p.burst);
    snprintf(req, sizeof req, "%u", q->p.requested);
    bool sha = r->sha[0] != 0;
    const char *argv[8] = { sha ? "EVALSHA" : "EVAL", sha ? r->sha : mg_rl_redis_script, "2",
                            q->keys, q->keys + q->tokens_len, rate, burst, req };
    size_t argl[8] = { sha ? 7 : 4, sha ? 40 : sizeof mg_rl_redis_script - 1, 1,
                       q->tokens_len, q->ts_len, strlen(rate), strlen(burst), strlen(req) };
    if (redisAsyncCommandArgv(r->ac, on_reply, q, 8, argv, argl) != REDIS_OK)
        return -ENOTCONN;
    if (r->outstanding++ == 0)
        r->progress_ms = now_ms();
    q->in_redis = true;
    return 0;
}

static void on_req_timer(uv_timer_t *t)
{
    mg_rl_redis_t *r = t->data;
    uint64_t now = now_ms();
    static const mg_rl_redis_reply_t timeout = { .status = -ETIMEDOUT, .result = { .remaining = -1 } };
    while (r->wait_head && r->wait_head->deadline <= now) {
        mg_rl_redis_req_t *q = r->wait_head;
        rl_warn(r, "no reply in time", NULL);
        complete(r, q, &timeout); /* the slot waits for the late reply */
    }
    if (r->ac && r->state == C_UP && r->outstanding && now - r->progress_ms >= r->o.dead_after_ms) {
        rl_warn(r, "no reply for too long, reconnecting", NULL);
        drop_connection(r);
        schedule_reconnect(r);
    }
    if (r->wait_head)
        uv_timer_start(&r->req_timer, on_req_timer, r->wait_head->deadline - now, 0);
}

int mg_rl_redis_check(mg_rl_redis_t *r, mg_slice_t route, mg_slice_t key, const mg_rl_params_t *p,
                      mg_rl_redis_cb cb, void *arg, mg_rl_redis_req_t **handle)
{
    if (!r->ac || r->closing || (r->ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) {
        INC(r->st.unavailable);
        return -ENOTCONN;
    }
    mg_rl_redis_req_t *q = r->free_list;
    if (!q) {
        INC(r->st.overflow);
        return MG_ELIMIT;
    }
    /* keys: PREFIX route "." key "}.tokens" and PREFIX route "." key "}.timestamp" */
    size_t id = sizeof KEY_PREFIX - 1 + route.n + 1 + key.n;
    size_t tl = id + sizeof "}.tokens" - 1, sl = id + sizeof "}.timestamp" - 1;
    char *k = tl + sl <= KEYS_INLINE ? q->keys_inline : malloc(tl + sl);
    if (!k)
        return -ENOMEM;
    char *o = k;
    for (int i = 0; i < 2; i++) {
        const char *suffix = i == 0 ? "}.tokens" : "}.timestamp";
        memcpy(o, KEY_PREFIX, sizeof KEY_PREFIX - 1);
        o += sizeof KEY_PREFIX - 1;
        if (route.n)
            memcpy(o, route.p, route.n);
        o += route.n;
        *o++ = '.';
        if (key.n)
            memcpy(o, key.p, key.n);
        o += key.n;
        memcpy(o, suffix, strlen(suffix));
        o += strlen(suffix);
    }
    r->free_list = q->next;
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->p = *p;
    q->prev = q->next = NULL;
    q->in_use = true;
    q->in_redis = q->retried = false;
    q->keys = k;
    q->tokens_len = tl;
    q->ts_len = sl;
    r->used++;
    int rc = send_check(r, q);
    if (rc) {
        q->cb = NULL;
        slot_release(r, q);
        INC(r->st.unavailable);
        return rc;
    }
    INC(r->st.checks);
    atomic_store_explicit(&r->st.inflight, r->used, memory_order_relaxed);
    q->deadline = now_ms() + r->o.timeout_ms;
    q->prev = r->wait_tail;
    if (r->wait_tail)
        r->wait_tail->next = q;
    else
        r->wait_head = q;
    r->wait_tail = q;
    if (r->wait_head == q)
        uv_timer_start(&r->req_timer, on_req_timer, r->o.timeout_ms, 0);
    /* else the timer is due no later than this check's deadline */
    if (handle)
        *handle = q;
    return 0;
}

void mg_rl_redis_cancel(mg_rl_redis_req_t *q)
{
    if (q && q->cb) {
        q->cb = NULL;
        wait_remove(q->r, q);
    }
}

/* ---- life cycle ---- */

static bool numeric_host(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

int mg_rl_redis_new(uv_loop_t *loop, const mg_rl_redis_opts_t *opts, mg_rl_redis_t **out)
{
    mg_rl_redis_opts_t o = *opts;
    if (!o.host || !o.host[0] || strcmp(o.host, "localhost") == 0)
        o.host = "127.0.0.1";
    if (!numeric_host(o.host) || strlen(o.host) >= 64)
        return MG_ECONFIG;
    if (!o.port)
        o.port = 6379;
    if (!o.timeout_ms)
        o.timeout_ms = 50;
    if (!o.max_inflight)
        o.max_inflight = 1024;
    if (!o.backoff_min_ms)
        o.backoff_min_ms = 100;
    if (!o.backoff_max_ms)
        o.backoff_max_ms = 5000;
    if (o.backoff_max_ms < o.backoff_min_ms)
        o.backoff_max_ms = o.backoff_min_ms;
    if (!o.connect_timeout_ms)
        o.connect_timeout_ms = 1000;
    if (!o.dead_after_ms)
        o.dead_after_ms = o.timeout_ms * 20 > 1000 ? o.timeout_ms * 20 : 1000;
    if (!o.warn_interval_ms)
        o.warn_interval_ms = 10000;

    mg_rl_redis_t *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->slots = calloc(o.max_inflight, sizeof *r->slots);
    if (!r->slots) {
        free(r);
        return -ENOMEM;
    }
    for (uint32_t i = o.max_inflight; i-- > 0;) {
        r->slots[i].next = r->free_list;
        r->free_list = &r->slots[i];
    }
    r->loop = loop;
    r->o = o;
    snprintf(r->host, sizeof r->host, "%s", o.host);
    r->o.host = r->host;
    r->backoff_ms = o.backoff_min_ms;
    r->rng = (uint64_t)(uintptr_t)r ^ uv_hrtime() ^ 0x9e3779b97f4a7c15ULL;
    if (!r->rng)
        r->rng = 1;
    uv_timer_init(loop, &r->req_timer);
    uv_timer_init(loop, &r->conn_timer);
    r->req_timer.data = r->conn_timer.data = r;
    r->open_handles = 2;
    start_connect(r);
    *out = r;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    mg_rl_redis_t *r = h->data;
    if (--r->open_handles == 0) {
        for (uint32_t i = 0; i < r->o.max_inflight; i++)
            if (r->slots[i].keys && r->slots[i].keys != r->slots[i].keys_inline)
                free(r->slots[i].keys);
        free(r->slots);
        free(r);
    }
}

void mg_rl_redis_close(mg_rl_redis_t *r)
{
    if (!r || r->closing)
        return;
    r->closing = true;
    uv_timer_stop(&r->req_timer);
    uv_timer_stop(&r->conn_timer);
    drop_connection(r); /* every in-redis check completes with UV_ECANCELED */
    static const mg_rl_redis_reply_t cancelled = { .status = UV_ECANCELED, .result = { .remaining = -1 } };
    while (r->wait_head) /* none expected: only in-redis checks wait */
        complete(r, r->wait_head, &cancelled);
    uv_close((uv_handle_t *)&r->req_timer, on_handle_closed);
    uv_close((uv_handle_t *)&r->conn_timer, on_handle_closed);
}

void mg_rl_redis_stats(const mg_rl_redis_t *r, mg_rl_redis_stats_t *out)
{
#define LD(x) atomic_load_explicit(&r->st.x, memory_order_relaxed)
    out->checks = LD(checks);
    out->decided = LD(decided);
    out->timeouts = LD(timeouts);
    out->errors = LD(errors);
    out->unavailable = LD(unavailable);
    out->overflow = LD(overflow);
    out->noscript = LD(noscript);
    out->connects = LD(connects);
    out->disconnects = LD(disconnects);
    out->inflight = LD(inflight);
    out->connected = LD(connected);
#undef LD
}
