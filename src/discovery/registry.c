/* registry: see registry.h. Three sorted pointer arrays (services by name,
 * instances by ID, checks by ID) give O(log n) lookups and ordered output
 * without a hash table; inserts and removals memmove at most a few tens of
 * KiB at the 10 000-instance limit. */
#include "discovery/registry.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/err.h"

#define MAX_OUTPUT 4096 /* Consul's default check output limit */
#define MAX_ID 256
#define MAX_TAGS 64
#define MAX_META 64 /* Consul's metaMaxKeyPairs */
#define MAX_META_KEY 128
#define MAX_META_VALUE 512
#define MAX_HEADERS 64
#define MAX_LISTENERS 8

/* ---- small helpers ------------------------------------------------------ */

const char *mg_check_status_name(mg_check_status_t s)
{
    switch (s) {
    case MG_CHECK_PASSING: return "passing";
    case MG_CHECK_WARNING: return "warning";
    default: return "critical";
    }
}

int mg_check_status_parse(const char *s)
{
    if (!s) return -1;
    if (!strcmp(s, "passing")) return MG_CHECK_PASSING;
    if (!strcmp(s, "warning")) return MG_CHECK_WARNING;
    if (!strcmp(s, "critical")) return MG_CHECK_CRITICAL;
    return -1;
}

const char *mg_check_kind_name(mg_check_kind_t k)
{
    switch (k) {
    case MG_CHECK_TTL: return "ttl";
    case MG_CHECK_HTTP: return "http";
    default: return "tcp";
    }
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool empty(const char *s) { return !s || !*s; }

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Copy of s cut to at most max bytes, on a UTF-8 character boundary. */
static char *dup_trunc(const char *s, size_t max)
{
    if (!s) s = "";
    size_t n = strlen(s);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

void mg_check_def_free(mg_check_def_t *c)
{
    if (!c) return;
    free(c->id);
    free(c->name);
    free(c->notes);
    free(c->http);
    free(c->method);
    free(c->body);
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].name);
        free(c->headers[i].value);
    }
    free(c->headers);
    free(c->tcp);
    memset(c, 0, sizeof *c);
}

void mg_reg_def_free(mg_reg_def_t *d)
{
    if (!d) return;
    free(d->id);
    free(d->name);
    free(d->address);
    for (size_t i = 0; i < d->ntags; i++)
        free(d->tags[i]);
    free(d->tags);
    for (size_t i = 0; i < d->nmeta; i++) {
        free(d->meta[i].name);
        free(d->meta[i].value);
    }
    free(d->meta);
    for (size_t i = 0; i < d->nchecks; i++)
        mg_check_def_free(&d->checks[i]);
    free(d->checks);
    memset(d, 0, sizeof *d);
}

/* ---- sorted pointer arrays --------------------------------------------- */

typedef struct {
    void **v;
    size_t n, cap;
} parr_t;

typedef const char *(*key_fn)(const void *);

static int parr_reserve(parr_t *a, size_t extra)
{
    if (a->n + extra <= a->cap) return 0;
    size_t cap = a->cap ? a->cap : 16;
    while (cap < a->n + extra)
        cap *= 2;
    void **v = realloc(a->v, cap * sizeof *v);
    if (!v) return -ENOMEM;
    a->v = v;
    a->cap = cap;
    return 0;
}

static size_t parr_find(const parr_t *a, const char *key, key_fn kf, bool *found)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(kf(a->v[mid]), key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = false;
    return lo;
}

static void *parr_get(const parr_t *a, const char *key, key_fn kf)
{
    bool f;
    size_t i = parr_find(a, key, kf, &f);
    return f ? a->v[i] : NULL;
}

/* Capacity must have been reserved. */
static void parr_insert(parr_t *a, void *p, key_fn kf)
{
    bool f;
    size_t i = parr_find(a, kf(p), kf, &f);
    memmove(&a->v[i + 1], &a->v[i], (a->n - i) * sizeof *a->v);
    a->v[i] = p;
    a->n++;
}

static void parr_remove(parr_t *a, const char *key, key_fn kf)
{
    bool f;
    size_t i = parr_find(a, key, kf, &f);
    if (!f) return;
    memmove(&a->v[i], &a->v[i + 1], (a->n - i - 1) * sizeof *a->v);
    a->n--;
}

/* ---- the registry ------------------------------------------------------- */

typedef struct {
    char *name;
    uint64_t index;
    parr_t inst; /* mg_reg_instance_t*, by ID */
} svc_t;

struct mg_registry {
    mg_registry_opts_t o;
    uint64_t index;
    parr_t svcs;   /* svc_t*, by name; may hold empty tombstones */
    size_t nlive;  /* services with at least one instance */
    parr_t insts;  /* mg_reg_instance_t*, by ID */
    parr_t checks; /* mg_reg_check_t*, by check ID */
    struct {
        mg_reg_listener_fn fn;
        void *ud;
    } ls[MAX_LISTENERS];
    int nls;
    mg_reg_persist_t persist;
    void *persist_ud;
    mg_registry_stats_t stats;
};

static const char *svc_key(const void *p) { return ((const svc_t *)p)->name; }
static const char *inst_key(const void *p) { return ((const mg_reg_instance_t *)p)->def.id; }
static const char *check_key(const void *p) { return ((const mg_reg_check_t *)p)->def->id; }

void mg_registry_opts_default(mg_registry_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->max_instances = 10000;
    o->max_services = 10000;
    o->max_checks_per_instance = 32;
    o->min_deregister_ms = 60000;
    o->min_interval_ms = 1000;
    o->node_name = "meshgate";
    o->node_address = "127.0.0.1";
    o->node_id = "";
    o->datacenter = "dc1";
}

