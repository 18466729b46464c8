/* cfg_walk: declarative key tables over a yaml_tree map (internal to
 * src/config). A table lists each key a map may hold with its type, where
 * the value goes (an offset into the object being filled), bounds, and an
 * optional handler for anything structured. mg_cfg_walk() rejects unknown
 * keys (at the key), applies known ones in table order (so a table can
 * rely on earlier keys being set), and reports missing required keys.
 * Every dialect (native, Spring Cloud Gateway, Istio) is a set of tables. */
#ifndef MG_CONFIG_CFG_WALK_H
#define MG_CONFIG_CFG_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/yaml_tree.h"

typedef struct mg_cfg_ctx {
    char *err;
    size_t errlen;
    void *user; /* the dialect's state, e.g. the mg_config_t being built */
} mg_cfg_ctx_t;

typedef enum {
    MG_CFG_U32,      /* plain integer in [min, max] -> uint32_t */
    MG_CFG_SIZE32,   /* bytes, "512k", "10m", "1g" -> uint32_t */
    MG_CFG_SIZE64,   /* same -> uint64_t */
    MG_CFG_DURATION, /* integer ms, or "500ms", "2s", "1m", "1h", "1m30s" -> uint32_t ms */
    MG_CFG_STRING,   /* any non-null scalar -> malloc'd char * (old value freed) */
    MG_CFG_BOOL,     /* plain true/false -> bool */
    MG_CFG_ENUM,     /* one of names[] -> int (index) */
    MG_CFG_TABLE,    /* a nested map walked with sub, object at obj + offset */
    MG_CFG_CUSTOM,   /* handler(ctx, key, value, obj) */
} mg_cfg_type_t;

enum { MG_CFG_REQUIRED = 1u << 0 };

typedef struct mg_cfg_key mg_cfg_key_t;
typedef struct mg_cfg_table mg_cfg_table_t;

/* value is never NULL nor null (null values count as absent). */
typedef int (*mg_cfg_handler_t)(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *key, const mg_ynode_t *value,
                                void *obj);

struct mg_cfg_key {
    const char *name;
    mg_cfg_type_t type;
    size_t offset;
    uint64_t min, max;          /* integers, sizes, durations (ms) */
    const char *const *names;   /* MG_CFG_ENUM, NULL-terminated */
    const mg_cfg_table_t *sub;  /* MG_CFG_TABLE */
    mg_cfg_handler_t handler;   /* MG_CFG_CUSTOM */
    unsigned flags;             /* MG_CFG_* */
};

struct mg_cfg_table {
    const char *where; /* for messages: "in route", "at top level" */
    const mg_cfg_key_t *keys;
    size_t nkeys;
};

#define MG_CFG_TABLE_OF(where_, keys_) { (where_), (keys_), sizeof(keys_) / sizeof((keys_)[0]) }

/* Walk map (a null node counts as an empty map) against t, filling obj. */
int mg_cfg_walk(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const mg_ynode_t *map, void *obj);

/* "FILE:LINE:COL: " of at, then the message. Returns MG_ECONFIG. */
int mg_cfg_error(mg_cfg_ctx_t *ctx, const mg_ynode_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same at a position kept after the walk (file NULL prints "?"). */
int mg_cfg_error_at(mg_cfg_ctx_t *ctx, const char *file, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Value parsers; what names the key in messages ("max_headers: ..."). */
int mg_cfg_uint(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min, uint64_t max,
                uint64_t *out);
int mg_cfg_size(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min, uint64_t max,
                uint64_t *out);
int mg_cfg_duration(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min_ms,
                    uint64_t max_ms, uint64_t *out);
int mg_cfg_bool(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, bool *out);
/* A non-null scalar's text (not copied; no NUL bytes inside). */
int mg_cfg_scalar(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char **out);
int mg_cfg_enum(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *const *names,
                int *out);
/* Fails unless v is a node of that kind: "what: expected a map, got a sequence". */
int mg_cfg_expect(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, mg_ynode_kind_t kind);

#endif
