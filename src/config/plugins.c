/* plugins: predicates: and filters: lists, in Spring's two forms.
 *
 *   - Path=/api/users/{id},/api/u            shortcut: Name=comma,separated,values
 *   - name: RewritePath                      expanded: name + args map
 *     args: {regexp: '/x/(?<s>.*)', replacement: '/$\{s}'}
 *
 * Both resolve to the same mg_plugin_cfg_t: the registry gives the field
 * names in shortcut order; unknown names and args are errors with a
 * did-you-mean, and each instance is compiled once here (then freed) so
 * every problem is reported at load with its file:line:col. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "config/cfg_int.h"
#include "core/err.h"

void mg_plugin_list_free(mg_plugin_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        mg_plugin_cfg_t *p = &l->v[i];
        for (size_t j = 0; j < p->nargs; j++) {
            for (size_t k = 0; k < p->args[j].nvalues; k++) free(p->args[j].values[k]);
            free(p->args[j].values);
        }
        free(p->args);
    }
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static const char *kind_name(mg_plugin_kind_t k) { return k == MG_PLUGIN_FILTER ? "filter" : "predicate"; }

/* Spring relaxed binding: "match-trailing-slash", "matchTrailingSlash" and
 * "match_trailing_slash" name the same field. */
static bool relaxed_eq(const char *a, size_t an, const char *b)
{
    size_t i = 0, j = 0, bn = strlen(b);
    for (;;) {
        while (i < an && (a[i] == '-' || a[i] == '_')) i++;
        while (j < bn && (b[j] == '-' || b[j] == '_')) j++;
        if (i == an || j == bn) return i == an && j == bn;
        if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[j])) return false;
        i++;
        j++;
    }
}

bool mg_cfg_relaxed_eq(const char *a, size_t an, const char *b) { return relaxed_eq(a, an, b); }

static int field_index(const mg_plugin_spec_t *s, const char *key, size_t len)
{
    for (int i = 0; i < MG_MAX_ARGS && s->args[i].name; i++)
        if (relaxed_eq(key, len, s->args[i].name)) return i;
    return -1;
}

static size_t nfields(const mg_plugin_spec_t *s)
{
    size_t n = 0;
    while (n < MG_MAX_ARGS && s->args[n].name) n++;
    return n;
}

static void field_list(const mg_plugin_spec_t *s, char *buf, size_t cap)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < nfields(s) && w < cap; i++) {
        int n = snprintf(buf + w, cap - w, "%s%s", i ? ", " : "", s->args[i].name);
        if (n < 0) break;
        w += (size_t)n;
    }
    if (!nfields(s)) snprintf(buf, cap, "none");
}

/* Temporary per-field values while parsing one item. */
typedef struct {
    char **v;
    size_t n;
    mg_src_pos_t pos;
    bool set;
} slot_t;

static int slot_add(slot_t *s, const char *p, size_t n)
{
    char **q = realloc(s->v, (s->n + 1) * sizeof *q);
    if (!q) return -1;
    s->v = q;
    if (!(s->v[s->n] = strndup(p, n))) return -1;
    s->n++;
    return 0;
}

static void slots_free(slot_t *sl)
{
    for (size_t i = 0; i < MG_MAX_ARGS; i++) {
        for (size_t k = 0; k < sl[i].n; k++) free(sl[i].v[k]);
        free(sl[i].v);
    }
}

static int oom(mg_cfg_ctx_t *ctx, const mg_ynode_t *at) { return mg_cfg_error(ctx, at, "out of memory"); }

/* Find the spec for name[0..len) or fail with a helpful message at `at`. */
static int resolve(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *at, const char *name, size_t len,
                   const mg_plugin_spec_t **out)
{
    const mg_plugin_spec_t *s = mg_plugin_find(kind, name, len);
    if (s && s->unsupported) return mg_cfg_error(ctx, at, "%s '%s' %s", kind_name(kind), s->name, s->unsupported);
    if (s) {
        *out = s;
        return 0;
    }
    const char *sug = mg_plugin_suggest(kind, name, len);
    if (len == 0) return mg_cfg_error(ctx, at, "missing %s name", kind_name(kind));
    if (sug)
        return mg_cfg_error(ctx, at, "unknown %s '%.*s' (did you mean %s?)", kind_name(kind), (int)(len > 60 ? 60 : len),
                            name, sug);
    return mg_cfg_error(ctx, at, "unknown %s '%.*s'", kind_name(kind), (int)(len > 60 ? 60 : len), name);
}

