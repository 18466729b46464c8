/* session: one downstream (client) connection.
 *
 * A session reads the client into its own buffer, parses one request head
 * at a time, and runs one exchange (exchange.c) per request; pipelined
 * requests wait in the buffer and are answered in order. Writes go out
 * straight from the buffers they were read into: while a write is queued
 * the buffer it points into is pinned and its source is not read
 * (backpressure), so memory per connection is bounded. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/proxy_int.h"

static void on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

static void on_handle_closed(uv_handle_t *h)
{
    mg_session_t *s = h->data;
    if (--s->open_handles > 0)
        return;
    mg_worker_t *w = s->w;
    if (s->counted)
        mg_server_conn_leave(w->srv);
    mg_worker_session_closed(w, s);
    free(s->rbuf);
    mg_arena_free(s->arena);
    mg_buf_free(&s->hbuf);
    mg_buf_free(&s->ubuf);
    free(s);
}

static void on_timer(uv_timer_t *t);

/* Lazy timer: moving a deadline later (the common case: idle -> header ->
 * none -> idle on every request) only records it; the libuv timer is
 * re-armed when it fires early or when a deadline moves earlier. This keeps
 * timer-heap work off the per-request path. */
void mg_session_timer(mg_session_t *s, mg_stimer_t t, uint64_t ms)
{
    s->tstate = t;
    if (t == ST_NONE || ms == 0) {
        s->deadline = 0;
        return;
    }
    s->deadline = uv_now(&s->w->loop) + ms;
    if (s->armed == 0 || s->deadline < s->armed) {
        uv_timer_start(&s->timer, on_timer, ms, 0);
        s->armed = s->deadline;
    }
}

void mg_session_accept(mg_worker_t *w, uv_stream_t *server)
{
    mg_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return;
    s->w = w;
    uv_tcp_init(&w->loop, &s->tcp);
    s->tcp.data = s;
    if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
        uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
        return;
    }
    uv_timer_init(&w->loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 2;
    s->next = w->sessions;
    if (w->sessions)
        w->sessions->prev = s;
    w->sessions = s;
    w->nsessions++;
    w->accepted++;
    if (w->draining || !mg_server_conn_enter(w->srv)) {
        w->rejected_conns++;
        mg_session_close(s);
        return;
    }
    s->counted = true;
    uv_tcp_nodelay(&s->tcp, 1);
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) == 0) {
        s->peer_addr = ss;
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, s->peer, sizeof s->peer);
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, s->peer, sizeof s->peer);
    }
    if (!s->peer[0])
        strcpy(s->peer, "unknown");
    s->rbuf = malloc(MG_RBUF_SIZE);
    s->rcap = s->rbuf ? MG_RBUF_SIZE : 0;
    mg_buf_init(&s->hbuf);
    mg_buf_init(&s->ubuf);
    mg_http_msg_reset(&s->req);
    s->keepalive = true;
    s->reading = true;
    uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, on_client_read);
    /* The first request's header deadline runs from accept. */
    mg_session_timer(s, ST_HEADER, w->cur->snap->cfg->header_timeout_ms);
}

void mg_session_close(mg_session_t *s)
{
    if (s->closing && uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    s->closing = true;
    if (s->rl_handle) {
        mg_rl_redis_cancel(s->rl_handle);
        s->rl_handle = NULL;
    }
    if (s->up)
        mg_exchange_detach(s, false);
    mg_exchange_release(s);
    if (s->ws) {
        mg_wsnap_release(s->w, s->ws);
        s->ws = NULL;
    }
    s->exchange = false;
    uv_close((uv_handle_t *)&s->tcp, on_handle_closed);
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
}

/* SIGTERM: idle connections go now, busy ones after their response. */
void mg_session_drain(mg_session_t *s)
{
    s->keepalive = false;
    if (!s->exchange && s->rpos == s->rlen)
        mg_session_close(s);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    mg_session_close(req->data);
}

/* Close after queued writes are flushed (a FIN, then close). */
static void session_close_graceful(mg_session_t *s)
{
    if (s->closing)
        return;
    s->closing = true;
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
    mg_session_timer(s, ST_SEND, s->w->cur->snap->cfg->body_timeout_ms);
    s->sreq.data = s;
    if (uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, on_shutdown) != 0) {
        s->closing = false;
        mg_session_close(s);
    }
}

