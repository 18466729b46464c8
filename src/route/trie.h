/* trie: candidate routes by literal leading path segments.
 *
 * Each route is filed under the node of its Path pattern's literal prefix
 * ("/api/users/{id}" -> api/users; "/x/{*rest}" -> x; no Path -> the root),
 * in rank order (rank = position in the (order, declaration) sort). A
 * request walks the trie along its own segments and gets the rank lists of
 * every node on the way: exactly the routes whose literal prefix matches.
 * Edges live in one hash table keyed by (parent, segment), so a walk costs
 * one hash lookup per segment whatever the number of routes. Built once,
 * immutable after, shared by all workers. */
#ifndef MG_ROUTE_TRIE_H
#define MG_ROUTE_TRIE_H

#include <stddef.h>
#include <stdint.h>

#define MG_TRIE_MAX_DEPTH 32

typedef struct mg_trie mg_trie_t;

typedef struct {
    const uint32_t *v;
    uint32_t n;
} mg_trie_list_t;

mg_trie_t *mg_trie_new(void);
void mg_trie_free(mg_trie_t *t);
/* File rank under the literal prefix of a PathPattern text. Ranks must be
 * inserted in increasing order. Returns 0 or -ENOMEM. */
int mg_trie_insert(mg_trie_t *t, const char *pattern, uint32_t rank);
/* The lists along path[0..len): out[0] is the root's. Returns the count
 * (at most MG_TRIE_MAX_DEPTH + 1); empty lists are left out. */
size_t mg_trie_collect(const mg_trie_t *t, const char *path, size_t len, mg_trie_list_t *out);

#endif
