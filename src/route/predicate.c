/* predicate: the Spring Cloud Gateway route predicates. See predicate.h.
 * Each has a compile function (config -> immutable state, run once per
 * config load) and a test function (state x request -> bool) that runs on
 * a worker for each candidate route and never allocates. Semantics follow
 * Spring's RoutePredicateFactory classes of the same names. */
#include "route/predicate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "route/rx.h"

/* ---- shared helpers ---- */

static void vars_append(mg_path_vars_t *dst, const mg_path_vars_t *src)
{
    for (size_t i = 0; i < src->n && dst->n < MG_PATH_MAX_VARS; i++) {
        dst->name[dst->n] = src->name[i];
        dst->value[dst->n] = src->value[i];
        dst->n++;
    }
}

static mg_slice_t req_path(const mg_http_msg_t *m)
{
    return m->path.p ? m->path : mg_slice("", 0);
}

/* Percent-decode s (and '+' as space when plus) into buf; returns length, or
 * SIZE_MAX when it does not fit. */
static size_t pct_decode(mg_slice_t s, char *buf, size_t cap, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '%' && i + 2 < s.n + 0 && isxdigit((unsigned char)s.p[i + 1]) && isxdigit((unsigned char)s.p[i + 2])) {
            char h[3] = { s.p[i + 1], s.p[i + 2], 0 };
            c = (char)strtol(h, NULL, 16);
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (o >= cap) return SIZE_MAX;
        buf[o++] = c;
    }
    return o;
}

/* ---- Path ---- */

typedef struct {
    size_t n;
    mg_path_pattern_t **p;
    bool match_trailing_slash;
} path_st;

static void path_free(void *st)
{
    path_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) mg_path_free(s->p[i]);
    free(s->p);
    free(s);
}

static int path_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, "patterns");
    path_st *s = calloc(1, sizeof *s);
    if (!s || !(s->p = calloc(a->nvalues ? a->nvalues : 1, sizeof *s->p))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->match_trailing_slash = true;
    const char *mts = mg_plugin_str(pc, "matchTrailingSlash", NULL);
    if (mts && mg_parse_bool(mts, &s->match_trailing_slash) != 0) {
        path_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "matchTrailingSlash", "matchTrailingSlash: expected true or false, got '%.40s'", mts);
    }
    for (size_t i = 0; i < a->nvalues; i++) {
        char msg[256];
        if (mg_path_compile(a->values[i], &s->p[s->n], msg, sizeof msg) != 0) {
            path_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "bad path pattern '%.80s': %s", a->values[i], msg);
        }
        s->n++;
    }
    *out = s;
    return 0;
}

static bool path_test(const void *st, mg_pred_env_t *env)
{
    const path_st *s = st;
    mg_slice_t p = req_path(env->ctx->req);
    mg_path_vars_t tmp;
    for (size_t i = 0; i < s->n; i++) {
        if (!mg_path_match(s->p[i], p.p, p.n, &tmp)) continue;
        if (!s->match_trailing_slash && p.n > 1 && p.p[p.n - 1] == '/' && !mg_path_has_tail(s->p[i])) {
            const char *t = mg_path_pattern_text(s->p[i]);
            if (t[strlen(t) - 1] != '/') continue;
        }
        vars_append(env->vars, &tmp);
        return true;
    }
    return false;
}

size_t mg_pred_path_count(const void *state) { return ((const path_st *)state)->n; }
const mg_path_pattern_t *mg_pred_path_at(const void *state, size_t i) { return ((const path_st *)state)->p[i]; }

const mg_plugin_spec_t mg_pred_path = {
    .name = "Path", .kind = MG_PLUGIN_PREDICATE,
    .args = { { "patterns", MG_ARG_REQUIRED | MG_ARG_LIST }, { "matchTrailingSlash", 0 } },
    .shortcut = MG_SHORTCUT_GATHER_FLAG, .compile = path_compile, .free = path_free, .test = path_test,
};

/* ---- Host: ant-style patterns with '.' separators ---- */

