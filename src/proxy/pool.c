/* pool: upstream connections and the per-worker keep-alive pools.
 * A connection goes back to its pool only after a cleanly framed exchange;
 * idle ones are read so that a close (or stray bytes) from the upstream
 * removes them at once, and they expire after the cluster's idle timeout. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy_int.h"

static void wake_waiter(mg_worker_t *w, uint32_t ep_index);

static void on_up_closed(uv_handle_t *h)
{
    mg_upconn_t *up = h->data;
    if (--up->open_handles > 0)
        return;
    free(up->rbuf);
    free(up);
}

static void pool_unlink(mg_upconn_t *up)
{
    if (!up->in_pool)
        return;
    mg_pool_t *p = mg_worker_pool(up->w, up->ep->index);
    if (up->prev_idle)
        up->prev_idle->next_idle = up->next_idle;
    else
        p->idle = up->next_idle;
    if (up->next_idle)
        up->next_idle->prev_idle = up->prev_idle;
    up->next_idle = up->prev_idle = NULL;
    up->in_pool = false;
    p->nidle--;
    atomic_fetch_sub_explicit(&up->ep->w[up->w->id].idle, 1, memory_order_relaxed);
}

void mg_upconn_close(mg_upconn_t *up)
{
    if (up->closing)
        return;
    up->closing = true;
    pool_unlink(up);
    up->owner = NULL;
    uv_close((uv_handle_t *)&up->tcp, on_up_closed);
    uv_close((uv_handle_t *)&up->timer, on_up_closed);
    if (up->bh) {
        mg_bulkhead_conn_closed(up->bh);
        mg_resil_drop(up->bh_ref);
        up->bh = NULL;
        up->bh_ref = NULL;
        wake_waiter(up->w, up->ep->index);
    }
}

static void on_up_timer(uv_timer_t *t)
{
    mg_upconn_t *up = t->data;
    up->armed = 0;
    if (up->deadline == 0)
        return;
    uint64_t now = uv_now(&up->w->loop);
    if (now < up->deadline) {
        uv_timer_start(&up->timer, on_up_timer, up->deadline - now, 0);
        up->armed = up->deadline;
        return;
    }
    mg_utimer_t which = up->tstate;
    up->tstate = UT_NONE;
    up->deadline = 0;
    if (up->owner)
        mg_exchange_up_timeout(up->owner, which);
    else
        mg_upconn_close(up);
}

/* Lazy, like mg_session_timer: later deadlines are only recorded. */
void mg_upconn_timer(mg_upconn_t *up, mg_utimer_t t, uint64_t ms)
{
    up->tstate = t;
    if (t == UT_NONE || ms == 0) {
        up->tstate = UT_NONE;
        up->deadline = 0;
        return;
    }
    up->deadline = uv_now(&up->w->loop) + ms;
    if (up->armed == 0 || up->deadline < up->armed) {
        uv_timer_start(&up->timer, on_up_timer, ms, 0);
        up->armed = up->deadline;
    }
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    mg_upconn_t *up = h->data;
    if (up->rlen == up->rcap && up->rpos > 0) {
        memmove(up->rbuf, up->rbuf + up->rpos, up->rlen - up->rpos);
        up->rlen -= up->rpos;
        up->rpos = 0;
    }
    if (up->rlen == up->rcap && up->owner && up->owner->rs == RS_WAIT) {
        size_t max = (size_t)up->owner->ws->snap->cfg->max_header_bytes + 1024;
        if (up->rcap < max) {
            size_t ncap = up->rcap * 2 < max ? up->rcap * 2 : max;
            char *p = realloc(up->rbuf, ncap);
            if (p) {
                up->rbuf = p;
                up->rcap = ncap;
            }
        }
    }
    buf->base = up->rbuf + up->rlen;
    buf->len = up->rcap - up->rlen;
}

