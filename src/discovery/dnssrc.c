/* dnssrc: DNS discovery on the control loop (see dnssrc.h).
 *
 * Three layers:
 *   - a query (dq_t): one question, tried up to attempts x resolvers times;
 *     each try has its own transport (xp_t: a connected UDP socket, or TCP
 *     after a truncated answer), a fresh random ID and the per-try timeout.
 *     At most MAX_INFLIGHT queries run at once; the rest wait in a bounded
 *     FIFO (refusals counted).
 *   - an entry: one dns: item of one cluster. A round asks A and/or AAAA
 *     (or SRV, then the targets' A/AAAA that the additional section did
 *     not carry), then publishes the new set and arms the next refresh.
 *   - the snapshot: the published sets, rebuilt lazily after a change.
 * Handles are freed only in their close callbacks; the source itself is
 * freed when the last one closes after mg_dnssrc_stop(). */
#include "discovery/dnssrc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/log.h"
#include "discovery/dns.h"

#define MAX_SERVERS 8
#define MAX_INFLIGHT 64       /* queries on the wire at once */
#define MAX_QUEUED 4096       /* queries waiting for a slot */
#define MAX_ADDRS 256         /* addresses kept per entry and family */
#define MAX_SRV_TARGETS 32    /* targets of the best SRV priority resolved per round */
#define HOSTS_REFRESH_MS 30000
#define HOSTS_MAX_BYTES (1u << 20)
#define MAX_BACKOFF_MS 60000

typedef enum { RES_NONE = 0, RES_OK, RES_EMPTY, RES_FAIL } res_t;
typedef enum { Q_A4, Q_A6, Q_SRV, Q_T4, Q_T6 } qkind_t;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t ttl;
    char *target; /* SRV target (owned) or NULL */
} addr_t;

typedef struct {
    addr_t *v;
    size_t n;
} alist_t;

typedef struct entry entry_t;
typedef struct dq dq_t;

typedef struct {
    char name[MG_DNS_MAX_NAME + 1];
    uint16_t port;
} target_t;

struct entry {
    mg_dnssrc_t *d;
    entry_t *next;
    char *cluster, *name;
    bool srv;
    uint16_t port;
    int family;
    uint32_t refresh_ms;
    uv_timer_t timer;
    bool keep; /* reconcile mark */
    /* published */
    alist_t cur4, cur6; /* SRV entries use cur4 for every address */
    bool resolved, stale, first_done, from_hosts;
    uint32_t fails;
    uint64_t next_at;
    const char *last; /* outcome of the last round, for the admin API */
    /* the running round */
    bool running;
    int outstanding;
    bool ask4, ask6, rfail, srv_empty, rlast_fail;
    res_t r4, r6;
    alist_t n4, n6;
    uint32_t rttl, nttl; /* smallest positive / negative TTL of the round */
    bool rttl_set, nttl_set;
    target_t *targets;
    size_t ntargets;
};

typedef struct xp {
    union {
        uv_handle_t h;
        uv_udp_t udp;
        uv_tcp_t tcp;
    } u;
    bool tcp;
    dq_t *q; /* NULL once detached */
    mg_dnssrc_t *d;
    uv_connect_t conn;
    uv_write_t wr;
    uint8_t *buf; /* TCP: 2-byte length + message */
    size_t blen;
    uint8_t out[2 + 512];
    size_t outlen;
} xp_t;

struct dq {
    mg_dnssrc_t *d;
    entry_t *e; /* NULL once the entry is gone: the result is dropped */
    qkind_t kind;
    size_t tidx; /* Q_T4/Q_T6: index into e->targets */
    char name[MG_DNS_MAX_NAME + 1];
    uint16_t qtype, id;
    unsigned try_, ntries, server;
    bool started, queued_fail, done;
    uv_timer_t timer;
    xp_t *xp;
    const char *last;
    dq_t *prev, *next; /* the inflight list or the wait queue */
};

struct mg_dnssrc {
    uv_loop_t *loop;
    mg_dnssrc_change_fn on_change;
    void *ud;
    entry_t *entries;
    size_t nentries;
    struct sockaddr_storage servers[MAX_SERVERS];
    size_t nservers;
    uint32_t timeout_ms, attempts, min_refresh_ms, max_refresh_ms;
    char *hosts_file; /* NULL = none */
    dq_t *inflight;
    size_t ninflight;
    dq_t *qhead, *qtail;
    size_t nqueued;
    mg_dnssrc_stats_t st;
    mg_dns_snapshot_t *snap;
    bool dirty;
    bool stopping;
    int nopen;
    mg_dns_answer_t ans;     /* parse scratch (one thread) */
    uint8_t rbuf[65536];     /* UDP receive scratch */
};

/* ---- small helpers ---- */

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

static void alist_free(alist_t *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].target);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int addr_cmp(const void *pa, const void *pb)
{
    const addr_t *a = pa, *b = pb;
    if (a->addr.ss_family != b->addr.ss_family) return a->addr.ss_family < b->addr.ss_family ? -1 : 1;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
        int c = memcmp(&x->sin_addr, &y->sin_addr, 4);
        if (c) return c;
        return (int)ntohs(x->sin_port) - (int)ntohs(y->sin_port);
    }
    const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
    int c = memcmp(&x->sin6_addr, &y->sin6_addr, 16);
    if (c) return c;
    return (int)ntohs(x->sin6_port) - (int)ntohs(y->sin6_port);
}

