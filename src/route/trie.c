/* trie: see trie.h. Nodes are an array; edges an open-addressing hash
 * table of (parent node, segment bytes) -> child node; segment bytes live
 * in one pool. */
#include "route/trie.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t *ranks;
    uint32_t n, cap;
} node_t;

typedef struct {
    uint64_t hash;
    uint32_t parent, child; /* child == 0: empty slot (the root is never a child) */
    uint32_t off, len;      /* segment in pool */
} edge_t;

struct mg_trie {
    node_t *nodes;
    uint32_t nnodes, capnodes;
    edge_t *edges;
    uint32_t nedges, capedges; /* capedges: power of two */
    char *pool;
    size_t npool, cappool;
};

static uint64_t seg_hash(uint32_t parent, const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ ((uint64_t)parent * 0x9E3779B97F4A7C15ull);
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

static int add_node(mg_trie_t *t, uint32_t *out)
{
    if (t->nnodes == t->capnodes) {
        uint32_t cap = t->capnodes ? t->capnodes * 2 : 16;
        node_t *q = realloc(t->nodes, cap * sizeof *q);
        if (!q) return -ENOMEM;
        t->nodes = q;
        t->capnodes = cap;
    }
    memset(&t->nodes[t->nnodes], 0, sizeof t->nodes[0]);
    *out = t->nnodes++;
    return 0;
}

mg_trie_t *mg_trie_new(void)
{
    mg_trie_t *t = calloc(1, sizeof *t);
    uint32_t root;
    if (!t) return NULL;
    t->capedges = 64;
    if (!(t->edges = calloc(t->capedges, sizeof *t->edges)) || add_node(t, &root) != 0) {
        mg_trie_free(t);
        return NULL;
    }
    return t;
}

void mg_trie_free(mg_trie_t *t)
{
    if (!t) return;
    for (uint32_t i = 0; i < t->nnodes; i++) free(t->nodes[i].ranks);
    free(t->nodes);
    free(t->edges);
    free(t->pool);
    free(t);
}

static const edge_t *find(const mg_trie_t *t, uint32_t parent, const char *s, size_t n, uint64_t h)
{
    uint32_t mask = t->capedges - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        const edge_t *e = &t->edges[i];
        if (e->child == 0) return NULL;
        if (e->hash == h && e->parent == parent && e->len == n && memcmp(t->pool + e->off, s, n) == 0) return e;
    }
}

static void put(edge_t *tab, uint32_t cap, const edge_t *e)
{
    uint32_t mask = cap - 1, i = (uint32_t)e->hash & mask;
    while (tab[i].child) i = (i + 1) & mask;
    tab[i] = *e;
}

static int child(mg_trie_t *t, uint32_t parent, const char *s, size_t n, uint32_t *out)
{
    uint64_t h = seg_hash(parent, s, n);
    const edge_t *e = find(t, parent, s, n, h);
    if (e) {
        *out = e->child;
        return 0;
    }
    if ((t->nedges + 1) * 2 > t->capedges) {
        uint32_t cap = t->capedges * 2;
        edge_t *tab = calloc(cap, sizeof *tab);
        if (!tab) return -ENOMEM;
        for (uint32_t i = 0; i < t->capedges; i++)
            if (t->edges[i].child) put(tab, cap, &t->edges[i]);
        free(t->edges);
        t->edges = tab;
        t->capedges = cap;
    }
    if (t->npool + n > t->cappool) {
        size_t cap = t->cappool ? t->cappool * 2 : 1024;
        while (cap < t->npool + n) cap *= 2;
        char *q = realloc(t->pool, cap);
        if (!q) return -ENOMEM;
        t->pool = q;
        t->cappool = cap;
    }
    uint32_t id;
    if (add_node(t, &id) != 0) return -ENOMEM;
    memcpy(t->pool + t->npool, s, n);
    edge_t ne = { h, parent, id, (uint32_t)t->npool, (uint32_t)n };
    t->npool += n;
    put(t->edges, t->capedges, &ne);
    t->nedges++;
    *out = id;
    return 0;
}

static bool literal_seg(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] == '?' || s[i] == '*' || s[i] == '{' || s[i] == '}') return false;
    return true;
}

int mg_trie_insert(mg_trie_t *t, const char *pattern, uint32_t rank)
{
    uint32_t node = 0;
    size_t n = pattern ? strlen(pattern) : 0, depth = 0;
    if (n && pattern[0] == '/') {
        size_t i = 1;
        for (;;) {
            size_t e = i;
            while (e < n && pattern[e] != '/') e++;
            if (depth == MG_TRIE_MAX_DEPTH || !literal_seg(pattern + i, e - i)) break;
            int rc = child(t, node, pattern + i, e - i, &node);
            if (rc) return rc;
            depth++;
            if (e >= n) break;
            i = e + 1;
        }
    }
    node_t *nd = &t->nodes[node];
    if (nd->n && nd->ranks[nd->n - 1] == rank) return 0; /* same route, another pattern, same node */
    if (nd->n == nd->cap) {
        uint32_t cap = nd->cap ? nd->cap * 2 : 2;
        uint32_t *q = realloc(nd->ranks, cap * sizeof *q);
        if (!q) return -ENOMEM;
        nd->ranks = q;
        nd->cap = cap;
    }
    nd->ranks[nd->n++] = rank;
    return 0;
}

size_t mg_trie_collect(const mg_trie_t *t, const char *path, size_t len, mg_trie_list_t *out)
{
    size_t k = 0;
    uint32_t node = 0;
    if (t->nodes[0].n) out[k++] = (mg_trie_list_t){ t->nodes[0].ranks, t->nodes[0].n };
    if (!len || path[0] != '/' || t->nedges == 0) return k;
    size_t i = 1;
    for (size_t depth = 0; depth < MG_TRIE_MAX_DEPTH; depth++) {
        size_t e = i;
        while (e < len && path[e] != '/') e++;
        const edge_t *ed = find(t, node, path + i, e - i, seg_hash(node, path + i, e - i));
        if (!ed) break;
        node = ed->child;
        if (t->nodes[node].n) out[k++] = (mg_trie_list_t){ t->nodes[node].ranks, t->nodes[node].n };
        if (e >= len) break;
        i = e + 1;
    }
    return k;
}
