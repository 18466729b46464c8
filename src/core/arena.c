/* arena: see arena.h. Chunks form a list; the first chunk is kept across
 * resets, later (overflow) chunks are freed by reset, so a request that
 * needed more than usual does not pin that memory forever. */
#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk_t;

struct mg_arena {
    chunk_t *first;   /* kept across resets */
    chunk_t *cur;     /* where allocation happens (first, or the newest overflow chunk) */
    size_t total;     /* bytes of all chunks */
    size_t limit;
    size_t first_cap;
};

static chunk_t *chunk_new(size_t cap)
{
    chunk_t *c = malloc(sizeof *c + cap);
    if (c) {
        c->next = NULL;
        c->used = 0;
        c->cap = cap;
    }
    return c;
}

mg_arena_t *mg_arena_new(size_t first_chunk, size_t limit)
{
    mg_arena_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    if (first_chunk < 256) first_chunk = 256;
    if (limit < first_chunk) limit = first_chunk;
    a->first_cap = first_chunk;
    a->limit = limit;
    if (!(a->first = chunk_new(first_chunk))) {
        free(a);
        return NULL;
    }
    a->cur = a->first;
    a->total = first_chunk;
    return a;
}

void mg_arena_free(mg_arena_t *a)
{
    if (!a) return;
    for (chunk_t *c = a->first, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void mg_arena_reset(mg_arena_t *a)
{
    for (chunk_t *c = a->first->next, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->cur = a->first;
    a->total = a->first_cap;
}

void *mg_arena_alloc(mg_arena_t *a, size_t n)
{
    if (n > SIZE_MAX - 16) return NULL;
    n = (n + 7) & ~(size_t)7;
    if (n == 0) n = 8;
    chunk_t *c = a->cur;
    if (c->cap - c->used < n) {
        size_t cap = a->first_cap;
        while (cap < n) cap *= 2;
        if (cap > a->limit - a->total && a->limit - a->total >= n) cap = a->limit - a->total;
        if (a->total > a->limit || cap > a->limit - a->total) return NULL;
        chunk_t *nc = chunk_new(cap);
        if (!nc) return NULL;
        c->next = nc;
        a->cur = c = nc;
        a->total += cap;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

mg_slice_t mg_arena_dup(mg_arena_t *a, mg_slice_t s)
{
    char *p = mg_arena_alloc(a, s.n + 1);
    if (!p) return MG_SLICE_NULL;
    if (s.n) memcpy(p, s.p, s.n);
    p[s.n] = '\0';
    return mg_slice(p, s.n);
}
