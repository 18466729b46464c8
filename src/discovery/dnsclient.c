/* dnsclient: the query layer of DNS discovery (see dnsclient.h).
 *
 * A query (dq_t) owns a timer (the per-try timeout) and, during a try, a
 * transport (xp_t: a connected UDP socket, or a TCP connection after a
 * truncated answer). A transport is detached from its query when the try
 * ends and freed in its close callback; the query is freed in its timer's
 * close callback. The client is freed when its last handle has closed
 * after mg_dnsc_stop(). */
#include "discovery/dnsclient.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/err.h"

typedef struct dq dq_t;

typedef struct xp {
    union {
        uv_handle_t h;
        uv_udp_t udp;
        uv_tcp_t tcp;
    } u;
    dq_t *q; /* NULL once detached */
    mg_dnsc_t *c;
    uv_connect_t conn;
    uv_write_t wr;
    uint8_t *buf; /* TCP: 2-byte length + message */
    size_t blen;
    uint8_t out[2 + 512];
    size_t outlen;
} xp_t;

struct dq {
    mg_dnsc_t *c;
    mg_dnsq_cb cb; /* NULL once cancelled: the result is dropped */
    void *ud;
    uintptr_t tag;
    char name[MG_DNS_MAX_NAME + 1];
    uint16_t qtype, id;
    unsigned try_, ntries, server;
    bool started, done;
    uv_timer_t timer;
    xp_t *xp;
    const char *last;
    dq_t *prev, *next; /* the inflight list or the wait queue */
};

struct mg_dnsc {
    uv_loop_t *loop;
    mg_dnssrc_stats_t *st;
    struct sockaddr_storage servers[MG_DNSC_MAX_SERVERS];
    size_t nservers;
    uint32_t timeout_ms, attempts;
    dq_t *inflight;
    size_t ninflight;
    dq_t *qhead, *qtail;
    size_t nqueued;
    bool stopping;
    int nopen;
    void (*on_closed)(void *ud);
    void *closed_ud;
    mg_dns_answer_t ans; /* parse scratch (one thread) */
    uint8_t rbuf[65536]; /* UDP receive scratch */
};

static uint16_t rand16(void)
{
    uint16_t x;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) == (ssize_t)sizeof x) return x;
    static uint32_t s;
    if (!s) s = (uint32_t)time(NULL) ^ 0x9e3779b9u;
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return (uint16_t)s;
}

static bool same_server(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (!b || a->ss_family != b->sa_family) return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
}

static void dq_try(dq_t *q);
static void dq_start(dq_t *q);

static void maybe_free(mg_dnsc_t *c)
{
    if (!c->stopping || c->nopen > 0) return;
    void (*cb)(void *) = c->on_closed;
    void *ud = c->closed_ud;
    free(c);
    if (cb) cb(ud);
}

static void list_unlink(dq_t **head, dq_t *q)
{
    if (q->prev) q->prev->next = q->next;
    else *head = q->next;
    if (q->next) q->next->prev = q->prev;
    q->prev = q->next = NULL;
}

static void xp_closed(uv_handle_t *h)
{
    xp_t *x = h->data;
    mg_dnsc_t *c = x->c;
    free(x->buf);
    free(x);
    c->nopen--;
    maybe_free(c);
}

static void xp_close(dq_t *q)
{
    xp_t *x = q->xp;
    if (!x) return;
    q->xp = NULL;
    x->q = NULL;
    uv_close(&x->u.h, xp_closed);
}

static void dq_closed(uv_handle_t *h)
{
    dq_t *q = h->data;
    mg_dnsc_t *c = q->c;
    free(q);
    c->nopen--;
    maybe_free(c);
}

