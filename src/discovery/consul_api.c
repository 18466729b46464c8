/* consul_api: see consul_api.h. */
#include "discovery/consul_api.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "discovery/regjson.h"

struct mg_consul_api {
    mg_registry_t *reg;
    mg_consul_opts_t o;
    char *token;
    uint64_t rng;
    mg_consul_stats_t stats;
};

static const char CT_JSON[] = "application/json";
static const char CT_TEXT[] = "text/plain; charset=utf-8";

mg_consul_api_t *mg_consul_api_new(mg_registry_t *reg, const mg_consul_opts_t *opts)
{
    mg_consul_api_t *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->reg = reg;
    if (opts) a->o = *opts;
    if (!a->o.max_body) a->o.max_body = 65536;
    if (a->o.default_wait_ms <= 0) a->o.default_wait_ms = 300000;
    if (a->o.max_wait_ms <= 0) a->o.max_wait_ms = 600000;
    if (opts && opts->token && *opts->token && !(a->token = strdup(opts->token))) {
        free(a);
        return NULL;
    }
    a->o.token = a->token;
    a->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)a;
    return a;
}

void mg_consul_api_free(mg_consul_api_t *api)
{
    if (!api) return;
    free(api->token);
    free(api);
}

const mg_consul_stats_t *mg_consul_stats(const mg_consul_api_t *api) { return &api->stats; }

void mg_consul_resp_init(mg_consul_resp_t *r)
{
    memset(r, 0, sizeof *r);
    mg_buf_init(&r->body);
}

void mg_consul_resp_free(mg_consul_resp_t *r) { mg_buf_free(&r->body); }

bool mg_consul_match(mg_slice_t path) { return path.n >= 4 && !memcmp(path.p, "/v1/", 4); }