static mg_src_pos_t pos_at(const mg_ynode_t *n, size_t off)
{
    mg_src_pos_t p = mg_pos_of(n);
    if (!memchr(n->str, '\n', off)) {
        if (n->style == MG_YSTYLE_PLAIN) p.col += (int)off;
        else if (n->style == MG_YSTYLE_SINGLE || n->style == MG_YSTYLE_DOUBLE) p.col += (int)off + 1;
    }
    return p;
}

static int parse_shortcut(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *item,
                          const mg_plugin_spec_t **specp, slot_t *sl)
{
    const char *s;
    int rc = mg_cfg_scalar(ctx, kind_name(kind), item, &s);
    if (rc) return rc;
    const char *eq = strchr(s, '=');
    size_t nl = eq ? (size_t)(eq - s) : strlen(s);
    while (nl && isspace((unsigned char)s[nl - 1])) nl--;
    const mg_plugin_spec_t *spec;
    if ((rc = resolve(ctx, kind, item, s, nl, &spec))) return rc;
    *specp = spec;
    if (!eq) return 0;
    if (spec->shortcut == MG_SHORTCUT_NONE)
        return mg_cfg_error(ctx, item, "%s has no shortcut form (Spring refuses '%s=...' too); write it as "
                                       "{name: %s, args: {...}}", spec->name, spec->name, spec->name);
    /* values: comma-separated, trimmed, empty ones dropped (Spring's tokenizeToStringArray) */
    size_t vals[64][2], nv = 0;
    const char *p = eq + 1;
    for (;;) {
        const char *c = strchr(p, ',');
        size_t e = c ? (size_t)(c - p) : strlen(p), b = 0;
        while (b < e && isspace((unsigned char)p[b])) b++;
        while (e > b && isspace((unsigned char)p[e - 1])) e--;
        if (e > b) {
            if (nv == 64) return mg_cfg_error(ctx, item, "%s: too many arguments", spec->name);
            vals[nv][0] = (size_t)(p - s) + b;
            vals[nv][1] = e - b;
            nv++;
        }
        if (!c) break;
        p = c + 1;
    }
    size_t nf = nfields(spec), first_list = 0, nlist = nv;
    char fl[256];
    switch (spec->shortcut) {
    case MG_SHORTCUT_NONE:
        return 0;
    case MG_SHORTCUT_FIELDS:
        if (nv > nf) {
            field_list(spec, fl, sizeof fl);
            return mg_cfg_error(ctx, item, "%s: too many arguments (%zu given; expected %s)", spec->name, nv, fl);
        }
        for (size_t i = 0; i < nv; i++) {
            if (slot_add(&sl[i], s + vals[i][0], vals[i][1]) != 0) return oom(ctx, item);
            sl[i].pos = pos_at(item, vals[i][0]);
            sl[i].set = true;
        }
        return 0;
    case MG_SHORTCUT_GATHER_FLAG:
        if (nv > 1 && nf > 1) {
            const char *last = s + vals[nv - 1][0];
            size_t ll = vals[nv - 1][1];
            if ((ll == 4 && !strncasecmp(last, "true", 4)) || (ll == 5 && !strncasecmp(last, "false", 5))) {
                if (slot_add(&sl[1], last, ll) != 0) return oom(ctx, item);
                sl[1].pos = pos_at(item, vals[nv - 1][0]);
                sl[1].set = true;
                nlist--;
            }
        }
        /* fallthrough */
    case MG_SHORTCUT_GATHER:
        for (size_t i = first_list; i < nlist; i++)
            if (slot_add(&sl[0], s + vals[i][0], vals[i][1]) != 0) return oom(ctx, item);
        if (nlist) {
            sl[0].pos = pos_at(item, vals[0][0]);
            sl[0].set = true;
        }
        return 0;
    }
    return 0;
}

