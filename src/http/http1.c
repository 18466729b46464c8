/* http1: strict, incremental, zero-copy HTTP/1.1 head parser and chunked
 * decoder. See http1.h for the contract.
 *
 * Request/response heads are processed in two steps:
 *   1. scan_head(): find the end of the head with memchr over line feeds,
 *      resuming at m->scan_pos, enforcing the size limits as soon as they
 *      are certain to be exceeded (O(n) total over repeated calls);
 *   2. parse_*(): once the whole head is present, one validating pass over
 *      it driven by a 256-entry character-class table.
 * Every check depends only on the bytes, so the result never depends on how
 * the input was split across calls. */
#include "http/http1.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

const mg_http_limits_t mg_http_default_limits = { 8192, 32768, 100 };

/* Leading empty lines skipped before a request line (RFC 9112 2.2). */
#define MAX_LEADING_EMPTY 4

/* Chunked limits. */
#define CHUNK_EXT_MAX 4096
#define CHUNK_TRAILERS_MAX 64
#define CHUNK_TRAILER_BYTES_MAX 8192

/* ---- character classes ---- */
enum {
    C_TCHAR = 0x01,  /* RFC 9110 tchar */
    C_TARGET = 0x02, /* RFC 3986 unreserved / reserved (minus '#') / '%' */
    C_VALUE = 0x04,  /* field-vchar / SP / HTAB / obs-text */
    C_HEX = 0x08,
    C_HOST = 0x10,   /* Host value / authority: unreserved, sub-delims, ":[]%" */
    C_QDTEXT = 0x20, /* quoted-string qdtext */
    C_DIGIT = 0x40,
};

static const uint8_t ct[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x24, 0x37, 0x04, 0x25, 0x37, 0x37, 0x37, 0x37, 0x36, 0x36, 0x37, 0x37, 0x36, 0x37, 0x37, 0x26,
    0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x36, 0x36, 0x24, 0x36, 0x24, 0x26,
    0x26, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37,
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x36, 0x04, 0x36, 0x25, 0x37,
    0x25, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x3f, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37,
    0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x37, 0x24, 0x25, 0x24, 0x37, 0x00,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
    0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24, 0x24,
};

#define IS(c, cls) (ct[(uint8_t)(c)] & (cls))
#define OWS(c) ((c) == ' ' || (c) == '\t')

static const char slash[] = "/";

/* Case-insensitive compare of a token (tchar only, so c|0x20 is exact)
 * against a lowercase literal of the same length. */