static uint64_t rnd(mg_consul_api_t *a)
{
    uint64_t z = (a->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- small helpers -------------------------------------------------------- */

static mg_consul_verdict_t text(mg_consul_resp_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static mg_consul_verdict_t text(mg_consul_resp_t *r, int status, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    r->status = status;
    r->content_type = CT_TEXT;
    mg_buf_add(&r->body, tmp, strlen(tmp));
    return MG_CONSUL_DONE;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s ('+' is a space when plus is set) into a new string.
 * NULL on a bad escape, an encoded NUL or out of memory. */
static char *pct_decode(mg_slice_t s, bool plus)
{
    char *o = malloc(s.n + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < s.n; i++) {
        char c = s.p[i];
        if (c == '%') {
            int h, l;
            if (i + 2 >= s.n) goto bad;
            if ((h = hexval(s.p[i + 1])) < 0 || (l = hexval(s.p[i + 2])) < 0) goto bad;
            c = (char)(h * 16 + l);
            if (!c) goto bad;
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        } else if (!c) {
            goto bad;
        }
        *w++ = c;
    }
    *w = 0;
    return o;
bad:
    free(o);
    return NULL;
}

/* Iterates query parameters: *pos starts at 0. Key and value raw slices. */
static bool qnext(mg_slice_t q, size_t *pos, mg_slice_t *k, mg_slice_t *v)
{
    while (*pos < q.n) {
        size_t s = *pos, e = s;
        while (e < q.n && q.p[e] != '&') e++;
        *pos = e + 1;
        if (e == s) continue;
        size_t eq = s;
        while (eq < e && q.p[eq] != '=') eq++;
        *k = mg_slice(q.p + s, eq - s);
        *v = eq < e ? mg_slice(q.p + eq + 1, e - eq - 1) : mg_slice(q.p + e, 0);
        return true;
    }
    return false;
}

/* The decoded value of the first parameter named key (caller frees), NULL
 * when absent; *present tells absent from undecodable. */
static char *qget(mg_slice_t q, const char *key, bool *present)
{
    size_t pos = 0;
    mg_slice_t k, v;
    *present = false;
    while (qnext(q, &pos, &k, &v))
        if (mg_slice_eq(k, mg_slice_cstr(key))) {
            *present = true;
            return pct_decode(v, true);
        }
    return NULL;
}

static bool qhas(mg_slice_t q, const char *key)
{
    bool p;
    free(qget(q, key, &p));
    return p;
}

/* ?passing / ?replace-existing-checks: present and not false. -1 when the
 * value is not a boolean. */
static int qbool(mg_slice_t q, const char *key)
{
    bool p;
    char *v = qget(q, key, &p);
    int r;
    if (!p) r = 0;
    else if (!v) r = -1;
    else if (!*v || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "t") || !strcmp(v, "TRUE") || !strcmp(v, "True")) r = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "f") || !strcmp(v, "FALSE") || !strcmp(v, "False")) r = 0;
    else r = -1;
    free(v);
    return r;
}

static bool ct_eq(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char d = (unsigned char)(an != bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(a[i] ^ b[i]);
    return d == 0;
}

static bool token_ok(const mg_consul_api_t *a, const mg_consul_req_t *req)
{
    if (!a->token) return true;
    size_t tn = strlen(a->token);
    if (req->x_consul_token.n && ct_eq(req->x_consul_token.p, req->x_consul_token.n, a->token, tn)) return true;
    mg_slice_t au = req->authorization;
    if (au.n > 7 && !strncasecmp(au.p, "Bearer ", 7)) {
        mg_slice_t t = mg_slice(au.p + 7, au.n - 7);
        while (t.n && t.p[0] == ' ') t.p++, t.n--;
        while (t.n && t.p[t.n - 1] == ' ') t.n--;
        if (ct_eq(t.p, t.n, a->token, tn)) return true;
    }
    bool p;
    char *qt = qget(req->query, "token", &p);
    bool ok = qt && ct_eq(qt, strlen(qt), a->token, tn);
    free(qt);
    return ok;
}

static bool prefix(mg_slice_t path, const char *pfx, mg_slice_t *rest)
{
    size_t n = strlen(pfx);
    if (path.n < n || memcmp(path.p, pfx, n)) return false;
    *rest = mg_slice(path.p + n, path.n - n);
    return true;
}

/* Go-style duration text ("10s", "1m30s", "1.5s", "500ms"). */
static void go_dur(mg_buf_t *b, int64_t ms)
{
    if (ms <= 0) {
        mg_buf_lit(b, "\"\"");
        return;
    }
    if (ms < 1000) {
        mg_buf_addf(b, "\"%lldms\"", (long long)ms);
        return;
    }
    long long h = ms / 3600000, m = ms / 60000 % 60, s = ms / 1000 % 60, f = ms % 1000;
    char tmp[64];
    int n = 0;
    if (h) n += snprintf(tmp + n, sizeof tmp - (size_t)n, "%lldh", h);
    if (h || m) n += snprintf(tmp + n, sizeof tmp - (size_t)n, "%lldm", m);
    if (f) {
        char fr[8];
        snprintf(fr, sizeof fr, "%03lld", f);
        for (int i = 2; i > 0 && fr[i] == '0'; i--) fr[i] = 0;
        snprintf(tmp + n, sizeof tmp - (size_t)n, "%lld.%ss", s, fr);
    } else {
        snprintf(tmp + n, sizeof tmp - (size_t)n, "%llds", s);
    }
    mg_buf_addf(b, "\"%s\"", tmp);
}

static void jstr(mg_buf_t *b, const char *s) { mg_buf_json_str(b, mg_slice_cstr(s ? s : "")); }

static void set_index_headers(mg_consul_resp_t *r, uint64_t idx)
{
    snprintf(r->headers, sizeof r->headers,
             "X-Consul-Index: %llu\r\nX-Consul-KnownLeader: true\r\nX-Consul-LastContact: 0\r\n",
             (unsigned long long)idx);
}

/* ---- JSON shapes ------------------------------------------------------------ */

static void w_tags(mg_buf_t *b, const mg_reg_def_t *d)
{
    mg_buf_lit(b, "[");
    for (size_t i = 0; i < d->ntags; i++) {
        if (i) mg_buf_lit(b, ",");
        jstr(b, d->tags[i]);
    }
    mg_buf_lit(b, "]");
}

static void w_meta(mg_buf_t *b, const mg_reg_def_t *d)
{
    mg_buf_lit(b, "{");
    for (size_t i = 0; i < d->nmeta; i++) {
        if (i) mg_buf_lit(b, ",");
        jstr(b, d->meta[i].name);
        mg_buf_lit(b, ":");
        jstr(b, d->meta[i].value);
    }
    mg_buf_lit(b, "}");
}

static void w_weights(mg_buf_t *b, const mg_reg_def_t *d)
{
    mg_buf_addf(b, "{\"Passing\":%u,\"Warning\":%u}", d->weight_passing, d->weight_warning);
}

/* "ID"...,"TaggedAddresses":{...} of the node: shared by a health entry's
 * Node object and the flat catalog entries. */
static void w_node_fields(mg_buf_t *b, const mg_registry_opts_t *o)
{
    mg_buf_lit(b, "\"ID\":");
    jstr(b, o->node_id);
    mg_buf_lit(b, ",\"Node\":");
    jstr(b, o->node_name);
    mg_buf_lit(b, ",\"Address\":");
    jstr(b, o->node_address);
    mg_buf_lit(b, ",\"Datacenter\":");
    jstr(b, o->datacenter);
    mg_buf_lit(b, ",\"TaggedAddresses\":{\"lan\":");
    jstr(b, o->node_address);
    mg_buf_lit(b, ",\"wan\":");
    jstr(b, o->node_address);
    mg_buf_lit(b, "}");
}

static void w_node(mg_buf_t *b, const mg_registry_opts_t *o)
{
    mg_buf_lit(b, "{");
    w_node_fields(b, o);
    mg_buf_lit(b, ",\"Meta\":{},\"CreateIndex\":1,\"ModifyIndex\":1}");
}

/* AgentService (agent/services) or the Service of a health entry. */
static void w_service(mg_buf_t *b, const mg_reg_instance_t *inst, const mg_registry_opts_t *o, bool agent)
{
    const mg_reg_def_t *d = &inst->def;
    mg_buf_lit(b, "{\"ID\":");
    jstr(b, d->id);
    mg_buf_lit(b, ",\"Service\":");
    jstr(b, d->name);
    mg_buf_lit(b, ",\"Tags\":");
    w_tags(b, d);
    mg_buf_lit(b, ",\"Address\":");
    jstr(b, d->address);
    mg_buf_lit(b, ",\"Meta\":");
    w_meta(b, d);
    mg_buf_addf(b, ",\"Port\":%u,\"Weights\":", (unsigned)d->port);
    w_weights(b, d);
    mg_buf_addf(b, ",\"EnableTagOverride\":%s", d->enable_tag_override ? "true" : "false");
    if (agent) {
        mg_buf_lit(b, ",\"Datacenter\":");
        jstr(b, o->datacenter);
    } else {
        mg_buf_addf(b, ",\"CreateIndex\":%llu,\"ModifyIndex\":%llu", (unsigned long long)inst->create_index,
                    (unsigned long long)inst->modify_index);
    }
    mg_buf_lit(b, "}");
}

static void w_check(mg_buf_t *b, const mg_reg_check_t *c, const mg_registry_opts_t *o)
{
    const mg_check_def_t *d = c->def;
    mg_buf_lit(b, "{\"Node\":");
    jstr(b, o->node_name);
    mg_buf_lit(b, ",\"CheckID\":");
    jstr(b, d->id);
    mg_buf_lit(b, ",\"Name\":");
    jstr(b, d->name);
    mg_buf_addf(b, ",\"Status\":\"%s\",\"Notes\":", mg_check_status_name(c->status));
    jstr(b, d->notes);
    mg_buf_lit(b, ",\"Output\":");
    jstr(b, c->output);
    mg_buf_lit(b, ",\"ServiceID\":");
    jstr(b, c->inst->def.id);
    mg_buf_lit(b, ",\"ServiceName\":");
    jstr(b, c->inst->def.name);
    mg_buf_lit(b, ",\"ServiceTags\":");
    w_tags(b, &c->inst->def);
    mg_buf_addf(b, ",\"Type\":\"%s\",\"Interval\":", mg_check_kind_name(d->kind));
    go_dur(b, d->interval_ms);
    mg_buf_lit(b, ",\"Timeout\":");
    go_dur(b, d->timeout_ms);
    mg_buf_addf(b, ",\"ExposedPort\":0,\"Definition\":{},\"CreateIndex\":%llu,\"ModifyIndex\":%llu}",
                (unsigned long long)c->create_index, (unsigned long long)c->modify_index);
}

static void w_serf(mg_buf_t *b, const mg_registry_opts_t *o)
{
    mg_buf_lit(b, "{\"Node\":");
    jstr(b, o->node_name);
    mg_buf_lit(b, ",\"CheckID\":\"serfHealth\",\"Name\":\"Serf Health Status\",\"Status\":\"passing\","
                  "\"Notes\":\"\",\"Output\":\"Agent alive and reachable\",\"ServiceID\":\"\",\"ServiceName\":\"\","
                  "\"ServiceTags\":[],\"Type\":\"\",\"Interval\":\"\",\"Timeout\":\"\",\"ExposedPort\":0,"
                  "\"Definition\":{},\"CreateIndex\":1,\"ModifyIndex\":1}");
}

/* All ?tag= values must be among the instance's tags. */
static bool tags_match(mg_slice_t q, const mg_reg_def_t *d)
{
    size_t pos = 0;
    mg_slice_t k, v;
    while (qnext(q, &pos, &k, &v)) {
        if (!mg_slice_eq(k, MG_SLICE_LIT("tag"))) continue;
        char *t = pct_decode(v, true);
        bool found = false;
        for (size_t i = 0; t && i < d->ntags && !found; i++)
            found = !strcmp(d->tags[i], t);
        free(t);
        if (!found) return false;
    }
    return true;
}

/* ---- blocking ---------------------------------------------------------------- */

/* Parses ?index and ?wait; DONE with a 400 on bad values. Sets *block when
 * the request must be parked. */
static int blocking_params(mg_consul_api_t *a, const mg_consul_req_t *req, unsigned flags, uint64_t current,
                           const char *watch, mg_consul_resp_t *resp, bool *block)
{
    *block = false;
    bool p;
    char *is = qget(req->query, "index", &p);
    if (!p) return 0;
    char *end = NULL;
    unsigned long long idx = is ? strtoull(is, &end, 10) : 0;
    bool bad = !is || !*is || *end || is[0] == '-';
    free(is);
    if (bad) {
        text(resp, 400, "Invalid index");
        return -1;
    }
    int64_t wait = a->o.default_wait_ms;
    char *ws = qget(req->query, "wait", &p);
    if (p) {
        int64_t w;
        if (!ws || mg_duration_parse(ws, &w)) {
            free(ws);
            text(resp, 400, "Invalid wait time");
            return -1;
        }
        if (w > 0) wait = w;
    }
    free(ws);
    if (wait > a->o.max_wait_ms) wait = a->o.max_wait_ms;
    if (idx == 0 || idx != current || (flags & MG_CONSUL_NOBLOCK)) return 0;
    *block = true;
    resp->watch_index = current;
    snprintf(resp->watch_service, sizeof resp->watch_service, "%s", watch ? watch : "");
    resp->wait_ms = wait + (wait >= 16 ? (int64_t)(rnd(a) % (uint64_t)(wait / 16 + 1)) : 0);
    a->stats.blocked++;
    return 0;
}

bool mg_consul_woken(const mg_consul_api_t *api, const mg_consul_resp_t *blocked)
{
    const char *w = blocked->watch_service[0] ? blocked->watch_service : NULL;
    return mg_registry_index(api->reg, w) != blocked->watch_index;
}

/* Common query checks: ?dc, ?filter. */
static bool query_ok(mg_consul_api_t *a, const mg_consul_req_t *req, mg_consul_resp_t *resp)
{
    bool p;
    char *dc = qget(req->query, "dc", &p);
    if (p && dc && *dc && strcmp(dc, mg_registry_opts(a->reg)->datacenter)) {
        free(dc);
        text(resp, 500, "No path to datacenter");
        return false;
    }
    free(dc);
    if (qhas(req->query, "filter")) {
        text(resp, 400, "filter: filter expressions are not supported by meshgate's registry");
        return false;
    }
    return true;
}

/* A persist hook's -EAGAIN: the shared registry backend (Redis) is down. */
#define BACKEND_DOWN \
    "service registry backend unavailable (Redis is not reachable): the change was not applied; retry later"

/* ---- handlers ------------------------------------------------------------------ */

static mg_consul_verdict_t h_register(mg_consul_api_t *a, const mg_consul_req_t *req, int64_t now,
                                      mg_consul_resp_t *resp)
{
    if (req->body.n > a->o.max_body)
        return text(resp, 413, "Request body too large (limit %zu bytes)", a->o.max_body);
    int rep = qbool(req->query, "replace-existing-checks");
    if (rep < 0) return text(resp, 400, "Invalid value for replace-existing-checks");
    mg_reg_def_t def;
    char err[512];
    int rc = mg_regjson_parse(req->body.p ? req->body.p : "", req->body.n, &def, err, sizeof err);
    if (rc == 0)
        rc = mg_registry_register(a->reg, &def, rep ? MG_REG_REPLACE_CHECKS : 0, now, err, sizeof err);
    if (rc == 0) {
        resp->status = 200;
        return MG_CONSUL_DONE;
    }
    if (rc == MG_EPARSE) {
        a->stats.bad_requests++;
        return text(resp, 400, "%s", err);
    }
    if (rc == MG_ELIMIT) return text(resp, 429, "%s", err);
    if (rc == -EAGAIN) return text(resp, 503, "%s", BACKEND_DOWN);
    return text(resp, 500, "%s", err[0] ? err : mg_strerror(rc));
}

static mg_consul_verdict_t h_deregister(mg_consul_api_t *a, mg_slice_t rest, int64_t now, mg_consul_resp_t *resp)
{
    char *id = pct_decode(rest, false);
    if (!id || !*id) {
        free(id);
        return text(resp, 400, "Missing service ID");
    }
    int rc = mg_registry_deregister(a->reg, id, now);
    mg_consul_verdict_t v;
    if (rc == -ENOENT)
        v = text(resp, 404, "Unknown service ID \"%.256s\". Ensure that the service ID is passed, not the service name.", id);
    else if (rc == -EAGAIN)
        v = text(resp, 503, "%s", BACKEND_DOWN);
    else if (rc)
        v = text(resp, 500, "could not persist the deregistration (%s)", mg_strerror(rc));
    else {
        resp->status = 200;
        v = MG_CONSUL_DONE;
    }
    free(id);
    return v;
}

static mg_consul_verdict_t h_check(mg_consul_api_t *a, const mg_consul_req_t *req, mg_slice_t rest, int64_t now,
                                   mg_consul_resp_t *resp)
{
    mg_slice_t idpart;
    int st = -1;
    bool update = false;
    if (prefix(rest, "pass/", &idpart)) st = MG_CHECK_PASSING;
    else if (prefix(rest, "warn/", &idpart)) st = MG_CHECK_WARNING;
    else if (prefix(rest, "fail/", &idpart)) st = MG_CHECK_CRITICAL;
    else if (prefix(rest, "update/", &idpart)) update = true;
    else return text(resp, 404, "404 page not found");
    char *id = pct_decode(idpart, false);
    if (!id || !*id) {
        free(id);
        return text(resp, 400, "Missing check ID");
    }
    char *output = NULL;
    mg_consul_verdict_t v = MG_CONSUL_DONE;
    if (update) {
        if (req->body.n > a->o.max_body) {
            v = text(resp, 413, "Request body too large (limit %zu bytes)", a->o.max_body);
            goto out;
        }
        json_error_t je;
        json_t *root = json_loadb(req->body.p ? req->body.p : "", req->body.n, JSON_DECODE_ANY, &je);
        if (!root || !json_is_object(root)) {
            if (root) json_decref(root);
            a->stats.bad_requests++;
            v = root ? text(resp, 400, "Request decode failed: body: expected a JSON object")
                     : text(resp, 400, "Request decode failed: line %d column %d: %s", je.line, je.column, je.text);
            goto out;
        }
        json_t *js = NULL, *jo = NULL, *val;
        const char *k;
        json_object_foreach(root, k, val) {
            if (!strcasecmp(k, "Status")) js = val;
            else if (!strcasecmp(k, "Output")) jo = val;
        }
        if (jo && !json_is_null(jo) && !json_is_string(jo)) {
            json_decref(root);
            a->stats.bad_requests++;
            v = text(resp, 400, "Request decode failed: Output: expected a string");
            goto out;
        }
        if (js && !json_is_null(js) && !json_is_string(js)) {
            json_decref(root);
            a->stats.bad_requests++;
            v = text(resp, 400, "Request decode failed: Status: expected a string");
            goto out;
        }
        const char *ss = js && json_is_string(js) ? json_string_value(js) : "";
        st = mg_check_status_parse(ss);
        if (st < 0) {
            a->stats.bad_requests++;
            v = text(resp, 400, "Invalid check status: '%.64s'", ss);
            json_decref(root);
            goto out;
        }
        output = strdup(jo && json_is_string(jo) ? json_string_value(jo) : "");
        json_decref(root);
    } else {
        bool p;
        output = qget(req->query, "note", &p);
        if (p && !output) {
            v = text(resp, 400, "Invalid value for note");
            goto out;
        }
    }
    int rc = mg_registry_check_ttl(a->reg, id, (mg_check_status_t)st, output, now);
    if (rc == -ENOENT)
        v = text(resp, 404, "Unknown check ID \"%.256s\". Ensure that the check ID is passed, not the check name.", id);
    else if (rc == MG_EPARSE)
        v = text(resp, 400, "CheckID \"%.256s\" does not have associated TTL", id);
    else if (rc == -EAGAIN)
        v = text(resp, 503, "%s", BACKEND_DOWN);
    else if (rc)
        v = text(resp, 500, "%s", mg_strerror(rc));
    else
        resp->status = 200;
out:
    free(output);
    free(id);
    return v;
}

/* GET /v1/agent/self: the agent's identity, the subset of Consul's shape
 * clients read at start-up (Spring Cloud Consul, python-consul, Go api). */
static mg_consul_verdict_t h_agent_self(mg_consul_api_t *a, mg_consul_resp_t *resp)
{
    const mg_registry_opts_t *o = mg_registry_opts(a->reg);
    resp->status = 200;
    resp->content_type = CT_JSON;
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "{\"Config\":{\"Datacenter\":");
    mg_buf_json_str(b, mg_slice_cstr(o->datacenter));
    mg_buf_lit(b, ",\"NodeName\":");
    mg_buf_json_str(b, mg_slice_cstr(o->node_name));
    mg_buf_lit(b, ",\"NodeID\":");
    mg_buf_json_str(b, mg_slice_cstr(o->node_id));
    mg_buf_lit(b, ",\"Server\":false,\"Version\":\"meshgate-" MG_VERSION "\"},\"Member\":{\"Name\":");
    mg_buf_json_str(b, mg_slice_cstr(o->node_name));
    mg_buf_lit(b, ",\"Addr\":");
    mg_buf_json_str(b, mg_slice_cstr(o->node_address));
    mg_buf_lit(b, ",\"Port\":8301,\"Tags\":{\"dc\":");
    mg_buf_json_str(b, mg_slice_cstr(o->datacenter));
    mg_buf_lit(b, ",\"role\":\"node\"},\"Status\":1},\"Meta\":{}}");
    return MG_CONSUL_DONE;
}

static mg_consul_verdict_t h_agent_services(mg_consul_api_t *a, mg_consul_resp_t *resp)
{
    const mg_registry_opts_t *o = mg_registry_opts(a->reg);
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "{");
    size_t n = mg_registry_instance_count(a->reg);
    for (size_t i = 0; i < n; i++) {
        const mg_reg_instance_t *inst = mg_registry_instance_at(a->reg, i);
        if (i) mg_buf_lit(b, ",");
        jstr(b, inst->def.id);
        mg_buf_lit(b, ":");
        w_service(b, inst, o, true);
    }
    mg_buf_lit(b, "}");
    resp->status = 200;
    resp->content_type = CT_JSON;
    return MG_CONSUL_DONE;
}

