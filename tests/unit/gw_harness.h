/* gw_harness: shared by test_filters.c, test_predicates.c and test_scg.c.
 * Loads a one-file config, builds the route table, parses a raw request
 * with the real HTTP parser, matches it and fills the filter views the way
 * the proxy does. */
#ifndef GW_HARNESS_H
#define GW_HARNESS_H

#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/arena.h"
#include "filter/filter.h"
#include "http/http1.h"
#include "route/route.h"

typedef struct {
    mg_config_t *cfg;
    mg_route_table_t *t;
    mg_arena_t *arena;
    mg_http_msg_t msg;
    char raw[8192];
    mg_req_view_t req;
    const mg_route_t *route;
    char err[512];
} gw_t;

static inline int gw_load(gw_t *g, const char *yaml)
{
    memset(g, 0, sizeof *g);
    mg_config_buffer_t b = { "t.yaml", yaml, strlen(yaml) };
    if (mg_config_load_buffers(&b, 1, &g->cfg, g->err, sizeof g->err) != 0) return -1;
    if (mg_route_table_build(g->cfg, &g->t, g->err, sizeof g->err) != 0) return -1;
    g->arena = mg_arena_new(4096, 1 << 20);
    return 0;
}

static inline void gw_free(gw_t *g)
{
    mg_route_table_free(g->t);
    mg_config_free(g->cfg);
    mg_arena_free(g->arena);
}

/* Parse "GET /x HTTP/1.1\r\nHost: h\r\n..." (the final CRLF is added), match
 * and fill the request view. Returns the matched route id or NULL. */
static inline const char *gw_request(gw_t *g, const char *head, const char *peer, int64_t now_ms, uint64_t *rng)
{
    snprintf(g->raw, sizeof g->raw, "%s\r\n\r\n", head);
    mg_http_msg_reset(&g->msg);
    memset(&g->msg, 0, sizeof g->msg);
    int n = mg_http_parse_request(g->raw, strlen(g->raw), &g->msg, NULL);
    if (n <= 0) {
        fprintf(stderr, "parse failed (%d): %s\n", n, g->msg.error ? g->msg.error : "?");
        return NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (peer && strchr(peer, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, peer, &s6->sin6_addr);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, peer ? peer : "127.0.0.1", &s4->sin_addr);
    }
    mg_arena_reset(g->arena);
    memset(&g->req, 0, sizeof g->req);
    mg_match_ctx_t ctx = { .req = &g->msg, .peer = (struct sockaddr *)&ss, .rng = rng, .now_ms = now_ms };
    g->route = mg_route_match(g->t, &ctx, &g->req.vars);
    if (!g->route) return NULL;
    g->req.arena = g->arena;
    g->req.msg = &g->msg;
    g->req.method = g->msg.method;
    g->req.path = g->msg.path;
    g->req.query = g->msg.query;
    g->req.host = g->msg.host;
    for (uint32_t i = 0; i < g->msg.nheaders; i++) {
        const mg_http_header_t *h = &g->msg.headers[i];
        if (h->flags & (MG_HDR_HOP | MG_HDR_HOST)) continue;
        mg_hdr_add(g->arena, &g->req.headers, h->name, h->value);
    }
    return g->route->cfg->id;
}

/* "path?query" as the upstream would get it */
static inline const char *gw_target(gw_t *g, char *buf, size_t n)
{
    snprintf(buf, n, "%.*s%s%.*s", (int)g->req.path.n, g->req.path.p, g->req.query.p ? "?" : "",
             (int)(g->req.query.p ? g->req.query.n : 0), g->req.query.p ? g->req.query.p : "");
    return buf;
}

/* "Name: value\n" lines */
static inline const char *gw_headers(const mg_hdr_list_t *l, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = '\0';
    for (uint32_t i = 0; i < l->n && o < n; i++) {
        int k = snprintf(buf + o, n - o, "%.*s: %.*s\n", (int)l->v[i].name.n, l->v[i].name.p, (int)l->v[i].value.n,
                         l->v[i].value.p);
        if (k < 0) break;
        o += (size_t)k;
    }
    return buf;
}

#endif
