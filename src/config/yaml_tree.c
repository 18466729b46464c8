/* yaml_tree: libyaml event stream -> arena node tree with positions.
 * See yaml_tree.h for the contract. Recursion is bounded by
 * MG_YAML_MAX_DEPTH, node count (aliases expanded) by MG_YAML_MAX_NODES. */
#include "config/yaml_tree.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "core/err.h"

/* ---- arena ---- */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk_t;

struct mg_yarena {
    chunk_t *head;
};

mg_yarena_t *mg_yarena_new(void) { return calloc(1, sizeof(mg_yarena_t)); }

void mg_yarena_free(mg_yarena_t *a)
{
    if (!a) return;
    for (chunk_t *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(a);
}

void *mg_yarena_alloc(mg_yarena_t *a, size_t n)
{
    const size_t al = sizeof(max_align_t);
    n = (n + al - 1) / al * al;
    if (n == 0) n = al;
    chunk_t *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        chunk_t *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->used = 0;
        nc->cap = cap;
        if (c && n > 16384) { /* a big block: keep filling the current chunk */
            nc->next = c->next;
            c->next = nc;
        } else {
            nc->next = c;
            a->head = nc;
        }
        c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

static char *arena_strndup(mg_yarena_t *a, const char *s, size_t n)
{
    char *p = mg_yarena_alloc(a, n + 1);
    if (p) {
        if (n) memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* ---- small helpers ---- */

bool mg_ynode_is_plain(const mg_ynode_t *n)
{
    return n && n->kind == MG_YNODE_SCALAR && n->style == MG_YSTYLE_PLAIN && !n->tag;
}

bool mg_ynode_is_null(const mg_ynode_t *n)
{
    if (!mg_ynode_is_plain(n)) return false;
    return n->len == 0 || (n->len == 1 && n->str[0] == '~') ||
           (n->len == 4 && strcasecmp(n->str, "null") == 0);
}

const char *mg_ynode_describe(const mg_ynode_t *n)
{
    if (!n) return "nothing";
    if (n->kind == MG_YNODE_MAP) return "a map";
    if (n->kind == MG_YNODE_SEQ) return "a sequence";
    if (mg_ynode_is_null(n)) return "null";
    if (!mg_ynode_is_plain(n)) return "a string";
    const char *s = n->str;
    if (!strcasecmp(s, "true") || !strcasecmp(s, "false")) return "a boolean";
    size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0, digits = 0, dots = 0;
    for (; i < n->len; i++) {
        if (s[i] >= '0' && s[i] <= '9') digits++;
        else if (s[i] == '.') dots++;
        else return "a string";
    }
    if (digits == 0) return "a string";
    return dots == 0 ? "an integer" : dots == 1 ? "a number" : "a string";
}

typedef struct {
    const char *s;
    size_t n;
    uint32_t i;
} kref_t;

static int kref_cmp(const void *x, const void *y)
{
    const kref_t *a = x, *b = y;
    size_t m = a->n < b->n ? a->n : b->n;
    int c = m ? memcmp(a->s, b->s, m) : 0;
    if (c) return c;
    if (a->n != b->n) return a->n < b->n ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

static const mg_ypair_t *map_find(const mg_ynode_t *map, const char *key, size_t klen)
{
    if (!map || map->kind != MG_YNODE_MAP || !map->sorted) return NULL;
    size_t lo = 0, hi = map->npairs;
    kref_t want = { key, klen, 0 };
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const mg_ypair_t *p = &map->pairs[map->sorted[mid]];
        kref_t have = { p->key->str, p->key->len, 0 };
        int c = kref_cmp(&have, &want);
        if (c == 0) return p;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

mg_ynode_t *mg_ymap_get(const mg_ynode_t *map, const char *key)
{
    const mg_ypair_t *p = map_find(map, key, strlen(key));
    return p ? p->value : NULL;
}

/* Sort pair indices by key. If dup is non-NULL, *dup becomes the index of
 * the earliest repeated key (its second occurrence) or UINT32_MAX; else
 * later duplicates are dropped from pairs (order kept) before sorting. */
static int index_map(mg_yarena_t *a, mg_ynode_t *m, uint32_t *dup, uint32_t *dup_first)
{
    size_t n = m->npairs;
    kref_t *k = malloc((n ? n : 1) * sizeof *k);
    if (!k) return -1;
    for (size_t i = 0; i < n; i++) k[i] = (kref_t){ m->pairs[i].key->str, m->pairs[i].key->len, (uint32_t)i };
    qsort(k, n, sizeof *k, kref_cmp);
    if (dup) *dup = UINT32_MAX;
    bool dropped = false;
    for (size_t i = 1; i < n; i++) {
        if (k[i].n == k[i - 1].n && (k[i].n == 0 || memcmp(k[i].s, k[i - 1].s, k[i].n) == 0)) {
            if (dup) {
                if (k[i].i < *dup) {
                    *dup = k[i].i;
                    size_t f = i - 1;
                    while (f > 0 && k[f - 1].n == k[i].n && memcmp(k[f - 1].s, k[i].s, k[i].n) == 0) f--;
                    *dup_first = k[f].i;
                }
            } else {
                m->pairs[k[i].i].key = NULL; /* drop, the first one wins */
                dropped = true;
            }
        }
    }
    if (dropped) {
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if (m->pairs[i].key) m->pairs[w++] = m->pairs[i];
        m->npairs = n = w;
        free(k);
        return index_map(a, m, NULL, NULL);
    }
    uint32_t *s = mg_yarena_alloc(a, (n ? n : 1) * sizeof *s);
    if (!s) { free(k); return -1; }
    for (size_t i = 0; i < n; i++) s[i] = k[i].i;
    m->sorted = s;
    free(k);
    return 0;
}

mg_ynode_t *mg_ynode_merge(mg_yarena_t *a, mg_ynode_t *base, mg_ynode_t *over)
{
    if (!base || !over || base->kind != MG_YNODE_MAP || over->kind != MG_YNODE_MAP) return over;
    mg_ynode_t *m = mg_yarena_alloc(a, sizeof *m);
    size_t cap = base->npairs + over->npairs;
    mg_ypair_t *pairs = mg_yarena_alloc(a, (cap ? cap : 1) * sizeof *pairs);
    if (!m || !pairs) return NULL;
    *m = *base;
    m->pairs = pairs;
    m->npairs = 0;
    for (size_t i = 0; i < base->npairs; i++) {
        const mg_ypair_t *bp = &base->pairs[i];
        const mg_ypair_t *op = map_find(over, bp->key->str, bp->key->len);
        mg_ypair_t np = *bp;
        if (op) {
            np.key = op->key;
            np.value = mg_ynode_merge(a, bp->value, op->value);
            if (!np.value) return NULL;
        }
        pairs[m->npairs++] = np;
    }
    for (size_t i = 0; i < over->npairs; i++) {
        const mg_ypair_t *op = &over->pairs[i];
        if (!map_find(base, op->key->str, op->key->len)) pairs[m->npairs++] = *op;
    }
    if (index_map(a, m, NULL, NULL) != 0) return NULL;
    return m;
}

/* ---- parser ---- */

typedef struct {
    char *name;
    mg_ynode_t *node;
} anchor_t;

typedef struct {
    mg_yarena_t *a;
    yaml_parser_t parser;
    const char *file;
    const char *data;
    size_t len;
    int line_off, col_off;
    size_t nodes;
    anchor_t *anchors;
    size_t nanchors, anchors_cap;
    char *err;
    size_t errlen;
} pctx_t;

static int perr(pctx_t *c, int line, int col, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int perr(pctx_t *c, int line, int col, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int n = snprintf(c->err, c->errlen, "%s:%d:%d: ", c->file, line, col);
        if (n >= 0 && (size_t)n < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return MG_ECONFIG;
}

static int nerr(pctx_t *c, const mg_ynode_t *n, const char *msg, const char *arg, int l2, int c2)
{
    if (arg) return perr(c, n->line, n->col, "%s '%.80s' (first at %d:%d)", msg, arg, l2, c2);
    return perr(c, n->line, n->col, "%s", msg);
}

static int oom(pctx_t *c)
{
    if (c->err && c->errlen) snprintf(c->err, c->errlen, "%s: out of memory", c->file);
    return MG_ECONFIG;
}

static int line_of(pctx_t *c, yaml_mark_t m) { return (int)m.line + 1 + c->line_off; }
static int col_of(pctx_t *c, yaml_mark_t m) { return (int)m.column + 1 + c->col_off; }

static int syntax_error(pctx_t *c)
{
    yaml_parser_t *p = &c->parser;
    if (p->error == YAML_MEMORY_ERROR) return oom(c);
    int line, col;
    if (p->error == YAML_READER_ERROR) {
        size_t off = p->problem_offset < c->len ? p->problem_offset : c->len;
        line = 1;
        size_t ls = 0;
        for (size_t i = 0; i < off; i++)
            if (c->data[i] == '\n') { line++; ls = i + 1; }
        col = (int)(off - ls) + 1 + c->col_off;
        line += c->line_off;
    } else {
        line = line_of(c, p->problem_mark);
        col = col_of(c, p->problem_mark);
    }
    const char *problem = p->problem ? p->problem : "syntax error";
    if (p->context)
        return perr(c, line, col, "%s (%s at %d:%d)", problem, p->context,
                    line_of(c, p->context_mark), col_of(c, p->context_mark));
    return perr(c, line, col, "%s", problem);
}

static int next_event(pctx_t *c, yaml_event_t *ev)
{
    if (!yaml_parser_parse(&c->parser, ev)) return syntax_error(c);
    return 0;
}

static mg_ynode_t *new_node(pctx_t *c, mg_ynode_kind_t kind, yaml_mark_t m)
{
    if (++c->nodes > MG_YAML_MAX_NODES) return NULL;
    mg_ynode_t *n = mg_yarena_alloc(c->a, sizeof *n);
    if (!n) return NULL;
    n->kind = kind;
    n->file = c->file;
    n->line = line_of(c, m);
    n->col = col_of(c, m);
    return n;
}

static int node_fail(pctx_t *c, yaml_mark_t m)
{
    if (c->nodes > MG_YAML_MAX_NODES)
        return perr(c, line_of(c, m), col_of(c, m), "document too large (more than %d nodes, aliases expanded)",
                    MG_YAML_MAX_NODES);
    return oom(c);
}

static int add_anchor(pctx_t *c, const unsigned char *name, mg_ynode_t *n)
{
    if (!name) return 0;
    if (c->nanchors == c->anchors_cap) {
        size_t cap = c->anchors_cap ? c->anchors_cap * 2 : 8;
        anchor_t *q = realloc(c->anchors, cap * sizeof *q);
        if (!q) return oom(c);
        c->anchors = q;
        c->anchors_cap = cap;
    }
    char *s = strdup((const char *)name);
    if (!s) return oom(c);
    c->anchors[c->nanchors++] = (anchor_t){ s, n };
    return 0;
}

static void clear_anchors(pctx_t *c)
{
    for (size_t i = 0; i < c->nanchors; i++) free(c->anchors[i].name);
    c->nanchors = 0;
}

/* Deep copy for alias expansion; the copy's root takes the alias position. */
static mg_ynode_t *copy_tree(pctx_t *c, const mg_ynode_t *src)
{
    if (++c->nodes > MG_YAML_MAX_NODES) return NULL;
    mg_ynode_t *n = mg_yarena_alloc(c->a, sizeof *n);
    if (!n) return NULL;
    *n = *src;
    if (src->kind == MG_YNODE_SEQ && src->nitems) {
        n->items = mg_yarena_alloc(c->a, src->nitems * sizeof *n->items);
        if (!n->items) return NULL;
        for (size_t i = 0; i < src->nitems; i++)
            if (!(n->items[i] = copy_tree(c, src->items[i]))) return NULL;
    } else if (src->kind == MG_YNODE_MAP && src->npairs) {
        n->pairs = mg_yarena_alloc(c->a, src->npairs * sizeof *n->pairs);
        if (!n->pairs) return NULL;
        for (size_t i = 0; i < src->npairs; i++) {
            n->pairs[i].key = src->pairs[i].key; /* scalars: immutable, share */
            if (!(n->pairs[i].value = copy_tree(c, src->pairs[i].value))) return NULL;
        }
        /* sorted indices are identical: share */
    }
    return n;
}

typedef struct {
    void *p;
    size_t n, cap, elsize;
} vec_t;

static void *vec_push(vec_t *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 8;
        void *q = realloc(v->p, cap * v->elsize);
        if (!q) return NULL;
        v->p = q;
        v->cap = cap;
    }
    return (char *)v->p + v->elsize * v->n++;
}

static int parse_node(pctx_t *c, yaml_event_t *ev, int depth, mg_ynode_t **out);

/* Apply "<<" merge keys: explicit keys win, then the merged maps in order. */
static int apply_merge_key(pctx_t *c, mg_ynode_t *m, size_t at)
{
    mg_ynode_t *src = m->pairs[at].value;
    size_t nsrc = src->kind == MG_YNODE_SEQ ? src->nitems : 1, total = m->npairs;
    for (size_t i = 0; i < nsrc; i++) {
        const mg_ynode_t *s = src->kind == MG_YNODE_SEQ ? src->items[i] : src;
        if (s->kind != MG_YNODE_MAP) return nerr(c, s, "'<<' expects a map or a list of maps", NULL, 0, 0);
        total += s->npairs;
    }
    mg_ypair_t *pairs = mg_yarena_alloc(c->a, total * sizeof *pairs);
    if (!pairs) return oom(c);
    size_t w = 0;
    for (size_t i = 0; i < m->npairs; i++)
        if (i != at) pairs[w++] = m->pairs[i];
    for (size_t i = 0; i < nsrc; i++) {
        const mg_ynode_t *s = src->kind == MG_YNODE_SEQ ? src->items[i] : src;
        for (size_t j = 0; j < s->npairs; j++) pairs[w++] = s->pairs[j];
    }
    m->pairs = pairs;
    m->npairs = w;
    return index_map(c->a, m, NULL, NULL) == 0 ? 0 : oom(c);
}

static int finish_map(pctx_t *c, mg_ynode_t *m)
{
    uint32_t dup = UINT32_MAX, first = 0;
    if (index_map(c->a, m, &dup, &first) != 0) return oom(c);
    if (dup != UINT32_MAX) {
        const mg_ynode_t *k = m->pairs[dup].key, *f = m->pairs[first].key;
        return nerr(c, k, "duplicate key", k->str, f->line, f->col);
    }
    const mg_ypair_t *mk = map_find(m, "<<", 2);
    if (mk && mg_ynode_is_plain(mk->key)) return apply_merge_key(c, m, (size_t)(mk - m->pairs));
    return 0;
}

static int parse_collection(pctx_t *c, mg_ynode_t *n, yaml_event_type_t end, int depth)
{
    bool is_map = end == YAML_MAPPING_END_EVENT;
    vec_t v = { .elsize = is_map ? sizeof(mg_ypair_t) : sizeof(mg_ynode_t *) };
    mg_ynode_t *key = NULL;
    int rc = 0;
    for (;;) {
        yaml_event_t ev;
        if ((rc = next_event(c, &ev))) break;
        if (ev.type == end) {
            yaml_event_delete(&ev);
            if (is_map && key) { rc = perr(c, key->line, key->col, "key without value"); break; }
            break;
        }
        mg_ynode_t *child = NULL;
        rc = parse_node(c, &ev, depth + 1, &child);
        if (rc) break;
        if (is_map && !key) {
            if (child->kind != MG_YNODE_SCALAR) {
                rc = perr(c, child->line, child->col, "map keys must be scalars");
                break;
            }
            key = child;
            continue;
        }
        void *slot = vec_push(&v);
        if (!slot) { rc = oom(c); break; }
        if (is_map) {
            *(mg_ypair_t *)slot = (mg_ypair_t){ key, child };
            key = NULL;
        } else {
            *(mg_ynode_t **)slot = child;
        }
    }
    if (rc == 0 && v.n) {
        void *p = mg_yarena_alloc(c->a, v.n * v.elsize);
        if (!p) rc = oom(c);
        else {
            memcpy(p, v.p, v.n * v.elsize);
            if (is_map) { n->pairs = p; n->npairs = v.n; }
            else { n->items = p; n->nitems = v.n; }
        }
    }
    free(v.p);
    if (rc == 0 && is_map) rc = finish_map(c, n);
    return rc;
}

/* Build the node for ev (consumed: deleted here) and everything inside it. */
static int parse_node(pctx_t *c, yaml_event_t *ev, int depth, mg_ynode_t **out)
{
    yaml_mark_t m = ev->start_mark;
    int rc = 0;
    if (depth > MG_YAML_MAX_DEPTH) {
        yaml_event_delete(ev);
        return perr(c, line_of(c, m), col_of(c, m), "nesting too deep (more than %d levels)", MG_YAML_MAX_DEPTH);
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT: {
        mg_ynode_t *n = new_node(c, MG_YNODE_SCALAR, m);
        if (!n) { rc = node_fail(c, m); break; }
        n->str = arena_strndup(c->a, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        n->len = ev->data.scalar.length;
        if (!n->str) { rc = oom(c); break; }
        switch (ev->data.scalar.style) {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE: n->style = MG_YSTYLE_SINGLE; break;
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE: n->style = MG_YSTYLE_DOUBLE; break;
        case YAML_LITERAL_SCALAR_STYLE: n->style = MG_YSTYLE_LITERAL; break;
        case YAML_FOLDED_SCALAR_STYLE: n->style = MG_YSTYLE_FOLDED; break;
        default: n->style = MG_YSTYLE_PLAIN; break;
        }
        if (ev->data.scalar.tag) {
            const char *t = (const char *)ev->data.scalar.tag;
            if (!(n->tag = arena_strndup(c->a, t, strlen(t)))) { rc = oom(c); break; }
        }
        if ((rc = add_anchor(c, ev->data.scalar.anchor, n))) break;
        *out = n;
        break;
    }
    case YAML_ALIAS_EVENT: {
        const char *name = (const char *)ev->data.alias.anchor;
        const mg_ynode_t *target = NULL;
        for (size_t i = c->nanchors; i-- > 0;)
            if (strcmp(c->anchors[i].name, name) == 0) { target = c->anchors[i].node; break; }
        if (!target) { rc = perr(c, line_of(c, m), col_of(c, m), "undefined alias '*%.80s'", name); break; }
        mg_ynode_t *n = copy_tree(c, target);
        if (!n) { rc = node_fail(c, m); break; }
        n->line = line_of(c, m);
        n->col = col_of(c, m);
        *out = n;
        break;
    }
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool is_map = ev->type == YAML_MAPPING_START_EVENT;
        unsigned char *anchor = is_map ? ev->data.mapping_start.anchor : ev->data.sequence_start.anchor;
        mg_ynode_t *n = new_node(c, is_map ? MG_YNODE_MAP : MG_YNODE_SEQ, m);
        if (!n) { rc = node_fail(c, m); break; }
        char *aname = anchor ? strdup((const char *)anchor) : NULL;
        if (anchor && !aname) { rc = oom(c); break; }
        yaml_event_delete(ev);
        rc = parse_collection(c, n, is_map ? YAML_MAPPING_END_EVENT : YAML_SEQUENCE_END_EVENT, depth);
        if (rc == 0) rc = add_anchor(c, (const unsigned char *)aname, n);
        free(aname);
        if (rc == 0) *out = n;
        return rc;
    }
    default:
        rc = perr(c, line_of(c, m), col_of(c, m), "unexpected YAML event");
        break;
    }
    yaml_event_delete(ev);
    return rc;
}

int mg_yaml_parse(mg_yarena_t *a, const char *file, const char *data, size_t len,
                  int line_offset, int col_offset, mg_ynode_t **out, char *err, size_t errlen)
{
    pctx_t c = { .a = a, .file = file, .data = data, .len = len, .line_off = line_offset,
                 .col_off = col_offset, .err = err, .errlen = errlen };
    *out = NULL;
    if (!yaml_parser_initialize(&c.parser)) return oom(&c);
    yaml_parser_set_input_string(&c.parser, (const unsigned char *)data, len);

    yaml_mark_t zero = { 0, 0, 0 };
    mg_ynode_t *docs = new_node(&c, MG_YNODE_SEQ, zero);
    vec_t v = { .elsize = sizeof(mg_ynode_t *) };
    int rc = docs ? 0 : oom(&c);
    bool done = false;
    while (rc == 0 && !done) {
        yaml_event_t ev;
        if ((rc = next_event(&c, &ev))) break;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            yaml_event_delete(&ev);
            break;
        case YAML_DOCUMENT_START_EVENT: {
            yaml_mark_t dm = ev.start_mark;
            yaml_event_delete(&ev);
            clear_anchors(&c);
            mg_ynode_t *root = NULL;
            if ((rc = next_event(&c, &ev))) break;
            if (ev.type == YAML_DOCUMENT_END_EVENT) { /* cannot happen with libyaml, be safe */
                yaml_event_delete(&ev);
                root = new_node(&c, MG_YNODE_SCALAR, dm);
                if (!root) { rc = node_fail(&c, dm); break; }
                root->str = "";
            } else {
                if ((rc = parse_node(&c, &ev, 1, &root))) break;
                if ((rc = next_event(&c, &ev))) break; /* DOCUMENT_END */
                yaml_event_delete(&ev);
            }
            mg_ynode_t **slot = vec_push(&v);
            if (!slot) { rc = oom(&c); break; }
            *slot = root;
            break;
        }
        default: /* STREAM_START */
            yaml_event_delete(&ev);
            break;
        }
    }
    if (rc == 0 && v.n) {
        docs->items = mg_yarena_alloc(a, v.n * sizeof *docs->items);
        if (!docs->items) rc = oom(&c);
        else {
            memcpy(docs->items, v.p, v.n * sizeof *docs->items);
            docs->nitems = v.n;
        }
    }
    free(v.p);
    clear_anchors(&c);
    free(c.anchors);
    yaml_parser_delete(&c.parser);
    if (rc == 0) *out = docs;
    return rc;
}
