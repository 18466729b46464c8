/* test_dns: the DNS codec on hand-built packets -- queries, answers with
 * compression, CNAME chains, negative answers, truncation, SRV glue, the
 * record bound, and malicious messages (pointer loops, forward pointers,
 * overlong names, lying lengths, wrong ID/question). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/err.h"
#include "discovery/dns.h"

typedef struct {
    uint8_t b[16384];
    size_t n;
} pkt_t;

static void p8(pkt_t *p, unsigned v) { p->b[p->n++] = (uint8_t)v; }
static void p16(pkt_t *p, unsigned v) { p8(p, v >> 8); p8(p, v); }
static void p32(pkt_t *p, uint32_t v) { p16(p, v >> 16); p16(p, v & 0xffff); }

static void pname(pkt_t *p, const char *name)
{
    while (*name) {
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        p8(p, (unsigned)n);
        memcpy(p->b + p->n, name, n);
        p->n += n;
        name += n + (dot ? 1 : 0);
    }
    p8(p, 0);
}

static void pptr(pkt_t *p, unsigned off) { p16(p, 0xC000 | off); }

static void header(pkt_t *p, uint16_t id, uint16_t flags, unsigned qd, unsigned an, unsigned ns, unsigned ar)
{
    p->n = 0;
    p16(p, id);
    p16(p, flags);
    p16(p, qd);
    p16(p, an);
    p16(p, ns);
    p16(p, ar);
}

static void question(pkt_t *p, const char *name, unsigned type)
{
    pname(p, name);
    p16(p, type);
    p16(p, 1);
}

/* an RR whose owner is a pointer to off (12 = the question name) */
static void rr_hdr_ptr(pkt_t *p, unsigned off, unsigned type, uint32_t ttl, unsigned rdlen)
{
    pptr(p, off);
    p16(p, type);
    p16(p, 1);
    p32(p, ttl);
    p16(p, rdlen);
}

static void rr_hdr_name(pkt_t *p, const char *owner, unsigned type, uint32_t ttl, unsigned rdlen)
{
    pname(p, owner);
    p16(p, type);
    p16(p, 1);
    p32(p, ttl);
    p16(p, rdlen);
}

static void a_rec(pkt_t *p, unsigned owner_off, uint32_t ttl, uint8_t a, uint8_t b, uint8_t c, uint8_t d)
{
    rr_hdr_ptr(p, owner_off, MG_DNS_T_A, ttl, 4);
    p8(p, a);
    p8(p, b);
    p8(p, c);
    p8(p, d);
}

#define RESP 0x8180 /* QR RD RA, NOERROR */

static mg_dns_answer_t ans;

static int parse(const pkt_t *p, uint16_t id, const char *name, uint16_t type, bool *mm)
{
    return mg_dns_parse(p->b, p->n, id, name, type, &ans, mm);
}

static void test_query(void **st)
{
    (void)st;
    uint8_t b[512];
    int n = mg_dns_query(b, sizeof b, 0xBEEF, "api.test", MG_DNS_T_A);
    static const uint8_t want[] = { 0xBE, 0xEF, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'a', 'p', 'i',
                                    4, 't', 'e', 's', 't', 0, 0, 1, 0, 1 };
    assert_int_equal(n, sizeof want);
    assert_memory_equal(b, want, sizeof want);
    assert_int_equal(mg_dns_query(b, sizeof b, 1, "api.test.", MG_DNS_T_A), sizeof want); /* trailing dot */
    assert_int_equal(mg_dns_query(b, sizeof b, 1, "", MG_DNS_T_A), MG_EPARSE);
    assert_int_equal(mg_dns_query(b, sizeof b, 1, "a..b", MG_DNS_T_A), MG_EPARSE);
    assert_int_equal(mg_dns_query(b, sizeof b, 1, ".a", MG_DNS_T_A), MG_EPARSE);
    assert_int_equal(mg_dns_query(b, sizeof b, 1, "a..", MG_DNS_T_A), MG_EPARSE);
    char lab[70];
    memset(lab, 'x', 64);
    lab[64] = '\0';
    assert_int_equal(mg_dns_query(b, sizeof b, 1, lab, MG_DNS_T_A), MG_EPARSE); /* label > 63 */
    char longname[300];
    for (int i = 0; i < 127; i++)
        memcpy(longname + 2 * i, "a.", 2);
    strcpy(longname + 254, "a");
    assert_int_equal(mg_dns_query(b, sizeof b, 1, longname, MG_DNS_T_A), MG_EPARSE); /* > 253 */
    assert_int_equal(mg_dns_query(b, 10, 1, "api.test", MG_DNS_T_A), MG_ELIMIT);
}

