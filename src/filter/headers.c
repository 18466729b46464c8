/* headers: request and response header filters (Spring's
 * AddRequestHeader, AddRequestHeadersIfNotPresent, AddResponseHeader,
 * DedupeResponseHeader, MapRequestHeader, Remove*Header, Set*Header,
 * RewriteResponseHeader, PreserveHostHeader, SetRequestHostHeader).
 * Values may hold URI variables ("{segment}") from Path/Host predicates. */
#include <stdlib.h>
#include <string.h>

#include "filter/filters_int.h"
#include "route/rx.h"

/* ---- shared ---- */

static bool is_tchar(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("!#$%&'*+-.^_`|~", c);
}

int mg_f_check_header_name(const mg_plugin_cfg_t *pc, const char *key, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, key, "");
    bool ok = *v != '\0';
    for (const char *p = v; ok && *p; p++) ok = is_tchar(*p);
    if (!ok) return mg_plugin_arg_error(err, errlen, pc, key, "%s: bad header name '%.60s'", key, v);
    return 0;
}

int mg_f_check_header_value(const mg_plugin_cfg_t *pc, const char *key, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, key, "");
    if (strpbrk(v, "\r\n")) return mg_plugin_arg_error(err, errlen, pc, key, "%s: header value must not contain CR or LF", key);
    return 0;
}

mg_slice_t mg_f_cat(mg_arena_t *a, mg_slice_t x, mg_slice_t y)
{
    char *p = mg_arena_alloc(a, x.n + y.n + 1);
    if (!p) return MG_SLICE_NULL;
    if (x.n) memcpy(p, x.p, x.n);
    if (y.n) memcpy(p + x.n, y.p, y.n);
    p[x.n + y.n] = '\0';
    return mg_slice(p, x.n + y.n);
}

/* name + templated value */
typedef struct {
    char *name;
    size_t len;
    mg_tpl_t value;
} nv_st;

static void nv_free(void *st)
{
    nv_st *s = st;
    if (!s) return;
    free(s->name);
    mg_tpl_free(&s->value);
    free(s);
}

static int nv_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen, const char *nkey,
                      const char *vkey)
{
    int rc = mg_f_check_header_name(pc, nkey, err, errlen);
    if (rc == 0 && vkey) rc = mg_f_check_header_value(pc, vkey, err, errlen);
    if (rc) return rc;
    nv_st *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(mg_plugin_str(pc, nkey, ""))) ||
        (vkey && mg_tpl_compile(&s->value, mg_plugin_str(pc, vkey, "")) != 0)) {
        nv_free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->len = strlen(s->name);
    *out = s;
    return 0;
}

static int name_value_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return nv_compile(pc, out, err, errlen, "name", "value");
}

static int name_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    return nv_compile(pc, out, err, errlen, "name", NULL);
}

#define NAME(s) mg_slice((s)->name, (s)->len)

/* ---- AddRequestHeader / SetRequestHeader / RemoveRequestHeader ---- */

static int add_req(const void *st, mg_req_view_t *req)
{
    const nv_st *s = st;
    mg_slice_t v = mg_tpl_expand(&s->value, &req->vars, req->arena);
    if (!v.p || mg_hdr_add(req->arena, &req->headers, NAME(s), v) != 0) return -500;
    return 0;
}

static int set_req(const void *st, mg_req_view_t *req)
{
    const nv_st *s = st;
    mg_slice_t v = mg_tpl_expand(&s->value, &req->vars, req->arena);
    if (!v.p || mg_hdr_set(req->arena, &req->headers, NAME(s), v) != 0) return -500;
    return 0;
}

static int remove_req(const void *st, mg_req_view_t *req)
{
    const nv_st *s = st;
    mg_hdr_remove(&req->headers, NAME(s));
    return 0;
}

const mg_plugin_spec_t mg_f_add_request_header = {
    .name = "AddRequestHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "value", MG_ARG_REQUIRED } },
    .compile = name_value_compile, .free = nv_free, .request = add_req,
};
const mg_plugin_spec_t mg_f_set_request_header = {
    .name = "SetRequestHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "value", MG_ARG_REQUIRED } },
    .compile = name_value_compile, .free = nv_free, .request = set_req,
};
const mg_plugin_spec_t mg_f_remove_request_header = {
    .name = "RemoveRequestHeader", .kind = MG_PLUGIN_FILTER, .args = { { "name", MG_ARG_REQUIRED } },
    .compile = name_compile, .free = nv_free, .request = remove_req,
};