/* Sort and drop repeated addresses (the first target name wins). */
static void alist_norm(alist_t *l)
{
    if (l->n < 2) return;
    qsort(l->v, l->n, sizeof *l->v, addr_cmp);
    size_t o = 1;
    for (size_t i = 1; i < l->n; i++) {
        if (addr_cmp(&l->v[i], &l->v[o - 1]) == 0) {
            free(l->v[i].target);
            continue;
        }
        l->v[o++] = l->v[i];
    }
    l->n = o;
}

static bool alist_same(const alist_t *a, const alist_t *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++)
        if (addr_cmp(&a->v[i], &b->v[i]) != 0) return false;
    return true;
}

/* Append one address (bytes of an A or AAAA record). */
static void alist_add(mg_dnssrc_t *d, alist_t *l, int af, const uint8_t *raw, uint16_t port, uint32_t ttl,
                      const char *target)
{
    if (l->n == MAX_ADDRS) return;
    if (l->n % 16 == 0) {
        addr_t *nv = realloc(l->v, (l->n + 16) * sizeof *nv);
        if (!nv) return;
        l->v = nv;
    }
    addr_t *a = &l->v[l->n];
    memset(a, 0, sizeof *a);
    if (af == AF_INET) {
        struct sockaddr_in *s = (void *)&a->addr;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, raw, 4);
        a->addrlen = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (void *)&a->addr;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, raw, 16);
        a->addrlen = sizeof *s;
    }
    a->ttl = ttl;
    if (target && !(a->target = strdup(target))) return;
    l->n++;
    (void)d;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        snprintf(out, n, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        const struct sockaddr_in *s = (const void *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        snprintf(out, n, "%s:%u", ip, ntohs(s->sin_port));
    }
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

static uint32_t clamp_ms(const mg_dnssrc_t *d, uint64_t ms)
{
    if (ms < d->min_refresh_ms) ms = d->min_refresh_ms;
    if (ms > d->max_refresh_ms) ms = d->max_refresh_ms;
    return (uint32_t)ms;
}

/* ---- hosts file ---- */

/* Addresses of name in the hosts file (the wanted families) appended to
 * l4/l6. Returns how many were found. Read on every lookup: the file is
 * small and this runs on the control thread, at most once per refresh. */
static size_t hosts_lookup(mg_dnssrc_t *d, const char *name, bool want4, bool want6, uint16_t port,
                           const char *target, alist_t *l4, alist_t *l6)
{
    if (!d->hosts_file) return 0;
    FILE *f = fopen(d->hosts_file, "r");
    if (!f) return 0;
    char line[1024];
    size_t found = 0, read = 0;
    while (fgets(line, sizeof line, f) && read < HOSTS_MAX_BYTES) {
        read += strlen(line);
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL, *ip = strtok_r(line, " \t\r\n", &save);
        if (!ip) continue;
        uint8_t raw[16];
        int af = inet_pton(AF_INET, ip, raw) == 1 ? AF_INET : inet_pton(AF_INET6, ip, raw) == 1 ? AF_INET6 : 0;
        if (!af || (af == AF_INET && !want4) || (af == AF_INET6 && !want6)) continue;
        for (char *h; (h = strtok_r(NULL, " \t\r\n", &save));) {
            if (!mg_dns_name_eq(h, name)) continue;
            alist_add(d, af == AF_INET ? l4 : l6, af, raw, port, 0, target);
            found++;
            break;
        }
    }
    fclose(f);
    if (found) d->st.hosts_hits++;
    return found;
}

/* ---- queries ---- */

static void dq_try(dq_t *q);
static void dq_complete(dq_t *q, res_t res, const mg_dns_answer_t *ans);
static void entry_query_done(entry_t *e, dq_t *q, res_t res, const mg_dns_answer_t *ans);
static void maybe_free(mg_dnssrc_t *d);

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
    mg_dnssrc_t *d = x->d;
    free(x->buf);
    free(x);
    d->nopen--;
    maybe_free(d);
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
    mg_dnssrc_t *d = q->d;
    free(q);
    d->nopen--;
    maybe_free(d);
}

static void dq_start(dq_t *q);

/* Ends a query: its handles close, the next waiting query starts. */
static void dq_finish(dq_t *q)
{
    mg_dnssrc_t *d = q->d;
    if (q->done) return;
    q->done = true;
    xp_close(q);
    uv_timer_stop(&q->timer);
    if (q->started) {
        list_unlink(&d->inflight, q);
        d->ninflight--;
    } else {
        dq_t *p = q->prev;
        if (d->qtail == q) d->qtail = p;
        list_unlink(&d->qhead, q);
        d->nqueued--;
    }
    uv_close((uv_handle_t *)&q->timer, dq_closed);
    while (!d->stopping && d->qhead && d->ninflight < MAX_INFLIGHT) {
        dq_t *n = d->qhead;
        if (d->qtail == n) d->qtail = NULL;
        list_unlink(&d->qhead, n);
        d->nqueued--;
        dq_start(n);
    }
}

