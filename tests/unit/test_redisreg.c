/* test_redisreg: the TTL check state kept in Redis by the shared registry
 * backend (src/discovery/redisreg.c): encode/decode round trip, the output
 * bound, and what the decoder refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/err.h"
#include "discovery/redisreg.h"

static void test_round_trip(void **st)
{
    (void)st;
    mg_buf_t b;
    mg_buf_init(&b);
    mg_redisreg_state_encode(&b, "orders-1 \"x\"", MG_CHECK_WARNING, "slow\nline \xc3\xa9 \\ end", 1764000000123LL);
    assert_false(b.oom);
    mg_redisreg_state_t s;
    assert_int_equal(mg_redisreg_state_decode(b.p, b.len, &s), 0);
    assert_string_equal(s.instance_id, "orders-1 \"x\"");
    assert_int_equal(s.status, MG_CHECK_WARNING);
    assert_string_equal(s.output, "slow\nline \xc3\xa9 \\ end");
    assert_int_equal(s.deadline_ms, 1764000000123LL);
    mg_redisreg_state_free(&s);
    mg_buf_free(&b);

    mg_buf_init(&b);
    mg_redisreg_state_encode(&b, "a", MG_CHECK_CRITICAL, NULL, -5);
    assert_int_equal(mg_redisreg_state_decode(b.p, b.len, &s), 0);
    assert_int_equal(s.status, MG_CHECK_CRITICAL);
    assert_string_equal(s.output, "");
    assert_int_equal(s.deadline_ms, -5);
    mg_redisreg_state_free(&s);
    mg_buf_free(&b);
}

static void test_output_bound(void **st)
{
    (void)st;
    /* 4095 ASCII bytes then a 2-byte character: cut before it, at 4095 */
    char *out = malloc(5000);
    memset(out, 'a', 4095);
    out[4095] = (char)0xc3;
    out[4096] = (char)0xa9;
    memset(out + 4097, 'b', 100);
    out[4197] = 0;
    mg_buf_t b;
    mg_buf_init(&b);
    mg_redisreg_state_encode(&b, "a", MG_CHECK_PASSING, out, 1);
    mg_redisreg_state_t s;
    assert_int_equal(mg_redisreg_state_decode(b.p, b.len, &s), 0);
    assert_int_equal(strlen(s.output), 4095);
    mg_redisreg_state_free(&s);
    mg_buf_free(&b);
    free(out);
}

static void test_refused(void **st)
{
    (void)st;
    static const char *bad[] = {
        "",
        "null",
        "[]",
        "{\"Instance\":\"a\",\"Status\":\"passing\",\"Output\":\"\"}",                    /* no deadline */
        "{\"Instance\":\"\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":1}",     /* empty instance */
        "{\"Instance\":\"a\",\"Status\":\"ok\",\"Output\":\"\",\"DeadlineMs\":1}",         /* bad status */
        "{\"Instance\":\"a\",\"Status\":\"passing\",\"Output\":3,\"DeadlineMs\":1}",       /* output type */
        "{\"Instance\":\"a\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":1.5}",  /* not an integer */
        "{\"Instance\":\"a\\u0000b\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":1}", /* NUL inside */
        "{\"Instance\":\"a\",\"Instance\":\"b\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":1}",
        "{\"Instance\":\"a\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":1",     /* truncated */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mg_redisreg_state_t s;
        if (mg_redisreg_state_decode(bad[i], strlen(bad[i]), &s) != MG_EPARSE)
            fail_msg("accepted: %s", bad[i]);
        assert_null(s.instance_id);
        assert_null(s.output);
    }
    /* too large */
    size_t n = 70 * 1024;
    char *big = malloc(n);
    memset(big, ' ', n);
    mg_redisreg_state_t s;
    assert_int_equal(mg_redisreg_state_decode(big, n, &s), MG_EPARSE);
    free(big);
    /* unknown keys are ignored (a newer writer may add some) */
    const char *ok = "{\"Instance\":\"a\",\"Status\":\"passing\",\"Output\":\"\",\"DeadlineMs\":7,\"Since\":1}";
    assert_int_equal(mg_redisreg_state_decode(ok, strlen(ok), &s), 0);
    assert_int_equal(s.deadline_ms, 7);
    mg_redisreg_state_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_output_bound),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