static void on_timer(uv_timer_t *t)
{
    mg_session_t *s = t->data;
    s->armed = 0;
    if (s->deadline == 0)
        return;
    uint64_t now = uv_now(&s->w->loop);
    if (now < s->deadline) {
        uv_timer_start(&s->timer, on_timer, s->deadline - now, 0);
        s->armed = s->deadline;
        return;
    }
    switch (s->tstate) {
    case ST_HEADER:
        if (s->rlen > s->rpos && !s->exchange) {
            mg_session_local_reply(s, 408, "request header timeout", true);
            return;
        }
        /* nothing received: just close */
        __attribute__((fallthrough));
    case ST_IDLE:
        mg_session_close(s);
        return;
    case ST_BODY:
        if (!s->resp_started) {
            mg_session_local_reply(s, 408, "request body timeout", true);
            return;
        }
        mg_session_close(s);
        return;
    case ST_RETRY:
        s->tstate = ST_NONE;
        mg_exchange_retry_timer(s);
        return;
    case ST_CONNWAIT:
        s->tstate = ST_NONE;
        mg_pool_cancel_wait(s);
        mg_exchange_overflow(s, MG_OVERFLOW_CONNECTIONS);
        return;
    case ST_SEND:
    case ST_NONE:
        mg_session_close(s);
        return;
    }
}

void mg_session_read(mg_session_t *s, bool on)
{
    if (s->reading == on || s->closing)
        return;
    s->reading = on;
    if (on)
        uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, on_client_read);
    else
        uv_read_stop((uv_stream_t *)&s->tcp);
}

static void on_client_write(uv_write_t *req, int status)
{
    mg_session_t *s = req->data;
    s->cw_pending = false;
    if (s->closing && uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (status < 0) {
        mg_session_close(s);
        return;
    }
    if (s->tstate == ST_SEND)
        mg_session_timer(s, ST_NONE, 0);
    if (s->up && s->cw_consume) {
        s->up->rpos += s->cw_consume;
        s->cw_consume = 0;
    }
    mg_exchange_forward_response(s);
    mg_session_finish(s);
}

/* Write bufs to st now as far as the socket takes them, and queue the rest
 * with wr (bufs is adjusted in place; libuv copies the array). Returns 0
 * when all was written, 1 when a write is queued (cb will run), or a
 * negative error. */
int mg_stream_send(uv_stream_t *st, uv_write_t *wr, uv_buf_t *bufs, unsigned n, uv_write_cb cb)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int w = uv_try_write(st, bufs, n);
    if (w == UV_EAGAIN || w == UV_ENOSYS)
        w = 0;
    if (w < 0)
        return w;
    if ((size_t)w == total)
        return 0;
    size_t off = (size_t)w;
    unsigned i = 0;
    while (off >= bufs[i].len) {
        off -= bufs[i].len;
        i++;
    }
    bufs[i].base += off;
    bufs[i].len -= off;
    int rc = uv_write(wr, st, bufs + i, n - i, cb);
    return rc < 0 ? rc : 1;
}

/* Queue bufs to the client. consume: bytes of the upstream buffer that
 * become free once they are written. Returns 0 if written at once, 1 if
 * queued (the upstream is not read until then), or a negative error. */
int mg_session_client_send(mg_session_t *s, uv_buf_t *bufs, unsigned n, size_t consume)
{
    for (unsigned i = 0; i < n; i++)
        s->bytes_out += bufs[i].len;
    s->wreq.data = s;
    int rc = mg_stream_send((uv_stream_t *)&s->tcp, &s->wreq, bufs, n, on_client_write);
    if (rc == 0 && s->up)
        s->up->rpos += consume;
    if (rc != 1)
        return rc;
    s->cw_pending = true;
    s->cw_consume = consume;
    if (s->up)
        mg_upconn_read(s->up, false);
    mg_session_timer(s, ST_SEND, s->w->cur->snap->cfg->body_timeout_ms);
    return 1;
}

const char *mg_reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 100: return "Continue";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "" : "Error";
    }
}

/* Answer the current request from meshgate itself with a small JSON body. */
/* Start a response from meshgate itself: status line and Connection. False
 * when nothing may be sent (closing, or a response already under way, in
 * which case the connection is closed). */