static mg_consul_verdict_t h_agent_service(mg_consul_api_t *a, mg_slice_t rest, mg_consul_resp_t *resp)
{
    char *id = pct_decode(rest, false);
    const mg_reg_instance_t *inst = id ? mg_registry_instance_get(a->reg, id) : NULL;
    if (!inst) {
        mg_consul_verdict_t v = text(resp, 404, "unknown service ID: %.256s", id ? id : "");
        free(id);
        return v;
    }
    free(id);
    w_service(&resp->body, inst, mg_registry_opts(a->reg), true);
    resp->status = 200;
    resp->content_type = CT_JSON;
    return MG_CONSUL_DONE;
}

static mg_consul_verdict_t h_agent_checks(mg_consul_api_t *a, mg_consul_resp_t *resp)
{
    const mg_registry_opts_t *o = mg_registry_opts(a->reg);
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "{");
    size_t n = mg_registry_check_count(a->reg);
    for (size_t i = 0; i < n; i++) {
        const mg_reg_check_t *c = mg_registry_check_at(a->reg, i);
        if (i) mg_buf_lit(b, ",");
        jstr(b, c->def->id);
        mg_buf_lit(b, ":");
        w_check(b, c, o);
    }
    mg_buf_lit(b, "}");
    resp->status = 200;
    resp->content_type = CT_JSON;
    return MG_CONSUL_DONE;
}

