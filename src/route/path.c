/* path: Spring PathPattern compiled into a short list of elements.
 *
 * A pattern is cut at '/' into segments. Runs of plain literal segments
 * (with their separators) become one LIT element matched with one memcmp;
 * every other segment becomes one segment element (?-literal, "*", glob,
 * {capture}, regex) that consumes the path up to the next '/'. A last
 * segment of ** or {*name} is a tail that accepts "" or "/...". Matching
 * walks the elements once, never backtracks across segments and never
 * allocates (POSIX regexec aside). Pure literal patterns and a literal
 * prefix followed by ** take a memcmp-only fast path. Matching is on the
 * raw (undecoded) path. */
#include "route/path.h"

#include <ctype.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "route/rx.h"

#define MAX_GROUPS 32 /* regmatch_t slots on the stack per regex element */

typedef enum {
    EL_LIT,     /* bytes incl. '/', memcmp */
    EL_QLIT,    /* one segment of the same length; '?' matches any byte */
    EL_STAR,    /* "*": one segment, non-empty unless the path ends there */
    EL_GLOB,    /* one segment of literals, '?' and '*' */
    EL_CAPTURE, /* "{name}": one non-empty segment */
    EL_REGEX,   /* "{name:re}" alone, or a segment mixing captures with other parts */
} el_kind_t;

typedef enum { TAIL_NONE, TAIL_REST, TAIL_CAPTURE } tail_kind_t;
typedef enum { FAST_NONE, FAST_EXACT, FAST_PREFIX } fast_kind_t;

typedef struct {
    el_kind_t kind;
    uint32_t off, len; /* LIT/QLIT/GLOB: text[off..off+len) */
    uint8_t var;       /* CAPTURE: var index; REGEX: index of its first var */
    uint8_t nvars;     /* REGEX */
    bool whole;        /* REGEX "{name:re}" alone: segment must be non-empty */
    regex_t *re;
    size_t nmatch;                    /* REGEX: re_nsub + 1 */
    uint8_t group[MG_PATH_MAX_VARS];  /* REGEX: subexpression of each of its vars */
} el_t;

struct mg_path_pattern {
    char *text;
    el_t *els;
    size_t nels;
    tail_kind_t tail;
    uint8_t tail_var;
    bool trailing_ok; /* last element ends inside a segment: "/a" matches "/a/" */
    fast_kind_t fast;
    size_t nvars;
    mg_slice_t names[MG_PATH_MAX_VARS]; /* into text */
};


/* regex building: see rx.h */
#define sbuf_t mg_sbuf_t
#define sb_putc mg_sb_putc
#define sb_puts mg_sb_puts
#define sb_lit mg_sb_lit
#define translate_regex(b, re, n, groups, err, errlen) mg_rx_translate(b, re, n, groups, NULL, err, errlen)

/* ---- compile ---- */

typedef struct {
    size_t name_off, name_len;
    size_t re_off, re_len; /* re_len == 0 && !has_re: no constraint */
    bool has_re;
} varspec_t;

static int add_var(mg_path_pattern_t *p, size_t off, size_t len, char *err, size_t errlen)
{
    mg_slice_t name = mg_slice(p->text + off, len);
    if (len == 0) return mg_errf(err, errlen, "empty variable name");
    for (size_t i = 0; i < len; i++)
        if (strchr("/{}*", name.p[i]))
            return mg_errf(err, errlen, "bad character '%c' in variable name", name.p[i]);
    for (size_t i = 0; i < p->nvars; i++)
        if (mg_slice_eq(p->names[i], name))
            return mg_errf(err, errlen, "duplicate variable '%.*s'", (int)len, name.p);
    if (p->nvars >= MG_PATH_MAX_VARS)
        return mg_errf(err, errlen, "too many variables (at most %d)", MG_PATH_MAX_VARS);
    p->names[p->nvars++] = name;
    return 0;
}

/* Scan "{...}" starting at text[i] == '{' within [i, end). Braces nest inside
 * the regex part (e.g. "{id:\d{3}}"). Returns index just after the '}'. */
