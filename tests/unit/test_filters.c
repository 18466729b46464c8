/* test_filters: every built-in filter, table-driven, with the examples of
 * Spring Cloud Gateway's documentation as cases. A case is a route (Path
 * predicate + filters in Spring's shortcut or expanded form), a raw request,
 * and what the upstream (request filters) or the client (response filters)
 * must get. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wmissing-field-initializers" /* sparse case tables */

#include "gw_harness.h"

static void route_yaml(char *buf, size_t n, const char *pred, const char *filters)
{
    size_t o = (size_t)snprintf(buf, n, "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes:\n  - id: r\n    to: c\n"
                                        "    predicates:\n      - '%s'\n    filters:\n", pred ? pred : "Path=/**");
    /* filters separated by '|' ; an item starting with '{' is written as is */
    const char *p = filters;
    while (*p && o < n) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (*p == '{') o += (size_t)snprintf(buf + o, n - o, "      - %.*s\n", (int)l, p);
        else o += (size_t)snprintf(buf + o, n - o, "      - '%.*s'\n", (int)l, p);
        p += l + (e ? 1 : 0);
    }
}

/* ---- request filters ---- */

static const struct {
    const char *pred, *filters, *request;
    const char *target;   /* expected "path?query" upstream */
    const char *headers;  /* expected substring of the forwarded header dump (NULL: skip) */
    const char *absent;   /* header dump must not contain this */
    int rc;               /* mg_filters_request result */
    int local_status;
    const char *local;    /* substring of local headers */
} req_cases[] = {
    /* StripPrefix: Spring's example and the edge cases */
    { "Path=/name/**", "StripPrefix=2", "GET /name/blue/red HTTP/1.1\r\nHost: h", "/red" },
    { NULL, "StripPrefix=2", "GET /name/blue HTTP/1.1\r\nHost: h", "/" },
    { NULL, "StripPrefix=2", "GET /name HTTP/1.1\r\nHost: h", "/" },
    { NULL, "StripPrefix=2", "GET /a/b/c/ HTTP/1.1\r\nHost: h", "/c/" },
    { NULL, "StripPrefix=2", "GET //a//b/c/d?x=1&y HTTP/1.1\r\nHost: h", "/c/d?x=1&y" },
    { NULL, "StripPrefix=1", "GET /api/ HTTP/1.1\r\nHost: h", "/" },
    { NULL, "StripPrefix=0", "GET /a/b HTTP/1.1\r\nHost: h", "/a/b" },
    { "Path=/api/users/**", "StripPrefix=2", "GET /api/users/42 HTTP/1.1\r\nHost: h", "/42" },
    { NULL, "{name: StripPrefix, args: {parts: 1}}", "GET /a/b HTTP/1.1\r\nHost: h", "/b" },
    /* PrefixPath */
    { NULL, "PrefixPath=/mypath", "GET /hello HTTP/1.1\r\nHost: h", "/mypath/hello" },
    /* SetPath with a Path variable */
    { "Path=/red/{segment}", "SetPath=/{segment}", "GET /red/blue HTTP/1.1\r\nHost: h", "/blue" },
    /* RewritePath: named group, Spring's $\{} */
    { "Path=/red/**", "RewritePath=/red/?(?<segment>.*), /$\\{segment}", "GET /red/blue HTTP/1.1\r\nHost: h", "/blue" },
    { "Path=/red/**", "RewritePath=/red/?(?<segment>.*), /$\\{segment}", "GET /red HTTP/1.1\r\nHost: h", "/" },
    { NULL, "RewritePath=/red(?<segment>/?.*), $\\{segment}", "GET /red/blue?q=1 HTTP/1.1\r\nHost: h", "/blue?q=1" },
    { NULL, "RewritePath=/api/(.*), /v2/$1", "GET /api/x/y HTTP/1.1\r\nHost: h", "/v2/x/y" },
    { NULL, "RewritePath=o, 0", "GET /foo/bor HTTP/1.1\r\nHost: h", "/f00/b0r" },
    /* headers */
    { NULL, "AddRequestHeader=X-Request-red, blue", "GET /x HTTP/1.1\r\nHost: h", "/x", "X-Request-red: blue\n" },
    { NULL, "AddRequestHeader=X-Service-Name,user-service", "GET /x HTTP/1.1\r\nHost: h", "/x",
      "X-Service-Name: user-service\n" },
    { "Path=/red/{segment}", "AddRequestHeader=X-Request-Red, Blue-{segment}", "GET /red/x1 HTTP/1.1\r\nHost: h",
      "/red/x1", "X-Request-Red: Blue-x1\n" },
    { "Host={segment}.myhost.org", "AddRequestHeader=X-Sub, {segment}", "GET /x HTTP/1.1\r\nHost: www.myhost.org:8080",
      "/x", "X-Sub: www\n" },
    { NULL, "AddRequestHeadersIfNotPresent=X-Request-Color-1:blue,X-Request-Color-2:green",
      "GET /x HTTP/1.1\r\nHost: h\r\nX-Request-Color-1: red", "/x", "X-Request-Color-1: red\nX-Request-Color-2: green\n",
      "X-Request-Color-1: blue" },
    { NULL, "RemoveRequestHeader=X-Request-Foo", "GET /x HTTP/1.1\r\nHost: h\r\nX-Request-Foo: 1\r\nA: b", "/x", "A: b\n",
      "X-Request-Foo" },
    { NULL, "SetRequestHeader=X-Request-Red, Blue", "GET /x HTTP/1.1\r\nHost: h\r\nX-Request-Red: 1234\r\nx-request-red: 5",
      "/x", "X-Request-Red: Blue\n", "1234" },
    { NULL, "MapRequestHeader=Blue, X-Request-Red", "GET /x HTTP/1.1\r\nHost: h\r\nBlue: b1\r\nX-Request-Red: r", "/x",
      "Blue: b1\nX-Request-Red: r\nX-Request-Red: b1\n" },
    { NULL, "MapRequestHeader=Blue, X-Request-Red", "GET /x HTTP/1.1\r\nHost: h", "/x", NULL, "X-Request-Red" },
    /* query parameters */
    { NULL, "AddRequestParameter=red, blue", "GET /x HTTP/1.1\r\nHost: h", "/x?red=blue" },
    { NULL, "AddRequestParameter=red, blue", "GET /x?a=1 HTTP/1.1\r\nHost: h", "/x?a=1&red=blue" },
    { NULL, "AddRequestParameter=red, blue", "GET /x?a=1& HTTP/1.1\r\nHost: h", "/x?a=1&red=blue" },
    { "Path=/p/{segment}", "AddRequestParameter=foo, bar-{segment}", "GET /p/7 HTTP/1.1\r\nHost: h", "/p/7?foo=bar-7" },
    { NULL, "RemoveRequestParameter=red", "GET /x?red=1&a=2&red=3&redder=4 HTTP/1.1\r\nHost: h", "/x?a=2&redder=4" },
    { NULL, "RemoveRequestParameter=red", "GET /x?red=1 HTTP/1.1\r\nHost: h", "/x" },
    { NULL, "RemoveRequestParameter=red", "GET /x?%72ed=1&b HTTP/1.1\r\nHost: h", "/x?b" },
    /* chains run in order */
    { "Path=/api/users/**", "StripPrefix=2|PrefixPath=/v1|AddRequestHeader=X-A, 1|SetRequestHeader=X-A, 2",
      "GET /api/users/42?x=y HTTP/1.1\r\nHost: h", "/v1/42?x=y", "X-A: 2\n" },
    /* local answers */
    { NULL, "RedirectTo=302, https://acme.org", "GET /x?a=1 HTTP/1.1\r\nHost: h", "/x?a=1", NULL, NULL, 0, 302,
      "Location: https://acme.org\n" },
    { NULL, "RedirectTo=302, https://acme.org, true", "GET /x?a=1 HTTP/1.1\r\nHost: h", "/x?a=1", NULL, NULL, 0, 302,
      "Location: https://acme.org?a=1\n" },
    { NULL, "RedirectTo=MOVED_PERMANENTLY, /new", "GET /x HTTP/1.1\r\nHost: h", "/x", NULL, NULL, 0, 301,
      "Location: /new\n" },
    { NULL, "RedirectTo=302, /r|AddRequestHeader=X-After, 1", "GET /x HTTP/1.1\r\nHost: h", "/x", NULL, "X-After", 0, 302 },
    { NULL, "RequestSize=5000000", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 6000000", "/x", NULL, NULL, -413, 0,
      "errorMessage: Request size is larger than permissible limit. Request size is 5.7 MB where permissible limit is 4.8 MB\n" },
    { NULL, "RequestSize=5MB", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5000000", "/x" },
    { NULL, "RequestSize=1KB", "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1025", "/x", NULL, NULL, -413 },
    { NULL, "RequestHeaderSize=20B", "GET /x HTTP/1.1\r\nHost: h\r\nX-Small: 123", "/x" },
    { NULL, "RequestHeaderSize=20B", "GET /x HTTP/1.1\r\nHost: h\r\nX-Big: 1234567890\r\nX-Big: 1234567890", "/x", NULL,
      NULL, -431 },
    { NULL, "RequestHeaderSize=20B, errorHeaderName", "GET /x HTTP/1.1\r\nHost: h\r\nX-Big: 123456789012345678901",
      "/x", NULL, NULL, -431, 0, "errorHeaderName: Request Header/s size is larger than permissible limit (20B). "
      "Request Header/s size for 'X-Big' is 26B.\n" },
};

static void test_request_filters(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof req_cases / sizeof req_cases[0]; i++) {
        char y[2048], buf[2048], hb[2048];
        gw_t g;
        route_yaml(y, sizeof y, req_cases[i].pred, req_cases[i].filters);
        if (gw_load(&g, y) != 0) {
            print_error("case %zu (%s): load: %s\n", i, req_cases[i].filters, g.err);
            failures++;
            gw_free(&g);
            continue;
        }
        if (!gw_request(&g, req_cases[i].request, NULL, 0, NULL)) {
            print_error("case %zu (%s): no route\n", i, req_cases[i].filters);
            failures++;
            gw_free(&g);
            continue;
        }
        assert_true(g.route->has_filters);
        int rc = mg_filters_request(g.route, &g.req);
        const char *t = gw_target(&g, buf, sizeof buf);
        gw_headers(&g.req.headers, hb, sizeof hb);
        char lb[1024];
        gw_headers(&g.req.local_headers, lb, sizeof lb);
        bool ok = rc == req_cases[i].rc && strcmp(t, req_cases[i].target) == 0 &&
                  (!req_cases[i].headers || strstr(hb, req_cases[i].headers)) &&
                  (!req_cases[i].absent || !strstr(hb, req_cases[i].absent)) &&
                  g.req.local_status == req_cases[i].local_status && (!req_cases[i].local || strstr(lb, req_cases[i].local));
        if (!ok) {
            print_error("case %zu (%s) %s:\n  rc %d target '%s' local %d\n  headers:\n%s  local:\n%s", i,
                        req_cases[i].filters, req_cases[i].request, rc, t, g.req.local_status, hb, lb);
            failures++;
        }
        gw_free(&g);
    }
    assert_int_equal(failures, 0);
}