mg_registry_t *mg_registry_new(const mg_registry_opts_t *opts)
{
    mg_registry_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    mg_registry_opts_t d;
    mg_registry_opts_default(&d);
    if (opts) {
        r->o = *opts;
        if (!r->o.max_instances) r->o.max_instances = d.max_instances;
        if (!r->o.max_services) r->o.max_services = d.max_services;
        if (!r->o.max_checks_per_instance) r->o.max_checks_per_instance = d.max_checks_per_instance;
        if (r->o.min_deregister_ms < 0) r->o.min_deregister_ms = 0;
        if (r->o.min_interval_ms < 0) r->o.min_interval_ms = 0;
    } else {
        r->o = d;
    }
    r->o.node_name = strdup(r->o.node_name ? r->o.node_name : d.node_name);
    r->o.node_address = strdup(r->o.node_address ? r->o.node_address : d.node_address);
    r->o.node_id = strdup(r->o.node_id ? r->o.node_id : d.node_id);
    r->o.datacenter = strdup(r->o.datacenter ? r->o.datacenter : d.datacenter);
    r->index = 1;
    if (!r->o.node_name || !r->o.node_address || !r->o.node_id || !r->o.datacenter) {
        mg_registry_free(r);
        return NULL;
    }
    return r;
}

static void check_state_free(mg_reg_check_t *c) { free(c->output); }

static void instance_free(mg_reg_instance_t *inst)
{
    if (!inst) return;
    if (inst->checks)
        for (size_t i = 0; i < inst->def.nchecks; i++)
            check_state_free(&inst->checks[i]);
    free(inst->checks);
    mg_reg_def_free(&inst->def);
    free(inst);
}

static void svc_free(svc_t *s)
{
    free(s->name);
    free(s->inst.v);
    free(s);
}

void mg_registry_free(mg_registry_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->insts.n; i++)
        instance_free(r->insts.v[i]);
    for (size_t i = 0; i < r->svcs.n; i++)
        svc_free(r->svcs.v[i]);
    free(r->insts.v);
    free(r->svcs.v);
    free(r->checks.v);
    free((char *)r->o.node_name);
    free((char *)r->o.node_address);
    free((char *)r->o.node_id);
    free((char *)r->o.datacenter);
    free(r);
}

const mg_registry_opts_t *mg_registry_opts(const mg_registry_t *r) { return &r->o; }
const mg_registry_stats_t *mg_registry_stats(const mg_registry_t *r) { return &r->stats; }

int mg_registry_add_listener(mg_registry_t *r, mg_reg_listener_fn fn, void *ud)
{
    if (r->nls >= MAX_LISTENERS) return MG_ELIMIT;
    r->ls[r->nls].fn = fn;
    r->ls[r->nls].ud = ud;
    r->nls++;
    return 0;
}

void mg_registry_set_persist(mg_registry_t *r, const mg_reg_persist_t *p, void *ud)
{
    if (p) r->persist = *p;
    else memset(&r->persist, 0, sizeof r->persist);
    r->persist_ud = ud;
}

static void emit(mg_registry_t *r, const mg_reg_event_t *ev)
{
    for (int i = 0; i < r->nls; i++)
        r->ls[i].fn(r->ls[i].ud, ev);
}

mg_check_status_t mg_reg_instance_status(const mg_reg_instance_t *inst)
{
    mg_check_status_t s = MG_CHECK_PASSING;
    for (size_t i = 0; i < inst->def.nchecks; i++)
        if (inst->checks[i].status > s)
            s = inst->checks[i].status;
    return s;
}

uint64_t mg_registry_index(const mg_registry_t *r, const char *service)
{
    if (service) {
        svc_t *s = parr_get(&r->svcs, service, svc_key);
        if (s) return s->index;
    }
    return r->index;
}

void mg_registry_raise_index(mg_registry_t *r, uint64_t idx)
{
    if (idx > r->index) r->index = idx;
}

/* ---- validation ------------------------------------------------------- */

static bool has_ctl(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return true;
    return false;
}

static bool meta_key_ok(const char *k)
{
    if (!*k) return false;
    for (; *k; k++) {
        char c = *k;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool hostport_ok(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1]) return false;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return *end == 0 && port > 0 && port <= 65535;
}

