/* key: see key.h. */
#include "ratelimit/key.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/err.h"

/* ---- addresses ---- */

/* A bare IPv4 or IPv6 address; IPv4-mapped IPv6 becomes IPv4. */
static bool parse_plain(mg_slice_t s, int *family, uint8_t addr[16])
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (s.n == 0 || s.n >= sizeof tmp)
        return false;
    memcpy(tmp, s.p, s.n);
    tmp[s.n] = 0;
    if (inet_pton(AF_INET, tmp, addr) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, tmp, addr) != 1)
        return false;
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        *family = AF_INET;
    } else {
        *family = AF_INET6;
    }
    return true;
}

/* An address as found in X-Forwarded-For: "1.2.3.4", "1.2.3.4:80",
 * "2001:db8::1", "[2001:db8::1]:80". */
static bool parse_addr(mg_slice_t s, int *family, uint8_t addr[16])
{
    if (s.n && s.p[0] == '[') {
        const char *close = memchr(s.p, ']', s.n);
        if (!close)
            return false;
        s = mg_slice(s.p + 1, (size_t)(close - s.p - 1));
    } else {
        const char *c = memchr(s.p, ':', s.n); /* one ':' = IPv4 with a port */
        if (c && !memchr(c + 1, ':', s.n - (size_t)(c + 1 - s.p)))
            s.n = (size_t)(c - s.p);
    }
    return parse_plain(s, family, addr);
}

static bool sockaddr_bytes(const struct sockaddr *sa, int *family, uint8_t addr[16])
{
    if (!sa)
        return false;
    if (sa->sa_family == AF_INET) {
        memcpy(addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        *family = AF_INET;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) {
            memcpy(addr, a6->s6_addr + 12, 4);
            *family = AF_INET;
        } else {
            memcpy(addr, a6->s6_addr, 16);
            *family = AF_INET6;
        }
        return true;
    }
    return false;
}

int mg_rl_cidr_parse(mg_slice_t text, mg_rl_cidr_t *out)
{
    const char *slash = text.n ? memchr(text.p, '/', text.n) : NULL;
    mg_slice_t a = slash ? mg_slice(text.p, (size_t)(slash - text.p)) : text;
    int family;
    uint8_t addr[16] = { 0 };
    if (!parse_plain(a, &family, addr))
        return MG_EPARSE;
    unsigned max = family == AF_INET ? 32 : 128, bits = max;
    if (slash) {
        const char *p = slash + 1, *end = text.p + text.n;
        if (p == end || end - p > 3)
            return MG_EPARSE;
        bits = 0;
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return MG_EPARSE;
            bits = bits * 10 + (unsigned)(*p - '0');
        }
        if (bits > max)
            return MG_EPARSE;
    }
    for (unsigned i = 0; i < 16; i++) { /* clear host bits */
        unsigned lo = i * 8;
        if (lo >= bits)
            addr[i] = 0;
        else if (bits - lo < 8)
            addr[i] &= (uint8_t)(0xff00u >> (bits - lo));
    }
    out->family = (uint8_t)family;
    out->bits = (uint8_t)bits;
    memcpy(out->addr, addr, 16);
    return 0;
}

bool mg_rl_cidr_contains(const mg_rl_cidr_t *list, size_t n, int family, const uint8_t *addr)
{
    for (size_t i = 0; i < n; i++) {
        const mg_rl_cidr_t *c = &list[i];
        if (c->family != family)
            continue;
        unsigned full = c->bits / 8u, rest = c->bits % 8u;
        if (memcmp(c->addr, addr, full) != 0)
            continue;
        if (rest && ((addr[full] ^ c->addr[full]) & (uint8_t)(0xff00u >> rest)))
            continue;
        return true;
    }
    return false;
}

static mg_slice_t addr_text(int family, const uint8_t *addr, char *buf, size_t cap)
{
    if (family == AF_INET && cap >= 16) { /* the common case, without printf */
        size_t o = 0;
        for (int i = 0; i < 4; i++) {
            unsigned v = addr[i];
            if (v >= 100)
                buf[o++] = (char)('0' + v / 100);
            if (v >= 10)
                buf[o++] = (char)('0' + v / 10 % 10);
            buf[o++] = (char)('0' + v % 10);
            buf[o++] = '.';
        }
        return mg_slice(buf, o - 1);
    }
    if (!inet_ntop(family, addr, buf, (socklen_t)cap))
        return MG_SLICE_LIT("");
    return mg_slice_cstr(buf);
}

static mg_slice_t trim(mg_slice_t s)
{
    while (s.n && (s.p[0] == ' ' || s.p[0] == '\t'))
        s.p++, s.n--;
    while (s.n && (s.p[s.n - 1] == ' ' || s.p[s.n - 1] == '\t'))
        s.n--;
    return s;
}