static int scan_var(const char *t, size_t i, size_t end, varspec_t *v, size_t *next,
                    char *err, size_t errlen)
{
    size_t j = i + 1;
    v->name_off = j;
    while (j < end && t[j] != ':' && t[j] != '}' && t[j] != '{') j++;
    if (j >= end) return mg_errf(err, errlen, "unclosed '{'");
    if (t[j] == '{') return mg_errf(err, errlen, "unexpected '{' in variable name");
    v->name_len = j - v->name_off;
    v->has_re = false;
    v->re_off = v->re_len = 0;
    if (t[j] == ':') {
        int depth = 0;
        size_t k = ++j;
        v->has_re = true;
        v->re_off = k;
        for (; k < end; k++) {
            if (t[k] == '\\') { k++; continue; }
            if (t[k] == '{') depth++;
            else if (t[k] == '}') { if (depth == 0) break; depth--; }
        }
        if (k >= end) return mg_errf(err, errlen, "unclosed '{'");
        v->re_len = k - v->re_off;
        if (v->re_len == 0) return mg_errf(err, errlen, "empty regex in variable");
        j = k;
    }
    *next = j + 1; /* past '}' */
    return 0;
}

static int compile_regex(el_t *el, const char *src, char *err, size_t errlen)
{
    el->re = calloc(1, sizeof *el->re);
    if (!el->re) return mg_errf(err, errlen, "out of memory");
    int rc = regcomp(el->re, src, REG_EXTENDED);
    if (rc != 0) {
        char msg[128];
        regerror(rc, el->re, msg, sizeof msg);
        free(el->re);
        el->re = NULL;
        return mg_errf(err, errlen, "bad regex: %s", msg);
    }
    el->nmatch = el->re->re_nsub + 1;
    if (el->nmatch > MAX_GROUPS) return mg_errf(err, errlen, "too many regex groups (at most %d)", MAX_GROUPS - 1);
    return 0;
}

/* Build the element for a segment text[s..e) that has a special char. */
static int compile_segment(mg_path_pattern_t *p, el_t *el, size_t s, size_t e,
                           char *err, size_t errlen)
{
    const char *t = p->text;
    bool has_star = false, has_var = false;
    size_t nvar = 0;
    varspec_t first = { 0 };
    size_t first_end = 0;

    for (size_t i = s; i < e;) {
        if (t[i] == '{') {
            varspec_t v;
            size_t nx;
            int rc = scan_var(t, i, e, &v, &nx, err, errlen);
            if (rc) return rc;
            if (v.name_len > 0 && t[v.name_off] == '*')
                return mg_errf(err, errlen, "'{*...}' must be a whole segment at the end of the pattern");
            if (nvar++ == 0) { first = v; first_end = nx; }
            has_var = true;
            i = nx;
        } else if (t[i] == '}') {
            return mg_errf(err, errlen, "unexpected '}'");
        } else {
            if (t[i] == '*') has_star = true;
            i++;
        }
    }
    el->off = (uint32_t)s;
    el->len = (uint32_t)(e - s);

    if (!has_var) {
        if (e - s == 1 && t[s] == '*') el->kind = EL_STAR;
        else el->kind = has_star ? EL_GLOB : EL_QLIT;
        return 0;
    }
    if (nvar == 1 && t[s] == '{' && first_end == e && !first.has_re) {
        el->kind = EL_CAPTURE;
        el->var = (uint8_t)p->nvars;
        return add_var(p, first.name_off, first.name_len, err, errlen);
    }

    /* regex element: "{name:re}" alone or a mixed segment */
    el->kind = EL_REGEX;
    el->whole = (nvar == 1 && t[s] == '{' && first_end == e);
    el->var = (uint8_t)p->nvars;
    sbuf_t b = { 0 };
    size_t groups = 0;
    int rc = 0;
    sb_putc(&b, '^');
    for (size_t i = s; i < e && rc == 0;) {
        if (t[i] == '{') {
            varspec_t v;
            size_t nx;
            scan_var(t, i, e, &v, &nx, NULL, 0); /* validated above */
            rc = add_var(p, v.name_off, v.name_len, err, errlen);
            if (rc) break;
            el->group[el->nvars++] = (uint8_t)(++groups > 255 ? 255 : groups);
            sb_putc(&b, '(');
            if (v.has_re) rc = translate_regex(&b, t + v.re_off, v.re_len, &groups, err, errlen);
            else sb_puts(&b, ".*");
            sb_putc(&b, ')');
            i = nx;
        } else {
            if (t[i] == '*') sb_puts(&b, ".*");
            else if (t[i] == '?') sb_putc(&b, '.');
            else sb_lit(&b, t[i]);
            i++;
        }
    }
    sb_putc(&b, '$');
    if (rc == 0 && b.oom) rc = mg_errf(err, errlen, "out of memory");
    if (rc == 0) rc = compile_regex(el, b.p, err, errlen);
    free(b.p);
    return rc;
}

static int push_el(mg_path_pattern_t *p, size_t *cap, el_t **out, char *err, size_t errlen)
{
    if (p->nels == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        el_t *q = realloc(p->els, nc * sizeof *q);
        if (!q) return mg_errf(err, errlen, "out of memory");
        p->els = q;
        *cap = nc;
    }
    *out = &p->els[p->nels++];
    memset(*out, 0, sizeof **out);
    return 0;
}

