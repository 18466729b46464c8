/* rx: Java-flavoured regular expressions (as Spring configs write them)
 * compiled to POSIX ERE, for predicates (Header, Query, Cookie, Host
 * {x:re}), path variables and the RewritePath/RewriteResponseHeader
 * filters. The translation handles \d \D \w \s, (?:...) and named groups
 * (?<name>...) (kept as a name -> group table) and refuses what ERE cannot
 * express (lookaround, lazy/possessive quantifiers, backreferences).
 * Matching is leftmost-longest (POSIX), not Java's leftmost-first; for the
 * patterns configs use ((?<x>.*), [a-z]+, literal text) they agree.
 * A regex without metacharacters is matched with memcmp, never regexec.
 * A compiled mg_rx_t is immutable: share it between threads. */
#ifndef MG_ROUTE_RX_H
#define MG_ROUTE_RX_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/slice.h"

#define MG_RX_MAX_GROUPS 32
#define MG_RX_MAX_NAMES 16

/* ---- a small growable string (also used by path.c) ---- */
typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} mg_sbuf_t;

void mg_sb_putn(mg_sbuf_t *b, const char *s, size_t n);
void mg_sb_puts(mg_sbuf_t *b, const char *s);
void mg_sb_putc(mg_sbuf_t *b, char c);
void mg_sb_lit(mg_sbuf_t *b, char c); /* a literal byte as ERE */

typedef struct {
    size_t n;
    char *name[MG_RX_MAX_NAMES];   /* malloc'd */
    unsigned group[MG_RX_MAX_NAMES];
} mg_rx_names_t;

/* Append the ERE for Java regex re[0..n) to b; *groups counts the groups
 * opened (add to it), names (may be NULL) records (?<name>...) groups. */
int mg_rx_translate(mg_sbuf_t *b, const char *re, size_t n, size_t *groups, mg_rx_names_t *names,
                    char *err, size_t errlen);

typedef struct {
    bool literal;     /* no metacharacters: text is compared as is */
    char *text;       /* the literal, or the Java source */
    size_t len;
    bool whole;       /* compiled for a whole-value match */
    regex_t *re;      /* NULL when literal */
    size_t nmatch;    /* regmatch_t slots needed */
    unsigned shift;   /* groups added by the translation before the user's (whole: 1) */
    mg_rx_names_t names;
} mg_rx_t;

/* whole: the regex must match the whole value (Java String.matches), else
 * it may match anywhere (Matcher.find / replaceAll). */
int mg_rx_compile(mg_rx_t *rx, const char *java, bool whole, char *err, size_t errlen);
void mg_rx_free(mg_rx_t *rx);

/* Does s match (whole or anywhere, as compiled)? */
bool mg_rx_match(const mg_rx_t *rx, mg_slice_t s);

/* A Java replacement string ("$1", "${name}", "\$"; Spring's "$\{name}" is
 * read as "${name}") compiled against rx's groups. */
typedef struct {
    size_t n;
    struct {
        int group;      /* -1: literal text */
        char *text;     /* literal (malloc'd) */
        size_t len;
    } *parts;
} mg_rx_repl_t;

int mg_rx_repl_compile(mg_rx_repl_t *r, const mg_rx_t *rx, const char *repl, char *err, size_t errlen);
void mg_rx_repl_free(mg_rx_repl_t *r);

/* Matcher.replaceAll: every non-overlapping match of rx in s replaced.
 * Result in arena memory (NUL-terminated); s itself when nothing matched.
 * Returns 0, or -1 when the arena is exhausted. */
int mg_rx_replace_all(const mg_rx_t *rx, const mg_rx_repl_t *repl, mg_slice_t s, mg_arena_t *a, mg_slice_t *out);

/* Copy s into a NUL-terminated buffer: buf if it fits (n bytes), else the
 * arena / malloc. Helpers for regexec, which needs C strings. */

#endif
