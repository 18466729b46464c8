/* redirect: status-related filters (Spring's RedirectTo, SetStatus,
 * RewriteLocationResponseHeader) and the HttpStatus name table. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/filters_int.h"
#include "route/rx.h"

static const struct {
    int code;
    const char *name;
} statuses[] = {
    { 100, "CONTINUE" }, { 101, "SWITCHING_PROTOCOLS" }, { 102, "PROCESSING" }, { 103, "EARLY_HINTS" },
    { 200, "OK" }, { 201, "CREATED" }, { 202, "ACCEPTED" }, { 203, "NON_AUTHORITATIVE_INFORMATION" },
    { 204, "NO_CONTENT" }, { 205, "RESET_CONTENT" }, { 206, "PARTIAL_CONTENT" }, { 207, "MULTI_STATUS" },
    { 208, "ALREADY_REPORTED" }, { 226, "IM_USED" }, { 300, "MULTIPLE_CHOICES" }, { 301, "MOVED_PERMANENTLY" },
    { 302, "FOUND" }, { 303, "SEE_OTHER" }, { 304, "NOT_MODIFIED" }, { 307, "TEMPORARY_REDIRECT" },
    { 308, "PERMANENT_REDIRECT" }, { 400, "BAD_REQUEST" }, { 401, "UNAUTHORIZED" }, { 402, "PAYMENT_REQUIRED" },
    { 403, "FORBIDDEN" }, { 404, "NOT_FOUND" }, { 405, "METHOD_NOT_ALLOWED" }, { 406, "NOT_ACCEPTABLE" },
    { 407, "PROXY_AUTHENTICATION_REQUIRED" }, { 408, "REQUEST_TIMEOUT" }, { 409, "CONFLICT" }, { 410, "GONE" },
    { 411, "LENGTH_REQUIRED" }, { 412, "PRECONDITION_FAILED" }, { 413, "PAYLOAD_TOO_LARGE" },
    { 413, "CONTENT_TOO_LARGE" }, { 414, "URI_TOO_LONG" }, { 415, "UNSUPPORTED_MEDIA_TYPE" },
    { 416, "REQUESTED_RANGE_NOT_SATISFIABLE" }, { 417, "EXPECTATION_FAILED" }, { 418, "I_AM_A_TEAPOT" },
    { 421, "MISDIRECTED_REQUEST" }, { 422, "UNPROCESSABLE_ENTITY" }, { 422, "UNPROCESSABLE_CONTENT" },
    { 423, "LOCKED" }, { 424, "FAILED_DEPENDENCY" }, { 425, "TOO_EARLY" }, { 426, "UPGRADE_REQUIRED" },
    { 428, "PRECONDITION_REQUIRED" }, { 429, "TOO_MANY_REQUESTS" }, { 431, "REQUEST_HEADER_FIELDS_TOO_LARGE" },
    { 451, "UNAVAILABLE_FOR_LEGAL_REASONS" }, { 500, "INTERNAL_SERVER_ERROR" }, { 501, "NOT_IMPLEMENTED" },
    { 502, "BAD_GATEWAY" }, { 503, "SERVICE_UNAVAILABLE" }, { 504, "GATEWAY_TIMEOUT" },
    { 505, "HTTP_VERSION_NOT_SUPPORTED" }, { 506, "VARIANT_ALSO_NEGOTIATES" }, { 507, "INSUFFICIENT_STORAGE" },
    { 508, "LOOP_DETECTED" }, { 509, "BANDWIDTH_LIMIT_EXCEEDED" }, { 510, "NOT_EXTENDED" },
    { 511, "NETWORK_AUTHENTICATION_REQUIRED" },
};

/* "404" or "NOT_FOUND" -> 404; -1 if neither. */
int mg_http_status_parse(const char *s)
{
    size_t nd = strspn(s, "0123456789");
    if (nd == 3 && !s[3]) {
        int c = atoi(s);
        return c >= 100 && c <= 599 ? c : -1;
    }
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (!strcmp(statuses[i].name, s)) return statuses[i].code;
    return -1;
}

/* ---- SetStatus ---- */

static int status_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, "status", "");
    int code = mg_http_status_parse(v);
    if (code < 0)
        return mg_plugin_arg_error(err, errlen, pc, "status",
                                   "status: expected a status code 100..599 or a name like BAD_REQUEST, got '%.40s'", v);
    int *s = malloc(sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    *s = code;
    *out = s;
    return 0;
}

