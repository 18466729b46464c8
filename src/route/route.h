/* route: the compiled route table of one config snapshot.
 *
 * Built by the control thread from mg_config_t, immutable afterwards and
 * shared read-only by every worker; it lives as long as its snapshot.
 * Matching returns the first route, in order, whose predicates all hold. */
#ifndef MG_ROUTE_ROUTE_H
#define MG_ROUTE_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "http/http1.h"
#include "route/path.h"

typedef struct {
    const mg_route_cfg_t *cfg; /* id, cluster name and index, position */
    mg_path_pattern_t *path;
} mg_route_t;

typedef struct mg_route_table mg_route_table_t;

/* Returns 0, or MG_ECONFIG with "FILE:LINE:COL: message" in err. */
int mg_route_table_build(const mg_config_t *cfg, mg_route_table_t **out, char *err, size_t errlen);
void mg_route_table_free(mg_route_table_t *t);

/* First matching route for a parsed request, or NULL. vars may be NULL. */
const mg_route_t *mg_route_match(const mg_route_table_t *t, const mg_http_msg_t *req, mg_path_vars_t *vars);

size_t mg_route_count(const mg_route_table_t *t);
const mg_route_t *mg_route_at(const mg_route_table_t *t, size_t i);

#endif