static int scalar_values(mg_cfg_ctx_t *ctx, const mg_plugin_spec_t *spec, int fi, const mg_ynode_t *key,
                         const mg_ynode_t *v, slot_t *slot)
{
    bool list = spec->args[fi].flags & MG_ARG_LIST;
    const char *s;
    int rc;
    if (v->kind == MG_YNODE_SEQ) {
        if (!list) return mg_cfg_error(ctx, v, "%s: argument '%s' takes one value, got a sequence", spec->name, spec->args[fi].name);
        for (size_t i = 0; i < v->nitems; i++) {
            if ((rc = mg_cfg_scalar(ctx, spec->args[fi].name, v->items[i], &s))) return rc;
            if (slot_add(slot, s, strlen(s)) != 0) return oom(ctx, v);
        }
    } else {
        if (v->kind == MG_YNODE_MAP)
            return mg_cfg_error(ctx, v, "%s: argument '%s': expected a value, got a map", spec->name, spec->args[fi].name);
        if (mg_ynode_is_null(v)) return mg_cfg_error(ctx, v, "%s: argument '%s' has no value", spec->name, spec->args[fi].name);
        if ((rc = mg_cfg_scalar(ctx, spec->args[fi].name, v, &s))) return rc;
        if (list) { /* Spring binds "a,b" to a list */
            for (const char *p = s;;) {
                const char *c = strchr(p, ',');
                size_t e = c ? (size_t)(c - p) : strlen(p), b = 0;
                while (b < e && isspace((unsigned char)p[b])) b++;
                while (e > b && isspace((unsigned char)p[e - 1])) e--;
                if (e > b && slot_add(slot, p + b, e - b) != 0) return oom(ctx, v);
                if (!c) break;
                p = c + 1;
            }
        } else if (slot_add(slot, s, strlen(s)) != 0) {
            return oom(ctx, v);
        }
    }
    (void)key;
    slot->pos = mg_pos_of(v);
    slot->set = slot->n > 0;
    return 0;
}

/* A map argument with dotted fields (Retry's backoff: {firstBackoff: 10ms})
 * -> the fields "backoff.firstBackoff", ... (Spring binds both forms). */
static int nested_args(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_plugin_spec_t *spec,
                       const mg_ynode_t *k, const mg_ynode_t *v, slot_t *sl)
{
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *sk = v->pairs[i].key;
        char full[160];
        int n = snprintf(full, sizeof full, "%s.%s", k->str, sk->str);
        int fi = n > 0 && (size_t)n < sizeof full ? field_index(spec, full, (size_t)n) : -1;
        if (fi < 0)
            return mg_cfg_error(ctx, sk, "unknown argument '%.60s.%.60s' for %s '%s'", k->str, sk->str,
                                kind_name(kind), spec->name);
        if (sl[fi].set && !(spec->args[fi].flags & MG_ARG_LIST))
            return mg_cfg_error(ctx, sk, "%s: argument '%s' given twice", spec->name, spec->args[fi].name);
        int rc = scalar_values(ctx, spec, fi, sk, v->pairs[i].value, &sl[fi]);
        if (rc) return rc;
    }
    return 0;
}

static int parse_expanded(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *item,
                          const mg_plugin_spec_t **specp, slot_t *sl, bool gather_any)
{
    const mg_ynode_t *name = NULL, *args = NULL;
    for (size_t i = 0; i < item->npairs; i++) {
        const mg_ynode_t *k = item->pairs[i].key;
        if (!strcmp(k->str, "name")) name = item->pairs[i].value;
        else if (!strcmp(k->str, "args")) args = item->pairs[i].value;
        else return mg_cfg_error(ctx, k, "unknown key '%.60s' in %s (expected name, args)", k->str, kind_name(kind));
    }
    if (!name || mg_ynode_is_null(name)) return mg_cfg_error(ctx, item, "missing required key 'name' in %s", kind_name(kind));
    const char *s;
    int rc = mg_cfg_scalar(ctx, "name", name, &s);
    if (rc) return rc;
    const mg_plugin_spec_t *spec;
    if ((rc = resolve(ctx, kind, name, s, strlen(s), &spec))) return rc;
    *specp = spec;
    if (!args || mg_ynode_is_null(args)) return 0;
    if ((rc = mg_cfg_expect(ctx, "args", args, MG_YNODE_MAP))) return rc;
    for (size_t i = 0; i < args->npairs; i++) {
        const mg_ynode_t *k = args->pairs[i].key, *v = args->pairs[i].value;
        int fi = field_index(spec, k->str, k->len);
        if (fi < 0 && v->kind == MG_YNODE_MAP) { /* backoff: {firstBackoff: ...} */
            if ((rc = nested_args(ctx, kind, spec, k, v, sl))) return rc;
            continue;
        }
        if (fi < 0 && spec->shortcut != MG_SHORTCUT_NONE && !strncmp(k->str, "_genkey_", 8)) { /* Spring's generated positional keys */
            char *end;
            long x = strtol(k->str + 8, &end, 10);
            if (*end == '\0' && x >= 0 && (size_t)x < nfields(spec)) fi = spec->shortcut == MG_SHORTCUT_FIELDS ? (int)x : 0;
        }
        /* templates: Spring gathers every value of a list predicate into its
         * list whatever the key (its docs write Path's args[pattern]) */
        if (fi < 0 && gather_any && (spec->shortcut == MG_SHORTCUT_GATHER || spec->shortcut == MG_SHORTCUT_GATHER_FLAG) &&
            v->kind != MG_YNODE_MAP)
            fi = 0;
        if (fi < 0) {
            const char *names[MG_MAX_ARGS];
            size_t nf = nfields(spec);
            for (size_t j = 0; j < nf; j++) names[j] = spec->args[j].name;
            const char *sug = mg_suggest(k->str, k->len, names, nf);
            char fl[256];
            field_list(spec, fl, sizeof fl);
            if (sug) return mg_cfg_error(ctx, k, "unknown argument '%.60s' for %s '%s' (did you mean %s?)", k->str, kind_name(kind), spec->name, sug);
            return mg_cfg_error(ctx, k, "unknown argument '%.60s' for %s '%s' (expected: %s)", k->str, kind_name(kind), spec->name, fl);
        }
        if (sl[fi].set && !(spec->args[fi].flags & MG_ARG_LIST))
            return mg_cfg_error(ctx, k, "%s: argument '%s' given twice", spec->name, spec->args[fi].name);
        if ((rc = scalar_values(ctx, spec, fi, k, v, &sl[fi]))) return rc;
    }
    return 0;
}