static void test_a_answer(void **st)
{
    (void)st;
    pkt_t p;
    header(&p, 7, RESP, 1, 3, 0, 0);
    question(&p, "api.test", MG_DNS_T_A);
    a_rec(&p, 12, 30, 10, 0, 0, 1);
    a_rec(&p, 12, 20, 10, 0, 0, 2);
    rr_hdr_name(&p, "other.test", MG_DNS_T_A, 5, 4); /* another owner: not kept */
    p32(&p, 0x0a000003);
    bool mm = true;
    assert_int_equal(parse(&p, 7, "API.test.", MG_DNS_T_A, &mm), 0);
    assert_false(mm);
    assert_int_equal(ans.status, MG_DNS_OK);
    assert_int_equal(ans.nrrs, 2);
    assert_int_equal(ans.rrs[1].addr[3], 2);
    assert_int_equal(ans.ttl, 20);
    assert_string_equal(ans.canon, "api.test");
}

static void test_mismatch(void **st)
{
    (void)st;
    pkt_t p;
    header(&p, 7, RESP, 1, 1, 0, 0);
    question(&p, "api.test", MG_DNS_T_A);
    a_rec(&p, 12, 30, 10, 0, 0, 1);
    bool mm = false;
    assert_int_equal(parse(&p, 8, "api.test", MG_DNS_T_A, &mm), MG_EPARSE); /* ID */
    assert_true(mm);
    mm = false;
    assert_int_equal(parse(&p, 7, "apx.test", MG_DNS_T_A, &mm), MG_EPARSE); /* name */
    assert_true(mm);
    mm = false;
    assert_int_equal(parse(&p, 7, "api.test", MG_DNS_T_AAAA, &mm), MG_EPARSE); /* type */
    assert_true(mm);
    p.b[2] &= 0x7f; /* a query, not a response */
    mm = false;
    assert_int_equal(parse(&p, 7, "api.test", MG_DNS_T_A, &mm), MG_EPARSE);
    assert_true(mm);
}

