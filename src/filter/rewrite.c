/* rewrite: filters that change the request path or query (Spring's
 * PrefixPath, RewritePath, SetPath, StripPrefix, AddRequestParameter,
 * RemoveRequestParameter). They work on the raw (undecoded) path as Spring
 * does (getRawPath). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "filter/filters_int.h"
#include "route/rx.h"

static int tpl_compile(const mg_plugin_cfg_t *pc, const char *key, void **out, char *err, size_t errlen, bool slash)
{
    const char *v = mg_plugin_str(pc, key, "");
    if (slash && v[0] != '/') return mg_plugin_arg_error(err, errlen, pc, key, "%s: must start with '/', got '%.60s'", key, v);
    if (strpbrk(v, " \t\r\n?#")) return mg_plugin_arg_error(err, errlen, pc, key, "%s: must not contain spaces, '?' or '#'", key);
    mg_tpl_t *t = calloc(1, sizeof *t);
    if (!t || mg_tpl_compile(t, v) != 0) {
        free(t);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    *out = t;
    return 0;
}

static void tpl_free(void *st)
{
    if (!st) return;
    mg_tpl_free(st);
    free(st);
}

/* ---- PrefixPath ---- */

static int prefix_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return tpl_compile(pc, "prefix", out, err, errlen, true);
}

static int prefix_req(const void *st, mg_req_view_t *req)
{
    mg_slice_t p = mg_tpl_expand(st, &req->vars, req->arena);
    if (!p.p) return -500;
    mg_slice_t np = mg_f_cat(req->arena, p, req->path);
    if (!np.p) return -500;
    req->path = np;
    return 0;
}

const mg_plugin_spec_t mg_f_prefix_path = {
    .name = "PrefixPath", .kind = MG_PLUGIN_FILTER, .args = { { "prefix", MG_ARG_REQUIRED } },
    .compile = prefix_compile, .free = tpl_free, .request = prefix_req,
};

/* ---- SetPath ---- */

static int setpath_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return tpl_compile(pc, "template", out, err, errlen, true);
}

static int setpath_req(const void *st, mg_req_view_t *req)
{
    mg_slice_t p = mg_tpl_expand(st, &req->vars, req->arena);
    if (!p.p) return -500;
    req->path = p;
    return 0;
}

const mg_plugin_spec_t mg_f_set_path = {
    .name = "SetPath", .kind = MG_PLUGIN_FILTER, .args = { { "template", MG_ARG_REQUIRED } },
    .compile = setpath_compile, .free = tpl_free, .request = setpath_req,
};

/* ---- StripPrefix ---- */

static int strip_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, "parts", "1");
    size_t nd = strspn(v, "0123456789");
    if (nd == 0 || nd > 4 || v[nd])
        return mg_plugin_arg_error(err, errlen, pc, "parts", "parts: expected an integer 0..9999, got '%.40s'", v);
    unsigned *s = malloc(sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    *s = (unsigned)atoi(v);
    *out = s;
    return 0;
}

/* Spring: tokenize on '/' dropping empty tokens, skip `parts` of them, join
 * the rest under "/", keep a trailing slash when something is left. */
static int strip_req(const void *st, mg_req_view_t *req)
{
    unsigned parts = *(const unsigned *)st;
    mg_slice_t p = req->path;
    char *out = mg_arena_alloc(req->arena, p.n + 2);
    if (!out) return -500;
    size_t o = 0, tok = 0, i = 0;
    out[o++] = '/';
    while (i < p.n) {
        while (i < p.n && p.p[i] == '/') i++;
        size_t s = i;
        while (i < p.n && p.p[i] != '/') i++;
        if (i == s) break;
        if (tok++ < parts) continue;
        if (o > 1) out[o++] = '/';
        memcpy(out + o, p.p + s, i - s);
        o += i - s;
    }
    if (o > 1 && p.n && p.p[p.n - 1] == '/') out[o++] = '/';
    out[o] = '\0';
    req->path = mg_slice(out, o);
    return 0;
}

const mg_plugin_spec_t mg_f_strip_prefix = {
    .name = "StripPrefix", .kind = MG_PLUGIN_FILTER, .args = { { "parts", 0 } },
    .compile = strip_compile, .free = free, .request = strip_req,
};

/* ---- RewritePath ---- */

typedef struct {
    mg_rx_t rx;
    mg_rx_repl_t repl;
} rw_st;

static void rw_free(void *st)
{
    rw_st *s = st;
    if (!s) return;
    mg_rx_repl_free(&s->repl);
    mg_rx_free(&s->rx);
    free(s);
}

static int rw_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    rw_st *s = calloc(1, sizeof *s);
    char msg[256];
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    if (mg_rx_compile(&s->rx, mg_plugin_str(pc, "regexp", ""), false, msg, sizeof msg) != 0) {
        free(s);
        return mg_plugin_arg_error(err, errlen, pc, "regexp", "regexp: %s", msg);
    }
    const char *repl = mg_plugin_str(pc, "replacement", "");
    if (strpbrk(repl, " \t\r\n#")) {
        rw_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "replacement", "replacement: must not contain spaces or '#'");
    }
    if (mg_rx_repl_compile(&s->repl, &s->rx, repl, msg, sizeof msg) != 0) {
        rw_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "replacement", "replacement: %s", msg);
    }
    *out = s;
    return 0;
}

