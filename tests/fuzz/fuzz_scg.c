/* fuzz_scg: the Spring Cloud Gateway dialect end to end. The input is split
 * at the first NUL into two files merged in order (as with -c a -c b). A
 * config that loads must build a route table; a few requests are matched
 * and run through the filters; and `config print` of it must load back
 * (and print identically). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/arena.h"
#include "filter/filter.h"
#include "http/http1.h"
#include "route/route.h"

static char *print(const mg_config_t *cfg, size_t *n)
{
    char *out = NULL;
    FILE *f = open_memstream(&out, n);
    if (!f) abort();
    if (mg_config_print(cfg, f) != 0) abort();
    fclose(f);
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *d = (const char *)data;
    const char *nul = memchr(d, 0, size);
    mg_config_buffer_t bufs[2] = { { "a.yaml", d, nul ? (size_t)(nul - d) : size },
                                   { "b.yaml", nul ? nul + 1 : "", nul ? size - (size_t)(nul - d) - 1 : 0 } };
    char err[512];
    mg_config_t *cfg = NULL;
    if (mg_config_load_buffers(bufs, nul ? 2 : 1, &cfg, err, sizeof err) != 0) {
        if (cfg || !memchr(err, '\0', sizeof err)) abort();
        return 0;
    }
    mg_route_table_t *t = NULL;
    if (mg_route_table_build(cfg, &t, err, sizeof err) != 0) abort(); /* the loader validated everything */

    static const char *const reqs[] = {
        "GET /api/users/42?x=1&red=2 HTTP/1.1\r\nHost: www.example.org\r\nCookie: a=b\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n",
        "POST /a/b/c/ HTTP/1.1\r\nHost: h:8080\r\nContent-Length: 10000000\r\nX-Request-Id: 12\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    mg_arena_t *a = mg_arena_new(1024, 1 << 20);
    uint64_t rng = 7;
    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        static mg_http_msg_t m;
        memset(&m, 0, sizeof m);
        if (mg_http_parse_request(reqs[i], strlen(reqs[i]), &m, NULL) <= 0) abort();
        mg_arena_reset(a);
        mg_req_view_t rv = { .arena = a, .msg = &m, .method = m.method, .path = m.path, .query = m.query, .host = m.host };
        const mg_route_t *r = mg_route_match(t, &(mg_match_ctx_t){ .req = &m, .rng = &rng, .now_ms = 1 }, &rv.vars);
        if (!r) continue;
        if (r->cfg->cluster_index >= cfg->nclusters) abort();
        for (uint32_t k = 0; k < m.nheaders; k++)
            if (!(m.headers[k].flags & (MG_HDR_HOP | MG_HDR_HOST))) mg_hdr_add(a, &rv.headers, m.headers[k].name, m.headers[k].value);
        int rc = mg_filters_request(r, &rv);
        if (rc > 0) abort();
        mg_resp_view_t resp = { .arena = a, .status = 302 };
        mg_hdr_add(a, &resp.headers, MG_SLICE_LIT("Location"), MG_SLICE_LIT("http://up:81/v1/x"));
        mg_filters_response(r, &rv, &resp);
        mg_buf_t b;
        mg_buf_init(&b);
        mg_route_describe_json(r, &b);
        mg_buf_free(&b);
    }
    mg_arena_free(a);

    size_t n1, n2;
    char *p1 = print(cfg, &n1);
    mg_config_t *cfg2 = NULL;
    mg_config_buffer_t pb = { "printed.yaml", p1, n1 };
    if (mg_config_load_buffers(&pb, 1, &cfg2, err, sizeof err) != 0) {
        fprintf(stderr, "printed config does not load: %s\n%s\n", err, p1);
        abort();
    }
    char *p2 = print(cfg2, &n2);
    if (n1 != n2 || memcmp(p1, p2, n1) != 0) {
        fprintf(stderr, "print is not a fixed point:\n%s\n---\n%s\n", p1, p2);
        abort();
    }
    free(p1);
    free(p2);
    mg_config_free(cfg2);
    mg_route_table_free(t);
    mg_config_free(cfg);
    return 0;
}