static bool local_reply_begin(mg_session_t *s, int status, bool close)
{
    if (s->closing)
        return false;
    if (s->up)
        mg_exchange_detach(s, false);
    if (!s->exchange) {
        /* An error before a request head was complete. */
        s->exchange = true;
        s->t_start = uv_hrtime();
        s->bytes_in = s->rlen - s->rpos;
        strcpy(s->log_method, "-");
        strcpy(s->log_path, "-");
        s->route = NULL;
        s->ep = NULL;
    }
    if (s->resp_started) {
        /* Part of a response already went out: all we can do is close. */
        mg_session_close(s);
        return false;
    }
    if (s->tstate == ST_RETRY || s->tstate == ST_CONNWAIT)
        mg_session_timer(s, ST_NONE, 0);
    mg_pool_cancel_wait(s);
    if (close || s->rq != RQ_DONE)
        s->keepalive = false;
    s->rq = RQ_DONE;
    s->rs = RS_DONE;
    s->status = status;
    s->resp_started = true;
    s->hbuf.len = 0;
    mg_buf_addf(&s->hbuf, "HTTP/1.1 %d %s\r\n", status, mg_reason_phrase(status));
    if (!s->keepalive)
        mg_buf_add(&s->hbuf, "Connection: close\r\n", 19);
    return true;
}

static void local_reply_send(mg_session_t *s)
{
    uv_buf_t b = uv_buf_init(s->hbuf.p, (unsigned)s->hbuf.len);
    if (mg_session_client_send(s, &b, 1, 0) < 0) {
        mg_session_close(s);
        return;
    }
    mg_session_finish(s);
}

void mg_session_local_reply(mg_session_t *s, int status, const char *msg, bool close)
{
    mg_session_local_reply_h(s, status, msg, close, NULL);
}

void mg_session_local_reply_h(mg_session_t *s, int status, const char *msg, bool close, const mg_hdr_list_t *extra)
{
    if (!local_reply_begin(s, status, close))
        return;
    for (uint32_t i = 0; extra && i < extra->n; i++) {
        mg_buf_add(&s->hbuf, extra->v[i].name.p, extra->v[i].name.n);
        mg_buf_add(&s->hbuf, ": ", 2);
        mg_buf_add(&s->hbuf, extra->v[i].value.p, extra->v[i].value.n);
        mg_buf_add(&s->hbuf, "\r\n", 2);
    }
    if (msg) {
        mg_buf_t body;
        mg_buf_init(&body);
        mg_buf_add(&body, "{\"error\":", 9);
        mg_buf_json_str(&body, mg_slice_cstr(msg));
        mg_buf_addf(&body, ",\"status\":%d}\n", status);
        mg_buf_addf(&s->hbuf, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", body.len);
        mg_buf_add(&s->hbuf, body.p, body.len);
        mg_buf_free(&body);
    } else {
        mg_buf_add(&s->hbuf, "Content-Length: 0\r\n\r\n", 21);
    }
    local_reply_send(s);
}

void mg_session_respond(mg_session_t *s, int status, const char *const *hdr_lines, size_t nhdr, const char *body,
                        size_t blen)
{
    if (!local_reply_begin(s, status, false))
        return;
    for (size_t i = 0; i < nhdr; i++) {
        mg_buf_add(&s->hbuf, hdr_lines[i], strlen(hdr_lines[i]));
        mg_buf_add(&s->hbuf, "\r\n", 2);
    }
    mg_buf_addf(&s->hbuf, "Content-Length: %zu\r\n\r\n", blen);
    if (s->req.method_id != MG_METHOD_HEAD)
        mg_buf_add(&s->hbuf, body ? body : "", blen);
    local_reply_send(s);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    mg_session_t *s = h->data;
    if (s->rlen == s->rcap && s->rpos > 0 && !s->uw_pending && !(s->exchange && s->body_buffered)) {
        memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
        s->rlen -= s->rpos;
        s->rpos = 0;
    }
    if (s->rlen == s->rcap && !s->exchange) {
        /* A head larger than the buffer: grow up to the header limit. */
        size_t max = (size_t)s->w->cur->snap->cfg->max_header_bytes + 1024;
        if (max < (size_t)s->w->cur->snap->cfg->max_request_line + 1024)
            max = (size_t)s->w->cur->snap->cfg->max_request_line + 1024;
        if (s->rcap < max) {
            size_t ncap = s->rcap * 2 < max ? s->rcap * 2 : max;
            char *p = realloc(s->rbuf, ncap);
            if (p) {
                s->rbuf = p;
                s->rcap = ncap;
            }
        }
    }
    buf->base = s->rbuf + s->rlen;
    buf->len = s->rcap - s->rlen;
}

static void on_client_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    mg_session_t *s = st->data;
    if (nread > 0) {
        s->rlen += (size_t)nread;
        mg_session_process(s);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        mg_session_read(s, false); /* buffer full: resumed when consumed */
        if (!s->exchange)
            mg_session_process(s);
        return;
    }
    /* EOF or error. A client may half-close after its last request: the
     * requests already buffered are still answered, then we close. */
    s->client_eof = true;
    mg_session_read(s, false);
    if (nread != UV_EOF || !s->exchange || s->rq != RQ_DONE)
        mg_session_close(s);
}