static inline uint64_t ld64(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t ld32(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline bool tok_lceq(const char *a, const char *lc, size_t n)
{
    if (n >= 8) {
        const uint64_t lo = 0x2020202020202020ull;
        size_t i = 0;
        for (; i + 8 < n; i += 8)
            if ((ld64(a + i) | lo) != ld64(lc + i))
                return false;
        return (ld64(a + n - 8) | lo) == ld64(lc + n - 8);
    }
    if (n >= 4)
        return (ld32(a) | 0x20202020u) == ld32(lc) &&
               (ld32(a + n - 4) | 0x20202020u) == ld32(lc + n - 4);
    for (size_t i = 0; i < n; i++)
        if ((char)(a[i] | 0x20) != lc[i])
            return false;
    return true;
}

static inline bool slice_tok_lceq(mg_slice_t s, const char *lc, size_t n)
{
    return s.n == n && tok_lceq(s.p, lc, n);
}

/* ---- methods ---- */

static const char *const method_names[] = {
    [MG_METHOD_OTHER] = NULL,       [MG_METHOD_GET] = "GET",
    [MG_METHOD_HEAD] = "HEAD",      [MG_METHOD_POST] = "POST",
    [MG_METHOD_PUT] = "PUT",        [MG_METHOD_DELETE] = "DELETE",
    [MG_METHOD_CONNECT] = "CONNECT", [MG_METHOD_OPTIONS] = "OPTIONS",
    [MG_METHOD_TRACE] = "TRACE",    [MG_METHOD_PATCH] = "PATCH",
};

const char *mg_method_name(mg_method_t id)
{
    if ((unsigned)id >= sizeof method_names / sizeof method_names[0])
        return NULL;
    return method_names[id];
}

static mg_method_t method_id(const char *p, size_t n)
{
    switch (n) {
    case 3:
        if (memcmp(p, "GET", 3) == 0) return MG_METHOD_GET;
        if (memcmp(p, "PUT", 3) == 0) return MG_METHOD_PUT;
        break;
    case 4:
        if (memcmp(p, "POST", 4) == 0) return MG_METHOD_POST;
        if (memcmp(p, "HEAD", 4) == 0) return MG_METHOD_HEAD;
        break;
    case 5:
        if (memcmp(p, "PATCH", 5) == 0) return MG_METHOD_PATCH;
        if (memcmp(p, "TRACE", 5) == 0) return MG_METHOD_TRACE;
        break;
    case 6:
        if (memcmp(p, "DELETE", 6) == 0) return MG_METHOD_DELETE;
        break;
    case 7:
        if (memcmp(p, "OPTIONS", 7) == 0) return MG_METHOD_OPTIONS;
        if (memcmp(p, "CONNECT", 7) == 0) return MG_METHOD_CONNECT;
        break;
    default:
        break;
    }
    return MG_METHOD_OTHER;
}

/* Advances p over field-value bytes (VCHAR, obs-text, SP, HTAB), never
 * reading at or past end. Stops at the first other byte (CR/LF/CTL/DEL) or
 * at end. 16 bytes at a time where SSE2 exists. */
static inline const char *skip_value(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i sp = _mm_set1_epi8(0x20), del = _mm_set1_epi8(0x7f);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* bytes >= 0x20 (unsigned) and != 0x7f are fine */
        __m128i ge = _mm_cmpeq_epi8(_mm_max_epu8(v, sp), v);
        __m128i ok = _mm_andnot_si128(_mm_cmpeq_epi8(v, del), ge);
        unsigned bad = (unsigned)_mm_movemask_epi8(ok) ^ 0xffffu;
        if (bad) {
            p += __builtin_ctz(bad);
            break;
        }
        p += 16;
    }
#endif
    while (p < end && IS(*p, C_VALUE))
        p++;
    return p;
}

/* ---- head scanning ---- */

/* Finds the end of the head in buf[0..len), resuming where the previous
 * call stopped. Returns the head length, 0 when incomplete, or -status.
 * Checks are made in byte order so the outcome does not depend on how the
 * input was split:
 *   - start line: its content (without CR LF) over max_sl -> -414, as soon
 *     as max_sl + 1 content bytes are present;
 *   - fields: head longer than max_hb -> -431 as soon as max_hb + 1 bytes are
 *     present without the end; more than max_n field lines -> -431. */
/* Can c start a start line? Lets garbage (e.g. a TLS ClientHello) fail at
 * once instead of after max_sl bytes. CR is left to the full parse. */
static inline bool start_ok(char c, bool response)
{
    return c == '\r' || (response ? c == 'H' : IS(c, C_TCHAR) != 0);
}

static int scan_head(const char *buf, size_t len, mg_http_msg_t *m, size_t max_sl,
                     size_t max_hb, uint32_t max_n, uint32_t max_empty, bool response)
{
    if (m->scan_pos == 0 || m->scan_pos > len || m->scan_line > m->scan_pos) {
        m->scan_pos = 0;
        m->scan_line = 0;
        m->scan_sl = 0;
        m->scan_sl_end = 0;
        m->scan_phase = 0;
        m->scan_count = 0;
    }
    if (m->scan_phase == 2)
        return (int)m->scan_pos;

    size_t pos = m->scan_pos, ls = m->scan_line;
    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        if (!nl)
            break;
        size_t i = (size_t)(nl - buf);
        size_t content = i - ls;
        if (content && buf[i - 1] == '\r')
            content--;
        pos = i + 1;
        if (m->scan_phase == 0) {
            if (content == 0) {
                if (++m->scan_count > max_empty) {
                    m->error = "empty line before start line";
                    return -400;
                }
                ls = pos;
                continue;
            }
            if (!start_ok(buf[ls], response)) {
                m->error = "invalid start line";
                return -400;
            }
            if (content > max_sl) {
                m->error = "request line too long";
                return -414;
            }
            m->scan_sl = ls;
            m->scan_sl_end = i;
            m->scan_phase = 1;
            m->scan_count = 0;
            ls = pos;
            continue;
        }
        if (pos > max_hb) {
            m->error = "header section too large";
            return -431;
        }
        if (content == 0) {
            m->scan_phase = 2;
            m->scan_pos = pos;
            m->scan_line = pos;
            return (int)pos;
        }
        if (++m->scan_count > max_n) {
            m->error = "too many header fields";
            return -431;
        }
        ls = pos;
    }
    m->scan_pos = len;
    m->scan_line = ls;
    if (m->scan_phase == 0) {
        if (len == ls)
            return 0;
        if (!start_ok(buf[ls], response)) {
            m->error = "invalid start line";
            return -400;
        }
        size_t n = len - ls;
        if (n && buf[len - 1] == '\r')
            n--;
        if (n > max_sl) {
            m->error = "request line too long";
            return -414;
        }
    } else if (len > max_hb) {
        m->error = "header section too large";
        return -431;
    }
    return 0;
}

/* ---- field value helpers ---- */

