/* admin: see admin.h. One request per connection (Connection: close) keeps
 * this tiny; it parses requests with the same strict parser as the proxy. */
#include "admin/admin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "http/http1.h"
#include "obs/accesslog.h"

#define ADMIN_RBUF 16384

struct mg_admin {
    uv_tcp_t listener;
    uv_loop_t *loop;
    mg_server_t *srv;
    uint64_t started_ns;
    int nconns;
    bool stopping;
};

typedef struct {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wreq;
    mg_admin_t *a;
    char rbuf[ADMIN_RBUF];
    size_t rlen;
    mg_http_msg_t req;
    mg_buf_t out;
    int open;
    bool answered;
} admin_conn_t;

static void conn_closed(uv_handle_t *h)
{
    admin_conn_t *c = h->data;
    if (--c->open > 0)
        return;
    mg_buf_free(&c->out);
    c->a->nconns--;
    free(c);
}

static void conn_close(admin_conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    uv_close((uv_handle_t *)&c->tcp, conn_closed);
    uv_close((uv_handle_t *)&c->timer, conn_closed);
}

static void on_written(uv_write_t *w, int status)
{
    (void)status;
    conn_close(w->data);
}

static void reply(admin_conn_t *c, int status, const char *reason, const mg_buf_t *body)
{
    mg_buf_t *o = &c->out;
    o->len = 0;
    mg_buf_addf(o,
                "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                status, reason, body->len);
    bool head = c->req.method_id == MG_METHOD_HEAD;
    if (!head)
        mg_buf_add(o, body->p ? body->p : "", body->len);
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_buf_t b = uv_buf_init(o->p, (unsigned)o->len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
        conn_close(c);
}

static void reply_error(admin_conn_t *c, int status, const char *reason, const char *msg)
{
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_addf(&b, "{\"error\":");
    mg_buf_json_str(&b, mg_slice_cstr(msg));
    mg_buf_addf(&b, ",\"status\":%d}\n", status);
    reply(c, status, reason, &b);
    mg_buf_free(&b);
}

static const char *lb_name(mg_lb_kind_t lb)
{
    switch (lb) {
    case MG_LB_LEAST_REQUEST: return "least_request";
    case MG_LB_RANDOM: return "random";
    default: return "round_robin";
    }
}

static void get_health(admin_conn_t *c, mg_snapshot_t *snap)
{
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_addf(&b,
                "{\"status\":\"ok\",\"version\":\"%s\",\"workers\":%u,\"config_generation\":%" PRIu64
                ",\"uptime_s\":%.3f,\"access_log_dropped\":%" PRIu64 "}\n",
                MG_VERSION, mg_server_workers(c->a->srv), snap->generation,
                (double)(uv_hrtime() - c->a->started_ns) / 1e9, mg_alog_dropped());
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

static void get_routes(admin_conn_t *c, mg_snapshot_t *snap)
{
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_add(&b, "{\"default_filters\":", 19);
    mg_plugin_list_json(&snap->cfg->default_filters, &b);
    mg_buf_add(&b, ",\"routes\":[", 11);
    size_t n = mg_route_count(snap->routes);
    for (size_t i = 0; i < n; i++) {
        if (i)
            mg_buf_add(&b, ",", 1);
        mg_route_describe_json(mg_route_at(snap->routes, i), &b);
    }
    mg_buf_add(&b, "]}\n", 3);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

static void get_clusters(admin_conn_t *c, mg_snapshot_t *snap)
{
    uint32_t nw = mg_server_workers(c->a->srv);
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_add(&b, "{\"clusters\":[", 13);
    for (size_t i = 0; i < snap->clusters.n; i++) {
        const mg_cluster_t *cl = &snap->clusters.clusters[i];
        mg_buf_addf(&b, "%s{\"name\":", i ? "," : "");
        mg_buf_json_str(&b, mg_slice_cstr(cl->cfg->name));
        mg_buf_addf(&b, ",\"lb\":\"%s\",\"endpoints\":[", lb_name(cl->cfg->lb));
        for (uint32_t j = 0; j < cl->neps; j++) {
            const mg_ep_stats_t *st = cl->eps[j].stats;
            uint64_t idle = 0, active = 0, reqs = 0, conns = 0, fails = 0;
            for (uint32_t k = 0; k < nw; k++) {
                idle += atomic_load_explicit(&st->w[k].idle, memory_order_relaxed);
                active += atomic_load_explicit(&st->w[k].active, memory_order_relaxed);
                reqs += atomic_load_explicit(&st->w[k].requests, memory_order_relaxed);
                conns += atomic_load_explicit(&st->w[k].connects, memory_order_relaxed);
                fails += atomic_load_explicit(&st->w[k].failures, memory_order_relaxed);
            }
            mg_buf_addf(&b, "%s{\"address\":", j ? "," : "");
            mg_buf_json_str(&b, mg_slice_cstr(st->name));
            mg_buf_addf(&b,
                        ",\"pool\":{\"idle\":%" PRIu64 ",\"active\":%" PRIu64 "},\"requests\":%" PRIu64
                        ",\"connections_opened\":%" PRIu64 ",\"failures\":%" PRIu64 "}",
                        idle, active, reqs, conns, fails);
        }
        mg_buf_add(&b, "]}", 2);
    }
    mg_buf_add(&b, "]}\n", 3);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

static void dispatch(admin_conn_t *c)
{
    mg_http_msg_t *m = &c->req;
    if (m->method_id != MG_METHOD_GET && m->method_id != MG_METHOD_HEAD) {
        reply_error(c, 405, "Method Not Allowed", "method not allowed");
        return;
    }
    mg_snapshot_t *snap = mg_server_current(c->a->srv);
    if (mg_slice_eq(m->path, MG_SLICE_LIT("/health")))
        get_health(c, snap);
    else if (mg_slice_eq(m->path, MG_SLICE_LIT("/routes")))
        get_routes(c, snap);
    else if (mg_slice_eq(m->path, MG_SLICE_LIT("/clusters")))
        get_clusters(c, snap);
    else
        reply_error(c, 404, "Not Found", "no such admin endpoint");
    mg_snapshot_unref(snap);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    admin_conn_t *c = h->data;
    buf->base = c->rbuf + c->rlen;
    buf->len = ADMIN_RBUF - c->rlen;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    admin_conn_t *c = st->data;
    if (c->answered)
        return;
    if (n < 0) {
        conn_close(c);
        return;
    }
    c->rlen += (size_t)n;
    int r = mg_http_parse_request(c->rbuf, c->rlen, &c->req, NULL);
    if (r == 0 && c->rlen == ADMIN_RBUF)
        r = -431;
    if (r == 0)
        return;
    if (r < 0) {
        reply_error(c, -r, "Bad Request", c->req.error ? c->req.error : "bad request");
        return;
    }
    dispatch(c);
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_conn(uv_stream_t *server, int status)
{
    mg_admin_t *a = server->data;
    if (status < 0)
        return;
    admin_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->a = a;
    uv_tcp_init(a->loop, &c->tcp);
    uv_timer_init(a->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open = 2;
    a->nconns++;
    mg_buf_init(&c->out);
    mg_http_msg_reset(&c->req);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, 10000, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int mg_admin_start(uv_loop_t *loop, mg_server_t *srv, const mg_config_t *cfg, mg_admin_t **out, char *err,
                   size_t errlen)
{
    mg_admin_t *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->loop = loop;
    a->srv = srv;
    a->started_ns = uv_hrtime();
    struct sockaddr_storage ss;
    const char *host = cfg->admin.host && cfg->admin.host[0] ? cfg->admin.host : "127.0.0.1";
    int rc = strchr(host, ':') ? uv_ip6_addr(host, cfg->admin.port, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, cfg->admin.port, (struct sockaddr_in *)&ss);
    if (rc == 0) {
        uv_tcp_init(loop, &a->listener);
        a->listener.data = a;
        rc = uv_tcp_bind(&a->listener, (struct sockaddr *)&ss, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&a->listener, 128, on_conn);
        if (rc) {
            snprintf(err, errlen, "admin listen %s:%u: %s", host, cfg->admin.port, uv_strerror(rc));
            uv_close((uv_handle_t *)&a->listener, (uv_close_cb)free);
            return rc;
        }
    } else {
        snprintf(err, errlen, "admin address %s: %s (use a literal IP)", host, uv_strerror(rc));
        free(a);
        return rc;
    }
    *out = a;
    return 0;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    mg_admin_t *a = arg;
    if (h->data && h->type == UV_TCP && h != (uv_handle_t *)&a->listener && !uv_is_closing(h)) {
        admin_conn_t *c = h->data;
        if (c->a == a)
            conn_close(c);
    }
}

void mg_admin_stop(mg_admin_t *a)
{
    if (!a || a->stopping)
        return;
    a->stopping = true;
    uv_walk(a->loop, walk_close, a);
    uv_close((uv_handle_t *)&a->listener, NULL); /* `a` itself lives until exit */
}
