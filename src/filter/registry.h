/* registry: every predicate and filter meshgate knows, by Spring name.
 *
 * An entry gives the name, the argument fields in Spring's shortcut order
 * ("StripPrefix=2" -> parts=2), how the shortcut maps onto them, and the
 * compile/free/run functions. The config loader resolves names and args
 * through this table (so an unknown name, or an unknown argument, is an
 * error with a did-you-mean at load), the route table compiles each
 * configured instance once, and requests run the compiled state.
 * To add a filter: write its spec (compile + request/response) and list it
 * in registry.c. An entry with .unsupported set names something meshgate
 * recognises but refuses (e.g. CircuitBreaker until the resilience work):
 * the message names it instead of suggesting a spelling. */
#ifndef MG_FILTER_REGISTRY_H
#define MG_FILTER_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "filter/filter.h"

typedef enum { MG_PLUGIN_PREDICATE, MG_PLUGIN_FILTER } mg_plugin_kind_t;

enum {
    MG_ARG_REQUIRED = 1u << 0,
    MG_ARG_LIST = 1u << 1, /* several values (a YAML sequence, or gathered shortcut values) */
};

typedef enum {
    MG_SHORTCUT_FIELDS = 0,  /* values fill the fields in order */
    MG_SHORTCUT_GATHER,      /* all values go to the one (list) field */
    MG_SHORTCUT_GATHER_FLAG, /* as GATHER, but a last "true"/"false" fills the second field */
    MG_SHORTCUT_NONE,        /* Spring has no shortcut form: "Name=..." is refused, bare "Name" allowed */
} mg_shortcut_t;

typedef struct {
    const char *name;
    unsigned flags;
} mg_argspec_t;

#define MG_MAX_ARGS 14

struct mg_pred_env; /* route/predicate.h */

typedef struct mg_plugin_spec {
    const char *name;
    mg_plugin_kind_t kind;
    mg_argspec_t args[MG_MAX_ARGS];
    mg_shortcut_t shortcut;
    const char *unsupported; /* non-NULL: refused at load with this reason */

    /* Compile pc (already resolved against args[]) into *state. On error
     * return MG_ECONFIG with a complete "FILE:LINE:COL: message" in err. */
    int (*compile)(const mg_plugin_cfg_t *pc, void **state, char *err, size_t errlen);
    void (*free)(void *state);

    /* predicates */
    bool (*test)(const void *state, struct mg_pred_env *env);
    /* filters (either may be NULL) */
    int (*request)(const void *state, mg_req_view_t *req);
    void (*response)(const void *state, const mg_req_view_t *req, mg_resp_view_t *resp);
} mg_plugin_spec_t;

/* Exact (case-sensitive, as Spring) lookup; NULL if unknown. */
const mg_plugin_spec_t *mg_plugin_find(mg_plugin_kind_t kind, const char *name, size_t len);
/* The closest known name (Levenshtein, also case-insensitive), or NULL when
 * nothing is close. */
const char *mg_plugin_suggest(mg_plugin_kind_t kind, const char *name, size_t len);
/* Closest of names[0..n) to s, or NULL (shared by arg-name suggestions). */
const char *mg_suggest(const char *s, size_t len, const char *const *names, size_t n);

/* All entries of a kind (for docs, tests and `config print`). */
size_t mg_plugin_count(mg_plugin_kind_t kind);
const mg_plugin_spec_t *mg_plugin_at(mg_plugin_kind_t kind, size_t i);

/* ---- helpers for compile functions ---- */

/* The arg named key, or NULL when absent. */
const mg_arg_cfg_t *mg_plugin_arg(const mg_plugin_cfg_t *pc, const char *key);
/* First value of an arg, or def when absent. */
const char *mg_plugin_str(const mg_plugin_cfg_t *pc, const char *key, const char *def);
/* "FILE:LINE:COL: Name: message" at pos; returns MG_ECONFIG. */
int mg_plugin_error(char *err, size_t errlen, const mg_src_pos_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Error at the arg's value if present, else at the plugin. */
int mg_plugin_arg_error(char *err, size_t errlen, const mg_plugin_cfg_t *pc, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Spring DataSize: "5000000", "5MB", "1000B", "10KB" (binary multiples). */
int mg_parse_datasize(const char *s, uint64_t *out);
/* true/false (any case). */
int mg_parse_bool(const char *s, bool *out);

/* ---- the compiled chains a route carries (route.h: mg_route_t.compiled) ---- */

typedef struct {
    const mg_plugin_spec_t *spec;
    void *state;
} mg_plugin_inst_t;

typedef struct {
    mg_plugin_inst_t *v;
    size_t n;
    bool any_request, any_response;
} mg_chain_t;

typedef struct mg_route_compiled {
    mg_chain_t preds;
    mg_chain_t filters;
    const mg_chain_t *defaults; /* the table's default-filters (shared) */
    int path_pred;              /* index in preds of the Path predicate used by the trie, or -1 */
    struct mg_rl_limiter *limiter; /* route/route.c: the route's rate limiter, or NULL */
    const void *hits;           /* route/route.c: the table's match counters */
    uint32_t index;             /* declaration index of the route */
} mg_route_compiled_t;

/* Compile every entry of l; on error frees what was built. */
int mg_chain_build(mg_plugin_kind_t kind, const mg_plugin_list_t *l, mg_chain_t *out, char *err, size_t errlen);
void mg_chain_free(mg_chain_t *c);

/* Validate a configured list at load: compile and free. */
int mg_plugin_validate(const mg_plugin_cfg_t *pc, mg_plugin_kind_t kind, char *err, size_t errlen);

/* ---- URI templates in filter arguments ("/{segment}", "X-{sub}") ---- */

typedef struct {
    size_t n;
    struct {
        bool var;
        char *text; /* literal text or variable name */
        size_t len;
    } *parts;
    bool plain;     /* no variables: parts[0] (or nothing) is the whole value */
    char *whole;    /* the text as written */
    size_t whole_len;
} mg_tpl_t;

int mg_tpl_compile(mg_tpl_t *t, const char *s);
void mg_tpl_free(mg_tpl_t *t);
/* Expand with vars into arena memory; unknown variables expand to "". */
mg_slice_t mg_tpl_expand(const mg_tpl_t *t, const mg_path_vars_t *vars, mg_arena_t *a);

#endif
