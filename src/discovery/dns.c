/* dns: the DNS message codec (see dns.h). Every read is bounds-checked
 * against the message; nothing is allocated. */
#include "discovery/dns.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"

const char *mg_dns_status_name(mg_dns_status_t s)
{
    switch (s) {
    case MG_DNS_OK: return "ok";
    case MG_DNS_NODATA: return "nodata";
    case MG_DNS_NXDOMAIN: return "nxdomain";
    case MG_DNS_SERVFAIL: return "servfail";
    case MG_DNS_REFUSED: return "refused";
    case MG_DNS_TRUNCATED: return "truncated";
    }
    return "?";
}

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c; }

bool mg_dns_name_eq(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na && a[na - 1] == '.') na--;
    if (nb && b[nb - 1] == '.') nb--;
    if (na != nb) return false;
    for (size_t i = 0; i < na; i++)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

int mg_dns_query(uint8_t *buf, size_t cap, uint16_t id, const char *name, uint16_t qtype)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    if (n == 0 || n > 253 || name[n - 1] == '.') return MG_EPARSE;
    if (cap < 12 + n + 2 + 4) return MG_ELIMIT;
    uint8_t *p = buf;
    *p++ = (uint8_t)(id >> 8);
    *p++ = (uint8_t)id;
    *p++ = 0x01; /* RD */
    *p++ = 0x00;
    memcpy(p, "\0\1\0\0\0\0\0\0", 8); /* QDCOUNT 1 */
    p += 8;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && name[j] != '.') j++;
        if (j == i || j - i > 63) return MG_EPARSE;
        *p++ = (uint8_t)(j - i);
        memcpy(p, name + i, j - i);
        p += j - i;
        i = j + 1;
    }
    *p++ = 0;
    *p++ = (uint8_t)(qtype >> 8);
    *p++ = (uint8_t)qtype;
    *p++ = 0;
    *p++ = 1; /* IN */
    return (int)(p - buf);
}

/* A (possibly compressed) name at *pos into out (presentation form, no
 * trailing dot, "" for the root). Each pointer must go strictly below the
 * previous one, so chains end; bytes that cannot appear in a host name
 * ('.', controls, space) become '?', which never matches a configured
 * name. *pos moves past the name as stored at *pos. */
static int read_name(const uint8_t *m, size_t len, size_t *pos, char out[MG_DNS_MAX_NAME + 1])
{
    size_t p = *pos, o = 0, limit = len, wire = 0;
    bool jumped = false;
    int hops = 0;
    for (;;) {
        if (p >= len) return MG_EPARSE;
        uint8_t c = m[p];
        if ((c & 0xC0) == 0xC0) {
            if (p + 1 >= len || ++hops > MG_DNS_MAX_HOPS) return MG_EPARSE;
            size_t off = (size_t)(c & 0x3F) << 8 | m[p + 1];
            if (off >= limit || off >= p) return MG_EPARSE;
            if (!jumped) *pos = p + 2;
            jumped = true;
            limit = off;
            p = off;
            continue;
        }
        if (c & 0xC0) return MG_EPARSE; /* 0x40 / 0x80: reserved label types */
        if (c == 0) {
            if (!jumped) *pos = p + 1;
            out[o] = '\0';
            return 0;
        }
        if (p + 1 + c > len) return MG_EPARSE;
        wire += 1u + c;
        if (wire + 1 > 255) return MG_EPARSE;
        if (o) out[o++] = '.';
        for (size_t i = 0; i < c; i++) {
            char ch = (char)m[p + 1 + i];
            out[o++] = ch == '.' || (unsigned char)ch <= 0x20 || (unsigned char)ch >= 0x7f ? '?' : ch;
        }
        p += 1u + c;
    }
}

typedef struct {
    char owner[MG_DNS_MAX_NAME + 1];
    char target[MG_DNS_MAX_NAME + 1];
    uint32_t ttl;
} cname_t;

#define MAX_CNAME_RRS 16

