/* cfg_walk: the table-driven walker and scalar parsers shared by every
 * config dialect. See cfg_walk.h. */
#include "config/cfg_walk.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"

static int verror(mg_cfg_ctx_t *ctx, const char *file, int line, int col, const char *fmt, va_list ap)
{
    if (ctx->err && ctx->errlen) {
        int n = snprintf(ctx->err, ctx->errlen, "%s:%d:%d: ", file ? file : "?", line, col);
        if (n >= 0 && (size_t)n < ctx->errlen)
            vsnprintf(ctx->err + n, ctx->errlen - (size_t)n, fmt, ap);
    }
    return MG_ECONFIG;
}

int mg_cfg_error(mg_cfg_ctx_t *ctx, const mg_ynode_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = verror(ctx, at->file, at->line, at->col, fmt, ap);
    va_end(ap);
    return rc;
}

int mg_cfg_error_at(mg_cfg_ctx_t *ctx, const char *file, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = verror(ctx, file, line, col, fmt, ap);
    va_end(ap);
    return rc;
}

int mg_cfg_expect(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, mg_ynode_kind_t kind)
{
    if (v->kind == kind && !(kind == MG_YNODE_SCALAR && mg_ynode_is_null(v))) return 0;
    const char *want = kind == MG_YNODE_MAP ? "a map" : kind == MG_YNODE_SEQ ? "a sequence" : "a scalar";
    return mg_cfg_error(ctx, v, "%s: expected %s, got %s", what, want, mg_ynode_describe(v));
}

int mg_cfg_scalar(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char **out)
{
    if (v->kind != MG_YNODE_SCALAR || mg_ynode_is_null(v))
        return mg_cfg_error(ctx, v, "%s: expected a string, got %s", what, mg_ynode_describe(v));
    if (strlen(v->str) != v->len) return mg_cfg_error(ctx, v, "%s: NUL byte in string", what);
    *out = v->str;
    return 0;
}

/* Leading decimal digits of s into *out (saturating at UINT64_MAX). */
static size_t digits(const char *s, uint64_t *out, bool *ovf)
{
    size_t i = 0;
    uint64_t x = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) *ovf = true;
        else x = x * 10 + d;
    }
    *out = x;
    return i;
}

static int range(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t x, bool ovf,
                 uint64_t min, uint64_t max, const char *unit)
{
    if (!ovf && x >= min && x <= max) return 0;
    return mg_cfg_error(ctx, v, "%s: '%.40s' is out of range (%llu..%llu%s)", what, v->str,
                        (unsigned long long)min, (unsigned long long)max, unit);
}

int mg_cfg_uint(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min, uint64_t max,
                uint64_t *out)
{
    if (!mg_ynode_is_plain(v) || mg_ynode_is_null(v))
        return mg_cfg_error(ctx, v, "%s: expected an integer, got %s", what, mg_ynode_describe(v));
    bool ovf = false;
    size_t n = digits(v->str, out, &ovf);
    if (n == 0 || n != v->len) {
        if (v->str[0] == '-' && n == 0 && digits(v->str + 1, out, &ovf) == v->len - 1 && v->len > 1)
            return mg_cfg_error(ctx, v, "%s: must not be negative", what);
        return mg_cfg_error(ctx, v, "%s: expected an integer, got '%.40s'", what, v->str);
    }
    return range(ctx, what, v, *out, ovf, min, max, "");
}

int mg_cfg_size(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min, uint64_t max,
                uint64_t *out)
{
    if (v->kind != MG_YNODE_SCALAR || mg_ynode_is_null(v))
        return mg_cfg_error(ctx, v, "%s: expected a size, got %s", what, mg_ynode_describe(v));
    const char *s = v->str;
    bool ovf = false;
    uint64_t x;
    size_t n = digits(s, &x, &ovf);
    const char *u = s + n;
    unsigned shift = 0;
    bool ok = n > 0;
    if (ok && *u) {
        switch (*u | 0x20) {
        case 'k': shift = 10; break;
        case 'm': shift = 20; break;
        case 'g': shift = 30; break;
        case 't': shift = 40; break;
        case 'b': shift = 0; break;
        default: ok = false; break;
        }
        if (ok && (*u | 0x20) != 'b') {
            u++;
            if ((*u | 0x20) == 'i') u++;
            if ((*u | 0x20) == 'b') u++;
        } else if (ok) {
            u++;
        }
        if (*u) ok = false;
    }
    if (!ok || (size_t)(u - s) != v->len)
        return mg_cfg_error(ctx, v, "%s: bad size '%.40s' (expected bytes, or a number with a k, m or g suffix)",
                            what, s);
    if (shift && x > (UINT64_MAX >> shift)) ovf = true;
    else x <<= shift;
    *out = x;
    return range(ctx, what, v, x, ovf, min, max, " bytes");
}

int mg_cfg_duration(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t min_ms,
                    uint64_t max_ms, uint64_t *out)
{
    if (v->kind != MG_YNODE_SCALAR || mg_ynode_is_null(v))
        return mg_cfg_error(ctx, v, "%s: expected a duration, got %s", what, mg_ynode_describe(v));
    const char *s = v->str;
    bool ovf = false, ok = true;
    uint64_t total = 0, x;
    size_t i = 0, n = digits(s, &x, &ovf);
    if (n == 0) ok = false;
    else if (n == v->len) total = x; /* bare number: milliseconds */
    else {
        while (ok && i < v->len) {
            n = digits(s + i, &x, &ovf);
            if (n == 0) { ok = false; break; }
            i += n;
            uint64_t mul;
            if (s[i] == 'm' && s[i + 1] == 's') { mul = 1; i += 2; }
            else if (s[i] == 's') { mul = 1000; i++; }
            else if (s[i] == 'm') { mul = 60000; i++; }
            else if (s[i] == 'h') { mul = 3600000; i++; }
            else { ok = false; break; }
            if (x > UINT64_MAX / mul || total > UINT64_MAX - x * mul) ovf = true;
            else total += x * mul;
        }
    }
    if (!ok)
        return mg_cfg_error(ctx, v, "%s: bad duration '%.40s' (expected milliseconds, or e.g. 500ms, 2s, 1m, 1h)",
                            what, s);
    *out = total;
    return range(ctx, what, v, total, ovf, min_ms, max_ms, " ms");
}

