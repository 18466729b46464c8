/* admin: see admin.h. One request per connection (Connection: close) keeps
 * this tiny; it parses requests with the same strict parser as the proxy. */
#include "admin/admin.h"
#include "cluster/health.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "http/http1.h"
#include "obs/accesslog.h"
#include "ratelimit/limiter.h"

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
                        ",\"connections_opened\":%" PRIu64 ",\"failures\":%" PRIu64,
                        idle, active, reqs, conns, fails);
            const mg_outlier_t *od = i < snap->resil.nclusters ? snap->resil.clusters[i].outlier : NULL;
            /* healthy: in rotation (not ejected, and passing active checks) */
            bool hc_ok = !cl->cfg->has_health || mg_ep_hc_usable(st);
            if (od && j < mg_outlier_neps(od)) {
                mg_outlier_ep_info_t oi;
                mg_outlier_ep_info(od, j, &oi);
                uint64_t now = mg_now_ms();
                mg_buf_addf(&b,
                            ",\"healthy\":%s,\"ejected\":%s,\"ejected_for_ms\":%llu,\"times_ejected\":%llu,"
                            "\"consecutive_5xx\":%u,\"consecutive_gateway_errors\":%u",
                            oi.ejected || !hc_ok ? "false" : "true", oi.ejected ? "true" : "false",
                            (unsigned long long)(oi.ejected && oi.ejected_until_ms > now ? oi.ejected_until_ms - now : 0),
                            (unsigned long long)oi.times_ejected, oi.consecutive_5xx, oi.consecutive_gateway_errors);
            } else {
                mg_buf_addf(&b, ",\"healthy\":%s,\"ejected\":false", hc_ok ? "true" : "false");
            }
            if (cl->cfg->has_health) {
                uint64_t last = atomic_load_explicit(&st->hc_last_ms, memory_order_relaxed);
                uint64_t now = mg_now_ms();
                mg_buf_addf(&b,
                            ",\"health\":\"%s\",\"last_check_status\":%u,\"last_check_result\":\"%s\","
                            "\"last_check_ms_ago\":%lld,\"consecutive_check_failures\":%u",
                            mg_hc_state_name(atomic_load_explicit(&st->hc_state, memory_order_relaxed)),
                            (unsigned)atomic_load_explicit(&st->hc_last_status, memory_order_relaxed),
                            mg_hc_result_name(atomic_load_explicit(&st->hc_last_result, memory_order_relaxed)),
                            last ? (long long)(now - last) : -1LL,
                            (unsigned)atomic_load_explicit(&st->hc_failures, memory_order_relaxed));
            }
            mg_buf_add(&b, "}", 1);
        }
        mg_buf_add(&b, "]}", 2);
    }
    mg_buf_add(&b, "]}\n", 3);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

/* ---- resilience and rate-limit views ---- */

static void breaker_json(mg_buf_t *b, mg_breaker_t *br, uint64_t now)
{
    mg_breaker_snap_t sn;
    mg_breaker_snapshot(br, now, &sn);
    mg_buf_add(b, "{\"name\":", 8);
    mg_buf_json_str(b, mg_slice_cstr(mg_breaker_name(br)));
    mg_buf_addf(b,
                ",\"state\":\"%s\",\"failure_rate\":%.2f,\"slow_call_rate\":%.2f,\"calls\":%u,"
                "\"failed_calls\":%u,\"slow_calls\":%u,\"consecutive_failures\":%u,"
                "\"half_open_permits_left\":%u,\"ms_until_half_open\":%llu,"
                "\"successes\":%llu,\"failures\":%llu,\"ignored\":%llu,\"not_permitted\":%llu,"
                "\"transitions\":{\"open\":%llu,\"half_open\":%llu,\"closed\":%llu},\"resets\":%llu}",
                mg_cb_state_name(sn.state), (double)sn.failure_rate, (double)sn.slow_rate, sn.calls, sn.failed_calls,
                sn.slow_calls, sn.consecutive_failures, sn.half_open_permits_left,
                (unsigned long long)sn.ms_until_half_open, (unsigned long long)sn.successes,
                (unsigned long long)sn.failures, (unsigned long long)sn.ignored,
                (unsigned long long)sn.not_permitted, (unsigned long long)sn.entered[MG_CB_OPEN],
                (unsigned long long)sn.entered[MG_CB_HALF_OPEN], (unsigned long long)sn.entered[MG_CB_CLOSED],
                (unsigned long long)sn.resets);
}

/* Every breaker of the snapshot once (routes may share one by name). */
static size_t collect_breakers(const mg_snapshot_t *snap, mg_breaker_t **out, size_t max)
{
    size_t n = 0;
    const mg_resil_t *r = &snap->resil;
    for (size_t i = 0; i < r->nroutes + r->nclusters; i++) {
        mg_breaker_t *b = i < r->nroutes ? r->route_breakers[i] : r->clusters[i - r->nroutes].breaker;
        if (!b)
            continue;
        bool seen = false;
        for (size_t j = 0; j < n && !seen; j++)
            seen = out[j] == b;
        if (!seen && n < max)
            out[n++] = b;
    }
    return n;
}

