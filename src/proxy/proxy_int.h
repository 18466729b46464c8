/* proxy_int: the structs shared by the files of the proxy module only
 * (worker.c, session.c, exchange.c, pool.c). Everything here is owned by
 * one worker thread and touched by no other thread, except the fields
 * marked atomic. */
#ifndef MG_PROXY_PROXY_INT_H
#define MG_PROXY_PROXY_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "core/json.h"
#include "filter/filter.h"
#include "http/http1.h"
#include "obs/accesslog.h"
#include "proxy/proxy.h"
#include "ratelimit/limiter.h"

#define MG_RBUF_SIZE 16384   /* per connection read buffer, grows for big heads */
#define MG_PIPE_IOV 64       /* iovecs per forwarded batch */
#define MG_ARENA_LIMIT (256 * 1024) /* per-request filter memory */

typedef struct mg_worker mg_worker_t;
typedef struct mg_session mg_session_t;
typedef struct mg_upconn mg_upconn_t;

/* A worker's view of one snapshot: the per-worker state that belongs to
 * that config generation (round-robin cursors) and how many requests of
 * this worker still run on it. Freed, and the snapshot unref'd, once it is
 * neither current nor in use. */
typedef struct mg_wsnap {
    mg_snapshot_t *snap;
    uint32_t inflight;
    uint32_t *rr; /* [clusters.n] */
    struct mg_wsnap *next;
} mg_wsnap_t;

/* Per worker, per endpoint (indexed by mg_ep_stats_t.index). */
typedef struct {
    mg_upconn_t *idle; /* LIFO list of idle connections */
    uint32_t nidle;
    uint32_t nactive;  /* requests in flight to this endpoint, for least_request */
    mg_session_t *waiters; /* FIFO of sessions waiting for a connection slot */
    bool unused;       /* no cluster of the current snapshot has this endpoint:
                        * a connection released to it is closed, not pooled */
} mg_pool_t;

struct mg_worker {
    uint32_t id;
    mg_server_t *srv;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t wake;       /* new snapshot or drain requested */
    uv_timer_t drain_timer;
    uv_timer_t flush_timer; /* access log flush */
    uv_tcp_t *listeners;
    int *listen_fds;
    size_t nlisteners;

    mg_wsnap_t *cur;     /* current snapshot view */
    mg_wsnap_t *retired; /* older views with requests still in flight */
    uint64_t cur_gen;

    mg_pool_t *pools;
    uint32_t npools;

    mg_session_t *sessions; /* intrusive list of open sessions */
    uint32_t nsessions;
    bool draining;
    uint64_t rng;
    mg_alog_worker_t alog;
    mg_rl_redis_t *rl_redis; /* this worker's Redis client (rate limits), or NULL */

    /* counters (this worker only) */
    uint64_t accepted, rejected_conns, requests;
};

typedef enum { RQ_IDLE, RQ_HEAD, RQ_BODY, RQ_DONE } mg_rq_state_t;
typedef enum { RS_NONE, RS_CONNECT, RS_WAIT, RS_BODY, RS_DONE } mg_rs_state_t;
typedef enum { ST_NONE, ST_IDLE, ST_HEADER, ST_BODY, ST_SEND, ST_RETRY, ST_CONNWAIT } mg_stimer_t;
typedef enum { UT_NONE, UT_CONNECT, UT_RESPONSE, UT_BODY, UT_IDLE } mg_utimer_t;

/* Frames one direction's body: decodes the inbound framing and re-encodes
 * it canonically for the other side. */
typedef struct {
    mg_body_kind_t in;
    uint64_t remaining; /* MG_BODY_LENGTH: bytes left */
    uint64_t payload;   /* body bytes forwarded so far */
    mg_chunked_t ch;
    bool out_chunked;   /* re-encode as chunked */
    bool done;
    char sz[MG_PIPE_IOV / 3 + 1][20]; /* chunk-size lines in flight */
} mg_pipe_t;

struct mg_upconn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t timer;
    uv_write_t wreq;
    mg_worker_t *w;
    mg_ep_stats_t *ep;
    mg_session_t *owner; /* NULL while idle in the pool */
    mg_upconn_t *next_idle, *prev_idle;
    char *rbuf;
    size_t rpos, rlen, rcap;
    mg_utimer_t tstate;
    uint64_t deadline, armed; /* lazy timer (loop ms); 0 = none */
    uint32_t served;          /* exchanges completed on this connection */
    mg_bulkhead_t *bh;        /* counted in this bulkhead's connections (until closed) */
    mg_resil_ref_t *bh_ref;   /* keeps bh alive while this connection lives */
    bool connected, in_pool, reading, closing, reused;
    int open_handles;
};

struct mg_session {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    uv_write_t wreq100;
    uv_shutdown_t sreq;
    mg_worker_t *w;
    mg_session_t *prev, *next;
    char peer[48]; /* client IP text, for X-Forwarded-For and the log */
    struct sockaddr_storage peer_addr;

    char *rbuf; /* client bytes: [rpos, rlen) unconsumed */
    size_t rpos, rlen, rcap;
    mg_buf_t hbuf; /* head going to the client */
    mg_buf_t ubuf; /* head going upstream (kept for a retry) */