static int push_lit(mg_path_pattern_t *p, size_t *cap, size_t s, size_t e, char *err, size_t errlen)
{
    if (e <= s) return 0;
    el_t *el = NULL;
    int rc = push_el(p, cap, &el, err, errlen);
    if (rc) return rc;
    el->kind = EL_LIT;
    el->off = (uint32_t)s;
    el->len = (uint32_t)(e - s);
    return 0;
}

static int compile(mg_path_pattern_t *p, char *err, size_t errlen)
{
    const char *t = p->text;
    size_t n = strlen(t), cap = 0, run = 0;
    int rc;

    if (n == 0 || t[0] != '/') return mg_errf(err, errlen, "pattern must start with '/'");
    if (n > UINT32_MAX / 2) return mg_errf(err, errlen, "pattern too long");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)t[i] <= 0x20 || t[i] == 0x7f)
            return mg_errf(err, errlen, "pattern contains a space or control character");

    for (size_t i = 0; i < n;) { /* t[i] == '/' */
        size_t s = i + 1, e = s;
        while (e < n && t[e] != '/') {
            if (t[e] == '{') { /* a regex may contain '/'? no: keep segments simple but skip braces */
                int depth = 0;
                for (; e < n; e++) {
                    if (t[e] == '\\' && e + 1 < n) { e++; continue; }
                    if (t[e] == '{') depth++;
                    else if (t[e] == '}' && --depth == 0) break;
                }
                if (e >= n) return mg_errf(err, errlen, "unclosed '{'");
            }
            e++;
        }
        bool last = (e == n);
        size_t sl = e - s;
        if (sl == 2 && t[s] == '*' && t[s + 1] == '*') {
            if (!last) return mg_errf(err, errlen, "'**' is only allowed as the last segment");
            p->tail = TAIL_REST;
            return push_lit(p, &cap, run, i, err, errlen);
        }
        if (sl >= 2 && t[s] == '{' && t[s + 1] == '*') {
            varspec_t v;
            size_t nx;
            if ((rc = scan_var(t, s, e, &v, &nx, err, errlen))) return rc;
            if (nx != e || !last)
                return mg_errf(err, errlen, "'{*...}' must be a whole segment at the end of the pattern");
            if (v.has_re) return mg_errf(err, errlen, "'{*...}' takes no regex");
            if ((rc = push_lit(p, &cap, run, i, err, errlen))) return rc;
            p->tail = TAIL_CAPTURE;
            p->tail_var = (uint8_t)p->nvars;
            return add_var(p, v.name_off + 1, v.name_len - 1, err, errlen);
        }
        if (memchr(t + s, '?', sl) || memchr(t + s, '*', sl) || memchr(t + s, '{', sl) ||
            memchr(t + s, '}', sl)) {
            el_t *el = NULL;
            if ((rc = push_lit(p, &cap, run, s, err, errlen))) return rc;
            if ((rc = push_el(p, &cap, &el, err, errlen))) return rc;
            if ((rc = compile_segment(p, el, s, e, err, errlen))) return rc;
            run = e;
        }
        i = e;
    }
    return push_lit(p, &cap, run, n, err, errlen);
}

int mg_path_compile(const char *pattern, mg_path_pattern_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!pattern) return mg_errf(err, errlen, "no pattern");
    mg_path_pattern_t *p = calloc(1, sizeof *p);
    if (!p || !(p->text = strdup(pattern))) {
        free(p);
        return mg_errf(err, errlen, "out of memory");
    }
    int rc = compile(p, err, errlen);
    if (rc) {
        mg_path_free(p);
        return rc;
    }
    if (p->tail == TAIL_NONE && p->nels > 0) {
        const el_t *l = &p->els[p->nels - 1];
        p->trailing_ok = !(l->kind == EL_LIT && p->text[l->off + l->len - 1] == '/');
    }
    if (p->tail == TAIL_NONE && p->nels == 1 && p->els[0].kind == EL_LIT)
        p->fast = FAST_EXACT;
    else if (p->tail == TAIL_REST && (p->nels == 0 || (p->nels == 1 && p->els[0].kind == EL_LIT)))
        p->fast = FAST_PREFIX;
    *out = p;
    return 0;
}

void mg_path_free(mg_path_pattern_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nels; i++) {
        if (p->els[i].re) {
            regfree(p->els[i].re);
            free(p->els[i].re);
        }
    }
    free(p->els);
    free(p->text);
    free(p);
}

