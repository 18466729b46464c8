/* Unit tests for src/http/http1.c (request/response heads, chunked coding). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/http1.h"

/* ---- helpers ---- */

static mg_http_msg_t M; /* large: keep off the stack */

static int req_lim(const char *s, size_t n, const mg_http_limits_t *lim)
{
    mg_http_msg_reset(&M);
    return mg_http_parse_request(s, n, &M, lim);
}

static int req(const char *s) { return req_lim(s, strlen(s), NULL); }

static int resp(const char *s, mg_method_t method)
{
    mg_http_msg_reset(&M);
    return mg_http_parse_response(s, strlen(s), &M, NULL, method);
}

static bool sl_is(mg_slice_t s, const char *lit) { return mg_slice_eq(s, mg_slice_cstr(lit)); }

#define H11 " HTTP/1.1\r\nHost: a\r\n"

/* One test per rejected request: REJECT(name, status, request). */
#define REJECT(name, status, text)                                   \
    static void name(void **state)                                   \
    {                                                                \
        (void)state;                                                 \
        assert_int_equal(req(text), -(status));                      \
    }

/* framing */
REJECT(rej_cl_and_te, 400, "POST /" H11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
REJECT(rej_te_and_cl, 400, "POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n")
REJECT(rej_cl_dup_differ, 400, "POST /" H11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n")
REJECT(rej_cl_list_differ, 400, "POST /" H11 "Content-Length: 5, 6\r\n\r\n")
REJECT(rej_cl_plus, 400, "POST /" H11 "Content-Length: +5\r\n\r\n")
REJECT(rej_cl_minus, 400, "POST /" H11 "Content-Length: -1\r\n\r\n")
REJECT(rej_cl_hex, 400, "POST /" H11 "Content-Length: 0x10\r\n\r\n")
REJECT(rej_cl_space_inside, 400, "POST /" H11 "Content-Length:  5 5\r\n\r\n")
REJECT(rej_cl_empty, 400, "POST /" H11 "Content-Length: \r\n\r\n")
REJECT(rej_cl_empty_elem, 400, "POST /" H11 "Content-Length: 5,,5\r\n\r\n")
REJECT(rej_cl_trailing_comma, 400, "POST /" H11 "Content-Length: 5,\r\n\r\n")
REJECT(rej_cl_overflow, 400, "POST /" H11 "Content-Length: 9223372036854775808\r\n\r\n")
REJECT(rej_cl_overflow_huge, 400, "POST /" H11 "Content-Length: 99999999999999999999999\r\n\r\n")
REJECT(rej_te_gzip_chunked, 501, "POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n")
REJECT(rej_te_split_gzip_chunked, 501, "POST /" H11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
REJECT(rej_te_chunked_identity, 400, "POST /" H11 "Transfer-Encoding: chunked, identity\r\n\r\n")
REJECT(rej_te_identity, 400, "POST /" H11 "Transfer-Encoding: identity\r\n\r\n")
REJECT(rej_te_gzip_only, 400, "POST /" H11 "Transfer-Encoding: gzip\r\n\r\n")
REJECT(rej_te_chunked_chunked, 400, "POST /" H11 "Transfer-Encoding: chunked, chunked\r\n\r\n")
REJECT(rej_te_chunked_twice_fields, 400, "POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n")
REJECT(rej_te_empty, 400, "POST /" H11 "Transfer-Encoding: \r\n\r\n")
REJECT(rej_te_chunked_params, 400, "POST /" H11 "Transfer-Encoding: chunked;q=1\r\n\r\n")
REJECT(rej_te_bad_syntax, 400, "POST /" H11 "Transfer-Encoding: chunked,\r\n\r\n")
REJECT(rej_te_xchunked, 400, "POST /" H11 "Transfer-Encoding: xchunked\r\n\r\n")
REJECT(rej_te_http10, 400, "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n")
/* field syntax */
REJECT(rej_ws_before_colon, 400, "GET /" H11 "X-A : b\r\n\r\n")
REJECT(rej_tab_before_colon, 400, "GET /" H11 "X-A\t: b\r\n\r\n")
REJECT(rej_ws_before_colon_cl, 400, "POST /" H11 "Content-Length : 5\r\n\r\n")
REJECT(rej_obs_fold, 400, "GET /" H11 "X-A: b\r\n c\r\n\r\n")
REJECT(rej_obs_fold_tab, 400, "GET /" H11 "X-A: b\r\n\tc\r\n\r\n")
REJECT(rej_ws_first_field, 400, "GET / HTTP/1.1\r\n Host: a\r\n\r\n")
REJECT(rej_bare_cr_value, 400, "GET /" H11 "X-A: b\rc\r\n\r\n")
REJECT(rej_bare_cr_eol, 400, "GET /" H11 "X-A: b\r\r\n\r\n")
REJECT(rej_bare_cr_name, 400, "GET /" H11 "X\rA: b\r\n\r\n")
REJECT(rej_bare_cr_reqline, 400, "GET / HTTP/1.1\rHost: a\r\n\r\n")
REJECT(rej_bare_cr_end, 400, "GET /" H11 "\r\r\n\r\n")
REJECT(rej_ctl_value, 400, "GET /" H11 "X-A: b\x01" "c\r\n\r\n")
REJECT(rej_del_value, 400, "GET /" H11 "X-A: b\x7f\r\n\r\n")
REJECT(rej_name_paren, 400, "GET /" H11 "X(A): b\r\n\r\n")
REJECT(rej_name_high, 400, "GET /" H11 "X\xc3\xa9: b\r\n\r\n")
REJECT(rej_name_empty, 400, "GET /" H11 ": b\r\n\r\n")
REJECT(rej_no_colon, 400, "GET /" H11 "X-A b\r\n\r\n")
REJECT(rej_missing_host, 400, "GET / HTTP/1.1\r\nX-A: b\r\n\r\n")
REJECT(rej_dup_host, 400, "GET /" H11 "Host: a\r\n\r\n")
REJECT(rej_dup_host_10, 400, "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n")
REJECT(rej_host_invalid, 400, "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n")
REJECT(rej_bad_connection, 400, "GET /" H11 "Connection: close; x\r\n\r\n")
/* request targets */
REJECT(rej_target_no_slash, 400, "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_star_get, 400, "GET * HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_connect_origin, 400, "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_connect_noport, 400, "CONNECT a.b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_connect_badport, 400, "CONNECT a.b:99999 HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_authority_get, 400, "GET a.b:443 HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_abs_no_authority, 400, "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_abs_userinfo, 400, "GET http://u@h/x HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_abs_ftp, 400, "GET ftp://h/x HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_ctl, 400, "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_tab, 400, "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_hash, 400, "GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_dquote, 400, "GET /a\"b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_lt, 400, "GET /a<b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_gt, 400, "GET /a>b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_backslash, 400, "GET /a\\b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_caret, 400, "GET /a^b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_backtick, 400, "GET /a`b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_lbrace, 400, "GET /a{b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_pipe, 400, "GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_rbrace, 400, "GET /a}b HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_high, 400, "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_bad_pct, 400, "GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_short_pct, 400, "GET /a%4 HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_space, 400, "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n")
/* versions and request line */
REJECT(rej_http20, 505, "GET / HTTP/2.0\r\nHost: a\r\n\r\n")
REJECT(rej_http09, 505, "GET / HTTP/0.9\r\nHost: a\r\n\r\n")
REJECT(rej_http12, 505, "GET / HTTP/1.2\r\nHost: a\r\n\r\n")
REJECT(rej_httx, 400, "GET / HTTX/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_http11x, 400, "GET / HTTP/1.1x\r\nHost: a\r\n\r\n")
REJECT(rej_http_lower, 400, "GET / http/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_http_missing, 400, "GET /\r\nHost: a\r\n\r\n")
REJECT(rej_version_trailing_sp, 400, "GET / HTTP/1.1 \r\nHost: a\r\n\r\n")
REJECT(rej_method_empty, 400, " / HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_method_double_sp, 400, "GET  / HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_target_double_sp, 400, "GET /  HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_method_bad, 400, "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n")
REJECT(rej_method_tab, 400, "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n")
static void rej_garbage_early(void **state)
{
    (void)state;
    /* a TLS ClientHello is rejected from its first byte */
    assert_int_equal(req_lim("\x16\x03\x01\x02\x00", 5, NULL), -400);
    assert_int_equal(req_lim("\r\n\x16", 3, NULL), -400);
    assert_int_equal(req_lim("\r\n", 2, NULL), 0);
    mg_http_msg_reset(&M);
    assert_true(mg_http_parse_response("\x16\x03", 2, &M, NULL, MG_METHOD_GET) < 0);
}
REJECT(rej_too_many_empty, 400, "\r\n\r\n\r\n\r\n\r\nGET /" H11 "\r\n")

/* ---- valid requests ---- */

static void ok_simple(void **state)
{
    (void)state;
    const char *s = "GET /p/q?x=1&y HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n"
                    "Accept: */*\r\n\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_true(sl_is(M.method, "GET"));
    assert_int_equal(M.method_id, MG_METHOD_GET);
    assert_true(sl_is(M.target, "/p/q?x=1&y"));
    assert_true(sl_is(M.path, "/p/q"));
    assert_true(sl_is(M.query, "x=1&y"));
    assert_int_equal(M.authority.n, 0);
    assert_int_equal(M.version, 11);
    assert_int_equal(M.nheaders, 3);
    assert_true(sl_is(M.host, "example.com"));
    assert_int_equal(M.headers[0].flags, MG_HDR_HOST);
    assert_int_equal(M.headers[1].flags, 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_int_equal(M.flags, 0);
    assert_null(mg_http_find(&M, MG_SLICE_LIT("x-none")));
    const mg_http_header_t *h = mg_http_find(&M, MG_SLICE_LIT("user-agent"));
    assert_non_null(h);
    assert_true(sl_is(h->value, "t"));
}

static void ok_query_empty_and_absent(void **state)
{
    (void)state;
    assert_true(req("GET /a? HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_non_null(M.query.p);
    assert_int_equal(M.query.n, 0);
    assert_true(req("GET /a HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_null(M.query.p);
    assert_true(req("GET /a%2Fb%c3 HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_true(req("GET /!$&'()*+,;=:@-._~[]?/? HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
}

static void ok_cl_variants(void **state)
{
    (void)state;
    assert_true(req("POST /" H11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n") > 0);
    assert_int_equal(M.body, MG_BODY_LENGTH);
    assert_int_equal(M.content_length, 5);
    assert_true(M.flags & MG_MSG_HAS_CL);
    assert_true(req("POST /" H11 "Content-Length: 5, 5\r\n\r\n") > 0);
    assert_int_equal(M.content_length, 5);
    assert_true(req("POST /" H11 "Content-Length: 0\r\n\r\n") > 0);
    assert_int_equal(M.body, MG_BODY_LENGTH);
    assert_int_equal(M.content_length, 0);
    assert_true(req("POST /" H11 "Content-Length: 9223372036854775807\r\n\r\n") > 0);
    assert_int_equal(M.content_length, INT64_MAX);
    /* CL is hop-by-hop: framing is re-serialized */
    assert_true(M.headers[1].flags & MG_HDR_HOP);
}

static void ok_te_chunked(void **state)
{
    (void)state;
    assert_true(req("POST /" H11 "Transfer-Encoding: ChUnKeD \r\n\r\n") > 0);
    assert_int_equal(M.body, MG_BODY_CHUNKED);
    assert_true(M.headers[1].flags & MG_HDR_HOP);
    assert_true(req("POST /" H11 "Transfer-Encoding:\tchunked\r\n\r\n") > 0);
    assert_int_equal(M.body, MG_BODY_CHUNKED);
}

static void ok_http10_no_host(void **state)
{
    (void)state;
    assert_true(req("GET / HTTP/1.0\r\n\r\n") > 0);
    assert_int_equal(M.version, 10);
    assert_int_equal(M.host.n, 0);
    assert_int_equal(M.nheaders, 0);
}

static void ok_absolute_form(void **state)
{
    (void)state;
    assert_true(req("GET HTTP://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: other\r\n\r\n") > 0);
    assert_true(M.flags & MG_MSG_ABSOLUTE_FORM);
    assert_true(sl_is(M.authority, "Example.com:8080"));
    assert_true(sl_is(M.path, "/a/b"));
    assert_true(sl_is(M.query, "c=d"));
    assert_true(sl_is(M.host, "other"));
    assert_true(req("GET https://h HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    assert_true(sl_is(M.authority, "h"));
    assert_true(sl_is(M.path, "/"));
    assert_null(M.query.p);
    assert_true(req("GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
    assert_true(sl_is(M.path, "/"));
    assert_true(sl_is(M.query, "x"));
}

static void ok_options_star(void **state)
{
    (void)state;
    assert_true(req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n") > 0);
    assert_int_equal(M.method_id, MG_METHOD_OPTIONS);
    assert_true(sl_is(M.path, "*"));
}

static void ok_connect(void **state)
{
    (void)state;
    assert_true(req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n") > 0);
    assert_int_equal(M.method_id, MG_METHOD_CONNECT);
    assert_true(sl_is(M.authority, "example.com:443"));
    assert_true(sl_is(M.path, "example.com:443"));
    assert_true(req("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n") > 0);
}

static void ok_lone_lf(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\nHost: a\nX: y\r\n\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_int_equal(M.nheaders, 2);
    assert_true(sl_is(M.headers[1].value, "y"));
}

static void ok_leading_empty_lines(void **state)
{
    (void)state;
    const char *s = "\r\n\n\r\n\r\nGET /" H11 "\r\n";
    assert_int_equal(req(s), (int)strlen(s));
    assert_true(sl_is(M.method, "GET"));
}

static void ok_empty_value_and_trim(void **state)
{
    (void)state;
    assert_true(req("GET /" H11 "X-Empty:\r\nX-Sp:   \r\nX-T: \t v a l \t\r\nX-Bin: \x80\xff\r\n\r\n") > 0);
    assert_int_equal(M.nheaders, 5);
    assert_int_equal(M.headers[1].value.n, 0);
    assert_int_equal(M.headers[2].value.n, 0);
    assert_true(sl_is(M.headers[3].value, "v a l"));
    assert_true(sl_is(M.headers[4].value, "\x80\xff"));
}

static void ok_methods(void **state)
{
    (void)state;
    static const struct { const char *m; mg_method_t id; } t[] = {
        { "GET", MG_METHOD_GET },         { "HEAD", MG_METHOD_HEAD },
        { "POST", MG_METHOD_POST },       { "PUT", MG_METHOD_PUT },
        { "DELETE", MG_METHOD_DELETE },   { "OPTIONS", MG_METHOD_OPTIONS },
        { "TRACE", MG_METHOD_TRACE },     { "PATCH", MG_METHOD_PATCH },
        { "get", MG_METHOD_OTHER },       { "PROPFIND", MG_METHOD_OTHER },
        { "X-Y!#~", MG_METHOD_OTHER },
    };
    char buf[128];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        snprintf(buf, sizeof buf, "%s /" H11 "\r\n", t[i].m);
        assert_true(req(buf) > 0);
        assert_int_equal(M.method_id, t[i].id);
        assert_true(sl_is(M.method, t[i].m));
        if (t[i].id != MG_METHOD_OTHER)
            assert_string_equal(mg_method_name(t[i].id), t[i].m);
    }
    assert_string_equal(mg_method_name(MG_METHOD_CONNECT), "CONNECT");
    assert_null(mg_method_name(MG_METHOD_OTHER));
}

static void ok_connection_flags(void **state)
{
    (void)state;
    assert_true(req("GET /" H11 "Connection: close\r\n\r\n") > 0);
    assert_int_equal(M.flags, MG_MSG_CONN_CLOSE);
    assert_true(M.headers[1].flags & MG_HDR_HOP);
    assert_true(req("GET /" H11 "Connection: Keep-Alive, UPGRADE\r\nUpgrade: websocket\r\n"
                    "Keep-Alive: timeout=5\r\n\r\n") > 0);
    assert_int_equal(M.flags, MG_MSG_CONN_KEEPALIVE | MG_MSG_CONN_UPGRADE);
    assert_true(M.headers[2].flags & MG_HDR_HOP);
    assert_true(M.headers[3].flags & MG_HDR_HOP);
    /* multiple Connection fields, empty list elements */
    assert_true(req("GET /" H11 "Connection: ,upgrade\r\nconnection: close,\r\n\r\n") > 0);
    assert_int_equal(M.flags, MG_MSG_CONN_CLOSE | MG_MSG_CONN_UPGRADE);
}

static void ok_connection_named_hop(void **state)
{
    (void)state;
    assert_true(req("GET /" H11 "X-Before: 1\r\nConnection: x-before, X-AFTER\r\nX-After: 2\r\n"
                    "X-Other: 3\r\n\r\n") > 0);
    assert_true(M.headers[1].flags & MG_HDR_HOP);
    assert_true(M.headers[3].flags & MG_HDR_HOP);
    assert_false(M.headers[4].flags & MG_HDR_HOP);
    assert_false(M.headers[0].flags & MG_HDR_HOP);
}

static void ok_hop_fields(void **state)
{
    (void)state;
    assert_true(req("GET /" H11 "TE: trailers\r\nTrailer: x\r\nProxy-Connection: k\r\n"
                    "Expect: 100-Continue\r\nX: y\r\n\r\n") > 0);
    for (int i = 1; i <= 4; i++)
        assert_true(M.headers[i].flags & MG_HDR_HOP);
    assert_false(M.headers[5].flags & MG_HDR_HOP);
    assert_true(M.flags & MG_MSG_EXPECT_CONTINUE);
    assert_true(req("GET /" H11 "Expect: something\r\n\r\n") > 0);
    assert_false(M.flags & MG_MSG_EXPECT_CONTINUE);
}

static void ok_pipelined(void **state)
{
    (void)state;
    const char *a = "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    char buf[256];
    snprintf(buf, sizeof buf, "%sGET /2 HTTP/1.1\r\nHost: b\r\n\r\n", a);
    int n = req(buf);
    assert_int_equal(n, (int)strlen(a));
    assert_true(sl_is(M.path, "/1"));
    n = req(buf + n);
    assert_int_equal(n, (int)strlen(a));
    assert_true(sl_is(M.path, "/2"));
    assert_true(sl_is(M.host, "b"));
}

static void ok_byte_at_a_time(void **state)
{
    (void)state;
    const char *s = "\r\nPOST /x?y HTTP/1.1\r\nHost: h\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    size_t n = strlen(s), head = n - 3;
    mg_http_msg_t *m = malloc(sizeof *m);
    mg_http_msg_reset(m);
    for (size_t i = 0; i < head; i++) {
        assert_int_equal(mg_http_parse_request(s, i, m, NULL), 0);
        assert_true(m->scan_pos <= i);
    }
    assert_int_equal(mg_http_parse_request(s, head, m, NULL), (int)head);
    assert_int_equal(req(s), (int)head);
    assert_true(mg_slice_eq(m->path, M.path));
    assert_int_equal(m->nheaders, M.nheaders);
    assert_int_equal(m->content_length, 3);
    assert_int_equal(m->flags, M.flags);
    assert_int_equal(m->body, MG_BODY_LENGTH);
    free(m);
}

static void ok_resume_no_rescan(void **state)
{
    (void)state;
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\n";
    mg_http_msg_reset(&M);
    assert_int_equal(mg_http_parse_request(s, strlen(s), &M, NULL), 0);
    assert_int_equal(M.scan_pos, strlen(s));
}

static char *make_headers(size_t nfields, size_t *len)
{
    size_t cap = 64 + nfields * 32;
    char *b = malloc(cap);
    size_t n = (size_t)sprintf(b, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 1; i < nfields; i++)
        n += (size_t)sprintf(b + n, "X-%zu: v\r\n", i);
    n += (size_t)sprintf(b + n, "\r\n");
    *len = n;
    return b;
}

static void limit_header_count(void **state)
{
    (void)state;
    size_t n;
    char *b = make_headers(100, &n);
    assert_int_equal(req_lim(b, n, NULL), (int)n);
    assert_int_equal(M.nheaders, 100);
    free(b);
    b = make_headers(101, &n);
    assert_int_equal(req_lim(b, n, NULL), -431);
    /* detected before the head is complete */
    assert_int_equal(req_lim(b, n - 2, NULL), -431);
    free(b);
    /* hard ceiling of MG_HTTP_MAX_HEADERS */
    mg_http_limits_t lim = { 8192, 1 << 20, 1000 };
    b = make_headers(128, &n);
    assert_int_equal(req_lim(b, n, &lim), (int)n);
    free(b);
    b = make_headers(129, &n);
    assert_int_equal(req_lim(b, n, &lim), -431);
    free(b);
    mg_http_limits_t lim2 = { 8192, 1 << 20, 3 };
    b = make_headers(4, &n);
    assert_int_equal(req_lim(b, n, &lim2), -431);
    free(b);
}

static void limit_header_bytes(void **state)
{
    (void)state;
    size_t cap = 40000;
    char *b = malloc(cap);
    int n = sprintf(b, "GET / HTTP/1.1\r\nHost: a\r\nX: ");
    /* total head exactly 32768 bytes: OK */
    memset(b + n, 'v', 32768 - (size_t)n - 4);
    memcpy(b + 32768 - 4, "\r\n\r\n", 4);
    assert_int_equal(req_lim(b, 32768, NULL), 32768);
    /* 32769 bytes: -431 */
    memset(b + n, 'v', 32769 - (size_t)n - 4);
    memcpy(b + 32769 - 4, "\r\n\r\n", 4);
    assert_int_equal(req_lim(b, 32769, NULL), -431);
    /* detected early: 32769 bytes without the end of the head */
    memset(b + n, 'v', cap - (size_t)n);
    assert_int_equal(req_lim(b, 32768, NULL), 0);
    assert_int_equal(req_lim(b, 32769, NULL), -431);
    free(b);
}

static void limit_request_line(void **state)
{
    (void)state;
    size_t cap = 9000;
    char *b = malloc(cap);
    /* request line of exactly 8192 bytes (without CRLF) */
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', 8192 - 5 - 9);
    memcpy(b + 8192 - 9, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    assert_int_equal(req_lim(b, 8192 + 22 - 9, NULL), 8192 + 22 - 9);
    /* 8192 bytes without line end and a CR: still waiting */
    assert_int_equal(req_lim(b, 8192, NULL), 0);
    assert_int_equal(req_lim(b, 8193, NULL), 0);
    /* 8193 bytes: -414 */
    memcpy(b, "GET /", 5);
    memset(b + 5, 'a', 8193 - 5 - 9);
    memcpy(b + 8193 - 9, " HTTP/1.1\r\nHost: a\r\n\r\n", 22);
    assert_int_equal(req_lim(b, 8193 + 22 - 9, NULL), -414);
    /* detected as soon as 8193 bytes are there */
    memset(b + 5, 'a', cap - 5);
    assert_int_equal(req_lim(b, 8192, NULL), 0);
    assert_int_equal(req_lim(b, 8193, NULL), -414);
    /* custom limit */
    mg_http_limits_t lim = { 16, 32768, 100 };
    assert_int_equal(req_lim("GET /0123456789 HTTP/1.1\r\nHost: a\r\n\r\n", 38, &lim), -414);
    assert_true(req_lim("GET /01 HTTP/1.1\r\nHost: a\r\n\r\n", 29, &lim) > 0);
    free(b);
}

/* ---- responses ---- */

static void resp_basic(void **state)
{
    (void)state;
    const char *s = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nServer: x\r\n\r\nhello";
    assert_int_equal(resp(s, MG_METHOD_GET), (int)strlen(s) - 5);
    assert_int_equal(M.status, 200);
    assert_true(sl_is(M.reason, "OK"));
    assert_int_equal(M.version, 11);
    assert_int_equal(M.body, MG_BODY_LENGTH);
    assert_int_equal(M.content_length, 12);
    assert_int_equal(M.nheaders, 2);
}

static void resp_no_reason(void **state)
{
    (void)state;
    assert_true(resp("HTTP/1.1 200\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.status, 200);
    assert_int_equal(M.reason.n, 0);
    assert_int_equal(M.body, MG_BODY_EOF);
    assert_true(resp("HTTP/1.0 404 \r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.version, 10);
    assert_int_equal(M.reason.n, 0);
    assert_true(resp("HTTP/1.1 500 Internal \t Error\r\n\r\n", MG_METHOD_GET) > 0);
    assert_true(sl_is(M.reason, "Internal \t Error"));
}

static void resp_bodyless(void **state)
{
    (void)state;
    assert_true(resp("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(M.flags & MG_MSG_HAS_CL);
    assert_int_equal(M.content_length, 7);
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", MG_METHOD_HEAD) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_int_equal(M.content_length, 100);
    assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", MG_METHOD_HEAD) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(resp("HTTP/1.1 304 Not Modified\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(resp("HTTP/1.1 100 Continue\r\n\r\n", MG_METHOD_POST) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(resp("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                     MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(M.flags & MG_MSG_CONN_UPGRADE);
    assert_true(resp("HTTP/1.1 200 Connection established\r\n\r\n", MG_METHOD_CONNECT) > 0);
    assert_int_equal(M.body, MG_BODY_NONE);
    assert_true(resp("HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", MG_METHOD_CONNECT) > 0);
    assert_int_equal(M.body, MG_BODY_LENGTH);
    /* an invalid CL is still rejected on a bodiless response */
    assert_true(resp("HTTP/1.1 204 No Content\r\nContent-Length: x\r\n\r\n", MG_METHOD_GET) < 0);
}

static void resp_framing(void **state)
{
    (void)state;
    assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_CHUNKED);
    assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_CHUNKED);
    assert_true(resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_EOF);
    assert_true(resp("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_EOF);
    assert_true(resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", MG_METHOD_GET) > 0);
    assert_int_equal(M.body, MG_BODY_LENGTH);
    assert_int_equal(M.content_length, 0);
    /* responses have no Host requirement */
    assert_true(resp("HTTP/1.1 200 OK\r\nHost: a\r\nHost: b\r\n\r\n", MG_METHOD_GET) > 0);
}

static void resp_reject(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 600 High\r\n\r\n",
        "HTTP/1.1 20 Short\r\n\r\n",
        "HTTP/1.1 2000 Long\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/1.1 200OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX : y\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: y\r\n z\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: y\rz\r\n\r\n",
        "\r\nHTTP/1.1 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = resp(bad[i], MG_METHOD_GET);
        if (rc >= 0)
            fail_msg("accepted bad response #%zu", i);
    }
}

/* ---- chunked ---- */

/* Decodes s fed in pieces of at most step bytes (0 = whole); collects data.
 * Returns the final decode result: total consumed, or the error. */
static ssize_t dechunk(const char *s, size_t n, size_t step, char *data, size_t *dn, int *done)
{
    mg_chunked_t c;
    mg_chunked_reset(&c);
    size_t off = 0, avail = 0;
    *dn = 0;
    *done = 0;
    if (step == 0)
        step = n;
    while (!*done) {
        size_t add = avail + step <= n - off ? step : n - off - avail;
        avail += add;
        mg_slice_t out[2];
        size_t nout;
        ssize_t r = mg_chunked_decode(&c, s + off, avail, out, 2, &nout, done);
        if (r < 0)
            return r;
        for (size_t i = 0; i < nout; i++) {
            assert_true(out[i].p >= s + off && out[i].p + out[i].n <= s + off + avail);
            memcpy(data + *dn, out[i].p, out[i].n);
            *dn += out[i].n;
        }
        off += (size_t)r;
        avail -= (size_t)r;
        if (!*done && r == 0 && add == 0)
            break; /* input exhausted */
    }
    return (ssize_t)off;
}

static void chunked_basic(void **state)
{
    (void)state;
    const char *s = "5\r\nhello\r\n1;ext=val;e2;e3 = \"q\\\"s\";e4 ;e5\r\n \r\n0\r\n\r\nNEXT";
    char data[64];
    size_t dn;
    int done;
    ssize_t r = dechunk(s, strlen(s), 0, data, &dn, &done);
    assert_int_equal(r, (ssize_t)strlen(s) - 4);
    assert_int_equal(done, 1);
    assert_int_equal(dn, 6);
    assert_memory_equal(data, "hello ", 6);
}

static void chunked_trailers(void **state)
{
    (void)state;
    const char *s = "A\r\n0123456789\r\n0\r\nX-Sum: abc\r\nX-Empty:\r\n\r\n";
    char data[64];
    size_t dn;
    int done;
    assert_int_equal(dechunk(s, strlen(s), 0, data, &dn, &done), (ssize_t)strlen(s));
    assert_int_equal(done, 1);
    assert_int_equal(dn, 10);
    assert_memory_equal(data, "0123456789", 10);
}

static void chunked_split_every_byte(void **state)
{
    (void)state;
    const char *s = "3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0;last\r\nT: v\r\n\r\nrest";
    size_t n = strlen(s);
    char ref[64], data[64];
    size_t rn, dn;
    int rdone, done;
    ssize_t rr = dechunk(s, n, 0, ref, &rn, &rdone);
    assert_int_equal(rr, (ssize_t)n - 4);
    assert_int_equal(rn, 19);
    for (size_t step = 1; step <= n; step++) {
        ssize_t r = dechunk(s, n, step, data, &dn, &done);
        assert_int_equal(r, rr);
        assert_int_equal(done, 1);
        assert_int_equal(dn, rn);
        assert_memory_equal(data, ref, rn);
    }
    /* split into two at every point */
    for (size_t cut = 0; cut <= n; cut++) {
        mg_chunked_t c;
        mg_chunked_reset(&c);
        mg_slice_t out[8];
        size_t nout;
        size_t got = 0;
        ssize_t r1 = mg_chunked_decode(&c, s, cut, out, 8, &nout, &done);
        assert_true(r1 >= 0);
        for (size_t i = 0; i < nout; i++) {
            memcpy(data + got, out[i].p, out[i].n);
            got += out[i].n;
        }
        ssize_t r2 = mg_chunked_decode(&c, s + r1, n - (size_t)r1, out, 8, &nout, &done);
        assert_true(r2 >= 0);
        for (size_t i = 0; i < nout; i++) {
            memcpy(data + got, out[i].p, out[i].n);
            got += out[i].n;
        }
        assert_int_equal(r1 + r2, rr);
        assert_int_equal(done, 1);
        assert_int_equal(got, rn);
        assert_memory_equal(data, ref, rn);
    }
}

static void chunked_out_full(void **state)
{
    (void)state;
    const char *s = "1\r\na\r\n1\r\nb\r\n0\r\n\r\n";
    mg_chunked_t c;
    mg_chunked_reset(&c);
    mg_slice_t out[1];
    size_t nout;
    int done;
    ssize_t r = mg_chunked_decode(&c, s, strlen(s), out, 1, &nout, &done);
    assert_int_equal(r, 6 + 3); /* "1\r\na" data, "\r\n" and "1\r\n" framing */
    assert_int_equal(nout, 1);
    assert_int_equal(done, 0);
    ssize_t r2 = mg_chunked_decode(&c, s + r, strlen(s) - (size_t)r, out, 1, &nout, &done);
    assert_int_equal(r + r2, (ssize_t)strlen(s));
    assert_int_equal(nout, 1);
    assert_int_equal(out[0].p[0], 'b');
    assert_int_equal(done, 1);
    /* after done nothing more is consumed */
    assert_int_equal(mg_chunked_decode(&c, "xyz", 3, out, 1, &nout, &done), 0);
    assert_int_equal(done, 1);
}

static void chunked_reject(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "g\r\n",                               /* bad hex */
        "\r\n",                                /* empty size */
        "-1\r\n",                              /* sign */
        "0x5\r\nhello\r\n",                    /* 0x prefix */
        "10000000000000000\r\n",               /* 17 digits: overflow */
        "8000000000000000\r\n",                /* > INT64_MAX */
        "5\r\nhelloX\r\n0\r\n\r\n",            /* missing CRLF after data */
        "5\r\nhello\n0\r\n\r\n",               /* LF only after data */
        "5\nhello\r\n0\r\n\r\n",               /* LF only after size */
        "5\rhello\r\n",                        /* bare CR after size */
        "5\r\nhello\r\n0\n\n",                 /* LF-only last chunk */
        "5\r\nhello\r\n0\r\n\n",               /* LF-only end */
        "5 \r\nhello\r\n0\r\n\r\n",            /* trailing whitespace after size */
        "5;\r\nhello\r\n",                     /* empty ext name */
        "5;a=\r\nhello\r\n",                   /* empty ext value */
        "5;a=\"x\r\nhello\r\n",                /* unterminated quoted */
        "5;a b\r\nhello\r\n",                  /* junk in ext */
        "5;a=b c\r\nhello\r\n",
        "5;a=(\r\nhello\r\n",
        "0\r\nX : y\r\n\r\n",                  /* trailer: ws before colon */
        "0\r\nX: y\r\n z\r\n\r\n",             /* trailer obs-fold */
        "0\r\nX: y\n\r\n",                     /* trailer LF-only */
        "0\r\nX: a\x01\r\n\r\n",               /* trailer CTL */
        "0\r\n: y\r\n\r\n",                    /* empty trailer name */
        "0\r\nXy\r\n\r\n",                     /* no colon */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char data[64];
        size_t dn;
        int done;
        ssize_t r = dechunk(bad[i], strlen(bad[i]), 0, data, &dn, &done);
        if (r != -400)
            fail_msg("bad chunked #%zu accepted (r=%zd)", i, r);
        for (size_t step = 1; step < strlen(bad[i]); step++) {
            r = dechunk(bad[i], strlen(bad[i]), step, data, &dn, &done);
            if (r != -400)
                fail_msg("bad chunked #%zu step %zu accepted (r=%zd)", i, step, r);
        }
    }
}

static void chunked_limits(void **state)
{
    (void)state;
    static char buf[20000];
    char data[8];
    size_t dn;
    int done;
    /* extension of 4096 bytes total ok, 4097 rejected */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = 0;
        buf[n++] = '1';
        buf[n++] = ';';
        size_t ext = 4096 - 2 + (size_t)extra; /* ';' + name + CR counted */
        memset(buf + n, 'e', ext);
        n += ext;
        memcpy(buf + n, "\r\nx\r\n0\r\n\r\n", 10);
        n += 10;
        ssize_t r = dechunk(buf, n, 0, data, &dn, &done);
        if (extra)
            assert_int_equal(r, -400);
        else
            assert_int_equal(r, (ssize_t)n);
    }
    /* 64 trailers ok, 65 rejected */
    for (int extra = 0; extra <= 1; extra++) {
        size_t n = (size_t)sprintf(buf, "0\r\n");
        for (int i = 0; i < 64 + extra; i++)
            n += (size_t)sprintf(buf + n, "T%d: v\r\n", i);
        n += (size_t)sprintf(buf + n, "\r\n");
        ssize_t r = dechunk(buf, n, 0, data, &dn, &done);
        assert_int_equal(r, extra ? -400 : (ssize_t)n);
    }
    /* trailer section over 8 KiB rejected */
    size_t n = (size_t)sprintf(buf, "0\r\nBig: ");
    memset(buf + n, 'v', 8200);
    n += 8200;
    n += (size_t)sprintf(buf + n, "\r\n\r\n");
    assert_int_equal(dechunk(buf, n, 0, data, &dn, &done), -400);
    assert_int_equal(dechunk(buf, n, 7, data, &dn, &done), -400);
    /* 16 hex digits with leading zeros ok */
    const char *s = "0000000000000001\r\nz\r\n0\r\n\r\n";
    assert_int_equal(dechunk(s, strlen(s), 0, data, &dn, &done), (ssize_t)strlen(s));
    assert_int_equal(dn, 1);
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(rej_cl_and_te), T(rej_te_and_cl), T(rej_cl_dup_differ), T(rej_cl_list_differ),
        T(rej_cl_plus), T(rej_cl_minus), T(rej_cl_hex), T(rej_cl_space_inside), T(rej_cl_empty),
        T(rej_cl_empty_elem), T(rej_cl_trailing_comma), T(rej_cl_overflow), T(rej_cl_overflow_huge),
        T(rej_te_gzip_chunked), T(rej_te_split_gzip_chunked), T(rej_te_chunked_identity),
        T(rej_te_identity), T(rej_te_gzip_only), T(rej_te_chunked_chunked),
        T(rej_te_chunked_twice_fields), T(rej_te_empty), T(rej_te_chunked_params),
        T(rej_te_bad_syntax), T(rej_te_xchunked), T(rej_te_http10),
        T(rej_ws_before_colon), T(rej_tab_before_colon), T(rej_ws_before_colon_cl),
        T(rej_obs_fold), T(rej_obs_fold_tab), T(rej_ws_first_field), T(rej_bare_cr_value),
        T(rej_bare_cr_eol), T(rej_bare_cr_name), T(rej_bare_cr_reqline), T(rej_bare_cr_end),
        T(rej_ctl_value), T(rej_del_value), T(rej_name_paren), T(rej_name_high),
        T(rej_name_empty), T(rej_no_colon), T(rej_missing_host), T(rej_dup_host),
        T(rej_dup_host_10), T(rej_host_invalid), T(rej_bad_connection),
        T(rej_target_no_slash), T(rej_target_star_get), T(rej_connect_origin),
        T(rej_connect_noport), T(rej_connect_badport), T(rej_authority_get),
        T(rej_abs_no_authority), T(rej_abs_userinfo), T(rej_abs_ftp), T(rej_target_ctl),
        T(rej_target_tab), T(rej_target_hash), T(rej_target_dquote), T(rej_target_lt),
        T(rej_target_gt), T(rej_target_backslash), T(rej_target_caret), T(rej_target_backtick),
        T(rej_target_lbrace), T(rej_target_pipe), T(rej_target_rbrace), T(rej_target_high),
        T(rej_target_bad_pct), T(rej_target_short_pct), T(rej_target_space),
        T(rej_http20), T(rej_http09), T(rej_http12), T(rej_httx), T(rej_http11x),
        T(rej_http_lower), T(rej_http_missing), T(rej_version_trailing_sp),
        T(rej_method_empty), T(rej_method_double_sp), T(rej_target_double_sp),
        T(rej_method_bad), T(rej_method_tab), T(rej_too_many_empty), T(rej_garbage_early),
        T(ok_simple), T(ok_query_empty_and_absent), T(ok_cl_variants), T(ok_te_chunked),
        T(ok_http10_no_host), T(ok_absolute_form), T(ok_options_star), T(ok_connect),
        T(ok_lone_lf), T(ok_leading_empty_lines), T(ok_empty_value_and_trim), T(ok_methods),
        T(ok_connection_flags), T(ok_connection_named_hop), T(ok_hop_fields), T(ok_pipelined),
        T(ok_byte_at_a_time), T(ok_resume_no_rescan),
        T(limit_header_count), T(limit_header_bytes), T(limit_request_line),
        T(resp_basic), T(resp_no_reason), T(resp_bodyless), T(resp_framing), T(resp_reject),
        T(chunked_basic), T(chunked_trailers), T(chunked_split_every_byte), T(chunked_out_full),
        T(chunked_reject), T(chunked_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
