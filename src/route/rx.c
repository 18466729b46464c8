/* rx: Java-flavoured regex -> POSIX ERE, literal fast paths, replaceAll.
 * See rx.h. glibc's regcomp expands "x+" and "x{n,m}" by copying x, so
 * nested repetition grows the compiled regex exponentially: the translation
 * bounds the product of repetition factors and refuses stacked quantifiers
 * ("a++", "a*?"). */
#include "route/rx.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define MAX_REGEX_LEN 1024
#define MAX_REGEX_COST 65536


void mg_sb_putn(mg_sbuf_t *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}
void mg_sb_puts(mg_sbuf_t *b, const char *s) { mg_sb_putn(b, s, strlen(s)); }
void mg_sb_putc(mg_sbuf_t *b, char c) { mg_sb_putn(b, &c, 1); }

void mg_sb_lit(mg_sbuf_t *b, char c)
{
    if (strchr(".[()*+?{}|$", c)) {
        char t[4] = { '[', c, ']', 0 };
        mg_sb_puts(b, t);
    } else if (c == '\\' || c == '^') {
        mg_sb_putc(b, '\\');
        mg_sb_putc(b, c);
    } else {
        mg_sb_putc(b, c);
    }
}

static int named_group(const char *re, size_t n, size_t *i, size_t group, mg_rx_names_t *names, char *err,
                       size_t errlen)
{
    /* re[*i] == '(' , re[*i+1] == '?', re[*i+2] == '<' */
    size_t s = *i + 3, j = s;
    while (j < n && (isalnum((unsigned char)re[j]) || re[j] == '_')) j++;
    if (j >= n || re[j] != '>' || j == s) return mg_errf(err, errlen, "bad named group in regex");
    if (names) {
        for (size_t k = 0; k < names->n; k++)
            if (strlen(names->name[k]) == j - s && memcmp(names->name[k], re + s, j - s) == 0)
                return mg_errf(err, errlen, "duplicate group name '%.*s' in regex", (int)(j - s), re + s);
        if (names->n >= MG_RX_MAX_NAMES) return mg_errf(err, errlen, "too many named groups in regex");
        if (!(names->name[names->n] = strndup(re + s, j - s))) return mg_errf(err, errlen, "out of memory");
        names->group[names->n++] = (unsigned)group;
    }
    *i = j;
    return 0;
}

