/* exchange: one request/response through the proxy.
 *
 * Picks the endpoint, re-serializes the request head canonically (hop-by-hop
 * fields dropped, X-Forwarded-* and Via added, one framing header), streams
 * the body both ways through mg_pipe_t, validates the upstream response and
 * decides whether either connection may be reused. Every failure ends in
 * exactly one of: a local JSON error reply (nothing sent yet), or closing
 * the client connection (a response was already under way). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy_int.h"
#include "cluster/health.h"
#include "ratelimit/limiter.h"

static const char CRLF[] = "\r\n";

static mg_cb_outcome_t attempt_done(mg_session_t *s, mg_up_result_t r, int status);
static bool try_fallback(mg_session_t *s, const char *exc_type, const char *exc_msg);
static void respond_route(mg_session_t *s);
static const char LAST_CHUNK[] = "0\r\n\r\n";

/* ---- body framing ---- */

ssize_t mg_pipe_take(mg_pipe_t *p, const char *src, size_t n, uv_buf_t *iov, unsigned max, unsigned *niov)
{
    *niov = 0;
    if (p->done)
        return 0;
    switch (p->in) {
    case MG_BODY_NONE:
        p->done = true;
        return 0;
    case MG_BODY_LENGTH: {
        size_t k = n < p->remaining ? n : (size_t)p->remaining;
        if (k) {
            iov[(*niov)++] = uv_buf_init((char *)src, (unsigned)k);
            p->remaining -= k;
            p->payload += k;
        }
        if (p->remaining == 0)
            p->done = true;
        return (ssize_t)k;
    }
    case MG_BODY_EOF:
        if (n) {
            if (p->out_chunked) {
                int l = snprintf(p->sz[0], sizeof p->sz[0], "%zx\r\n", n);
                iov[(*niov)++] = uv_buf_init(p->sz[0], (unsigned)l);
                iov[(*niov)++] = uv_buf_init((char *)src, (unsigned)n);
                iov[(*niov)++] = uv_buf_init((char *)CRLF, 2);
            } else {
                iov[(*niov)++] = uv_buf_init((char *)src, (unsigned)n);
            }
            p->payload += n;
        }
        return (ssize_t)n;
    case MG_BODY_CHUNKED: {
        mg_slice_t spans[MG_PIPE_IOV / 3];
        size_t maxspans = (max - 1) / 3;
        if (maxspans > MG_PIPE_IOV / 3)
            maxspans = MG_PIPE_IOV / 3;
        size_t nspans = 0;
        int done = 0;
        ssize_t used = mg_chunked_decode(&p->ch, src, n, spans, maxspans, &nspans, &done);
        if (used < 0)
            return used;
        for (size_t i = 0; i < nspans; i++) {
            if (p->out_chunked) {
                int l = snprintf(p->sz[i], sizeof p->sz[i], "%zx\r\n", spans[i].n);
                iov[(*niov)++] = uv_buf_init(p->sz[i], (unsigned)l);
                iov[(*niov)++] = uv_buf_init((char *)spans[i].p, (unsigned)spans[i].n);
                iov[(*niov)++] = uv_buf_init((char *)CRLF, 2);
            } else {
                iov[(*niov)++] = uv_buf_init((char *)spans[i].p, (unsigned)spans[i].n);
            }
            p->payload += spans[i].n;
        }
        if (done) {
            p->done = true;
            if (p->out_chunked)
                iov[(*niov)++] = uv_buf_init((char *)LAST_CHUNK, 5);
        }
        return used;
    }
    }
    return 0;
}

static void pipe_init(mg_pipe_t *p, mg_body_kind_t in, uint64_t len, bool out_chunked)
{
    p->in = in;
    p->remaining = len;
    p->payload = 0;
    mg_chunked_reset(&p->ch);
    p->out_chunked = out_chunked;
    p->done = in == MG_BODY_NONE || (in == MG_BODY_LENGTH && len == 0);
}

/* ---- endpoint choice ---- */

static uint64_t rng_next(mg_worker_t *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return w->rng = x;
}

static uint32_t pick_lb(mg_session_t *s, const mg_cluster_t *c, size_t ci)
{
    mg_worker_t *w = s->w;
    uint32_t n = c->neps;
    if (n == 1)
        return 0;
    switch (c->cfg->lb) {
    case MG_LB_RANDOM:
        return (uint32_t)(rng_next(w) % n);
    case MG_LB_LEAST_REQUEST: {
        uint32_t a = (uint32_t)(rng_next(w) % n);
        uint32_t b = (uint32_t)(rng_next(w) % (n - 1));
        if (b >= a)
            b++;
        mg_pool_t *pa = mg_worker_pool(w, c->eps[a].stats->index);
        mg_pool_t *pb = mg_worker_pool(w, c->eps[b].stats->index);
        if (!pa || !pb)
            return a;
        return pb->nactive < pa->nactive ? b : a;
    }
    case MG_LB_ROUND_ROBIN:
    default:
        return s->ws->rr[ci]++ % n;
    }
}

/* The load balancer's choice, skipping ejected endpoints (outlier
 * detection; none are skipped in panic) and, on a retry, the endpoint
 * that just failed when another one is usable. */
static uint32_t pick_endpoint(mg_session_t *s, const mg_cluster_t *c, size_t ci, const mg_outlier_t *od)
{
    uint32_t n = c->neps;
    uint32_t i = pick_lb(s, c, ci);
    if (n == 1)
        return i;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t j = (i + k) % n;
        if (od && mg_outlier_excluded(od, j))
            continue;
        if (c->cfg->has_health && !mg_ep_hc_usable(c->eps[j].stats))
            continue;
        if (s->attempts > 0 && j == s->avoid_ep)
            continue;
        return j;
    }
    return i;
}

/* ---- the request head for upstream ---- */

