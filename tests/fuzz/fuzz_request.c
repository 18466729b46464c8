/* fuzz_request: mg_http_parse_request must not crash, must return a length
 * within the input, keep every slice inside the head, and give the same
 * result however the input is split across incremental calls. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static uint64_t hash(const uint8_t *d, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ d[i]) * 1099511628211ull;
    return h;
}

static void in_head(mg_slice_t s, const char *buf, int hl, int may_be_null)
{
    if (s.p == NULL) {
        CHECK(may_be_null && s.n == 0);
        return;
    }
    CHECK(s.p >= buf && s.p + s.n <= buf + hl);
}

static void check_msg(const mg_http_msg_t *m, const char *buf, int hl)
{
    in_head(m->method, buf, hl, 0);
    in_head(m->target, buf, hl, 0);
    /* absolute-form without a path gives a static "/" */
    if (!((m->flags & MG_MSG_ABSOLUTE_FORM) && m->path.n == 1 && m->path.p[0] == '/'))
        in_head(m->path, buf, hl, 0);
    in_head(m->query, buf, hl, 1);
    in_head(m->authority, buf, hl, 1);
    in_head(m->host, buf, hl, 1);
    CHECK(m->version == 10 || m->version == 11);
    CHECK(m->nheaders <= MG_HTTP_MAX_HEADERS);
    for (uint32_t i = 0; i < m->nheaders; i++) {
        in_head(m->headers[i].name, buf, hl, 0);
        in_head(m->headers[i].value, buf, hl, 0);
        CHECK(m->headers[i].name.n > 0);
    }
    CHECK(m->body == MG_BODY_NONE || m->body == MG_BODY_LENGTH || m->body == MG_BODY_CHUNKED);
    if (m->body == MG_BODY_LENGTH)
        CHECK(m->flags & MG_MSG_HAS_CL);
    if (m->version == 11)
        CHECK(m->host.p != NULL);
}

static void same_msg(const mg_http_msg_t *a, const mg_http_msg_t *b)
{
    CHECK(mg_slice_eq(a->method, b->method) && a->method.p == b->method.p);
    CHECK(a->method_id == b->method_id);
    CHECK(a->target.p == b->target.p && a->target.n == b->target.n);
    CHECK(a->path.p == b->path.p && a->path.n == b->path.n);
    CHECK(a->query.p == b->query.p && a->query.n == b->query.n);
    CHECK(a->authority.p == b->authority.p && a->authority.n == b->authority.n);
    CHECK(a->host.p == b->host.p && a->host.n == b->host.n);
    CHECK(a->version == b->version && a->nheaders == b->nheaders);
    CHECK(a->body == b->body && a->flags == b->flags);
    if (a->body == MG_BODY_LENGTH)
        CHECK(a->content_length == b->content_length);
    for (uint32_t i = 0; i < a->nheaders; i++) {
        CHECK(a->headers[i].name.p == b->headers[i].name.p);
        CHECK(a->headers[i].name.n == b->headers[i].name.n);
        CHECK(a->headers[i].value.p == b->headers[i].value.p);
        CHECK(a->headers[i].value.n == b->headers[i].value.n);
        CHECK(a->headers[i].flags == b->headers[i].flags);
    }
}

static mg_http_msg_t ma, mb;

static void run(const char *buf, size_t size, const mg_http_limits_t *lim, uint64_t h)
{
    mg_http_msg_reset(&ma);
    int r = mg_http_parse_request(buf, size, &ma, lim);
    CHECK(r <= 0 || (size_t)r <= size);
    CHECK(r >= 0 || r == -400 || r == -414 || r == -431 || r == -501 || r == -505);
    if (r > 0)
        check_msg(&ma, buf, r);

    /* split at two data-derived points: prefix, longer prefix, whole */
    size_t c1 = (size_t)(h % (size + 1));
    size_t c2 = c1 + (size_t)((h >> 32) % (size - c1 + 1));
    const size_t cuts[3] = { c1, c2, size };
    mg_http_msg_reset(&mb);
    int rb = 0;
    for (int k = 0; k < 3; k++) {
        rb = mg_http_parse_request(buf, cuts[k], &mb, lim);
        CHECK(mb.scan_pos <= cuts[k]);
        if (rb != 0)
            break;
    }
    CHECK(rb == r);
    if (r > 0) {
        same_msg(&ma, &mb);
        /* the head alone parses the same */
        mg_http_msg_reset(&mb);
        CHECK(mg_http_parse_request(buf, (size_t)r, &mb, lim) == r);
        same_msg(&ma, &mb);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t h = hash(data, size);
    run(buf, size, NULL, h);
    static const mg_http_limits_t small = { 48, 160, 6 };
    run(buf, size, &small, h * 31 + 7);
    /* byte-at-a-time on small inputs */
    if (size <= 512) {
        mg_http_msg_reset(&ma);
        int r = mg_http_parse_request(buf, size, &ma, &small);
        mg_http_msg_reset(&mb);
        int rb = 0;
        for (size_t i = 0; i <= size; i++) {
            rb = mg_http_parse_request(buf, i, &mb, &small);
            if (rb != 0)
                break;
        }
        CHECK(rb == r);
        if (r > 0)
            same_msg(&ma, &mb);
    }
    return 0;
}