int mg_cfg_bool(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, bool *out)
{
    if (mg_ynode_is_plain(v)) {
        if (!strcasecmp(v->str, "true")) { *out = true; return 0; }
        if (!strcasecmp(v->str, "false")) { *out = false; return 0; }
    }
    return mg_cfg_error(ctx, v, "%s: expected true or false, got %s", what, mg_ynode_describe(v));
}

int mg_cfg_enum(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, const char *const *names, int *out)
{
    const char *s;
    int rc = mg_cfg_scalar(ctx, what, v, &s);
    if (rc) return rc;
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0) { *out = i; return 0; }
    char list[256];
    size_t w = 0;
    list[0] = '\0';
    for (int i = 0; names[i] && w < sizeof list; i++) {
        int k = snprintf(list + w, sizeof list - w, "%s%s", i ? ", " : "", names[i]);
        if (k < 0) break;
        w += (size_t)k;
    }
    return mg_cfg_error(ctx, v, "%s: unknown value '%.40s' (expected one of: %s)", what, s, list);
}

static int unknown_key(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const mg_ynode_t *k)
{
    char list[512];
    size_t w = 0;
    list[0] = '\0';
    for (size_t i = 0; i < t->nkeys && w < sizeof list; i++) {
        int n = snprintf(list + w, sizeof list - w, "%s%s", i ? ", " : "", t->keys[i].name);
        if (n < 0) break;
        w += (size_t)n;
    }
    return mg_cfg_error(ctx, k, "unknown key '%.60s' %s (expected one of: %s)", k->str, t->where, list);
}

static int apply(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    char *field = (char *)obj + k->offset;
    uint64_t x = 0;
    int rc = 0;
    switch (k->type) {
    case MG_CFG_U32:
        if ((rc = mg_cfg_uint(ctx, k->name, v, k->min, k->max ? k->max : UINT32_MAX, &x)) == 0)
            *(uint32_t *)(void *)field = (uint32_t)x;
        break;
    case MG_CFG_SIZE32:
        if ((rc = mg_cfg_size(ctx, k->name, v, k->min, k->max ? k->max : UINT32_MAX, &x)) == 0)
            *(uint32_t *)(void *)field = (uint32_t)x;
        break;
    case MG_CFG_SIZE64:
        if ((rc = mg_cfg_size(ctx, k->name, v, k->min, k->max ? k->max : UINT64_MAX, &x)) == 0)
            *(uint64_t *)(void *)field = x;
        break;
    case MG_CFG_DURATION:
        if ((rc = mg_cfg_duration(ctx, k->name, v, k->min, k->max ? k->max : UINT32_MAX, &x)) == 0)
            *(uint32_t *)(void *)field = (uint32_t)x;
        break;
    case MG_CFG_STRING: {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, k->name, v, &s))) break;
        char *copy = strdup(s);
        if (!copy) return mg_cfg_error(ctx, v, "out of memory");
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = copy;
        break;
    }
    case MG_CFG_BOOL:
        rc = mg_cfg_bool(ctx, k->name, v, (bool *)(void *)field);
        break;
    case MG_CFG_ENUM:
        rc = mg_cfg_enum(ctx, k->name, v, k->names, (int *)(void *)field);
        break;
    case MG_CFG_TABLE:
        if ((rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP))) break;
        rc = mg_cfg_walk(ctx, k->sub, v, field);
        break;
    case MG_CFG_CUSTOM:
        rc = k->handler(ctx, k, v, obj);
        break;
    }
    return rc;
}

int mg_cfg_walk(mg_cfg_ctx_t *ctx, const mg_cfg_table_t *t, const mg_ynode_t *map, void *obj)
{
    bool null = mg_ynode_is_null(map);
    if (!null && map->kind != MG_YNODE_MAP)
        return mg_cfg_error(ctx, map, "expected a map %s, got %s", t->where, mg_ynode_describe(map));
    if (!null) {
        for (size_t i = 0; i < map->npairs; i++) {
            const mg_ynode_t *key = map->pairs[i].key;
            size_t j = 0;
            while (j < t->nkeys && !(strlen(t->keys[j].name) == key->len && !strcmp(t->keys[j].name, key->str)))
                j++;
            if (j == t->nkeys) return unknown_key(ctx, t, key);
        }
    }
    for (size_t j = 0; j < t->nkeys; j++) {
        const mg_cfg_key_t *k = &t->keys[j];
        const mg_ynode_t *v = null ? NULL : mg_ymap_get(map, k->name);
        if (!v || mg_ynode_is_null(v)) {
            if (k->flags & MG_CFG_REQUIRED)
                return mg_cfg_error(ctx, v ? v : map, "missing required key '%s' %s", k->name, t->where);
            continue;
        }
        int rc = apply(ctx, k, v, obj);
        if (rc) return rc;
    }
    return 0;
}