/* Fills defaults and checks every field. MG_EPARSE with "Field: problem". */
static int validate(const mg_registry_t *r, mg_reg_def_t *d, char *err, size_t errlen)
{
    if (empty(d->name)) {
        seterr(err, errlen, "Missing service name");
        return MG_EPARSE;
    }
    if (strlen(d->name) > MAX_ID || has_ctl(d->name)) {
        seterr(err, errlen, "Name: must be 1-%d characters without control characters", MAX_ID);
        return MG_EPARSE;
    }
    if (empty(d->id)) {
        free(d->id);
        if (!(d->id = strdup(d->name))) return -ENOMEM;
    }
    if (strlen(d->id) > MAX_ID || has_ctl(d->id)) {
        seterr(err, errlen, "ID: must be 1-%d characters without control characters", MAX_ID);
        return MG_EPARSE;
    }
    if (d->address && (strlen(d->address) > MAX_ID || has_ctl(d->address))) {
        seterr(err, errlen, "Address: must be at most %d characters without control characters", MAX_ID);
        return MG_EPARSE;
    }
    if (d->address && (!strcmp(d->address, "0.0.0.0") || !strcmp(d->address, "::") || !strcmp(d->address, "[::]"))) {
        seterr(err, errlen, "Invalid service address");
        return MG_EPARSE;
    }
    if (d->ntags > MAX_TAGS) {
        seterr(err, errlen, "Tags: at most %d tags", MAX_TAGS);
        return MG_EPARSE;
    }
    for (size_t i = 0; i < d->ntags; i++)
        if (strlen(d->tags[i]) > MAX_ID || has_ctl(d->tags[i])) {
            seterr(err, errlen, "Tags[%zu]: must be at most %d characters without control characters", i, MAX_ID);
            return MG_EPARSE;
        }
    if (d->nmeta > MAX_META) {
        seterr(err, errlen, "Invalid Service Meta: Meta: at most %d key/value pairs", MAX_META);
        return MG_EPARSE;
    }
    for (size_t i = 0; i < d->nmeta; i++) {
        const char *k = d->meta[i].name, *v = d->meta[i].value;
        if (!meta_key_ok(k)) {
            seterr(err, errlen, "Invalid Service Meta: Meta[\"%.64s\"]: key may contain only letters, digits, '_' and '-'", k);
            return MG_EPARSE;
        }
        if (strlen(k) > MAX_META_KEY) {
            seterr(err, errlen, "Invalid Service Meta: Meta[\"%.64s...\"]: key longer than %d characters", k, MAX_META_KEY);
            return MG_EPARSE;
        }
        if (!strncmp(k, "consul-", 7)) {
            seterr(err, errlen, "Invalid Service Meta: Meta[\"%s\"]: key prefix 'consul-' is reserved for internal use", k);
            return MG_EPARSE;
        }
        if (strlen(v) > MAX_META_VALUE) {
            seterr(err, errlen, "Invalid Service Meta: Meta[\"%s\"]: value longer than %d characters", k, MAX_META_VALUE);
            return MG_EPARSE;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(d->meta[j].name, k)) {
                seterr(err, errlen, "Invalid Service Meta: Meta[\"%s\"]: duplicate key", k);
                return MG_EPARSE;
            }
    }
    if (!d->has_weights) {
        d->weight_passing = 1;
        d->weight_warning = 1;
    } else if (d->weight_passing < 1) {
        seterr(err, errlen, "Invalid Weights: Weights.Passing: must be greater than 0");
        return MG_EPARSE;
    }
    d->has_weights = true;
    if (d->nchecks > r->o.max_checks_per_instance) {
        seterr(err, errlen, "Checks: at most %u checks per service instance", r->o.max_checks_per_instance);
        return MG_EPARSE;
    }
    for (size_t i = 0; i < d->nchecks; i++) {
        mg_check_def_t *c = &d->checks[i];
        char path[32];
        if (d->single_check) snprintf(path, sizeof path, "Check");
        else snprintf(path, sizeof path, "Checks[%zu]", i);
        if (empty(c->id)) {
            char buf[MAX_ID + 32];
            if (d->nchecks > 1) snprintf(buf, sizeof buf, "service:%s:%zu", d->id, i + 1);
            else snprintf(buf, sizeof buf, "service:%s", d->id);
            free(c->id);
            if (!(c->id = strdup(buf))) return -ENOMEM;
        }
        if (strlen(c->id) > MAX_ID + 16 || has_ctl(c->id)) {
            seterr(err, errlen, "%s.CheckID: must be at most %d characters without control characters", path, MAX_ID);
            return MG_EPARSE;
        }
        if (empty(c->name)) {
            char buf[MAX_ID + 32];
            snprintf(buf, sizeof buf, "Service '%s' check", d->name);
            free(c->name);
            if (!(c->name = strdup(buf))) return -ENOMEM;
        }
        for (size_t j = 0; j < i; j++)
            if (!strcmp(d->checks[j].id, c->id)) {
                seterr(err, errlen, "%s.CheckID: duplicate check ID \"%s\"", path, c->id);
                return MG_EPARSE;
            }
        if (c->initial_status < -1 || c->initial_status > MG_CHECK_CRITICAL) {
            seterr(err, errlen, "%s.Status: must be 'passing', 'warning' or 'critical'", path);
            return MG_EPARSE;
        }
        if (c->deregister_after_ms < 0) {
            seterr(err, errlen, "%s.DeregisterCriticalServiceAfter: must not be negative", path);
            return MG_EPARSE;
        }
        if (c->deregister_after_ms > 0 && c->deregister_after_ms < r->o.min_deregister_ms)
            c->deregister_after_ms = r->o.min_deregister_ms;
        if (c->timeout_ms < 0) {
            seterr(err, errlen, "%s.Timeout: must not be negative", path);
            return MG_EPARSE;
        }
        switch (c->kind) {
        case MG_CHECK_TTL:
            if (c->ttl_ms <= 0) {
                seterr(err, errlen, "%s.TTL: must be > 0 for TTL checks", path);
                return MG_EPARSE;
            }
            break;
        case MG_CHECK_HTTP:
            if (empty(c->http) || has_ctl(c->http) ||
                (strncmp(c->http, "http://", 7) && strncmp(c->http, "https://", 8))) {
                seterr(err, errlen, "%s.HTTP: must be an http:// or https:// URL", path);
                return MG_EPARSE;
            }
            /* fall through */
        case MG_CHECK_TCP:
            if (c->kind == MG_CHECK_TCP && (empty(c->tcp) || !hostport_ok(c->tcp))) {
                seterr(err, errlen, "%s.TCP: must be \"host:port\"", path);
                return MG_EPARSE;
            }
            if (c->interval_ms <= 0) {
                seterr(err, errlen, "%s.Interval: must be > 0 for HTTP or TCP checks", path);
                return MG_EPARSE;
            }
            if (c->interval_ms < r->o.min_interval_ms)
                c->interval_ms = r->o.min_interval_ms;
            break;
        default:
            seterr(err, errlen, "%s: unknown check type", path);
            return MG_EPARSE;
        }
        if (c->nheaders > MAX_HEADERS) {
            seterr(err, errlen, "%s.Header: at most %d values", path, MAX_HEADERS);
            return MG_EPARSE;
        }
    }
    return 0;
}