static void add_list(mg_buf_t *b, const char *name, const mg_hdr_list_t *l, mg_slice_t ours)
{
    size_t nlen = strlen(name);
    mg_buf_add(b, name, nlen);
    mg_buf_add(b, ": ", 2);
    for (uint32_t i = 0; i < l->n; i++) {
        const mg_hdr_t *h = &l->v[i];
        if (h->name.n == nlen && strncasecmp(h->name.p, name, nlen) == 0 && h->value.n) {
            mg_buf_add(b, h->value.p, h->value.n);
            mg_buf_add(b, ", ", 2);
        }
    }
    mg_buf_add(b, ours.p, ours.n);
    mg_buf_add(b, CRLF, 2);
}

static bool is_forwarded_name(mg_slice_t n)
{
    if (n.n == 3)
        return strncasecmp(n.p, "via", 3) == 0;
    if (n.n < 15 || strncasecmp(n.p, "x-forwarded-", 12) != 0)
        return false;
    return mg_slice_caseeq_cstr(n, "x-forwarded-for") || mg_slice_caseeq_cstr(n, "x-forwarded-proto") ||
           mg_slice_caseeq_cstr(n, "x-forwarded-host");
}

/* The request as filters see it: views into the parsed head (no copies);
 * hop-by-hop fields and Host are left out, the proxy writes those. */
static int fill_req_view(mg_session_t *s)
{
    const mg_http_msg_t *m = &s->req;
    mg_req_view_t *v = &s->view;
    v->arena = s->arena;
    v->msg = m;
    v->client_ip = mg_slice_cstr(s->peer);
    v->method = m->method;
    v->path = m->path;
    v->query = m->query;
    v->host = (m->flags & MG_MSG_ABSOLUTE_FORM) ? m->authority : m->host;
    v->preserve_host = true;
    v->headers = (mg_hdr_list_t){ 0 };
    v->local_headers = (mg_hdr_list_t){ 0 };
    v->max_body = 0;
    v->local_status = 0;
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const mg_http_header_t *h = &m->headers[i];
        if (h->flags & (MG_HDR_HOP | MG_HDR_HOST))
            continue;
        if (mg_hdr_add(s->arena, &v->headers, h->name, h->value))
            return -431;
    }
    return 0;
}

static void build_upstream_head(mg_session_t *s, const mg_endpoint_t *ep)
{
    const mg_http_msg_t *m = &s->req;
    const mg_req_view_t *v = &s->view;
    mg_buf_t *b = &s->ubuf;
    b->len = 0;
    mg_buf_add(b, v->method.p, v->method.n);
    mg_buf_add(b, " ", 1);
    mg_buf_add(b, v->path.p, v->path.n);
    if (v->query.p) {
        mg_buf_add(b, "?", 1);
        mg_buf_add(b, v->query.p, v->query.n);
    }
    mg_buf_add(b, " HTTP/1.1\r\nHost: ", 17);
    if (v->host.n)
        mg_buf_add(b, v->host.p, v->host.n);
    else /* HTTP/1.0 without Host: name the endpoint */
        mg_buf_add(b, ep->stats->name, strlen(ep->stats->name));
    mg_buf_add(b, CRLF, 2);
    for (uint32_t i = 0; i < v->headers.n; i++) {
        const mg_hdr_t *h = &v->headers.v[i];
        if (is_forwarded_name(h->name))
            continue;
        mg_buf_add(b, h->name.p, h->name.n);
        mg_buf_add(b, ": ", 2);
        mg_buf_add(b, h->value.p, h->value.n);
        mg_buf_add(b, CRLF, 2);
    }
    mg_slice_t client_host = (m->flags & MG_MSG_ABSOLUTE_FORM) ? m->authority : m->host;
    add_list(b, "X-Forwarded-For", &v->headers, mg_slice_cstr(s->peer));
    add_list(b, "X-Forwarded-Proto", &v->headers, MG_SLICE_LIT("http"));
    if (client_host.n)
        add_list(b, "X-Forwarded-Host", &v->headers, client_host);
    add_list(b, "Via", &v->headers, m->version == 10 ? MG_SLICE_LIT("1.0 meshgate") : MG_SLICE_LIT("1.1 meshgate"));
    if (m->body == MG_BODY_LENGTH) {
        mg_buf_add(b, "Content-Length: ", 16);
        mg_buf_add_u64(b, m->content_length);
        mg_buf_add(b, CRLF, 2);
    } else if (m->body == MG_BODY_CHUNKED) {
        mg_buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
    }
    mg_buf_add(b, CRLF, 2);
}

static const char CONTINUE_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

static void on_100_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status;
}

/* The request passed routing, filters and limits: pick an endpoint and
 * send it there. */
