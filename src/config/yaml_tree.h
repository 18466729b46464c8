/* yaml_tree: YAML text -> a plain node tree that remembers where every node
 * came from (file:line:col) and how every scalar was written, so config
 * dialects can give precise errors and tell `true` from "true".
 *
 * All nodes of one load live in an arena (mg_yarena_t) and are freed at
 * once with it. Parsing resolves anchors/aliases by copying (bounded by
 * MG_YAML_MAX_NODES) and applies "<<" merge keys, so the result is a true
 * tree; duplicate map keys are an error. Trees are never mutated after
 * parsing: mg_ynode_merge() builds new map nodes. Not thread-safe per
 * arena; different arenas are independent. */
#ifndef MG_CONFIG_YAML_TREE_H
#define MG_CONFIG_YAML_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MG_YAML_MAX_NODES 200000 /* per parsed text, aliases expanded */
#define MG_YAML_MAX_DEPTH 64

typedef enum {
    MG_YNODE_SCALAR = 0,
    MG_YNODE_SEQ,
    MG_YNODE_MAP,
} mg_ynode_kind_t;

typedef enum {
    MG_YSTYLE_PLAIN = 0,
    MG_YSTYLE_SINGLE, /* 'quoted' */
    MG_YSTYLE_DOUBLE, /* "quoted" */
    MG_YSTYLE_LITERAL, /* | block */
    MG_YSTYLE_FOLDED,  /* > block */
} mg_ystyle_t;

typedef struct mg_ynode mg_ynode_t;

typedef struct {
    mg_ynode_t *key; /* always a scalar */
    mg_ynode_t *value;
} mg_ypair_t;

struct mg_ynode {
    mg_ynode_kind_t kind;
    const char *file; /* the name given to mg_yaml_parse (not copied) */
    int line, col;    /* 1-based, after the offsets given to mg_yaml_parse */

    /* scalar */
    mg_ystyle_t style;
    const char *tag; /* explicit tag ("!!str" is "tag:yaml.org,2002:str"), else NULL */
    const char *str; /* NUL-terminated; may contain NULs, see len */
    size_t len;

    /* sequence */
    mg_ynode_t **items;
    size_t nitems;

    /* map: pairs in document order; keys unique */
    mg_ypair_t *pairs;
    size_t npairs;
    const uint32_t *sorted; /* pair indices ordered by key, for mg_ymap_get */
};

typedef struct mg_yarena mg_yarena_t;

mg_yarena_t *mg_yarena_new(void);
void mg_yarena_free(mg_yarena_t *a);
/* Zeroed memory that lives until mg_yarena_free; NULL when out of memory. */
void *mg_yarena_alloc(mg_yarena_t *a, size_t n);

/* Parse data[0..len) (named file in positions) into *out: a sequence node
 * whose items are the document roots (0 items for an empty text; an empty
 * document is a null scalar). line_offset/col_offset are added to every
 * position: use them for YAML embedded in another YAML's block scalar
 * (e.g. a Kubernetes ConfigMap data value). Returns 0, or MG_ECONFIG with
 * "FILE:LINE:COL: message" in err. file must outlive the tree. */
int mg_yaml_parse(mg_yarena_t *a, const char *file, const char *data, size_t len,
                  int line_offset, int col_offset, mg_ynode_t **out, char *err, size_t errlen);

/* Value for key in a map node, or NULL (also when map is not a map). */
mg_ynode_t *mg_ymap_get(const mg_ynode_t *map, const char *key);

/* Deep merge: two maps merge key by key (over wins, recursively); anything
 * else returns over. Neither input is modified. NULL on out of memory. */
mg_ynode_t *mg_ynode_merge(mg_yarena_t *a, mg_ynode_t *base, mg_ynode_t *over);

/* Plain scalar "", "~", "null" (any case) without a tag. */
bool mg_ynode_is_null(const mg_ynode_t *n);
/* A plain, untagged scalar: subject to YAML type resolution (int, bool, ...).
 * Quoted or "!!str" scalars are strings whatever their text. */
bool mg_ynode_is_plain(const mg_ynode_t *n);
/* "a map", "a sequence", "null", "a string", "an integer", "a boolean"... */
const char *mg_ynode_describe(const mg_ynode_t *n);

#endif