/* ---- definition equality (idempotent re-registration) ------------------ */

static bool check_def_equal(const mg_check_def_t *a, const mg_check_def_t *b)
{
    if (!str_eq(a->id, b->id) || !str_eq(a->name, b->name) || !str_eq(a->notes, b->notes) ||
        a->kind != b->kind || !str_eq(a->http, b->http) || !str_eq(a->method, b->method) ||
        !str_eq(a->body, b->body) || a->tls_skip_verify != b->tls_skip_verify || !str_eq(a->tcp, b->tcp) ||
        a->interval_ms != b->interval_ms || a->timeout_ms != b->timeout_ms || a->ttl_ms != b->ttl_ms ||
        a->deregister_after_ms != b->deregister_after_ms || a->initial_status != b->initial_status ||
        a->nheaders != b->nheaders)
        return false;
    for (size_t i = 0; i < a->nheaders; i++)
        if (!str_eq(a->headers[i].name, b->headers[i].name) || !str_eq(a->headers[i].value, b->headers[i].value))
            return false;
    return true;
}

static bool def_equal(const mg_reg_def_t *a, const mg_reg_def_t *b)
{
    if (!str_eq(a->id, b->id) || !str_eq(a->name, b->name) || !str_eq(a->address, b->address) ||
        a->port != b->port || a->ntags != b->ntags || a->nmeta != b->nmeta ||
        a->weight_passing != b->weight_passing || a->weight_warning != b->weight_warning ||
        a->enable_tag_override != b->enable_tag_override || a->nchecks != b->nchecks)
        return false;
    for (size_t i = 0; i < a->ntags; i++)
        if (!str_eq(a->tags[i], b->tags[i])) return false;
    for (size_t i = 0; i < a->nmeta; i++)
        if (!str_eq(a->meta[i].name, b->meta[i].name) || !str_eq(a->meta[i].value, b->meta[i].value)) return false;
    for (size_t i = 0; i < a->nchecks; i++)
        if (!check_def_equal(&a->checks[i], &b->checks[i])) return false;
    return true;
}

static int check_def_copy(mg_check_def_t *dst, const mg_check_def_t *src)
{
    memset(dst, 0, sizeof *dst);
    *dst = *src;
    dst->id = dst->name = dst->notes = dst->http = dst->method = dst->body = dst->tcp = NULL;
    dst->headers = NULL;
    dst->nheaders = 0;
#define CP(f) if (src->f && !(dst->f = strdup(src->f))) goto oom
    CP(id); CP(name); CP(notes); CP(http); CP(method); CP(body); CP(tcp);
#undef CP
    if (src->nheaders) {
        if (!(dst->headers = calloc(src->nheaders, sizeof *dst->headers))) goto oom;
        for (size_t i = 0; i < src->nheaders; i++) {
            dst->nheaders = i + 1;
            if (!(dst->headers[i].name = strdup(src->headers[i].name)) ||
                !(dst->headers[i].value = strdup(src->headers[i].value)))
                goto oom;
        }
    }
    return 0;
oom:
    mg_check_def_free(dst);
    return -ENOMEM;
}

/* Consul without ?replace-existing-checks keeps the checks of the previous
 * registration that the new one does not mention. */
static int merge_old_checks(mg_reg_def_t *d, const mg_reg_instance_t *old)
{
    size_t extra = 0;
    for (size_t i = 0; i < old->def.nchecks; i++) {
        bool found = false;
        for (size_t j = 0; j < d->nchecks && !found; j++)
            found = !strcmp(d->checks[j].id, old->def.checks[i].id);
        if (!found) extra++;
    }
    if (!extra) return 0;
    mg_check_def_t *nc = realloc(d->checks, (d->nchecks + extra) * sizeof *nc);
    if (!nc) return -ENOMEM;
    d->checks = nc;
    for (size_t i = 0; i < old->def.nchecks; i++) {
        bool found = false;
        for (size_t j = 0; j < d->nchecks && !found; j++)
            found = !strcmp(d->checks[j].id, old->def.checks[i].id);
        if (found) continue;
        if (check_def_copy(&d->checks[d->nchecks], &old->def.checks[i])) return -ENOMEM;
        d->nchecks++;
    }
    return 0;
}

/* ---- table maintenance ------------------------------------------------- */

static svc_t *svc_of(const mg_registry_t *r, const mg_reg_instance_t *inst)
{
    return parr_get(&r->svcs, inst->def.name, svc_key);
}

/* Removes inst from every table (does not free it). */
static void unlink_instance(mg_registry_t *r, mg_reg_instance_t *inst)
{
    svc_t *s = svc_of(r, inst);
    if (s) {
        parr_remove(&s->inst, inst->def.id, inst_key);
        if (s->inst.n == 0) r->nlive--;
    }
    parr_remove(&r->insts, inst->def.id, inst_key);
    for (size_t i = 0; i < inst->def.nchecks; i++)
        parr_remove(&r->checks, inst->def.checks[i].id, check_key);
}

/* Drops empty service tombstones once there are many. Their index then
 * falls back to the global one, which is never smaller. */
static void prune_tombstones(mg_registry_t *r)
{
    size_t empties = r->svcs.n - r->nlive;
    size_t cap = r->o.max_services > 1024 ? r->o.max_services : 1024;
    if (empties <= cap) return;
    size_t w = 0;
    for (size_t i = 0; i < r->svcs.n; i++) {
        svc_t *s = r->svcs.v[i];
        if (s->inst.n == 0) svc_free(s);
        else r->svcs.v[w++] = s;
    }
    r->svcs.n = w;
}

