/* test_path: Spring PathPattern semantics, mostly the examples from
 * Spring's PathPattern javadoc and PathPatternTests, as tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/err.h"
#include "route/path.h"

typedef struct {
    const char *pattern;
    const char *path;
    bool match;
    const char *vars; /* "name=value;name=value" expected on match, NULL = don't check */
} match_case_t;

static const match_case_t match_cases[] = {
    /* javadoc examples */
    { "/pages/t?st.html", "/pages/test.html", true, "" },
    { "/pages/t?st.html", "/pages/tXst.html", true, "" },
    { "/pages/t?st.html", "/pages/toast.html", false, NULL },
    { "/pages/t?st.html", "/pages/tst.html", false, NULL },
    { "/resources/*.png", "/resources/image.png", true, "" },
    { "/resources/*.png", "/resources/.png", true, "" },
    { "/resources/*.png", "/resources/image.jpg", false, NULL },
    { "/resources/*.png", "/resources/css/image.png", false, NULL },
    { "/resources/**", "/resources/image.png", true, "" },
    { "/resources/**", "/resources/css/spring.css", true, "" },
    { "/resources/**", "/resources", true, "" },
    { "/resources/**", "/resources/", true, "" },
    { "/resources/**", "/resourcesX", false, NULL },
    { "/resources/**", "/resource", false, NULL },
    { "/resources/{*path}", "/resources/image.png", true, "path=/image.png" },
    { "/resources/{*path}", "/resources/css/spring.css", true, "path=/css/spring.css" },
    { "/resources/{*path}", "/resources", true, "path=" },
    { "/resources/{*path}", "/resources/", true, "path=/" },
    { "/resources/{*path}", "/resourcesX/a", false, NULL },
    { "/resources/{filename:\\w+}.dat", "/resources/spring.dat", true, "filename=spring" },
    { "/resources/{filename:\\w+}.dat", "/resources/spring-x.dat", false, NULL },
    { "/resources/{filename:\\w+}.dat", "/resources/spring.datx", false, NULL },
    /* the example */
    { "/api/users/**", "/api/users", true, "" },
    { "/api/users/**", "/api/users/", true, "" },
    { "/api/users/**", "/api/users/42/x", true, "" },
    { "/api/users/**", "/api/usersx", false, NULL },
    { "/api/users/**", "/api/user", false, NULL },
    { "/api/users/**", "/API/users", false, NULL },
    { "/**", "/", true, "" },
    { "/**", "/a/b/c", true, "" },
    { "/**", "", true, "" },
    /* literals and the optional trailing slash */
    { "/", "/", true, "" },
    { "/", "", false, NULL },
    { "/", "/a", false, NULL },
    { "/a", "/a", true, "" },
    { "/a", "/a/", true, "" },
    { "/a", "/a//", false, NULL },
    { "/a", "/ab", false, NULL },
    { "/a", "/A", false, NULL },
    { "/a/", "/a/", true, "" },
    { "/a/", "/a", false, NULL },
    { "/a/b", "/a/b", true, "" },
    { "/a/b", "/a/b/", true, "" },
    { "/a/b", "/a/bc", false, NULL },
    { "/a/b", "/a", false, NULL },
    { "/a//b", "/a//b", true, "" },
    /* '*' as a whole segment */
    { "/a/*", "/a/b", true, "" },
    { "/a/*", "/a/b/", true, "" },
    { "/a/*", "/a/", true, "" },
    { "/a/*", "/a", false, NULL },
    { "/a/*", "/a/b/c", false, NULL },
    { "/a/*/c", "/a/b/c", true, "" },
    { "/a/*/c", "/a//c", false, NULL },
    { "/*/*", "/x/y", true, "" },
    { "/a*", "/a", true, "" },
    { "/a*", "/abc", true, "" },
    { "/a*", "/ba", false, NULL },
    { "/*a*b", "/xaxxb", true, "" },
    { "/*a*b", "/xaxxbc", false, NULL },
    { "/a?c*", "/abcdef", true, "" },
    /* captures */
    { "/{id}", "/42", true, "id=42" },
    { "/{id}", "/42/", true, "id=42" },
    { "/{id}", "/", false, NULL },
    { "/{id}", "/a/b", false, NULL },
    { "/hotels/{hotel}/bookings/{booking}", "/hotels/1/bookings/2", true, "hotel=1;booking=2" },
    { "/hotels/{hotel}/bookings/{booking}", "/hotels//bookings/2", false, NULL },
    { "/{a}/{b}/{c}", "/x/y/z", true, "a=x;b=y;c=z" },
    { "/{id:\\d+}", "/123", true, "id=123" },
    { "/{id:\\d+}", "/12a", false, NULL },
    { "/{id:[0-9]{3}}", "/123", true, "id=123" },
    { "/{id:[0-9]{3}}", "/1234", false, NULL },
    { "/{v:(?:a|b)c}", "/bc", true, "v=bc" },
    { "/{name}.{ext}", "/a.b.c", true, "name=a.b;ext=c" },
    { "/{name}-{ver:\\d+}.jar", "/spring-web-5.jar", true, "name=spring-web;ver=5" },
    { "/x{a}y", "/xy", true, "a=" },
    { "/files/{name}/**", "/files/f1/x/y", true, "name=f1" },
    { "/files/{name}/**", "/files/f1", true, "name=f1" },
    { "/files/{name}/{*rest}", "/files/f1/x/y", true, "name=f1;rest=/x/y" },
    /* raw path: no decoding, '%2F' stays inside the segment */
    { "/{x}", "/a%2Fb", true, "x=a%2Fb" },
};