typedef enum { HS_LIT, HS_GLOB, HS_ANY, HS_CAPTURE, HS_REGEX } hseg_kind_t;

typedef struct {
    hseg_kind_t kind;
    char *text; /* literal / glob (lowercased) */
    size_t len;
    int var;    /* capture / regex */
    mg_rx_t rx;
} hseg_t;

typedef struct {
    hseg_t *segs;
    size_t n;
    size_t nvars;
    mg_slice_t names[MG_PATH_MAX_VARS];
    char *text;
} hpat_t;

typedef struct {
    hpat_t *p;
    size_t n;
} host_st;

#define MAX_LABELS 128

static void host_free(void *st)
{
    host_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        for (size_t j = 0; j < s->p[i].n; j++) {
            free(s->p[i].segs[j].text);
            if (s->p[i].segs[j].kind == HS_REGEX) mg_rx_free(&s->p[i].segs[j].rx);
        }
        free(s->p[i].segs);
        free(s->p[i].text);
    }
    free(s->p);
    free(s);
}

static int hpat_compile(hpat_t *hp, const char *pat, char *msg, size_t msglen)
{
    size_t n = strlen(pat), nseg = 1;
    if (n == 0) return snprintf(msg, msglen, "empty host pattern"), -1;
    if (!(hp->text = strdup(pat))) return snprintf(msg, msglen, "out of memory"), -1;
    /* split on '.' outside braces */
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        if (pat[i] == '{') depth++;
        else if (pat[i] == '}') depth--;
        else if (pat[i] == '.' && depth == 0) nseg++;
    }
    if (nseg > MAX_LABELS) return snprintf(msg, msglen, "too many labels"), -1;
    if (!(hp->segs = calloc(nseg, sizeof *hp->segs))) return snprintf(msg, msglen, "out of memory"), -1;
    size_t s = 0;
    depth = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && pat[i] == '{') depth++;
        else if (i < n && pat[i] == '}') depth--;
        if (i < n && !(pat[i] == '.' && depth == 0)) continue;
        const char *t = hp->text + s;
        size_t len = i - s;
        hseg_t *g = &hp->segs[hp->n++];
        if (len == 2 && t[0] == '*' && t[1] == '*') {
            g->kind = HS_ANY;
        } else if (len >= 2 && t[0] == '{' && t[len - 1] == '}') {
            const char *colon = memchr(t, ':', len);
            size_t nl = colon ? (size_t)(colon - t - 1) : len - 2;
            if (nl == 0) return snprintf(msg, msglen, "empty variable name"), -1;
            if (hp->nvars >= MG_PATH_MAX_VARS) return snprintf(msg, msglen, "too many variables"), -1;
            g->var = (int)hp->nvars;
            hp->names[hp->nvars++] = mg_slice(t + 1, nl);
            if (colon) {
                char *re = strndup(colon + 1, len - nl - 3);
                if (!re) return snprintf(msg, msglen, "out of memory"), -1;
                int rc = mg_rx_compile(&g->rx, re, true, msg, msglen);
                free(re);
                if (rc) return -1;
                g->kind = HS_REGEX;
            } else {
                g->kind = HS_CAPTURE;
            }
        } else {
            if (memchr(t, '{', len) || memchr(t, '}', len))
                return snprintf(msg, msglen, "a variable must be a whole label ('{name}.example.org')"), -1;
            if (len == 0) return snprintf(msg, msglen, "empty label"), -1;
            if (!(g->text = strndup(t, len))) return snprintf(msg, msglen, "out of memory"), -1;
            for (size_t k = 0; k < len; k++) g->text[k] = (char)tolower((unsigned char)g->text[k]);
            g->len = len;
            g->kind = (memchr(t, '*', len) || memchr(t, '?', len)) ? HS_GLOB : HS_LIT;
        }
        s = i + 1;
    }
    if (depth != 0) return snprintf(msg, msglen, "unbalanced braces"), -1;
    return 0;
}

