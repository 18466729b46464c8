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
#include "discovery/consul_api.h"
#include "discovery/dnssrc.h"
#include "discovery/registry.h"
#include "http/http1.h"
#include "obs/accesslog.h"
#include "ratelimit/limiter.h"

#define ADMIN_RBUF 16384
#define ADMIN_MAX_BODY (1u << 20)

typedef struct admin_conn admin_conn_t;

struct mg_admin {
    uv_tcp_t listener;
    uv_loop_t *loop;
    mg_server_t *srv;
    uint64_t started_ns;
    int nconns;
    bool stopping;
    /* discovery (mg_admin_set_discovery) */
    mg_registry_t *reg;
    mg_consul_api_t *consul;
    uv_timer_t wake;       /* zero-delay: a registry change, check parked queries */
    bool wake_init;
    admin_conn_t *parked;  /* blocking queries waiting for a change */
    void (*stats_extra)(void *ud, mg_buf_t *b); /* mg_admin_set_stats_extra */
    void *stats_extra_ud;
    mg_dnssrc_t *dns;      /* DNS discovery (mg_admin_set_dns), or NULL */
};

struct admin_conn {
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
    /* request body (Content-Length), read after the head */
    char *body;
    size_t body_len, body_need;
    bool reading_body;
    /* a parked blocking query */
    bool parked;
    mg_consul_resp_t cresp;
    admin_conn_t *park_prev, *park_next;
};

static void park_unlink(admin_conn_t *c)
{
    if (!c->parked)
        return;
    if (c->park_prev)
        c->park_prev->park_next = c->park_next;
    else
        c->a->parked = c->park_next;
    if (c->park_next)
        c->park_next->park_prev = c->park_prev;
    c->park_prev = c->park_next = NULL;
    c->parked = false;
}

static void conn_closed(uv_handle_t *h)
{
    admin_conn_t *c = h->data;
    if (--c->open > 0)
        return;
    mg_buf_free(&c->out);
    mg_consul_resp_free(&c->cresp);
    free(c->body);
    c->a->nconns--;
    free(c);
}