static void session_process(mg_session_t *s);

/* Parse and start requests while bytes and state allow. Re-entry (a request
 * answered at once, from inside this loop) just lets the loop go on. */
void mg_session_process(mg_session_t *s)
{
    if (s->in_process)
        return;
    s->in_process = true;
    session_process(s);
    s->in_process = false;
}

static void session_process(mg_session_t *s)
{
    while (!s->closing) {
        if (s->exchange) {
            if (s->rq == RQ_BODY)
                mg_exchange_forward_request(s);
            return;
        }
        if (s->rpos == s->rlen) {
            if (s->client_eof)
                mg_session_close(s);
            return;
        }
        if (s->rq == RQ_IDLE) {
            s->rq = RQ_HEAD;
            mg_http_msg_reset(&s->req);
            if (s->tstate != ST_HEADER)
                mg_session_timer(s, ST_HEADER, s->w->cur->snap->cfg->header_timeout_ms);
        }
        int r = mg_http_parse_request(s->rbuf + s->rpos, s->rlen - s->rpos, &s->req, &s->w->cur->snap->limits);
        if (r == 0) {
            if (s->rlen == s->rcap && s->rpos == 0 && !s->reading) {
                mg_session_local_reply(s, 431, "request header too large", true);
            } else if (s->client_eof) {
                mg_session_local_reply(s, 400, "incomplete request", true);
            } else if (!s->reading) {
                mg_session_read(s, true);
            }
            return;
        }
        if (r < 0) {
            const char *why = s->req.error ? s->req.error : "bad request";
            mg_session_local_reply(s, -r, why, true);
            return;
        }
        mg_exchange_start(s, (size_t)r);
    }
}

/* Called whenever some part of the exchange may have completed. */
void mg_session_finish(mg_session_t *s)
{
    if (!s->exchange || s->closing || s->cw_pending || s->uw_pending)
        return;
    if (s->rs != RS_DONE)
        return;
    if (s->rq != RQ_DONE) {
        /* The response ended before the request body: it cannot be reused. */
        s->keepalive = false;
        s->up_reusable = false;
    }
    if (s->up)
        mg_exchange_detach(s, s->up_reusable);
    mg_exchange_release(s);
    mg_worker_t *w = s->w;
    w->requests++;
    if (mg_alog_enabled()) {
        char line[768];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        int n = snprintf(line, sizeof line,
                         "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02dZ\",\"client\":\"%s\",\"method\":\"%s\","
                         "\"path\":\"%s\",\"route\":\"%s\",\"upstream\":\"%s\",\"status\":%d,"
                         "\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_us\":%llu}\n",
                         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         s->peer, s->log_method, s->log_path, s->route ? s->route->cfg->id : "-",
                         s->ep ? s->ep->stats->name : "-", s->status, (unsigned long long)s->bytes_in,
                         (unsigned long long)s->bytes_out,
                         (unsigned long long)((uv_hrtime() - s->t_start) / 1000));
        if (n > 0 && (size_t)n < sizeof line)
            mg_alog_append(&w->alog, line, (size_t)n);
    }
    if (s->ws) {
        mg_wsnap_release(w, s->ws);
        s->ws = NULL;
    }
    s->exchange = false;
    s->rq = RQ_IDLE;
    s->rs = RS_NONE;
    s->resp_started = false;
    s->retried = false;
    s->route = NULL;
    s->rl = NULL;
    s->ep = NULL;
    s->bytes_in = s->bytes_out = 0;
    if (!s->keepalive || w->draining || (s->client_eof && s->rpos == s->rlen)) {
        session_close_graceful(s);
        return;
    }
    if (s->rpos == s->rlen) {
        s->rpos = s->rlen = 0;
        mg_session_timer(s, ST_IDLE, w->cur->snap->cfg->idle_timeout_ms);
    } else if (s->rpos > 0) {
        memmove(s->rbuf, s->rbuf + s->rpos, s->rlen - s->rpos);
        s->rlen -= s->rpos;
        s->rpos = 0;
    }
    if (!s->client_eof)
        mg_session_read(s, true);
    if (s->rlen > 0)
        mg_session_process(s);
}