static void exchange_to_cluster(mg_session_t *s)
{
    mg_worker_t *w = s->w;
    mg_http_msg_t *m = &s->req;
    const mg_snapshot_t *snap = s->ws->snap;
    const mg_config_t *cfg = snap->cfg;
    const mg_route_cfg_t *rc = s->route->cfg;
    if (rc->respond) {
        respond_route(s);
        return;
    }
    size_t ci = rc->cluster_index;
    const mg_cluster_t *c = &snap->clusters.clusters[ci];
    mg_cluster_rt_t *crt = &snap->resil.clusters[ci];
    uint64_t now = uv_now(&w->loop);
    if (s->attempts == 0 && s->fallback_depth == 0) {
        /* route metadata, else the cluster's, else the global timeout; a
         * time limiter (resilience4j.timelimiter) caps the whole call */
        s->response_timeout_ms = rc->response_timeout_ms   ? rc->response_timeout_ms
                                 : c->cfg->response_timeout_ms ? c->cfg->response_timeout_ms
                                                               : cfg->response_timeout_ms;
        if (rc->time_limit_ms && rc->time_limit_ms < s->response_timeout_ms)
            s->response_timeout_ms = rc->time_limit_ms;
        s->deadline_ms = now + s->response_timeout_ms;
    }
    if (c->neps == 0) {
        /* a registry-fed cluster with no passing instance (or an empty one);
         * 404 with Spring's loadbalancer.use404 */
        char msg[192];
        snprintf(msg, sizeof msg, "no instance of service '%.120s'", c->cfg->name);
        mg_session_local_reply(s, cfg->discovery.use404 ? 404 : 503, msg, false);
        return;
    }
    /* breaker: the route's (Spring CircuitBreaker filter / native), else the cluster's */
    mg_breaker_t *b = snap->resil.route_breakers[mg_route_index(snap->routes, s->route)];
    if (!b)
        b = crt->breaker;
    if (b && !mg_breaker_acquire(b, w->id, now, &s->cb_ticket)) {
        if (!try_fallback(s, "io.github.resilience4j.circuitbreaker.CallNotPermittedException",
                          "CircuitBreaker is OPEN and does not permit further calls"))
            mg_session_local_reply(s, 503, "circuit breaker is open", s->rq != RQ_DONE);
        return;
    }
    s->cb = b;
    s->crt = crt;
    if (!s->bh) {
        if (mg_bulkhead_request_enter(crt->bulkhead, w->id) != 0) {
            mg_exchange_overflow(s, MG_OVERFLOW_REQUESTS);
            return;
        }
        s->bh = crt->bulkhead;
    }
    s->ep_idx = pick_endpoint(s, c, ci, crt->outlier);
    s->ep = &c->eps[s->ep_idx];
    s->t_attempt = now;
    s->up_reusable = true;
    mg_http_msg_reset(&s->resp); /* a retry or fallback parses a new response */
    pipe_init(&s->reqp, m->body, m->content_length, m->body == MG_BODY_CHUNKED);
    build_upstream_head(s, s->ep);
    if ((m->flags & MG_MSG_EXPECT_CONTINUE) && s->rq == RQ_BODY && m->version == 11 && s->rpos == s->rlen) {
        uv_buf_t eb = uv_buf_init((char *)CONTINUE_100, sizeof CONTINUE_100 - 1);
        int n = uv_try_write((uv_stream_t *)&s->tcp, &eb, 1);
        if (n >= 0 && (size_t)n < eb.len) {
            eb.base += n;
            eb.len -= (size_t)n;
            n = UV_EAGAIN;
        }
        if (n == UV_EAGAIN) {
            s->wreq100.data = s;
            uv_write(&s->wreq100, (uv_stream_t *)&s->tcp, &eb, 1, on_100_written);
        }
    }
    s->rs = RS_CONNECT;
    mg_pool_acquire(w, s, s->ep, false);
}

void mg_exchange_overflow(mg_session_t *s, mg_overflow_t which)
{
    static const char *const msg[MG_OVERFLOW_N] = {
        "", "cluster overloaded (max_requests)", "cluster overloaded (max_pending)",
        "no upstream connection free in time (max_connections)",
    };
    attempt_done(s, MG_UP_CANCELLED, 0);
    mg_hdr_list_t extra = { 0 };
    mg_hdr_add(s->arena, &extra, MG_SLICE_LIT("x-meshgate-overflow"), mg_slice_cstr(mg_overflow_name(which)));
    mg_session_local_reply_h(s, 503, msg[which], s->rq != RQ_DONE, &extra);
}

/* A native `respond:` route: meshgate answers itself (fallback targets, canned answers). */
static void respond_route(mg_session_t *s)
{
    const mg_route_cfg_t *rc = s->route->cfg;
    mg_session_respond(s, rc->respond_status, (const char *const *)rc->respond_headers, rc->nrespond_headers,
                       rc->respond_body, rc->respond_body ? strlen(rc->respond_body) : 0);
}

/* ---- rate limiting ---- */

static void rate_limit_verdict(mg_session_t *s)
{
    if (s->rl_v.allowed) {
        exchange_to_cluster(s);
        return;
    }
    mg_rl_hdrs_t h;
    mg_rl_headers(s->rl, &s->rl_v, &h);
    mg_hdr_list_t extra = { 0 };
    for (uint32_t i = 0; i < h.n; i++)
        mg_hdr_add(s->arena, &extra, h.name[i], mg_arena_dup(s->arena, h.value[i]));
    mg_session_local_reply_h(s, s->rl_v.status, s->rl_v.status == 429 ? "too many requests" : "request denied",
                             false, &extra);
}

static void on_rl_reply(void *arg, const mg_rl_redis_reply_t *reply)
{
    mg_session_t *s = arg;
    s->rl_handle = NULL;
    s->rl_v = mg_rl_verdict_redis(s->rl, s->w->id, reply->status, reply);
    rate_limit_verdict(s);
}

/* Returns 0 when the exchange may go on at once; 1 when it was answered
 * or waits for Redis (on_rl_reply continues it). */
static int rate_limit(mg_session_t *s)
{
    mg_worker_t *w = s->w;
    mg_slice_t key;
    mg_rl_key_input_t in = { .msg = &s->req, .peer = (const struct sockaddr *)&s->peer_addr,
                             .route_id = s->rl->route_id };
    if (!mg_rl_begin(s->rl, w->id, &in, s->rl_key, sizeof s->rl_key, &key, &s->rl_v)) {
        if (w->rl_redis) {
            int rc = mg_rl_redis_check(w->rl_redis, s->rl->route_id, key, &s->rl->cfg.params, on_rl_reply, s,
                                       &s->rl_handle);
            if (rc == 0)
                return 1;
            s->rl_v = mg_rl_verdict_redis(s->rl, w->id, rc, NULL);
        } else {
            s->rl_v = mg_rl_decide_local(s->rl, w->id, mg_proxy_rl_local(), key, mg_rl_now_us());
        }
    }
    if (s->rl_v.allowed)
        return 0;
    rate_limit_verdict(s);
    return 1;
}

/* ---- start ---- */

