/* path: Spring PathPattern matching for route predicates.
 *
 * Syntax (Spring's PathPattern): "?" one char, "*" zero or more chars
 * within a segment, "**" zero or more segments (only at the end),
 * "{name}" one segment captured, "{name:regex}" (regex over the segment;
 * first version: compiled with POSIX ERE), "{*name}" zero or more trailing
 * segments captured (with the leading '/'). Literal matching is
 * case-sensitive; a pattern without a trailing slash also matches the path
 * with one ("/api/users" matches "/api/users/"), as Spring's default.
 * A compiled pattern is immutable: share it between threads. */
#ifndef MG_ROUTE_PATH_H
#define MG_ROUTE_PATH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/slice.h"

#define MG_PATH_MAX_VARS 16

typedef struct mg_path_pattern mg_path_pattern_t;

typedef struct {
    size_t n;
    mg_slice_t name[MG_PATH_MAX_VARS];  /* into the compiled pattern */
    mg_slice_t value[MG_PATH_MAX_VARS]; /* into the matched path */
} mg_path_vars_t;

/* Returns 0 and *out, or MG_ECONFIG with a message (no position) in err. */
int mg_path_compile(const char *pattern, mg_path_pattern_t **out, char *err, size_t errlen);
void mg_path_free(mg_path_pattern_t *p);

/* path is the request path without the query. vars may be NULL. */
bool mg_path_match(const mg_path_pattern_t *p, const char *path, size_t len, mg_path_vars_t *vars);

/* Does the pattern end in "**" or "{*name}" (then it matches any tail,
 * so a trailing slash is never "extra")? */
bool mg_path_has_tail(const mg_path_pattern_t *p);

/* The pattern text as given. */
const char *mg_path_pattern_text(const mg_path_pattern_t *p);

#endif