static mg_check_status_t initial_status(const mg_check_def_t *c)
{
    return c->initial_status < 0 ? MG_CHECK_CRITICAL : (mg_check_status_t)c->initial_status;
}

int mg_registry_register(mg_registry_t *r, mg_reg_def_t *def, unsigned flags, int64_t now_ms,
                         char *err, size_t errlen)
{
    int rc;
    mg_reg_instance_t *ni = NULL;
    svc_t *newsvc = NULL;
    if (err && errlen) err[0] = 0;

    if ((rc = validate(r, def, err, errlen)) != 0) {
        if (rc == MG_EPARSE) r->stats.rejected_invalid++;
        goto fail;
    }
    mg_reg_instance_t *old = parr_get(&r->insts, def->id, inst_key);
    if (old && !(flags & MG_REG_REPLACE_CHECKS)) {
        if ((rc = merge_old_checks(def, old)) != 0) goto fail;
        if (def->nchecks > r->o.max_checks_per_instance) {
            seterr(err, errlen, "Checks: at most %u checks per service instance (including those kept from the previous registration; use ?replace-existing-checks)",
                   r->o.max_checks_per_instance);
            r->stats.rejected_invalid++;
            rc = MG_EPARSE;
            goto fail;
        }
    }
    for (size_t i = 0; i < def->nchecks; i++) {
        mg_reg_check_t *c = parr_get(&r->checks, def->checks[i].id, check_key);
        if (c && c->inst != old) {
            char path[32];
            if (def->single_check) snprintf(path, sizeof path, "Check");
            else snprintf(path, sizeof path, "Checks[%zu]", i);
            seterr(err, errlen, "%s.CheckID: \"%s\" is already used by service instance \"%s\"",
                   path, def->checks[i].id, c->inst->def.id);
            r->stats.rejected_invalid++;
            rc = MG_EPARSE;
            goto fail;
        }
    }
    if (old && def_equal(&old->def, def)) {
        mg_reg_def_free(def);
        return 0;
    }
    svc_t *svc = parr_get(&r->svcs, def->name, svc_key);
    bool svc_gains = !svc || svc->inst.n == 0;
    if (!old && r->insts.n >= r->o.max_instances) {
        seterr(err, errlen, "registry full: %u service instances (limit)", r->o.max_instances);
        r->stats.rejected_full++;
        rc = MG_ELIMIT;
        goto fail;
    }
    if (svc_gains && r->nlive >= r->o.max_services) {
        seterr(err, errlen, "registry full: %u services (limit)", r->o.max_services);
        r->stats.rejected_full++;
        rc = MG_ELIMIT;
        goto fail;
    }

    /* Reserve everything, build the new instance. */
    rc = -ENOMEM;
    if (parr_reserve(&r->insts, 1) || parr_reserve(&r->checks, def->nchecks) || parr_reserve(&r->svcs, 1))
        goto oom;
    if (!svc) {
        if (!(newsvc = calloc(1, sizeof *newsvc)) || !(newsvc->name = strdup(def->name))) goto oom;
        svc = newsvc;
    }
    if (parr_reserve(&svc->inst, 1)) goto oom;
    if (!(ni = calloc(1, sizeof *ni))) goto oom;
    if (def->nchecks && !(ni->checks = calloc(def->nchecks, sizeof *ni->checks))) goto oom;
    ni->def = *def;
    memset(def, 0, sizeof *def);
    for (size_t i = 0; i < ni->def.nchecks; i++) {
        mg_reg_check_t *c = &ni->checks[i];
        c->def = &ni->def.checks[i];
        c->inst = ni;
        const mg_reg_check_t *oc = NULL;
        if (old)
            for (size_t j = 0; j < old->def.nchecks && !oc; j++)
                if (!strcmp(old->def.checks[j].id, c->def->id) && old->def.checks[j].kind == c->def->kind)
                    oc = &old->checks[j];
        if (oc) {
            c->status = oc->status;
            c->output = strdup(oc->output);
            c->ttl_deadline_ms = oc->ttl_deadline_ms;
            c->critical_since_ms = oc->critical_since_ms;
            c->create_index = oc->create_index;
            c->modify_index = oc->modify_index;
            c->persisted_deadline_ms = oc->persisted_deadline_ms;
            c->state_dirty = oc->state_dirty;
        } else {
            c->status = (flags & MG_REG_RESTORING) ? MG_CHECK_CRITICAL : initial_status(c->def);
            c->output = strdup("");
            c->critical_since_ms = now_ms;
            if (c->def->kind == MG_CHECK_TTL) {
                c->ttl_deadline_ms = now_ms + c->def->ttl_ms;
                c->state_dirty = true;
            }
        }
        if (!c->output) goto oom;
    }

    if (r->persist.save && (rc = r->persist.save(r->persist_ud, ni, r->index + 1)) != 0) {
        r->stats.persist_errors++;
        seterr(err, errlen, "could not persist the registration (%d)", rc);
        goto oom;
    }

    /* Apply: nothing below can fail. */
    uint64_t idx = ++r->index;
    svc_t *oldsvc = NULL;
    if (old) {
        oldsvc = svc_of(r, old);
        unlink_instance(r, old);
    }
    if (newsvc) parr_insert(&r->svcs, newsvc, svc_key);
    if (svc->inst.n == 0) r->nlive++;
    parr_insert(&svc->inst, ni, inst_key);
    parr_insert(&r->insts, ni, inst_key);
    for (size_t i = 0; i < ni->def.nchecks; i++) {
        mg_reg_check_t *c = &ni->checks[i];
        if (!c->create_index) c->create_index = c->modify_index = idx;
        parr_insert(&r->checks, c, check_key);
    }
    ni->create_index = old ? old->create_index : idx;
    ni->modify_index = idx;
    svc->index = idx;
    r->stats.registered++;
    if (oldsvc && oldsvc != svc) {
        oldsvc->index = idx;
        mg_reg_event_t ev = { MG_REG_EV_DEREGISTERED, oldsvc->name, ni->def.id, NULL,
                              MG_CHECK_CRITICAL, true, idx };
        emit(r, &ev);
    }
    mg_reg_event_t ev = { MG_REG_EV_REGISTERED, svc->name, ni->def.id, NULL, mg_reg_instance_status(ni), true, idx };
    emit(r, &ev);
    instance_free(old);
    prune_tombstones(r);
    return 0;

oom:
    if (ni) {
        *def = ni->def; /* hand back so it is freed once below */
        memset(&ni->def, 0, sizeof ni->def);
        for (size_t i = 0; ni->checks && i < def->nchecks; i++)
            check_state_free(&ni->checks[i]);
        free(ni->checks);
        free(ni);
    }
    if (newsvc) svc_free(newsvc);
    if (rc == -ENOMEM && err && errlen && !err[0]) seterr(err, errlen, "out of memory");
fail:
    mg_reg_def_free(def);
    return rc;
}