/* Ends a query: its handles close, the next waiting query starts. */
static void dq_finish(dq_t *q)
{
    mg_dnsc_t *c = q->c;
    if (q->done) return;
    q->done = true;
    xp_close(q);
    uv_timer_stop(&q->timer);
    if (q->started) {
        list_unlink(&c->inflight, q);
        c->ninflight--;
    } else {
        if (c->qtail == q) c->qtail = q->prev;
        list_unlink(&c->qhead, q);
        c->nqueued--;
    }
    uv_close((uv_handle_t *)&q->timer, dq_closed);
    while (!c->stopping && c->qhead && c->ninflight < MG_DNSC_MAX_INFLIGHT) {
        dq_t *n = c->qhead;
        if (c->qtail == n) c->qtail = NULL;
        list_unlink(&c->qhead, n);
        c->nqueued--;
        dq_start(n);
    }
}

static void dq_complete(dq_t *q, mg_dnsq_res_t res, const mg_dns_answer_t *ans)
{
    mg_dnsq_cb cb = q->cb;
    q->cb = NULL;
    if (cb) cb(q->ud, q->tag, res, ans, q->last);
    dq_finish(q);
}

static void next_try(dq_t *q)
{
    xp_close(q);
    uv_timer_stop(&q->timer);
    dq_try(q);
}

static void on_timeout(uv_timer_t *t)
{
    dq_t *q = t->data;
    q->c->st->timeouts++;
    q->last = "timeout";
    next_try(q);
}

static void handle_response(dq_t *q, const uint8_t *msg, size_t len, bool tcp);

static void udp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    xp_t *x = h->data;
    *buf = uv_buf_init((char *)x->c->rbuf, sizeof x->c->rbuf);
}

static void on_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                        unsigned flags)
{
    xp_t *x = h->data;
    dq_t *q = x->q;
    if (!q || (nread == 0 && !from)) return;
    if (nread < 0) { /* e.g. ECONNREFUSED from an ICMP port unreachable */
        q->c->st->malformed++;
        q->last = "socket error";
        next_try(q);
        return;
    }
    /* the socket is connected, so the kernel already filters; check anyway */
    if (from && !same_server(&q->c->servers[q->server], from)) {
        q->c->st->mismatched++;
        return;
    }
    if (flags & UV_UDP_PARTIAL) {
        q->c->st->malformed++;
        q->last = "malformed";
        next_try(q);
        return;
    }
    handle_response(q, (const uint8_t *)buf->base, (size_t)nread, false);
}

static void tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    xp_t *x = h->data;
    *buf = uv_buf_init((char *)x->buf + x->blen, (unsigned)(2 + MG_DNS_MAX_MSG - x->blen));
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    xp_t *x = s->data;
    dq_t *q = x->q;
    if (!q) return;
    if (nread < 0) { /* EOF or error before a whole message (a full buffer reads as ENOBUFS) */
        q->c->st->malformed++;
        q->last = "tcp closed";
        next_try(q);
        return;
    }
    x->blen += (size_t)nread;
    if (x->blen < 2) return;
    size_t need = (size_t)x->buf[0] << 8 | x->buf[1];
    if (x->blen < 2 + need) return;
    handle_response(q, x->buf + 2, need, true);
}

static void on_tcp_write(uv_write_t *w, int status)
{
    xp_t *x = w->data;
    dq_t *q = x->q;
    if (!q || status == 0) return;
    q->c->st->malformed++;
    q->last = "tcp write error";
    next_try(q);
}

static void on_tcp_connect(uv_connect_t *cr, int status)
{
    xp_t *x = cr->data;
    dq_t *q = x->q;
    if (!q) return;
    if (status < 0) {
        q->c->st->malformed++;
        q->last = "tcp connect error";
        next_try(q);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)x->out, (unsigned)x->outlen);
    x->wr.data = x;
    int rc = uv_write(&x->wr, (uv_stream_t *)&x->u.tcp, &b, 1, on_tcp_write);
    if (rc == 0) rc = uv_read_start((uv_stream_t *)&x->u.tcp, tcp_alloc, on_tcp_read);
    if (rc) {
        q->last = "tcp error";
        next_try(q);
    }
}