/* ---- response filters ---- */

static const struct {
    const char *filters;
    int status;
    const char *resp_headers; /* "Name: value\n" lines */
    int want_status;
    const char *want; /* exact header dump after */
    const char *request;
} resp_cases[] = {
    { "AddResponseHeader=X-Response-Red, Blue", 200, "A: 1\n", 200, "A: 1\nX-Response-Red: Blue\n" },
    { "AddResponseHeader=X-Response-Red, Blue", 200, "X-Response-Red: Red\n", 200, "X-Response-Red: Red\nX-Response-Red: Blue\n" },
    { "SetResponseHeader=X-Response-Red, Blue", 200, "X-Response-Red: 1234\nB: 2\nx-response-red: 5\n", 200,
      "X-Response-Red: Blue\nB: 2\n" },
    { "SetResponseHeader=X-Response-Red, Blue", 200, "", 200, "X-Response-Red: Blue\n" },
    { "RemoveResponseHeader=X-Response-Foo", 200, "X-Response-Foo: 1\nB: 2\nx-response-foo: 3\n", 200, "B: 2\n" },
    { "DedupeResponseHeader=Access-Control-Allow-Credentials Access-Control-Allow-Origin", 200,
      "Access-Control-Allow-Credentials: true\nAccess-Control-Allow-Origin: https://a.org\nVary: x\n"
      "Access-Control-Allow-Credentials: false\nAccess-Control-Allow-Origin: https://b.org\n", 200,
      "Access-Control-Allow-Credentials: true\nAccess-Control-Allow-Origin: https://a.org\nVary: x\n" },
    { "DedupeResponseHeader=Access-Control-Allow-Origin, RETAIN_LAST", 200,
      "Access-Control-Allow-Origin: https://a.org\nVary: x\nAccess-Control-Allow-Origin: https://b.org\n", 200,
      "Vary: x\nAccess-Control-Allow-Origin: https://b.org\n" },
    { "DedupeResponseHeader=X-A, RETAIN_UNIQUE", 200, "X-A: 1\nX-A: 2\nX-A: 1\nX-A: 3\nX-A: 2\n", 200,
      "X-A: 1\nX-A: 2\nX-A: 3\n" },
    { "RewriteResponseHeader=X-Response-Red, , password=[^&]+, password=***", 200,
      "X-Response-Red: /42?user=ford&password=omg!what&flag=true\n", 200,
      "X-Response-Red: /42?user=ford&password=***&flag=true\n" },
    { "SetStatus=401", 200, "", 401, "" },
    { "SetStatus=BAD_REQUEST", 200, "", 400, "" },
    { "{name: SetStatus, args: {status: NOT_FOUND}}", 200, "", 404, "" },
    { "RewriteLocationResponseHeader=AS_IN_REQUEST, Location, ,", 302,
      "Location: https://object-service.prod.example.net/v2/some/object/id\n", 302,
      "Location: https://api.example.com/some/object/id\n", "POST /some/object/name HTTP/1.1\r\nHost: api.example.com" },
    { "RewriteLocationResponseHeader=AS_IN_REQUEST, Location, ,", 302,
      "Location: https://object-service.prod.example.net:8443/v2/some/object/id\n", 302,
      "Location: https://api.example.com/v2/some/object/id\n", "POST /v2/some/object/name HTTP/1.1\r\nHost: api.example.com" },
    { "RewriteLocationResponseHeader=NEVER_STRIP, Location, gw.example.com,", 302,
      "Location: http://backend:8080/v1/x\n", 302, "Location: http://gw.example.com/v1/x\n" },
    { "RewriteLocationResponseHeader=ALWAYS_STRIP", 302, "Location: http://backend/v1/x\n", 302,
      "Location: http://h/x\n" },
    { "RewriteLocationResponseHeader", 302, "Location: gopher://backend/x\n", 302, "Location: gopher://backend/x\n" },
    { "SecureHeaders", 200, "X-Frame-Options: SAMEORIGIN\n", 200,
      "X-Frame-Options: SAMEORIGIN\nX-Xss-Protection: 1 ; mode=block\nStrict-Transport-Security: max-age=631138519\n"
      "X-Content-Type-Options: nosniff\nReferrer-Policy: no-referrer\n"
      "Content-Security-Policy: default-src 'self' https:; font-src 'self' https: data:; img-src 'self' https: data:; "
      "object-src 'none'; script-src https:; style-src 'self' https: 'unsafe-inline'\n"
      "X-Download-Options: noopen\nX-Permitted-Cross-Domain-Policies: none\n" },
    { "{name: SecureHeaders, args: {disable: [x-frame-options, strict-transport-security, content-security-policy], "
      "referrer-policy: same-origin}}", 200, "", 200,
      "X-Xss-Protection: 1 ; mode=block\nX-Content-Type-Options: nosniff\nReferrer-Policy: same-origin\n"
      "X-Download-Options: noopen\nX-Permitted-Cross-Domain-Policies: none\n" },
};

