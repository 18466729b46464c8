/* checker: runs the registry's HTTP/TCP checks. See checker.h.
 *
 * A runner owns its next-run timer and an mg_probe_t for its whole life,
 * plus a uv_getaddrinfo_t while a name lookup is in flight. It is freed
 * when its timer is closed and no lookup is pending (nref). The checker
 * keeps its runners in an array sorted by check ID. */
#include "discovery/checker.h"

#include "core/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cluster/probe.h"
#include "core/err.h"
#include "core/log.h"

#define DEFAULT_TIMEOUT_MS 10000
#define OUT_MAX 1024

typedef struct rc_runner {
    struct mg_reg_checker *k;
    char *id;
    char *sig;  /* what the runner was built from: a changed definition restarts it */
    mg_check_kind_t kind;
    char *target; /* URL or host:port, for outputs */
    char *host;   /* host to connect to (no brackets) */
    uint16_t port;
    char *req;    /* HTTP: the request bytes; NULL for TCP */
    size_t reqlen;
    char method[16];
    bool https;
    bool literal; /* addr parsed once */
    struct sockaddr_storage addr;
    uint32_t interval_ms, timeout_ms;
    uv_timer_t timer;
    mg_probe_t *probe;
    uv_getaddrinfo_t gai;
    int nref; /* timer open + lookup in flight */
    bool dead;
} rc_runner_t;

struct mg_reg_checker {
    uv_loop_t *loop;
    mg_registry_t *reg;
    rc_runner_t **v; /* sorted by id */
    size_t n;
    uv_timer_t sync_timer;
    bool stopping;
    uint64_t rng;
};

static uint32_t rnd(mg_reg_checker_t *k, uint32_t bound)
{
    uint64_t x = k->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    k->rng = x;
    return bound ? (uint32_t)(x % (bound + 1)) : 0;
}

/* ---- runner lifetime ---- */

static void runner_free(rc_runner_t *u)
{
    free(u->id);
    free(u->sig);
    free(u->target);
    free(u->host);
    free(u->req);
    free(u);
}

static void runner_unref(rc_runner_t *u)
{
    if (--u->nref > 0)
        return;
    runner_free(u);
}

static void on_runner_timer_closed(uv_handle_t *h)
{
    runner_unref(h->data);
}

static void runner_kill(rc_runner_t *u)
{
    if (u->dead)
        return;
    u->dead = true;
    mg_probe_free(u->probe);
    u->probe = NULL;
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, on_runner_timer_closed);
    /* a lookup in flight holds its own ref and sees dead */
}

/* ---- running ---- */

static void run(rc_runner_t *u);

static void on_timer(uv_timer_t *t)
{
    rc_runner_t *u = t->data;
    if (!u->dead)
        run(u);
}

static void schedule(rc_runner_t *u, uint64_t ms)
{
    if (!u->dead)
        uv_timer_start(&u->timer, on_timer, ms, 0);
}

static void report(rc_runner_t *u, mg_check_status_t st, const char *output)
{
    if (u->dead || u->k->stopping)
        return;
    int rc = mg_registry_check_result(u->k->reg, u->id, st, output, (int64_t)uv_now(u->k->loop));
    if (rc && rc != -ENOENT && rc != MG_EPARSE)
        mg_debug("checker: check '%s': cannot record the result: %d", u->id, rc);
}

static void on_probe_done(void *ud, mg_hc_result_t r, int status)
{
    rc_runner_t *u = ud;
    if (u->dead)
        return;
    char out[OUT_MAX];
    mg_check_status_t st = MG_CHECK_CRITICAL;
    if (u->kind == MG_CHECK_TCP) {
        if (r == MG_HC_R_OK) {
            st = MG_CHECK_PASSING;
            snprintf(out, sizeof out, "TCP connect %s: Success", u->target);
        } else {
            snprintf(out, sizeof out, "dial tcp %s: %s", u->target,
                     r == MG_HC_R_TIMEOUT ? "i/o timeout" : "connection refused");
        }
    } else if (r == MG_HC_R_OK) {
        st = status >= 200 && status <= 299 ? MG_CHECK_PASSING : status == 429 ? MG_CHECK_WARNING : MG_CHECK_CRITICAL;
        snprintf(out, sizeof out, "HTTP %s %s: %d", u->method, u->target, status);
    } else {
        const char *why = r == MG_HC_R_TIMEOUT   ? "timeout"
                          : r == MG_HC_R_CONNECT ? "connection refused"
                          : r == MG_HC_R_CLOSED  ? "connection closed before a response"
                                                 : "malformed response";
        snprintf(out, sizeof out, "HTTP %s %s: %s", u->method, u->target, why);
    }
    report(u, st, out);
    schedule(u, u->interval_ms);
}