static xp_t *xp_new(dq_t *q, bool tcp)
{
    xp_t *x = calloc(1, sizeof *x);
    if (!x) return NULL;
    x->q = q;
    x->c = q->c;
    int rc = tcp ? uv_tcp_init(q->c->loop, &x->u.tcp) : uv_udp_init(q->c->loop, &x->u.udp);
    if (rc) {
        free(x);
        return NULL;
    }
    x->u.h.data = x;
    x->conn.data = x;
    q->c->nopen++;
    q->xp = x;
    return x;
}

/* Ask again over TCP, same server, same try (the answer was truncated). */
static void tcp_retry(dq_t *q)
{
    mg_dnsc_t *c = q->c;
    xp_close(q);
    uv_timer_stop(&q->timer);
    xp_t *x = xp_new(q, true);
    if (!x) {
        q->last = "out of memory";
        dq_try(q);
        return;
    }
    q->id = rand16();
    int n = mg_dns_query(x->out + 2, sizeof x->out - 2, q->id, q->name, q->qtype);
    if (n < 0 || !(x->buf = malloc(2 + MG_DNS_MAX_MSG))) {
        q->last = n < 0 ? "bad name" : "out of memory";
        next_try(q);
        return;
    }
    x->out[0] = (uint8_t)(n >> 8);
    x->out[1] = (uint8_t)n;
    x->outlen = 2 + (size_t)n;
    c->st->queries++;
    int rc = uv_tcp_connect(&x->conn, &x->u.tcp, (const struct sockaddr *)&c->servers[q->server], on_tcp_connect);
    if (rc) {
        q->last = "tcp connect error";
        next_try(q);
        return;
    }
    uv_timer_start(&q->timer, on_timeout, c->timeout_ms, 0);
}

static void handle_response(dq_t *q, const uint8_t *msg, size_t len, bool tcp)
{
    mg_dnsc_t *c = q->c;
    bool mismatch = false;
    if (mg_dns_parse(msg, len, q->id, q->name, q->qtype, &c->ans, &mismatch) != 0) {
        if (mismatch && !tcp) { /* someone else's packet: keep waiting for ours */
            c->st->mismatched++;
            return;
        }
        c->st->malformed++;
        q->last = "malformed";
        next_try(q);
        return;
    }
    c->st->answers++;
    switch (c->ans.status) {
    case MG_DNS_TRUNCATED:
        c->st->truncated++;
        if (tcp) {
            q->last = "truncated over tcp";
            next_try(q);
        } else {
            tcp_retry(q);
        }
        return;
    case MG_DNS_SERVFAIL:
    case MG_DNS_REFUSED:
        c->st->servfail++;
        q->last = mg_dns_status_name(c->ans.status);
        next_try(q);
        return;
    case MG_DNS_NXDOMAIN:
    case MG_DNS_NODATA:
        if (c->ans.status == MG_DNS_NXDOMAIN) c->st->nxdomain++;
        else c->st->nodata++;
        q->last = mg_dns_status_name(c->ans.status);
        dq_complete(q, MG_DNSQ_EMPTY, &c->ans);
        return;
    case MG_DNS_OK:
        q->last = "ok";
        dq_complete(q, MG_DNSQ_OK, &c->ans);
        return;
    }
}

/* The next try: the next resolver, a new socket, a new ID; a failure
 * once the tries are spent. */
static void dq_try(dq_t *q)
{
    mg_dnsc_t *c = q->c;
    while (q->try_ < q->ntries) {
        q->server = q->try_ % (unsigned)c->nservers;
        q->try_++;
        xp_t *x = xp_new(q, false);
        if (!x) {
            q->last = "out of memory";
            continue;
        }
        q->id = rand16();
        int n = mg_dns_query(x->out, sizeof x->out, q->id, q->name, q->qtype);
        if (n < 0) { /* checked at submit; cannot happen */
            q->last = "bad name";
            xp_close(q);
            break;
        }
        const struct sockaddr *sa = (const struct sockaddr *)&c->servers[q->server];
        uv_buf_t b = uv_buf_init((char *)x->out, (unsigned)n);
        int rc = uv_udp_connect(&x->u.udp, sa);
        if (rc == 0) rc = uv_udp_recv_start(&x->u.udp, udp_alloc, on_udp_recv);
        if (rc == 0) rc = uv_udp_try_send(&x->u.udp, &b, 1, NULL);
        c->st->queries++;
        if (rc < 0) {
            c->st->malformed++;
            q->last = "send error";
            xp_close(q);
            continue;
        }
        uv_timer_start(&q->timer, on_timeout, c->timeout_ms, 0);
        return;
    }
    dq_complete(q, MG_DNSQ_FAIL, NULL);
}