static void remove_instance(mg_registry_t *r, mg_reg_instance_t *inst, mg_reg_event_kind_t kind)
{
    svc_t *s = svc_of(r, inst);
    unlink_instance(r, inst);
    uint64_t idx = ++r->index;
    if (s) s->index = idx;
    mg_reg_event_t ev = { kind, inst->def.name, inst->def.id, NULL, MG_CHECK_CRITICAL, true, idx };
    emit(r, &ev);
    instance_free(inst);
    prune_tombstones(r);
}

int mg_registry_deregister(mg_registry_t *r, const char *id, int64_t now_ms)
{
    mg_reg_instance_t *inst = parr_get(&r->insts, id, inst_key);
    if (!inst) return -ENOENT;
    if (r->persist.remove) {
        int rc = r->persist.remove(r->persist_ud, id, r->index + 1);
        if (rc) {
            r->stats.persist_errors++;
            return rc;
        }
    }
    remove_instance(r, inst, MG_REG_EV_DEREGISTERED);
    r->stats.deregistered++;
    return 0;
}

/* ---- checks ------------------------------------------------------------ */

static void set_status(mg_registry_t *r, mg_reg_check_t *c, mg_check_status_t st, int64_t now_ms)
{
    if (c->status == st) return;
    mg_reg_instance_t *inst = (mg_reg_instance_t *)c->inst;
    mg_check_status_t before = mg_reg_instance_status(inst);
    c->status = st;
    if (st == MG_CHECK_CRITICAL) c->critical_since_ms = now_ms;
    c->state_dirty = true;
    uint64_t idx = ++r->index;
    c->modify_index = idx;
    svc_t *s = svc_of(r, inst);
    if (s) s->index = idx;
    mg_check_status_t after = mg_reg_instance_status(inst);
    mg_reg_event_t ev = { MG_REG_EV_CHECK, inst->def.name, inst->def.id, c->def->id, after, before != after, idx };
    emit(r, &ev);
}

static int set_output(mg_reg_check_t *c, const char *output)
{
    if (!output) output = "";
    if (!strcmp(c->output, output)) return 0;
    char *o = dup_trunc(output, MAX_OUTPUT);
    if (!o) return -ENOMEM;
    free(c->output);
    c->output = o;
    c->state_dirty = true;
    return 0;
}

int mg_registry_check_ttl(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                          const char *output, int64_t now_ms)
{
    mg_reg_check_t *c = parr_get(&r->checks, check_id, check_key);
    if (!c) return -ENOENT;
    if (c->def->kind != MG_CHECK_TTL) return MG_EPARSE;
    if (r->persist.check) {
        int prc = r->persist.check(r->persist_ud, c, st, output ? output : "", now_ms + c->def->ttl_ms);
        if (prc) {
            r->stats.persist_errors++;
            return prc;
        }
    }
    int rc = set_output(c, output);
    if (rc) return rc;
    c->ttl_deadline_ms = now_ms + c->def->ttl_ms;
    /* Persist a moving deadline only every half TTL: bounded writes. */
    if (c->ttl_deadline_ms - c->persisted_deadline_ms > c->def->ttl_ms / 2) c->state_dirty = true;
    set_status(r, c, st, now_ms);
    return 0;
}

int mg_registry_check_result(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                             const char *output, int64_t now_ms)
{
    mg_reg_check_t *c = parr_get(&r->checks, check_id, check_key);
    if (!c) return -ENOENT;
    if (c->def->kind == MG_CHECK_TTL) return MG_EPARSE;
    int rc = set_output(c, output);
    if (rc) return rc;
    c->state_dirty = false; /* only TTL state is persisted */
    set_status(r, c, st, now_ms);
    c->state_dirty = false;
    return 0;
}

int mg_registry_check_restore(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                              const char *output, int64_t deadline_ms, int64_t now_ms)
{
    mg_reg_check_t *c = parr_get(&r->checks, check_id, check_key);
    if (!c) return -ENOENT;
    if (c->def->kind != MG_CHECK_TTL) return MG_EPARSE;
    int rc = set_output(c, output);
    if (rc) return rc;
    c->status = st;
    c->ttl_deadline_ms = deadline_ms;
    c->persisted_deadline_ms = deadline_ms;
    c->critical_since_ms = now_ms;
    c->state_dirty = false;
    return 0;
}