static int host_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, "patterns");
    host_st *s = calloc(1, sizeof *s);
    if (!s || !(s->p = calloc(a->nvalues ? a->nvalues : 1, sizeof *s->p))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    for (size_t i = 0; i < a->nvalues; i++) {
        char msg[256];
        s->n++;
        if (hpat_compile(&s->p[i], a->values[i], msg, sizeof msg) != 0) {
            host_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "bad host pattern '%.80s': %s", a->values[i], msg);
        }
    }
    *out = s;
    return 0;
}

static bool glob_ci(const char *g, size_t gn, const char *s, size_t sn)
{
    size_t gi = 0, si = 0, star = SIZE_MAX, mark = 0;
    while (si < sn) {
        if (gi < gn && (g[gi] == '?' || g[gi] == tolower((unsigned char)s[si]))) {
            gi++;
            si++;
        } else if (gi < gn && g[gi] == '*') {
            star = gi++;
            mark = si;
        } else if (star != SIZE_MAX) {
            gi = star + 1;
            si = ++mark;
        } else {
            return false;
        }
    }
    while (gi < gn && g[gi] == '*') gi++;
    return gi == gn;
}

static bool hmatch(const hpat_t *hp, size_t pi, const mg_slice_t *lab, size_t nl, size_t li, mg_slice_t *vals,
                   unsigned budget[1])
{
    if (budget[0]-- == 0) return false;
    if (pi == hp->n) return li == nl;
    const hseg_t *g = &hp->segs[pi];
    if (g->kind == HS_ANY) {
        for (size_t k = li; k <= nl; k++)
            if (hmatch(hp, pi + 1, lab, nl, k, vals, budget)) return true;
        return false;
    }
    if (li == nl) return false;
    mg_slice_t l = lab[li];
    switch (g->kind) {
    case HS_LIT:
        if (l.n != g->len || strncasecmp(l.p, g->text, l.n) != 0) return false;
        break;
    case HS_GLOB:
        if (!glob_ci(g->text, g->len, l.p, l.n)) return false;
        break;
    case HS_CAPTURE:
        if (l.n == 0) return false;
        vals[g->var] = l;
        break;
    case HS_REGEX:
        if (!mg_rx_match(&g->rx, l)) return false;
        vals[g->var] = l;
        break;
    case HS_ANY:
        break;
    }
    return hmatch(hp, pi + 1, lab, nl, li + 1, vals, budget);
}

/* Host header value without the port. */
static mg_slice_t host_of(const mg_http_msg_t *m)
{
    mg_slice_t h = m->host.n ? m->host : m->authority;
    if (h.n && h.p[0] == '[') {
        const char *rb = memchr(h.p, ']', h.n);
        return rb ? mg_slice(h.p, (size_t)(rb - h.p) + 1) : h;
    }
    for (size_t i = h.n; i-- > 0;) {
        if (h.p[i] == ':') return mg_slice(h.p, i);
        if (h.p[i] < '0' || h.p[i] > '9') break;
    }
    return h;
}

static bool host_test(const void *st, mg_pred_env_t *env)
{
    const host_st *s = st;
    mg_slice_t h = host_of(env->ctx->req);
    if (h.n == 0) return false;
    mg_slice_t lab[MAX_LABELS];
    size_t nl = 0, b = 0;
    for (size_t i = 0; i <= h.n; i++) {
        if (i < h.n && h.p[i] != '.') continue;
        if (nl == MAX_LABELS) return false;
        lab[nl++] = mg_slice(h.p + b, i - b);
        b = i + 1;
    }
    for (size_t i = 0; i < s->n; i++) {
        mg_slice_t vals[MG_PATH_MAX_VARS];
        unsigned budget[1] = { 4096 };
        if (!hmatch(&s->p[i], 0, lab, nl, 0, vals, budget)) continue;
        mg_path_vars_t v = { .n = s->p[i].nvars };
        for (size_t k = 0; k < v.n; k++) {
            v.name[k] = s->p[i].names[k];
            v.value[k] = vals[k];
        }
        vars_append(env->vars, &v);
        return true;
    }
    return false;
}

