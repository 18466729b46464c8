/* test_predicates: every route predicate, table-driven, with the examples
 * of Spring Cloud Gateway's documentation as cases, plus Weight's one draw
 * per request per group and its split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#pragma GCC diagnostic ignored "-Wmissing-field-initializers" /* sparse case tables */

#include "gw_harness.h"
#include "route/predicate.h"

#define T_2017_01_20 1484959367789LL /* 2017-01-20T17:42:47.789-07:00 in ms */

static void route_yaml(char *buf, size_t n, const char *preds)
{
    size_t o = (size_t)snprintf(buf, n, "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes:\n  - id: r\n    to: c\n"
                                        "    predicates:\n");
    for (const char *p = preds; *p && o < n;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (*p == '{') o += (size_t)snprintf(buf + o, n - o, "      - %.*s\n", (int)l, p);
        else o += (size_t)snprintf(buf + o, n - o, "      - '%.*s'\n", (int)l, p);
        p += l + (e ? 1 : 0);
    }
}

static const struct {
    const char *preds, *request, *peer;
    int64_t now;
    bool match;
    const char *vars; /* "a=1,b=2" */
} cases[] = {
    /* Path */
    { "Path=/red/{segment},/blue/{segment}", "GET /red/1 HTTP/1.1\r\nHost: h", 0, 0, true, "segment=1" },
    { "Path=/red/{segment},/blue/{segment}", "GET /blue/green HTTP/1.1\r\nHost: h", 0, 0, true, "segment=green" },
    { "Path=/red/{segment},/blue/{segment}", "GET /red/1/ HTTP/1.1\r\nHost: h", 0, 0, true, "segment=1" },
    { "Path=/red/{segment},/blue/{segment}", "GET /green/1 HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Path=/red/{segment},false", "GET /red/1/ HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Path=/red/{segment},false", "GET /red/1 HTTP/1.1\r\nHost: h", 0, 0, true, "segment=1" },
    { "{name: Path, args: {patterns: [/a/**, /b], matchTrailingSlash: false}}", "GET /b/ HTTP/1.1\r\nHost: h", 0, 0, false },
    { "{name: Path, args: {patterns: '/a/**,/b'}}", "GET /b HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Path=/api/users/**", "GET /api/users/42?x=1 HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Path=/api/{*rest}", "GET /api/a/b HTTP/1.1\r\nHost: h", 0, 0, true, "rest=/a/b" },
    { "Path=/x/{id:\\d+}", "GET /x/12a HTTP/1.1\r\nHost: h", 0, 0, false },
    /* Host */
    { "Host=**.somehost.org,**.anotherhost.org", "GET / HTTP/1.1\r\nHost: www.somehost.org", 0, 0, true },
    { "Host=**.somehost.org,**.anotherhost.org", "GET / HTTP/1.1\r\nHost: beta.somehost.org:8080", 0, 0, true },
    { "Host=**.somehost.org,**.anotherhost.org", "GET / HTTP/1.1\r\nHost: www.anotherhost.org", 0, 0, true },
    { "Host=**.somehost.org,**.anotherhost.org", "GET / HTTP/1.1\r\nHost: www.example.org", 0, 0, false },
    { "Host={sub}.myhost.org", "GET / HTTP/1.1\r\nHost: www.myhost.org", 0, 0, true, "sub=www" },
    { "Host={sub}.myhost.org", "GET / HTTP/1.1\r\nHost: a.b.myhost.org", 0, 0, false },
    { "Host=*.MyHost.org", "GET / HTTP/1.1\r\nHost: API.myhost.ORG", 0, 0, true },
    { "Host={sub:[a-z]+}.myhost.org|Path=/p/{id}", "GET /p/7 HTTP/1.1\r\nHost: abc.myhost.org", 0, 0, true,
      "sub=abc,id=7" },
    { "Path=/p/{id}|Host={sub}.myhost.org", "GET /p/7 HTTP/1.1\r\nHost: abc.myhost.org", 0, 0, true, "id=7,sub=abc" },
    /* Method */
    { "Method=GET,POST", "GET / HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Method=GET,POST", "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0", 0, 0, true },
    { "Method=GET,POST", "PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 0", 0, 0, false },
    { "Method=get", "GET / HTTP/1.1\r\nHost: h", 0, 0, true },
    /* Header */
    { "Header=X-Request-Id, \\d+", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: 123", 0, 0, true },
    { "Header=X-Request-Id, \\d+", "GET / HTTP/1.1\r\nHost: h\r\nx-request-id: 12a", 0, 0, false },
    { "Header=X-Request-Id, \\d+", "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: a\r\nX-Request-Id: 9", 0, 0, true },
    { "Header=X-Request-Id, \\d+", "GET / HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Header=X-Flag", "GET / HTTP/1.1\r\nHost: h\r\nX-Flag: anything", 0, 0, true },
    { "Header=X-Env, prod", "GET / HTTP/1.1\r\nHost: h\r\nX-Env: production", 0, 0, false },
    /* Query */
    { "Query=green", "GET /?green HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Query=green", "GET /?greenish=1 HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Query=red, gree.", "GET /?red=greet HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Query=red, gree.", "GET /?a=1&red=green HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Query=red, gree.", "GET /?red=gree HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Query=red, a b", "GET /?red=a+b HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Query=red, a b", "GET /?red=a%20b HTTP/1.1\r\nHost: h", 0, 0, true },
    { "Query=red", "GET / HTTP/1.1\r\nHost: h", 0, 0, false },
    /* Cookie */
    { "Cookie=chocolate, ch.p", "GET / HTTP/1.1\r\nHost: h\r\nCookie: chocolate=chip", 0, 0, true },
    { "Cookie=chocolate, ch.p", "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=b; chocolate=chap; c=d", 0, 0, true },
    { "Cookie=chocolate, ch.p", "GET / HTTP/1.1\r\nHost: h\r\nCookie: chocolate=choc", 0, 0, false },
    { "Cookie=chocolate, ch.p", "GET / HTTP/1.1\r\nHost: h\r\nCookie: xchocolate=chip", 0, 0, false },
    /* After / Before / Between */
    { "After=2017-01-20T17:42:47.789-07:00[America/Denver]", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 + 1, true },
    { "After=2017-01-20T17:42:47.789-07:00[America/Denver]", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 - 1, false },
    { "After=2017-01-20T17:42:47.789-07:00[America/Denver]", "GET / HTTP/1.1\r\nHost: h", 0, 0, true }, /* real clock */
    { "Before=2017-01-20T17:42:47.789-07:00[America/Denver]", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 - 1, true },
    { "Before=2017-01-20T17:42:47.789-07:00[America/Denver]", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 + 1, false },
    { "Between=2017-01-20T17:42:47.789-07:00[America/Denver], 2017-01-21T17:42:47.789-07:00[America/Denver]",
      "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 + 3600000, true },
    { "Between=2017-01-20T17:42:47.789-07:00[America/Denver], 2017-01-21T17:42:47.789-07:00[America/Denver]",
      "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 + 2 * 86400000LL, false },
    { "After=2017-01-21T00:42:47.789Z", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20 + 1, true },
    { "After=1484959367789", "GET / HTTP/1.1\r\nHost: h", 0, T_2017_01_20, false },
    /* RemoteAddr */
    { "RemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h", "192.168.1.10", 0, true },
    { "RemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h", "192.168.2.10", 0, false },
    { "RemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h", "::ffff:192.168.1.77", 0, true },
    { "RemoteAddr=10.0.0.0/8, 2001:db8::/32", "GET / HTTP/1.1\r\nHost: h", "2001:db8::1", 0, true },
    { "RemoteAddr=10.0.0.5", "GET / HTTP/1.1\r\nHost: h", "10.0.0.6", 0, false },
    /* XForwardedRemoteAddr: the last X-Forwarded-For value, else the peer */
    { "XForwardedRemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1, 192.168.1.10",
      "10.9.9.9", 0, true },
    { "XForwardedRemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 192.168.1.10, 10.0.0.1",
      "192.168.1.3", 0, false },
    { "XForwardedRemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 192.168.1.9",
      0, 0, true },
    { "XForwardedRemoteAddr=192.168.1.1/24", "GET / HTTP/1.1\r\nHost: h", "192.168.1.3", 0, true },
    /* several predicates: all must hold */
    { "Path=/a|Method=POST", "GET /a HTTP/1.1\r\nHost: h", 0, 0, false },
    { "Path=/a|Method=GET|Header=X-A", "GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1", 0, 0, true },
};

static void test_cases(void **state)
{
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char y[2048];
        gw_t g;
        route_yaml(y, sizeof y, cases[i].preds);
        if (gw_load(&g, y) != 0) {
            print_error("case %zu (%s): load: %s\n", i, cases[i].preds, g.err);
            failures++;
            gw_free(&g);
            continue;
        }
        const char *id = gw_request(&g, cases[i].request, cases[i].peer, cases[i].now, NULL);
        char vars[256] = "";
        size_t o = 0;
        for (size_t k = 0; id && k < g.req.vars.n; k++)
            o += (size_t)snprintf(vars + o, sizeof vars - o, "%s%.*s=%.*s", k ? "," : "", (int)g.req.vars.name[k].n,
                                  g.req.vars.name[k].p, (int)g.req.vars.value[k].n, g.req.vars.value[k].p);
        if ((id != NULL) != cases[i].match || (id && cases[i].vars && strcmp(vars, cases[i].vars) != 0)) {
            print_error("case %zu (%s) %s: matched %d vars '%s'\n", i, cases[i].preds, cases[i].request, id != NULL, vars);
            failures++;
        }
        gw_free(&g);
    }
    assert_int_equal(failures, 0);
}

static void test_datetime(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(mg_parse_zoned_datetime("2017-01-20T17:42:47.789-07:00[America/Denver]", &ms), 0);
    assert_true(ms == T_2017_01_20);
    assert_int_equal(mg_parse_zoned_datetime("1970-01-01T00:00Z", &ms), 0);
    assert_true(ms == 0);
    assert_int_equal(mg_parse_zoned_datetime("2000-02-29T12:00:00+01:00", &ms), 0);
    assert_true(ms == 951822000000LL);
    assert_int_equal(mg_parse_zoned_datetime("2017-01-20T17:42:47", &ms), -1); /* no offset */
    assert_int_equal(mg_parse_zoned_datetime("2017-13-20T17:42:47Z", &ms), -1);
    assert_int_equal(mg_parse_zoned_datetime("yesterday", &ms), -1);
}

/* Weight: Spring's example (8/2); one draw per request per group, so
 * exactly one route of the group matches each request. */
static void test_weight(void **state)
{
    (void)state;
    gw_t g;
    const char *y = "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes:\n"
                    "  - {id: weight_high, uri: 'http://127.0.0.1:2', predicates: ['Weight=group1, 8']}\n"
                    "  - {id: weight_low, uri: 'http://127.0.0.1:3', predicates: ['Weight=group1, 2']}\n"
                    "  - {id: never, to: c, predicates: ['Path=/never']}\n"
                    "  - {id: other_a, to: c, predicates: [Path=/o, 'Weight=g2, 1']}\n"
                    "  - {id: other_b, to: c, predicates: [Path=/o, 'Weight=g2, 0']}\n";
    if (gw_load(&g, y) != 0) fail_msg("%s", g.err);
    uint64_t rng = 42;
    int high = 0, low = 0;
    for (int i = 0; i < 10000; i++) {
        const char *id = gw_request(&g, "GET /x HTTP/1.1\r\nHost: h", NULL, 0, &rng);
        assert_non_null(id);
        if (!strcmp(id, "weight_high")) high++;
        else if (!strcmp(id, "weight_low")) low++;
        else fail_msg("unexpected route %s", id);
    }
    assert_int_equal(high + low, 10000);
    assert_true(high > 7600 && high < 8400);
    /* weight 0 never wins; the other group member always does */
    for (int i = 0; i < 100; i++) {
        const char *id = gw_request(&g, "GET /o HTTP/1.1\r\nHost: h", NULL, 0, &rng);
        assert_true(id && (!strcmp(id, "other_a") || !strcmp(id, "weight_high") || !strcmp(id, "weight_low")));
    }
    gw_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_datetime),
        cmocka_unit_test(test_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