/* Content-Length: 1*DIGIT, or a list of identical ones ("5, 5").
 * Values >= 2^63 are rejected. */
static bool parse_cl(const char *p, size_t n, uint64_t *out)
{
    size_t i = 0;
    bool have = false;
    uint64_t first = 0;
    for (;;) {
        if (i >= n || !IS(p[i], C_DIGIT))
            return false;
        uint64_t v = 0;
        while (i < n && IS(p[i], C_DIGIT)) {
            uint64_t d = (uint64_t)(p[i] - '0');
            if (v > ((uint64_t)INT64_MAX - d) / 10)
                return false;
            v = v * 10 + d;
            i++;
        }
        if (have && v != first)
            return false;
        first = v;
        have = true;
        while (i < n && OWS(p[i]))
            i++;
        if (i == n)
            break;
        if (p[i] != ',')
            return false;
        i++;
        while (i < n && OWS(p[i]))
            i++;
    }
    *out = first;
    return true;
}

/* quoted-string starting at p[*i] == '"'; advances *i past the closing quote. */
static bool skip_quoted(const char *p, size_t n, size_t *i)
{
    size_t k = *i + 1;
    while (k < n) {
        char c = p[k];
        if (c == '"') {
            *i = k + 1;
            return true;
        }
        if (c == '\\') {
            if (k + 1 >= n || !IS(p[k + 1], C_VALUE))
                return false;
            k += 2;
            continue;
        }
        if (!IS(c, C_QDTEXT))
            return false;
        k++;
    }
    return false;
}

typedef struct {
    uint32_t n_chunked;
    uint32_t n_other;
    bool last_chunked;
    bool seen;
} te_info_t;

/* Transfer-Encoding: 1#transfer-coding, transfer-coding = token
 * *( OWS ";" OWS token BWS "=" BWS ( token / quoted-string ) ).
 * "chunked" takes no parameters. Accumulates over several fields. */
static bool parse_te(const char *p, size_t n, te_info_t *te)
{
    size_t i = 0;
    te->seen = true;
    for (;;) {
        size_t ts = i;
        while (i < n && IS(p[i], C_TCHAR))
            i++;
        if (i == ts)
            return false;
        bool chunked = (i - ts == 7 && tok_lceq(p + ts, "chunked", 7));
        bool params = false;
        for (;;) {
            size_t k = i;
            while (k < n && OWS(p[k]))
                k++;
            if (k >= n || p[k] != ';')
                break;
            params = true;
            k++;
            while (k < n && OWS(p[k]))
                k++;
            size_t ns = k;
            while (k < n && IS(p[k], C_TCHAR))
                k++;
            if (k == ns)
                return false;
            while (k < n && OWS(p[k]))
                k++;
            if (k >= n || p[k] != '=')
                return false;
            k++;
            while (k < n && OWS(p[k]))
                k++;
            if (k < n && p[k] == '"') {
                if (!skip_quoted(p, n, &k))
                    return false;
            } else {
                size_t vs = k;
                while (k < n && IS(p[k], C_TCHAR))
                    k++;
                if (k == vs)
                    return false;
            }
            i = k;
        }
        if (chunked) {
            if (params)
                return false;
            te->n_chunked++;
        } else {
            te->n_other++;
        }
        te->last_chunked = chunked;
        while (i < n && OWS(p[i]))
            i++;
        if (i == n)
            return true;
        if (p[i] != ',')
            return false;
        i++;
        while (i < n && OWS(p[i]))
            i++;
    }
}

/* Calls fn for each non-empty element of a token list ("a, b,,c").
 * Returns false when an element is not a token. */
typedef void (*tok_fn)(mg_slice_t tok, void *arg);

static bool each_token(const char *p, size_t n, tok_fn fn, void *arg)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (OWS(p[i]) || p[i] == ','))
            i++;
        if (i == n)
            break;
        size_t ts = i;
        while (i < n && IS(p[i], C_TCHAR))
            i++;
        if (i == ts)
            return false;
        mg_slice_t tok = mg_slice(p + ts, i - ts);
        while (i < n && OWS(p[i]))
            i++;
        if (i < n && p[i] != ',')
            return false;
        if (fn)
            fn(tok, arg);
    }
    return true;
}

static void conn_token(mg_slice_t tok, void *arg)
{
    uint32_t *flags = arg;
    if (slice_tok_lceq(tok, "close", 5))
        *flags |= MG_MSG_CONN_CLOSE;
    else if (slice_tok_lceq(tok, "keep-alive", 10))
        *flags |= MG_MSG_CONN_KEEPALIVE;
    else if (slice_tok_lceq(tok, "upgrade", 7))
        *flags |= MG_MSG_CONN_UPGRADE;
}