const mg_plugin_spec_t mg_pred_host = {
    .name = "Host", .kind = MG_PLUGIN_PREDICATE, .args = { { "patterns", MG_ARG_REQUIRED | MG_ARG_LIST } },
    .shortcut = MG_SHORTCUT_GATHER, .compile = host_compile, .free = host_free, .test = host_test,
};

/* ---- Method ---- */

typedef struct {
    size_t n;
    char **m;
    size_t *len;
} method_st;

static void method_free(void *st)
{
    method_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->m[i]);
    free(s->m);
    free(s->len);
    free(s);
}

static int method_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, "methods");
    method_st *s = calloc(1, sizeof *s);
    size_t n = a->nvalues ? a->nvalues : 1;
    if (!s || !(s->m = calloc(n, sizeof *s->m)) || !(s->len = calloc(n, sizeof *s->len))) {
        method_free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    for (size_t i = 0; i < a->nvalues; i++) {
        const char *v = a->values[i];
        size_t l = strlen(v);
        bool ok = l > 0 && l <= 32;
        for (size_t k = 0; ok && k < l; k++) ok = isalpha((unsigned char)v[k]) || v[k] == '-' || v[k] == '_';
        if (!ok) {
            method_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "bad HTTP method '%.40s'", v);
        }
        if (!(s->m[i] = strdup(v))) {
            method_free(s);
            return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        }
        for (size_t k = 0; k < l; k++) s->m[i][k] = (char)toupper((unsigned char)v[k]);
        s->len[i] = l;
        s->n++;
    }
    *out = s;
    return 0;
}

static bool method_test(const void *st, mg_pred_env_t *env)
{
    const method_st *s = st;
    mg_slice_t m = env->ctx->req->method;
    for (size_t i = 0; i < s->n; i++)
        if (m.n == s->len[i] && memcmp(m.p, s->m[i], m.n) == 0) return true;
    return false;
}

const mg_plugin_spec_t mg_pred_method = {
    .name = "Method", .kind = MG_PLUGIN_PREDICATE, .args = { { "methods", MG_ARG_REQUIRED | MG_ARG_LIST } },
    .shortcut = MG_SHORTCUT_GATHER, .compile = method_compile, .free = method_free, .test = method_test,
};

/* ---- Header, Query, Cookie: a name and an optional whole-value regex ---- */

typedef struct {
    char *name;
    size_t len;
    bool has_re;
    mg_rx_t rx;
} kv_st;

static void kv_free(void *st)
{
    kv_st *s = st;
    if (!s) return;
    free(s->name);
    if (s->has_re) mg_rx_free(&s->rx);
    free(s);
}

static int kv_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen, const char *key)
{
    kv_st *s = calloc(1, sizeof *s);
    const char *name = mg_plugin_str(pc, key, NULL), *re = mg_plugin_str(pc, "regexp", NULL);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->len = strlen(name);
    if (s->len == 0) {
        kv_free(s);
        return mg_plugin_arg_error(err, errlen, pc, key, "%s: must not be empty", key);
    }
    if (re) {
        char msg[256];
        if (mg_rx_compile(&s->rx, re, true, msg, sizeof msg) != 0) {
            kv_free(s);
            return mg_plugin_arg_error(err, errlen, pc, "regexp", "%s", msg);
        }
        s->has_re = true;
    }
    *out = s;
    return 0;
}

static int header_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return kv_compile(pc, out, err, errlen, "header");
}
static int query_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return kv_compile(pc, out, err, errlen, "param");
}
static int cookie_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return kv_compile(pc, out, err, errlen, "name");
}

static bool header_test(const void *st, mg_pred_env_t *env)
{
    const kv_st *s = st;
    const mg_http_msg_t *m = env->ctx->req;
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const mg_http_header_t *h = &m->headers[i];
        if (h->name.n != s->len || strncasecmp(h->name.p, s->name, s->len) != 0) continue;
        if (!s->has_re || mg_rx_match(&s->rx, h->value)) return true;
    }
    return false;
}

