/* registry: the name -> spec tables, did-you-mean, compiled chains, URI
 * templates, and the request/response chain runners. See registry.h. */
#include "filter/registry.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "filter/filters_int.h"
#include "route/predicate.h"
#include "route/route.h"

/* ---- tables ---- */

static const mg_plugin_spec_t *const predicates[] = {
    &mg_pred_path, &mg_pred_host, &mg_pred_method, &mg_pred_header, &mg_pred_query, &mg_pred_cookie,
    &mg_pred_after, &mg_pred_before, &mg_pred_between, &mg_pred_remote_addr, &mg_pred_xff_remote_addr,
    &mg_pred_weight, &mg_pred_unsupported_readbody, &mg_pred_unsupported_cfroute,
};

static const mg_plugin_spec_t *const filters[] = {
    &mg_f_add_request_header, &mg_f_add_request_headers_if_not_present, &mg_f_add_request_parameter,
    &mg_f_add_response_header, &mg_f_dedupe_response_header, &mg_f_map_request_header, &mg_f_prefix_path,
    &mg_f_preserve_host_header, &mg_f_redirect_to, &mg_f_remove_request_header, &mg_f_remove_request_parameter,
    &mg_f_remove_response_header, &mg_f_request_header_size, &mg_f_request_size, &mg_f_rewrite_path,
    &mg_f_rewrite_location_response_header, &mg_f_rewrite_response_header, &mg_f_secure_headers, &mg_f_set_path,
    &mg_f_set_request_header, &mg_f_set_request_host_header, &mg_f_set_response_header, &mg_f_set_status,
    &mg_f_strip_prefix, &mg_f_request_rate_limiter,
    &mg_f_rate_limiter, /* the seed's name for RequestRateLimiter (Spring's name) */
    &mg_f_circuit_breaker, &mg_f_retry, /* resilience_filters.c: run by the proxy, not the chain */
    /* recognised Spring filters meshgate does not provide */
    &mg_f_unsupported[0], &mg_f_unsupported[1], &mg_f_unsupported[2], &mg_f_unsupported[3],
    &mg_f_unsupported[4], &mg_f_unsupported[5], &mg_f_unsupported[6], &mg_f_unsupported[7],
    &mg_f_unsupported[8], &mg_f_unsupported[9],
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

size_t mg_plugin_count(mg_plugin_kind_t kind) { return kind == MG_PLUGIN_PREDICATE ? COUNT(predicates) : COUNT(filters); }

const mg_plugin_spec_t *mg_plugin_at(mg_plugin_kind_t kind, size_t i)
{
    if (i >= mg_plugin_count(kind)) return NULL;
    return kind == MG_PLUGIN_PREDICATE ? predicates[i] : filters[i];
}

const mg_plugin_spec_t *mg_plugin_find(mg_plugin_kind_t kind, const char *name, size_t len)
{
    size_t n = mg_plugin_count(kind);
    for (size_t i = 0; i < n; i++) {
        const mg_plugin_spec_t *s = mg_plugin_at(kind, i);
        if (strlen(s->name) == len && memcmp(s->name, name, len) == 0) return s;
    }
    return NULL;
}

/* Levenshtein distance, case-insensitive, bounded to 64-char inputs. */
static size_t lev(const char *a, size_t an, const char *b, size_t bn)
{
    size_t row[65];
    if (an > 64 || bn > 64) return SIZE_MAX;
    for (size_t j = 0; j <= bn; j++) row[j] = j;
    for (size_t i = 1; i <= an; i++) {
        size_t prev = row[0];
        row[0] = i;
        for (size_t j = 1; j <= bn; j++) {
            size_t cur = row[j];
            size_t cost = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]) ? 0 : 1;
            size_t best = prev + cost;
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            prev = cur;
        }
    }
    return row[bn];
}

const char *mg_suggest(const char *s, size_t len, const char *const *names, size_t n)
{
    const char *best = NULL;
    size_t bd = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        size_t d = lev(s, len, names[i], strlen(names[i]));
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    /* close enough: a third of the length, at least 2 edits allowed */
    size_t limit = len / 3 > 2 ? len / 3 : 2;
    return bd <= limit ? best : NULL;
}

const char *mg_plugin_suggest(mg_plugin_kind_t kind, const char *name, size_t len)
{
    const char *names[64];
    size_t n = mg_plugin_count(kind), k = 0;
    for (size_t i = 0; i < n && k < COUNT(names); i++) names[k++] = mg_plugin_at(kind, i)->name;
    return mg_suggest(name, len, names, k);
}

/* ---- helpers ---- */

const mg_arg_cfg_t *mg_plugin_arg(const mg_plugin_cfg_t *pc, const char *key)
{
    for (size_t i = 0; i < pc->nargs; i++)
        if (strcmp(pc->args[i].key, key) == 0) return &pc->args[i];
    return NULL;
}

const char *mg_plugin_str(const mg_plugin_cfg_t *pc, const char *key, const char *def)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, key);
    return a && a->nvalues ? a->values[0] : def;
}

