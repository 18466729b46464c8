/* probe: one asynchronous health probe. See probe.h.
 *
 * A probe owns a timeout timer for its whole life and one uv_tcp_t per
 * probe (closed when the probe ends). Per probe it allocates an 8 KiB read
 * buffer and the parse state, freed when the probe ends. Callbacks that
 * arrive after the probe ended (ECANCELED connect or write callbacks of a
 * handle being closed) see active == false and do nothing; a new probe
 * only starts once the previous handle is closed, so they can never be
 * mistaken for the new one's. */
#include "cluster/probe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

#define PROBE_BUF 8192

typedef struct {
    size_t len;
    mg_http_msg_t msg;
    char buf[PROBE_BUF];
} probe_io_t;

struct mg_probe {
    uv_loop_t *loop;
    mg_probe_done_fn done;
    void *ud;
    uv_timer_t timer;
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct sockaddr_storage addr;
    char *req;
    size_t reqlen;
    uint32_t timeout_ms;
    probe_io_t *io;
    int nopen;
    bool tcp_open;   /* tcp initialized and not yet closed */
    bool running;    /* started, done not called yet */
    bool active;     /* the current tcp belongs to the running probe */
    bool want_start; /* started while the previous tcp was still closing */
    bool dead;
};

static const mg_http_limits_t probe_limits = { .max_request_line = PROBE_BUF, .max_header_bytes = PROBE_BUF,
                                               .max_headers = 100 };

static void really_start(mg_probe_t *p);

static void on_closed(uv_handle_t *hd)
{
    mg_probe_t *p = hd->data;
    if (hd == (uv_handle_t *)&p->tcp) {
        p->tcp_open = false;
        if (!p->dead && p->want_start) {
            p->want_start = false;
            p->nopen--;
            really_start(p);
            return;
        }
    }
    if (--p->nopen > 0)
        return;
    free(p->io);
    free(p->req);
    free(p);
}

static void end_io(mg_probe_t *p)
{
    p->active = false;
    uv_timer_stop(&p->timer);
    if (p->tcp_open && !uv_is_closing((uv_handle_t *)&p->tcp))
        uv_close((uv_handle_t *)&p->tcp, on_closed);
    free(p->io);
    p->io = NULL;
}

static void finish(mg_probe_t *p, mg_hc_result_t r, int status)
{
    if (!p->active)
        return;
    p->running = false;
    end_io(p);
    p->done(p->ud, r, status); /* may restart or free p: last */
}

static void on_timeout(uv_timer_t *t)
{
    finish(t->data, MG_HC_R_TIMEOUT, 0);
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf)
{
    mg_probe_t *p = hd->data;
    (void)suggested;
    if (!p->io || p->io->len >= PROBE_BUF) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    *buf = uv_buf_init(p->io->buf + p->io->len, (unsigned)(PROBE_BUF - p->io->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    mg_probe_t *p = s->data;
    (void)buf;
    if (!p->active || !p->io)
        return;
    if (n == UV_ENOBUFS) {
        finish(p, MG_HC_R_BAD_RESPONSE, 0); /* head over PROBE_BUF */
        return;
    }
    if (n < 0) {
        finish(p, MG_HC_R_CLOSED, 0);
        return;
    }
    if (n == 0)
        return;
    probe_io_t *io = p->io;
    io->len += (size_t)n;
    int rc = mg_http_parse_response(io->buf, io->len, &io->msg, &probe_limits, MG_METHOD_GET);
    if (rc < 0)
        finish(p, MG_HC_R_BAD_RESPONSE, 0);
    else if (rc > 0)
        finish(p, MG_HC_R_OK, io->msg.status);
    else if (io->len >= PROBE_BUF)
        finish(p, MG_HC_R_BAD_RESPONSE, 0);
}

static void on_write(uv_write_t *w, int status)
{
    mg_probe_t *p = w->data;
    if (status < 0 && p->active)
        finish(p, status == UV_ECONNRESET || status == UV_EPIPE ? MG_HC_R_CLOSED : MG_HC_R_CONNECT, 0);
}

static void on_connect(uv_connect_t *req, int status)
{
    mg_probe_t *p = req->data;
    if (!p->active)
        return;
    if (status < 0) {
        finish(p, MG_HC_R_CONNECT, 0);
        return;
    }
    if (!p->reqlen) { /* TCP probe: connected is enough */
        finish(p, MG_HC_R_OK, 0);
        return;
    }
    uv_buf_t b = uv_buf_init(p->req, (unsigned)p->reqlen);
    int rc = uv_write(&p->wreq, (uv_stream_t *)&p->tcp, &b, 1, on_write);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&p->tcp, on_alloc, on_read);
    if (rc < 0)
        finish(p, MG_HC_R_CONNECT, 0);
}

static void really_start(mg_probe_t *p)
{
    p->active = true;
    uv_timer_start(&p->timer, on_timeout, p->timeout_ms ? p->timeout_ms : 1, 0);
    int rc = uv_tcp_init(p->loop, &p->tcp);
    if (rc < 0) {
        finish(p, MG_HC_R_CONNECT, 0);
        return;
    }
    p->tcp.data = p;
    p->tcp_open = true;
    p->nopen++;
    uv_tcp_nodelay(&p->tcp, 1);
    p->creq.data = p;
    p->wreq.data = p;
    rc = uv_tcp_connect(&p->creq, &p->tcp, (const struct sockaddr *)&p->addr, on_connect);
    if (rc < 0)
        finish(p, MG_HC_R_CONNECT, 0);
}

mg_probe_t *mg_probe_new(uv_loop_t *loop, mg_probe_done_fn done, void *ud)
{
    mg_probe_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = loop;
    p->done = done;
    p->ud = ud;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    p->nopen = 1;
    return p;
}

int mg_probe_start(mg_probe_t *p, const struct sockaddr *addr, const char *req, size_t reqlen, uint32_t timeout_ms)
{
    if (p->dead)
        return -EINVAL;
    probe_io_t *io = NULL;
    char *r = NULL;
    if (reqlen) {
        io = calloc(1, sizeof *io);
        r = malloc(reqlen);
        if (!io || !r) {
            free(io);
            free(r);
            return -ENOMEM;
        }
        memcpy(r, req, reqlen);
        mg_http_msg_reset(&io->msg);
    }
    if (p->running && p->active) {
        p->running = false;
        end_io(p); /* abandon the running probe: its result is never reported */
    }
    free(p->req);
    free(p->io);
    p->req = r;
    p->reqlen = reqlen;
    p->io = io;
    size_t alen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    memset(&p->addr, 0, sizeof p->addr);
    memcpy(&p->addr, addr, alen);
    p->timeout_ms = timeout_ms;
    p->running = true;
    if (p->tcp_open) { /* the previous connection is still closing */
        p->want_start = true;
        return 0;
    }
    really_start(p);
    return 0;
}

bool mg_probe_running(const mg_probe_t *p)
{
    return p->running;
}

void mg_probe_free(mg_probe_t *p)
{
    if (!p || p->dead)
        return;
    p->dead = true;
    p->running = false;
    p->want_start = false;
    end_io(p);
    uv_close((uv_handle_t *)&p->timer, on_closed);
}