static void parse_headers(mg_arena_t *a, mg_hdr_list_t *l, const char *s)
{
    while (*s) {
        const char *colon = strstr(s, ": "), *nl = strchr(s, '\n');
        mg_hdr_add(a, l, mg_slice(s, (size_t)(colon - s)), mg_slice(colon + 2, (size_t)(nl - colon - 2)));
        s = nl + 1;
    }
}

static void test_response_filters(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof resp_cases / sizeof resp_cases[0]; i++) {
        char y[2048], hb[4096];
        gw_t g;
        route_yaml(y, sizeof y, NULL, resp_cases[i].filters);
        if (gw_load(&g, y) != 0) {
            print_error("case %zu (%s): load: %s\n", i, resp_cases[i].filters, g.err);
            failures++;
            gw_free(&g);
            continue;
        }
        const char *rq = resp_cases[i].request ? resp_cases[i].request : "GET /x HTTP/1.1\r\nHost: h";
        assert_non_null(gw_request(&g, rq, NULL, 0, NULL));
        assert_int_equal(mg_filters_request(g.route, &g.req), 0);
        mg_resp_view_t resp = { .arena = g.arena, .status = resp_cases[i].status, .reason = MG_SLICE_LIT("X") };
        parse_headers(g.arena, &resp.headers, resp_cases[i].resp_headers);
        mg_filters_response(g.route, &g.req, &resp);
        gw_headers(&resp.headers, hb, sizeof hb);
        if (resp.status != resp_cases[i].want_status || strcmp(hb, resp_cases[i].want) != 0 ||
            (resp.status != resp_cases[i].status && resp.reason.p)) {
            print_error("case %zu (%s): status %d\n got:\n%s want:\n%s", i, resp_cases[i].filters, resp.status, hb,
                        resp_cases[i].want);
            failures++;
        }
        gw_free(&g);
    }
    assert_int_equal(failures, 0);
}