int mg_rx_translate(mg_sbuf_t *b, const char *re, size_t n, size_t *groups, mg_rx_names_t *names, char *err,
                    size_t errlen)
{
    bool in_br = false, after_quant = false;
    uint64_t cost = 1;
    int rc;
    if (n > MAX_REGEX_LEN) return mg_errf(err, errlen, "regex longer than %d characters", MAX_REGEX_LEN);
    for (size_t i = 0; i < n; i++) {
        char c = re[i];
        if (!in_br) {
            bool quant = c == '*' || c == '+' || c == '?' || c == '{';
            if (quant && after_quant)
                return mg_errf(err, errlen, "stacked regex quantifiers (lazy, possessive) are not supported");
            after_quant = quant;
            if (c == '\\') {
                if (++i == n) return mg_errf(err, errlen, "regex ends with '\\'");
                char e = re[i];
                if (e == 'd') mg_sb_puts(b, "[0-9]");
                else if (e == 'D') mg_sb_puts(b, "[^0-9]");
                else if (strchr("wWsSbB", e)) {
                    mg_sb_putc(b, '\\');
                    mg_sb_putc(b, e);
                } else if (isalnum((unsigned char)e))
                    return mg_errf(err, errlen, "unsupported regex escape '\\%c'", e);
                else mg_sb_lit(b, e);
            } else if (c == '(') {
                if (i + 1 < n && re[i + 1] == '?') {
                    if (i + 2 < n && re[i + 2] == ':') i += 2;
                    else if (i + 3 < n && re[i + 2] == '<' && re[i + 3] != '=' && re[i + 3] != '!') {
                        if ((rc = named_group(re, n, &i, *groups + 1, names, err, errlen))) return rc;
                    } else return mg_errf(err, errlen, "unsupported regex group '(?' (lookaround, flags)");
                }
                (*groups)++;
                mg_sb_putc(b, '(');
            } else if (c == '[') {
                in_br = true;
                mg_sb_putc(b, '[');
                if (i + 1 < n && re[i + 1] == '^') mg_sb_putc(b, re[++i]);
                if (i + 1 < n && re[i + 1] == ']') mg_sb_putc(b, re[++i]);
            } else if (c == '{') {
                /* interval {n}, {n,}, {n,m}: copy through, cost by its bound */
                size_t j = i + 1;
                unsigned long lo = 0, hi = 0;
                while (j < n && re[j] >= '0' && re[j] <= '9' && lo < 100000) lo = lo * 10 + (unsigned long)(re[j++] - '0');
                hi = lo;
                if (j < n && re[j] == ',') {
                    j++;
                    if (j < n && re[j] >= '0' && re[j] <= '9') {
                        hi = 0;
                        while (j < n && re[j] >= '0' && re[j] <= '9' && hi < 100000)
                            hi = hi * 10 + (unsigned long)(re[j++] - '0');
                    }
                }
                if (j >= n || re[j] != '}' || !(re[i + 1] >= '0' && re[i + 1] <= '9'))
                    return mg_errf(err, errlen, "bad regex interval");
                cost *= hi + 1;
                if (cost > MAX_REGEX_COST) return mg_errf(err, errlen, "regex too complex (nested repetition)");
                mg_sb_putn(b, re + i, j + 1 - i);
                i = j;
            } else {
                if (c == '+') {
                    cost *= 2;
                    if (cost > MAX_REGEX_COST) return mg_errf(err, errlen, "regex too complex (nested repetition)");
                }
                mg_sb_putc(b, c);
            }
        } else {
            after_quant = false;
            if (c == ']') {
                in_br = false;
                mg_sb_putc(b, c);
            } else if (c == '[' && i + 1 < n && strchr(":.=", re[i + 1])) {
                /* [:class:] [.coll.] [=equiv=] copied through */
                char d = re[i + 1];
                size_t j = i + 2;
                while (j + 1 < n && !(re[j] == d && re[j + 1] == ']')) j++;
                if (j + 1 >= n) return mg_errf(err, errlen, "unterminated '[%c' in regex", d);
                mg_sb_putn(b, re + i, j + 2 - i);
                i = j + 1;
            } else if (c == '\\') {
                if (++i == n) return mg_errf(err, errlen, "regex ends with '\\'");
                char e = re[i];
                if (e == 'd') mg_sb_puts(b, "0-9");
                else if (e == 'w') mg_sb_puts(b, "A-Za-z0-9_");
                else if (e == 's') mg_sb_puts(b, " \t\n\r\f\v");
                else if (e == ']' || e == '-' || e == '^' || isalnum((unsigned char)e))
                    return mg_errf(err, errlen, "unsupported escape '\\%c' in regex bracket", e);
                else mg_sb_putc(b, e);
            } else {
                mg_sb_putc(b, c);
            }
        }
    }
    if (in_br) return mg_errf(err, errlen, "unterminated '[' in regex");
    return 0;
}

static void names_free(mg_rx_names_t *nm)
{
    for (size_t i = 0; i < nm->n; i++) free(nm->name[i]);
    nm->n = 0;
}

int mg_rx_compile(mg_rx_t *rx, const char *java, bool whole, char *err, size_t errlen)
{
    memset(rx, 0, sizeof *rx);
    size_t n = strlen(java);
    rx->whole = whole;
    if (!(rx->text = strdup(java))) return mg_errf(err, errlen, "out of memory");
    rx->len = n;
    if (strpbrk(java, ".[]()*+?{}|^$\\") == NULL) {
        rx->literal = true;
        return 0;
    }
    mg_sbuf_t b = { 0 };
    size_t groups = 0;
    if (whole) {
        mg_sb_puts(&b, "^(");
        groups = 1;
    }
    int rc = mg_rx_translate(&b, java, n, &groups, &rx->names, err, errlen);
    if (whole) mg_sb_puts(&b, ")$");
    if (rc == 0 && b.oom) rc = mg_errf(err, errlen, "out of memory");
    if (rc == 0 && groups + 1 > MG_RX_MAX_GROUPS)
        rc = mg_errf(err, errlen, "too many regex groups (at most %d)", MG_RX_MAX_GROUPS - 2);
    if (rc == 0 && !(rx->re = calloc(1, sizeof *rx->re))) rc = mg_errf(err, errlen, "out of memory");
    if (rc == 0) {
        int e = regcomp(rx->re, b.p ? b.p : "", REG_EXTENDED);
        if (e != 0) {
            char msg[128];
            regerror(e, rx->re, msg, sizeof msg);
            free(rx->re);
            rx->re = NULL;
            rc = mg_errf(err, errlen, "bad regex '%.80s': %s", java, msg);
        }
    }
    free(b.p);
    if (rc) {
        mg_rx_free(rx);
        return rc;
    }
    rx->shift = whole ? 1 : 0;
    rx->nmatch = rx->re->re_nsub + 1;
    if (rx->nmatch > MG_RX_MAX_GROUPS) rx->nmatch = MG_RX_MAX_GROUPS;
    return 0;
}

