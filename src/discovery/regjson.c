/* regjson: see regjson.h. */
#include "discovery/regjson.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

#define PFX "Request decode failed: "

typedef struct {
    char *err;
    size_t errlen;
    int failed;
} pctx_t;

static int fail(pctx_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(pctx_t *p, const char *fmt, ...)
{
    if (p->failed) return MG_EPARSE;
    p->failed = 1;
    if (p->err && p->errlen) {
        int n = snprintf(p->err, p->errlen, "%s", PFX);
        if (n > 0 && (size_t)n < p->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return MG_EPARSE;
}

/* Key equality the way Consul decodes: case-insensitive, '_' ignored. */
static bool key_eq(const char *key, const char *name)
{
    for (;;) {
        while (*key == '_') key++;
        while (*name == '_') name++;
        if (!*key || !*name) return !*key && !*name;
        if (tolower((unsigned char)*key) != tolower((unsigned char)*name)) return false;
        key++;
        name++;
    }
}

static json_t *get(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (v) return v;
    const char *k;
    json_object_foreach(obj, k, v)
        if (key_eq(k, name)) return v;
    return NULL;
}

static bool present(json_t *v) { return v && !json_is_null(v); }

static int get_str(pctx_t *p, json_t *obj, const char *name, const char *path, char **out)
{
    json_t *v = get(obj, name);
    if (!present(v)) return 0;
    if (!json_is_string(v)) return fail(p, "%s%s: expected a string", path, name);
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) return fail(p, "%s%s: must not contain NUL", path, name);
    if (!(*out = strdup(s))) return -ENOMEM;
    return 0;
}

static int get_bool(pctx_t *p, json_t *obj, const char *name, const char *path, bool *out)
{
    json_t *v = get(obj, name);
    if (!present(v)) return 0;
    if (!json_is_boolean(v)) return fail(p, "%s%s: expected true or false", path, name);
    *out = json_is_true(v);
    return 0;
}

int mg_duration_parse(const char *s, int64_t *ms)
{
    if (!s || !*s) return -EINVAL;
    if (*s == '+') s++;
    if (*s == '-') return -EINVAL;
    if (!strcmp(s, "0")) {
        *ms = 0;
        return 0;
    }
    long double total_ns = 0;
    while (*s) {
        if (!isdigit((unsigned char)*s) && *s != '.') return -EINVAL;
        char *end;
        long double v = strtold(s, &end);
        if (end == s) return -EINVAL;
        s = end;
        long double unit;
        if (!strncmp(s, "ns", 2)) unit = 1, s += 2;
        else if (!strncmp(s, "us", 2)) unit = 1e3, s += 2;
        else if (!strncmp(s, "\xc2\xb5s", 3)) unit = 1e3, s += 3; /* µs */
        else if (!strncmp(s, "ms", 2)) unit = 1e6, s += 2;
        else if (*s == 's') unit = 1e9, s += 1;
        else if (*s == 'm') unit = 60e9, s += 1;
        else if (*s == 'h') unit = 3600e9, s += 1;
        else return -EINVAL; /* Go requires a unit unless the whole string is "0" */
        total_ns += v * unit;
        if (total_ns > 9.2e18L) return -EINVAL;
    }
    int64_t m = (int64_t)(total_ns / 1e6L);
    if (m == 0 && total_ns > 0) m = 1;
    *ms = m;
    return 0;
}

static int get_dur(pctx_t *p, json_t *obj, const char *name, const char *path, int64_t *out)
{
    json_t *v = get(obj, name);
    if (!present(v)) return 0;
    if (json_is_number(v)) { /* Go: nanoseconds */
        double ns = json_number_value(v);
        if (ns < 0 || ns > 9.2e18) return fail(p, "%s%s: must be a non-negative duration", path, name);
        int64_t m = (int64_t)(ns / 1e6);
        if (m == 0 && ns > 0) m = 1;
        *out = m;
        return 0;
    }
    if (!json_is_string(v) || mg_duration_parse(json_string_value(v), out))
        return fail(p, "%s%s: expected a duration like \"10s\" or \"1m30s\"", path, name);
    return 0;
}

static int parse_check(pctx_t *p, json_t *o, const char *path, mg_check_def_t *c, bool *is_empty)
{
    int rc;
    char pp[48];
    snprintf(pp, sizeof pp, "%s.", path);
    c->initial_status = -1;
    if (!json_is_object(o)) return fail(p, "%s: expected an object", path);
    static const char *const unsupported[] = { "Args", "ScriptArgs", "Script", "GRPC", "DockerContainerID",
                                               "AliasService", "AliasNode", "H2PING", "UDP", "OSService", NULL };
    for (int i = 0; unsupported[i]; i++) {
        json_t *v = get(o, unsupported[i]);
        if (present(v) && !(json_is_string(v) && !json_string_length(v)) && !(json_is_array(v) && !json_array_size(v)))
            return fail(p, "%s%s: check type not supported by meshgate (use HTTP, TCP or TTL)", pp, unsupported[i]);
    }
    if ((rc = get_str(p, o, "CheckID", pp, &c->id))) return rc;
    if (!c->id && (rc = get_str(p, o, "ID", pp, &c->id))) return rc;
    if ((rc = get_str(p, o, "Name", pp, &c->name))) return rc;
    if ((rc = get_str(p, o, "Notes", pp, &c->notes))) return rc;
    if ((rc = get_str(p, o, "HTTP", pp, &c->http))) return rc;
    if ((rc = get_str(p, o, "Method", pp, &c->method))) return rc;
    if ((rc = get_str(p, o, "Body", pp, &c->body))) return rc;
    if ((rc = get_str(p, o, "TCP", pp, &c->tcp))) return rc;
    if ((rc = get_bool(p, o, "TLSSkipVerify", pp, &c->tls_skip_verify))) return rc;
    if ((rc = get_dur(p, o, "Interval", pp, &c->interval_ms))) return rc;
    if ((rc = get_dur(p, o, "Timeout", pp, &c->timeout_ms))) return rc;
    if ((rc = get_dur(p, o, "TTL", pp, &c->ttl_ms))) return rc;
    if ((rc = get_dur(p, o, "DeregisterCriticalServiceAfter", pp, &c->deregister_after_ms))) return rc;
    char *status = NULL;
    if ((rc = get_str(p, o, "Status", pp, &status))) return rc;
    if (status && *status) {
        c->initial_status = mg_check_status_parse(status);
        free(status);
        if (c->initial_status < 0)
            return fail(p, "%sStatus: must be 'passing', 'warning' or 'critical'", pp);
    } else {
        free(status);
    }
    json_t *h = get(o, "Header");
    if (present(h)) {
        if (!json_is_object(h)) return fail(p, "%sHeader: expected an object of arrays of strings", pp);
        size_t n = 0;
        const char *k;
        json_t *v;
        json_object_foreach(h, k, v) {
            if (!json_is_array(v)) return fail(p, "%sHeader[\"%s\"]: expected an array of strings", pp, k);
            n += json_array_size(v);
        }
        if (n) {
            if (!(c->headers = calloc(n, sizeof *c->headers))) return -ENOMEM;
            json_object_foreach(h, k, v) {
                size_t i;
                json_t *e;
                json_array_foreach(v, i, e) {
                    if (!json_is_string(e)) return fail(p, "%sHeader[\"%s\"][%zu]: expected a string", pp, k, i);
                    mg_kv_t *kv = &c->headers[c->nheaders++];
                    if (!(kv->name = strdup(k)) || !(kv->value = strdup(json_string_value(e)))) return -ENOMEM;
                }
            }
        }
    }
    bool http = c->http && *c->http, tcp = c->tcp && *c->tcp, ttl = c->ttl_ms > 0;
    int kinds = http + tcp + ttl;
    *is_empty = kinds == 0 && !c->id && !c->name && !c->notes && c->interval_ms == 0 &&
                c->deregister_after_ms == 0 && !present(get(o, "TTL"));
    if (*is_empty) return 0;
    if (kinds == 0) {
        if (present(get(o, "TTL"))) return fail(p, "%sTTL: must be > 0 for TTL checks", pp);
        return fail(p, "%s: one of HTTP, TCP or TTL is required", path);
    }
    if (kinds > 1) return fail(p, "%s: exactly one of HTTP, TCP or TTL", path);
    c->kind = http ? MG_CHECK_HTTP : tcp ? MG_CHECK_TCP : MG_CHECK_TTL;
    if (c->kind != MG_CHECK_HTTP && (c->method || c->body || c->nheaders))
        return fail(p, "%s: Method, Body and Header apply to HTTP checks only", path);
    if (c->kind == MG_CHECK_TTL && c->interval_ms)
        return fail(p, "%sInterval: not used by TTL checks", pp);
    if (c->kind != MG_CHECK_TTL && c->interval_ms <= 0)
        return fail(p, "%sInterval: must be > 0 for HTTP or TCP checks", pp);
    return 0;
}

static int add_check(mg_reg_def_t *d, mg_check_def_t *c)
{
    mg_check_def_t *n = realloc(d->checks, (d->nchecks + 1) * sizeof *n);
    if (!n) return -ENOMEM;
    d->checks = n;
    d->checks[d->nchecks++] = *c;
    memset(c, 0, sizeof *c);
    return 0;
}

static int parse_def(pctx_t *p, json_t *o, mg_reg_def_t *d)
{
    int rc;
    if (!json_is_object(o)) return fail(p, "body: expected a JSON object");
    json_t *kind = get(o, "Kind");
    if (present(kind) && !(json_is_string(kind) && !json_string_length(kind)))
        return fail(p, "Kind: only typical services can be registered with meshgate");
    if ((rc = get_str(p, o, "ID", "", &d->id))) return rc;
    if ((rc = get_str(p, o, "Name", "", &d->name))) return rc;
    if ((rc = get_str(p, o, "Address", "", &d->address))) return rc;
    json_t *port = get(o, "Port");
    if (present(port)) {
        if (!json_is_number(port)) return fail(p, "Port: expected a number");
        double v = json_number_value(port);
        if (!json_is_integer(port) || v < 0 || v > 65535 || floor(v) != v)
            return fail(p, "Port: must be an integer from 0 to 65535");
        d->port = (uint16_t)v;
    }
    json_t *tags = get(o, "Tags");
    if (present(tags)) {
        if (!json_is_array(tags)) return fail(p, "Tags: expected an array of strings");
        size_t n = json_array_size(tags);
        if (n && !(d->tags = calloc(n, sizeof *d->tags))) return -ENOMEM;
        size_t i;
        json_t *e;
        json_array_foreach(tags, i, e) {
            if (!json_is_string(e)) return fail(p, "Tags[%zu]: expected a string", i);
            if (!(d->tags[d->ntags++] = strdup(json_string_value(e)))) return -ENOMEM;
        }
    }
    json_t *meta = get(o, "Meta");
    if (present(meta)) {
        if (!json_is_object(meta)) return fail(p, "Meta: expected an object of strings");
        size_t n = json_object_size(meta);
        if (n && !(d->meta = calloc(n, sizeof *d->meta))) return -ENOMEM;
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v) {
            if (!json_is_string(v)) return fail(p, "Meta[\"%s\"]: expected a string", k);
            mg_kv_t *kv = &d->meta[d->nmeta++];
            if (!(kv->name = strdup(k)) || !(kv->value = strdup(json_string_value(v)))) return -ENOMEM;
        }
    }
    json_t *w = get(o, "Weights");
    if (present(w)) {
        if (!json_is_object(w)) return fail(p, "Weights: expected an object");
        json_t *wp = get(w, "Passing"), *ww = get(w, "Warning");
        if (present(wp) && (!json_is_integer(wp) || json_integer_value(wp) < 0 || json_integer_value(wp) > 65535))
            return fail(p, "Weights.Passing: expected an integer from 1 to 65535");
        if (present(ww) && (!json_is_integer(ww) || json_integer_value(ww) < 0 || json_integer_value(ww) > 65535))
            return fail(p, "Weights.Warning: expected an integer from 0 to 65535");
        d->has_weights = true;
        d->weight_passing = present(wp) ? (uint32_t)json_integer_value(wp) : 1;
        d->weight_warning = present(ww) ? (uint32_t)json_integer_value(ww) : 1;
    }
    if ((rc = get_bool(p, o, "EnableTagOverride", "", &d->enable_tag_override))) return rc;

    json_t *check = get(o, "Check"), *checks = get(o, "Checks");
    if (present(check)) {
        mg_check_def_t c = { 0 };
        bool is_empty = false;
        rc = parse_check(p, check, "Check", &c, &is_empty);
        if (!rc && !is_empty) rc = add_check(d, &c);
        mg_check_def_free(&c);
        if (rc) return rc;
    }
    if (present(checks)) {
        if (!json_is_array(checks)) return fail(p, "Checks: expected an array of objects");
        size_t i;
        json_t *e;
        json_array_foreach(checks, i, e) {
            char path[32];
            snprintf(path, sizeof path, "Checks[%zu]", i);
            mg_check_def_t c = { 0 };
            bool is_empty = false;
            rc = parse_check(p, e, path, &c, &is_empty);
            if (!rc && !is_empty) rc = add_check(d, &c);
            mg_check_def_free(&c);
            if (rc) return rc;
        }
    }
    d->single_check = present(check) && !present(checks) && d->nchecks == 1;
    return 0;
}

int mg_regjson_parse(const char *body, size_t len, mg_reg_def_t *out, char *err, size_t errlen)
{
    pctx_t p = { err, errlen, 0 };
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = 0;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_DECODE_ANY, &je);
    if (!root) {
        fail(&p, "line %d column %d: %s", je.line, je.column, je.text);
        return MG_EPARSE;
    }
    int rc = parse_def(&p, root, out);
    json_decref(root);
    if (rc) {
        mg_reg_def_free(out);
        if (rc == -ENOMEM && err && errlen) snprintf(err, errlen, "out of memory");
    }
    return rc;
}