static int verr(char *err, size_t errlen, const mg_src_pos_t *pos, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
static int verr(char *err, size_t errlen, const mg_src_pos_t *pos, const char *fmt, va_list ap)
{
    if (err && errlen) {
        int n = snprintf(err, errlen, "%s:%d:%d: ", pos && pos->file ? pos->file : "?", pos ? pos->line : 0,
                         pos ? pos->col : 0);
        if (n >= 0 && (size_t)n < errlen) vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    }
    return MG_ECONFIG;
}

int mg_plugin_error(char *err, size_t errlen, const mg_src_pos_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    verr(err, errlen, pos, fmt, ap);
    va_end(ap);
    return MG_ECONFIG;
}

int mg_plugin_arg_error(char *err, size_t errlen, const mg_plugin_cfg_t *pc, const char *key, const char *fmt, ...)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, key);
    va_list ap;
    va_start(ap, fmt);
    verr(err, errlen, a ? &a->pos : &pc->pos, fmt, ap);
    va_end(ap);
    return MG_ECONFIG;
}

int mg_parse_datasize(const char *s, uint64_t *out)
{
    size_t nd = strspn(s, "0123456789");
    if (nd == 0 || nd > 15) return -1;
    uint64_t x = strtoull(s, NULL, 10);
    const char *u = s + nd;
    unsigned shift;
    if (!*u || !strcasecmp(u, "B")) shift = 0;
    else if (!strcasecmp(u, "KB")) shift = 10;
    else if (!strcasecmp(u, "MB")) shift = 20;
    else if (!strcasecmp(u, "GB")) shift = 30;
    else if (!strcasecmp(u, "TB")) shift = 40;
    else return -1;
    *out = x << shift;
    return 0;
}

int mg_parse_bool(const char *s, bool *out)
{
    if (!strcasecmp(s, "true")) *out = true;
    else if (!strcasecmp(s, "false")) *out = false;
    else return -1;
    return 0;
}

/* ---- chains ---- */

void mg_chain_free(mg_chain_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].spec->free) c->v[i].spec->free(c->v[i].state);
    free(c->v);
    memset(c, 0, sizeof *c);
}

static int compile_one(const mg_plugin_cfg_t *pc, mg_plugin_kind_t kind, mg_plugin_inst_t *inst, char *err,
                       size_t errlen)
{
    const mg_plugin_spec_t *s = mg_plugin_find(kind, pc->name, strlen(pc->name));
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "unknown %s '%s'", kind == MG_PLUGIN_FILTER ? "filter" : "predicate", pc->name);
    if (s->unsupported) return mg_plugin_error(err, errlen, &pc->pos, "%s '%s' %s", kind == MG_PLUGIN_FILTER ? "filter" : "predicate", s->name, s->unsupported);
    inst->spec = s;
    inst->state = NULL;
    return s->compile ? s->compile(pc, &inst->state, err, errlen) : 0;
}

int mg_chain_build(mg_plugin_kind_t kind, const mg_plugin_list_t *l, mg_chain_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (l->n == 0) return 0;
    if (!(out->v = calloc(l->n, sizeof *out->v))) return mg_plugin_error(err, errlen, &l->v[0].pos, "out of memory");
    for (size_t i = 0; i < l->n; i++) {
        int rc = compile_one(&l->v[i], kind, &out->v[out->n], err, errlen);
        if (rc) {
            mg_chain_free(out);
            return rc;
        }
        if (out->v[out->n].spec->request) out->any_request = true;
        if (out->v[out->n].spec->response) out->any_response = true;
        out->n++;
    }
    return 0;
}

int mg_plugin_validate(const mg_plugin_cfg_t *pc, mg_plugin_kind_t kind, char *err, size_t errlen)
{
    mg_plugin_inst_t inst;
    int rc = compile_one(pc, kind, &inst, err, errlen);
    if (rc == 0 && inst.spec->free) inst.spec->free(inst.state);
    return rc;
}

/* ---- templates ---- */

void mg_tpl_free(mg_tpl_t *t)
{
    if (t->parts)
        for (size_t i = 0; i < t->n; i++) free(t->parts[i].text);
    free(t->parts);
    free(t->whole);
    memset(t, 0, sizeof *t);
}

static int tpl_push(mg_tpl_t *t, bool var, const char *s, size_t n)
{
    void *q = realloc(t->parts, (t->n + 1) * sizeof *t->parts);
    if (!q) return -1;
    t->parts = q;
    t->parts[t->n].var = var;
    t->parts[t->n].len = n;
    if (!(t->parts[t->n].text = strndup(s, n))) return -1;
    t->n++;
    return 0;
}

