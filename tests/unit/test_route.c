/* test_route: route table built from a config; first match wins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "config/config.h"
#include "core/err.h"
#include "http/http1.h"
#include "route/route.h"

static const char routes_yaml[] =
    "clusters:\n"
    "  users: {endpoints: [127.0.0.1:9001]}\n"
    "  orders: {endpoints: [127.0.0.1:9002]}\n"
    "  static: {endpoints: [127.0.0.1:9003]}\n"
    "  fallback: {endpoints: [127.0.0.1:9004]}\n"
    "routes:\n"
    "  - id: user-by-id\n"
    "    path: /api/users/{id:\\d+}\n"
    "    to: users\n"
    "  - id: users\n"
    "    path: /api/users/**\n"
    "    to: users\n"
    "  - id: order-items\n"
    "    path: /api/orders/{order}/items/{*rest}\n"
    "    to: orders\n"
    "  - id: health\n"
    "    path: /health\n"
    "    to: static\n"
    "  - id: images\n"
    "    path: /img/*.png\n"
    "    to: static\n"
    "  - id: everything-else\n"
    "    path: /**\n"
    "    to: fallback\n";

typedef struct {
    mg_config_t *cfg;
    mg_route_table_t *t;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    char err[256];
    mg_config_buffer_t b = { "routes.yaml", routes_yaml, sizeof routes_yaml - 1 };
    if (mg_config_load_buffers(&b, 1, &f->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (mg_route_table_build(f->cfg, &f->t, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    mg_route_table_free(f->t);
    mg_config_free(f->cfg);
    free(f);
    return 0;
}

static const struct {
    const char *path;
    const char *route; /* NULL: no match */
    const char *vars;
} cases[] = {
    { "/api/users/42", "user-by-id", "id=42" },
    { "/api/users/42/", "user-by-id", "id=42" },
    { "/api/users/me", "users", "" },
    { "/api/users", "users", "" },
    { "/api/users/42/orders", "users", "" },
    { "/api/orders/7/items", "order-items", "order=7;rest=" },
    { "/api/orders/7/items/3/x", "order-items", "order=7;rest=/3/x" },
    { "/api/orders/7", "everything-else", "" },
    { "/health", "health", "" },
    { "/health/", "health", "" },
    { "/healthz", "everything-else", "" },
    { "/img/a.png", "images", "" },
    { "/img/a.gif", "everything-else", "" },
    { "/", "everything-else", "" },
    { "*", NULL, NULL },            /* asterisk-form OPTIONS */
    { "example.com:443", NULL, NULL }, /* CONNECT authority */
};

static void test_match(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(mg_route_count(f->t), 6);
    assert_string_equal(mg_route_at(f->t, 1)->cfg->id, "users");
    assert_null(mg_route_at(f->t, 6));
    static mg_http_msg_t req;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&req, 0, sizeof req);
        req.path = mg_slice_cstr(cases[i].path);
        mg_path_vars_t v;
        const mg_route_t *r = mg_route_match(f->t, &(mg_match_ctx_t){ .req = &req }, &v);
        if (!cases[i].route) {
            if (r) fail_msg("%s: matched %s, want none", cases[i].path, r->cfg->id);
            assert_int_equal(v.n, 0);
            continue;
        }
        if (!r) fail_msg("%s: no match, want %s", cases[i].path, cases[i].route);
        if (strcmp(r->cfg->id, cases[i].route) != 0)
            fail_msg("%s: matched %s, want %s", cases[i].path, r->cfg->id, cases[i].route);
        char got[256] = "";
        size_t w = 0;
        for (size_t k = 0; k < v.n; k++)
            w += (size_t)snprintf(got + w, sizeof got - w, "%s%.*s=%.*s", k ? ";" : "", (int)v.name[k].n,
                                  v.name[k].p, (int)v.value[k].n, v.value[k].p);
        if (strcmp(got, cases[i].vars) != 0) fail_msg("%s: vars '%s', want '%s'", cases[i].path, got, cases[i].vars);
        assert_ptr_equal(mg_route_match(f->t, &(mg_match_ctx_t){ .req = &req }, NULL), r);
        assert_ptr_equal(&f->cfg->clusters[r->cfg->cluster_index], &f->cfg->clusters[r->cfg->cluster_index]);
        assert_string_equal(f->cfg->clusters[r->cfg->cluster_index].name, r->cfg->cluster);
    }
}

static void test_first_match_wins(void **state)
{
    (void)state;
    const char *y = "clusters: {a: {endpoints: [1.1.1.1:80]}, b: {endpoints: [1.1.1.1:81]}}\n"
                    "routes:\n"
                    "  - {id: broad, path: /**, to: a}\n"
                    "  - {id: narrow, path: /x, to: b}\n";
    mg_config_buffer_t b = { "f.yaml", y, strlen(y) };
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[256];
    assert_int_equal(mg_config_load_buffers(&b, 1, &cfg, err, sizeof err), 0);
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    static mg_http_msg_t req;
    req.path = mg_slice_cstr("/x");
    const mg_route_t *r = mg_route_match(t, &(mg_match_ctx_t){ .req = &req }, NULL);
    assert_non_null(r);
    assert_string_equal(r->cfg->id, "broad");
    assert_int_equal(r->cfg->cluster_index, 0);
    mg_route_table_free(t);
    mg_config_free(cfg);
}