/* ---- writer --------------------------------------------------------------- */

static void wstr(mg_buf_t *b, const char *key, const char *v)
{
    mg_buf_addf(b, ",\"%s\":", key);
    mg_buf_json_str(b, mg_slice_cstr(v ? v : ""));
}

static void wdur(mg_buf_t *b, const char *key, int64_t ms)
{
    if (ms > 0) mg_buf_addf(b, ",\"%s\":\"%lldms\"", key, (long long)ms);
}

void mg_regjson_write(mg_buf_t *b, const mg_reg_def_t *d)
{
    mg_buf_lit(b, "{\"ID\":");
    mg_buf_json_str(b, mg_slice_cstr(d->id ? d->id : ""));
    wstr(b, "Name", d->name);
    if (d->address) wstr(b, "Address", d->address);
    mg_buf_addf(b, ",\"Port\":%u,\"Tags\":[", (unsigned)d->port);
    for (size_t i = 0; i < d->ntags; i++) {
        if (i) mg_buf_lit(b, ",");
        mg_buf_json_str(b, mg_slice_cstr(d->tags[i]));
    }
    mg_buf_lit(b, "],\"Meta\":{");
    for (size_t i = 0; i < d->nmeta; i++) {
        if (i) mg_buf_lit(b, ",");
        mg_buf_json_str(b, mg_slice_cstr(d->meta[i].name));
        mg_buf_lit(b, ":");
        mg_buf_json_str(b, mg_slice_cstr(d->meta[i].value));
    }
    mg_buf_lit(b, "}");
    if (d->has_weights)
        mg_buf_addf(b, ",\"Weights\":{\"Passing\":%u,\"Warning\":%u}", d->weight_passing, d->weight_warning);
    mg_buf_addf(b, ",\"EnableTagOverride\":%s,\"Checks\":[", d->enable_tag_override ? "true" : "false");
    for (size_t i = 0; i < d->nchecks; i++) {
        const mg_check_def_t *c = &d->checks[i];
        if (i) mg_buf_lit(b, ",");
        mg_buf_lit(b, "{\"CheckID\":");
        mg_buf_json_str(b, mg_slice_cstr(c->id ? c->id : ""));
        if (c->name) wstr(b, "Name", c->name);
        if (c->notes) wstr(b, "Notes", c->notes);
        switch (c->kind) {
        case MG_CHECK_HTTP:
            wstr(b, "HTTP", c->http);
            if (c->method) wstr(b, "Method", c->method);
            if (c->body) wstr(b, "Body", c->body);
            if (c->tls_skip_verify) mg_buf_lit(b, ",\"TLSSkipVerify\":true");
            if (c->nheaders) {
                mg_buf_lit(b, ",\"Header\":{");
                bool first = true;
                for (size_t h = 0; h < c->nheaders; h++) {
                    bool seen = false;
                    for (size_t j = 0; j < h && !seen; j++)
                        seen = !strcmp(c->headers[j].name, c->headers[h].name);
                    if (seen) continue;
                    if (!first) mg_buf_lit(b, ",");
                    first = false;
                    mg_buf_json_str(b, mg_slice_cstr(c->headers[h].name));
                    mg_buf_lit(b, ":[");
                    bool vfirst = true;
                    for (size_t j = h; j < c->nheaders; j++) {
                        if (strcmp(c->headers[j].name, c->headers[h].name)) continue;
                        if (!vfirst) mg_buf_lit(b, ",");
                        vfirst = false;
                        mg_buf_json_str(b, mg_slice_cstr(c->headers[j].value));
                    }
                    mg_buf_lit(b, "]");
                }
                mg_buf_lit(b, "}");
            }
            break;
        case MG_CHECK_TCP:
            wstr(b, "TCP", c->tcp);
            break;
        case MG_CHECK_TTL:
            break;
        }
        wdur(b, "Interval", c->interval_ms);
        wdur(b, "Timeout", c->timeout_ms);
        wdur(b, "TTL", c->ttl_ms);
        wdur(b, "DeregisterCriticalServiceAfter", c->deregister_after_ms);
        if (c->initial_status >= 0) wstr(b, "Status", mg_check_status_name((mg_check_status_t)c->initial_status));
        mg_buf_lit(b, "}");
    }
    mg_buf_lit(b, "]}");
}