static void dq_start(dq_t *q)
{
    mg_dnsc_t *c = q->c;
    q->started = true;
    q->prev = NULL;
    q->next = c->inflight;
    if (c->inflight) c->inflight->prev = q;
    c->inflight = q;
    c->ninflight++;
    dq_try(q);
}

int mg_dnsc_submit(mg_dnsc_t *c, const char *name, uint16_t qtype, mg_dnsq_cb cb, void *ud, uintptr_t tag)
{
    uint8_t probe[512];
    if (c->stopping) return -ECANCELED;
    if (mg_dns_query(probe, sizeof probe, 0, name, qtype) < 0) return MG_EPARSE;
    if (c->ninflight >= MG_DNSC_MAX_INFLIGHT && c->nqueued >= MG_DNSC_MAX_QUEUED) {
        c->st->queue_full++;
        return MG_ELIMIT;
    }
    dq_t *q = calloc(1, sizeof *q);
    if (!q) return -ENOMEM;
    q->c = c;
    q->cb = cb;
    q->ud = ud;
    q->tag = tag;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->qtype = qtype;
    q->ntries = c->attempts * (unsigned)c->nservers;
    q->last = "pending";
    uv_timer_init(c->loop, &q->timer);
    q->timer.data = q;
    c->nopen++;
    if (c->ninflight < MG_DNSC_MAX_INFLIGHT) {
        dq_start(q);
        return 0;
    }
    q->prev = c->qtail;
    q->next = NULL;
    if (c->qtail) c->qtail->next = q;
    else c->qhead = q;
    c->qtail = q;
    c->nqueued++;
    return 0;
}

void mg_dnsc_cancel(mg_dnsc_t *c, const void *ud)
{
    for (dq_t *q = c->inflight; q; q = q->next)
        if (q->ud == ud) q->cb = NULL;
    for (dq_t *q = c->qhead; q; q = q->next)
        if (q->ud == ud) q->cb = NULL;
}

mg_dnsc_t *mg_dnsc_new(uv_loop_t *loop, mg_dnssrc_stats_t *st)
{
    mg_dnsc_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->st = st;
    c->timeout_ms = 1000;
    c->attempts = 2;
    c->nservers = 1;
    struct sockaddr_in *s = (void *)&c->servers[0];
    s->sin_family = AF_INET;
    s->sin_port = htons(53);
    s->sin_addr.s_addr = htonl(0x7f000001);
    return c;
}

void mg_dnsc_configure(mg_dnsc_t *c, const struct sockaddr_storage *servers, size_t n, uint32_t timeout_ms,
                       uint32_t attempts)
{
    if (n > MG_DNSC_MAX_SERVERS) n = MG_DNSC_MAX_SERVERS;
    if (n) {
        memcpy(c->servers, servers, n * sizeof *servers);
        c->nservers = n;
    }
    c->timeout_ms = timeout_ms ? timeout_ms : 1000;
    c->attempts = attempts ? attempts : 1;
}

size_t mg_dnsc_inflight(const mg_dnsc_t *c) { return c->ninflight; }
size_t mg_dnsc_queued(const mg_dnsc_t *c) { return c->nqueued; }

void mg_dnsc_stop(mg_dnsc_t *c, void (*on_closed)(void *ud), void *ud)
{
    if (c->stopping) return;
    c->stopping = true;
    c->on_closed = on_closed;
    c->closed_ud = ud;
    while (c->inflight) {
        c->inflight->cb = NULL;
        dq_finish(c->inflight);
    }
    while (c->qhead) {
        c->qhead->cb = NULL;
        dq_finish(c->qhead);
    }
    maybe_free(c);
}