static void test_empty_table(void **state)
{
    (void)state;
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[64];
    mg_config_buffer_t b = { "e.yaml", "", 0 };
    assert_int_equal(mg_config_load_buffers(&b, 1, &cfg, err, sizeof err), 0);
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    static mg_http_msg_t req;
    req.path = mg_slice_cstr("/");
    assert_null(mg_route_match(t, &(mg_match_ctx_t){ .req = &req }, NULL));
    assert_int_equal(mg_route_count(t), 0);
    mg_route_table_free(t);
    mg_config_free(cfg);
}

/* A config built by hand (not through the loader) with a bad pattern. */
static void test_bad_pattern_position(void **state)
{
    (void)state;
    char file[] = "hand.yaml";
    mg_cluster_cfg_t c = { .name = "a" };
    mg_route_cfg_t routes[2] = {
        { .id = "ok", .path = "/ok", .cluster = "a", .pos = { file, 3, 5 }, .path_pos = { file, 4, 11 } },
        { .id = "bad", .path = "/a/**/b", .cluster = "a", .pos = { file, 6, 5 }, .path_pos = { file, 7, 11 } },
    };
    mg_config_t cfg = { .routes = routes, .nroutes = 2, .clusters = &c, .nclusters = 1 };
    mg_route_table_t *t = (mg_route_table_t *)1;
    char err[256];
    assert_int_equal(mg_route_table_build(&cfg, &t, err, sizeof err), MG_ECONFIG);
    assert_null(t);
    assert_string_equal(err, "hand.yaml:7:11: bad path pattern '/a/**/b': '**' is only allowed as the last segment");
    routes[1].path_pos = (mg_src_pos_t){ 0 }; /* falls back to the route's position */
    assert_int_equal(mg_route_table_build(&cfg, &t, err, sizeof err), MG_ECONFIG);
    assert_string_equal(err, "hand.yaml:6:5: bad path pattern '/a/**/b': '**' is only allowed as the last segment");
}


/* (order, declaration) decides, whatever the trie node a route sits in */
static void test_order(void **state)
{
    (void)state;
    static const char y[] =
        "clusters: {c: {endpoints: ['127.0.0.1:1']}}\n"
        "routes:\n"
        "  - {id: catch-all, to: c, order: 10, predicates: ['Path=/**']}\n"
        "  - {id: x-late, to: c, order: 5, predicates: ['Path=/x/**']}\n"
        "  - {id: x-exact, to: c, order: 5, predicates: ['Path=/x/y']}\n"
        "  - {id: no-path, to: c, order: 7, predicates: ['Header=X-Any']}\n"
        "  - {id: first, to: c, order: -1, predicates: ['Path=/x/y/z', 'Method=POST']}\n";
    mg_config_buffer_t b = { "o.yaml", y, sizeof y - 1 };
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[256];
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    static const struct {
        const char *raw, *want;
    } c[] = {
        { "GET /x/y HTTP/1.1\r\nHost: h\r\n\r\n", "x-late" },
        { "GET /x HTTP/1.1\r\nHost: h\r\n\r\n", "x-late" },
        { "GET /a HTTP/1.1\r\nHost: h\r\n\r\n", "catch-all" },
        { "GET /a HTTP/1.1\r\nHost: h\r\nX-Any: 1\r\n\r\n", "no-path" },
        { "POST /x/y/z HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", "first" },
        { "GET /x/y/z HTTP/1.1\r\nHost: h\r\n\r\n", "x-late" },
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        static mg_http_msg_t m;
        memset(&m, 0, sizeof m);
        assert_true(mg_http_parse_request(c[i].raw, strlen(c[i].raw), &m, NULL) > 0);
        const mg_route_t *r = mg_route_match(t, &(mg_match_ctx_t){ .req = &m }, NULL);
        assert_non_null(r);
        if (strcmp(r->cfg->id, c[i].want)) fail_msg("%s: got %s want %s", c[i].raw, r->cfg->id, c[i].want);
    }
    mg_route_table_free(t);
    mg_config_free(cfg);
}