static uint32_t ttl_of(uint32_t t) { return t & 0x80000000u ? 0 : t; }

/* One resource record's fixed part; *pos moves past it. */
typedef struct {
    char owner[MG_DNS_MAX_NAME + 1];
    uint16_t type, cls;
    uint32_t ttl;
    size_t rd, rdlen;
} rr_hdr_t;

static int read_rr(const uint8_t *m, size_t len, size_t *pos, rr_hdr_t *h)
{
    if (read_name(m, len, pos, h->owner)) return MG_EPARSE;
    size_t p = *pos;
    if (p + 10 > len) return MG_EPARSE;
    h->type = rd16(m + p);
    h->cls = rd16(m + p + 2);
    h->ttl = ttl_of(rd32(m + p + 4));
    h->rdlen = rd16(m + p + 8);
    h->rd = p + 10;
    if (h->rd + h->rdlen > len) return MG_EPARSE;
    *pos = h->rd + h->rdlen;
    return 0;
}

/* A name inside rdata that must end exactly at the rdata's end. */
static int rd_name(const uint8_t *m, size_t len, size_t at, size_t end, char out[MG_DNS_MAX_NAME + 1])
{
    size_t p = at;
    if (read_name(m, len, &p, out)) return MG_EPARSE;
    return p == end ? 0 : MG_EPARSE;
}

