/* arena: a bump allocator for per-request memory. Allocation is a pointer
 * bump inside a chunk; reset frees everything at once and keeps the first
 * chunk for the next request, so a steady-state request allocates nothing
 * from malloc. Bounded: an arena refuses to grow past its limit. One
 * owner, one thread. */
#ifndef MG_CORE_ARENA_H
#define MG_CORE_ARENA_H

#include <stddef.h>

#include "core/slice.h"

typedef struct mg_arena mg_arena_t;

mg_arena_t *mg_arena_new(size_t first_chunk, size_t limit);
void mg_arena_free(mg_arena_t *a);
void mg_arena_reset(mg_arena_t *a);
/* NULL when the limit would be passed (or out of memory). 8-byte aligned. */
void *mg_arena_alloc(mg_arena_t *a, size_t n);
/* Copies; returns an empty slice with p == NULL on failure. */
mg_slice_t mg_arena_dup(mg_arena_t *a, mg_slice_t s);

#endif