static bool all_passing(const mg_reg_instance_t *inst)
{
    return mg_reg_instance_status(inst) == MG_CHECK_PASSING;
}

/* The common start of a per-service read: a service name is required,
 * and a blocking query whose index has not moved parks (or is answered).
 * Returns true when *verdict is the answer (*name is then freed); else
 * *idx is the service's current index. */
static bool service_query_begin(mg_consul_api_t *a, const mg_consul_req_t *req, unsigned flags, char **name,
                                uint64_t *idx, mg_consul_resp_t *resp, mg_consul_verdict_t *verdict)
{
    if (!*name || !**name) {
        *verdict = text(resp, 400, "Missing service name");
    } else {
        bool block;
        *idx = mg_registry_index(a->reg, *name);
        if (blocking_params(a, req, flags, *idx, *name, resp, &block))
            *verdict = MG_CONSUL_DONE;
        else if (block)
            *verdict = MG_CONSUL_BLOCK;
        else
            return false;
    }
    free(*name);
    *name = NULL;
    return true;
}

static mg_consul_verdict_t h_health_service(mg_consul_api_t *a, const mg_consul_req_t *req, mg_slice_t rest,
                                            unsigned flags, mg_consul_resp_t *resp)
{
    char *name = pct_decode(rest, false);
    int passing = qbool(req->query, "passing");
    if (passing < 0 && name && *name) {
        free(name);
        return text(resp, 400, "Invalid value for ?passing");
    }
    mg_consul_verdict_t early;
    uint64_t idx;
    if (service_query_begin(a, req, flags, &name, &idx, resp, &early))
        return early;
    const mg_registry_opts_t *o = mg_registry_opts(a->reg);
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "[");
    mg_reg_service_view_t v;
    bool first = true;
    if (mg_registry_service_get(a->reg, name, &v)) {
        for (size_t i = 0; i < v.n; i++) {
            const mg_reg_instance_t *inst = v.instances[i];
            if (passing && !all_passing(inst)) continue;
            if (!tags_match(req->query, &inst->def)) continue;
            if (!first) mg_buf_lit(b, ",");
            first = false;
            mg_buf_lit(b, "{\"Node\":");
            w_node(b, o);
            mg_buf_lit(b, ",\"Service\":");
            w_service(b, inst, o, false);
            mg_buf_lit(b, ",\"Checks\":[");
            w_serf(b, o);
            for (size_t j = 0; j < inst->def.nchecks; j++) {
                mg_buf_lit(b, ",");
                w_check(b, &inst->checks[j], o);
            }
            mg_buf_lit(b, "]}");
        }
    }
    mg_buf_lit(b, "]");
    free(name);
    resp->status = 200;
    resp->content_type = CT_JSON;
    set_index_headers(resp, idx);
    return MG_CONSUL_DONE;
}