static void dq_complete(dq_t *q, res_t res, const mg_dns_answer_t *ans)
{
    entry_t *e = q->e;
    q->e = NULL;
    if (e) entry_query_done(e, q, res, ans);
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
    if (q->queued_fail) {
        q->last = "queue full";
        dq_complete(q, RES_FAIL, NULL);
        return;
    }
    q->d->st.timeouts++;
    q->last = "timeout";
    next_try(q);
}

static void handle_response(dq_t *q, const uint8_t *msg, size_t len, bool tcp);

static void udp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    xp_t *x = h->data;
    *buf = uv_buf_init((char *)x->d->rbuf, sizeof x->d->rbuf);
}

static void on_udp_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
                        unsigned flags)
{
    xp_t *x = h->data;
    dq_t *q = x->q;
    if (!q || (nread == 0 && !from)) return;
    if (nread < 0) { /* e.g. ECONNREFUSED from an ICMP port unreachable */
        q->d->st.malformed++;
        q->last = "socket error";
        next_try(q);
        return;
    }
    /* the socket is connected, so the kernel already filters; check anyway */
    if (from && !same_server(&q->d->servers[q->server], from)) {
        q->d->st.mismatched++;
        return;
    }
    if (flags & UV_UDP_PARTIAL) {
        q->d->st.malformed++;
        q->last = "malformed";
        next_try(q);
        return;
    }
    handle_response(q, (const uint8_t *)buf->base, (size_t)nread, false);
}

static void tcp_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    xp_t *x = h->data;
    size_t cap = 2 + MG_DNS_MAX_MSG;
    *buf = uv_buf_init((char *)x->buf + x->blen, (unsigned)(cap - x->blen));
}

static void on_tcp_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    xp_t *x = s->data;
    dq_t *q = x->q;
    if (!q) return;
    if (nread < 0) {
        q->d->st.malformed++;
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
    q->d->st.malformed++;
    q->last = "tcp write error";
    next_try(q);
}

static void on_tcp_connect(uv_connect_t *c, int status)
{
    xp_t *x = c->data;
    dq_t *q = x->q;
    if (!q) return;
    if (status < 0) {
        q->d->st.malformed++;
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
    x->d = q->d;
    x->tcp = tcp;
    int rc = tcp ? uv_tcp_init(q->d->loop, &x->u.tcp) : uv_udp_init(q->d->loop, &x->u.udp);
    if (rc) {
        free(x);
        return NULL;
    }
    x->u.h.data = x;
    x->conn.data = x;
    q->d->nopen++;
    q->xp = x;
    return x;
}

/* Ask again over TCP, same server, same try (the answer was truncated). */
static void tcp_retry(dq_t *q)
{
    mg_dnssrc_t *d = q->d;
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
        q->last = "bad name";
        dq_try(q);
        return;
    }
    x->out[0] = (uint8_t)(n >> 8);
    x->out[1] = (uint8_t)n;
    x->outlen = 2 + (size_t)n;
    d->st.queries++;
    int rc = uv_tcp_connect(&x->conn, &x->u.tcp, (const struct sockaddr *)&d->servers[q->server], on_tcp_connect);
    if (rc) {
        q->last = "tcp connect error";
        dq_try(q);
        return;
    }
    uv_timer_start(&q->timer, on_timeout, d->timeout_ms, 0);
}

static void handle_response(dq_t *q, const uint8_t *msg, size_t len, bool tcp)
{
    mg_dnssrc_t *d = q->d;
    bool mismatch = false;
    if (mg_dns_parse(msg, len, q->id, q->name, q->qtype, &d->ans, &mismatch) != 0) {
        if (mismatch && !tcp) { /* someone else's packet: keep waiting for ours */
            d->st.mismatched++;
            return;
        }
        d->st.malformed++;
        q->last = "malformed";
        next_try(q);
        return;
    }
    d->st.answers++;
    switch (d->ans.status) {
    case MG_DNS_TRUNCATED:
        d->st.truncated++;
        if (tcp) {
            q->last = "truncated over tcp";
            next_try(q);
        } else {
            tcp_retry(q);
        }
        return;
    case MG_DNS_SERVFAIL:
    case MG_DNS_REFUSED:
        d->st.servfail++;
        q->last = mg_dns_status_name(d->ans.status);
        next_try(q);
        return;
    case MG_DNS_NXDOMAIN:
        d->st.nxdomain++;
        q->last = "nxdomain";
        dq_complete(q, RES_EMPTY, &d->ans);
        return;
    case MG_DNS_NODATA:
        d->st.nodata++;
        q->last = "nodata";
        dq_complete(q, RES_EMPTY, &d->ans);
        return;
    case MG_DNS_OK:
        q->last = "ok";
        dq_complete(q, RES_OK, &d->ans);
        return;
    }
}