void mg_rx_free(mg_rx_t *rx)
{
    if (!rx) return;
    if (rx->re) {
        regfree(rx->re);
        free(rx->re);
    }
    names_free(&rx->names);
    free(rx->text);
    memset(rx, 0, sizeof *rx);
}

/* NUL-terminated copy of s: stack buffer when it fits, else malloc (rare:
 * values over 1 KiB). Returns NULL on OOM or when s contains a NUL. */
static char *cstr(mg_slice_t s, char *stack, size_t cap)
{
    if (s.n && memchr(s.p, '\0', s.n)) return NULL;
    char *b = s.n < cap ? stack : malloc(s.n + 1);
    if (!b) return NULL;
    if (s.n) memcpy(b, s.p, s.n);
    b[s.n] = '\0';
    return b;
}

bool mg_rx_match(const mg_rx_t *rx, mg_slice_t s)
{
    if (rx->literal) {
        if (rx->whole) return s.n == rx->len && (s.n == 0 || memcmp(s.p, rx->text, s.n) == 0);
        return rx->len == 0 || (s.n >= rx->len && memmem(s.p, s.n, rx->text, rx->len) != NULL);
    }
    char stack[1024];
    char *b = cstr(s, stack, sizeof stack);
    if (!b) return false;
    bool ok = regexec(rx->re, b, 0, NULL, 0) == 0;
    if (b != stack) free(b);
    return ok;
}

void mg_rx_repl_free(mg_rx_repl_t *r)
{
    if (!r->parts) return;
    for (size_t i = 0; i < r->n; i++) free(r->parts[i].text);
    free(r->parts);
    r->parts = NULL;
    r->n = 0;
}

static int repl_push(mg_rx_repl_t *r, int group, const char *t, size_t len)
{
    void *q = realloc(r->parts, (r->n + 1) * sizeof *r->parts);
    if (!q) return -1;
    r->parts = q;
    r->parts[r->n].group = group;
    r->parts[r->n].text = NULL;
    r->parts[r->n].len = len;
    if (group < 0 && !(r->parts[r->n].text = strndup(t, len))) return -1;
    r->n++;
    return 0;
}

int mg_rx_repl_compile(mg_rx_repl_t *r, const mg_rx_t *rx, const char *repl, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    mg_sbuf_t lit = { 0 };
    size_t ngroups = rx->re ? rx->re->re_nsub - rx->shift : 0;
    int rc = 0;
    for (size_t i = 0; repl[i] && rc == 0; i++) {
        char c = repl[i];
        if (c == '\\' && repl[i + 1] && !(repl[i + 1] == '{' && i > 0 && repl[i - 1] == '$')) {
            mg_sb_putc(&lit, repl[++i]);
            continue;
        }
        if (c != '$') {
            mg_sb_putc(&lit, c);
            continue;
        }
        /* $n, ${name}, and Spring's YAML-safe $\{name} */
        size_t j = i + 1;
        int group = -1;
        if (repl[j] == '\\' && repl[j + 1] == '{') j++;
        if (repl[j] == '{') {
            const char *end = strchr(repl + j, '}');
            if (!end) {
                rc = mg_errf(err, errlen, "replacement '%.80s': unclosed '${'", repl);
                break;
            }
            size_t nl = (size_t)(end - repl - j - 1);
            for (size_t k = 0; k < rx->names.n; k++)
                if (strlen(rx->names.name[k]) == nl && memcmp(rx->names.name[k], repl + j + 1, nl) == 0)
                    group = (int)rx->names.group[k] - (int)rx->shift;
            if (group < 0) {
                rc = mg_errf(err, errlen, "replacement '%.80s': no group named '%.*s' in the regex", repl, (int)nl,
                          repl + j + 1);
                break;
            }
            i = (size_t)(end - repl);
        } else if (repl[j] >= '0' && repl[j] <= '9') {
            group = repl[j] - '0';
            if ((size_t)group > ngroups) {
                rc = mg_errf(err, errlen, "replacement '%.80s': no group %d in the regex", repl, group);
                break;
            }
            i = j;
        } else {
            rc = mg_errf(err, errlen, "replacement '%.80s': '$' must be followed by a group (use \\$ for a dollar)",
                      repl);
            break;
        }
        if (lit.n && repl_push(r, -1, lit.p, lit.n) != 0) rc = mg_errf(err, errlen, "out of memory");
        lit.n = 0;
        if (rc == 0 && repl_push(r, group, NULL, 0) != 0) rc = mg_errf(err, errlen, "out of memory");
    }
    if (rc == 0 && lit.n && repl_push(r, -1, lit.p, lit.n) != 0) rc = mg_errf(err, errlen, "out of memory");
    if (rc == 0 && lit.oom) rc = mg_errf(err, errlen, "out of memory");
    free(lit.p);
    if (rc) mg_rx_repl_free(r);
    return rc;
}