static void on_up_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    mg_upconn_t *up = st->data;
    if (nread == 0)
        return;
    if (!up->owner) {
        /* Idle in the pool: a close or stray bytes both retire it. */
        mg_upconn_close(up);
        return;
    }
    if (nread > 0) {
        up->rlen += (size_t)nread;
        mg_exchange_up_data(up->owner);
        return;
    }
    mg_upconn_read(up, false);
    if (nread == UV_ENOBUFS)
        mg_exchange_up_eof(up->owner, UV_ENOBUFS); /* head larger than allowed */
    else
        mg_exchange_up_eof(up->owner, (int)nread);
}

void mg_upconn_read(mg_upconn_t *up, bool on)
{
    if (up->reading == on || up->closing || !up->connected)
        return;
    up->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&up->tcp, up_alloc, on_up_read);
    else
        uv_read_stop((uv_stream_t *)&up->tcp);
}

static void on_connect(uv_connect_t *req, int status)
{
    mg_upconn_t *up = req->data;
    if (status == UV_ECANCELED || up->closing)
        return;
    mg_upconn_timer(up, UT_NONE, 0);
    mg_session_t *s = up->owner;
    if (status == 0) {
        up->connected = true;
        uv_tcp_nodelay(&up->tcp, 1);
        mg_upconn_read(up, true);
    }
    if (s)
        mg_exchange_up_ready(s, status);
    else
        mg_upconn_close(up);
}

static void attach(mg_session_t *s, mg_upconn_t *up)
{
    s->up = up;
    up->owner = s;
    mg_pool_t *p = mg_worker_pool(s->w, up->ep->index);
    if (p)
        p->nactive++;
    atomic_fetch_add_explicit(&up->ep->w[s->w->id].active, 1, memory_order_relaxed);
}

/* A session waiting for a connection slot (bulkhead max_connections). */
static void wait_unlink(mg_pool_t *p, mg_session_t *s)
{
    for (mg_session_t **pp = &p->waiters; *pp; pp = &(*pp)->wait_next) {
        if (*pp == s) {
            *pp = s->wait_next;
            break;
        }
    }
    s->wait_next = NULL;
    s->wait_ep = NULL;
}

/* Called when a connection of this worker to ep is released or closed:
 * the first waiter tries again (an idle connection, or a free slot). */
static void wake_waiter(mg_worker_t *w, uint32_t ep_index)
{
    mg_pool_t *p = mg_worker_pool(w, ep_index);
    mg_session_t *s = p ? p->waiters : NULL;
    if (!s)
        return;
    const mg_endpoint_t *ep = s->wait_ep;
    wait_unlink(p, s);
    mg_pool_acquire(w, s, ep, false);
}

void mg_pool_cancel_wait(mg_session_t *s)
{
    if (!s->wait_ep)
        return;
    mg_pool_t *p = mg_worker_pool(s->w, s->wait_ep->stats->index);
    if (p)
        wait_unlink(p, s);
}

static void pending_leave(mg_session_t *s)
{
    if (s->bh_pending && s->crt) {
        mg_bulkhead_pending_leave(s->crt->bulkhead);
        s->bh_pending = false;
    }
}