/* The next try: the next resolver, a new socket, a new ID. */
static void dq_try(dq_t *q)
{
    mg_dnssrc_t *d = q->d;
    while (q->try_ < q->ntries) {
        q->server = q->try_ % (unsigned)d->nservers;
        q->try_++;
        xp_t *x = xp_new(q, false);
        if (!x) {
            q->last = "out of memory";
            continue;
        }
        q->id = rand16();
        int n = mg_dns_query(x->out, sizeof x->out, q->id, q->name, q->qtype);
        if (n < 0) {
            q->last = "bad name";
            xp_close(q);
            break;
        }
        const struct sockaddr *sa = (const struct sockaddr *)&d->servers[q->server];
        uv_buf_t b = uv_buf_init((char *)x->out, (unsigned)n);
        int rc = uv_udp_connect(&x->u.udp, sa);
        if (rc == 0) rc = uv_udp_recv_start(&x->u.udp, udp_alloc, on_udp_recv);
        if (rc == 0) rc = uv_udp_try_send(&x->u.udp, &b, 1, NULL);
        d->st.queries++;
        if (rc < 0) {
            d->st.malformed++;
            q->last = "send error";
            xp_close(q);
            continue;
        }
        uv_timer_start(&q->timer, on_timeout, d->timeout_ms, 0);
        return;
    }
    dq_complete(q, RES_FAIL, NULL);
}

static void dq_start(dq_t *q)
{
    mg_dnssrc_t *d = q->d;
    q->started = true;
    q->prev = NULL;
    q->next = d->inflight;
    if (d->inflight) d->inflight->prev = q;
    d->inflight = q;
    d->ninflight++;
    dq_try(q);
}

/* New query for e; runs now, waits, or (queue full) fails on the next loop turn. */
static void dq_submit(entry_t *e, qkind_t kind, const char *name, size_t tidx)
{
    mg_dnssrc_t *d = e->d;
    dq_t *q = calloc(1, sizeof *q);
    if (!q) { /* as if the queue were full, but we have nothing to time: fail now-ish */
        d->st.queue_full++;
        e->outstanding--;
        e->rfail = true;
        return;
    }
    q->d = d;
    q->e = e;
    q->kind = kind;
    q->tidx = tidx;
    snprintf(q->name, sizeof q->name, "%s", name);
    q->qtype = kind == Q_SRV ? MG_DNS_T_SRV : kind == Q_A4 || kind == Q_T4 ? MG_DNS_T_A : MG_DNS_T_AAAA;
    q->ntries = d->attempts * (unsigned)d->nservers;
    q->last = "pending";
    uv_timer_init(d->loop, &q->timer);
    q->timer.data = q;
    d->nopen++;
    if (d->ninflight < MAX_INFLIGHT) {
        dq_start(q);
        return;
    }
    /* queued (dq_finish starts it), or refused when the queue is full */
    if (d->nqueued >= MAX_QUEUED) {
        d->st.queue_full++;
        q->queued_fail = true;
        q->started = true; /* so dq_finish unlinks it from the inflight list */
        q->prev = NULL;
        q->next = d->inflight;
        if (d->inflight) d->inflight->prev = q;
        d->inflight = q;
        d->ninflight++;
        uv_timer_start(&q->timer, on_timeout, 0, 0);
        return;
    }
    q->prev = d->qtail;
    q->next = NULL;
    if (d->qtail) d->qtail->next = q;
    else d->qhead = q;
    d->qtail = q;
    d->nqueued++;
}

/* ---- entries ---- */

static void on_entry_timer(uv_timer_t *t);

static void entry_arm(entry_t *e, uint32_t ms)
{
    e->next_at = uv_now(e->d->loop) + ms;
    uv_timer_start(&e->timer, on_entry_timer, ms, 0);
}

static void publish(entry_t *e, alist_t *cur, alist_t *nw, bool *changed)
{
    alist_norm(nw);
    if (!alist_same(cur, nw)) *changed = true;
    alist_free(cur);
    *cur = *nw;
    nw->v = NULL;
    nw->n = 0;
}

static void round_finish(entry_t *e)
{
    mg_dnssrc_t *d = e->d;
    e->running = false;
    bool changed = false, fail;
    size_t before = e->cur4.n + e->cur6.n;
    if (!e->srv) {
        fail = (e->ask4 && e->r4 == RES_FAIL) || (e->ask6 && e->r6 == RES_FAIL);
        if (e->ask4 && e->r4 != RES_FAIL) publish(e, &e->cur4, &e->n4, &changed);
        if (e->ask6 && e->r6 != RES_FAIL) publish(e, &e->cur6, &e->n6, &changed);
    } else {
        fail = e->rfail;
        if (!fail) publish(e, &e->cur4, &e->n4, &changed);
    }
    alist_free(&e->n4);
    alist_free(&e->n6);
    free(e->targets);
    e->targets = NULL;
    e->ntargets = 0;
    bool was_first = !e->first_done;
    e->first_done = true;
    uint32_t delay;
    if (fail) {
        e->fails++;
        e->stale = true;
        d->st.failures++;
        uint64_t b = (uint64_t)d->min_refresh_ms << (e->fails - 1 > 10 ? 10 : e->fails - 1);
        uint64_t cap = d->max_refresh_ms < MAX_BACKOFF_MS ? d->max_refresh_ms : MAX_BACKOFF_MS;
        delay = (uint32_t)(b > cap ? cap : b);
        if (e->fails == 1 || e->fails % 10 == 0)
            mg_warn("dns: cluster %s: %s %s: resolution failed (%s), keeping %zu known address%s; retry in %u ms",
                    e->cluster, e->srv ? "SRV" : "name", e->name, e->last, e->cur4.n + e->cur6.n,
                    e->cur4.n + e->cur6.n == 1 ? "" : "es", delay);
    } else {
        e->fails = 0;
        e->stale = false;
        e->resolved = true;
        if (e->refresh_ms) delay = e->refresh_ms;
        else if (e->from_hosts) delay = d->max_refresh_ms < HOSTS_REFRESH_MS ? d->max_refresh_ms : HOSTS_REFRESH_MS;
        else if (e->rttl_set) delay = clamp_ms(d, (uint64_t)e->rttl * 1000);
        else delay = clamp_ms(d, e->nttl_set ? (uint64_t)e->nttl * 1000 : 0);
    }
    if (changed || was_first) d->dirty = true;
    if (changed) {
        d->st.changes++;
        mg_info("dns: cluster %s: %s %s: %zu -> %zu addresses", e->cluster, e->srv ? "SRV" : "name", e->name,
                before, e->cur4.n + e->cur6.n);
        if (d->on_change) d->on_change(d->ud);
    }
    entry_arm(e, delay);
}