static void conn_close(admin_conn_t *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    park_unlink(c);
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

/* ,"source":"static|dns|registry","labels":{...} of one endpoint */
static void ep_source_labels(mg_buf_t *b, const mg_endpoint_t *ep)
{
    mg_buf_addf(b, ",\"source\":\"%s\",\"labels\":{", mg_ep_source_name(ep->source));
    for (size_t k = 0; k < ep->nlabels; k++) {
        if (k)
            mg_buf_add(b, ",", 1);
        mg_buf_json_str(b, mg_slice_cstr(ep->labels[k].key));
        mg_buf_add(b, ":", 1);
        mg_buf_json_str(b, mg_slice_cstr(ep->labels[k].value));
    }
    mg_buf_add(b, "}", 1);
}

/* A registry endpoint's instance, check status and last heartbeat, read
 * live from the registry (a heartbeat does not rebuild the snapshot; the
 * snapshot's status is the one it was built with). */
static void registry_ep_json(mg_buf_t *b, const mg_admin_t *a, const mg_endpoint_t *ep)
{
    mg_buf_lit(b, ",\"instance_id\":");
    mg_buf_json_str(b, mg_slice_cstr(ep->instance_id ? ep->instance_id : ""));
    const mg_reg_instance_t *in = a->reg && ep->instance_id ? mg_registry_instance_get(a->reg, ep->instance_id) : NULL;
    mg_buf_addf(b, ",\"check_status\":\"%s\"",
                mg_check_status_name(in ? mg_reg_instance_status(in) : (mg_check_status_t)ep->check_status));
    int64_t now = (int64_t)uv_now(a->loop), last = -1;
    for (size_t k = 0; in && k < in->def.nchecks; k++) {
        const mg_reg_check_t *ck = &in->checks[k];
        int64_t beat = ck->ttl_deadline_ms - ck->def->ttl_ms; /* re-armed to now + TTL at each heartbeat */
        if (ck->def->kind == MG_CHECK_TTL && beat > last)
            last = beat;
    }
    if (last >= 0)
        mg_buf_addf(b, ",\"last_heartbeat_ms_ago\":%lld", (long long)(now > last ? now - last : 0));
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
            const mg_endpoint_t *ep = &cl->eps[j];
            mg_buf_addf(&b, "%s{\"address\":", j ? "," : "");
            mg_buf_json_str(&b, mg_slice_cstr(st->name));
            ep_source_labels(&b, ep);
            if (ep->source == MG_EP_REGISTRY)
                registry_ep_json(&b, c->a, ep);
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
    mg_buf_addf(&b, "{\"access_log_dropped\":%llu,\"endpoint_slots\":{\"used\":%u,\"recycled\":%llu},\"clusters\":{",
                (unsigned long long)mg_alog_dropped(), mg_ep_registry_count(),
                (unsigned long long)mg_ep_registry_recycled());
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
    mg_buf_add(&b, "}", 1);
    if (c->a->reg) {
        const mg_registry_stats_t *rs = mg_registry_stats(c->a->reg);
        mg_buf_addf(&b,
                    ",\"registry\":{\"instances\":%zu,\"services\":%zu,\"index\":%llu,\"registered\":%llu,"
                    "\"deregistered\":%llu,\"reaped\":%llu,\"ttl_expired\":%llu,\"rejected_invalid\":%llu,"
                    "\"rejected_full\":%llu,\"persist_errors\":%llu}",
                    mg_registry_instance_count(c->a->reg), mg_registry_service_count(c->a->reg),
                    (unsigned long long)mg_registry_index(c->a->reg, NULL), (unsigned long long)rs->registered,
                    (unsigned long long)rs->deregistered, (unsigned long long)rs->reaped,
                    (unsigned long long)rs->ttl_expired, (unsigned long long)rs->rejected_invalid,
                    (unsigned long long)rs->rejected_full, (unsigned long long)rs->persist_errors);
    }
    if (c->a->stats_extra)
        c->a->stats_extra(c->a->stats_extra_ud, &b);
    if (c->a->dns) {
        mg_buf_lit(&b, ",\"dns\":");
        mg_dnssrc_stats_json(c->a->dns, &b);
    }
    /* the serving endpoints by source, over all clusters */
    uint64_t by_src[3] = { 0, 0, 0 };
    for (size_t i = 0; i < snap->clusters.n; i++)
        for (uint32_t j = 0; j < snap->clusters.clusters[i].neps; j++)
            by_src[snap->clusters.clusters[i].eps[j].source % 3]++;
    mg_buf_addf(&b, ",\"endpoints\":{\"static\":%llu,\"dns\":%llu,\"registry\":%llu}",
                (unsigned long long)by_src[MG_EP_STATIC], (unsigned long long)by_src[MG_EP_DNS],
                (unsigned long long)by_src[MG_EP_REGISTRY]);
    mg_buf_add(&b, "}\n", 2);
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

/* ---- discovery: GET /registry and the Consul API ---- */

/* An instance's labels, as the clusters see them (registry.h): Meta, then
 * the "k=v" tags whose k is not in Meta. */
static void reg_labels(mg_buf_t *b, const mg_reg_def_t *d)
{
    bool first = true;
    for (size_t k = 0; k < d->nmeta; k++, first = false) {
        if (!first)
            mg_buf_add(b, ",", 1);
        mg_buf_json_str(b, mg_slice_cstr(d->meta[k].name));
        mg_buf_add(b, ":", 1);
        mg_buf_json_str(b, mg_slice_cstr(d->meta[k].value));
    }
    for (size_t k = 0; k < d->ntags; k++) {
        const char *eq = strchr(d->tags[k], '=');
        if (!eq || eq == d->tags[k])
            continue;
        size_t kn = (size_t)(eq - d->tags[k]);
        bool in_meta = false;
        for (size_t j = 0; j < d->nmeta && !in_meta; j++)
            in_meta = strlen(d->meta[j].name) == kn && !memcmp(d->meta[j].name, d->tags[k], kn);
        for (size_t j = 0; j < k && !in_meta; j++) /* the first k=v tag wins */
            in_meta = !strncmp(d->tags[j], d->tags[k], kn + 1);
        if (in_meta)
            continue;
        if (!first)
            mg_buf_add(b, ",", 1);
        first = false;
        mg_buf_json_str(b, (mg_slice_t){ .p = d->tags[k], .n = kn });
        mg_buf_add(b, ":", 1);
        mg_buf_json_str(b, mg_slice_cstr(eq + 1));
    }
}

/* The static endpoints of the serving snapshot, per cluster (GET /registry
 * "static"; the registry's instances and the DNS entries are listed next to
 * it, GET /clusters shows every source per cluster). */
static void static_json(mg_buf_t *b, const mg_snapshot_t *snap)
{
    mg_buf_lit(b, ",\"static\":[");
    bool first = true;
    for (size_t i = 0; i < snap->clusters.n; i++) {
        const mg_cluster_t *cl = &snap->clusters.clusters[i];
        if (cl->cfg->synthesized)
            continue;
        bool any = false;
        for (uint32_t j = 0; j < cl->neps; j++) {
            const mg_endpoint_t *ep = &cl->eps[j];
            if (ep->source != MG_EP_STATIC)
                continue;
            if (!any) {
                mg_buf_addf(b, "%s{\"name\":", first ? "" : ",");
                mg_buf_json_str(b, mg_slice_cstr(cl->cfg->name));
                mg_buf_lit(b, ",\"instances\":[");
                first = false;
            } else {
                mg_buf_add(b, ",", 1);
            }
            any = true;
            mg_buf_lit(b, "{\"address\":");
            mg_buf_json_str(b, mg_slice_cstr(ep->stats->name));
            ep_source_labels(b, ep);
            mg_buf_addf(b, ",\"healthy\":%s}", !cl->cfg->has_health || mg_ep_hc_usable(ep->stats) ? "true" : "false");
        }
        if (any)
            mg_buf_lit(b, "]}");
    }
    mg_buf_add(b, "]", 1);
}

static void get_registry(admin_conn_t *c, const mg_snapshot_t *snap)
{
    mg_registry_t *reg = c->a->reg;
    int64_t now = (int64_t)uv_now(c->a->loop);
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_addf(&b, "{\"index\":%llu,\"instances\":%zu,\"services\":[",
                (unsigned long long)mg_registry_index(reg, NULL), mg_registry_instance_count(reg));
    size_t cur = 0;
    mg_reg_service_view_t sv;
    for (bool first = true; mg_registry_service_next(reg, &cur, &sv); first = false) {
        mg_buf_addf(&b, "%s{\"name\":", first ? "" : ",");
        mg_buf_json_str(&b, mg_slice_cstr(sv.name));
        mg_buf_addf(&b, ",\"index\":%llu,\"instances\":[", (unsigned long long)sv.index);
        for (size_t i = 0; i < sv.n; i++) {
            const mg_reg_instance_t *in = sv.instances[i];
            const mg_reg_def_t *d = &in->def;
            mg_buf_addf(&b, "%s{\"id\":", i ? "," : "");
            mg_buf_json_str(&b, mg_slice_cstr(d->id));
            mg_buf_lit(&b, ",\"address\":");
            mg_buf_json_str(&b, mg_slice_cstr(d->address && d->address[0] ? d->address
                                                                           : mg_registry_opts(reg)->node_address));
            mg_buf_addf(&b, ",\"port\":%u,\"status\":\"%s\",\"tags\":[", d->port,
                        mg_check_status_name(mg_reg_instance_status(in)));
            for (size_t k = 0; k < d->ntags; k++) {
                if (k)
                    mg_buf_add(&b, ",", 1);
                mg_buf_json_str(&b, mg_slice_cstr(d->tags[k]));
            }
            mg_buf_lit(&b, "],\"meta\":{");
            for (size_t k = 0; k < d->nmeta; k++) {
                if (k)
                    mg_buf_add(&b, ",", 1);
                mg_buf_json_str(&b, mg_slice_cstr(d->meta[k].name));
                mg_buf_add(&b, ":", 1);
                mg_buf_json_str(&b, mg_slice_cstr(d->meta[k].value));
            }
            mg_buf_lit(&b, "},\"source\":\"registry\",\"labels\":{");
            reg_labels(&b, d);
            mg_buf_lit(&b, "},\"checks\":[");
            for (size_t k = 0; k < d->nchecks; k++) {
                const mg_reg_check_t *ck = &in->checks[k];
                mg_buf_addf(&b, "%s{\"id\":", k ? "," : "");
                mg_buf_json_str(&b, mg_slice_cstr(ck->def->id));
                mg_buf_addf(&b, ",\"type\":\"%s\",\"status\":\"%s\",\"output\":", mg_check_kind_name(ck->def->kind),
                            mg_check_status_name(ck->status));
                mg_buf_json_str(&b, mg_slice_cstr(ck->output));
                if (ck->def->kind == MG_CHECK_TTL) {
                    /* the deadline is re-armed to now + TTL at each heartbeat */
                    int64_t last = ck->ttl_deadline_ms - ck->def->ttl_ms;
                    mg_buf_addf(&b, ",\"ttl_ms\":%lld,\"last_heartbeat_ms_ago\":%lld,\"expires_in_ms\":%lld",
                                (long long)ck->def->ttl_ms, (long long)(now > last ? now - last : 0),
                                (long long)(ck->ttl_deadline_ms > now ? ck->ttl_deadline_ms - now : 0));
                }
                mg_buf_add(&b, "}", 1);
            }
            mg_buf_add(&b, "]}", 2);
        }
        mg_buf_add(&b, "]}", 2);
    }
    mg_buf_add(&b, "]", 1);
    static_json(&b, snap);
    if (c->a->dns) {
        mg_buf_lit(&b, ",\"dns\":");
        mg_dnssrc_entries_json(c->a->dns, &b);
    }
    mg_buf_add(&b, "}\n", 2);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

/* GET /dns: the DNS discovery entries and their counters. */
static void get_dns(admin_conn_t *c)
{
    mg_buf_t b;
    mg_buf_init(&b);
    mg_buf_lit(&b, "{\"stats\":");
    mg_dnssrc_stats_json(c->a->dns, &b);
    mg_buf_lit(&b, ",\"entries\":");
    mg_dnssrc_entries_json(c->a->dns, &b);
    mg_buf_add(&b, "}\n", 2);
    reply(c, 200, "OK", &b);
    mg_buf_free(&b);
}

void mg_admin_set_dns(mg_admin_t *a, mg_dnssrc_t *dns) { a->dns = dns; }

static const char *status_reason(int st)
{
    switch (st) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    default: return st < 300 ? "OK" : st < 500 ? "Client Error" : "Server Error";
    }
}

static void consul_reply(admin_conn_t *c, const mg_consul_resp_t *r)
{
    mg_buf_t *o = &c->out;
    o->len = 0;
    mg_buf_addf(o, "HTTP/1.1 %d %s\r\n", r->status, status_reason(r->status));
    if (r->content_type)
        mg_buf_addf(o, "Content-Type: %s\r\n", r->content_type);
    mg_buf_addf(o, "Content-Length: %zu\r\n%sCache-Control: no-store\r\nConnection: close\r\n\r\n", r->body.len,
                r->headers);
    if (c->req.method_id != MG_METHOD_HEAD && r->body.len)
        mg_buf_add(o, r->body.p, r->body.len);
    c->answered = true;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    uv_buf_t b = uv_buf_init(o->p, (unsigned)o->len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0)
        conn_close(c);
}

static mg_slice_t header_value(const mg_http_msg_t *m, const char *name)
{
    const mg_http_header_t *h = mg_http_find(m, mg_slice_cstr(name));
    return h ? h->value : (mg_slice_t){ "", 0 };
}

/* Run (or re-run, for a parked query) the Consul handler and answer,
 * unless it parks. */
static void consul_run(admin_conn_t *c, unsigned flags)
{
    mg_consul_req_t rq = {
        .method = c->req.method,
        .path = c->req.path,
        .query = c->req.query.p ? c->req.query : (mg_slice_t){ "", 0 },
        .x_consul_token = header_value(&c->req, "X-Consul-Token"),
        .authorization = header_value(&c->req, "Authorization"),
        .body = { c->body ? c->body : "", c->body_len },
    };
    mg_consul_verdict_t v = mg_consul_handle(c->a->consul, &rq, flags, (int64_t)uv_now(c->a->loop), &c->cresp);
    if (v == MG_CONSUL_BLOCK) {
        park_unlink(c);
        c->parked = true;
        c->park_next = c->a->parked;
        if (c->park_next)
            c->park_next->park_prev = c;
        c->a->parked = c;
        return;
    }
    park_unlink(c);
    consul_reply(c, &c->cresp);
}

static void on_park_deadline(uv_timer_t *t)
{
    admin_conn_t *c = t->data;
    if (c->parked && !c->answered)
        consul_run(c, MG_CONSUL_NOBLOCK);
}

/* A registry change: answer the parked queries whose index moved. */
static void on_wake(uv_timer_t *t)
{
    mg_admin_t *a = t->data;
    for (admin_conn_t *c = a->parked, *n; c; c = n) {
        n = c->park_next;
        if (mg_consul_woken(a->consul, &c->cresp))
            consul_run(c, MG_CONSUL_NOBLOCK);
    }
}

static void on_registry_change(void *ud, const mg_reg_event_t *ev)
{
    (void)ev;
    mg_admin_t *a = ud;
    if (!a->stopping && a->parked) /* only schedules: the listener must not re-enter */
        uv_timer_start(&a->wake, on_wake, 0, 0);
}

void mg_admin_set_discovery(mg_admin_t *a, mg_registry_t *reg, mg_consul_api_t *api)
{
    a->reg = reg;
    a->consul = api;
    if (!a->wake_init) {
        uv_timer_init(a->loop, &a->wake);
        a->wake.data = a;
        a->wake_init = true;
        if (reg && mg_registry_add_listener(reg, on_registry_change, a) != 0)
            mg_warn("admin: no registry listener slot; blocking queries wake only at their deadline");
    }
}

void mg_admin_set_stats_extra(mg_admin_t *a, void (*fn)(void *ud, mg_buf_t *b), void *ud)
{
    if (!a) return;
    a->stats_extra = fn;
    a->stats_extra_ud = ud;
}

static void dispatch_consul(admin_conn_t *c)
{
    consul_run(c, 0);
    if (c->parked) {
        /* the connection's timer now bounds the wait; keep reading to see a close */
        int64_t wait = c->cresp.wait_ms > 0 ? c->cresp.wait_ms : 0;
        uv_timer_start(&c->timer, on_park_deadline, (uint64_t)wait, 0);
    }
}

static void dispatch(admin_conn_t *c)
{
    mg_http_msg_t *m = &c->req;
    if (c->a->consul && mg_consul_match(m->path)) {
        dispatch_consul(c);
        return;
    }
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
    else if (c->a->reg && mg_slice_eq(p, MG_SLICE_LIT("/registry")))
        get_registry(c, snap);
    else if (mg_slice_eq(p, MG_SLICE_LIT("/stats")))
        get_stats(c, snap);
    else if (c->a->dns && mg_slice_eq(p, MG_SLICE_LIT("/dns")))
        get_dns(c);
    else if (p.n > rl_prefix.n && memcmp(p.p, rl_prefix.p, rl_prefix.n) == 0)
        get_rate_limit(c, snap, (mg_slice_t){ p.p + rl_prefix.n, p.n - rl_prefix.n });
    else
        reply_error(c, 404, "Not Found", "no such admin endpoint");
    mg_snapshot_unref(snap);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)sz;
    static char scratch[1024]; /* bytes after a complete request: only EOF matters */
    admin_conn_t *c = h->data;
    if (c->reading_body) {
        buf->base = c->body + c->body_len;
        buf->len = c->body_need - c->body_len;
    } else if (c->parked || c->rlen == ADMIN_RBUF) {
        buf->base = scratch;
        buf->len = sizeof scratch;
    } else {
        buf->base = c->rbuf + c->rlen;
        buf->len = ADMIN_RBUF - c->rlen;
    }
}

/* The head is complete (head_len bytes): collect a Content-Length body,
 * then dispatch. */
static void start_body(admin_conn_t *c, size_t head_len)
{
    mg_http_msg_t *m = &c->req;
    bool consul = c->a->consul && mg_consul_match(m->path);
    if (m->body == MG_BODY_CHUNKED) {
        if (consul) {
            reply_error(c, 411, "Length Required", "send the body with Content-Length");
            return;
        }
    } else if (m->body == MG_BODY_LENGTH && m->content_length > 0) {
        if (m->content_length > ADMIN_MAX_BODY) {
            reply_error(c, 413, "Payload Too Large", "request body over 1 MiB");
            return;
        }
        c->body_need = (size_t)m->content_length;
        c->body = malloc(c->body_need);
        if (!c->body) {
            reply_error(c, 500, "Internal Server Error", "out of memory");
            return;
        }
        size_t have = c->rlen - head_len;
        if (have > c->body_need)
            have = c->body_need;
        memcpy(c->body, c->rbuf + head_len, have);
        c->body_len = have;
        if (c->body_len < c->body_need) {
            c->reading_body = true;
            return;
        }
    }
    dispatch(c);
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
    if (c->parked || (n > 0 && !c->reading_body && c->body_need)) /* extra bytes after the request */
        return;
    if (c->reading_body) {
        c->body_len += (size_t)n;
        if (c->body_len >= c->body_need) {
            c->reading_body = false;
            dispatch(c);
        }
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
    start_body(c, (size_t)r);
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
    mg_consul_resp_init(&c->cresp);
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
    if (a->wake_init)
        uv_close((uv_handle_t *)&a->wake, NULL);
    uv_close((uv_handle_t *)&a->listener, NULL); /* `a` itself lives until exit */
}