static void test_negative(void **st)
{
    (void)st;
    pkt_t p;
    /* NXDOMAIN with an SOA: negative TTL = min(SOA TTL, MINIMUM) */
    header(&p, 1, RESP | 3, 1, 0, 1, 0);
    question(&p, "gone.test", MG_DNS_T_A);
    size_t at = p.n;
    rr_hdr_name(&p, "test", MG_DNS_T_SOA, 60, 0);
    size_t rd = p.n;
    pname(&p, "ns.test");
    pname(&p, "admin.test");
    p32(&p, 1);
    p32(&p, 2);
    p32(&p, 3);
    p32(&p, 4);
    p32(&p, 15);
    p.b[rd - 2] = 0;
    p.b[rd - 1] = (uint8_t)(p.n - rd);
    (void)at;
    assert_int_equal(parse(&p, 1, "gone.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_NXDOMAIN);
    assert_true(ans.has_ttl);
    assert_int_equal(ans.ttl, 15);

    /* NODATA: NOERROR, nothing of that type */
    header(&p, 2, RESP, 1, 0, 0, 0);
    question(&p, "api.test", MG_DNS_T_AAAA);
    assert_int_equal(parse(&p, 2, "api.test", MG_DNS_T_AAAA, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_NODATA);
    assert_false(ans.has_ttl);

    header(&p, 3, RESP | 2, 1, 0, 0, 0);
    question(&p, "api.test", MG_DNS_T_A);
    assert_int_equal(parse(&p, 3, "api.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_SERVFAIL);

    header(&p, 4, RESP | 5, 1, 0, 0, 0);
    question(&p, "api.test", MG_DNS_T_A);
    assert_int_equal(parse(&p, 4, "api.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_REFUSED);

    /* TC: nothing else is read (the records may be cut) */
    header(&p, 5, RESP | 0x0200, 1, 3, 0, 0);
    question(&p, "api.test", MG_DNS_T_A);
    assert_int_equal(parse(&p, 5, "api.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_TRUNCATED);
}

static void test_cname_chain(void **st)
{
    (void)st;
    pkt_t p;
    header(&p, 9, RESP, 1, 3, 0, 0);
    question(&p, "alias.test", MG_DNS_T_A);
    /* alias.test CNAME mid.test ; mid.test CNAME api.test ; api.test A */
    rr_hdr_ptr(&p, 12, MG_DNS_T_CNAME, 100, 10);
    size_t mid = p.n;
    pname(&p, "mid.test");
    rr_hdr_ptr(&p, (unsigned)mid, MG_DNS_T_CNAME, 7, 10);
    size_t api = p.n;
    pname(&p, "api.test");
    a_rec(&p, (unsigned)api, 50, 192, 0, 2, 1);
    assert_int_equal(parse(&p, 9, "alias.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_OK);
    assert_string_equal(ans.canon, "api.test");
    assert_int_equal(ans.nrrs, 1);
    assert_int_equal(ans.ttl, 7); /* the chain's smallest TTL */

    /* a CNAME loop is malformed, not an empty answer */
    header(&p, 9, RESP, 1, 2, 0, 0);
    question(&p, "a.test", MG_DNS_T_A);
    rr_hdr_ptr(&p, 12, MG_DNS_T_CNAME, 1, 8);
    size_t b = p.n;
    pname(&p, "b.test");
    rr_hdr_ptr(&p, (unsigned)b, MG_DNS_T_CNAME, 1, 2);
    pptr(&p, 12);
    assert_int_equal(parse(&p, 9, "a.test", MG_DNS_T_A, NULL), MG_EPARSE);
}

static void test_srv_glue(void **st)
{
    (void)st;
    pkt_t p;
    header(&p, 11, RESP, 1, 2, 0, 2);
    question(&p, "_http._tcp.api.test", MG_DNS_T_SRV);
    rr_hdr_ptr(&p, 12, MG_DNS_T_SRV, 30, 6 + 9);
    p16(&p, 10);
    p16(&p, 5);
    p16(&p, 8080);
    size_t h1 = p.n;
    pname(&p, "h1.test");
    rr_hdr_ptr(&p, 12, MG_DNS_T_SRV, 30, 6 + 9);
    p16(&p, 20);
    p16(&p, 5);
    p16(&p, 9090);
    pname(&p, "h2.test");
    a_rec(&p, (unsigned)h1, 10, 127, 0, 0, 2);
    rr_hdr_ptr(&p, (unsigned)h1, MG_DNS_T_AAAA, 10, 16);
    for (int i = 0; i < 15; i++)
        p8(&p, 0);
    p8(&p, 1);
    assert_int_equal(parse(&p, 11, "_http._tcp.api.test", MG_DNS_T_SRV, NULL), 0);
    assert_int_equal(ans.status, MG_DNS_OK);
    assert_int_equal(ans.nrrs, 2);
    assert_int_equal(ans.rrs[0].port, 8080);
    assert_int_equal(ans.rrs[0].prio, 10);
    assert_string_equal(ans.rrs[0].name, "h1.test");
    assert_string_equal(ans.rrs[1].name, "h2.test");
    assert_int_equal(ans.nextra, 2);
    assert_string_equal(ans.extra[0].name, "h1.test");
    assert_int_equal(ans.extra[1].type, MG_DNS_T_AAAA);
    assert_int_equal(ans.extra[1].addr[15], 1);
}

static void test_record_bound_and_ttl(void **st)
{
    (void)st;
    pkt_t p;
    header(&p, 12, RESP, 1, 300, 0, 0);
    question(&p, "many.test", MG_DNS_T_A);
    for (int i = 0; i < 300; i++)
        a_rec(&p, 12, i == 0 ? 0x80000005u : 60, 10, 0, (uint8_t)(i >> 8), (uint8_t)i);
    assert_int_equal(parse(&p, 12, "many.test", MG_DNS_T_A, NULL), 0);
    assert_int_equal(ans.nrrs, MG_DNS_MAX_RRS);
    assert_int_equal(ans.dropped, 300 - MG_DNS_MAX_RRS);
    assert_int_equal(ans.rrs[0].ttl, 0); /* top bit set reads as 0 */
    assert_int_equal(ans.ttl, 0);
}

/* Each of these must be refused, never read out of bounds. */
static void test_malicious(void **st)
{
    (void)st;
    pkt_t p;
    /* pointer to itself in an answer owner */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    size_t self = p.n;
    pptr(&p, (unsigned)self);
    p16(&p, 1), p16(&p, 1), p32(&p, 1), p16(&p, 4), p32(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* forward pointer */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    pptr(&p, (unsigned)p.n + 20);
    p16(&p, 1), p16(&p, 1), p32(&p, 1), p16(&p, 4), p32(&p, 0);
    for (int i = 0; i < 30; i++)
        p8(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* two pointers bouncing: 40 -> 35 -> (labels) -> pointer 35 again */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A); /* ends at 12 + 8 + 4 = 24 */
    size_t lab = p.n;            /* 24: label "ab" then a pointer back to 24 */
    p8(&p, 2), p8(&p, 'a'), p8(&p, 'b');
    pptr(&p, (unsigned)lab);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* name longer than 255 bytes through compression */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    size_t prev = 12;
    for (int i = 0; i < 6; i++) {
        size_t at = p.n;
        p8(&p, 63);
        for (int k = 0; k < 63; k++)
            p8(&p, 'z');
        pptr(&p, (unsigned)prev);
        prev = at;
    }
    pptr(&p, (unsigned)prev);
    p16(&p, 1), p16(&p, 1), p32(&p, 1), p16(&p, 4), p32(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* rdlength past the end */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    rr_hdr_ptr(&p, 12, MG_DNS_T_A, 1, 400);
    p32(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* A with 5 bytes */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    rr_hdr_ptr(&p, 12, MG_DNS_T_A, 1, 5);
    p32(&p, 0);
    p8(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* more records announced than present */
    header(&p, 1, RESP, 1, 2, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    a_rec(&p, 12, 1, 1, 2, 3, 4);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* trailing bytes */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    a_rec(&p, 12, 1, 1, 2, 3, 4);
    p8(&p, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* no question / two questions */
    header(&p, 1, RESP, 0, 0, 0, 0);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);
    header(&p, 1, RESP, 2, 0, 0, 0);
    question(&p, "x.test", MG_DNS_T_A);
    question(&p, "x.test", MG_DNS_T_A);
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* reserved label type 0x40 */
    header(&p, 1, RESP, 1, 0, 0, 0);
    p8(&p, 0x41);
    p8(&p, 'x');
    p8(&p, 0);
    p16(&p, 1), p16(&p, 1);
    assert_int_equal(parse(&p, 1, "x", MG_DNS_T_A, NULL), MG_EPARSE);

    /* SRV target running past its rdata */
    header(&p, 1, RESP, 1, 1, 0, 0);
    question(&p, "s.test", MG_DNS_T_SRV);
    rr_hdr_ptr(&p, 12, MG_DNS_T_SRV, 1, 8);
    p16(&p, 1), p16(&p, 1), p16(&p, 80);
    pname(&p, "h.test");
    assert_int_equal(parse(&p, 1, "s.test", MG_DNS_T_SRV, NULL), MG_EPARSE);

    /* short header */
    header(&p, 1, RESP, 1, 0, 0, 0);
    p.n = 11;
    assert_int_equal(parse(&p, 1, "x.test", MG_DNS_T_A, NULL), MG_EPARSE);

    /* a label byte that cannot be in a host name does not match */
    header(&p, 1, RESP, 1, 0, 0, 0);
    p8(&p, 3), p8(&p, 'a'), p8(&p, '.'), p8(&p, 'b'), p8(&p, 0);
    p16(&p, 1), p16(&p, 1);
    bool mm = false;
    assert_int_equal(parse(&p, 1, "a.b", MG_DNS_T_A, &mm), MG_EPARSE);
    assert_true(mm);
}

static void test_name_eq(void **st)
{
    (void)st;
    assert_true(mg_dns_name_eq("Api.Test.", "api.test"));
    assert_false(mg_dns_name_eq("api.test", "api.tes"));
    assert_true(mg_dns_name_eq("", "."));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),         cmocka_unit_test(test_a_answer),
        cmocka_unit_test(test_mismatch),      cmocka_unit_test(test_negative),
        cmocka_unit_test(test_cname_chain),   cmocka_unit_test(test_srv_glue),
        cmocka_unit_test(test_record_bound_and_ttl), cmocka_unit_test(test_malicious),
        cmocka_unit_test(test_name_eq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