/* ---- AddResponseHeader / SetResponseHeader / RemoveResponseHeader ---- */

static void add_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const nv_st *s = st;
    mg_slice_t v = mg_tpl_expand(&s->value, &req->vars, resp->arena);
    if (v.p) mg_hdr_add(resp->arena, &resp->headers, NAME(s), v);
}

static void set_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const nv_st *s = st;
    mg_slice_t v = mg_tpl_expand(&s->value, &req->vars, resp->arena);
    if (v.p) mg_hdr_set(resp->arena, &resp->headers, NAME(s), v);
}

static void remove_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const nv_st *s = st;
    mg_hdr_remove(&resp->headers, NAME(s));
}

const mg_plugin_spec_t mg_f_add_response_header = {
    .name = "AddResponseHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "value", MG_ARG_REQUIRED } },
    .compile = name_value_compile, .free = nv_free, .response = add_resp,
};
const mg_plugin_spec_t mg_f_set_response_header = {
    .name = "SetResponseHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "value", MG_ARG_REQUIRED } },
    .compile = name_value_compile, .free = nv_free, .response = set_resp,
};
const mg_plugin_spec_t mg_f_remove_response_header = {
    .name = "RemoveResponseHeader", .kind = MG_PLUGIN_FILTER, .args = { { "name", MG_ARG_REQUIRED } },
    .compile = name_compile, .free = nv_free, .response = remove_resp,
};

/* ---- AddRequestHeadersIfNotPresent: "Name:value" items ---- */

typedef struct {
    size_t n;
    nv_st *h;
} multi_st;

static void multi_free(void *st)
{
    multi_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->h[i].name);
        mg_tpl_free(&s->h[i].value);
    }
    free(s->h);
    free(s);
}

static int multi_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, "headers");
    multi_st *s = calloc(1, sizeof *s);
    if (!s || !(s->h = calloc(a->nvalues ? a->nvalues : 1, sizeof *s->h))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    for (size_t i = 0; i < a->nvalues; i++) {
        const char *v = a->values[i], *colon = strchr(v, ':');
        bool ok = colon && colon != v && !strpbrk(colon, "\r\n");
        for (const char *p = v; ok && p < colon; p++) ok = is_tchar(*p);
        if (!ok) {
            multi_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "headers: expected 'Name:value', got '%.60s'", v);
        }
        nv_st *h = &s->h[s->n++];
        if (!(h->name = strndup(v, (size_t)(colon - v))) || mg_tpl_compile(&h->value, colon + 1) != 0) {
            multi_free(s);
            return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        }
        h->len = (size_t)(colon - v);
    }
    *out = s;
    return 0;
}

static int multi_req(const void *st, mg_req_view_t *req)
{
    const multi_st *s = st;
    for (size_t i = 0; i < s->n; i++) {
        if (mg_hdr_get(&req->headers, NAME(&s->h[i]))) continue;
        mg_slice_t v = mg_tpl_expand(&s->h[i].value, &req->vars, req->arena);
        if (!v.p || mg_hdr_add(req->arena, &req->headers, NAME(&s->h[i]), v) != 0) return -500;
    }
    return 0;
}

const mg_plugin_spec_t mg_f_add_request_headers_if_not_present = {
    .name = "AddRequestHeadersIfNotPresent", .kind = MG_PLUGIN_FILTER,
    .args = { { "headers", MG_ARG_REQUIRED | MG_ARG_LIST } }, .shortcut = MG_SHORTCUT_GATHER,
    .compile = multi_compile, .free = multi_free, .request = multi_req,
};

/* ---- MapRequestHeader: copy fromHeader's values to toHeader ---- */

typedef struct {
    char *from, *to;
} map_st;

static void map_free(void *st)
{
    map_st *s = st;
    if (!s) return;
    free(s->from);
    free(s->to);
    free(s);
}