void mg_exchange_start(mg_session_t *s, size_t head_len)
{
    mg_worker_t *w = s->w;
    mg_http_msg_t *m = &s->req;
    s->exchange = true;
    s->t_start = uv_hrtime();
    s->bytes_in = head_len;
    s->bytes_out = 0;
    s->status = 0;
    s->ws = w->cur;
    s->ws->inflight++;
    const mg_snapshot_t *snap = s->ws->snap;
    const mg_config_t *cfg = snap->cfg;

    size_t ml = m->method.n < sizeof s->log_method - 1 ? m->method.n : sizeof s->log_method - 1;
    memcpy(s->log_method, m->method.p, ml);
    s->log_method[ml] = 0;
    size_t pl = m->target.n < sizeof s->log_path - 1 ? m->target.n : sizeof s->log_path - 1;
    memcpy(s->log_path, m->target.p, pl);
    s->log_path[pl] = 0;

    if (m->version == 10)
        s->keepalive = s->keepalive && (m->flags & MG_MSG_CONN_KEEPALIVE);
    else if (m->flags & MG_MSG_CONN_CLOSE)
        s->keepalive = false;

    s->rpos += head_len;
    /* A small Content-Length body already in the read buffer is kept there
     * (not compacted away) so a retry or fallback can send it again. */
    s->body_start = s->rpos;
    s->body_buffered = m->body == MG_BODY_LENGTH && m->content_length > 0 && s->rlen - s->rpos >= m->content_length;
    bool has_body = !(m->body == MG_BODY_NONE || (m->body == MG_BODY_LENGTH && m->content_length == 0));
    s->rq = has_body ? RQ_BODY : RQ_DONE;
    s->rs = RS_NONE;
    s->up_reusable = true;
    s->resp_started = false;
    s->cw_consume = s->uw_consume = 0;
    mg_http_msg_reset(&s->resp);
    s->crt = NULL;
    s->cb = NULL;
    s->bh = NULL;
    s->attempts = s->retries = s->fallback_depth = s->last_backoff = 0;
    s->in_retry = false;
    s->ep_idx = s->avoid_ep = UINT32_MAX;
    mg_session_timer(s, has_body ? ST_BODY : ST_NONE, cfg->body_timeout_ms);

    s->max_body = cfg->max_body_bytes;
    if (s->max_body && m->body == MG_BODY_LENGTH && m->content_length > s->max_body) {
        mg_session_local_reply(s, 413, "request body too large", true);
        return;
    }
    if (m->method_id == MG_METHOD_CONNECT) {
        mg_session_local_reply(s, 501, "CONNECT is not supported", true);
        return;
    }
    mg_match_ctx_t mctx = { .req = m, .peer = (const struct sockaddr *)&s->peer_addr, .rng = &w->rng, .now_ms = 0 };
    s->view.vars.n = 0;
    s->route = mg_route_match(snap->routes, &mctx, &s->view.vars);
    if (!s->route) {
        mg_session_local_reply(s, 404, "no route", false);
        return;
    }
    mg_route_hit(s->route, w->id);
    if (!s->arena && !(s->arena = mg_arena_new(4096, MG_ARENA_LIMIT))) {
        mg_session_local_reply(s, 503, "out of memory", true);
        return;
    }
    mg_arena_reset(s->arena);
    int frc = fill_req_view(s);
    if (frc == 0 && s->route->has_filters)
        frc = mg_filters_request(s->route, &s->view);
    if (frc < 0 || s->view.local_status) {
        /* Answered by a filter (RedirectTo, RequestSize, ...): the route's
         * response filters still apply, as in Spring. */
        mg_resp_view_t *rv = &s->rview;
        *rv = (mg_resp_view_t){ .arena = s->arena, .status = frc < 0 ? -frc : s->view.local_status,
                                .headers = s->view.local_headers };
        if (s->route->has_response_filters)
            mg_filters_response(s->route, &s->view, rv);
        const char *msg = frc == -413 ? "request body too large" : frc < 0 ? "request rejected by filter" : NULL;
        mg_session_local_reply_h(s, rv->status, msg, frc < 0, &rv->headers);
        return;
    }
    if (s->view.max_body && (!s->max_body || s->view.max_body < s->max_body))
        s->max_body = s->view.max_body;
    if (s->max_body && m->body == MG_BODY_LENGTH && m->content_length > s->max_body) {
        mg_session_local_reply(s, 413, "request body too large", true);
        return;
    }
    s->rl = mg_route_rate_limiter(s->route);
    if (s->rl && rate_limit(s) != 0)
        return; /* answered, or waiting for Redis */
    exchange_to_cluster(s);
}

/* ---- request side ---- */

static void upstream_fail_r(mg_session_t *s, mg_up_result_t r, int status, const char *msg);

static void upstream_fail(mg_session_t *s, int status, const char *msg)
{
    upstream_fail_r(s, MG_UP_CANCELLED, status, msg);
}

/* ---- resilience: one attempt's outcome, retries, fallbacks ---- */

/* Time left for this attempt's response: the route's deadline covers all
 * attempts; a retry policy may cap each try. */
static uint64_t try_timeout(mg_session_t *s)
{
    uint64_t now = uv_now(&s->w->loop);
    uint64_t left = s->deadline_ms > now ? s->deadline_ms - now : 1;
    const mg_route_cfg_t *rc = s->route ? s->route->cfg : NULL;
    if (rc && rc->has_retry && rc->retry.per_try_timeout_ms && rc->retry.per_try_timeout_ms < left)
        left = rc->retry.per_try_timeout_ms;
    return left;
}

/* Record how the current attempt ended with the breaker and the outlier
 * detector (exactly once per attempt). Returns the breaker's verdict. */