/* ---- default-filters, has_filters, PreserveHostHeader, SetRequestHostHeader ---- */

static void test_defaults_and_host(void **state)
{
    (void)state;
    gw_t g;
    const char *y = "clusters: {c: {endpoints: ['127.0.0.1:1']}}\n"
                    "default_filters:\n  - AddRequestHeader=X-Default, d\n  - AddResponseHeader=X-Gw, meshgate\n"
                    "routes:\n"
                    "  - {id: a, path: '/a/**', to: c, filters: [PreserveHostHeader]}\n"
                    "  - {id: b, path: '/b/{x}', to: c, filters: ['SetRequestHostHeader=example.org']}\n"
                    "  - {id: plain, path: /p, to: c}\n";
    if (gw_load(&g, y) != 0) fail_msg("%s", g.err);
    char hb[1024];
    assert_string_equal(gw_request(&g, "GET /a/1 HTTP/1.1\r\nHost: client.example", NULL, 0, NULL), "a");
    assert_int_equal(mg_filters_request(g.route, &g.req), 0);
    assert_true(g.req.preserve_host);
    assert_string_equal(gw_headers(&g.req.headers, hb, sizeof hb), "X-Default: d\n");
    assert_string_equal(gw_request(&g, "GET /b/1 HTTP/1.1\r\nHost: client.example", NULL, 0, NULL), "b");
    assert_int_equal(mg_filters_request(g.route, &g.req), 0);
    assert_true(g.req.host.n == 11 && memcmp(g.req.host.p, "example.org", 11) == 0);
    /* default filters make every route filtered */
    assert_string_equal(gw_request(&g, "GET /p HTTP/1.1\r\nHost: h", NULL, 0, NULL), "plain");
    assert_true(g.route->has_filters);
    assert_true(g.route->has_response_filters);
    mg_resp_view_t resp = { .arena = g.arena, .status = 200 };
    mg_filters_response(g.route, &g.req, &resp);
    assert_string_equal(gw_headers(&resp.headers, hb, sizeof hb), "X-Gw: meshgate\n");
    gw_free(&g);

    /* no filters anywhere: the proxy may skip the views */
    assert_int_equal(gw_load(&g, "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes: [{path: /p, to: c}]\n"), 0);
    assert_non_null(gw_request(&g, "GET /p HTTP/1.1\r\nHost: h", NULL, 0, NULL));
    assert_false(g.route->has_filters);
    assert_false(g.route->has_response_filters);
    gw_free(&g);
}