void mg_pool_acquire(mg_worker_t *w, mg_session_t *s, const mg_endpoint_t *ep, bool fresh)
{
    mg_pool_t *p = mg_worker_pool(w, ep->stats->index);
    if (!fresh && p && p->idle) {
        mg_upconn_t *up = p->idle;
        pool_unlink(up);
        mg_upconn_timer(up, UT_NONE, 0);
        up->reused = true;
        up->rpos = up->rlen = 0;
        pending_leave(s);
        attach(s, up);
        mg_exchange_up_ready(s, 0);
        return;
    }
    const mg_config_t *cfg = s->ws->snap->cfg;
    const mg_cluster_cfg_t *cc = s->route && !s->route->cfg->respond
                                     ? s->ws->snap->clusters.clusters[s->route->cfg->cluster_index].cfg
                                     : NULL;
    uint32_t cto = s->route && s->route->cfg->connect_timeout_ms ? s->route->cfg->connect_timeout_ms
                   : cc && cc->connect_timeout_ms                ? cc->connect_timeout_ms
                                                                 : cfg->connect_timeout_ms;
    mg_bulkhead_t *bh = s->crt ? s->crt->bulkhead : NULL;
    if (bh) {
        /* Envoy connection-pool semantics: a request waiting for a new
         * connection is pending (max_pending overflows at once); a
         * connection beyond max_connections is not opened, the request
         * waits for one of this worker's connections to come free, bounded
         * by the connect timeout. */
        if (!s->bh_pending) {
            if (mg_bulkhead_pending_enter(bh, w->id) != 0) {
                mg_exchange_overflow(s, MG_OVERFLOW_PENDING);
                return;
            }
            s->bh_pending = true;
            s->wait_deadline = uv_now(&w->loop) + cto;
        }
        if (!mg_bulkhead_conn_open(bh, w->id)) {
            uint64_t now = uv_now(&w->loop);
            if (!p || now >= s->wait_deadline) {
                pending_leave(s);
                mg_exchange_overflow(s, MG_OVERFLOW_CONNECTIONS);
                return;
            }
            s->wait_ep = ep;
            s->wait_next = NULL;
            mg_session_t **tail = &p->waiters;
            while (*tail)
                tail = &(*tail)->wait_next;
            *tail = s;
            mg_session_timer(s, ST_CONNWAIT, s->wait_deadline - now);
            return;
        }
    }
    pending_leave(s);
    mg_upconn_t *up = calloc(1, sizeof *up);
    char *rbuf = up ? malloc(MG_RBUF_SIZE) : NULL;
    if (!rbuf) {
        free(up);
        if (bh)
            mg_bulkhead_conn_closed(bh);
        mg_exchange_up_ready(s, UV_ENOMEM);
        return;
    }
    if (bh) {
        /* the connection may outlive this snapshot (pools survive reloads) */
        up->bh_ref = s->crt->refs[0];
        mg_resil_hold(up->bh_ref);
    }
    up->rbuf = rbuf;
    up->rcap = MG_RBUF_SIZE;
    up->w = w;
    up->ep = ep->stats;
    up->bh = bh;
    uv_tcp_init(&w->loop, &up->tcp);
    uv_timer_init(&w->loop, &up->timer);
    up->tcp.data = up;
    up->timer.data = up;
    up->creq.data = up;
    up->open_handles = 2;
    attach(s, up);
    atomic_fetch_add_explicit(&up->ep->w[w->id].connects, 1, memory_order_relaxed);
    int rc = uv_tcp_connect(&up->creq, &up->tcp, (const struct sockaddr *)&ep->addr, on_connect);
    if (rc < 0) {
        mg_exchange_up_ready(s, rc);
        return;
    }
    mg_upconn_timer(up, UT_CONNECT, cto);
}

void mg_pool_release(mg_upconn_t *up, bool reuse, uint32_t max_idle, uint64_t idle_ms)
{
    mg_worker_t *w = up->w;
    mg_pool_t *p = mg_worker_pool(w, up->ep->index);
    if (up->owner) {
        if (p && p->nactive)
            p->nactive--;
        atomic_fetch_sub_explicit(&up->ep->w[w->id].active, 1, memory_order_relaxed);
        up->owner = NULL;
    }
    mg_upconn_timer(up, UT_NONE, 0);
    if (!reuse || !p || w->draining || !up->connected || up->closing || up->rpos != up->rlen ||
        p->nidle >= max_idle || p->unused) {
        mg_upconn_close(up);
        return;
    }
    up->rpos = up->rlen = 0;
    up->next_idle = p->idle;
    up->prev_idle = NULL;
    if (p->idle)
        p->idle->prev_idle = up;
    p->idle = up;
    p->nidle++;
    up->in_pool = true;
    atomic_fetch_add_explicit(&up->ep->w[w->id].idle, 1, memory_order_relaxed);
    mg_upconn_read(up, true);
    if (idle_ms)
        mg_upconn_timer(up, UT_IDLE, idle_ms);
    wake_waiter(w, up->ep->index);
}

void mg_pool_close_all(mg_worker_t *w)
{
    for (uint32_t i = 0; i < w->npools; i++)
        while (w->pools[i].idle)
            mg_upconn_close(w->pools[i].idle);
}