static mg_cb_outcome_t attempt_done(mg_session_t *s, mg_up_result_t r, int status)
{
    uint64_t now = uv_now(&s->w->loop);
    mg_cb_outcome_t o = MG_CB_IGNORED;
    if (s->cb) {
        o = r == MG_UP_CANCELLED ? MG_CB_IGNORED : mg_breaker_classify(mg_breaker_cfg(s->cb), r, status);
        mg_breaker_record(s->cb, s->w->id, s->cb_ticket, o, now - s->t_attempt, now);
        s->cb = NULL;
    }
    if (s->crt && s->crt->outlier && r != MG_UP_CANCELLED && s->ep_idx < mg_outlier_neps(s->crt->outlier))
        mg_outlier_report(s->crt->outlier, s->ep_idx, r, status, now);
    if (s->in_retry && s->crt) {
        mg_retry_budget_release(s->crt->budget);
        s->in_retry = false;
    }
    return o;
}

/* The exchange is over: give back what it held. Idempotent. */
void mg_exchange_release(mg_session_t *s)
{
    mg_pool_cancel_wait(s);
    if (s->bh_pending && s->crt) {
        mg_bulkhead_pending_leave(s->crt->bulkhead);
        s->bh_pending = false;
    }
    if (s->cb)
        attempt_done(s, MG_UP_CANCELLED, 0);
    if (s->in_retry && s->crt) {
        mg_retry_budget_release(s->crt->budget);
        s->in_retry = false;
    }
    if (s->bh) {
        mg_bulkhead_request_leave(s->bh);
        s->bh = NULL;
    }
    s->crt = NULL;
}

static const char *exception_type(mg_up_result_t r)
{
    switch (r) {
    case MG_UP_CONNECT_FAILURE: return "java.net.ConnectException";
    case MG_UP_TIMEOUT: return "java.util.concurrent.TimeoutException";
    case MG_UP_RESET: return "java.io.IOException";
    case MG_UP_PROTOCOL: return "org.springframework.web.reactive.function.client.WebClientResponseException";
    default: return "java.lang.RuntimeException";
    }
}

/* Can the request be sent again? Without a body, or with a body still
 * whole in the read buffer (bounded by the buffer size), or when no body
 * byte has been forwarded yet. */
static bool request_replayable(const mg_session_t *s)
{
    bool no_body = s->req.body == MG_BODY_NONE || (s->req.body == MG_BODY_LENGTH && s->req.content_length == 0);
    return no_body || s->body_buffered || s->reqp.payload == 0;
}

/* Before another attempt: the kept body is sent from its start again. */
static void rewind_body(mg_session_t *s)
{
    if (!s->body_buffered || s->reqp.payload == 0)
        return;
    s->rpos = s->body_start;
    s->rq = RQ_BODY;
}

static void exchange_to_cluster(mg_session_t *s);

/* Spring's forward: fallback: dispatch the request again, to the route
 * that matches the fallback path, with headers saying why (as Spring's
 * FallbackHeaders filter). Returns false if there is no usable fallback. */
static bool try_fallback(mg_session_t *s, const char *exc_type, const char *exc_msg)
{
    const mg_route_t *r = s->route;
    if (!r || !r->cfg->fallback_path || s->fallback_depth > 0 || !request_replayable(s))
        return false;
    s->fallback_depth++;
    mg_http_msg_t *m = mg_arena_alloc(s->arena, sizeof *m);
    if (!m)
        return false;
    memcpy(m, &s->req, sizeof *m);
    m->path = mg_slice_cstr(r->cfg->fallback_path);
    m->query = MG_SLICE_NULL;
    mg_match_ctx_t mctx = { .req = m, .peer = (const struct sockaddr *)&s->peer_addr, .rng = &s->w->rng };
    mg_path_vars_t vars = { 0 };
    const mg_route_t *fr = mg_route_match(s->ws->snap->routes, &mctx, &vars);
    if (!fr)
        return false;
    mg_route_hit(fr, s->w->id);
    mg_hdr_set(s->arena, &s->view.headers, MG_SLICE_LIT("Execution-Exception-Type"), mg_slice_cstr(exc_type));
    mg_hdr_set(s->arena, &s->view.headers, MG_SLICE_LIT("Execution-Exception-Message"), mg_slice_cstr(exc_msg));
    s->view.path = m->path;
    s->view.query = MG_SLICE_NULL;
    s->view.vars = vars;
    s->route = fr;
    s->rl = NULL;
    if (fr->has_filters) {
        int frc = mg_filters_request(fr, &s->view);
        if (frc < 0 || s->view.local_status) {
            mg_session_local_reply_h(s, frc < 0 ? -frc : s->view.local_status, frc < 0 ? "fallback rejected" : NULL,
                                     frc < 0, &s->view.local_headers);
            return true;
        }
    }
    s->rs = RS_NONE;
    mg_http_msg_reset(&s->resp);
    rewind_body(s);
    exchange_to_cluster(s);
    return true;
}

static void on_retry_timer(mg_session_t *s);

/* May the request be retried after this outcome? Checks the route's
 * policy, that the body can be replayed, that the backoff ends before the
 * route's deadline, and takes a slot of the cluster's retry budget (so a
 * true answer commits: call retry_start). */
static bool retry_take(mg_session_t *s, mg_up_result_t res, int status, uint32_t *delay)
{
    const mg_route_cfg_t *rc = s->route ? s->route->cfg : NULL;
    if (!rc || !rc->has_retry || !s->crt || !request_replayable(s) ||
        !mg_retry_should(&rc->retry, s->attempts + 1, res, status, s->req.method_id, false))
        return false;
    uint64_t now = uv_now(&s->w->loop);
    *delay = mg_retry_backoff(&rc->retry, s->attempts + 1, s->last_backoff, rng_next(s->w));
    if (now + *delay >= s->deadline_ms ||
        !mg_retry_budget_acquire(s->crt->budget, s->w->id, mg_bulkhead_active_requests(s->crt->bulkhead)))
        return false;
    s->in_retry = true;
    s->retries++;
    return true;
}

static void retry_start(mg_session_t *s, uint32_t delay)
{
    s->last_backoff = delay;
    s->rs = RS_NONE;
    if (delay == 0)
        on_retry_timer(s);
    else
        mg_session_timer(s, ST_RETRY, delay);
}