static mg_consul_verdict_t h_catalog_services(mg_consul_api_t *a, const mg_consul_req_t *req, unsigned flags,
                                              mg_consul_resp_t *resp)
{
    uint64_t idx = mg_registry_index(a->reg, NULL);
    bool block;
    if (blocking_params(a, req, flags, idx, NULL, resp, &block)) return MG_CONSUL_DONE;
    if (block) return MG_CONSUL_BLOCK;
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "{");
    size_t cur = 0;
    mg_reg_service_view_t v;
    bool first = true;
    while (mg_registry_service_next(a->reg, &cur, &v)) {
        if (!first) mg_buf_lit(b, ",");
        first = false;
        jstr(b, v.name);
        mg_buf_lit(b, ":[");
        bool tfirst = true;
        /* distinct tags in first-seen order */
        for (size_t i = 0; i < v.n; i++) {
            const mg_reg_def_t *d = &v.instances[i]->def;
            for (size_t t = 0; t < d->ntags; t++) {
                bool seen = false;
                for (size_t j = 0; j <= i && !seen; j++) {
                    const mg_reg_def_t *e = &v.instances[j]->def;
                    size_t lim = j == i ? t : e->ntags;
                    for (size_t u = 0; u < lim && !seen; u++)
                        seen = !strcmp(e->tags[u], d->tags[t]);
                }
                if (seen) continue;
                if (!tfirst) mg_buf_lit(b, ",");
                tfirst = false;
                jstr(b, d->tags[t]);
            }
        }
        mg_buf_lit(b, "]");
    }
    mg_buf_lit(b, "}");
    resp->status = 200;
    resp->content_type = CT_JSON;
    set_index_headers(resp, idx);
    return MG_CONSUL_DONE;
}