/* ---- the arena and header helpers ---- */

static void test_arena_headers(void **state)
{
    (void)state;
    mg_arena_t *a = mg_arena_new(256, 4096);
    assert_non_null(a);
    void *p1 = mg_arena_alloc(a, 10), *p2 = mg_arena_alloc(a, 1);
    assert_true(((uintptr_t)p1 & 7) == 0 && ((uintptr_t)p2 & 7) == 0 && p1 != p2);
    assert_non_null(mg_arena_alloc(a, 1000)); /* overflow chunk */
    assert_null(mg_arena_alloc(a, 5000));     /* past the limit */
    mg_arena_reset(a);
    assert_ptr_equal(mg_arena_alloc(a, 10), p1); /* first chunk kept */
    mg_slice_t d = mg_arena_dup(a, MG_SLICE_LIT("abc"));
    assert_true(d.n == 3 && d.p[3] == '\0');

    mg_hdr_list_t l = { 0 };
    for (int i = 0; i < 40; i++) assert_int_equal(mg_hdr_add(a, &l, MG_SLICE_LIT("X-N"), MG_SLICE_LIT("v")), 0);
    assert_int_equal(l.n, 40);
    mg_hdr_add(a, &l, MG_SLICE_LIT("Other"), MG_SLICE_LIT("o"));
    assert_int_equal(mg_hdr_set(a, &l, MG_SLICE_LIT("x-n"), MG_SLICE_LIT("one")), 0);
    assert_int_equal(l.n, 2);
    assert_true(mg_slice_eq(mg_hdr_get(&l, MG_SLICE_LIT("X-N"))->value, MG_SLICE_LIT("one")));
    mg_hdr_remove(&l, MG_SLICE_LIT("OTHER"));
    assert_int_equal(l.n, 1);
    assert_null(mg_hdr_get(&l, MG_SLICE_LIT("Other")));
    mg_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_filters),
        cmocka_unit_test(test_response_filters),
        cmocka_unit_test(test_defaults_and_host),
        cmocka_unit_test(test_arena_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