static mg_slice_t client_ip(const mg_rl_key_cfg_t *cfg, const mg_rl_key_input_t *in, char *buf, size_t cap)
{
    int family;
    uint8_t addr[16];
    if (!sockaddr_bytes(in->peer, &family, addr))
        return MG_SLICE_LIT("");
    if (!cfg->ntrusted || !mg_rl_cidr_contains(cfg->trusted, cfg->ntrusted, family, addr) || !in->msg)
        return addr_text(family, addr, buf, cap);

    /* The peer is a trusted proxy: walk X-Forwarded-For right to left over
     * all its fields (later fields were appended later). */
    const mg_http_msg_t *m = in->msg;
    for (uint32_t hi = m->nheaders; hi-- > 0;) {
        const mg_http_header_t *h = &m->headers[hi];
        if (!mg_slice_caseeq_cstr(h->name, "X-Forwarded-For"))
            continue;
        size_t end = h->value.n;
        for (;;) {
            size_t start = end;
            while (start > 0 && h->value.p[start - 1] != ',')
                start--;
            mg_slice_t e = trim(mg_slice(h->value.p + start, end - start));
            int f2;
            uint8_t a2[16];
            if (e.n) {
                if (!parse_addr(e, &f2, a2))
                    return addr_text(family, addr, buf, cap); /* the hop that wrote it */
                family = f2;
                memcpy(addr, a2, 16);
                if (!mg_rl_cidr_contains(cfg->trusted, cfg->ntrusted, family, addr))
                    return addr_text(family, addr, buf, cap);
            }
            if (start == 0)
                break;
            end = start - 1;
        }
    }
    return addr_text(family, addr, buf, cap); /* every hop trusted: the leftmost */
}

/* ---- query and path ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* %-decode s into buf; plus: '+' means space. Returns s itself when nothing
 * needs decoding or buf is too small. A bad escape is kept literally. */
static mg_slice_t decode(mg_slice_t s, bool plus, char *buf, size_t cap)
{
    bool any = false;
    for (size_t i = 0; i < s.n && !any; i++)
        any = s.p[i] == '%' || (plus && s.p[i] == '+');
    if (!any || s.n > cap)
        return s;
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        int hi, lo;
        if (c == '%' && i + 2 < s.n && (hi = hexval(s.p[i + 1])) >= 0 && (lo = hexval(s.p[i + 2])) >= 0) {
            buf[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            buf[o++] = (plus && c == '+') ? ' ' : c;
        }
    }
    return mg_slice(buf, o);
}

static mg_slice_t query_param(mg_slice_t q, mg_slice_t name, char *buf, size_t cap)
{
    size_t i = 0;
    while (q.p && i <= q.n) {
        size_t j = i;
        while (j < q.n && q.p[j] != '&')
            j++;
        mg_slice_t pair = mg_slice(q.p + i, j - i);
        const char *eq = pair.n ? memchr(pair.p, '=', pair.n) : NULL;
        mg_slice_t n = eq ? mg_slice(pair.p, (size_t)(eq - pair.p)) : pair;
        if (n.n) {
            char nb[256];
            mg_slice_t dn = decode(n, true, nb, sizeof nb);
            if (mg_slice_eq(dn, name)) {
                if (!eq)
                    return MG_SLICE_LIT("");
                return decode(mg_slice(eq + 1, (size_t)(pair.p + pair.n - eq - 1)), true, buf, cap);
            }
        }
        i = j + 1;
    }
    return MG_SLICE_LIT("");
}

int mg_rl_key_resolve(const mg_rl_key_cfg_t *cfg, const mg_rl_key_input_t *in, char *buf,
                      size_t cap, mg_slice_t *key)
{
    const mg_http_msg_t *m = in->msg;
    mg_slice_t k = MG_SLICE_LIT("");
    switch (cfg->kind) {
    case MG_RL_KEY_IP:
        k = client_ip(cfg, in, buf, cap);
        break;
    case MG_RL_KEY_HEADER:
        if (m) {
            const mg_http_header_t *h = mg_http_find(m, cfg->name);
            if (h)
                k = h->value;
        }
        break;
    case MG_RL_KEY_QUERY:
        if (m)
            k = query_param(m->query, cfg->name, buf, cap);
        break;
    case MG_RL_KEY_ROUTE:
        k = in->route_id;
        break;
    case MG_RL_KEY_PATH:
        if (m)
            k = decode(m->path, false, buf, cap);
        break;
    case MG_RL_KEY_FIXED:
        k = cfg->fixed;
        break;
    }
    if (!k.p)
        k = MG_SLICE_LIT("");
    *key = k;
    return 0;
}

int mg_rl_key_kind_parse(mg_slice_t t, mg_rl_key_kind_t *out)
{
    static const struct {
        const char *name;
        mg_rl_key_kind_t kind;
    } names[] = {
        { "ip", MG_RL_KEY_IP },         { "remote-addr", MG_RL_KEY_IP },
        { "client-ip", MG_RL_KEY_IP },  { "header", MG_RL_KEY_HEADER },
        { "query", MG_RL_KEY_QUERY },   { "route", MG_RL_KEY_ROUTE },
        { "path", MG_RL_KEY_PATH },     { "fixed", MG_RL_KEY_FIXED },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (mg_slice_caseeq_cstr(t, names[i].name)) {
            *out = names[i].kind;
            return 0;
        }
    }
    return MG_ECONFIG;
}
