/* size: Spring's RequestSize (413) and RequestHeaderSize (431) filters.
 * Both answer the request locally (the filter chain returns -413/-431) with
 * an explanatory header, as Spring does. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/filters_int.h"

static void human(uint64_t b, char *buf, size_t n)
{
    if (b >= (1u << 20)) snprintf(buf, n, "%.1f MB", (double)b / (1u << 20));
    else if (b >= 1024) snprintf(buf, n, "%.1f KB", (double)b / 1024);
    else snprintf(buf, n, "%" PRIu64 "B", b);
}

/* ---- RequestSize ---- */

static int rsize_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, "maxSize", "5MB");
    uint64_t x;
    if (mg_parse_datasize(v, &x) != 0 || x == 0)
        return mg_plugin_arg_error(err, errlen, pc, "maxSize", "maxSize: bad size '%.40s' (expected e.g. 5000000 or 5MB)", v);
    uint64_t *s = malloc(sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    *s = x;
    *out = s;
    return 0;
}

static int rsize_req(const void *st, mg_req_view_t *req)
{
    uint64_t max = *(const uint64_t *)st;
    if (!req->max_body || max < req->max_body) req->max_body = max; /* chunked bodies: enforced by the proxy */
    if (req->msg && req->msg->body == MG_BODY_LENGTH && req->msg->content_length > max) {
        char a[32], b[32], *msg = mg_arena_alloc(req->arena, 160);
        if (msg) {
            human(req->msg->content_length, a, sizeof a);
            human(max, b, sizeof b);
            int n = snprintf(msg, 160, "Request size is larger than permissible limit. Request size is %s where permissible limit is %s", a, b);
            mg_hdr_add(req->arena, &req->local_headers, MG_SLICE_LIT("errorMessage"), mg_slice(msg, n > 0 && n < 160 ? (size_t)n : 0));
        }
        return -413;
    }
    return 0;
}

const mg_plugin_spec_t mg_f_request_size = {
    .name = "RequestSize", .kind = MG_PLUGIN_FILTER, .args = { { "maxSize", 0 } },
    .compile = rsize_compile, .free = free, .request = rsize_req,
};

/* ---- RequestHeaderSize: name + all values of one header, per name ---- */

typedef struct {
    uint64_t max;
    char *errname; /* may be NULL */
} hsize_st;

static void hsize_free(void *st)
{
    hsize_st *s = st;
    if (s) free(s->errname);
    free(s);
}

static int hsize_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, "maxSize", "16000B"), *en = mg_plugin_str(pc, "errorHeaderName", NULL);
    uint64_t x;
    if (mg_parse_datasize(v, &x) != 0 || x == 0)
        return mg_plugin_arg_error(err, errlen, pc, "maxSize", "maxSize: bad size '%.40s' (expected e.g. 1000B or 16KB)", v);
    if (en) {
        int rc = mg_f_check_header_name(pc, "errorHeaderName", err, errlen);
        if (rc) return rc;
    }
    hsize_st *s = calloc(1, sizeof *s);
    if (!s || (en && !(s->errname = strdup(en)))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->max = x;
    *out = s;
    return 0;
}

static int hsize_req(const void *st, mg_req_view_t *req)
{
    const hsize_st *s = st;
    const mg_http_msg_t *m = req->msg;
    if (!m) return 0;
    for (uint32_t i = 0; i < m->nheaders; i++) {
        mg_slice_t name = m->headers[i].name;
        bool seen = false;
        for (uint32_t j = 0; j < i && !seen; j++) seen = mg_slice_caseeq(m->headers[j].name, name);
        if (seen) continue;
        uint64_t size = name.n;
        for (uint32_t j = i; j < m->nheaders; j++)
            if (mg_slice_caseeq(m->headers[j].name, name)) size += m->headers[j].value.n;
        if (size <= s->max) continue;
        if (s->errname) {
            char a[32], *msg = mg_arena_alloc(req->arena, 256);
            if (msg) {
                human(s->max, a, sizeof a);
                int n = snprintf(msg, 256, "Request Header/s size is larger than permissible limit (%s). Request Header/s size for '%.*s' is %" PRIu64 "B.",
                                 a, (int)(name.n > 64 ? 64 : name.n), name.p, size);
                mg_hdr_add(req->arena, &req->local_headers, mg_slice_cstr(s->errname),
                           mg_slice(msg, n > 0 && n < 256 ? (size_t)n : 0));
            }
        }
        return -431;
    }
    return 0;
}

const mg_plugin_spec_t mg_f_request_header_size = {
    .name = "RequestHeaderSize", .kind = MG_PLUGIN_FILTER, .args = { { "maxSize", MG_ARG_REQUIRED }, { "errorHeaderName", 0 } },
    .compile = hsize_compile, .free = hsize_free, .request = hsize_req,
};