static bool query_test(const void *st, mg_pred_env_t *env)
{
    const kv_st *s = st;
    mg_slice_t q = env->ctx->req->query;
    if (!q.p) return false;
    size_t b = 0;
    for (size_t i = 0; i <= q.n; i++) {
        if (i < q.n && q.p[i] != '&') continue;
        mg_slice_t pair = mg_slice(q.p + b, i - b);
        b = i + 1;
        if (pair.n == 0) continue;
        const char *eq = memchr(pair.p, '=', pair.n);
        mg_slice_t k = mg_slice(pair.p, eq ? (size_t)(eq - pair.p) : pair.n);
        mg_slice_t v = eq ? mg_slice(eq + 1, pair.n - k.n - 1) : mg_slice("", 0);
        char kb[256], vb[1024];
        size_t kn = pct_decode(k, kb, sizeof kb, true);
        if (kn != s->len || memcmp(kb, s->name, kn) != 0) continue;
        if (!s->has_re) return true;
        size_t vn = pct_decode(v, vb, sizeof vb, true);
        if (vn != SIZE_MAX && mg_rx_match(&s->rx, mg_slice(vb, vn))) return true;
    }
    return false;
}

static bool cookie_test(const void *st, mg_pred_env_t *env)
{
    const kv_st *s = st;
    const mg_http_msg_t *m = env->ctx->req;
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const mg_http_header_t *h = &m->headers[i];
        if (!mg_slice_caseeq_cstr(h->name, "Cookie")) continue;
        const char *p = h->value.p, *e = p + h->value.n;
        while (p < e) {
            while (p < e && (*p == ' ' || *p == '\t' || *p == ';')) p++;
            const char *c = p;
            while (p < e && *p != ';') p++;
            mg_slice_t pair = mg_slice(c, (size_t)(p - c));
            const char *eq = memchr(pair.p, '=', pair.n);
            if (!eq) continue;
            mg_slice_t k = mg_slice(pair.p, (size_t)(eq - pair.p));
            mg_slice_t v = mg_slice(eq + 1, pair.n - k.n - 1);
            while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t')) v.n--;
            if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"') v = mg_slice(v.p + 1, v.n - 2);
            if (k.n != s->len || memcmp(k.p, s->name, k.n) != 0) continue;
            if (!s->has_re || mg_rx_match(&s->rx, v)) return true;
        }
    }
    return false;
}

const mg_plugin_spec_t mg_pred_header = {
    .name = "Header", .kind = MG_PLUGIN_PREDICATE, .args = { { "header", MG_ARG_REQUIRED }, { "regexp", 0 } },
    .compile = header_compile, .free = kv_free, .test = header_test,
};
const mg_plugin_spec_t mg_pred_query = {
    .name = "Query", .kind = MG_PLUGIN_PREDICATE, .args = { { "param", MG_ARG_REQUIRED }, { "regexp", 0 } },
    .compile = query_compile, .free = kv_free, .test = query_test,
};
const mg_plugin_spec_t mg_pred_cookie = {
    .name = "Cookie", .kind = MG_PLUGIN_PREDICATE,
    .args = { { "name", MG_ARG_REQUIRED }, { "regexp", MG_ARG_REQUIRED } },
    .compile = cookie_compile, .free = kv_free, .test = cookie_test,
};