/* "TTL expired", keeping the last thing the service said (Consul's wording). */
static void set_expired_output(mg_reg_check_t *c)
{
    static const char pfx[] = "TTL expired (last output before timeout follows): ";
    if (!*c->output) {
        set_output(c, "TTL expired");
        return;
    }
    if (!strncmp(c->output, pfx, sizeof pfx - 1)) return;
    size_t n = strlen(c->output);
    char *o = malloc(sizeof pfx + n);
    if (!o) return;
    memcpy(o, pfx, sizeof pfx - 1);
    memcpy(o + sizeof pfx - 1, c->output, n + 1);
    char *t = dup_trunc(o, MAX_OUTPUT);
    free(o);
    if (t) {
        free(c->output);
        c->output = t;
    }
}

int mg_registry_check_apply(mg_registry_t *r, const char *check_id, mg_check_status_t st,
                            const char *output, int64_t deadline_ms, int64_t now_ms)
{
    mg_reg_check_t *c = parr_get(&r->checks, check_id, check_key);
    if (!c) return -ENOENT;
    if (c->def->kind != MG_CHECK_TTL) return MG_EPARSE;
    if (st != MG_CHECK_CRITICAL && deadline_ms <= now_ms) {
        c->ttl_deadline_ms = deadline_ms;
        c->persisted_deadline_ms = deadline_ms;
        if (c->status != MG_CHECK_CRITICAL) {
            int rc = set_output(c, output);
            if (rc) return rc;
            set_expired_output(c);
            set_status(r, c, MG_CHECK_CRITICAL, now_ms);
            c->critical_since_ms = deadline_ms;
        }
        c->state_dirty = false;
        return 0;
    }
    int rc = set_output(c, output);
    if (rc) return rc;
    c->ttl_deadline_ms = deadline_ms;
    c->persisted_deadline_ms = deadline_ms;
    set_status(r, c, st, now_ms);
    c->state_dirty = false;
    return 0;
}

void mg_registry_foreach_dirty_check(mg_registry_t *r, int (*fn)(void *ud, const mg_reg_check_t *c), void *ud)
{
    for (size_t i = 0; i < r->checks.n; i++) {
        mg_reg_check_t *c = r->checks.v[i];
        if (!c->state_dirty) continue;
        if (c->def->kind != MG_CHECK_TTL) {
            c->state_dirty = false;
            continue;
        }
        if (fn(ud, c) == 0) {
            c->state_dirty = false;
            c->persisted_deadline_ms = c->ttl_deadline_ms;
        }
    }
}

static int64_t reap_after(const mg_registry_t *r, const mg_reg_check_t *c)
{
    int64_t t = c->def->deregister_after_ms;
    return t < r->o.min_deregister_ms ? r->o.min_deregister_ms : t;
}

int mg_registry_expire(mg_registry_t *r, int64_t now_ms)
{
    int changes = 0;
    for (size_t i = 0; i < r->checks.n; i++) {
        mg_reg_check_t *c = r->checks.v[i];
        if (c->def->kind != MG_CHECK_TTL || c->status == MG_CHECK_CRITICAL || now_ms < c->ttl_deadline_ms)
            continue;
        set_expired_output(c);
        r->stats.ttl_expired++;
        set_status(r, c, MG_CHECK_CRITICAL, now_ms);
        changes++;
    }
    /* Backwards: removing index i only shifts entries already visited. */
    for (size_t i = r->insts.n; i-- > 0;) {
        mg_reg_instance_t *inst = r->insts.v[i];
        bool reap = false;
        for (size_t j = 0; j < inst->def.nchecks && !reap; j++) {
            const mg_reg_check_t *c = &inst->checks[j];
            reap = c->def->deregister_after_ms > 0 && c->status == MG_CHECK_CRITICAL &&
                   now_ms - c->critical_since_ms >= reap_after(r, c);
        }
        if (!reap) continue;
        if (r->persist.remove && r->persist.remove(r->persist_ud, inst->def.id, r->index + 1))
            r->stats.persist_errors++;
        r->stats.reaped++;
        remove_instance(r, inst, MG_REG_EV_REAPED);
        changes++;
    }
    return changes;
}

int64_t mg_registry_next_deadline(const mg_registry_t *r)
{
    int64_t t = INT64_MAX;
    for (size_t i = 0; i < r->checks.n; i++) {
        const mg_reg_check_t *c = r->checks.v[i];
        if (c->def->kind == MG_CHECK_TTL && c->status != MG_CHECK_CRITICAL && c->ttl_deadline_ms < t)
            t = c->ttl_deadline_ms;
        if (c->status == MG_CHECK_CRITICAL && c->def->deregister_after_ms > 0) {
            int64_t d = c->critical_since_ms + reap_after(r, c);
            if (d < t) t = d;
        }
    }
    return t;
}

/* ---- queries ------------------------------------------------------------ */

size_t mg_registry_instance_count(const mg_registry_t *r) { return r->insts.n; }

const mg_reg_instance_t *mg_registry_instance_at(const mg_registry_t *r, size_t i)
{
    return i < r->insts.n ? r->insts.v[i] : NULL;
}

const mg_reg_instance_t *mg_registry_instance_get(const mg_registry_t *r, const char *id)
{
    return parr_get(&r->insts, id, inst_key);
}

const mg_reg_check_t *mg_registry_check_get(const mg_registry_t *r, const char *check_id)
{
    return parr_get(&r->checks, check_id, check_key);
}

size_t mg_registry_check_count(const mg_registry_t *r) { return r->checks.n; }

const mg_reg_check_t *mg_registry_check_at(const mg_registry_t *r, size_t i)
{
    return i < r->checks.n ? r->checks.v[i] : NULL;
}

static void view_of(const svc_t *s, mg_reg_service_view_t *out)
{
    out->name = s->name;
    out->index = s->index;
    out->instances = (const mg_reg_instance_t *const *)s->inst.v;
    out->n = s->inst.n;
}