static void status_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    int code = *(const int *)st;
    if (resp->status != code) {
        resp->status = code;
        resp->reason = MG_SLICE_NULL;
    }
}

const mg_plugin_spec_t mg_f_set_status = {
    .name = "SetStatus", .kind = MG_PLUGIN_FILTER, .args = { { "status", MG_ARG_REQUIRED } },
    .compile = status_compile, .free = free, .response = status_resp,
};

/* ---- RedirectTo ---- */

typedef struct {
    int status;
    char *url;
    size_t len;
    bool include_params;
} redir_st;

static void redir_free(void *st)
{
    redir_st *s = st;
    if (s) free(s->url);
    free(s);
}

static int redir_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *st = mg_plugin_str(pc, "status", ""), *url = mg_plugin_str(pc, "url", "");
    const char *inc = mg_plugin_str(pc, "includeRequestParams", "false");
    int code = mg_http_status_parse(st);
    if (code < 300 || code > 399)
        return mg_plugin_arg_error(err, errlen, pc, "status", "status: expected a 3xx redirect status, got '%.40s'", st);
    if (!*url || strpbrk(url, " \t\r\n"))
        return mg_plugin_arg_error(err, errlen, pc, "url", "url: bad URL '%.60s'", url);
    bool b;
    if (mg_parse_bool(inc, &b) != 0)
        return mg_plugin_arg_error(err, errlen, pc, "includeRequestParams",
                                   "includeRequestParams: expected true or false, got '%.40s'", inc);
    redir_st *s = calloc(1, sizeof *s);
    if (!s || !(s->url = strdup(url))) {
        free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->status = code;
    s->len = strlen(url);
    s->include_params = b;
    *out = s;
    return 0;
}

static int redir_req(const void *st, mg_req_view_t *req)
{
    const redir_st *s = st;
    mg_slice_t loc = mg_slice(s->url, s->len);
    if (s->include_params && req->query.p && req->query.n) {
        bool has_q = memchr(s->url, '?', s->len) != NULL;
        char *p = mg_arena_alloc(req->arena, s->len + 1 + req->query.n + 1);
        if (!p) return -500;
        memcpy(p, s->url, s->len);
        p[s->len] = has_q ? '&' : '?';
        memcpy(p + s->len + 1, req->query.p, req->query.n);
        p[s->len + 1 + req->query.n] = '\0';
        loc = mg_slice(p, s->len + 1 + req->query.n);
    }
    if (mg_hdr_add(req->arena, &req->local_headers, MG_SLICE_LIT("Location"), loc) != 0) return -500;
    req->local_status = s->status;
    return 0;
}

const mg_plugin_spec_t mg_f_redirect_to = {
    .name = "RedirectTo", .kind = MG_PLUGIN_FILTER,
    .args = { { "status", MG_ARG_REQUIRED }, { "url", MG_ARG_REQUIRED }, { "includeRequestParams", 0 } },
    .compile = redir_compile, .free = redir_free, .request = redir_req,
};

/* ---- RewriteLocationResponseHeader ----
 * Spring replaces, in the Location value, "host[:port]" (and with
 * stripping also a following "/v<digits>") right after "<protocol>://" and
 * before the next '/', by the request's Host (or hostValue).
 * stripVersion: NEVER_STRIP, AS_IN_REQUEST (strip when the request path
 * has no /v<digits>/ prefix; default), ALWAYS_STRIP. */

enum { NEVER_STRIP, AS_IN_REQUEST, ALWAYS_STRIP };

typedef struct {
    int strip;
    char *header;
    char *host; /* NULL: the request's Host */
    mg_rx_t protocols;
} rloc_st;

static void rloc_free(void *st)
{
    rloc_st *s = st;
    if (!s) return;
    free(s->header);
    free(s->host);
    mg_rx_free(&s->protocols);
    free(s);
}