/* An output buffer in arena memory that moves to a bigger block when full. */
typedef struct {
    mg_arena_t *a;
    char *p;
    size_t n, cap;
    bool fail;
} obuf_t;

static void ob_put(obuf_t *o, const char *s, size_t n)
{
    if (o->fail || n == 0) return;
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap * 2 + n + 64;
        char *q = mg_arena_alloc(o->a, cap);
        if (!q) {
            o->fail = true;
            return;
        }
        if (o->n) memcpy(q, o->p, o->n);
        o->p = q;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
}

int mg_rx_replace_all(const mg_rx_t *rx, const mg_rx_repl_t *repl, mg_slice_t s, mg_arena_t *a, mg_slice_t *out)
{
    *out = s;
    obuf_t o = { .a = a };
    if (rx->literal) {
        /* replaceAll with a literal pattern: memmem loop (replacement has no groups but $0) */
        if (rx->len == 0 || s.n < rx->len) return 0;
        size_t off = 0;
        bool any = false;
        const char *hit;
        while (off + rx->len <= s.n && (hit = memmem(s.p + off, s.n - off, rx->text, rx->len))) {
            size_t at = (size_t)(hit - s.p);
            ob_put(&o, s.p + off, at - off);
            for (size_t k = 0; k < repl->n; k++)
                if (repl->parts[k].group < 0) ob_put(&o, repl->parts[k].text, repl->parts[k].len);
                else ob_put(&o, hit, rx->len);
            off = at + rx->len;
            any = true;
        }
        if (!any) return 0;
        ob_put(&o, s.p + off, s.n - off);
    } else {
        char stack[1024];
        char *b = cstr(s, stack, sizeof stack);
        if (!b) return s.n && memchr(s.p, '\0', s.n) ? 0 : -1;
        regmatch_t m[MG_RX_MAX_GROUPS];
        size_t off = 0;
        bool any = false;
        while (off <= s.n && regexec(rx->re, b + off, rx->nmatch, m, off ? REG_NOTBOL : 0) == 0) {
            size_t so = off + (size_t)m[0].rm_so, eo = off + (size_t)m[0].rm_eo;
            ob_put(&o, s.p + off, so - off);
            for (size_t k = 0; k < repl->n; k++) {
                int g = repl->parts[k].group;
                if (g < 0) {
                    ob_put(&o, repl->parts[k].text, repl->parts[k].len);
                    continue;
                }
                size_t gi = (size_t)g + rx->shift;
                if (gi < rx->nmatch && m[gi].rm_so >= 0)
                    ob_put(&o, b + off + m[gi].rm_so, (size_t)(m[gi].rm_eo - m[gi].rm_so));
            }
            any = true;
            if (eo == so) { /* empty match: copy one byte and move on */
                if (so < s.n) ob_put(&o, s.p + so, 1);
                off = so + 1;
            } else {
                off = eo;
            }
        }
        if (off < s.n) ob_put(&o, s.p + off, s.n - off);
        if (b != stack) free(b);
        if (!any) return 0;
    }
    if (o.fail) return -1;
    if (!o.p) { /* everything replaced by nothing */
        *out = mg_slice("", 0);
        return 0;
    }
    o.p[o.n] = '\0';
    *out = mg_slice(o.p, o.n);
    return 0;
}