static void conn_mark_hop(mg_slice_t tok, void *arg)
{
    mg_http_msg_t *m = arg;
    for (uint32_t j = 0; j < m->nheaders; j++) {
        mg_http_header_t *h = &m->headers[j];
        if (h->name.n == tok.n && !(h->flags & MG_HDR_HOP) &&
            strncasecmp(h->name.p, tok.p, tok.n) == 0)
            h->flags |= MG_HDR_HOP;
    }
}

/* ---- field section ---- */

enum {
    F_OTHER = 0,
    F_HOST,
    F_CL,
    F_TE,
    F_CONNECTION,
    F_EXPECT,
    F_HOP, /* other hop-by-hop fields without semantics here */
};

static inline int classify(const char *p, size_t n)
{
    switch (n) {
    case 2:
        if (tok_lceq(p, "te", 2)) return F_HOP;
        break;
    case 4:
        if (tok_lceq(p, "host", 4)) return F_HOST;
        break;
    case 6:
        if (tok_lceq(p, "expect", 6)) return F_EXPECT;
        break;
    case 7:
        if (tok_lceq(p, "upgrade", 7) || tok_lceq(p, "trailer", 7)) return F_HOP;
        break;
    case 10:
        if (tok_lceq(p, "connection", 10)) return F_CONNECTION;
        if (tok_lceq(p, "keep-alive", 10)) return F_HOP;
        break;
    case 14:
        if (tok_lceq(p, "content-length", 14)) return F_CL;
        break;
    case 16:
        if (tok_lceq(p, "proxy-connection", 16)) return F_HOP;
        break;
    case 17:
        if (tok_lceq(p, "transfer-encoding", 17)) return F_TE;
        break;
    default:
        break;
    }
    return F_OTHER;
}

typedef struct {
    te_info_t te;
    uint32_t nhost;
    uint32_t nconn;
    bool cl;
} fields_info_t;

#define FAIL(status, msg) do { m->error = (msg); return -(status); } while (0)

/* Parses field lines from p up to and including the empty line that ends
 * the head at buf + end. */
static int parse_fields(const char *p, const char *end, mg_http_msg_t *m, uint32_t max_n,
                        fields_info_t *fi, bool request)
{
    uint32_t n = 0;
    for (;;) {
        char c = *p;
        if (c == '\n' || c == '\r') {
            if (c == '\r' && p[1] != '\n')
                FAIL(400, "bare CR in header section");
            p += (c == '\r') ? 2 : 1;
            if (p != end)
                FAIL(400, "malformed header section");
            break;
        }
        if (OWS(c))
            FAIL(400, "obs-fold or whitespace before field name");
        const char *name = p;
        while (IS(*p, C_TCHAR))
            p++;
        if (p == name)
            FAIL(400, "invalid field name");
        size_t name_n = (size_t)(p - name);
        if (*p != ':') {
            if (OWS(*p))
                FAIL(400, "whitespace between field name and colon");
            FAIL(400, "invalid field name");
        }
        p++;
        while (OWS(*p))
            p++;
        const char *vs = p;
        p = skip_value(p, end);
        const char *ve = p;
        if (*p == '\r') {
            if (p[1] != '\n')
                FAIL(400, "bare CR or invalid byte in field value");
            p += 2;
        } else if (*p == '\n') {
            p++;
        } else {
            FAIL(400, "invalid byte in field value");
        }
        while (ve > vs && OWS(ve[-1]))
            ve--;
        if (n >= max_n)
            FAIL(431, "too many header fields");
        mg_http_header_t *h = &m->headers[n++];
        h->name = mg_slice(name, name_n);
        h->value = mg_slice(vs, (size_t)(ve - vs));
        h->flags = 0;
        size_t vn = (size_t)(ve - vs);
        switch (classify(name, name_n)) {
        case F_OTHER:
            break;
        case F_HOST:
            h->flags = MG_HDR_HOST;
            if (!request)
                break;
            if (++fi->nhost > 1)
                FAIL(400, "duplicate Host");
            for (size_t k = 0; k < vn; k++)
                if (!IS(vs[k], C_HOST))
                    FAIL(400, "invalid Host");
            m->host = h->value;
            break;
        case F_CL: {
            h->flags = MG_HDR_HOP;
            uint64_t v;
            if (!parse_cl(vs, vn, &v))
                FAIL(400, "invalid Content-Length");
            if (fi->cl && v != m->content_length)
                FAIL(400, "conflicting Content-Length");
            fi->cl = true;
            m->content_length = v;
            m->flags |= MG_MSG_HAS_CL;
            break;
        }
        case F_TE:
            h->flags = MG_HDR_HOP;
            if (!parse_te(vs, vn, &fi->te))
                FAIL(400, "invalid Transfer-Encoding");
            break;
        case F_CONNECTION:
            h->flags = MG_HDR_HOP;
            fi->nconn++;
            if (!each_token(vs, vn, conn_token, &m->flags))
                FAIL(400, "invalid Connection");
            break;
        case F_EXPECT:
            h->flags = MG_HDR_HOP;
            if (vn == 12 && strncasecmp(vs, "100-continue", 12) == 0)
                m->flags |= MG_MSG_EXPECT_CONTINUE;
            break;
        default:
            h->flags = MG_HDR_HOP;
            break;
        }
    }
    m->nheaders = n;
    if (fi->nconn) {
        for (uint32_t j = 0; j < n; j++) {
            mg_http_header_t *h = &m->headers[j];
            if (h->name.n == 10 && tok_lceq(h->name.p, "connection", 10))
                each_token(h->value.p, h->value.n, conn_mark_hop, m);
        }
    }
    return 0;
}