/* ---- After, Before, Between ---- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static bool num(const char **p, int n, int *out)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        if ((*p)[i] < '0' || (*p)[i] > '9') return false;
        x = x * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = x;
    return true;
}

int mg_parse_zoned_datetime(const char *s, int64_t *ms)
{
    const char *p = s;
    bool neg = *p == '-';
    size_t nd = strspn(p + neg, "0123456789");
    if (nd > 0 && nd <= 15 && p[neg + nd] == '\0') { /* epoch milliseconds, as Spring also accepts */
        int64_t x = strtoll(p, NULL, 10);
        *ms = x;
        return 0;
    }
    int y, mo, d, h, mi, sec = 0, oh = 0, om = 0;
    int64_t frac_ms = 0;
    if (!num(&p, 4, &y) || *p++ != '-' || !num(&p, 2, &mo) || *p++ != '-' || !num(&p, 2, &d) || *p++ != 'T' ||
        !num(&p, 2, &h) || *p++ != ':' || !num(&p, 2, &mi))
        return -1;
    if (*p == ':') {
        p++;
        if (!num(&p, 2, &sec)) return -1;
        if (*p == '.') {
            p++;
            int k = 0;
            int64_t scale = 100;
            while (*p >= '0' && *p <= '9') {
                if (k++ < 3) frac_ms += (*p - '0') * scale;
                scale /= 10;
                p++;
            }
            if (k == 0 || k > 9) return -1;
        }
    }
    int sign = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p++ == '-' ? -1 : 1;
        if (!num(&p, 2, &oh)) return -1;
        if (*p == ':') p++;
        if (!num(&p, 2, &om)) return -1;
    } else {
        return -1;
    }
    if (*p == '[') {
        const char *rb = strchr(p, ']');
        if (!rb || rb == p + 1 || rb[1] != '\0') return -1;
        p = rb + 1;
    }
    if (*p) return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 || oh > 18 || om > 59) return -1;
    int64_t days = days_from_civil(y, (unsigned)mo, (unsigned)d);
    int64_t t = ((days * 24 + h) * 60 + mi) * 60 + sec;
    t -= sign * (oh * 3600 + om * 60);
    *ms = t * 1000 + frac_ms;
    return 0;
}

typedef struct {
    int64_t a, b; /* After: a; Before: b; Between: [a, b) */
    int kind;     /* 0 after, 1 before, 2 between */
} time_st;

static int64_t now_ms(const mg_match_ctx_t *ctx)
{
    if (ctx->now_ms) return ctx->now_ms;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int time_arg(const mg_plugin_cfg_t *pc, const char *key, int64_t *out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, key, "");
    if (mg_parse_zoned_datetime(v, out) != 0)
        return mg_plugin_arg_error(err, errlen, pc, key,
                                   "%s: bad date-time '%.60s' (expected e.g. 2017-01-20T17:42:47.789-07:00[America/Denver])",
                                   key, v);
    return 0;
}

static int time_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen, int kind)
{
    time_st *s = calloc(1, sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    s->kind = kind;
    int rc = 0;
    if (kind == 0) rc = time_arg(pc, "datetime", &s->a, err, errlen);
    else if (kind == 1) rc = time_arg(pc, "datetime", &s->b, err, errlen);
    else {
        rc = time_arg(pc, "datetime1", &s->a, err, errlen);
        if (rc == 0) rc = time_arg(pc, "datetime2", &s->b, err, errlen);
        if (rc == 0 && s->b <= s->a)
            rc = mg_plugin_arg_error(err, errlen, pc, "datetime2", "datetime2 must be after datetime1");
    }
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static int after_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return time_compile(pc, out, err, errlen, 0);
}
static int before_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return time_compile(pc, out, err, errlen, 1);
}
static int between_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return time_compile(pc, out, err, errlen, 2);
}

static bool time_test(const void *st, mg_pred_env_t *env)
{
    const time_st *s = st;
    int64_t now = now_ms(env->ctx);
    switch (s->kind) {
    case 0: return now > s->a;
    case 1: return now < s->b;
    default: return now > s->a && now < s->b;
    }
}

const mg_plugin_spec_t mg_pred_after = {
    .name = "After", .kind = MG_PLUGIN_PREDICATE, .args = { { "datetime", MG_ARG_REQUIRED } },
    .compile = after_compile, .free = free, .test = time_test,
};
const mg_plugin_spec_t mg_pred_before = {
    .name = "Before", .kind = MG_PLUGIN_PREDICATE, .args = { { "datetime", MG_ARG_REQUIRED } },
    .compile = before_compile, .free = free, .test = time_test,
};
const mg_plugin_spec_t mg_pred_between = {
    .name = "Between", .kind = MG_PLUGIN_PREDICATE,
    .args = { { "datetime1", MG_ARG_REQUIRED }, { "datetime2", MG_ARG_REQUIRED } },
    .compile = between_compile, .free = free, .test = time_test,
};