static void add_answer(entry_t *e, alist_t *l, const mg_dns_answer_t *ans, uint16_t port, const char *target)
{
    for (size_t i = 0; i < ans->nrrs; i++) {
        const mg_dns_rr_t *r = &ans->rrs[i];
        alist_add(e->d, l, r->type == MG_DNS_T_A ? AF_INET : AF_INET6, r->addr, port, r->ttl, target);
    }
}

/* A negative answer's TTL matters only when the round found no record
 * (an IPv4-only name's NODATA for AAAA must not shorten the A TTL). */
static void note_ttl(entry_t *e, const mg_dns_answer_t *ans)
{
    if (!ans || !ans->has_ttl) return;
    bool neg = ans->status != MG_DNS_OK;
    uint32_t *t = neg ? &e->nttl : &e->rttl;
    bool *set = neg ? &e->nttl_set : &e->rttl_set;
    if (!*set || ans->ttl < *t) *t = ans->ttl;
    *set = true;
}

/* SRV answer: the best priority's targets; glue or hosts file where we
 * have them, A/AAAA queries for the rest. */
static void srv_targets(entry_t *e, const mg_dns_answer_t *ans)
{
    bool want4 = e->family != MG_DNS_FAMILY_V6, want6 = e->family != MG_DNS_FAMILY_V4;
    int best = -1;
    for (size_t i = 0; i < ans->nrrs; i++)
        if (ans->rrs[i].name[0] && (best < 0 || ans->rrs[i].prio < best)) best = ans->rrs[i].prio;
    if (best < 0) { /* only "." targets: the service is decidedly not available */
        e->srv_empty = true;
        return;
    }
    e->targets = calloc(MAX_SRV_TARGETS, sizeof *e->targets);
    if (!e->targets) {
        e->rfail = true;
        return;
    }
    for (size_t i = 0; i < ans->nrrs && e->ntargets < MAX_SRV_TARGETS; i++) {
        const mg_dns_rr_t *r = &ans->rrs[i];
        if (!r->name[0] || r->prio != best || r->port == 0) continue;
        bool dup = false;
        for (size_t k = 0; k < e->ntargets && !dup; k++)
            dup = e->targets[k].port == r->port && mg_dns_name_eq(e->targets[k].name, r->name);
        if (dup) continue;
        target_t *t = &e->targets[e->ntargets++];
        snprintf(t->name, sizeof t->name, "%s", r->name);
        t->port = r->port;
    }
    for (size_t k = 0; k < e->ntargets; k++) {
        target_t *t = &e->targets[k];
        size_t glue = 0;
        for (size_t i = 0; i < ans->nextra; i++) {
            const mg_dns_rr_t *x = &ans->extra[i];
            bool v4 = x->type == MG_DNS_T_A;
            if (!mg_dns_name_eq(x->name, t->name) || (v4 && !want4) || (!v4 && !want6)) continue;
            alist_add(e->d, &e->n4, v4 ? AF_INET : AF_INET6, x->addr, t->port, x->ttl, t->name);
            if (!e->rttl_set || x->ttl < e->rttl) e->rttl = x->ttl;
            e->rttl_set = true;
            glue++;
        }
        if (glue || hosts_lookup(e->d, t->name, want4, want6, t->port, t->name, &e->n4, &e->n4)) continue;
        if (want4) {
            e->outstanding++;
            dq_submit(e, Q_T4, t->name, k);
        }
        if (want6) {
            e->outstanding++;
            dq_submit(e, Q_T6, t->name, k);
        }
    }
}

static void entry_query_done(entry_t *e, dq_t *q, res_t res, const mg_dns_answer_t *ans)
{
    e->outstanding--;
    if (res != RES_FAIL) note_ttl(e, ans);
    /* what the admin API shows: the first failure of the round, else the last outcome */
    if (q->last && (res == RES_FAIL || !e->rlast_fail)) e->last = q->last;
    if (res == RES_FAIL) e->rlast_fail = true;
    switch (q->kind) {
    case Q_A4:
    case Q_A6: {
        bool v4 = q->kind == Q_A4;
        *(v4 ? &e->r4 : &e->r6) = res;
        if (res == RES_OK) add_answer(e, v4 ? &e->n4 : &e->n6, ans, e->port, NULL);
        break;
    }
    case Q_SRV:
        if (res == RES_FAIL) e->rfail = true;
        else if (res == RES_EMPTY) e->srv_empty = true;
        else {
            e->outstanding++; /* hold the round open while targets are submitted */
            srv_targets(e, ans);
            e->outstanding--;
        }
        break;
    case Q_T4:
    case Q_T6:
        if (res == RES_FAIL) e->rfail = true;
        else if (res == RES_OK && q->tidx < e->ntargets)
            add_answer(e, &e->n4, ans, e->targets[q->tidx].port, e->targets[q->tidx].name);
        break;
    }
    if (e->outstanding == 0) round_finish(e);
}

