/* worker: the server object, its worker threads and config snapshots.
 * Each worker runs one libuv loop with its own SO_REUSEPORT listeners, so
 * the kernel spreads connections and no lock is taken to accept. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "proxy/proxy_int.h"

struct mg_server {
    uv_loop_t *control;
    uv_async_t exited; /* on the control loop: a worker stopped */
    void (*on_exit)(void *);
    void *on_exit_arg;
    mg_worker_t *workers;
    uint32_t nworkers;
    _Atomic uint32_t running;
    _Atomic(mg_snapshot_t *) current;
    _Atomic uint64_t generation;
    _Atomic int drain_requested;
    _Atomic uint32_t nconns; /* client connections, all workers */
    _Atomic uint32_t max_conns;
    uint32_t drain_timeout_ms;
    pthread_mutex_t lock; /* guards `current` ref handoff */
};

/* ---- rate limiting: process-wide state ---- */

/* The local rate-limit table is shared by every worker and every config
 * generation (buckets survive reloads); it is sized once, from the config
 * the server starts with. */
static mg_rl_local_t *g_rl_local;

mg_rl_local_t *mg_proxy_rl_local(void) { return g_rl_local; }

/* Redis address resolved on the control thread (the client wants numbers). */
static int resolve_redis(mg_snapshot_t *s, char *err, size_t errlen)
{
    const mg_config_t *cfg = s->cfg;
    if (!cfg->redis.enabled)
        return 0;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(cfg->redis.host, NULL, &hints, &res);
    if (rc || !res) {
        snprintf(err, errlen, "%s:%d:%d: cannot resolve redis host '%s': %s",
                 cfg->redis.pos.file ? cfg->redis.pos.file : "?", cfg->redis.pos.line, cfg->redis.pos.col,
                 cfg->redis.host, gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return MG_ECONFIG;
    }
    if (res->ai_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, s->redis_addr, sizeof s->redis_addr);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, s->redis_addr, sizeof s->redis_addr);
    freeaddrinfo(res);
    return 0;
}

/* ---- snapshots ---- */

int mg_snapshot_build(mg_config_t *cfg, mg_snapshot_t **out, char *err, size_t errlen)
{
    return mg_snapshot_build_disco(cfg, NULL, out, err, errlen);
}

int mg_snapshot_build_disco(mg_config_t *cfg, const struct mg_disco_snapshot *disco, mg_snapshot_t **out,
                            char *err, size_t errlen)
{
    mg_cluster_sources_t src = { .registry = disco };
    return mg_snapshot_build_src(cfg, &src, out, err, errlen);
}

int mg_snapshot_build_src(mg_config_t *cfg, const mg_cluster_sources_t *src, mg_snapshot_t **out, char *err,
                          size_t errlen)
{
    mg_snapshot_t *s = calloc(1, sizeof *s);
    if (!s) {
        mg_config_free(cfg);
        return -ENOMEM;
    }
    s->cfg = cfg;
    atomic_init(&s->refs, 1);
    int rc = mg_route_table_build(cfg, &s->routes, err, errlen);
    if (rc == 0)
        rc = mg_cluster_set_build_src(cfg, src, &s->clusters, err, errlen);
    if (rc == 0)
        rc = resolve_redis(s, err, errlen);
    if (rc == 0)
        rc = mg_resil_build(s, &s->resil, err, errlen);
    if (rc) {
        mg_cluster_set_free(&s->clusters);
        if (s->routes)
            mg_route_table_free(s->routes);
        mg_config_free(cfg);
        free(s);
        return rc;
    }
    s->limits.max_request_line = cfg->max_request_line;
    s->limits.max_header_bytes = cfg->max_header_bytes;
    s->limits.max_headers = cfg->max_headers;
    *out = s;
    return 0;
}

void mg_snapshot_ref(mg_snapshot_t *s) { atomic_fetch_add(&s->refs, 1); }

void mg_snapshot_unref(mg_snapshot_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    mg_resil_release(&s->resil);
    mg_route_table_free(s->routes);
    mg_cluster_set_free(&s->clusters);
    mg_config_free(s->cfg);
    free(s);
}

mg_snapshot_t *mg_server_current(mg_server_t *srv)
{
    pthread_mutex_lock(&srv->lock);
    mg_snapshot_t *s = atomic_load(&srv->current);
    mg_snapshot_ref(s);
    pthread_mutex_unlock(&srv->lock);
    return s;
}

