/* dns: a small DNS message codec (RFC 1035, 2782, 3596). Pure functions,
 * no I/O, any thread.
 *
 * mg_dns_query() writes one question (A, AAAA or SRV, class IN, RD set).
 * mg_dns_parse() reads the answer to it strictly: the header must be a
 * response to that ID, the question must echo the one asked (name compared
 * case-insensitively), every record must lie inside the message, names
 * may be compressed only with pointers to earlier bytes (so no loop) and
 * at most MG_DNS_MAX_HOPS of them, 255 bytes in all. The answer section's
 * CNAME chain is followed from the question name (MG_DNS_MAX_CNAMES
 * hops); the records of the asked type owned by the chain's last name are
 * kept, and for SRV the A/AAAA records of the additional section (glue
 * for the targets). At most MG_DNS_MAX_RRS of each are kept; the rest are
 * counted in `dropped`. */
#ifndef MG_DISCOVERY_DNS_H
#define MG_DISCOVERY_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_DNS_MAX_MSG 65535
#define MG_DNS_MAX_NAME 255   /* presentation form without the trailing dot, plus NUL */
#define MG_DNS_MAX_RRS 256    /* answers kept, and additional records kept */
#define MG_DNS_MAX_CNAMES 8
#define MG_DNS_MAX_HOPS 32    /* compression pointers in one name */

enum { MG_DNS_T_A = 1, MG_DNS_T_NS = 2, MG_DNS_T_CNAME = 5, MG_DNS_T_SOA = 6, MG_DNS_T_AAAA = 28,
       MG_DNS_T_SRV = 33 };

typedef enum {
    MG_DNS_OK = 0,       /* records of the asked type (nrrs > 0) */
    MG_DNS_NODATA,       /* the name exists, no record of that type (authoritative empty) */
    MG_DNS_NXDOMAIN,     /* no such name (authoritative empty) */
    MG_DNS_SERVFAIL,     /* RCODE 2 */
    MG_DNS_REFUSED,      /* any other RCODE (REFUSED, NOTIMP, FORMERR...) */
    MG_DNS_TRUNCATED,    /* TC set: ask again over TCP */
} mg_dns_status_t;

const char *mg_dns_status_name(mg_dns_status_t s);

typedef struct {
    uint16_t type;     /* A, AAAA or SRV */
    uint32_t ttl;      /* seconds; a value with the top bit set reads as 0 (RFC 2181) */
    uint8_t addr[16];  /* A: 4 bytes, AAAA: 16 */
    uint16_t prio, weight, port; /* SRV */
    char name[MG_DNS_MAX_NAME + 1]; /* SRV: the target; additional A/AAAA: the owner */
} mg_dns_rr_t;

typedef struct {
    mg_dns_status_t status;
    uint8_t rcode;
    bool aa;
    uint32_t ttl;      /* OK: min TTL of the kept records and the CNAME chain;
                        * NODATA/NXDOMAIN: min(SOA TTL, SOA minimum) if an SOA came, else 0 */
    bool has_ttl;
    char canon[MG_DNS_MAX_NAME + 1]; /* the chain's last name (the question name without CNAMEs) */
    mg_dns_rr_t rrs[MG_DNS_MAX_RRS];
    size_t nrrs;
    mg_dns_rr_t extra[MG_DNS_MAX_RRS]; /* additional A/AAAA (SRV glue) */
    size_t nextra;
    size_t dropped;    /* records over the bounds */
} mg_dns_answer_t;

/* Write a query for name (presentation form, an optional trailing dot) into
 * buf. Returns its length, or MG_EPARSE for a bad name, MG_ELIMIT if cap is
 * too small (512 always suffices). */
int mg_dns_query(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype);

/* Parse msg as the answer to (id, name, qtype). Returns 0 and fills *out,
 * or MG_EPARSE: malformed, or not an answer to that question (then
 * *mismatch, if given, is true: the caller keeps waiting for the real one). */
int mg_dns_parse(const uint8_t *msg, size_t len, uint16_t id, const char *name, uint16_t qtype,
                 mg_dns_answer_t *out, bool *mismatch);

/* Case-insensitive comparison of two presentation names, trailing dots ignored. */
bool mg_dns_name_eq(const char *a, const char *b);

#endif