/* The trie must give exactly what a sorted linear scan gives. */
static void test_trie_vs_scan(void **state)
{
    (void)state;
    static const char *const segs[] = { "a", "b", "c", "api", "", "*", "{v}", "**", "a*", "{*rest}", "x?" };
    enum { NR = 300, NP = 3000 };
    char *y = malloc(1 << 20);
    size_t o = (size_t)sprintf(y, "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes:\n");
    uint64_t seed = 12345;
#define RND() (seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17, seed)
    char pats[NR][64];
    int orders[NR];
    for (int i = 0; i < NR; i++) {
        char *p = pats[i];
        size_t pl = 0;
        int depth = 1 + (int)(RND() % 4);
        for (int d = 0; d < depth; d++) {
            const char *s = segs[RND() % (sizeof segs / sizeof segs[0])];
            if ((!strcmp(s, "**") || !strcmp(s, "{*rest}")) && d != depth - 1) s = "b";
            pl += (size_t)sprintf(p + pl, "/%s", s);
        }
        orders[i] = (int)(RND() % 5) - 2;
        mg_path_pattern_t *pp;
        char e[128];
        if (mg_path_compile(p, &pp, e, sizeof e) != 0) {
            strcpy(p, "/never/x");
        } else {
            mg_path_free(pp);
        }
        o += (size_t)sprintf(y + o, "  - {id: r%d, to: c, order: %d, path: '%s'}\n", i, orders[i], p);
    }
    mg_config_buffer_t b = { "r.yaml", y, o };
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[256];
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    mg_path_pattern_t *cp[NR];
    for (int i = 0; i < NR; i++) assert_int_equal(mg_path_compile(cfg->routes[i].path, &cp[i], err, sizeof err), 0);
    static const char *const psegs[] = { "a", "b", "c", "api", "", "x1", "ab", "xy" };
    for (int k = 0; k < NP; k++) {
        char path[128];
        size_t pl = 0;
        int depth = (int)(RND() % 5);
        for (int d = 0; d < depth; d++) pl += (size_t)sprintf(path + pl, "/%s", psegs[RND() % 8]);
        if (depth == 0 || RND() % 4 == 0) pl += (size_t)sprintf(path + pl, "/");
        static mg_http_msg_t m;
        m.path = mg_slice(path, pl);
        const mg_route_t *r = mg_route_match(t, &(mg_match_ctx_t){ .req = &m }, NULL);
        int best = -1;
        for (int i = 0; i < NR; i++)
            if (mg_path_match(cp[i], path, pl, NULL) && (best < 0 || orders[i] < orders[best])) best = i;
        const char *want = best < 0 ? NULL : cfg->routes[best].id;
        if ((r == NULL) != (want == NULL) || (r && strcmp(r->cfg->id, want)))
            fail_msg("%s: trie %s, scan %s", path, r ? r->cfg->id : "-", want ? want : "-");
    }
    for (int i = 0; i < NR; i++) mg_path_free(cp[i]);
    mg_route_table_free(t);
    mg_config_free(cfg);
    free(y);
}

/* Matching cost must not grow with the number of routes. */
static double time_match(size_t nroutes, bool spread)
{
    char *y = malloc(nroutes * 96 + 256);
    size_t o = (size_t)sprintf(y, "clusters: {c: {endpoints: ['127.0.0.1:1']}}\nroutes:\n");
    for (size_t i = 0; i < nroutes; i++)
        o += (size_t)sprintf(y + o, "  - {id: r%zu, to: c, path: '/svc%zu/api/**', filters: ['StripPrefix=1']}\n", i, i);
    mg_config_buffer_t b = { "s.yaml", y, o };
    mg_config_t *cfg;
    mg_route_table_t *t;
    char err[256];
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0) fail_msg("%s", err);
    assert_int_equal(mg_route_table_build(cfg, &t, err, sizeof err), 0);
    static mg_http_msg_t m;
    char path[64];
    struct timespec a, z;
    const int N = 200000;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int k = 0; k < N; k++) {
        int n = snprintf(path, sizeof path, "/svc%zu/api/users/42", spread ? (size_t)(k * 7919) % nroutes : nroutes / 2);
        m.path = mg_slice(path, (size_t)n);
        if (!mg_route_match(t, &(mg_match_ctx_t){ .req = &m }, NULL)) fail_msg("no match %s", path);
    }
    clock_gettime(CLOCK_MONOTONIC, &z);
    mg_route_table_free(t);
    mg_config_free(cfg);
    free(y);
    return ((double)(z.tv_sec - a.tv_sec) * 1e9 + (double)(z.tv_nsec - a.tv_nsec)) / N;
}

static void test_scale(void **state)
{
    (void)state;
    /* one hot path (what a benchmark client sends), then paths spread over
     * all routes (cold caches: the table no longer fits in L1/L2) */
    double t10 = time_match(10, false), t10k = time_match(10000, false);
    double s10 = time_match(10, true), s10k = time_match(10000, true);
    print_message("match, hot path: 10 routes %.0f ns, 10000 routes %.0f ns (ratio %.2f)\n", t10, t10k, t10 / t10k);
    print_message("match, spread:   10 routes %.0f ns, 10000 routes %.0f ns (ratio %.2f)\n", s10, s10k, s10 / s10k);
    assert_true(t10k < t10 * 4 + 500); /* loose bounds (tests may run in parallel): linear would be 1000x */
    assert_true(s10k < s10 * 20 + 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_match, setup, teardown),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_bad_pattern_position),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_trie_vs_scan),
        cmocka_unit_test(test_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