    mg_http_msg_t req;
    mg_http_msg_t resp;
    mg_arena_t *arena;     /* per request: filter views; reset at each request */
    mg_req_view_t view;    /* the request as routed and filtered */
    mg_resp_view_t rview;  /* the response head after response filters */
    uint64_t max_body;     /* effective body limit (global, RequestSize) */
    const mg_rl_limiter_t *rl;     /* the route's rate limiter, or NULL */
    mg_rl_verdict_t rl_v;          /* its verdict (headers for the response) */
    mg_rl_redis_req_t *rl_handle;  /* a Redis decision in flight */
    char rl_key[MG_RL_KEY_BUF];
    /* resilience, per exchange */
    mg_cluster_rt_t *crt;  /* the cluster's breaker/bulkhead/budget/outlier */
    mg_breaker_t *cb;      /* breaker permit held by the current attempt */
    uint32_t cb_ticket;
    mg_bulkhead_t *bh;     /* bulkhead entered (left when the exchange ends) */
    uint32_t ep_idx, avoid_ep;
    uint32_t attempts, retries, fallback_depth, last_backoff;
    bool in_retry;         /* holds a retry-budget slot */
    bool bh_pending;       /* counted as pending (waiting for a connection) */
    bool body_buffered;    /* the whole body sits in rbuf from body_start: replayable */
    size_t body_start;
    mg_session_t *wait_next;         /* in a pool's waiters list */
    const mg_endpoint_t *wait_ep;    /* ... of this endpoint */
    uint64_t wait_deadline;
    uint64_t t_attempt, deadline_ms;
    mg_rq_state_t rq;
    mg_rs_state_t rs;
    mg_stimer_t tstate;
    uint64_t deadline, armed; /* lazy timer (loop ms); 0 = none */
    mg_pipe_t reqp, resp_pipe;

    /* the exchange in progress */
    bool exchange, keepalive, client_eof, closing, reading, in_process, counted;
    bool cw_pending, uw_pending; /* a write to client / upstream is queued */
    bool up_reusable, resp_started, retried;
    size_t cw_consume, uw_consume; /* source bytes to consume once the write completes */
    mg_upconn_t *up;
    mg_wsnap_t *ws;
    const mg_route_t *route;
    const mg_endpoint_t *ep;
    uint32_t ep_index;
    uint64_t t_start;
    uint32_t response_timeout_ms; /* cluster's, else global */
    uint64_t bytes_in, bytes_out;
    int status;
    char log_method[16];
    char log_path[256];
    int open_handles;
};

/* worker.c */
bool mg_server_conn_enter(mg_server_t *srv); /* false: max_connections reached */
void mg_server_conn_leave(mg_server_t *srv);
mg_pool_t *mg_worker_pool(mg_worker_t *w, uint32_t ep_index);
void mg_worker_session_closed(mg_worker_t *w, mg_session_t *s);
void mg_wsnap_release(mg_worker_t *w, mg_wsnap_t *ws);

/* session.c */
void mg_session_accept(mg_worker_t *w, uv_stream_t *server);
void mg_session_close(mg_session_t *s);
void mg_session_drain(mg_session_t *s);
void mg_session_process(mg_session_t *s);
void mg_session_read(mg_session_t *s, bool on);
void mg_session_timer(mg_session_t *s, mg_stimer_t t, uint64_t ms);
void mg_session_local_reply(mg_session_t *s, int status, const char *msg, bool close);
/* Same with extra headers (e.g. Location); msg NULL sends an empty body. */
void mg_session_local_reply_h(mg_session_t *s, int status, const char *msg, bool close, const mg_hdr_list_t *extra);
const char *mg_reason_phrase(int status);
/* A full response from meshgate: status, "Name: value" header lines, body. */
void mg_session_respond(mg_session_t *s, int status, const char *const *hdr_lines, size_t nhdr, const char *body,
                        size_t blen);
int mg_session_client_send(mg_session_t *s, uv_buf_t *bufs, unsigned n, size_t consume);
int mg_stream_send(uv_stream_t *st, uv_write_t *wr, uv_buf_t *bufs, unsigned n, uv_write_cb cb);
void mg_session_finish(mg_session_t *s);

/* exchange.c */
void mg_exchange_start(mg_session_t *s, size_t head_len);
void mg_exchange_up_ready(mg_session_t *s, int status);
void mg_exchange_up_data(mg_session_t *s);
void mg_exchange_up_eof(mg_session_t *s, int err);
void mg_exchange_up_timeout(mg_session_t *s, mg_utimer_t which);
void mg_exchange_forward_request(mg_session_t *s);
void mg_exchange_forward_response(mg_session_t *s);
void mg_exchange_detach(mg_session_t *s, bool reuse);
void mg_exchange_release(mg_session_t *s);     /* exchange over: breaker, bulkhead, budget */
void mg_exchange_retry_timer(mg_session_t *s); /* ST_RETRY fired */
ssize_t mg_pipe_take(mg_pipe_t *p, const char *src, size_t n, uv_buf_t *iov, unsigned max, unsigned *niov);
void mg_exchange_up_written(mg_session_t *s, int status);

/* pool.c */
/* Get a connection to ep for s: an idle pooled one (s is told at once via
 * mg_exchange_up_ready) or a new one (told when connected or failed). */
void mg_pool_acquire(mg_worker_t *w, mg_session_t *s, const mg_endpoint_t *ep, bool fresh);
void mg_pool_release(mg_upconn_t *up, bool reuse, uint32_t max_idle, uint64_t idle_ms);
void mg_upconn_close(mg_upconn_t *up);
void mg_upconn_timer(mg_upconn_t *up, mg_utimer_t t, uint64_t ms);
void mg_upconn_read(mg_upconn_t *up, bool on);
void mg_pool_close_all(mg_worker_t *w);
void mg_pool_cancel_wait(mg_session_t *s); /* leave a waiters list, if in one */
/* Answer 503 with x-meshgate-overflow for a bulkhead limit. */
void mg_exchange_overflow(mg_session_t *s, mg_overflow_t which);

#endif