static void clear_msg(mg_http_msg_t *m)
{
    m->method = MG_SLICE_NULL;
    m->method_id = MG_METHOD_OTHER;
    m->target = MG_SLICE_NULL;
    m->path = MG_SLICE_NULL;
    m->query = MG_SLICE_NULL;
    m->authority = MG_SLICE_NULL;
    m->status = 0;
    m->reason = MG_SLICE_NULL;
    m->version = 0;
    m->nheaders = 0;
    m->host = MG_SLICE_NULL;
    m->body = MG_BODY_NONE;
    m->content_length = 0;
    m->flags = 0;
    m->error = NULL;
}

static void limits(const mg_http_limits_t *lim, size_t *sl, size_t *hb, uint32_t *n)
{
    if (!lim)
        lim = &mg_http_default_limits;
    *sl = lim->max_request_line;
    *hb = lim->max_header_bytes < INT32_MAX ? lim->max_header_bytes : INT32_MAX;
    *n = lim->max_headers < MG_HTTP_MAX_HEADERS ? lim->max_headers : MG_HTTP_MAX_HEADERS;
}

/* "HTTP/1.0" / "HTTP/1.1" -> 10 / 11; other "HTTP/d.d" -> -505; else -400. */
static int parse_version(const char *v, size_t n)
{
    if (n != 8 || memcmp(v, "HTTP/", 5) != 0 || !IS(v[5], C_DIGIT) || v[6] != '.' ||
        !IS(v[7], C_DIGIT))
        return -400;
    if (v[5] == '1' && (v[7] == '0' || v[7] == '1'))
        return v[7] == '1' ? 11 : 10;
    return -505;
}

/* ---- requests ---- */

