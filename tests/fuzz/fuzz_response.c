/* fuzz_response: mg_http_parse_response must not crash, must return a
 * length within the input, keep every slice inside the head, and give the
 * same result however the input is split across incremental calls. The
 * request method is taken from the first byte (which is parsed too). */
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

static void in_head(mg_slice_t s, const char *buf, int hl)
{
    CHECK(s.p != NULL);
    CHECK(s.p >= buf && s.p + s.n <= buf + hl);
}

static void check_msg(const mg_http_msg_t *m, const char *buf, int hl, mg_method_t meth)
{
    in_head(m->reason, buf, hl);
    CHECK(m->version == 10 || m->version == 11);
    CHECK(m->status >= 100 && m->status <= 599);
    CHECK(m->nheaders <= MG_HTTP_MAX_HEADERS);
    for (uint32_t i = 0; i < m->nheaders; i++) {
        in_head(m->headers[i].name, buf, hl);
        in_head(m->headers[i].value, buf, hl);
        CHECK(m->headers[i].name.n > 0);
    }
    if (meth == MG_METHOD_HEAD || m->status < 200 || m->status == 204 || m->status == 304)
        CHECK(m->body == MG_BODY_NONE);
    if (m->body == MG_BODY_LENGTH)
        CHECK(m->flags & MG_MSG_HAS_CL);
}

static void same_msg(const mg_http_msg_t *a, const mg_http_msg_t *b)
{
    CHECK(a->status == b->status && a->version == b->version);
    CHECK(a->reason.p == b->reason.p && a->reason.n == b->reason.n);
    CHECK(a->nheaders == b->nheaders && a->body == b->body && a->flags == b->flags);
    if (a->flags & MG_MSG_HAS_CL)
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

static void run(const char *buf, size_t size, const mg_http_limits_t *lim, uint64_t h,
                mg_method_t meth)
{
    mg_http_msg_reset(&ma);
    int r = mg_http_parse_response(buf, size, &ma, lim, meth);
    CHECK(r <= 0 || (size_t)r <= size);
    if (r > 0)
        check_msg(&ma, buf, r, meth);

    size_t c1 = (size_t)(h % (size + 1));
    size_t c2 = c1 + (size_t)((h >> 32) % (size - c1 + 1));
    const size_t cuts[3] = { c1, c2, size };
    mg_http_msg_reset(&mb);
    int rb = 0;
    for (int k = 0; k < 3; k++) {
        rb = mg_http_parse_response(buf, cuts[k], &mb, lim, meth);
        CHECK(mb.scan_pos <= cuts[k]);
        if (rb != 0)
            break;
    }
    CHECK(rb == r);
    if (r > 0) {
        same_msg(&ma, &mb);
        mg_http_msg_reset(&mb);
        CHECK(mg_http_parse_response(buf, (size_t)r, &mb, lim, meth) == r);
        same_msg(&ma, &mb);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t h = hash(data, size);
    mg_method_t meth = size ? (mg_method_t)(data[size - 1] % 10) : MG_METHOD_GET;
    run(buf, size, NULL, h, meth);
    static const mg_http_limits_t small = { 40, 160, 6 };
    run(buf, size, &small, h * 31 + 7, meth);
    if (size <= 512) {
        mg_http_msg_reset(&ma);
        int r = mg_http_parse_response(buf, size, &ma, NULL, meth);
        mg_http_msg_reset(&mb);
        int rb = 0;
        for (size_t i = 0; i <= size; i++) {
            rb = mg_http_parse_response(buf, i, &mb, NULL, meth);
            if (rb != 0)
                break;
        }
        CHECK(rb == r);
        if (r > 0)
            same_msg(&ma, &mb);
    }
    return 0;
}