static int rloc_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    const char *mode = mg_plugin_str(pc, "stripVersion", "AS_IN_REQUEST");
    const char *host = mg_plugin_str(pc, "hostValue", NULL);
    const char *proto = mg_plugin_str(pc, "protocols", "https?|ftps?");
    int m;
    if (!strcmp(mode, "NEVER_STRIP")) m = NEVER_STRIP;
    else if (!strcmp(mode, "AS_IN_REQUEST")) m = AS_IN_REQUEST;
    else if (!strcmp(mode, "ALWAYS_STRIP")) m = ALWAYS_STRIP;
    else
        return mg_plugin_arg_error(err, errlen, pc, "stripVersion",
                                   "stripVersion: unknown mode '%.40s' (expected NEVER_STRIP, AS_IN_REQUEST or ALWAYS_STRIP)", mode);
    int rc = mg_plugin_arg(pc, "locationHeaderName") ? mg_f_check_header_name(pc, "locationHeaderName", err, errlen) : 0;
    if (rc) return rc;
    if (host && (!*host || strpbrk(host, " \t\r\n/")))
        return mg_plugin_arg_error(err, errlen, pc, "hostValue", "hostValue: bad host '%.60s'", host);
    rloc_st *s = calloc(1, sizeof *s);
    char msg[256];
    if (!s || !(s->header = strdup(mg_plugin_str(pc, "locationHeaderName", "Location"))) ||
        (host && !(s->host = strdup(host)))) {
        rloc_free(s);
        return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    }
    s->strip = m;
    if (mg_rx_compile(&s->protocols, proto, true, msg, sizeof msg) != 0) {
        rloc_free(s);
        return mg_plugin_arg_error(err, errlen, pc, "protocols", "protocols: %s", msg);
    }
    *out = s;
    return 0;
}

/* "/v<digits>/..." */
static bool versioned(mg_slice_t p)
{
    if (p.n < 3 || p.p[0] != '/' || p.p[1] != 'v' || !isdigit((unsigned char)p.p[2])) return false;
    size_t i = 2;
    while (i < p.n && isdigit((unsigned char)p.p[i])) i++;
    return i < p.n && p.p[i] == '/';
}

static void rloc_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const rloc_st *s = st;
    mg_slice_t host = s->host ? mg_slice_cstr(s->host) : (req->msg ? req->msg->host : MG_SLICE_NULL);
    if (!host.n) return;
    mg_slice_t path = req->msg ? req->msg->path : MG_SLICE_NULL;
    bool strip = s->strip == ALWAYS_STRIP || (s->strip == AS_IN_REQUEST && !versioned(path));
    mg_slice_t name = mg_slice_cstr(s->header);
    for (uint32_t i = 0; i < resp->headers.n; i++) {
        if (!mg_slice_caseeq(resp->headers.v[i].name, name)) continue;
        mg_slice_t v = resp->headers.v[i].value;
        const char *sep = v.n >= 3 ? memmem(v.p, v.n, "://", 3) : NULL;
        if (!sep || !mg_rx_match(&s->protocols, mg_slice(v.p, (size_t)(sep - v.p)))) continue;
        size_t hs = (size_t)(sep - v.p) + 3, e = hs;
        while (e < v.n && v.p[e] != ':' && v.p[e] != '/') e++;
        if (e == hs) continue;
        if (e < v.n && v.p[e] == ':') {
            size_t d = e + 1;
            while (d < v.n && isdigit((unsigned char)v.p[d])) d++;
            if (d == e + 1) continue;
            e = d;
        }
        if (strip && versioned(mg_slice(v.p + e, v.n - e))) {
            e += 2;
            while (isdigit((unsigned char)v.p[e])) e++;
        }
        if (e >= v.n || v.p[e] != '/') continue;
        size_t n = hs + host.n + (v.n - e);
        char *p = mg_arena_alloc(resp->arena, n + 1);
        if (!p) return;
        memcpy(p, v.p, hs);
        memcpy(p + hs, host.p, host.n);
        memcpy(p + hs + host.n, v.p + e, v.n - e);
        p[n] = '\0';
        resp->headers.v[i].value = mg_slice(p, n);
    }
}

const mg_plugin_spec_t mg_f_rewrite_location_response_header = {
    .name = "RewriteLocationResponseHeader", .kind = MG_PLUGIN_FILTER,
    .args = { { "stripVersion", 0 }, { "locationHeaderName", 0 }, { "hostValue", 0 }, { "protocols", 0 } },
    .compile = rloc_compile, .free = rloc_free, .response = rloc_resp,
};
