/* fuzz_dns: mg_dns_parse must refuse or accept any message without reading
 * outside it, and what it accepts must be consistent: bounded record
 * counts, NUL-terminated names, no records on a negative answer. Input:
 * one byte choosing the question type (A, AAAA, SRV), then the message,
 * parsed as the answer to "api.test" (or "_http._tcp.api.test" for SRV)
 * with the message's own ID so that the mutations reach the records. The
 * query builder gets the same bytes as a name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/dns.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

static mg_dns_answer_t ans;

static void check_rr(const mg_dns_rr_t *r)
{
    CHECK(memchr(r->name, 0, sizeof r->name) != NULL);
    CHECK(r->type == MG_DNS_T_A || r->type == MG_DNS_T_AAAA || r->type == MG_DNS_T_SRV);
    CHECK(r->ttl <= 0x7fffffffu);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    static const uint16_t types[] = { MG_DNS_T_A, MG_DNS_T_AAAA, MG_DNS_T_SRV };
    uint16_t qtype = types[data[0] % 3];
    const char *name = qtype == MG_DNS_T_SRV ? "_http._tcp.api.test" : "api.test";
    const uint8_t *m = data + 1;
    size_t n = size - 1;
    uint16_t id = n >= 2 ? (uint16_t)(m[0] << 8 | m[1]) : 0;
    bool mm = false;
    int rc = mg_dns_parse(m, n, id, name, qtype, &ans, &mm);
    if (rc == 0) {
        CHECK(!mm);
        CHECK(ans.nrrs <= MG_DNS_MAX_RRS && ans.nextra <= MG_DNS_MAX_RRS);
        CHECK(memchr(ans.canon, 0, sizeof ans.canon) != NULL);
        if (ans.status != MG_DNS_OK) CHECK(ans.nrrs == 0 && ans.nextra == 0);
        else CHECK(ans.nrrs > 0);
        if (qtype != MG_DNS_T_SRV) CHECK(ans.nextra == 0);
        for (size_t i = 0; i < ans.nrrs; i++) {
            check_rr(&ans.rrs[i]);
            CHECK(ans.rrs[i].type == qtype);
        }
        for (size_t i = 0; i < ans.nextra; i++) check_rr(&ans.extra[i]);
    }
    /* the bytes as a name to query */
    char q[300];
    size_t k = n < sizeof q - 1 ? n : sizeof q - 1;
    memcpy(q, m, k);
    q[k] = '\0';
    uint8_t out[512];
    int qn = mg_dns_query(out, sizeof out, id, q, qtype);
    if (qn >= 0) {
        CHECK(qn >= 12 + 2 + 4 && (size_t)qn <= sizeof out);
        /* our own query with QR set reads back as an empty answer to itself
         * (when the name has only printable bytes, which read back as is) */
        bool printable = true;
        for (const char *c = q; *c; c++)
            printable = printable && (unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f;
        out[2] |= 0x80;
        if (printable) {
            CHECK(mg_dns_parse(out, (size_t)qn, id, q, qtype, &ans, NULL) == 0);
            CHECK(ans.status == MG_DNS_NODATA);
        }
    }
    return 0;
}