/* ---- RemoteAddr, XForwardedRemoteAddr: CIDR lists ---- */

typedef struct {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned bits;
} cidr_t;

typedef struct {
    size_t n;
    cidr_t *c;
} cidr_st;

static void cidr_free(void *st)
{
    cidr_st *s = st;
    if (s) free(s->c);
    free(s);
}

static int parse_cidr(const char *v, cidr_t *c)
{
    char buf[64];
    const char *slash = strchr(v, '/');
    size_t al = slash ? (size_t)(slash - v) : strlen(v);
    if (al == 0 || al >= sizeof buf) return -1;
    memcpy(buf, v, al);
    buf[al] = '\0';
    if (inet_pton(AF_INET, buf, c->addr) == 1) {
        c->family = AF_INET;
        c->bits = 32;
    } else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
        c->family = AF_INET6;
        c->bits = 128;
    } else {
        return -1;
    }
    if (slash) {
        const char *b = slash + 1;
        size_t nd = strspn(b, "0123456789");
        if (nd == 0 || nd > 3 || b[nd]) return -1;
        unsigned x = (unsigned)atoi(b);
        if (x > c->bits) return -1;
        c->bits = x;
    }
    return 0;
}

static bool cidr_has(const cidr_t *c, int family, const uint8_t *a)
{
    uint8_t mapped[16];
    if (c->family == AF_INET && family == AF_INET6) { /* ::ffff:a.b.c.d */
        static const uint8_t pfx[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        if (memcmp(a, pfx, 12) != 0) return false;
        memcpy(mapped, a + 12, 4);
        a = mapped;
        family = AF_INET;
    }
    if (c->family != family) return false;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, full) != 0) return false;
    if (rest) {
        uint8_t mask = (uint8_t)(0xff << (8 - rest));
        if ((c->addr[full] & mask) != (a[full] & mask)) return false;
    }
    return true;
}

static int cidr_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, "sources");
    cidr_st *s = calloc(1, sizeof *s);
    if (!s || !(s->c = calloc(a->nvalues ? a->nvalues : 1, sizeof *s->c))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    for (size_t i = 0; i < a->nvalues; i++) {
        if (parse_cidr(a->values[i], &s->c[i]) != 0) {
            cidr_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "bad address or CIDR '%.60s' (expected e.g. 192.168.1.1/24)",
                                   a->values[i]);
        }
        s->n++;
    }
    *out = s;
    return 0;
}

static bool cidr_any(const cidr_st *s, int family, const uint8_t *a)
{
    for (size_t i = 0; i < s->n; i++)
        if (cidr_has(&s->c[i], family, a)) return true;
    return false;
}