bool mg_registry_service_next(const mg_registry_t *r, size_t *cursor, mg_reg_service_view_t *out)
{
    while (*cursor < r->svcs.n) {
        const svc_t *s = r->svcs.v[(*cursor)++];
        if (s->inst.n) {
            view_of(s, out);
            return true;
        }
    }
    return false;
}

bool mg_registry_service_get(const mg_registry_t *r, const char *name, mg_reg_service_view_t *out)
{
    const svc_t *s = parr_get(&r->svcs, name, svc_key);
    if (!s || !s->inst.n) return false;
    view_of(s, out);
    return true;
}

size_t mg_registry_service_count(const mg_registry_t *r) { return r->nlive; }

/* ---- snapshot ----------------------------------------------------------- */

typedef struct {
    mg_arena_t *a;
} snap_priv_t;

static const char *adup(mg_arena_t *a, const char *s, bool *oom)
{
    if (!s) s = "";
    size_t n = strlen(s);
    char *p = mg_arena_alloc(a, n + 1);
    if (!p) {
        *oom = true;
        return "";
    }
    memcpy(p, s, n + 1);
    return p;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const mg_disco_label_t *)a)->name, ((const mg_disco_label_t *)b)->name);
}

static void fill_endpoint(const mg_registry_t *r, mg_arena_t *a, const mg_reg_instance_t *inst,
                          mg_disco_endpoint_t *ep, bool *oom)
{
    const mg_reg_def_t *d = &inst->def;
    ep->id = adup(a, d->id, oom);
    ep->address = adup(a, empty(d->address) ? r->o.node_address : d->address, oom);
    ep->port = d->port;
    ep->status = mg_reg_instance_status(inst);
    ep->weight = ep->status == MG_CHECK_WARNING ? d->weight_warning : d->weight_passing;
    const char **tags = mg_arena_alloc(a, (d->ntags ? d->ntags : 1) * sizeof *tags);
    mg_disco_label_t *labels = mg_arena_alloc(a, (d->nmeta + d->ntags + 1) * sizeof *labels);
    if (!tags || !labels) {
        *oom = true;
        return;
    }
    size_t nl = 0;
    for (size_t i = 0; i < d->nmeta; i++) {
        labels[nl].name = adup(a, d->meta[i].name, oom);
        labels[nl].value = adup(a, d->meta[i].value, oom);
        nl++;
    }
    for (size_t i = 0; i < d->ntags; i++) {
        tags[i] = adup(a, d->tags[i], oom);
        const char *eq = strchr(d->tags[i], '=');
        if (!eq || eq == d->tags[i]) continue;
        size_t kn = (size_t)(eq - d->tags[i]);
        bool dup = false;
        for (size_t j = 0; j < nl && !dup; j++)
            dup = strlen(labels[j].name) == kn && !memcmp(labels[j].name, d->tags[i], kn);
        if (dup) continue;
        char *k = mg_arena_alloc(a, kn + 1);
        if (!k) {
            *oom = true;
            return;
        }
        memcpy(k, d->tags[i], kn);
        k[kn] = 0;
        labels[nl].name = k;
        labels[nl].value = adup(a, eq + 1, oom);
        nl++;
    }
    qsort(labels, nl, sizeof *labels, label_cmp);
    ep->labels = labels;
    ep->nlabels = nl;
    ep->tags = tags;
    ep->ntags = d->ntags;
}

mg_disco_snapshot_t *mg_registry_snapshot(const mg_registry_t *r, bool include_warning)
{
    mg_arena_t *a = mg_arena_new(64 * 1024, (size_t)1 << 34);
    if (!a) return NULL;
    bool oom = false;
    mg_disco_snapshot_t *s = mg_arena_alloc(a, sizeof *s);
    snap_priv_t *pv = mg_arena_alloc(a, sizeof *pv);
    mg_disco_service_t *svcs = mg_arena_alloc(a, (r->nlive ? r->nlive : 1) * sizeof *svcs);
    if (!s || !pv || !svcs) goto oom;
    pv->a = a;
    s->priv = pv;
    s->index = r->index;
    s->services = svcs;
    s->nservices = 0;
    size_t cur = 0;
    mg_reg_service_view_t v;
    while (mg_registry_service_next(r, &cur, &v)) {
        mg_disco_service_t *ds = &svcs[s->nservices++];
        ds->name = adup(a, v.name, &oom);
        ds->index = v.index;
        mg_disco_endpoint_t *eps = mg_arena_alloc(a, v.n * sizeof *eps);
        if (!eps) goto oom;
        size_t n = 0;
        for (size_t i = 0; i < v.n; i++) {
            mg_check_status_t st = mg_reg_instance_status(v.instances[i]);
            if (st == MG_CHECK_CRITICAL || (st == MG_CHECK_WARNING && !include_warning)) continue;
            fill_endpoint(r, a, v.instances[i], &eps[n++], &oom);
        }
        ds->eps = eps;
        ds->neps = n;
        if (oom) goto oom;
    }
    if (oom) goto oom;
    return s;
oom:
    mg_arena_free(a);
    return NULL;
}

void mg_disco_snapshot_free(mg_disco_snapshot_t *s)
{
    if (s) mg_arena_free(((snap_priv_t *)s->priv)->a);
}

const mg_disco_service_t *mg_disco_snapshot_find(const mg_disco_snapshot_t *s, const char *name)
{
    size_t lo = 0, hi = s->nservices;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->services[mid].name, name);
        if (!c) return &s->services[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *mg_disco_endpoint_label(const mg_disco_endpoint_t *ep, const char *name)
{
    for (size_t i = 0; i < ep->nlabels; i++)
        if (!strcmp(ep->labels[i].name, name)) return ep->labels[i].value;
    return NULL;
}