static int map_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    int rc = mg_f_check_header_name(pc, "fromHeader", err, errlen);
    if (rc == 0) rc = mg_f_check_header_name(pc, "toHeader", err, errlen);
    if (rc) return rc;
    map_st *s = calloc(1, sizeof *s);
    if (!s || !(s->from = strdup(mg_plugin_str(pc, "fromHeader", ""))) ||
        !(s->to = strdup(mg_plugin_str(pc, "toHeader", "")))) {
        map_free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    *out = s;
    return 0;
}

static int map_req(const void *st, mg_req_view_t *req)
{
    const map_st *s = st;
    mg_slice_t from = mg_slice_cstr(s->from), to = mg_slice_cstr(s->to);
    uint32_t n = req->headers.n; /* values present before we start adding */
    for (uint32_t i = 0; i < n; i++)
        if (mg_slice_caseeq(req->headers.v[i].name, from))
            if (mg_hdr_add(req->arena, &req->headers, to, req->headers.v[i].value) != 0) return -500;
    return 0;
}

const mg_plugin_spec_t mg_f_map_request_header = {
    .name = "MapRequestHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "fromHeader", MG_ARG_REQUIRED }, { "toHeader", MG_ARG_REQUIRED } },
    .compile = map_compile, .free = map_free, .request = map_req,
};

/* ---- DedupeResponseHeader ---- */

enum { RETAIN_FIRST, RETAIN_LAST, RETAIN_UNIQUE };

typedef struct {
    size_t n;
    char **names;
    int strategy;
} dedupe_st;

static void dedupe_free(void *st)
{
    dedupe_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < s->n; i++) free(s->names[i]);
    free(s->names);
    free(s);
}

static int dedupe_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *names = mg_plugin_str(pc, "name", ""), *strat = mg_plugin_str(pc, "strategy", "RETAIN_FIRST");
    dedupe_st *s = calloc(1, sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    if (!strcmp(strat, "RETAIN_FIRST")) s->strategy = RETAIN_FIRST;
    else if (!strcmp(strat, "RETAIN_LAST")) s->strategy = RETAIN_LAST;
    else if (!strcmp(strat, "RETAIN_UNIQUE")) s->strategy = RETAIN_UNIQUE;
    else {
        free(s);
        return mg_plugin_arg_error(err, errlen, pc, "strategy",
                                   "strategy: unknown value '%.40s' (expected RETAIN_FIRST, RETAIN_LAST or RETAIN_UNIQUE)", strat);
    }
    /* space-separated header names */
    for (const char *p = names; *p;) {
        while (*p == ' ') p++;
        size_t l = strcspn(p, " ");
        if (!l) break;
        for (size_t k = 0; k < l; k++)
            if (!is_tchar(p[k])) {
                dedupe_free(s);
                return mg_plugin_arg_error(err, errlen, pc, "name", "name: bad header name in '%.60s'", names);
            }
        char **q = realloc(s->names, (s->n + 1) * sizeof *q);
        if (!q || !(q[s->n] = strndup(p, l))) {
            if (q) s->names = q;
            dedupe_free(s);
            return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        }
        s->names = q;
        s->n++;
        p += l;
    }
    if (s->n == 0) {
        dedupe_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "name", "name: expected space-separated header names");
    }
    *out = s;
    return 0;
}

static void dedupe_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const dedupe_st *s = st;
    mg_hdr_list_t *l = &resp->headers;
    for (size_t k = 0; k < s->n; k++) {
        mg_slice_t name = mg_slice_cstr(s->names[k]);
        uint32_t first = UINT32_MAX, last = UINT32_MAX, o = 0;
        for (uint32_t i = 0; i < l->n; i++)
            if (mg_slice_caseeq(l->v[i].name, name)) {
                if (first == UINT32_MAX) first = i;
                last = i;
            }
        if (first == last) continue;
        for (uint32_t i = 0; i < l->n; i++) {
            bool keep = true;
            if (mg_slice_caseeq(l->v[i].name, name)) {
                if (s->strategy == RETAIN_FIRST) keep = i == first;
                else if (s->strategy == RETAIN_LAST) keep = i == last;
                else
                    for (uint32_t j = first; j < i && keep; j++)
                        if (mg_slice_caseeq(l->v[j].name, name) && mg_slice_eq(l->v[j].value, l->v[i].value)) keep = false;
            }
            if (keep) l->v[o++] = l->v[i];
        }
        l->n = o;
    }
}