static void entry_round(entry_t *e)
{
    if (e->running || e->d->stopping) return;
    e->running = true;
    e->rfail = e->srv_empty = e->from_hosts = e->rlast_fail = false;
    e->r4 = e->r6 = RES_NONE;
    e->rttl = e->nttl = 0;
    e->rttl_set = e->nttl_set = false;
    e->ask4 = e->family != MG_DNS_FAMILY_V6;
    e->ask6 = e->family != MG_DNS_FAMILY_V4;
    e->outstanding = 1; /* held while submitting */
    if (e->srv) {
        e->outstanding++;
        dq_submit(e, Q_SRV, e->name, 0);
    } else if (hosts_lookup(e->d, e->name, e->ask4, e->ask6, e->port, NULL, &e->n4, &e->n6)) {
        e->from_hosts = true;
        e->r4 = e->r6 = RES_OK;
        e->last = "hosts file";
    } else {
        if (e->ask4) {
            e->outstanding++;
            dq_submit(e, Q_A4, e->name, 0);
        }
        if (e->ask6) {
            e->outstanding++;
            dq_submit(e, Q_A6, e->name, 0);
        }
    }
    if (--e->outstanding == 0) round_finish(e);
}

static void on_entry_timer(uv_timer_t *t) { entry_round(t->data); }

static void entry_closed(uv_handle_t *h)
{
    entry_t *e = h->data;
    mg_dnssrc_t *d = e->d;
    alist_free(&e->cur4);
    alist_free(&e->cur6);
    alist_free(&e->n4);
    alist_free(&e->n6);
    free(e->targets);
    free(e->cluster);
    free(e->name);
    free(e);
    d->nopen--;
    maybe_free(d);
}

/* Drop e: its queries' results are ignored from now on. */
static void entry_drop(entry_t *e)
{
    mg_dnssrc_t *d = e->d;
    for (dq_t *q = d->inflight; q; q = q->next)
        if (q->e == e) q->e = NULL;
    for (dq_t *q = d->qhead; q; q = q->next)
        if (q->e == e) q->e = NULL;
    uv_close((uv_handle_t *)&e->timer, entry_closed);
}

/* ---- the source ---- */

static void maybe_free(mg_dnssrc_t *d)
{
    if (!d->stopping || d->nopen > 0) return;
    mg_dns_snapshot_unref(d->snap);
    free(d->hosts_file);
    free(d);
}

mg_dnssrc_t *mg_dnssrc_new(uv_loop_t *loop, mg_dnssrc_change_fn on_change, void *ud)
{
    mg_dnssrc_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->loop = loop;
    d->on_change = on_change;
    d->ud = ud;
    d->timeout_ms = 1000;
    d->attempts = 2;
    d->min_refresh_ms = 1000;
    d->max_refresh_ms = 300000;
    d->dirty = true;
    return d;
}

static bool set_server(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (void *)ss;
    struct sockaddr_in6 *s6 = (void *)ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        return true;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        return true;
    }
    return false;
}

/* nameserver lines of /etc/resolv.conf (a %scope suffix is dropped). */
static size_t resolv_conf(struct sockaddr_storage *out, size_t max)
{
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f) return 0;
    char line[512];
    size_t n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *save = NULL, *k = strtok_r(line, " \t\r\n", &save);
        if (!k || strcmp(k, "nameserver") != 0) continue;
        char *ip = strtok_r(NULL, " \t\r\n", &save);
        if (!ip) continue;
        char *pct = strchr(ip, '%');
        if (pct) *pct = '\0';
        if (set_server(&out[n], ip, 53)) n++;
    }
    fclose(f);
    return n;
}

static bool entry_matches(const entry_t *e, const char *cluster, const mg_dns_cfg_t *c)
{
    if (strcmp(e->cluster, cluster) != 0 || e->srv != (c->srv != NULL) || e->family != c->family) return false;
    return e->srv ? mg_dns_name_eq(e->name, c->srv) : mg_dns_name_eq(e->name, c->name) && e->port == c->port;
}

