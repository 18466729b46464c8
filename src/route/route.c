/* route: the compiled route table. For now a linear scan in declaration
 * order (first match wins); each candidate costs one mg_path_match, which
 * for literal and literal-prefix + ** patterns is a length check and a memcmp.
 * A later version replaces the scan with a trie over literal prefixes. */
#include "route/route.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/err.h"

struct mg_route_table {
    mg_route_t *routes;
    size_t n;
};

int mg_route_table_build(const mg_config_t *cfg, mg_route_table_t **out, char *err, size_t errlen)
{
    *out = NULL;
    mg_route_table_t *t = calloc(1, sizeof *t);
    if (!t || (cfg->nroutes && !(t->routes = calloc(cfg->nroutes, sizeof *t->routes)))) {
        free(t);
        if (err && errlen) snprintf(err, errlen, "out of memory");
        return MG_ECONFIG;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const mg_route_cfg_t *rc = &cfg->routes[i];
        char msg[256];
        mg_route_t *r = &t->routes[t->n];
        r->cfg = rc;
        if (mg_path_compile(rc->path, &r->path, msg, sizeof msg) != 0) {
            const mg_src_pos_t *p = rc->path_pos.file ? &rc->path_pos : &rc->pos;
            if (err && errlen)
                snprintf(err, errlen, "%s:%d:%d: bad path pattern: %s", p->file ? p->file : "?", p->line, p->col,
                         msg);
            mg_route_table_free(t);
            return MG_ECONFIG;
        }
        t->n++;
    }
    *out = t;
    return 0;
}

void mg_route_table_free(mg_route_table_t *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) mg_path_free(t->routes[i].path);
    free(t->routes);
    free(t);
}

const mg_route_t *mg_route_match(const mg_route_table_t *t, const mg_match_ctx_t *ctx, mg_path_vars_t *vars)
{
    const mg_http_msg_t *req = ctx->req;
    const char *p = req->path.p;
    size_t n = req->path.n;
    if (!p) {
        p = "";
        n = 0;
    }
    for (size_t i = 0; i < t->n; i++)
        if (mg_path_match(t->routes[i].path, p, n, vars)) return &t->routes[i];
    if (vars) vars->n = 0;
    return NULL;
}

size_t mg_route_count(const mg_route_table_t *t) { return t->n; }

const mg_route_t *mg_route_at(const mg_route_table_t *t, size_t i) { return i < t->n ? &t->routes[i] : NULL; }