static mg_wsnap_t *wsnap_new(mg_snapshot_t *snap)
{
    mg_wsnap_t *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->rr = calloc(snap->clusters.n ? snap->clusters.n : 1, sizeof *ws->rr);
    if (!ws->rr) {
        free(ws);
        return NULL;
    }
    ws->snap = snap;
    return ws;
}

static void wsnap_free(mg_wsnap_t *ws)
{
    mg_snapshot_unref(ws->snap);
    free(ws->rr);
    free(ws);
}

void mg_wsnap_release(mg_worker_t *w, mg_wsnap_t *ws)
{
    if (--ws->inflight > 0 || ws == w->cur)
        return;
    for (mg_wsnap_t **pp = &w->retired; *pp; pp = &(*pp)->next) {
        if (*pp == ws) {
            *pp = ws->next;
            wsnap_free(ws);
            return;
        }
    }
}

/* Worker side of a swap: adopt the published snapshot between requests. */
static void worker_adopt(mg_worker_t *w)
{
    mg_snapshot_t *snap = mg_server_current(w->srv);
    if (w->cur && w->cur->snap == snap) {
        mg_snapshot_unref(snap);
        return;
    }
    mg_wsnap_t *ws = wsnap_new(snap);
    if (!ws) {
        mg_snapshot_unref(snap);
        mg_error("worker %u: out of memory adopting config", w->id);
        return;
    }
    mg_wsnap_t *old = w->cur;
    w->cur = ws;
    /* Endpoints gone from every cluster (a deregistered instance, a
     * removed static endpoint): close their idle pooled connections.
     * Connections carrying a request are untouched (in-flight requests
     * finish on the old snapshot) and closed when released (pool.unused). */
    if (old && w->npools) {
        uint8_t *used = calloc(w->npools, 1);
        if (used) {
            for (size_t i = 0; i < snap->clusters.n; i++)
                for (uint32_t j = 0; j < snap->clusters.clusters[i].neps; j++) {
                    uint32_t idx = snap->clusters.clusters[i].eps[j].stats->index;
                    if (idx < w->npools)
                        used[idx] = 1;
                }
            for (uint32_t i = 0; i < w->npools; i++) {
                w->pools[i].unused = !used[i];
                while (!used[i] && w->pools[i].idle)
                    mg_upconn_close(w->pools[i].idle);
            }
            free(used);
        }
    }
    if (old) {
        if (old->inflight == 0) {
            wsnap_free(old);
        } else {
            old->next = w->retired;
            w->retired = old;
        }
    }
}

mg_pool_t *mg_worker_pool(mg_worker_t *w, uint32_t idx)
{
    if (idx >= w->npools) {
        uint32_t n = idx + 16;
        mg_pool_t *p = realloc(w->pools, n * sizeof *p);
        if (!p)
            return NULL;
        memset(p + w->npools, 0, (n - w->npools) * sizeof *p);
        w->pools = p;
        w->npools = n;
    }
    return &w->pools[idx];
}

/* ---- accept, drain, exit ---- */

static void on_connection(uv_stream_t *server, int status)
{
    mg_worker_t *w = server->data;
    if (status < 0) {
        mg_warn("worker %u: accept: %s", w->id, uv_strerror(status));
        return;
    }
    mg_session_accept(w, server);
}

static void close_free_cb(uv_handle_t *h) { (void)h; }

static void worker_maybe_exit(mg_worker_t *w)
{
    if (!w->draining || w->nsessions > 0)
        return;
    mg_pool_close_all(w);
    if (w->rl_redis) {
        mg_rl_redis_close(w->rl_redis);
        w->rl_redis = NULL;
    }
    uv_timer_stop(&w->drain_timer);
    uv_close((uv_handle_t *)&w->drain_timer, close_free_cb);
    uv_close((uv_handle_t *)&w->flush_timer, close_free_cb);
    uv_close((uv_handle_t *)&w->wake, close_free_cb);
}

void mg_worker_session_closed(mg_worker_t *w, mg_session_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        w->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    w->nsessions--;
    worker_maybe_exit(w);
}

static void on_drain_timeout(uv_timer_t *t)
{
    mg_worker_t *w = t->data;
    mg_warn("worker %u: drain timeout, closing %u connections", w->id, w->nsessions);
    for (mg_session_t *s = w->sessions, *n; s; s = n) {
        n = s->next;
        mg_session_close(s);
    }
}