int mg_dnssrc_configure(mg_dnssrc_t *d, const mg_config_t *cfg)
{
    const typeof(cfg->discovery.dns) *o = &cfg->discovery.dns;
    d->timeout_ms = o->timeout_ms;
    d->attempts = o->attempts;
    d->min_refresh_ms = o->min_refresh_ms;
    d->max_refresh_ms = o->max_refresh_ms;
    d->nservers = 0;
    for (size_t i = 0; i < o->nresolvers && d->nservers < MAX_SERVERS; i++)
        if (set_server(&d->servers[d->nservers], o->resolvers[i].host, o->resolvers[i].port)) d->nservers++;
    if (!d->nservers) d->nservers = resolv_conf(d->servers, MAX_SERVERS);
    if (!d->nservers) {
        set_server(&d->servers[0], "127.0.0.1", 53);
        d->nservers = 1;
    }
    const char *hf = o->hosts_file ? o->hosts_file : "/etc/hosts";
    free(d->hosts_file);
    d->hosts_file = strcmp(hf, "off") == 0 ? NULL : strdup(hf);

    for (entry_t *e = d->entries; e; e = e->next) e->keep = false;
    int rc = 0;
    entry_t *added = NULL;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const mg_cluster_cfg_t *cc = &cfg->clusters[i];
        for (size_t j = 0; j < cc->ndns; j++) {
            const mg_dns_cfg_t *c = &cc->dns[j];
            entry_t *e = d->entries;
            while (e && !(entry_matches(e, cc->name, c) && !e->keep)) e = e->next;
            if (e) {
                e->keep = true;
                e->refresh_ms = c->refresh_ms; /* applies from the next refresh */
                continue;
            }
            e = calloc(1, sizeof *e);
            if (!e || !(e->cluster = strdup(cc->name)) || !(e->name = strdup(c->srv ? c->srv : c->name))) {
                if (e) free(e->cluster);
                free(e);
                rc = -ENOMEM;
                continue;
            }
            e->d = d;
            e->srv = c->srv != NULL;
            e->port = c->port;
            e->family = c->family;
            e->refresh_ms = c->refresh_ms;
            e->keep = true;
            e->last = "pending";
            uv_timer_init(d->loop, &e->timer);
            e->timer.data = e;
            d->nopen++;
            e->next = added;
            added = e;
        }
    }
    /* drop the entries no longer configured */
    bool removed = false;
    for (entry_t **pe = &d->entries; *pe;) {
        entry_t *e = *pe;
        if (e->keep) {
            pe = &e->next;
            continue;
        }
        *pe = e->next;
        d->nentries--;
        removed = removed || e->cur4.n + e->cur6.n > 0;
        entry_drop(e);
        d->dirty = true;
    }
    while (added) {
        entry_t *e = added;
        added = e->next;
        e->next = d->entries;
        d->entries = e;
        d->nentries++;
        d->dirty = true;
        entry_round(e);
    }
    if (removed && d->on_change) d->on_change(d->ud);
    return rc;
}

size_t mg_dnssrc_first_pending(const mg_dnssrc_t *d)
{
    size_t n = 0;
    for (const entry_t *e = d->entries; e; e = e->next) n += !e->first_done;
    return n;
}

size_t mg_dnssrc_entries(const mg_dnssrc_t *d) { return d->nentries; }
const mg_dnssrc_stats_t *mg_dnssrc_stats(const mg_dnssrc_t *d) { return &d->st; }

/* ---- snapshots ---- */

void mg_dns_snapshot_ref(mg_dns_snapshot_t *s) { atomic_fetch_add(&s->refs, 1); }

void mg_dns_snapshot_unref(mg_dns_snapshot_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    mg_arena_free(s->priv);
    free(s);
}

const mg_dns_set_t *mg_dns_snapshot_find(const mg_dns_snapshot_t *s, const char *cluster, const mg_dns_cfg_t *c)
{
    if (!s) return NULL;
    for (size_t i = 0; i < s->nsets; i++) {
        const mg_dns_set_t *x = &s->sets[i];
        if (strcmp(x->cluster, cluster) != 0 || x->srv != (c->srv != NULL) || x->family != c->family) continue;
        if (x->srv ? mg_dns_name_eq(x->name, c->srv) : mg_dns_name_eq(x->name, c->name) && x->port == c->port)
            return x;
    }
    return NULL;
}

