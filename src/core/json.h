/* json: the few helpers meshgate needs to write JSON text into a caller's
 * growable buffer (admin API, access log, error bodies). */
#ifndef MG_CORE_JSON_H
#define MG_CORE_JSON_H

#include <stddef.h>
#include <string.h>

#include "core/slice.h"

typedef struct {
    char *p;
    size_t len, cap;
    int oom; /* set once an allocation failed; content is then truncated */
} mg_buf_t;

void mg_buf_init(mg_buf_t *b);
void mg_buf_free(mg_buf_t *b);
int mg_buf_reserve_slow(mg_buf_t *b, size_t extra);

/* Appends n bytes (inline: the per-request head serializers call it often). */
static inline void mg_buf_add(mg_buf_t *b, const char *p, size_t n)
{
    if (b->len + n + 1 > b->cap && mg_buf_reserve_slow(b, n))
        return;
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Appends a string literal (its length counted by the compiler). */
#define mg_buf_lit(b, lit) mg_buf_add((b), "" lit, sizeof(lit) - 1)

/* Appends v in decimal, without printf. */
void mg_buf_add_u64(mg_buf_t *b, unsigned long long v);
void mg_buf_addf(mg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a quoted JSON string with escapes. */
void mg_buf_json_str(mg_buf_t *b, mg_slice_t s);

#endif