static void worker_start_drain(mg_worker_t *w)
{
    if (w->draining)
        return;
    w->draining = true;
    for (size_t i = 0; i < w->nlisteners; i++)
        uv_close((uv_handle_t *)&w->listeners[i], close_free_cb);
    for (mg_session_t *s = w->sessions, *n; s; s = n) {
        n = s->next;
        mg_session_drain(s);
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, w->srv->drain_timeout_ms, 0);
    worker_maybe_exit(w);
}

static void on_wake(uv_async_t *a)
{
    mg_worker_t *w = a->data;
    if (atomic_load(&w->srv->drain_requested)) {
        worker_start_drain(w);
        return;
    }
    worker_adopt(w);
}

static void on_flush(uv_timer_t *t)
{
    mg_worker_t *w = t->data;
    mg_alog_flush(&w->alog);
}

static void worker_main(void *arg)
{
    mg_worker_t *w = arg;
    for (size_t i = 0; i < w->nlisteners; i++) {
        uv_tcp_init(&w->loop, &w->listeners[i]);
        w->listeners[i].data = w;
        int rc = uv_tcp_open(&w->listeners[i], w->listen_fds[i]);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&w->listeners[i], 4096, on_connection);
        if (rc)
            mg_error("worker %u: listen: %s", w->id, uv_strerror(rc));
    }
    const mg_snapshot_t *snap = w->cur->snap;
    if (snap->cfg->redis.enabled) {
        mg_rl_redis_opts_t o = { .host = snap->redis_addr, .port = snap->cfg->redis.port,
                                 .timeout_ms = snap->cfg->redis.timeout_ms };
        int rc = mg_rl_redis_new(&w->loop, &o, &w->rl_redis);
        if (rc)
            mg_error("worker %u: redis client for %s:%u: %s; rate limits use the local table", w->id,
                     snap->redis_addr, snap->cfg->redis.port, mg_strerror(rc));
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    mg_alog_flush(&w->alog);
    mg_buf_free(&w->alog.buf);
    if (w->cur)
        wsnap_free(w->cur);
    while (w->retired) {
        mg_wsnap_t *n = w->retired->next;
        wsnap_free(w->retired);
        w->retired = n;
    }
    w->cur = NULL;
    free(w->pools);
    w->pools = NULL;
    uv_loop_close(&w->loop);
    mg_server_t *srv = w->srv;
    if (atomic_fetch_sub(&srv->running, 1) == 1)
        uv_async_send(&srv->exited);
}

static void on_all_exited(uv_async_t *a)
{
    mg_server_t *srv = a->data;
    uv_close((uv_handle_t *)&srv->exited, NULL);
    if (srv->on_exit)
        srv->on_exit(srv->on_exit_arg);
}

/* SO_REUSEPORT would let us share a port with another process that also
 * set it (another meshgate, an nginx with reuseport) and silently split its
 * traffic. A probe bound without SO_REUSEPORT fails if anyone holds the
 * port, so an occupied address is an error, as users expect. */
static int probe_free(const struct addrinfo *res, const mg_addr_cfg_t *a, char *err, size_t errlen)
{
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, res->ai_addr, res->ai_addrlen) == 0 ? 0 : -errno;
    close(fd);
    if (rc == -EADDRINUSE) {
        snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port, strerror(EADDRINUSE));
        return rc;
    }
    return 0;
}

static int bind_one(const mg_addr_cfg_t *a, bool probe, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *res;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int rc = getaddrinfo(a->host && a->host[0] ? a->host : NULL, port, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port, gai_strerror(rc));
        return -EINVAL;
    }
    if (probe && (rc = probe_free(res, a, err, errlen)) != 0) {
        freeaddrinfo(res);
        return rc;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, res->ai_addr, res->ai_addrlen)) {
        rc = -errno;
        snprintf(err, errlen, "listen %s:%u: %s", a->host, a->port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return rc;
    }
    freeaddrinfo(res);
    return fd;
}

