/* res_int: helpers shared by the files of src/resilience only.
 * Per-slot counters: each slot is written by exactly one thread (a worker,
 * or the control thread in its own slot) with a relaxed load + store, so a
 * hot-path increment is a plain add without a bus lock; readers sum the
 * slots with relaxed loads. Slots are cache-line sized so two workers
 * never write the same line. */
#ifndef MG_RESILIENCE_RES_INT_H
#define MG_RESILIENCE_RES_INT_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define MG_CACHELINE 64

/* Single-writer increment (not an RMW: see above). */
static inline void mg_ctr_inc(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

static inline uint64_t mg_ctr_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit((_Atomic uint64_t *)c, memory_order_relaxed);
}

/* A slot index from the caller, clamped so a wrong one can lose counts
 * but never write out of bounds. */
static inline uint32_t mg_slot_clamp(uint32_t slot, uint32_t nslots)
{
    return slot < nslots ? slot : nslots - 1;
}

/* Zeroed, cache-line aligned array of n elements of size sz. */
static inline void *mg_aligned_calloc(size_t n, size_t sz)
{
    size_t bytes = n * sz;
    bytes = (bytes + MG_CACHELINE - 1) / MG_CACHELINE * MG_CACHELINE;
    void *p = aligned_alloc(MG_CACHELINE, bytes ? bytes : MG_CACHELINE);
    if (p)
        __builtin_memset(p, 0, bytes ? bytes : MG_CACHELINE);
    return p;
}

#endif
