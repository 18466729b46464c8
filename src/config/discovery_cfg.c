/* discovery_cfg: the registry backend keys of the native discovery: block
 * (backend, url, prefix); docs/discovery-redis.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_int.h"
#include "core/err.h"

static const char *const backends[] = { "embedded", "redis", NULL };

int mg_cfg_discovery_backend(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    for (int i = 0; backends[i]; i++)
        if (!strcmp(s, backends[i])) {
            cfg->discovery.backend = i;
            cfg->discovery.backend_pos = mg_pos_of(v);
            return 0;
        }
    const char *sug = mg_suggest(s, strlen(s), backends, 2);
    if (sug) return mg_cfg_error(ctx, v, "backend: unknown registry backend '%.40s' (did you mean %s?)", s, sug);
    return mg_cfg_error(ctx, v, "backend: unknown registry backend '%.40s' (expected embedded or redis)", s);
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || c == ':';
}

/* redis://[[user]:password@]host[:port][/db]; [v6] hosts in brackets. */
int mg_cfg_discovery_url(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (!strncmp(s, "rediss://", 9)) return mg_cfg_error(ctx, v, "url: Redis over TLS (rediss://) is not supported");
    if (strncmp(s, "redis://", 8) != 0)
        return mg_cfg_error(ctx, v, "url: expected redis://host:port[/db] (or redis://:password@host:port), got '%.80s'", s);
    const char *p = s + 8;
    /* the last '@' of the authority: a password may contain '@' */
    const char *at = memrchr(p, '@', strcspn(p, "/?#"));
    size_t auth_len = at ? (size_t)(at - p) : 0;
    char *password = NULL;
    if (at) {
        if (!auth_len) return mg_cfg_error(ctx, v, "url: empty credentials before '@' in '%.80s'", s);
        /* ":pass" -> password; "user:pass" kept whole (AUTH user pass) */
        const char *cred = p[0] == ':' ? p + 1 : p;
        size_t cl = auth_len - (size_t)(cred - p);
        if (!cl) return mg_cfg_error(ctx, v, "url: empty password in '%.80s'", s);
        if (!(password = strndup(cred, cl))) return mg_cfg_error(ctx, v, "out of memory");
        p += auth_len + 1;
    }
    size_t hl = strcspn(p, "/?#");
    const char *rest = p + hl, *hs = p, *colon = NULL;
    size_t hn = hl;
    if (hl && p[0] == '[') {
        const char *rb = memchr(p, ']', hl);
        if (!rb) goto bad_host;
        hs = p + 1;
        hn = (size_t)(rb - p) - 1;
        if (rb + 1 < p + hl) {
            if (rb[1] != ':') goto bad_host;
            colon = rb + 1;
        }
    } else {
        colon = memchr(p, ':', hl);
        if (colon) hn = (size_t)(colon - p);
    }
    if (!hn) goto bad_host;
    for (size_t i = 0; i < hn; i++)
        if (!host_char(hs[i]) || (hs[i] == ':' && p[0] != '[')) goto bad_host;
    unsigned long port = 6379;
    if (colon) {
        char *end;
        const char *ps = colon + 1;
        size_t pl = (size_t)(p + hl - ps);
        port = pl && pl <= 5 ? strtoul(ps, &end, 10) : 0;
        if (!pl || pl > 5 || end != p + hl || port < 1 || port > 65535) {
            free(password);
            return mg_cfg_error(ctx, v, "url: bad port '%.*s' (expected 1..65535)", (int)(pl > 20 ? 20 : pl), ps);
        }
    }
    unsigned long db = 0;
    if (*rest && strcmp(rest, "/") != 0) {
        char *end;
        if (rest[0] != '/' || !rest[1] || rest[1] < '0' || rest[1] > '9' ||
            (db = strtoul(rest + 1, &end, 10), *end) || db > 1000000) {
            free(password);
            return mg_cfg_error(ctx, v, "url: expected a database number after the address, got '%.60s' (options are not supported)", rest);
        }
    }
    char *host = strndup(hs, hn);
    if (!host) {
        free(password);
        return mg_cfg_error(ctx, v, "out of memory");
    }
    free(cfg->discovery.redis.host);
    free(cfg->discovery.redis.password);
    cfg->discovery.redis.host = host;
    cfg->discovery.redis.port = (uint16_t)port;
    cfg->discovery.redis.db = (uint32_t)db;
    cfg->discovery.redis.password = password;
    return 0;
bad_host:
    free(password);
    return mg_cfg_error(ctx, v, "url: bad host in '%.80s'", s);
}

int mg_cfg_discovery_prefix(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_config_t *cfg = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    size_t n = strlen(s);
    if (!n || n > 200) return mg_cfg_error(ctx, v, "prefix: must be 1-200 characters");
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return mg_cfg_error(ctx, v, "prefix: no spaces or control characters");
    char *c = strdup(s);
    if (!c) return mg_cfg_error(ctx, v, "out of memory");
    free(cfg->discovery.prefix);
    cfg->discovery.prefix = c;
    return 0;
}

/* After the walk: backend redis without url takes the native redis: block
 * (which is walked before discovery:); without either it is an error. */
int mg_cfg_discovery_finish(mg_cfg_ctx_t *ctx)
{
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    if (!cfg->discovery.prefix && !(cfg->discovery.prefix = strdup("meshgate:registry")))
        return mg_errf(ctx->err, ctx->errlen, "out of memory");
    if (cfg->discovery.backend != MG_DISCO_REDIS || cfg->discovery.redis.host) return 0;
    if (cfg->redis.enabled && cfg->redis.host) {
        if (!(cfg->discovery.redis.host = strdup(cfg->redis.host))) return mg_errf(ctx->err, ctx->errlen, "out of memory");
        cfg->discovery.redis.port = cfg->redis.port;
        return 0;
    }
    const mg_src_pos_t *p = &cfg->discovery.backend_pos;
    return mg_errf(ctx->err, ctx->errlen,
                   "%s:%d:%d: backend: redis needs discovery.url (redis://host:port) or a top-level redis: block",
                   p->file ? p->file : "?", p->line, p->col);
}
