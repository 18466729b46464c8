/* slice: a (pointer, length) view into memory owned by someone else.
 * Parsed paths, headers and route parameters are slices into the read
 * buffer; they are valid until that buffer is compacted or freed. */
#ifndef MG_CORE_SLICE_H
#define MG_CORE_SLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct {
    const char *p;
    size_t n;
} mg_slice_t;

#define MG_SLICE_LIT(s) ((mg_slice_t){ (s), sizeof(s) - 1 })
#define MG_SLICE_NULL ((mg_slice_t){ NULL, 0 })

static inline mg_slice_t mg_slice(const char *p, size_t n) { return (mg_slice_t){ p, n }; }
static inline mg_slice_t mg_slice_cstr(const char *s) { return (mg_slice_t){ s, s ? strlen(s) : 0 }; }

static inline bool mg_slice_eq(mg_slice_t a, mg_slice_t b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}

/* ASCII case-insensitive comparison (header names, tokens). */
static inline bool mg_slice_caseeq(mg_slice_t a, mg_slice_t b)
{
    return a.n == b.n && (a.n == 0 || strncasecmp(a.p, b.p, a.n) == 0);
}

static inline bool mg_slice_caseeq_cstr(mg_slice_t a, const char *s)
{
    return mg_slice_caseeq(a, mg_slice_cstr(s));
}

#endif