int mg_server_start(void *control_loop, mg_snapshot_t *snap, void (*on_exit)(void *), void *arg,
                    mg_server_t **out, char *err, size_t errlen)
{
    const mg_config_t *cfg = snap->cfg;
    uint32_t n = cfg->workers ? cfg->workers : 1;
    mg_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -ENOMEM;
    srv->workers = calloc(n, sizeof *srv->workers);
    if (!srv->workers) {
        free(srv);
        return -ENOMEM;
    }
    srv->control = control_loop;
    srv->nworkers = n;
    srv->on_exit = on_exit;
    srv->on_exit_arg = arg;
    pthread_mutex_init(&srv->lock, NULL);
    mg_snapshot_ref(snap);
    atomic_store(&srv->current, snap);
    atomic_store(&srv->max_conns, cfg->max_connections);
    if (!g_rl_local) {
        mg_rl_local_opts_t lo = { .max_keys = cfg->rate_limit_max_keys };
        int lrc = mg_rl_local_new(&lo, &g_rl_local);
        if (lrc) {
            snprintf(err, errlen, "rate-limit table: %s", mg_strerror(lrc));
            free(srv->workers);
            free(srv);
            return lrc;
        }
    }

    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        mg_worker_t *w = &srv->workers[i];
        w->id = i;
        w->srv = srv;
        w->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ULL) ^ (uint64_t)getpid();
        w->nlisteners = cfg->nlisten;
        w->listeners = calloc(cfg->nlisten, sizeof *w->listeners);
        w->listen_fds = calloc(cfg->nlisten, sizeof *w->listen_fds);
        if (!w->listeners || !w->listen_fds) {
            rc = -ENOMEM;
            break;
        }
        for (size_t j = 0; j < cfg->nlisten; j++) {
            int fd = bind_one(&cfg->listen[j], i == 0, err, errlen);
            if (fd < 0) {
                rc = fd;
                break;
            }
            w->listen_fds[j] = fd;
        }
    }
    if (rc) {
        /* Nothing started yet: close what was bound. */
        for (uint32_t i = 0; i < n; i++) {
            for (size_t j = 0; srv->workers[i].listen_fds && j < srv->workers[i].nlisteners; j++)
                if (srv->workers[i].listen_fds[j] > 0)
                    close(srv->workers[i].listen_fds[j]);
            free(srv->workers[i].listeners);
            free(srv->workers[i].listen_fds);
        }
        mg_snapshot_unref(snap);
        free(srv->workers);
        free(srv);
        return rc;
    }
    uv_async_init(control_loop, &srv->exited, on_all_exited);
    srv->exited.data = srv;
    srv->drain_timeout_ms = cfg->drain_timeout_ms;
    atomic_store(&srv->running, n);
    for (uint32_t i = 0; i < n; i++) {
        mg_worker_t *w = &srv->workers[i];
        uv_loop_init(&w->loop);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->drain_timer);
        w->drain_timer.data = w;
        uv_timer_init(&w->loop, &w->flush_timer);
        w->flush_timer.data = w;
        if (mg_alog_enabled())
            uv_timer_start(&w->flush_timer, on_flush, 200, 200);
        worker_adopt(w);
        uv_thread_create(&w->thread, worker_main, w);
    }
    *out = srv;
    return 0;
}

void mg_server_swap(mg_server_t *srv, mg_snapshot_t *snap)
{
    mg_snapshot_ref(snap);
    snap->generation = atomic_fetch_add(&srv->generation, 1) + 1;
    atomic_store(&srv->max_conns, snap->cfg->max_connections);
    pthread_mutex_lock(&srv->lock);
    mg_snapshot_t *old = atomic_exchange(&srv->current, snap);
    pthread_mutex_unlock(&srv->lock);
    mg_snapshot_unref(old);
    for (uint32_t i = 0; i < srv->nworkers; i++)
        uv_async_send(&srv->workers[i].wake);
}

void mg_server_drain(mg_server_t *srv, uint32_t timeout_ms)
{
    srv->drain_timeout_ms = timeout_ms;
    atomic_store(&srv->drain_requested, 1);
    for (uint32_t i = 0; i < srv->nworkers; i++)
        uv_async_send(&srv->workers[i].wake);
}

void mg_server_free(mg_server_t *srv)
{
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        uv_thread_join(&srv->workers[i].thread);
        free(srv->workers[i].listeners);
        free(srv->workers[i].listen_fds);
    }
    mg_snapshot_unref(atomic_load(&srv->current));
    pthread_mutex_destroy(&srv->lock);
    free(srv->workers);
    free(srv);
}

uint32_t mg_server_workers(const mg_server_t *srv) { return srv->nworkers; }

/* One shared counter, touched once per connection (not per request), so
 * max_connections is a true total however the kernel spreads accepts. */
bool mg_server_conn_enter(mg_server_t *srv)
{
    uint32_t n = atomic_fetch_add_explicit(&srv->nconns, 1, memory_order_relaxed);
    if (n >= atomic_load_explicit(&srv->max_conns, memory_order_relaxed)) {
        atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void mg_server_conn_leave(mg_server_t *srv) { atomic_fetch_sub_explicit(&srv->nconns, 1, memory_order_relaxed); }