int mg_tpl_compile(mg_tpl_t *t, const char *s)
{
    memset(t, 0, sizeof *t);
    t->whole_len = strlen(s);
    if (!(t->whole = strdup(s))) return -1;
    t->plain = true;
    size_t lit = 0, i = 0, n = t->whole_len;
    while (i < n) {
        if (s[i] == '{') {
            size_t j = i + 1;
            while (j < n && (isalnum((unsigned char)s[j]) || s[j] == '_' || s[j] == '-' || s[j] == '.')) j++;
            if (j < n && s[j] == '}' && j > i + 1) {
                if (i > lit && tpl_push(t, false, s + lit, i - lit) != 0) goto oom;
                if (tpl_push(t, true, s + i + 1, j - i - 1) != 0) goto oom;
                t->plain = false;
                lit = i = j + 1;
                continue;
            }
        }
        i++;
    }
    if (n > lit && tpl_push(t, false, s + lit, n - lit) != 0) goto oom;
    return 0;
oom:
    mg_tpl_free(t);
    return -1;
}

mg_slice_t mg_tpl_expand(const mg_tpl_t *t, const mg_path_vars_t *vars, mg_arena_t *a)
{
    if (t->plain) return mg_slice(t->whole, t->whole_len);
    size_t total = 0;
    mg_slice_t val[32];
    for (size_t i = 0; i < t->n && i < 32; i++) {
        val[i] = mg_slice("", 0);
        if (!t->parts[i].var) {
            val[i] = mg_slice(t->parts[i].text, t->parts[i].len);
        } else if (vars) {
            for (size_t k = 0; k < vars->n; k++)
                if (vars->name[k].n == t->parts[i].len && memcmp(vars->name[k].p, t->parts[i].text, t->parts[i].len) == 0) {
                    val[i] = vars->value[k];
                    break;
                }
        }
        total += val[i].n;
    }
    char *p = mg_arena_alloc(a, total + 1);
    if (!p) return MG_SLICE_NULL;
    size_t o = 0;
    for (size_t i = 0; i < t->n && i < 32; i++) {
        if (val[i].n) memcpy(p + o, val[i].p, val[i].n);
        o += val[i].n;
    }
    p[o] = '\0';
    return mg_slice(p, o);
}

/* ---- running chains ---- */

static int run_req(const mg_chain_t *c, mg_req_view_t *req)
{
    if (!c || !c->any_request) return 0;
    for (size_t i = 0; i < c->n; i++) {
        if (!c->v[i].spec->request) continue;
        int rc = c->v[i].spec->request(c->v[i].state, req);
        if (rc < 0) return rc;
        if (req->local_status) return 1;
    }
    return 0;
}

int mg_filters_request(const struct mg_route *r, mg_req_view_t *req)
{
    const mg_route_compiled_t *rc = r ? r->compiled : NULL;
    if (!rc) return 0;
    int x = run_req(rc->defaults, req);
    if (x == 0) x = run_req(&rc->filters, req);
    return x < 0 ? x : 0;
}

static void run_resp(const mg_chain_t *c, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    if (!c || !c->any_response) return;
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i].spec->response) c->v[i].spec->response(c->v[i].state, req, resp);
}

void mg_filters_response(const struct mg_route *r, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const mg_route_compiled_t *rc = r ? r->compiled : NULL;
    if (!rc) return;
    run_resp(rc->defaults, req, resp);
    run_resp(&rc->filters, req, resp);
}

/* ---- header lists ---- */

static int hdr_grow(mg_arena_t *a, mg_hdr_list_t *l)
{
    if (l->n < l->cap) return 0;
    uint32_t cap = l->cap ? l->cap * 2 : 16;
    mg_hdr_t *v = mg_arena_alloc(a, cap * sizeof *v);
    if (!v) return -1;
    if (l->n) memcpy(v, l->v, l->n * sizeof *v);
    l->v = v;
    l->cap = cap;
    return 0;
}

int mg_hdr_add(mg_arena_t *a, mg_hdr_list_t *l, mg_slice_t name, mg_slice_t value)
{
    if (hdr_grow(a, l) != 0) return -1;
    l->v[l->n].name = name;
    l->v[l->n].value = value;
    l->n++;
    return 0;
}

const mg_hdr_t *mg_hdr_get(const mg_hdr_list_t *l, mg_slice_t name)
{
    for (uint32_t i = 0; i < l->n; i++)
        if (mg_slice_caseeq(l->v[i].name, name)) return &l->v[i];
    return NULL;
}

void mg_hdr_remove(mg_hdr_list_t *l, mg_slice_t name)
{
    uint32_t o = 0;
    for (uint32_t i = 0; i < l->n; i++)
        if (!mg_slice_caseeq(l->v[i].name, name)) l->v[o++] = l->v[i];
    l->n = o;
}

int mg_hdr_set(mg_arena_t *a, mg_hdr_list_t *l, mg_slice_t name, mg_slice_t value)
{
    for (uint32_t i = 0; i < l->n; i++) {
        if (!mg_slice_caseeq(l->v[i].name, name)) continue;
        l->v[i].value = value;
        /* drop later duplicates, keep this one's position */
        uint32_t o = i + 1;
        for (uint32_t j = i + 1; j < l->n; j++)
            if (!mg_slice_caseeq(l->v[j].name, name)) l->v[o++] = l->v[j];
        l->n = o;
        return 0;
    }
    return mg_hdr_add(a, l, name, value);
}