static int parse_target(const char *t, size_t tn, mg_http_msg_t *m)
{
    /* percent-encoding must be '%' HEXDIG HEXDIG */
    const char *pc = memchr(t, '%', tn);
    while (pc) {
        size_t off = (size_t)(pc - t);
        if (off + 2 >= tn || !IS(pc[1], C_HEX) || !IS(pc[2], C_HEX))
            FAIL(400, "invalid percent-encoding in target");
        pc = memchr(pc + 3, '%', tn - off - 3);
    }

    m->target = mg_slice(t, tn);
    if (m->method_id == MG_METHOD_CONNECT) {
        /* authority-form: uri-host ":" port */
        const char *colon = NULL;
        for (size_t i = 0; i < tn; i++) {
            if (!IS(t[i], C_HOST))
                FAIL(400, "invalid CONNECT target");
            if (t[i] == ':')
                colon = t + i;
        }
        if (!colon || colon == t)
            FAIL(400, "invalid CONNECT target");
        size_t pn = tn - (size_t)(colon + 1 - t);
        if (pn == 0 || pn > 5)
            FAIL(400, "invalid CONNECT port");
        uint32_t port = 0;
        for (size_t i = 0; i < pn; i++) {
            if (!IS(colon[1 + i], C_DIGIT))
                FAIL(400, "invalid CONNECT port");
            port = port * 10 + (uint32_t)(colon[1 + i] - '0');
        }
        if (port > 65535)
            FAIL(400, "invalid CONNECT port");
        m->authority = m->target;
        m->path = m->target;
        return 0;
    }
    if (t[0] == '/') {
        const char *q = memchr(t, '?', tn);
        if (q) {
            m->path = mg_slice(t, (size_t)(q - t));
            m->query = mg_slice(q + 1, tn - (size_t)(q + 1 - t));
        } else {
            m->path = m->target;
        }
        return 0;
    }
    if (tn == 1 && t[0] == '*') {
        if (m->method_id != MG_METHOD_OPTIONS)
            FAIL(400, "asterisk-form only for OPTIONS");
        m->path = m->target;
        return 0;
    }
    size_t skip;
    if (tn >= 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (tn >= 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    else
        FAIL(400, "invalid request target");
    const char *a = t + skip, *e = t + tn, *r = a;
    while (r < e && *r != '/' && *r != '?') {
        if (!IS(*r, C_HOST))
            FAIL(400, "invalid authority in request target");
        r++;
    }
    if (r == a)
        FAIL(400, "empty authority in request target");
    m->authority = mg_slice(a, (size_t)(r - a));
    m->flags |= MG_MSG_ABSOLUTE_FORM;
    const char *q = memchr(r, '?', (size_t)(e - r));
    const char *pe = q ? q : e;
    m->path = (pe > r) ? mg_slice(r, (size_t)(pe - r)) : mg_slice(slash, 1);
    if (q)
        m->query = mg_slice(q + 1, (size_t)(e - q - 1));
    return 0;
}

int mg_http_parse_request(const char *buf, size_t len, mg_http_msg_t *m,
                          const mg_http_limits_t *lim)
{
    size_t max_sl, max_hb;
    uint32_t max_n;
    limits(lim, &max_sl, &max_hb, &max_n);
    int hl = scan_head(buf, len, m, max_sl, max_hb, max_n, MAX_LEADING_EMPTY, false);
    if (hl <= 0)
        return hl;

    clear_msg(m);
    const char *p = buf + m->scan_sl;
    const char *le = buf + m->scan_sl_end; /* the LF */
    if (le > p && le[-1] == '\r')
        le--;

    /* method SP */
    const char *ms = p;
    while (IS(*p, C_TCHAR))
        p++;
    if (p == ms || *p != ' ')
        FAIL(400, "invalid method");
    m->method = mg_slice(ms, (size_t)(p - ms));
    m->method_id = method_id(ms, m->method.n);
    p++;

    /* request-target SP */
    const char *ts = p;
    while (IS(*p, C_TARGET))
        p++;
    if (p == ts || *p != ' ')
        FAIL(400, "invalid request target");
    const char *te_ = p;
    p++;

    /* HTTP-version */
    int v = parse_version(p, p <= le ? (size_t)(le - p) : 0);
    if (v < 0)
        FAIL(-v, v == -505 ? "unsupported HTTP version" : "invalid HTTP version");
    m->version = v;

    int rc = parse_target(ts, (size_t)(te_ - ts), m);
    if (rc < 0)
        return rc;

    fields_info_t fi = { 0 };
    rc = parse_fields(buf + m->scan_sl_end + 1, buf + hl, m, max_n, &fi, true);
    if (rc < 0)
        return rc;

    if (fi.nhost == 0 && m->version == 11)
        FAIL(400, "missing Host");
    if (fi.te.seen) {
        if (m->version == 10)
            FAIL(400, "Transfer-Encoding in HTTP/1.0 request");
        if (fi.cl)
            FAIL(400, "both Content-Length and Transfer-Encoding");
        if (fi.te.n_chunked != 1 || !fi.te.last_chunked)
            FAIL(400, "Transfer-Encoding is not a final chunked");
        if (fi.te.n_other)
            FAIL(501, "unsupported transfer coding");
        m->body = MG_BODY_CHUNKED;
    } else if (fi.cl) {
        m->body = MG_BODY_LENGTH;
    } else {
        m->body = MG_BODY_NONE;
    }
    return hl;
}

/* ---- responses ---- */

static int parse_response(const char *buf, int hl, mg_http_msg_t *m, uint32_t max_n,
                          mg_method_t req_method)
{
    clear_msg(m);
    const char *p = buf + m->scan_sl;
    const char *le = buf + m->scan_sl_end;
    if (le > p && le[-1] == '\r')
        le--;
    size_t n = (size_t)(le - p);
    if (n < 12 || p[8] != ' ')
        FAIL(502, "invalid status line");
    int v = parse_version(p, 8);
    if (v < 0)
        FAIL(502, "invalid response version");
    m->version = v;
    if (!IS(p[9], C_DIGIT) || !IS(p[10], C_DIGIT) || !IS(p[11], C_DIGIT))
        FAIL(502, "invalid status code");
    int st = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (st < 100 || st > 599)
        FAIL(502, "invalid status code");
    m->status = st;
    if (n > 12) {
        if (p[12] != ' ')
            FAIL(502, "invalid status line");
        for (const char *r = p + 13; r < le; r++)
            if (!IS(*r, C_VALUE))
                FAIL(502, "invalid reason phrase");
        m->reason = mg_slice(p + 13, (size_t)(le - p - 13));
    } else {
        m->reason = mg_slice(le, 0);
    }

    fields_info_t fi = { 0 };
    int rc = parse_fields(buf + m->scan_sl_end + 1, buf + hl, m, max_n, &fi, false);
    if (rc < 0)
        return rc;

    if (fi.te.seen) {
        if (m->version == 10)
            FAIL(502, "Transfer-Encoding in HTTP/1.0 response");
        if (fi.cl)
            FAIL(502, "both Content-Length and Transfer-Encoding");
        if (fi.te.n_chunked > 1 || (fi.te.n_chunked == 1 && !fi.te.last_chunked))
            FAIL(502, "chunked applied more than once or not last");
    }
    if (req_method == MG_METHOD_HEAD || st < 200 || st == 204 || st == 304 ||
        (req_method == MG_METHOD_CONNECT && st < 300))
        m->body = MG_BODY_NONE;
    else if (fi.te.seen)
        m->body = fi.te.last_chunked ? MG_BODY_CHUNKED : MG_BODY_EOF;
    else if (fi.cl)
        m->body = MG_BODY_LENGTH;
    else
        m->body = MG_BODY_EOF;
    return hl;
}

int mg_http_parse_response(const char *buf, size_t len, mg_http_msg_t *m,
                           const mg_http_limits_t *lim, mg_method_t req_method)
{
    size_t max_sl, max_hb;
    uint32_t max_n;
    limits(lim, &max_sl, &max_hb, &max_n);
    int hl = scan_head(buf, len, m, max_sl, max_hb, max_n, 0, true);
    if (hl <= 0)
        return hl < 0 ? -502 : 0;
    int rc = parse_response(buf, hl, m, max_n, req_method);
    return rc < 0 ? -502 : rc;
}

const mg_http_header_t *mg_http_find(const mg_http_msg_t *m, mg_slice_t name)
{
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const mg_http_header_t *h = &m->headers[i];
        if (h->name.n == name.n && strncasecmp(h->name.p, name.p, name.n) == 0)
            return h;
    }
    return NULL;
}

/* ---- chunked transfer coding ---- */

enum {
    CK_SIZE0 = 0,   /* first hex digit of chunk-size */
    CK_SIZE,        /* more hex digits, ';', BWS or CR */
    CK_SIZE_WS,     /* BWS after chunk-size: must lead to ';' */
    CK_EXT_NAME0,   /* after ';': BWS then ext-name */
    CK_EXT_NAME,    /* in ext-name */
    CK_EXT_NAME_WS, /* BWS after ext-name: '=' or ';' */
    CK_EXT_VAL0,    /* after '=': BWS then token or quoted-string */
    CK_EXT_VTOK,    /* in token ext-val */
    CK_EXT_VQ,      /* in quoted-string */
    CK_EXT_VQ_ESC,  /* after backslash in quoted-string */
    CK_EXT_AFTER,   /* after closing quote */
    CK_EXT_SEMI_WS, /* BWS after ext-val: must lead to ';' */
    CK_SIZE_LF,     /* CR seen at end of chunk-size line */
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TR0,         /* start of a trailer line (or the final CRLF) */
    CK_TR_NAME,
    CK_TR_VAL,
    CK_TR_LF,
    CK_END_LF,      /* CR of the final empty line seen */
    CK_DONE,
    CK_ERROR,
};

#define CK_FAIL() do { c->state = CK_ERROR; return -400; } while (0)

ssize_t mg_chunked_decode(mg_chunked_t *c, const char *buf, size_t len,
                          mg_slice_t *out, size_t maxout, size_t *nout, int *done)
{
    size_t i = 0;
    *nout = 0;
    *done = 0;
    while (i < len) {
        int st = c->state;
        if (st == CK_DATA) {
            if (*nout >= maxout)
                break;
            size_t take = len - i;
            if ((uint64_t)take > c->remaining)
                take = (size_t)c->remaining;
            out[(*nout)++] = mg_slice(buf + i, take);
            i += take;
            c->remaining -= take;
            if (c->remaining == 0)
                c->state = CK_DATA_CR;
            continue;
        }
        if (st == CK_TR_VAL) {
            /* fast path over a trailer value */
            size_t k = i;
            while (k < len && IS(buf[k], C_VALUE))
                k++;
            size_t adv = k - i;
            if (adv > CHUNK_TRAILER_BYTES_MAX || c->aux + adv > CHUNK_TRAILER_BYTES_MAX)
                CK_FAIL();
            c->aux += (uint32_t)adv;
            i = k;
            if (i == len)
                break;
        }
        char ch = buf[i++];
        if (st >= CK_SIZE_WS && st <= CK_EXT_SEMI_WS) {
            if (++c->aux > CHUNK_EXT_MAX)
                CK_FAIL();
        } else if (st >= CK_TR0 && st <= CK_END_LF) {
            if (++c->aux > CHUNK_TRAILER_BYTES_MAX)
                CK_FAIL();
        }
        switch (st) {
        case CK_SIZE0:
        case CK_SIZE:
            if (IS(ch, C_HEX)) {
                if (++c->aux > 16)
                    CK_FAIL();
                unsigned d = (ch <= '9') ? (unsigned)(ch - '0') : (unsigned)((ch | 0x20) - 'a' + 10);
                c->remaining = (c->remaining << 4) | d;
                c->state = CK_SIZE;
                break;
            }
            if (st == CK_SIZE0)
                CK_FAIL();
            if (c->remaining > (uint64_t)INT64_MAX)
                CK_FAIL();
            c->aux = 0;
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (ch == ';')
                c->state = CK_EXT_NAME0, c->aux = 1;
            else if (OWS(ch))
                c->state = CK_SIZE_WS, c->aux = 1;
            else
                CK_FAIL();
            break;
        case CK_SIZE_WS:
        case CK_EXT_SEMI_WS:
            if (ch == ';')
                c->state = CK_EXT_NAME0;
            else if (!OWS(ch))
                CK_FAIL();
            break;
        case CK_EXT_NAME0:
            if (IS(ch, C_TCHAR))
                c->state = CK_EXT_NAME;
            else if (!OWS(ch))
                CK_FAIL();
            break;
        case CK_EXT_NAME:
            if (IS(ch, C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (ch == ';')
                c->state = CK_EXT_NAME0;
            else if (ch == '=')
                c->state = CK_EXT_VAL0;
            else if (OWS(ch))
                c->state = CK_EXT_NAME_WS;
            else
                CK_FAIL();
            break;
        case CK_EXT_NAME_WS:
            if (ch == ';')
                c->state = CK_EXT_NAME0;
            else if (ch == '=')
                c->state = CK_EXT_VAL0;
            else if (!OWS(ch))
                CK_FAIL();
            break;
        case CK_EXT_VAL0:
            if (IS(ch, C_TCHAR))
                c->state = CK_EXT_VTOK;
            else if (ch == '"')
                c->state = CK_EXT_VQ;
            else if (!OWS(ch))
                CK_FAIL();
            break;
        case CK_EXT_VTOK:
            if (IS(ch, C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (ch == ';')
                c->state = CK_EXT_NAME0;
            else if (OWS(ch))
                c->state = CK_EXT_SEMI_WS;
            else
                CK_FAIL();
            break;
        case CK_EXT_VQ:
            if (ch == '"')
                c->state = CK_EXT_AFTER;
            else if (ch == '\\')
                c->state = CK_EXT_VQ_ESC;
            else if (!IS(ch, C_QDTEXT))
                CK_FAIL();
            break;
        case CK_EXT_VQ_ESC:
            if (!IS(ch, C_VALUE))
                CK_FAIL();
            c->state = CK_EXT_VQ;
            break;
        case CK_EXT_AFTER:
            if (ch == '\r')
                c->state = CK_SIZE_LF;
            else if (ch == ';')
                c->state = CK_EXT_NAME0;
            else if (OWS(ch))
                c->state = CK_EXT_SEMI_WS;
            else
                CK_FAIL();
            break;
        case CK_SIZE_LF:
            if (ch != '\n')
                CK_FAIL();
            c->aux = 0;
            if (c->remaining == 0) {
                c->state = CK_TR0;
            } else {
                c->state = CK_DATA;
            }
            break;
        case CK_DATA_CR:
            if (ch != '\r')
                CK_FAIL();
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n')
                CK_FAIL();
            c->state = CK_SIZE0;
            c->aux = 0;
            c->remaining = 0;
            break;
        case CK_TR0:
            if (ch == '\r') {
                c->state = CK_END_LF;
            } else if (IS(ch, C_TCHAR)) {
                if (++c->ntrailers > CHUNK_TRAILERS_MAX)
                    CK_FAIL();
                c->state = CK_TR_NAME;
            } else {
                CK_FAIL();
            }
            break;
        case CK_TR_NAME:
            if (ch == ':')
                c->state = CK_TR_VAL;
            else if (!IS(ch, C_TCHAR))
                CK_FAIL();
            break;
        case CK_TR_VAL:
            /* the fast path stopped on a non-value byte */
            if (ch != '\r')
                CK_FAIL();
            c->state = CK_TR_LF;
            break;
        case CK_TR_LF:
            if (ch != '\n')
                CK_FAIL();
            c->state = CK_TR0;
            break;
        case CK_END_LF:
            if (ch != '\n')
                CK_FAIL();
            c->state = CK_DONE;
            *done = 1;
            return (ssize_t)i;
        case CK_DONE:
            *done = 1;
            return (ssize_t)(i - 1);
        default:
            CK_FAIL();
        }
    }
    if (c->state == CK_DONE)
        *done = 1;
    else if (c->state == CK_ERROR)
        return -400;
    return (ssize_t)i;
}