static const struct {
    const char *pattern, *error;
} bad_patterns[] = {
    { "", "pattern must start with '/'" },
    { "a/b", "pattern must start with '/'" },
    { "/a b", "pattern contains a space or control character" },
    { "/a/**/b", "'**' is only allowed as the last segment" },
    { "/**/b", "'**' is only allowed as the last segment" },
    { "/{*p}/x", "'{*...}' must be a whole segment at the end of the pattern" },
    { "/a{*p}", "'{*...}' must be a whole segment at the end of the pattern" },
    { "/{id", "unclosed '{'" },
    { "/a}", "unexpected '}'" },
    { "/{}", "empty variable name" },
    { "/{*}", "empty variable name" },
    { "/{a}/{a}", "duplicate variable 'a'" },
    { "/{x:(}", "bad regex: " },
    { "/{x:\\q}", "unsupported regex escape '\\q'" },
    { "/{x:a++}", "stacked regex quantifiers (lazy, possessive) are not supported" },
    { "/{x:a*?}", "stacked regex quantifiers (lazy, possessive) are not supported" },
    { "/{x:((((((((((((((((a+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+}", "regex too complex (nested repetition)" },
    { "/{x:(a{300}){300}}", "regex too complex (nested repetition)" },
    { "/{x:a{,}}", "bad regex interval" },
    { "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}", "too many variables (at most 16)" },
};

static void check_vars(const char *pattern, const char *path, const mg_path_vars_t *v, const char *want)
{
    char got[512] = "";
    size_t w = 0;
    for (size_t i = 0; i < v->n; i++)
        w += (size_t)snprintf(got + w, sizeof got - w, "%s%.*s=%.*s", i ? ";" : "", (int)v->name[i].n,
                              v->name[i].p, (int)v->value[i].n, v->value[i].p);
    if (strcmp(got, want) != 0) fail_msg("%s vs %s: vars '%s', want '%s'", pattern, path, got, want);
}

static void test_match_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof match_cases / sizeof match_cases[0]; i++) {
        const match_case_t *c = &match_cases[i];
        mg_path_pattern_t *p;
        char err[256];
        if (mg_path_compile(c->pattern, &p, err, sizeof err) != 0) {
            if (!c->match) continue; /* a pattern that must not compile matches nothing */
            fail_msg("compile %s: %s", c->pattern, err);
        }
        /* the path in its own exact-size heap buffer so ASan sees overreads */
        size_t n = strlen(c->path);
        char *buf = malloc(n ? n : 1);
        memcpy(buf, c->path, n);
        mg_path_vars_t v;
        bool m = mg_path_match(p, buf, n, &v);
        if (m != c->match) fail_msg("%s vs %s: got %d, want %d", c->pattern, c->path, m, c->match);
        if (m && c->vars) check_vars(c->pattern, c->path, &v, c->vars);
        assert_int_equal(m, mg_path_match(p, buf, n, NULL));
        assert_string_equal(mg_path_pattern_text(p), c->pattern);
        free(buf);
        mg_path_free(p);
    }
}

static void test_bad_patterns(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_patterns / sizeof bad_patterns[0]; i++) {
        mg_path_pattern_t *p = (mg_path_pattern_t *)1;
        char err[256] = "";
        int rc = mg_path_compile(bad_patterns[i].pattern, &p, err, sizeof err);
        if (rc != MG_ECONFIG) fail_msg("'%s' compiled", bad_patterns[i].pattern);
        assert_null(p);
        if (strncmp(err, bad_patterns[i].error, strlen(bad_patterns[i].error)) != 0)
            fail_msg("'%s': error '%s', want '%s'", bad_patterns[i].pattern, err, bad_patterns[i].error);
    }
}

static void test_sixteen_vars_ok(void **state)
{
    (void)state;
    mg_path_pattern_t *p;
    char err[128];
    assert_int_equal(mg_path_compile("/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{*p}", &p, err,
                                     sizeof err), 0);
    mg_path_vars_t v;
    const char *path = "/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17";
    assert_true(mg_path_match(p, path, strlen(path), &v));
    assert_int_equal(v.n, 16);
    assert_true(v.value[15].n == 6 && memcmp(v.value[15].p, "/16/17", 6) == 0);
    mg_path_free(p);
}

static void test_no_vars_left_on_mismatch(void **state)
{
    (void)state;
    mg_path_pattern_t *p;
    char err[128];
    assert_int_equal(mg_path_compile("/u/{id}/x", &p, err, sizeof err), 0);
    mg_path_vars_t v = { .n = 7 };
    assert_false(mg_path_match(p, "/u/1/y", 6, &v));
    assert_int_equal(v.n, 0);
    mg_path_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_table),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_sixteen_vars_ok),
        cmocka_unit_test(test_no_vars_left_on_mismatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