int mg_dns_parse(const uint8_t *m, size_t len, uint16_t id, const char *name, uint16_t qtype,
                 mg_dns_answer_t *out, bool *mismatch)
{
    bool mm = false;
    if (!mismatch) mismatch = &mm;
    *mismatch = false;
    out->status = MG_DNS_OK;
    out->rcode = 0;
    out->aa = false;
    out->ttl = 0;
    out->has_ttl = false;
    out->canon[0] = '\0';
    out->nrrs = out->nextra = out->dropped = 0;
    if (len < 12 || len > MG_DNS_MAX_MSG) return MG_EPARSE;
    uint16_t flags = rd16(m + 2);
    if (rd16(m) != id || !(flags & 0x8000) || ((flags >> 11) & 0xF) != 0) {
        *mismatch = true; /* not a response to this query */
        return MG_EPARSE;
    }
    size_t qd = rd16(m + 4), an = rd16(m + 6), ns = rd16(m + 8), ar = rd16(m + 10);
    if (qd != 1) return MG_EPARSE;
    size_t pos = 12;
    char qn[MG_DNS_MAX_NAME + 1];
    if (read_name(m, len, &pos, qn) || pos + 4 > len) return MG_EPARSE;
    if (!mg_dns_name_eq(qn, name) || rd16(m + pos) != qtype || rd16(m + pos + 2) != 1) {
        *mismatch = true;
        return MG_EPARSE;
    }
    pos += 4;
    out->aa = (flags & 0x0400) != 0;
    out->rcode = (uint8_t)(flags & 0xF);
    snprintf(out->canon, sizeof out->canon, "%s", qn);
    if (flags & 0x0200) {
        out->status = MG_DNS_TRUNCATED;
        return 0;
    }

    /* pass 1: validate every record; collect CNAMEs (answer) and the SOA (authority) */
    cname_t cn[MAX_CNAME_RRS];
    size_t ncn = 0;
    size_t sections = pos;
    bool have_soa = false;
    uint32_t soa_ttl = 0;
    rr_hdr_t h;
    for (size_t i = 0; i < an + ns + ar; i++) {
        if (read_rr(m, len, &pos, &h)) return MG_EPARSE;
        size_t end = h.rd + h.rdlen;
        if (h.cls != 1) continue;
        if (h.type == MG_DNS_T_A && h.rdlen != 4) return MG_EPARSE;
        if (h.type == MG_DNS_T_AAAA && h.rdlen != 16) return MG_EPARSE;
        if (h.type == MG_DNS_T_SRV) {
            char t[MG_DNS_MAX_NAME + 1];
            if (h.rdlen < 7 || rd_name(m, len, h.rd + 6, end, t)) return MG_EPARSE;
        }
        if (h.type == MG_DNS_T_CNAME) {
            char t[MG_DNS_MAX_NAME + 1];
            if (rd_name(m, len, h.rd, end, t)) return MG_EPARSE;
            if (i < an) {
                if (ncn == MAX_CNAME_RRS) return MG_EPARSE;
                memcpy(cn[ncn].owner, h.owner, sizeof h.owner);
                memcpy(cn[ncn].target, t, sizeof t);
                cn[ncn++].ttl = h.ttl;
            }
        }
        if (h.type == MG_DNS_T_SOA && i >= an && i < an + ns) {
            char a[MG_DNS_MAX_NAME + 1];
            size_t p = h.rd;
            if (read_name(m, len, &p, a) || p > end || read_name(m, len, &p, a) || p + 20 != end) return MG_EPARSE;
            uint32_t minimum = ttl_of(rd32(m + p + 16));
            soa_ttl = h.ttl < minimum ? h.ttl : minimum;
            have_soa = true;
        }
    }
    if (pos != len) return MG_EPARSE; /* trailing bytes */

    /* the CNAME chain from the question name */
    uint32_t ttl = UINT32_MAX;
    for (int hops = 0;; hops++) {
        size_t k = 0;
        while (k < ncn && !mg_dns_name_eq(cn[k].owner, out->canon)) k++;
        if (k == ncn) break;
        if (hops == MG_DNS_MAX_CNAMES) return MG_EPARSE; /* too long, or a loop */
        snprintf(out->canon, sizeof out->canon, "%s", cn[k].target);
        if (cn[k].ttl < ttl) ttl = cn[k].ttl;
    }

    if (out->rcode == 2) {
        out->status = MG_DNS_SERVFAIL;
        return 0;
    }
    if (out->rcode != 0 && out->rcode != 3) {
        out->status = MG_DNS_REFUSED;
        return 0;
    }

    /* pass 2: keep the records */
    pos = sections;
    for (size_t i = 0; i < an + ns + ar; i++) {
        read_rr(m, len, &pos, &h); /* validated in pass 1 */
        if (h.cls != 1 || (i >= an && i < an + ns)) continue;
        bool answer = i < an;
        bool keep = answer ? h.type == qtype && mg_dns_name_eq(h.owner, out->canon)
                           : qtype == MG_DNS_T_SRV && (h.type == MG_DNS_T_A || h.type == MG_DNS_T_AAAA);
        if (!keep) continue;
        size_t *n = answer ? &out->nrrs : &out->nextra;
        if (*n == MG_DNS_MAX_RRS) {
            out->dropped++;
            continue;
        }
        mg_dns_rr_t *r = answer ? &out->rrs[*n] : &out->extra[*n];
        memset(r, 0, offsetof(mg_dns_rr_t, name));
        r->name[0] = '\0';
        r->type = h.type;
        r->ttl = h.ttl;
        if (h.type == MG_DNS_T_A || h.type == MG_DNS_T_AAAA) {
            memcpy(r->addr, m + h.rd, h.rdlen);
            if (!answer) memcpy(r->name, h.owner, sizeof h.owner);
        } else { /* SRV */
            r->prio = rd16(m + h.rd);
            r->weight = rd16(m + h.rd + 2);
            r->port = rd16(m + h.rd + 4);
            rd_name(m, len, h.rd + 6, h.rd + h.rdlen, r->name);
        }
        if (answer && h.ttl < ttl) ttl = h.ttl;
        (*n)++;
    }
    if (out->rcode == 3) {
        out->status = MG_DNS_NXDOMAIN;
        out->nrrs = out->nextra = 0;
    } else if (out->nrrs == 0) {
        out->status = MG_DNS_NODATA;
        out->nextra = 0;
    }
    if (out->status == MG_DNS_OK) {
        out->ttl = ttl;
        out->has_ttl = true;
    } else if (have_soa) {
        out->ttl = soa_ttl;
        out->has_ttl = true;
    }
    return 0;
}