static mg_consul_verdict_t h_catalog_service(mg_consul_api_t *a, const mg_consul_req_t *req, mg_slice_t rest,
                                             unsigned flags, mg_consul_resp_t *resp)
{
    char *name = pct_decode(rest, false);
    mg_consul_verdict_t early;
    uint64_t idx;
    if (service_query_begin(a, req, flags, &name, &idx, resp, &early))
        return early;
    const mg_registry_opts_t *o = mg_registry_opts(a->reg);
    mg_buf_t *b = &resp->body;
    mg_buf_lit(b, "[");
    mg_reg_service_view_t v;
    bool first = true;
    if (mg_registry_service_get(a->reg, name, &v)) {
        for (size_t i = 0; i < v.n; i++) {
            const mg_reg_instance_t *inst = v.instances[i];
            const mg_reg_def_t *d = &inst->def;
            if (!tags_match(req->query, d)) continue;
            if (!first) mg_buf_lit(b, ",");
            first = false;
            mg_buf_lit(b, "{");
            w_node_fields(b, o);
            mg_buf_lit(b, ",\"NodeMeta\":{},\"ServiceKind\":\"\",\"ServiceID\":");
            jstr(b, d->id);
            mg_buf_lit(b, ",\"ServiceName\":");
            jstr(b, d->name);
            mg_buf_lit(b, ",\"ServiceTags\":");
            w_tags(b, d);
            mg_buf_lit(b, ",\"ServiceAddress\":");
            jstr(b, d->address);
            mg_buf_lit(b, ",\"ServiceWeights\":");
            w_weights(b, d);
            mg_buf_lit(b, ",\"ServiceMeta\":");
            w_meta(b, d);
            mg_buf_addf(b, ",\"ServicePort\":%u,\"ServiceEnableTagOverride\":%s,\"CreateIndex\":%llu,\"ModifyIndex\":%llu}",
                        (unsigned)d->port, d->enable_tag_override ? "true" : "false",
                        (unsigned long long)inst->create_index, (unsigned long long)inst->modify_index);
        }
    }
    mg_buf_lit(b, "]");
    free(name);
    resp->status = 200;
    resp->content_type = CT_JSON;
    set_index_headers(resp, idx);
    return MG_CONSUL_DONE;
}