static void probe(rc_runner_t *u, const struct sockaddr *sa)
{
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    memcpy(&a, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    if (a.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a)->sin6_port = htons(u->port);
    else
        ((struct sockaddr_in *)&a)->sin_port = htons(u->port);
    if (mg_probe_start(u->probe, (const struct sockaddr *)&a, u->req, u->reqlen, u->timeout_ms))
        schedule(u, u->interval_ms); /* out of memory: try again later */
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rc_runner_t *u = req->data;
    if (!u->dead) {
        if (status < 0 || !res) {
            char out[OUT_MAX];
            snprintf(out, sizeof out, "%s %s: lookup %s: %s", u->kind == MG_CHECK_TCP ? "dial tcp" : u->method,
                     u->target, u->host, uv_strerror(status < 0 ? status : UV_EAI_NONAME));
            report(u, MG_CHECK_CRITICAL, out);
            schedule(u, u->interval_ms);
        } else {
            probe(u, res->ai_addr);
        }
    }
    uv_freeaddrinfo(res);
    runner_unref(u);
}

static void run(rc_runner_t *u)
{
    if (u->https) {
        char out[OUT_MAX];
        snprintf(out, sizeof out, "HTTP %s %s: https checks are not supported by meshgate (no TLS)", u->method,
                 u->target);
        report(u, MG_CHECK_CRITICAL, out); /* once: nothing would change */
        return;
    }
    if (u->literal) {
        probe(u, (const struct sockaddr *)&u->addr);
        return;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    u->gai.data = u;
    u->nref++;
    int rc = uv_getaddrinfo(u->k->loop, &u->gai, on_resolved, u->host, NULL, &hints);
    if (rc < 0) {
        u->nref--;
        char out[OUT_MAX];
        snprintf(out, sizeof out, "lookup %s: %s", u->host, uv_strerror(rc));
        report(u, MG_CHECK_CRITICAL, out);
        schedule(u, u->interval_ms);
    }
}

/* ---- building a runner from a check definition ---- */

static bool has_crlf(const char *s)
{
    return s && strpbrk(s, "\r\n") != NULL;
}

/* Splits "host:port" / "[v6]:port" (default_port when no port). */
static int split_hostport(const char *s, size_t len, uint16_t default_port, char **host, uint16_t *port)
{
    const char *h = s, *hend, *p = NULL;
    if (len && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (!rb)
            return -1;
        h = s + 1;
        hend = rb;
        if (rb + 1 < s + len) {
            if (rb[1] != ':')
                return -1;
            p = rb + 2;
        }
    } else {
        const char *c = NULL;
        for (size_t i = 0; i < len; i++)
            if (s[i] == ':')
                c = s + i;
        hend = c ? c : s + len;
        if (c)
            p = c + 1;
    }
    if (hend == h)
        return -1;
    long pv = default_port;
    if (p) {
        if (p >= s + len)
            return -1;
        pv = 0;
        for (const char *q = p; q < s + len; q++) {
            if (*q < '0' || *q > '9' || pv > 65535)
                return -1;
            pv = pv * 10 + (*q - '0');
        }
    }
    if (pv <= 0 || pv > 65535)
        return -1;
    *host = strndup(h, (size_t)(hend - h));
    if (!*host)
        return -ENOMEM;
    *port = (uint16_t)pv;
    return 0;
}

static bool hdr_given(const mg_check_def_t *d, const char *name)
{
    for (size_t i = 0; i < d->nheaders; i++)
        if (d->headers[i].name && strcasecmp(d->headers[i].name, name) == 0)
            return true;
    return false;
}

/* Request text is built in a core/json.h buffer. */
static void sb_str(mg_buf_t *b, const char *s) { mg_buf_add(b, s, strlen(s)); }

/* Fills u from the check definition. 0, -ENOMEM, or -EINVAL (a check we
 * cannot run; *why says why). */
static int runner_build(rc_runner_t *u, const mg_check_def_t *d, const char **why)
{
    u->kind = d->kind;
    int64_t iv = d->interval_ms > 0 ? d->interval_ms : 1000;
    if (iv > UINT32_MAX / 2)
        iv = UINT32_MAX / 2;
    int64_t to = d->timeout_ms > 0 ? d->timeout_ms : DEFAULT_TIMEOUT_MS;
    if (to > iv)
        to = iv;
    u->interval_ms = (uint32_t)iv;
    u->timeout_ms = (uint32_t)to;
    snprintf(u->method, sizeof u->method, "%s", d->method && *d->method ? d->method : "GET");
    for (char *m = u->method; *m; m++)
        if (*m <= 0x20 || *m >= 0x7f) {
            *why = "bad Method";
            return -EINVAL;
        }
    const char *authority;
    size_t alen;
    const char *path = "/";
    uint16_t defport;
    if (d->kind == MG_CHECK_TCP) {
        if (!d->tcp)
            return -EINVAL;
        u->target = strdup(d->tcp);
        authority = d->tcp;
        alen = strlen(d->tcp);
        defport = 0;
    } else {
        if (!d->http || has_crlf(d->http)) {
            *why = "bad URL";
            return -EINVAL;
        }
        u->target = strdup(d->http);
        u->https = strncasecmp(d->http, "https://", 8) == 0;
        const char *s = d->http + (u->https ? 8 : strncasecmp(d->http, "http://", 7) == 0 ? 7 : 0);
        const char *e = s + strcspn(s, "/?#");
        const char *at = memchr(s, '@', (size_t)(e - s));
        if (at)
            s = at + 1; /* userinfo is not sent */
        authority = s;
        alen = (size_t)(e - s);
        defport = u->https ? 443 : 80;
        if (*e == '/' || *e == '?')
            path = e;
    }
    if (!u->target)
        return -ENOMEM;
    int rc = split_hostport(authority, alen, defport, &u->host, &u->port);
    if (rc) {
        *why = "bad host:port";
        return rc == -ENOMEM ? rc : -EINVAL;
    }
    if (strcmp(u->host, "localhost") == 0) {
        uv_ip4_addr("127.0.0.1", u->port, (struct sockaddr_in *)&u->addr);
        u->literal = true;
    } else if (uv_ip4_addr(u->host, u->port, (struct sockaddr_in *)&u->addr) == 0 ||
               uv_ip6_addr(u->host, u->port, (struct sockaddr_in6 *)&u->addr) == 0) {
        u->literal = true;
    }
    if (d->kind == MG_CHECK_HTTP && !u->https) {
        mg_buf_t b;
        mg_buf_init(&b);
        size_t plen = strcspn(path, "#");
        sb_str(&b, u->method);
        sb_str(&b, " ");
        mg_buf_add(&b, path, plen);
        sb_str(&b, " HTTP/1.1\r\n");
        if (!hdr_given(d, "Host")) {
            sb_str(&b, "Host: ");
            mg_buf_add(&b, authority, alen);
            sb_str(&b, "\r\n");
        }
        if (!hdr_given(d, "User-Agent"))
            sb_str(&b, "User-Agent: Consul Health Check\r\n");
        if (!hdr_given(d, "Accept"))
            sb_str(&b, "Accept: text/plain, text/*, */*\r\n");
        for (size_t i = 0; i < d->nheaders; i++) {
            const mg_kv_t *h = &d->headers[i];
            if (!h->name || !*h->name || has_crlf(h->name) || has_crlf(h->value) || strchr(h->name, ':') ||
                strcasecmp(h->name, "Content-Length") == 0 || strcasecmp(h->name, "Transfer-Encoding") == 0 ||
                strcasecmp(h->name, "Connection") == 0)
                continue;
            sb_str(&b, h->name);
            sb_str(&b, ": ");
            sb_str(&b, h->value ? h->value : "");
            sb_str(&b, "\r\n");
        }
        size_t blen = d->body ? strlen(d->body) : 0;
        if (blen) {
            char cl[48];
            snprintf(cl, sizeof cl, "Content-Length: %zu\r\n", blen);
            sb_str(&b, cl);
        }
        sb_str(&b, "Connection: close\r\n\r\n");
        if (blen)
            mg_buf_add(&b, d->body, blen);
        if (b.oom) {
            free(b.p);
            return -ENOMEM;
        }
        u->req = b.p;
        u->reqlen = b.len;
    }
    /* the signature: everything the runner depends on */
    mg_buf_t s;
    mg_buf_init(&s);
    char num[64];
    snprintf(num, sizeof num, "%d %u %u\n", (int)u->kind, u->interval_ms, u->timeout_ms);
    sb_str(&s, num);
    sb_str(&s, u->target);
    sb_str(&s, "\n");
    if (u->req)
        mg_buf_add(&s, u->req, u->reqlen);
    if (s.oom) {
        free(s.p);
        return -ENOMEM;
    }
    u->sig = s.p;
    return 0;
}

static rc_runner_t *runner_new(mg_reg_checker_t *k, const mg_reg_check_t *c)
{
    rc_runner_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->k = k;
    const char *why = "unsupported check";
    int rc = runner_build(u, c->def, &why);
    if (!rc && !(u->id = strdup(c->def->id)))
        rc = -ENOMEM;
    if (!rc && !(u->probe = mg_probe_new(k->loop, on_probe_done, u)))
        rc = -ENOMEM;
    if (rc) {
        if (rc == -EINVAL) {
            char out[OUT_MAX];
            snprintf(out, sizeof out, "meshgate cannot run this check: %s", why);
            mg_registry_check_result(k->reg, c->def->id, MG_CHECK_CRITICAL, out, (int64_t)uv_now(k->loop));
        } else {
            mg_error("checker: check '%s': out of memory; not running it", c->def->id);
        }
        mg_probe_free(u->probe);
        runner_free(u);
        return NULL;
    }
    uv_timer_init(k->loop, &u->timer);
    u->timer.data = u;
    u->nref = 1;
    uint32_t j = u->interval_ms / 10;
    schedule(u, rnd(k, j > 50 ? 50 : j));
    return u;
}

/* ---- the set of runners ---- */

static int by_id(const void *a, const void *b)
{
    return strcmp((*(rc_runner_t *const *)a)->id, (*(rc_runner_t *const *)b)->id);
}

static rc_runner_t **find(mg_reg_checker_t *k, const char *id)
{
    size_t lo = 0, hi = k->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(k->v[mid]->id, id);
        if (c == 0)
            return &k->v[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void mg_reg_checker_sync(mg_reg_checker_t *k)
{
    if (!k || k->stopping)
        return;
    size_t total = mg_registry_check_count(k->reg), want = 0;
    for (size_t i = 0; i < total; i++) {
        const mg_reg_check_t *c = mg_registry_check_at(k->reg, i);
        if (c && c->def->kind != MG_CHECK_TTL)
            want++;
    }
    rc_runner_t **nv = want ? calloc(want, sizeof *nv) : NULL;
    if (want && !nv) {
        mg_error("checker: out of memory; check runners not updated");
        return;
    }
    size_t nn = 0;
    for (size_t i = 0; i < total && nn < want; i++) {
        const mg_reg_check_t *c = mg_registry_check_at(k->reg, i);
        if (!c || c->def->kind == MG_CHECK_TTL)
            continue;
        rc_runner_t **slot = find(k, c->def->id), *u = slot ? *slot : NULL;
        if (u) {
            rc_runner_t tmp = { 0 };
            const char *why = NULL;
            int rc = runner_build(&tmp, c->def, &why);
            bool same = rc == 0 && tmp.sig && strcmp(tmp.sig, u->sig) == 0;
            free(tmp.sig);
            free(tmp.target);
            free(tmp.host);
            free(tmp.req);
            *slot = NULL; /* taken (kept or replaced) */
            if (same) {
                nv[nn++] = u;
                continue;
            }
            runner_kill(u);
        }
        if ((u = runner_new(k, c)))
            nv[nn++] = u;
    }
    for (size_t i = 0; i < k->n; i++)
        if (k->v[i])
            runner_kill(k->v[i]);
    free(k->v);
    if (nn)
        qsort(nv, nn, sizeof *nv, by_id);
    k->v = nv;
    k->n = nn;
}

static void on_sync_timer(uv_timer_t *t)
{
    mg_reg_checker_sync(t->data);
}

void mg_reg_checker_notify(mg_reg_checker_t *k, const mg_reg_event_t *ev)
{
    if (!k || k->stopping || ev->kind == MG_REG_EV_CHECK)
        return;
    if (!uv_is_active((uv_handle_t *)&k->sync_timer))
        uv_timer_start(&k->sync_timer, on_sync_timer, 0, 0);
}

uint32_t mg_reg_checker_count(const mg_reg_checker_t *k)
{
    return k ? (uint32_t)k->n : 0;
}

mg_reg_checker_t *mg_reg_checker_new(uv_loop_t *loop, mg_registry_t *reg)
{
    mg_reg_checker_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    k->loop = loop;
    k->reg = reg;
    k->rng = uv_hrtime() | 1;
    uv_timer_init(loop, &k->sync_timer);
    k->sync_timer.data = k;
    return k;
}

static void on_sync_closed(uv_handle_t *h)
{
    free(h->data);
}

void mg_reg_checker_stop(mg_reg_checker_t *k)
{
    if (!k || k->stopping)
        return;
    k->stopping = true;
    for (size_t i = 0; i < k->n; i++)
        runner_kill(k->v[i]);
    free(k->v);
    k->v = NULL;
    k->n = 0;
    uv_close((uv_handle_t *)&k->sync_timer, on_sync_closed);
}