static bool peer_test(const cidr_st *s, const struct sockaddr *sa)
{
    if (!sa) return false;
    if (sa->sa_family == AF_INET)
        return cidr_any(s, AF_INET, (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6)
        return cidr_any(s, AF_INET6, (const uint8_t *)&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
    return false;
}

static bool remote_test(const void *st, mg_pred_env_t *env) { return peer_test(st, env->ctx->peer); }

/* Spring's XForwardedRemoteAddressResolver.maxTrustedIndex(1): the last
 * X-Forwarded-For value (the one our own trusted hop appended); without the
 * header, the peer address. */
static bool xff_test(const void *st, mg_pred_env_t *env)
{
    const mg_http_msg_t *m = env->ctx->req;
    mg_slice_t last = MG_SLICE_NULL;
    for (uint32_t i = 0; i < m->nheaders; i++) {
        const mg_http_header_t *h = &m->headers[i];
        if (!mg_slice_caseeq_cstr(h->name, "X-Forwarded-For")) continue;
        const char *c = memrchr(h->value.p, ',', h->value.n);
        mg_slice_t v = c ? mg_slice(c + 1, h->value.n - (size_t)(c + 1 - h->value.p)) : h->value;
        while (v.n && (v.p[0] == ' ' || v.p[0] == '\t')) v = mg_slice(v.p + 1, v.n - 1);
        while (v.n && (v.p[v.n - 1] == ' ' || v.p[v.n - 1] == '\t')) v.n--;
        last = v;
    }
    if (!last.p) return peer_test(st, env->ctx->peer);
    char buf[64];
    uint8_t a[16];
    if (last.n == 0 || last.n >= sizeof buf) return false;
    memcpy(buf, last.p, last.n);
    buf[last.n] = '\0';
    if (inet_pton(AF_INET, buf, a) == 1) return cidr_any(st, AF_INET, a);
    if (inet_pton(AF_INET6, buf, a) == 1) return cidr_any(st, AF_INET6, a);
    return false;
}

const mg_plugin_spec_t mg_pred_remote_addr = {
    .name = "RemoteAddr", .kind = MG_PLUGIN_PREDICATE, .args = { { "sources", MG_ARG_REQUIRED | MG_ARG_LIST } },
    .shortcut = MG_SHORTCUT_GATHER, .compile = cidr_compile, .free = cidr_free, .test = remote_test,
};
const mg_plugin_spec_t mg_pred_xff_remote_addr = {
    .name = "XForwardedRemoteAddr", .kind = MG_PLUGIN_PREDICATE,
    .args = { { "sources", MG_ARG_REQUIRED | MG_ARG_LIST } }, .shortcut = MG_SHORTCUT_GATHER,
    .compile = cidr_compile, .free = cidr_free, .test = xff_test,
};

/* ---- Weight ---- */

typedef struct {
    char *group;
    uint32_t weight;
    uint32_t gid, slot;
} weight_st;

static void weight_free(void *st)
{
    weight_st *s = st;
    if (s) free(s->group);
    free(s);
}

static int weight_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *g = mg_plugin_str(pc, "group", ""), *w = mg_plugin_str(pc, "weight", "");
    size_t nd = strspn(w, "0123456789");
    if (!*g) return mg_plugin_arg_error(err, errlen, pc, "group", "group: must not be empty");
    if (nd == 0 || nd > 9 || w[nd])
        return mg_plugin_arg_error(err, errlen, pc, "weight", "weight: expected an integer 0..999999999, got '%.40s'", w);
    weight_st *s = calloc(1, sizeof *s);
    if (!s || !(s->group = strdup(g))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->weight = (uint32_t)strtoul(w, NULL, 10);
    *out = s;
    return 0;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* One draw per request per group: the first Weight predicate of a group
 * evaluated in a request picks the group's route; later ones reuse it. */
static bool weight_test(const void *st, mg_pred_env_t *env)
{
    const weight_st *s = st;
    uint32_t g = s->gid;
    if (!env->groups || g >= MG_MAX_WEIGHT_GROUPS) return false;
    if (!(env->drawn[g / 64] & (1ull << (g % 64)))) {
        const mg_weight_group_t *wg = &env->groups[g];
        uint64_t total = wg->nslots ? wg->cum[wg->nslots - 1] : 0;
        uint16_t pick = UINT16_MAX;
        if (total) {
            uint64_t r = xorshift(env->ctx->rng ? env->ctx->rng : &env->local_rng) % total;
            for (uint32_t i = 0; i < wg->nslots; i++)
                if (r < wg->cum[i]) {
                    pick = (uint16_t)i;
                    break;
                }
        }
        env->chosen[g] = pick;
        env->drawn[g / 64] |= 1ull << (g % 64);
    }
    return env->chosen[g] == s->slot;
}

const char *mg_pred_weight_group(const void *state) { return ((const weight_st *)state)->group; }
uint32_t mg_pred_weight_value(const void *state) { return ((const weight_st *)state)->weight; }
void mg_pred_weight_assign(void *state, uint32_t gid, uint32_t slot)
{
    ((weight_st *)state)->gid = gid;
    ((weight_st *)state)->slot = slot;
}

const mg_plugin_spec_t mg_pred_weight = {
    .name = "Weight", .kind = MG_PLUGIN_PREDICATE,
    .args = { { "group", MG_ARG_REQUIRED }, { "weight", MG_ARG_REQUIRED } },
    .compile = weight_compile, .free = weight_free, .test = weight_test,
};