static int rw_req(const void *st, mg_req_view_t *req)
{
    const rw_st *s = st;
    mg_slice_t out;
    if (mg_rx_replace_all(&s->rx, &s->repl, req->path, req->arena, &out) != 0) return -500;
    if (out.n == 0 || out.p[0] != '/') {
        out = mg_f_cat(req->arena, MG_SLICE_LIT("/"), out);
        if (!out.p) return -500;
    }
    req->path = out;
    return 0;
}

const mg_plugin_spec_t mg_f_rewrite_path = {
    .name = "RewritePath", .kind = MG_PLUGIN_FILTER,
    .args = { { "regexp", MG_ARG_REQUIRED }, { "replacement", MG_ARG_REQUIRED } },
    .compile = rw_compile, .free = rw_free, .request = rw_req,
};

/* ---- AddRequestParameter ---- */

typedef struct {
    char *name;
    mg_tpl_t value;
} param_st;

static void param_free(void *st)
{
    param_st *s = st;
    if (!s) return;
    free(s->name);
    mg_tpl_free(&s->value);
    free(s);
}

static bool query_safe(const char *v) { return !strpbrk(v, " \t\r\n#&"); }

static int param_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *n = mg_plugin_str(pc, "name", ""), *v = mg_plugin_str(pc, "value", NULL);
    if (!*n || !query_safe(n) || strchr(n, '='))
        return mg_plugin_arg_error(err, errlen, pc, "name", "name: bad query parameter name '%.60s'", n);
    if (v && !query_safe(v))
        return mg_plugin_arg_error(err, errlen, pc, "value", "value: must not contain spaces, '&' or '#' (percent-encode them)");
    param_st *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(n)) || (v && mg_tpl_compile(&s->value, v) != 0)) {
        param_free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    *out = s;
    return 0;
}

static int addparam_req(const void *st, mg_req_view_t *req)
{
    const param_st *s = st;
    mg_slice_t v = mg_tpl_expand(&s->value, &req->vars, req->arena);
    size_t nl = strlen(s->name), ql = req->query.p ? req->query.n : 0;
    bool amp = ql > 0 && req->query.p[ql - 1] != '&';
    char *q = mg_arena_alloc(req->arena, ql + amp + nl + 1 + v.n + 1);
    if (!q || !v.p) return -500;
    size_t o = 0;
    if (ql) memcpy(q, req->query.p, ql);
    o = ql;
    if (amp) q[o++] = '&';
    memcpy(q + o, s->name, nl);
    o += nl;
    q[o++] = '=';
    memcpy(q + o, v.p, v.n);
    o += v.n;
    q[o] = '\0';
    req->query = mg_slice(q, o);
    return 0;
}

const mg_plugin_spec_t mg_f_add_request_parameter = {
    .name = "AddRequestParameter", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "value", MG_ARG_REQUIRED } },
    .compile = param_compile, .free = param_free, .request = addparam_req,
};

/* ---- RemoveRequestParameter ---- */

static int hexval(char c) { return isdigit((unsigned char)c) ? c - '0' : (tolower((unsigned char)c) - 'a' + 10); }

/* Does the raw key k, percent-decoded, equal name? */
static bool key_is(mg_slice_t k, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < k.n; i++, j++) {
        char c = k.p[i];
        if (c == '%' && i + 2 < k.n && isxdigit((unsigned char)k.p[i + 1]) && isxdigit((unsigned char)k.p[i + 2])) {
            c = (char)(hexval(k.p[i + 1]) * 16 + hexval(k.p[i + 2]));
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (name[j] != c) return false;
    }
    return name[j] == '\0';
}

static int rmparam_req(const void *st, mg_req_view_t *req)
{
    const param_st *s = st;
    mg_slice_t q = req->query;
    if (!q.p || q.n == 0) return 0;
    char *out = mg_arena_alloc(req->arena, q.n + 1);
    if (!out) return -500;
    size_t o = 0, b = 0;
    bool removed = false;
    for (size_t i = 0; i <= q.n; i++) {
        if (i < q.n && q.p[i] != '&') continue;
        mg_slice_t pair = mg_slice(q.p + b, i - b);
        b = i + 1;
        if (pair.n == 0) continue;
        const char *eq = memchr(pair.p, '=', pair.n);
        if (key_is(mg_slice(pair.p, eq ? (size_t)(eq - pair.p) : pair.n), s->name)) {
            removed = true;
            continue;
        }
        if (o) out[o++] = '&';
        memcpy(out + o, pair.p, pair.n);
        o += pair.n;
    }
    if (!removed) return 0;
    out[o] = '\0';
    req->query = o ? mg_slice(out, o) : MG_SLICE_NULL;
    return 0;
}

const mg_plugin_spec_t mg_f_remove_request_parameter = {
    .name = "RemoveRequestParameter", .kind = MG_PLUGIN_FILTER, .args = { { "name", MG_ARG_REQUIRED } },
    .compile = param_compile, .free = param_free, .request = rmparam_req,
};