mg_consul_verdict_t mg_consul_handle(mg_consul_api_t *a, const mg_consul_req_t *req, unsigned flags,
                                     int64_t now_ms, mg_consul_resp_t *resp)
{
    mg_buf_t keep = resp->body;
    keep.len = 0;
    if (keep.p) keep.p[0] = 0;
    mg_consul_resp_init(resp);
    resp->body = keep;
    a->stats.requests++;

    bool get = mg_slice_eq(req->method, MG_SLICE_LIT("GET")) || mg_slice_eq(req->method, MG_SLICE_LIT("HEAD"));
    bool put = mg_slice_eq(req->method, MG_SLICE_LIT("PUT"));
    mg_slice_t path = req->path, rest;
    enum { R_NONE, R_WRITE, R_READ } kind = R_NONE;

    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/service/register")) ||
        prefix(path, "/v1/agent/service/deregister/", &rest) || prefix(path, "/v1/agent/check/", &rest))
        kind = R_WRITE;
    else if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/services")) || mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/checks")) ||
             prefix(path, "/v1/agent/service/", &rest) || prefix(path, "/v1/health/service/", &rest) ||
             mg_slice_eq(path, MG_SLICE_LIT("/v1/catalog/services")) || prefix(path, "/v1/catalog/service/", &rest) ||
             mg_slice_eq(path, MG_SLICE_LIT("/v1/status/leader")) || mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/self")))
        kind = R_READ;
    if (kind == R_NONE) return text(resp, 404, "404 page not found");
    /* Consul before 1.0 took GET for the bodiless agent writes, and clients
     * of that era still send it (Debian's python3-consul 0.7: ttl_pass,
     * service.deregister); accepted, with the same token rule. */
    bool legacy_get = get && kind == R_WRITE && !mg_slice_eq(req->method, MG_SLICE_LIT("HEAD")) &&
                      (prefix(path, "/v1/agent/service/deregister/", &rest) ||
                       prefix(path, "/v1/agent/check/pass/", &rest) || prefix(path, "/v1/agent/check/warn/", &rest) ||
                       prefix(path, "/v1/agent/check/fail/", &rest));
    if ((kind == R_WRITE && !put && !legacy_get) || (kind == R_READ && !get)) {
        a->stats.bad_requests++;
        text(resp, 405, "method %.*s not allowed", (int)(req->method.n > 16 ? 16 : req->method.n), req->method.p);
        return MG_CONSUL_DONE;
    }
    if (kind == R_WRITE) {
        a->stats.writes++;
        if (!token_ok(a, req)) {
            a->stats.denied++;
            return text(resp, 403, "Permission denied: a valid registry token is required (X-Consul-Token or Authorization: Bearer)");
        }
        if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/service/register"))) return h_register(a, req, now_ms, resp);
        if (prefix(path, "/v1/agent/service/deregister/", &rest)) return h_deregister(a, rest, now_ms, resp);
        prefix(path, "/v1/agent/check/", &rest);
        return h_check(a, req, rest, now_ms, resp);
    }
    if (!query_ok(a, req, resp)) return MG_CONSUL_DONE;
    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/services"))) return h_agent_services(a, resp);
    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/checks"))) return h_agent_checks(a, resp);
    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/catalog/services"))) return h_catalog_services(a, req, flags, resp);
    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/status/leader"))) {
        resp->status = 200;
        resp->content_type = CT_JSON;
        mg_buf_addf(&resp->body, "\"%s:8300\"", mg_registry_opts(a->reg)->node_address);
        return MG_CONSUL_DONE;
    }
    if (mg_slice_eq(path, MG_SLICE_LIT("/v1/agent/self"))) return h_agent_self(a, resp);
    if (prefix(path, "/v1/agent/service/", &rest)) return h_agent_service(a, rest, resp);
    if (prefix(path, "/v1/health/service/", &rest)) return h_health_service(a, req, rest, flags, resp);
    prefix(path, "/v1/catalog/service/", &rest);
    return h_catalog_service(a, req, rest, flags, resp);
}