const mg_plugin_spec_t mg_f_dedupe_response_header = {
    .name = "DedupeResponseHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "strategy", 0 } },
    .compile = dedupe_compile, .free = dedupe_free, .response = dedupe_resp,
};

/* ---- RewriteResponseHeader: replaceAll on each value of a header ---- */

typedef struct {
    char *name;
    mg_rx_t rx;
    mg_rx_repl_t repl;
} rrh_st;

static void rrh_free(void *st)
{
    rrh_st *s = st;
    if (!s) return;
    free(s->name);
    mg_rx_repl_free(&s->repl);
    mg_rx_free(&s->rx);
    free(s);
}

static int rrh_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    int rc = mg_f_check_header_name(pc, "name", err, errlen);
    if (rc) return rc;
    rrh_st *s = calloc(1, sizeof *s);
    char msg[256];
    if (!s || !(s->name = strdup(mg_plugin_str(pc, "name", "")))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    if (mg_rx_compile(&s->rx, mg_plugin_str(pc, "regexp", ""), false, msg, sizeof msg) != 0) {
        rrh_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "regexp", "regexp: %s", msg);
    }
    if (mg_rx_repl_compile(&s->repl, &s->rx, mg_plugin_str(pc, "replacement", ""), msg, sizeof msg) != 0) {
        rrh_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "replacement", "replacement: %s", msg);
    }
    *out = s;
    return 0;
}

static void rrh_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const rrh_st *s = st;
    mg_slice_t name = mg_slice_cstr(s->name);
    for (uint32_t i = 0; i < resp->headers.n; i++) {
        if (!mg_slice_caseeq(resp->headers.v[i].name, name)) continue;
        mg_slice_t out;
        if (mg_rx_replace_all(&s->rx, &s->repl, resp->headers.v[i].value, resp->arena, &out) == 0 &&
            !memchr(out.p, '\n', out.n) && !memchr(out.p, '\r', out.n))
            resp->headers.v[i].value = out;
    }
}

const mg_plugin_spec_t mg_f_rewrite_response_header = {
    .name = "RewriteResponseHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "name", MG_ARG_REQUIRED }, { "regexp", MG_ARG_REQUIRED }, { "replacement", MG_ARG_REQUIRED } },
    .compile = rrh_compile, .free = rrh_free, .response = rrh_resp,
};

/* ---- PreserveHostHeader, SetRequestHostHeader ---- */

static int preserve_req(const void *st, mg_req_view_t *req)
{
    req->preserve_host = true;
    return 0;
}

const mg_plugin_spec_t mg_f_preserve_host_header = {
    .name = "PreserveHostHeader", .kind = MG_PLUGIN_FILTER, .request = preserve_req,
};

static int host_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *h = mg_plugin_str(pc, "host", "");
    if (!*h || strpbrk(h, " \t\r\n/?#@"))
        return mg_plugin_arg_error(err, errlen, pc, "host", "host: bad host '%.60s'", h);
    mg_tpl_t *t = calloc(1, sizeof *t);
    if (!t || mg_tpl_compile(t, h) != 0) {
        free(t);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    *out = t;
    return 0;
}

static void tpl_state_free(void *st)
{
    if (!st) return;
    mg_tpl_free(st);
    free(st);
}

static int host_req(const void *st, mg_req_view_t *req)
{
    mg_slice_t v = mg_tpl_expand(st, &req->vars, req->arena);
    if (!v.p) return -500;
    req->host = v;
    req->preserve_host = true; /* send exactly this Host */
    return 0;
}

const mg_plugin_spec_t mg_f_set_request_host_header = {
    .name = "SetRequestHostHeader", .kind = MG_PLUGIN_FILTER, .args = { { "host", MG_ARG_REQUIRED } },
    .compile = host_compile, .free = tpl_state_free, .request = host_req,
};