const char *mg_path_pattern_text(const mg_path_pattern_t *p) { return p->text; }

bool mg_path_has_tail(const mg_path_pattern_t *p) { return p->tail != TAIL_NONE; }

/* ---- match ---- */

static bool qlit_eq(const char *pat, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pat[i] != '?' && pat[i] != s[i]) return false;
    return true;
}

/* '*' and '?' over one segment; iterative, backtracks only to the last '*'. */
static bool glob_match(const char *g, size_t gn, const char *s, size_t sn)
{
    size_t gi = 0, si = 0, star = SIZE_MAX, mark = 0;
    while (si < sn) {
        if (gi < gn && (g[gi] == '?' || g[gi] == s[si])) {
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

/* regexec wants a NUL-terminated string. glibc's REG_STARTEND would avoid
 * the copy, but sanitizers' regexec interceptors strlen() the string anyway,
 * and the path is not NUL-terminated in the read buffer: copy the segment
 * (to the stack when it is short, which is the usual case). */
static bool regex_seg(const el_t *el, const char *s, size_t sl, mg_path_vars_t *vars)
{
    regmatch_t m[MAX_GROUPS];
    char stack[512], *buf = stack;
    if (el->whole && sl == 0) return false;
    if (sl >= sizeof stack && !(buf = malloc(sl + 1))) return false;
    memcpy(buf, s, sl);
    buf[sl] = '\0';
    bool ok = memchr(s, '\0', sl) == NULL && regexec(el->re, buf, el->nmatch, m, 0) == 0;
    if (buf != stack) free(buf);
    if (!ok) return false;
    if (vars) {
        for (size_t k = 0; k < el->nvars; k++) {
            const regmatch_t *g = &m[el->group[k]];
            vars->value[el->var + k] = g->rm_so < 0 ? mg_slice(s, 0)
                                                    : mg_slice(s + g->rm_so, (size_t)(g->rm_eo - g->rm_so));
        }
    }
    return true;
}

static bool finish(const mg_path_pattern_t *p, mg_path_vars_t *vars)
{
    if (vars) {
        vars->n = p->nvars;
        for (size_t i = 0; i < p->nvars; i++) vars->name[i] = p->names[i];
    }
    return true;
}

bool mg_path_match(const mg_path_pattern_t *p, const char *path, size_t len, mg_path_vars_t *vars)
{
    const char *t = p->text;
    if (vars) vars->n = 0;

    if (p->fast == FAST_EXACT) {
        size_t n = p->els[0].len;
        if (len != n && !(p->trailing_ok && len == n + 1 && path[n] == '/')) return false;
        return memcmp(path, t, n) == 0 && finish(p, vars);
    }
    if (p->fast == FAST_PREFIX) {
        size_t n = p->nels ? p->els[0].len : 0;
        return len >= n && memcmp(path, t, n) == 0 && (len == n || path[n] == '/') && finish(p, vars);
    }

    size_t i = 0, last_seg = 1;
    for (size_t k = 0; k < p->nels; k++) {
        const el_t *el = &p->els[k];
        if (el->kind == EL_LIT) {
            if (len - i < el->len || memcmp(path + i, t + el->off, el->len) != 0) return false;
            i += el->len;
            continue;
        }
        const char *s = path + i;
        const char *slash = memchr(s, '/', len - i);
        size_t sl = slash ? (size_t)(slash - s) : len - i;
        switch (el->kind) {
        case EL_QLIT:
            if (sl != el->len || !qlit_eq(t + el->off, s, sl)) return false;
            break;
        case EL_STAR:
            if (sl == 0 && (i != len || k + 1 != p->nels || p->tail != TAIL_NONE)) return false;
            break;
        case EL_GLOB:
            if (!glob_match(t + el->off, el->len, s, sl)) return false;
            break;
        case EL_CAPTURE:
            if (sl == 0) return false;
            if (vars) vars->value[el->var] = mg_slice(s, sl);
            break;
        case EL_REGEX:
            if (!regex_seg(el, s, sl, vars)) return false;
            break;
        case EL_LIT:
            break;
        }
        i += sl;
        last_seg = sl;
    }

    switch (p->tail) {
    case TAIL_NONE:
        if (i == len) return finish(p, vars);
        if (p->trailing_ok && last_seg > 0 && i + 1 == len && path[i] == '/') return finish(p, vars);
        return false;
    case TAIL_REST:
        return (i == len || path[i] == '/') && finish(p, vars);
    case TAIL_CAPTURE:
        if (i != len && path[i] != '/') return false;
        if (vars) vars->value[p->tail_var] = mg_slice(path + i, len - i);
        return finish(p, vars);
    }
    return false;
}