static int parse_item(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *item, mg_plugin_cfg_t *pc,
                      bool validate)
{
    slot_t sl[MG_MAX_ARGS];
    memset(sl, 0, sizeof sl);
    const mg_plugin_spec_t *spec = NULL;
    int rc;
    if (item->kind == MG_YNODE_MAP) rc = parse_expanded(ctx, kind, item, &spec, sl, !validate);
    else if (item->kind == MG_YNODE_SCALAR && !mg_ynode_is_null(item)) rc = parse_shortcut(ctx, kind, item, &spec, sl);
    else rc = mg_cfg_error(ctx, item, "expected a %s ('Name=args' or {name: ..., args: {...}}), got %s", kind_name(kind), mg_ynode_describe(item));
    if (rc) goto out;
    pc->name = spec->name;
    pc->pos = mg_pos_of(item);
    size_t nf = nfields(spec), nset = 0;
    for (size_t i = 0; i < nf; i++) {
        if (sl[i].set) nset++;
        else if (spec->args[i].flags & MG_ARG_REQUIRED) {
            char fl[256];
            field_list(spec, fl, sizeof fl);
            rc = mg_cfg_error(ctx, item, "%s '%s': missing argument '%s' (arguments: %s)", kind_name(kind), spec->name,
                              spec->args[i].name, fl);
            goto out;
        }
    }
    if (nset && !(pc->args = calloc(nset, sizeof *pc->args))) {
        rc = oom(ctx, item);
        goto out;
    }
    for (size_t i = 0; i < nf; i++) {
        if (!sl[i].set) continue;
        mg_arg_cfg_t *a = &pc->args[pc->nargs++];
        a->key = spec->args[i].name;
        a->values = sl[i].v;
        a->nvalues = sl[i].n;
        a->pos = sl[i].pos;
        sl[i].v = NULL;
        sl[i].n = 0;
    }
    rc = validate ? mg_plugin_validate(pc, kind, ctx->err, ctx->errlen) : 0;
out:
    slots_free(sl);
    return rc;
}

static int plugins(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out,
                   bool validate)
{
    const char *what = kind == MG_PLUGIN_FILTER ? "filters" : "predicates";
    int rc = mg_cfg_expect(ctx, what, v, MG_YNODE_SEQ);
    if (rc) return rc;
    if (v->nitems == 0) return 0;
    mg_plugin_cfg_t *nv = realloc(out->v, (out->n + v->nitems) * sizeof *nv);
    if (!nv) return oom(ctx, v);
    out->v = nv;
    for (size_t i = 0; i < v->nitems; i++) {
        mg_plugin_cfg_t *pc = &out->v[out->n];
        memset(pc, 0, sizeof *pc);
        rc = parse_item(ctx, kind, v->items[i], pc, validate);
        out->n++; /* even on error: freed with the list */
        if (rc) return rc;
    }
    return 0;
}

int mg_cfg_plugins(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out)
{
    return plugins(ctx, kind, v, out, true);
}

int mg_cfg_plugins_raw(mg_cfg_ctx_t *ctx, mg_plugin_kind_t kind, const mg_ynode_t *v, mg_plugin_list_t *out)
{
    return plugins(ctx, kind, v, out, false);
}