/* An attempt failed before any response byte reached the client: retry it
 * (policy, budget, replayable body), fall back, or answer the error. */
static void upstream_fail_r(mg_session_t *s, mg_up_result_t res, int status, const char *msg)
{
    if (s->up) {
        if (res != MG_UP_CANCELLED)
            atomic_fetch_add_explicit(&s->up->ep->w[s->w->id].failures, 1, memory_order_relaxed);
        mg_exchange_detach(s, false);
    }
    if (s->resp_started) {
        attempt_done(s, res, status);
        mg_session_close(s);
        return;
    }
    if (res == MG_UP_CANCELLED) {
        attempt_done(s, res, status);
        mg_session_local_reply(s, status, msg, s->rq != RQ_DONE);
        return;
    }
    attempt_done(s, res, status);
    uint32_t delay;
    if (retry_take(s, res, status, &delay)) {
        retry_start(s, delay);
        return;
    }
    if (try_fallback(s, exception_type(res), msg))
        return;
    mg_session_local_reply(s, status, msg, s->rq != RQ_DONE);
}

/* The retry's backoff elapsed: a new attempt, on another endpoint when the
 * cluster has more than one. */
static void on_retry_timer(mg_session_t *s)
{
    rewind_body(s);
    s->attempts++;
    s->avoid_ep = s->ep_idx;
    exchange_to_cluster(s);
}

void mg_exchange_retry_timer(mg_session_t *s) { on_retry_timer(s); }

static void on_up_write(uv_write_t *req, int status)
{
    mg_upconn_t *up = req->data;
    if (up->owner)
        mg_exchange_up_written(up->owner, status);
}

/* 0: all written; 1: queued (client not read until done); <0: error. */
static int up_send(mg_session_t *s, uv_buf_t *bufs, unsigned n, size_t consume)
{
    mg_upconn_t *up = s->up;
    up->wreq.data = up;
    int rc = mg_stream_send((uv_stream_t *)&up->tcp, &up->wreq, bufs, n, on_up_write);
    if (rc == 0)
        s->rpos += consume;
    if (rc != 1)
        return rc;
    s->uw_pending = true;
    s->uw_consume = consume;
    mg_session_read(s, false);
    return 1;
}

static void request_body_progress(mg_session_t *s)
{
    const mg_config_t *cfg = s->ws->snap->cfg;
    if (s->reqp.done) {
        s->rq = RQ_DONE;
        mg_session_timer(s, ST_NONE, 0);
        if (s->rs == RS_WAIT && s->up)
            mg_upconn_timer(s->up, UT_RESPONSE, try_timeout(s));
    } else if (s->tstate != ST_SEND) {
        mg_session_timer(s, ST_BODY, cfg->body_timeout_ms);
    }
}

/* Sends body bytes and returns 1 if the caller must wait (write queued,
 * or failure handled), 0 when the buffer is drained or the body done. */
static int send_request_body(mg_session_t *s, uv_buf_t *iov, unsigned first, unsigned max)
{
    unsigned niov = 0;
    ssize_t used = 0;
    if (s->rq == RQ_BODY) {
        used = mg_pipe_take(&s->reqp, s->rbuf + s->rpos, s->rlen - s->rpos, iov + first, max - first, &niov);
        if (used < 0) {
            upstream_fail(s, 400, "invalid chunked request body");
            return 1;
        }
        if (s->max_body && s->reqp.payload > s->max_body) {
            upstream_fail(s, 413, "request body too large");
            return 1;
        }
        s->bytes_in += (uint64_t)used;
    }
    niov += first;
    int rc = 0;
    if (niov)
        rc = up_send(s, iov, niov, (size_t)used);
    else
        s->rpos += (size_t)used;
    if (rc < 0) {
        upstream_fail_r(s, MG_UP_RESET, 502, "upstream write failed");
        return 1;
    }
    if (s->rq == RQ_BODY)
        request_body_progress(s);
    if (rc == 1)
        return 1;
    return (s->rq != RQ_BODY || (used == 0 && first == 0)) ? 0 : 2;
}

void mg_exchange_forward_request(mg_session_t *s)
{
    uv_buf_t iov[MG_PIPE_IOV];
    while (s->exchange && s->rq == RQ_BODY && s->up && s->rs >= RS_WAIT && !s->uw_pending && !s->closing) {
        if (s->rpos == s->rlen) {
            mg_session_read(s, true);
            return;
        }
        int rc = send_request_body(s, iov, 0, MG_PIPE_IOV);
        if (rc != 2)
            break;
    }
    if (s->exchange && s->rq == RQ_BODY && !s->uw_pending && !s->closing)
        mg_session_read(s, true);
}

void mg_exchange_up_ready(mg_session_t *s, int status)
{
    if (status < 0) {
        upstream_fail_r(s, MG_UP_CONNECT_FAILURE, 503, "upstream connect failed");
        return;
    }
    s->rs = RS_WAIT;
    atomic_fetch_add_explicit(&s->up->ep->w[s->w->id].requests, 1, memory_order_relaxed);
    uv_buf_t iov[MG_PIPE_IOV];
    iov[0] = uv_buf_init(s->ubuf.p, (unsigned)s->ubuf.len);
    if (s->rq == RQ_DONE)
        mg_upconn_timer(s->up, UT_RESPONSE, try_timeout(s));
    else
        mg_upconn_timer(s->up, UT_NONE, 0);
    int rc = send_request_body(s, iov, 1, MG_PIPE_IOV);
    if (rc == 2)
        mg_exchange_forward_request(s);
}

void mg_exchange_up_written(mg_session_t *s, int status)
{
    s->uw_pending = false;
    if (status < 0) {
        if (status != UV_ECANCELED)
            upstream_fail_r(s, MG_UP_RESET, 502, "upstream write failed");
        return;
    }
    s->rpos += s->uw_consume;
    s->uw_consume = 0;
    mg_exchange_forward_request(s);
    mg_session_finish(s);
}