static void get_breakers(admin_conn_t *c, mg_snapshot_t *snap)
{
    mg_breaker_t *bs[1024];
    size_t n = collect_breakers(snap, bs, 1024);
    uint64_t now = mg_now_ms();
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_add(&b, "{\"circuit_breakers\":[", 21);
    for (size_t i = 0; i < n; i++) {
        if (i)
            mg_buf_add(&b, ",", 1);
        breaker_json(&b, bs[i], now);
    }
    mg_buf_add(&b, "]}\n", 3);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

/* POST /circuit-breakers/<name>/{open,close,reset}: drills. */
static void post_breaker(admin_conn_t *c, mg_snapshot_t *snap, mg_slice_t rest)
{
    const char *slash = memrchr(rest.p, '/', rest.n);
    if (!slash) {
        reply_error(c, 404, "Not Found", "use /circuit-breakers/<name>/open|close|reset");
        return;
    }
    mg_slice_t name = { rest.p, (size_t)(slash - rest.p) };
    mg_slice_t action = { slash + 1, rest.n - (size_t)(slash - rest.p) - 1 };
    mg_breaker_t *bs[1024];
    size_t n = collect_breakers(snap, bs, 1024);
    mg_breaker_t *br = NULL;
    for (size_t i = 0; i < n && !br; i++)
        if (mg_slice_eq(mg_slice_cstr(mg_breaker_name(bs[i])), name))
            br = bs[i];
    if (!br) {
        reply_error(c, 404, "Not Found", "no such circuit breaker");
        return;
    }
    uint64_t now = mg_now_ms();
    if (mg_slice_eq(action, MG_SLICE_LIT("open")))
        mg_breaker_force(br, MG_CB_FORCED_OPEN, now);
    else if (mg_slice_eq(action, MG_SLICE_LIT("close")))
        mg_breaker_force(br, MG_CB_DISABLED, now);
    else if (mg_slice_eq(action, MG_SLICE_LIT("reset")))
        mg_breaker_reset(br, now);
    else {
        reply_error(c, 400, "Bad Request", "action must be open, close or reset");
        return;
    }
    mg_log(MG_LOG_WARN, "admin: circuit breaker '%s' %.*s", mg_breaker_name(br), (int)action.n, action.p);
    mg_buf_t b;
    mg_buf_init(&b);
    breaker_json(&b, br, now);
    mg_buf_add(&b, "\n", 1);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

static void get_stats(admin_conn_t *c, mg_snapshot_t *snap)
{
    mg_buf_t b;
    mg_buf_init(&b);
    uint64_t now = mg_now_ms();
    mg_buf_addf(&b, "{\"access_log_dropped\":%llu,\"clusters\":{", (unsigned long long)mg_alog_dropped());
    for (size_t i = 0; i < snap->resil.nclusters; i++) {
        const mg_cluster_rt_t *rt = &snap->resil.clusters[i];
        mg_bulkhead_stats_t bh;
        mg_retry_budget_stats_t rb;
        mg_bulkhead_stats(rt->bulkhead, &bh);
        mg_retry_budget_stats(rt->budget, &rb);
        if (i)
            mg_buf_add(&b, ",", 1);
        mg_buf_json_str(&b, mg_slice_cstr(snap->clusters.clusters[i].cfg->name));
        mg_buf_addf(&b,
                    ":{\"active_requests\":%u,\"overflow\":{\"max_requests\":%llu,\"max_pending\":%llu,"
                    "\"max_connections\":%llu},\"retries\":{\"active\":%u,\"granted\":%llu,"
                    "\"budget_exhausted\":%llu}",
                    bh.requests, (unsigned long long)bh.overflow[MG_OVERFLOW_REQUESTS],
                    (unsigned long long)bh.overflow[MG_OVERFLOW_PENDING],
                    (unsigned long long)bh.overflow[MG_OVERFLOW_CONNECTIONS], rb.active_retries,
                    (unsigned long long)rb.granted, (unsigned long long)rb.overflow);
        if (rt->outlier) {
            mg_outlier_stats_t os;
            mg_outlier_stats(rt->outlier, &os);
            mg_buf_addf(&b,
                        ",\"outlier_detection\":{\"ejected\":%u,\"panic\":%s,\"ejections_5xx\":%llu,"
                        "\"ejections_gateway\":%llu,\"overflow\":%llu,\"unejected\":%llu}",
                        os.ejected, os.panic ? "true" : "false", (unsigned long long)os.enforced_5xx,
                        (unsigned long long)os.enforced_gateway, (unsigned long long)os.overflow,
                        (unsigned long long)os.unejected);
        }
        mg_buf_add(&b, "}", 1);
    }
    mg_buf_lit(&b, "},\"circuit_breakers\":[");
    mg_breaker_t *bs[1024];
    size_t n = collect_breakers(snap, bs, 1024);
    for (size_t i = 0; i < n; i++) {
        if (i)
            mg_buf_add(&b, ",", 1);
        breaker_json(&b, bs[i], now);
    }
    mg_buf_add(&b, "],\"rate_limits\":{", 17);
    size_t nr = mg_route_count(snap->routes);
    bool first = true;
    for (size_t i = 0; i < nr; i++) {
        const mg_rl_limiter_t *l = mg_route_rate_limiter(mg_route_at(snap->routes, i));
        if (!l || !l->stats)
            continue;
        mg_rl_counts_t k;
        mg_rl_stats_sum(l->stats, mg_proxy_rl_local(), &k);
        if (!first)
            mg_buf_add(&b, ",", 1);
        first = false;
        mg_buf_json_str(&b, l->route_id);
        mg_buf_addf(&b,
                    ":{\"allowed\":%llu,\"denied\":%llu,\"empty_key\":%llu,\"backend_error\":%llu,"
                    "\"evictions\":%llu}",
                    (unsigned long long)k.allowed, (unsigned long long)k.denied, (unsigned long long)k.empty_key,
                    (unsigned long long)k.backend_error, (unsigned long long)k.evictions);
    }
    mg_buf_add(&b, "}}\n", 3);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

/* GET /rate-limits/<route>?key=K: a local bucket's tokens. */
static void get_rate_limit(admin_conn_t *c, mg_snapshot_t *snap, mg_slice_t route)
{
    const mg_rl_limiter_t *l = NULL;
    size_t nr = mg_route_count(snap->routes);
    for (size_t i = 0; i < nr && !l; i++) {
        const mg_route_t *r = mg_route_at(snap->routes, i);
        if (mg_slice_eq(mg_slice_cstr(r->cfg->id), route))
            l = mg_route_rate_limiter(r);
    }
    if (!l) {
        reply_error(c, 404, "Not Found", "no rate-limited route with that id");
        return;
    }
    mg_slice_t key = MG_SLICE_NULL;
    mg_slice_t q = c->req.query;
    for (size_t i = 0; q.p && i < q.n;) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        if (j - i >= 4 && memcmp(q.p + i, "key=", 4) == 0)
            key = (mg_slice_t){ q.p + i + 4, j - i - 4 };
        i = j + 1;
    }
    if (!key.p) {
        reply_error(c, 400, "Bad Request", "give ?key=<the key, e.g. a client IP>");
        return;
    }
    double tokens = mg_rl_local_tokens(mg_proxy_rl_local(), &l->cfg.params, l->route_id, key, mg_rl_now_us());
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_add(&b, "{\"route\":", 9);
    mg_buf_json_str(&b, l->route_id);
    mg_buf_add(&b, ",\"key\":", 7);
    mg_buf_json_str(&b, key);
    mg_buf_addf(&b, ",\"tokens\":%.3f,\"replenish_rate\":%s,\"burst_capacity\":%s,\"backend\":\"%s\"}\n",
                tokens, l->txt_rate, l->txt_burst, snap->cfg->redis.enabled ? "redis (local view)" : "local");
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

static void dispatch(admin_conn_t *c)
{
    mg_http_msg_t *m = &c->req;
    static const mg_slice_t cb_prefix = MG_SLICE_LIT("/circuit-breakers/");
    static const mg_slice_t rl_prefix = MG_SLICE_LIT("/rate-limits/");
    bool is_post = m->method_id == MG_METHOD_POST;
    if (m->method_id != MG_METHOD_GET && m->method_id != MG_METHOD_HEAD && !is_post) {
        reply_error(c, 405, "Method Not Allowed", "method not allowed");
        return;
    }
    mg_snapshot_t *snap = mg_server_current(c->a->srv);
    mg_slice_t p = m->path;
    if (is_post) {
        if (p.n > cb_prefix.n && memcmp(p.p, cb_prefix.p, cb_prefix.n) == 0)
            post_breaker(c, snap, (mg_slice_t){ p.p + cb_prefix.n, p.n - cb_prefix.n });
        else
            reply_error(c, 405, "Method Not Allowed", "method not allowed");
    } else if (mg_slice_eq(p, MG_SLICE_LIT("/health")))
        get_health(c, snap);
    else if (mg_slice_eq(p, MG_SLICE_LIT("/routes")))
        get_routes(c, snap);
    else if (mg_slice_eq(p, MG_SLICE_LIT("/clusters")))
        get_clusters(c, snap);
    else if (mg_slice_eq(p, MG_SLICE_LIT("/circuit-breakers")))
        get_breakers(c, snap);
    else if (mg_slice_eq(p, MG_SLICE_LIT("/stats")))
        get_stats(c, snap);
    else if (p.n > rl_prefix.n && memcmp(p.p, rl_prefix.p, rl_prefix.n) == 0)
        get_rate_limit(c, snap, (mg_slice_t){ p.p + rl_prefix.n, p.n - rl_prefix.n });
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