static char *arena_str(mg_arena_t *a, const char *s)
{
    size_t n = strlen(s);
    char *p = mg_arena_alloc(a, n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static mg_dns_snapshot_t *build_snapshot(const mg_dnssrc_t *d)
{
    mg_dns_snapshot_t *s = calloc(1, sizeof *s);
    mg_arena_t *a = mg_arena_new(16384, (size_t)1 << 30);
    mg_dns_set_t *sets = a && d->nentries ? mg_arena_alloc(a, d->nentries * sizeof *sets) : NULL;
    if (!s || !a || (d->nentries && !sets)) goto oom;
    size_t n = 0;
    for (const entry_t *e = d->entries; e; e = e->next) {
        mg_dns_set_t *x = &sets[n++];
        size_t ne = e->cur4.n + e->cur6.n;
        mg_dns_ep_t *eps = ne ? mg_arena_alloc(a, ne * sizeof *eps) : NULL;
        x->cluster = arena_str(a, e->cluster);
        x->name = arena_str(a, e->name);
        if ((ne && !eps) || !x->cluster || !x->name) goto oom;
        x->srv = e->srv;
        x->port = e->port;
        x->family = e->family;
        x->resolved = e->resolved;
        x->stale = e->stale;
        size_t k = 0;
        for (int f = 0; f < 2; f++) {
            const alist_t *l = f ? &e->cur6 : &e->cur4;
            for (size_t i = 0; i < l->n; i++, k++) {
                eps[k].addr = l->v[i].addr;
                eps[k].addrlen = l->v[i].addrlen;
                eps[k].ttl = l->v[i].ttl;
                eps[k].target = l->v[i].target ? arena_str(a, l->v[i].target) : NULL;
                if (l->v[i].target && !eps[k].target) goto oom;
            }
        }
        x->eps = eps;
        x->neps = ne;
    }
    s->sets = sets;
    s->nsets = n;
    s->priv = a;
    atomic_init(&s->refs, 1);
    return s;
oom:
    mg_arena_free(a);
    free(s);
    return NULL;
}

mg_dns_snapshot_t *mg_dnssrc_snapshot(mg_dnssrc_t *d)
{
    if (d->dirty || !d->snap) {
        mg_dns_snapshot_t *s = build_snapshot(d);
        if (!s) return NULL;
        mg_dns_snapshot_unref(d->snap);
        d->snap = s;
        d->dirty = false;
    }
    mg_dns_snapshot_ref(d->snap);
    return d->snap;
}

/* ---- admin JSON ---- */

void mg_dnssrc_stats_json(const mg_dnssrc_t *d, mg_buf_t *b)
{
    size_t stale = 0, unresolved = 0;
    for (const entry_t *e = d->entries; e; e = e->next) {
        stale += e->stale;
        unresolved += !e->resolved;
    }
    const mg_dnssrc_stats_t *s = &d->st;
    mg_buf_addf(b,
                "{\"names\":%zu,\"stale\":%zu,\"unresolved\":%zu,\"inflight\":%zu,\"queued\":%zu,\"queries\":%llu,"
                "\"answers\":%llu,\"nxdomain\":%llu,\"nodata\":%llu,\"servfail\":%llu,\"timeouts\":%llu,"
                "\"malformed\":%llu,\"mismatched\":%llu,\"truncated\":%llu,\"queue_full\":%llu,\"failures\":%llu,"
                "\"changes\":%llu,\"hosts_hits\":%llu}",
                d->nentries, stale, unresolved, d->ninflight, d->nqueued, (unsigned long long)s->queries,
                (unsigned long long)s->answers, (unsigned long long)s->nxdomain, (unsigned long long)s->nodata,
                (unsigned long long)s->servfail, (unsigned long long)s->timeouts, (unsigned long long)s->malformed,
                (unsigned long long)s->mismatched, (unsigned long long)s->truncated,
                (unsigned long long)s->queue_full, (unsigned long long)s->failures, (unsigned long long)s->changes,
                (unsigned long long)s->hosts_hits);
}

void mg_dnssrc_entries_json(const mg_dnssrc_t *d, mg_buf_t *b)
{
    static const char *const fams[] = { "any", "v4", "v6" };
    uint64_t now = uv_now(d->loop);
    mg_buf_add(b, "[", 1);
    for (const entry_t *e = d->entries; e; e = e->next) {
        mg_buf_addf(b, "%s{\"cluster\":", e == d->entries ? "" : ",");
        mg_buf_json_str(b, mg_slice_cstr(e->cluster));
        mg_buf_addf(b, ",\"%s\":", e->srv ? "srv" : "name");
        mg_buf_json_str(b, mg_slice_cstr(e->name));
        if (!e->srv) mg_buf_addf(b, ",\"port\":%u", e->port);
        mg_buf_addf(b,
                    ",\"family\":\"%s\",\"resolved\":%s,\"stale\":%s,\"from_hosts\":%s,\"last_result\":\"%s\","
                    "\"consecutive_failures\":%u,\"next_refresh_ms\":%lld,\"addresses\":[",
                    fams[e->family], e->resolved ? "true" : "false", e->stale ? "true" : "false",
                    e->from_hosts ? "true" : "false", e->last ? e->last : "", e->fails,
                    e->running ? 0LL : (long long)(e->next_at > now ? e->next_at - now : 0));
        bool first = true;
        for (int f = 0; f < 2; f++) {
            const alist_t *l = f ? &e->cur6 : &e->cur4;
            for (size_t i = 0; i < l->n; i++, first = false) {
                char a[80];
                fmt_addr(&l->v[i].addr, a, sizeof a);
                mg_buf_addf(b, "%s{\"address\":\"%s\",\"ttl\":%u", first ? "" : ",", a, l->v[i].ttl);
                if (l->v[i].target) {
                    mg_buf_lit(b, ",\"target\":");
                    mg_buf_json_str(b, mg_slice_cstr(l->v[i].target));
                }
                mg_buf_add(b, "}", 1);
            }
        }
        mg_buf_add(b, "]}", 2);
    }
    mg_buf_add(b, "]", 1);
}

void mg_dnssrc_stop(mg_dnssrc_t *d)
{
    if (!d || d->stopping) return;
    d->stopping = true;
    while (d->inflight) {
        d->inflight->e = NULL;
        dq_finish(d->inflight);
    }
    while (d->qhead) {
        d->qhead->e = NULL;
        dq_finish(d->qhead);
    }
    while (d->entries) {
        entry_t *e = d->entries;
        d->entries = e->next;
        uv_close((uv_handle_t *)&e->timer, entry_closed);
    }
    d->nentries = 0;
    maybe_free(d);
}