/* ---- response side ---- */

/* Serializes the response head for the client from the response view,
 * after the route's response filters ran. Returns -1 if the head does not
 * fit the per-request arena (answered as 502). */
static int build_client_head(mg_session_t *s)
{
    const mg_http_msg_t *r = &s->resp;
    mg_resp_view_t *rv = &s->rview;
    mg_buf_t *b = &s->hbuf;
    bool client10 = s->req.version == 10;
    rv->arena = s->arena;
    rv->status = r->status;
    rv->reason = r->reason;
    rv->headers = (mg_hdr_list_t){ 0 };
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const mg_http_header_t *h = &r->headers[i];
        if (!(h->flags & MG_HDR_HOP) && mg_hdr_add(s->arena, &rv->headers, h->name, h->value))
            return -1;
    }
    if (s->route && s->route->has_response_filters) {
        mg_filters_response(s->route, &s->view, rv);
        if (rv->status != r->status || !rv->reason.p)
            rv->reason = mg_slice_cstr(mg_reason_phrase(rv->status));
    }
    s->status = rv->status;
    b->len = 0;
    char st[4] = { (char)('0' + rv->status / 100 % 10), (char)('0' + rv->status / 10 % 10),
                   (char)('0' + rv->status % 10), ' ' };
    mg_buf_add(b, "HTTP/1.1 ", 9);
    mg_buf_add(b, st, 4);
    mg_buf_add(b, rv->reason.p, rv->reason.n);
    mg_buf_add(b, CRLF, 2);
    for (uint32_t i = 0; i < rv->headers.n; i++) {
        const mg_hdr_t *h = &rv->headers.v[i];
        mg_buf_add(b, h->name.p, h->name.n);
        mg_buf_add(b, ": ", 2);
        mg_buf_add(b, h->value.p, h->value.n);
        mg_buf_add(b, CRLF, 2);
    }
    switch (r->body) {
    case MG_BODY_NONE:
        if (!((r->flags & MG_MSG_HAS_CL) && r->status != 204 && r->status >= 200))
            break;
        /* HEAD and 304 keep the length the upstream announced */
        __attribute__((fallthrough));
    case MG_BODY_LENGTH:
        mg_buf_add(b, "Content-Length: ", 16);
        mg_buf_add_u64(b, r->content_length);
        mg_buf_add(b, CRLF, 2);
        break;
    case MG_BODY_CHUNKED:
    case MG_BODY_EOF:
        if (client10)
            s->keepalive = false; /* close-delimited for HTTP/1.0 */
        else
            mg_buf_add(b, "Transfer-Encoding: chunked\r\n", 28);
        break;
    }
    if (s->rl && s->rl_v.headers) {
        char rlh[256];
        size_t n = mg_rl_format_headers(s->rl, &s->rl_v, rlh, sizeof rlh);
        mg_buf_add(b, rlh, n);
    }
    if (s->w->draining)
        s->keepalive = false;
    if (!s->keepalive)
        mg_buf_add(b, "Connection: close\r\n", 19);
    else if (client10)
        mg_buf_add(b, "Connection: keep-alive\r\n", 24);
    mg_buf_add(b, CRLF, 2);
    return 0;
}

/* Forward what is buffered from upstream. Returns after queuing a write,
 * draining the buffer, or finishing the body. */
static void forward_response_from(mg_session_t *s, uv_buf_t *iov, unsigned first)
{
    mg_upconn_t *up = s->up;
    const mg_config_t *cfg = s->ws->snap->cfg;
    for (;;) {
        unsigned niov = 0;
        ssize_t used = 0;
        if (s->rs == RS_BODY) {
            used = mg_pipe_take(&s->resp_pipe, up->rbuf + up->rpos, up->rlen - up->rpos, iov + first,
                                MG_PIPE_IOV - first, &niov);
            if (used < 0) {
                upstream_fail_r(s, MG_UP_PROTOCOL, 502, "invalid chunked upstream body");
                return;
            }
            if (s->resp_pipe.done) {
                s->rs = RS_DONE;
                mg_upconn_timer(up, UT_NONE, 0);
                if (up->rpos + (size_t)used < up->rlen)
                    s->up_reusable = false; /* bytes after the message */
            } else {
                mg_upconn_timer(up, UT_BODY, cfg->body_timeout_ms);
            }
        }
        niov += first;
        if (niov == 0) {
            up->rpos += (size_t)used;
            if (used == 0 || s->rs != RS_BODY)
                break;
            continue;
        }
        int rc = mg_session_client_send(s, iov, niov, (size_t)used);
        if (rc < 0) {
            mg_session_close(s);
            return;
        }
        if (rc == 1 || s->rs != RS_BODY || up->rpos == up->rlen)
            break;
        first = 0;
    }
    if (s->rs == RS_BODY && !s->cw_pending)
        mg_upconn_read(up, true);
}

void mg_exchange_forward_response(mg_session_t *s)
{
    uv_buf_t iov[MG_PIPE_IOV];
    if (s->up && s->rs == RS_BODY && !s->cw_pending && !s->closing)
        forward_response_from(s, iov, 0);
}

void mg_exchange_up_data(mg_session_t *s)
{
    mg_upconn_t *up = s->up;
    while (s->rs == RS_WAIT) {
        int r = mg_http_parse_response(up->rbuf + up->rpos, up->rlen - up->rpos, &s->resp,
                                       &s->ws->snap->limits, s->req.method_id);
        if (r == 0)
            return;
        if (r < 0) {
            upstream_fail_r(s, MG_UP_PROTOCOL, 502, "invalid upstream response");
            return;
        }
        if (s->resp.status < 200) {
            if (s->resp.status == 101) {
                upstream_fail_r(s, MG_UP_PROTOCOL, 502, "unexpected protocol switch from upstream");
                return;
            }
            up->rpos += (size_t)r; /* interim response: dropped */
            mg_http_msg_reset(&s->resp);
            continue;
        }
        if ((s->resp.flags & MG_MSG_CONN_CLOSE) || (s->resp.version == 10 && !(s->resp.flags & MG_MSG_CONN_KEEPALIVE)))
            s->up_reusable = false;
        int st = s->resp.status;
        mg_cb_outcome_t o = attempt_done(s, MG_UP_RESPONSE, st);
        bool fallback = o == MG_CB_FAILURE && s->route->cfg->fallback_path && s->fallback_depth == 0 &&
                        request_replayable(s);
        uint32_t delay;
        bool retry = retry_take(s, MG_UP_RESPONSE, st, &delay);
        if (retry || fallback) {
            /* A status the retry policy or the breaker's statusCodes reject:
             * this response is dropped, and its connection not reused. */
            mg_exchange_detach(s, false);
            if (retry)
                retry_start(s, delay);
            else if (!try_fallback(s, "org.springframework.cloud.gateway.support.ServiceUnavailableException",
                                   "upstream answered with a failure status"))
                mg_session_local_reply(s, 502, "upstream failed and the fallback is unavailable", s->rq != RQ_DONE);
            return;
        }
        bool client10 = s->req.version == 10;
        bool out_chunked = !client10 && (s->resp.body == MG_BODY_CHUNKED || s->resp.body == MG_BODY_EOF);
        pipe_init(&s->resp_pipe, s->resp.body, s->resp.content_length, out_chunked);
        if (s->resp.body == MG_BODY_EOF)
            s->up_reusable = false;
        if (build_client_head(s) < 0) {
            upstream_fail_r(s, MG_UP_PROTOCOL, 502, "upstream response head too large");
            return;
        }
        up->rpos += (size_t)r;
        s->resp_started = true;
        s->rs = s->resp_pipe.done ? RS_DONE : RS_BODY;
        if (s->rs == RS_DONE) {
            mg_upconn_timer(up, UT_NONE, 0);
            if (up->rpos < up->rlen)
                s->up_reusable = false; /* a body where none may be */
        }
        uv_buf_t iov[MG_PIPE_IOV];
        iov[0] = uv_buf_init(s->hbuf.p, (unsigned)s->hbuf.len);
        forward_response_from(s, iov, 1);
        mg_session_finish(s);
        return;
    }
    if (s->rs == RS_BODY) {
        mg_exchange_forward_response(s);
        mg_session_finish(s);
    } else if (s->rs == RS_DONE) {
        s->up_reusable = false; /* bytes after a complete response */
    }
}

static bool retry_safe(const mg_session_t *s)
{
    switch (s->req.method_id) {
    case MG_METHOD_GET:
    case MG_METHOD_HEAD:
    case MG_METHOD_OPTIONS:
    case MG_METHOD_TRACE:
    case MG_METHOD_PUT:
    case MG_METHOD_DELETE:
        break;
    default:
        return false;
    }
    return s->req.body == MG_BODY_NONE || (s->req.body == MG_BODY_LENGTH && s->req.content_length == 0);
}

void mg_exchange_up_eof(mg_session_t *s, int err)
{
    mg_upconn_t *up = s->up;
    if (s->rs == RS_WAIT) {
        /* A pooled connection the upstream closed just as we reused it: the
         * request never reached the application, so try once more on a
         * fresh connection. */
        if (up->reused && up->rlen == 0 && !s->retried && s->rq == RQ_DONE && retry_safe(s)) {
            s->retried = true;
            mg_exchange_detach(s, false);
            s->rs = RS_CONNECT;
            mg_http_msg_reset(&s->resp);
            mg_pool_acquire(s->w, s, s->ep, true);
            return;
        }
        upstream_fail_r(s, MG_UP_RESET, 502, err == UV_EOF ? "upstream closed connection" : "upstream connection error");
        return;
    }
    if (s->rs == RS_BODY) {
        if (s->resp_pipe.in == MG_BODY_EOF && err == UV_EOF) {
            s->resp_pipe.done = true;
            s->rs = RS_DONE;
            s->up_reusable = false;
            mg_upconn_timer(up, UT_NONE, 0);
            if (s->resp_pipe.out_chunked) {
                uv_buf_t b = uv_buf_init((char *)LAST_CHUNK, 5);
                if (mg_session_client_send(s, &b, 1, 0) < 0) {
                    mg_session_close(s);
                    return;
                }
            }
            mg_exchange_detach(s, false);
            mg_session_finish(s);
            return;
        }
        /* Truncated body: the client must see the message incomplete. */
        atomic_fetch_add_explicit(&up->ep->w[s->w->id].failures, 1, memory_order_relaxed);
        mg_session_close(s);
        return;
    }
    s->up_reusable = false;
    if (s->rs == RS_DONE)
        mg_session_finish(s);
}

void mg_exchange_up_timeout(mg_session_t *s, mg_utimer_t which)
{
    switch (which) {
    case UT_CONNECT:
        upstream_fail_r(s, MG_UP_CONNECT_FAILURE, 503, "upstream connect timeout");
        break;
    case UT_RESPONSE:
        upstream_fail_r(s, MG_UP_TIMEOUT, 504, "upstream response timeout");
        break;
    default:
        upstream_fail_r(s, MG_UP_TIMEOUT, 504, "upstream body timeout");
        break;
    }
}

void mg_exchange_detach(mg_session_t *s, bool reuse)
{
    mg_upconn_t *up = s->up;
    if (!up)
        return;
    const mg_cluster_cfg_t *cc = s->route && !s->route->cfg->respond
                                     ? s->ws->snap->clusters.clusters[s->route->cfg->cluster_index].cfg
                                     : NULL;
    up->served++;
    reuse = reuse && !s->uw_pending && (!s->crt || mg_bulkhead_conn_reusable(s->crt->bulkhead, up->served));
    s->up = NULL;
    s->uw_pending = false;
    mg_pool_release(up, reuse, cc ? cc->max_idle : 0, cc ? cc->idle_timeout_ms : 0);
}
