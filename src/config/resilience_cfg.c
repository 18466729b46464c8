/* resilience_cfg: circuit breakers, retries, bulkheads, outlier detection,
 * retry budgets, health checks and respond routes, in both dialects. See
 * resilience_cfg.h and docs/resilience-config.md. */
#include "config/resilience_cfg.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cfg_int.h"
#include "core/err.h"
#include "filter/registry.h"
#include "filter/resilience_filters.h"
#include "route/path.h"

#define DAY_MS 86400000u

_Static_assert(sizeof(mg_cb_window_t) == sizeof(int), "MG_CFG_ENUM stores an int");

static int oom(mg_cfg_ctx_t *ctx, const mg_ynode_t *at) { return mg_cfg_error(ctx, at, "out of memory"); }

/* A CUSTOM handler that only records the node: obj + k->offset is a
 * const mg_ynode_t * slot. Lets a table check the key names while the
 * caller interprets the values in its own order. */
static int h_node(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    *(const mg_ynode_t **)(void *)((char *)obj + k->offset) = v;
    return 0;
}
#define NODE(nm, st, fld) { .name = nm, .type = MG_CFG_CUSTOM, .handler = h_node, .offset = offsetof(st, fld) }

/* ---- status lists: [500, "502-504", "5xx"] ---- */

typedef int (*status_range_fn)(void *obj, int lo, int hi);

static int status_list(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, status_range_fn add, void *obj)
{
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP) return mg_cfg_error(ctx, v, "%s: expected a list of statuses, got a map", what);
    for (size_t i = 0; i < n; i++) {
        const mg_ynode_t *it = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        const char *s;
        int rc = mg_cfg_scalar(ctx, what, it, &s);
        if (rc) return rc;
        int lo = -1, hi = -1;
        size_t d1 = strspn(s, "0123456789");
        if (d1 == 1 && (s[1] == 'x' || s[1] == 'X') && (s[2] == 'x' || s[2] == 'X') && !s[3]) {
            lo = (s[0] - '0') * 100;
            hi = lo + 99;
        } else if (d1 == 3 && !s[3]) {
            lo = hi = atoi(s);
        } else if (d1 == 3 && s[3] == '-' && strspn(s + 4, "0123456789") == 3 && !s[7]) {
            lo = atoi(s);
            hi = atoi(s + 4);
        }
        if (lo < 100 || hi > 599 || lo > hi)
            return mg_cfg_error(ctx, it, "%s: expected a status 100..599, a range like 502-504 or a class like 5xx, "
                                         "got '%.40s'", what, s);
        if (add(obj, lo, hi) != 0) return mg_cfg_error(ctx, it, "%s: bad status range '%.40s'", what, s);
    }
    return 0;
}

static int add_fail_status(void *obj, int lo, int hi) { return mg_breaker_cfg_fail_status(obj, lo, hi); }

static int add_health_status(void *obj, int lo, int hi)
{
    mg_cluster_cfg_t *c = obj;
    for (int s = lo; s <= hi; s++) {
        unsigned b = (unsigned)(s - 100);
        c->health.expected[b / 64] |= (uint64_t)1 << (b % 64);
    }
    return 0;
}

static bool bit_fail(const void *obj, int s)
{
    const mg_breaker_cfg_t *b = obj;
    return (b->fail_status[s / 64] >> (s % 64)) & 1;
}
static bool bit_health(const void *obj, int s) { return mg_rcfg_health_expected(obj, s); }
static bool bit_retry(const void *obj, int s)
{
    const mg_retry_policy_t *p = obj;
    return (p->statuses[s / 64] >> (s % 64)) & 1;
}

/* [ "500-599", "404" ] */
static void print_statuses(FILE *f, bool (*bit)(const void *, int), const void *obj)
{
    fputc('[', f);
    bool first = true;
    for (int s = 100; s <= 599; s++) {
        if (!bit(obj, s)) continue;
        int e = s;
        while (e + 1 <= 599 && bit(obj, e + 1)) e++;
        fprintf(f, first ? "" : ", ");
        if (e == s) fprintf(f, "%d", s);
        else fprintf(f, "\"%d-%d\"", s, e);
        first = false;
        s = e;
    }
    fputc(']', f);
}

/* ---- failure kinds: which local failures count against a breaker ---- */

enum { K_CONNECT = 1, K_TIMEOUT = 2, K_RESET = 4, K_PROTOCOL = 8, K_STATUS = 16, K_LOCAL = 15, K_ALL = 31 };

static const char *const kind_names[] = { "connect_failure", "timeout", "reset", "protocol_error", NULL };

static unsigned breaker_kinds(const mg_breaker_cfg_t *b)
{
    return (b->fail_on_connect ? K_CONNECT : 0) | (b->fail_on_timeout ? K_TIMEOUT : 0) |
           (b->fail_on_reset ? K_RESET : 0) | (b->fail_on_protocol ? K_PROTOCOL : 0);
}

static void set_breaker_kinds(mg_breaker_cfg_t *b, unsigned k)
{
    b->fail_on_connect = k & K_CONNECT;
    b->fail_on_timeout = k & K_TIMEOUT;
    b->fail_on_reset = k & K_RESET;
    b->fail_on_protocol = k & K_PROTOCOL;
}

/* Java exception classes (Resilience4j record/ignoreExceptions) -> what
 * they stand for in meshgate. Matched by simple name, so the fully
 * qualified name (what Resilience4j wants) and the simple one both work. */
static const struct {
    const char *name;
    unsigned kinds;
} java_ex[] = {
    { "Throwable", K_ALL },
    { "Exception", K_ALL },
    { "IOException", K_CONNECT | K_RESET | K_PROTOCOL },
    { "SocketException", K_CONNECT | K_RESET },
    { "ConnectException", K_CONNECT },
    { "AnnotatedConnectException", K_CONNECT },
    { "ConnectTimeoutException", K_CONNECT },
    { "NoRouteToHostException", K_CONNECT },
    { "UnknownHostException", K_CONNECT },
    { "PrematureCloseException", K_RESET },
    { "TimeoutException", K_TIMEOUT }, /* java.util.concurrent (TimeLimiter), Spring's, Netty's */
    { "ReadTimeoutException", K_TIMEOUT },
    { "SocketTimeoutException", K_TIMEOUT },
    { "DecoderException", K_PROTOCOL },
    { "RuntimeException", K_STATUS | K_PROTOCOL | K_TIMEOUT },
    { "NestedRuntimeException", K_STATUS },
    { "RestClientException", K_STATUS },
    { "RestClientResponseException", K_STATUS },
    { "HttpStatusCodeException", K_STATUS },
    { "HttpServerErrorException", K_STATUS },
    { "ResponseStatusException", K_STATUS | K_TIMEOUT }, /* Spring gateway TimeoutException's parent */
    { "CircuitBreakerStatusCodeException", K_STATUS },
};

static int java_exception_kinds(const char *cls, unsigned *out)
{
    const char *simple = strrchr(cls, '.');
    simple = simple ? simple + 1 : cls;
    if (strrchr(simple, '$')) simple = strrchr(simple, '$') + 1;
    for (size_t i = 0; i < sizeof java_ex / sizeof java_ex[0]; i++)
        if (!strcmp(simple, java_ex[i].name)) {
            *out = java_ex[i].kinds;
            return 0;
        }
    return -1;
}

/* ---- native circuit_breaker: (route and cluster) ---- */

typedef struct {
    const mg_ynode_t *name, *window_type, *window_size, *minimum_calls, *failure_rate, *slow_rate, *slow_duration,
        *wait_open, *half_open_calls, *automatic, *max_wait_half_open, *failure_statuses, *failure_kinds,
        *failure_threshold, *timeout, *reset_timeout, *fallback, *time_limit, *resume;
} nb_nodes_t;

#define NB_COMMON                                                                        \
    NODE("sliding_window_type", nb_nodes_t, window_type),                                \
    NODE("sliding_window_size", nb_nodes_t, window_size),                                \
    NODE("minimum_calls", nb_nodes_t, minimum_calls),                                    \
    NODE("failure_rate_threshold", nb_nodes_t, failure_rate),                            \
    NODE("slow_call_rate_threshold", nb_nodes_t, slow_rate),                             \
    NODE("slow_call_duration", nb_nodes_t, slow_duration),                               \
    NODE("wait_in_open", nb_nodes_t, wait_open),                                         \
    NODE("half_open_calls", nb_nodes_t, half_open_calls),                                \
    NODE("automatic_half_open", nb_nodes_t, automatic),                                  \
    NODE("max_wait_in_half_open", nb_nodes_t, max_wait_half_open),                       \
    NODE("failure_statuses", nb_nodes_t, failure_statuses),                              \
    NODE("failure_kinds", nb_nodes_t, failure_kinds),                                    \
    NODE("failure_threshold", nb_nodes_t, failure_threshold),                            \
    NODE("timeout", nb_nodes_t, timeout),                                                \
    NODE("reset_timeout", nb_nodes_t, reset_timeout)

static const mg_cfg_key_t route_nb_keys[] = {
    NODE("name", nb_nodes_t, name), NB_COMMON, NODE("fallback", nb_nodes_t, fallback),
    NODE("time_limit", nb_nodes_t, time_limit), NODE("resume_without_error", nb_nodes_t, resume),
};
static const mg_cfg_table_t route_nb_table = MG_CFG_TABLE_OF("in route circuit_breaker", route_nb_keys);
static const mg_cfg_key_t cluster_nb_keys[] = { NB_COMMON };
static const mg_cfg_table_t cluster_nb_table = MG_CFG_TABLE_OF("in cluster circuit_breaker", cluster_nb_keys);

static int u32_node(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t lo, uint64_t hi, uint32_t *out)
{
    uint64_t x;
    if (!v || mg_ynode_is_null(v)) return 0;
    int rc = mg_cfg_uint(ctx, what, v, lo, hi, &x);
    if (rc == 0) *out = (uint32_t)x;
    return rc;
}

static int dur_node(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t lo, uint32_t *out)
{
    uint64_t x;
    if (!v || mg_ynode_is_null(v)) return 0;
    int rc = mg_cfg_duration(ctx, what, v, lo, DAY_MS, &x);
    if (rc == 0) *out = (uint32_t)x;
    return rc;
}

static int bool_node(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, bool *out)
{
    if (!v || mg_ynode_is_null(v)) return 0;
    return mg_cfg_bool(ctx, what, v, out);
}

static int percent_node(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, float *out)
{
    const char *s;
    if (!v || mg_ynode_is_null(v)) return 0;
    int rc = mg_cfg_scalar(ctx, what, v, &s);
    if (rc) return rc;
    char *end;
    double x = strtod(s, &end);
    if (end == s || *end || !(x > 0 && x <= 100))
        return mg_cfg_error(ctx, v, "%s: expected a percentage in (0, 100], got '%.40s'", what, s);
    *out = (float)x;
    return 0;
}

static bool present(const mg_ynode_t *v) { return v && !mg_ynode_is_null(v); }

/* Walk a native circuit_breaker map into b (+ route extras when r). */
static int native_breaker(mg_cfg_ctx_t *ctx, const mg_ynode_t *v, bool route, mg_breaker_cfg_t *b, nb_nodes_t *n)
{
    memset(n, 0, sizeof *n);
    int rc = mg_cfg_expect(ctx, "circuit_breaker", v, MG_YNODE_MAP);
    if (rc || (rc = mg_cfg_walk(ctx, route ? &route_nb_table : &cluster_nb_table, v, n))) return rc;
    mg_breaker_cfg_default(b);
    const mg_ynode_t *simple = present(n->failure_threshold) ? n->failure_threshold
                               : present(n->timeout)         ? n->timeout
                               : present(n->reset_timeout)   ? n->reset_timeout
                                                             : NULL;
    const mg_ynode_t *rate_keys[] = { n->window_type, n->window_size,     n->minimum_calls,     n->failure_rate,
                                      n->slow_rate,   n->slow_duration,   n->wait_open,         n->half_open_calls,
                                      n->max_wait_half_open };
    if (simple) {
        for (size_t i = 0; i < sizeof rate_keys / sizeof rate_keys[0]; i++)
            if (present(rate_keys[i]))
                return mg_cfg_error(ctx, rate_keys[i], "circuit_breaker: the simple form (failure_threshold, timeout, "
                                                       "reset_timeout) cannot be mixed with the sliding-window keys");
        uint32_t ft = 5, to = 0, reset = 60000;
        if ((rc = u32_node(ctx, "failure_threshold", n->failure_threshold, 1, 1000000, &ft)) ||
            (rc = dur_node(ctx, "timeout", n->timeout, 0, &to)) ||
            (rc = dur_node(ctx, "reset_timeout", n->reset_timeout, 1, &reset)))
            return rc;
        mg_breaker_cfg_simple(b, ft, to, reset);
    } else {
        static const char *const wt[] = { "count_based", "time_based", NULL };
        if (present(n->window_type)) {
            int x;
            if ((rc = mg_cfg_enum(ctx, "sliding_window_type", n->window_type, wt, &x))) return rc;
            b->window_type = (mg_cb_window_t)x;
        }
        if ((rc = u32_node(ctx, "sliding_window_size", n->window_size, 1,
                           b->window_type == MG_CB_COUNT_BASED ? 1000000 : 86400, &b->window_size)) ||
            (rc = u32_node(ctx, "minimum_calls", n->minimum_calls, 1, 1000000, &b->minimum_calls)) ||
            (rc = percent_node(ctx, "failure_rate_threshold", n->failure_rate, &b->failure_rate_threshold)) ||
            (rc = percent_node(ctx, "slow_call_rate_threshold", n->slow_rate, &b->slow_rate_threshold)) ||
            (rc = dur_node(ctx, "slow_call_duration", n->slow_duration, 1, &b->slow_call_duration_ms)) ||
            (rc = dur_node(ctx, "wait_in_open", n->wait_open, 1, &b->wait_open_ms)) ||
            (rc = u32_node(ctx, "half_open_calls", n->half_open_calls, 1, 65535, &b->half_open_permits)) ||
            (rc = dur_node(ctx, "max_wait_in_half_open", n->max_wait_half_open, 0, &b->max_wait_half_open_ms)))
            return rc;
    }
    if ((rc = bool_node(ctx, "automatic_half_open", n->automatic, &b->automatic_half_open))) return rc;
    /* native default: 5xx responses count as failures */
    if (present(n->failure_statuses)) {
        if ((rc = status_list(ctx, "failure_statuses", n->failure_statuses, add_fail_status, b))) return rc;
    } else {
        mg_breaker_cfg_fail_status(b, 500, 599);
    }
    if (present(n->failure_kinds)) {
        const mg_ynode_t *fk = n->failure_kinds;
        if ((rc = mg_cfg_expect(ctx, "failure_kinds", fk, MG_YNODE_SEQ))) return rc;
        unsigned k = 0;
        for (size_t i = 0; i < fk->nitems; i++) {
            int x;
            if ((rc = mg_cfg_enum(ctx, "failure_kinds", fk->items[i], kind_names, &x))) return rc;
            k |= 1u << x;
        }
        set_breaker_kinds(b, k);
    }
    char why[160];
    if (mg_breaker_cfg_validate(b, why, sizeof why) != 0) return mg_cfg_error(ctx, v, "circuit_breaker: %s", why);
    return 0;
}

int mg_rcfg_route_breaker(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    nb_nodes_t n;
    int rc = native_breaker(ctx, v, true, &r->breaker, &n);
    if (rc) return rc;
    r->has_breaker = true;
    if (present(n.name)) {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, "name", n.name, &s))) return rc;
        if (!*s || strlen(s) > 200) return mg_cfg_error(ctx, n.name, "circuit_breaker.name: expected 1..200 characters");
        if (!(r->breaker_name = strdup(s))) return oom(ctx, v);
    } /* else "route:<id>", set by mg_rcfg_finish once the id is known */
    if (present(n.fallback)) {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, "fallback", n.fallback, &s))) return rc;
        if (!strncmp(s, "forward:", 8)) s += 8;
        if (s[0] != '/' || strpbrk(s, "?# \t"))
            return mg_cfg_error(ctx, n.fallback, "circuit_breaker.fallback: expected a path like /fallback/users "
                                                 "(a route of this gateway), got '%.80s'", s);
        if (!(r->fallback_path = strdup(s))) return oom(ctx, v);
    }
    if ((rc = dur_node(ctx, "time_limit", n.time_limit, 0, &r->time_limit_ms)) ||
        (rc = bool_node(ctx, "resume_without_error", n.resume, &r->resume_without_error)))
        return rc;
    return 0;
}

int mg_rcfg_cluster_breaker(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    nb_nodes_t n;
    int rc = native_breaker(ctx, v, false, &c->breaker, &n);
    if (rc == 0) c->has_breaker = true;
    return rc;
}

/* ---- native retry: ---- */

typedef struct {
    const mg_ynode_t *attempts, *num_retries, *per_try_timeout, *retry_on, *methods, *backoff;
} nr_nodes_t;
static const mg_cfg_key_t nr_keys[] = {
    NODE("attempts", nr_nodes_t, attempts),       NODE("num_retries", nr_nodes_t, num_retries),
    NODE("per_try_timeout", nr_nodes_t, per_try_timeout), NODE("retry_on", nr_nodes_t, retry_on),
    NODE("methods", nr_nodes_t, methods),         NODE("backoff", nr_nodes_t, backoff),
};
static const mg_cfg_table_t nr_table = MG_CFG_TABLE_OF("in route retry", nr_keys);

typedef struct {
    const mg_ynode_t *base, *max;
} nrb_nodes_t;
static const mg_cfg_key_t nrb_keys[] = { NODE("base", nrb_nodes_t, base), NODE("max", nrb_nodes_t, max) };
static const mg_cfg_table_t nrb_table = MG_CFG_TABLE_OF("in route retry backoff", nrb_keys);

static int scalar_list(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, mg_retry_policy_t *p,
                       int (*add)(mg_retry_policy_t *, const char *), const char *expect)
{
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP) return mg_cfg_error(ctx, v, "%s: expected a list, got a map", what);
    for (size_t i = 0; i < n; i++) {
        const mg_ynode_t *it = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        const char *s;
        int rc = mg_cfg_scalar(ctx, what, it, &s);
        if (rc) return rc;
        if (add(p, s) != 0) return mg_cfg_error(ctx, it, "%s: unknown value '%.40s' (expected %s)", what, s, expect);
    }
    return 0;
}

int mg_rcfg_route_retry(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    mg_retry_policy_t *p = &r->retry;
    nr_nodes_t n = { 0 };
    int rc = mg_cfg_expect(ctx, "retry", v, MG_YNODE_MAP);
    if (rc || (rc = mg_cfg_walk(ctx, &nr_table, v, &n))) return rc;
    mg_retry_policy_default(p);
    if (present(n.attempts) && present(n.num_retries))
        return mg_cfg_error(ctx, n.num_retries, "retry: attempts (Istio) and num_retries (Envoy) mean the same "
                                                "thing (retries after the first try); give one");
    if ((rc = u32_node(ctx, "attempts", n.attempts, 0, 100, &p->max_retries)) ||
        (rc = u32_node(ctx, "num_retries", n.num_retries, 0, 100, &p->max_retries)) ||
        (rc = dur_node(ctx, "per_try_timeout", n.per_try_timeout, 1, &p->per_try_timeout_ms)))
        return rc;
    if (present(n.retry_on)) {
        p->on = 0;
        if ((rc = scalar_list(ctx, "retry_on", n.retry_on, p, mg_retry_add_token,
                              "5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, "
                              "retriable-status-codes or a status code")))
            return rc;
        uint64_t any = 0;
        for (int i = 0; i < MG_RETRY_STATUS_WORDS; i++) any |= p->statuses[i];
        if ((p->on & MG_RETRY_STATUS_LISTED) && !any)
            return mg_cfg_error(ctx, n.retry_on, "retry_on: retriable-status-codes needs status codes in the list "
                                                 "(e.g. [retriable-status-codes, 503])");
    }
    if (present(n.methods)) {
        p->methods = 0;
        if ((rc = scalar_list(ctx, "methods", n.methods, p, mg_retry_add_method, "an HTTP method like GET")))
            return rc;
    }
    if (present(n.backoff)) {
        nrb_nodes_t b = { 0 };
        if ((rc = mg_cfg_expect(ctx, "backoff", n.backoff, MG_YNODE_MAP)) ||
            (rc = mg_cfg_walk(ctx, &nrb_table, n.backoff, &b)))
            return rc;
        if ((rc = dur_node(ctx, "base", b.base, 1, &p->base_ms))) return rc;
        p->max_ms = p->base_ms * 10; /* Envoy: max defaults to 10 x base */
        if ((rc = dur_node(ctx, "max", b.max, 1, &p->max_ms))) return rc;
        if (p->max_ms < p->base_ms) return mg_cfg_error(ctx, b.max, "backoff.max must be at least backoff.base");
    }
    char why[160];
    if (mg_retry_policy_validate(p, why, sizeof why) != 0) return mg_cfg_error(ctx, v, "retry: %s", why);
    r->has_retry = true;
    return 0;
}

/* ---- native respond: ---- */

typedef struct {
    const mg_ynode_t *status, *headers, *body;
} rs_nodes_t;
static const mg_cfg_key_t rs_keys[] = {
    NODE("status", rs_nodes_t, status), NODE("headers", rs_nodes_t, headers), NODE("body", rs_nodes_t, body),
};
static const mg_cfg_table_t rs_table = MG_CFG_TABLE_OF("in route respond", rs_keys);

static bool tchar(char c)
{
    return isalnum((unsigned char)c) || strchr("!#$%&'*+-.^_`|~", c);
}

int mg_rcfg_route_respond(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_route_cfg_t *r = obj;
    rs_nodes_t n = { 0 };
    int rc = mg_cfg_expect(ctx, "respond", v, MG_YNODE_MAP);
    if (rc || (rc = mg_cfg_walk(ctx, &rs_table, v, &n))) return rc;
    if (r->cluster)
        return mg_cfg_error(ctx, v, "a route takes exactly one destination: 'to', 'uri' or 'respond'");
    uint32_t st = 200;
    if ((rc = u32_node(ctx, "status", n.status, 200, 599, &st))) return rc;
    r->respond = true;
    r->respond_status = (int)st;
    r->cluster_index = SIZE_MAX; /* no cluster: the proxy answers itself */
    if (present(n.headers)) {
        const mg_ynode_t *h = n.headers;
        if ((rc = mg_cfg_expect(ctx, "headers", h, MG_YNODE_MAP))) return rc;
        if (!(r->respond_headers = calloc(h->npairs ? h->npairs : 1, sizeof *r->respond_headers))) return oom(ctx, h);
        for (size_t i = 0; i < h->npairs; i++) {
            const mg_ynode_t *hk = h->pairs[i].key;
            const char *val;
            bool ok = hk->len > 0;
            for (size_t j = 0; ok && j < hk->len; j++) ok = tchar(hk->str[j]);
            if (!ok) return mg_cfg_error(ctx, hk, "respond.headers: bad header name '%.60s'", hk->str);
            if (!strcasecmp(hk->str, "Content-Length") || !strcasecmp(hk->str, "Transfer-Encoding") ||
                !strcasecmp(hk->str, "Connection"))
                return mg_cfg_error(ctx, hk, "respond.headers: %s is set by meshgate itself", hk->str);
            if ((rc = mg_cfg_scalar(ctx, hk->str, h->pairs[i].value, &val))) return rc;
            if (strpbrk(val, "\r\n"))
                return mg_cfg_error(ctx, h->pairs[i].value, "respond.headers: a header value must not contain CR or LF");
            size_t len = hk->len + 2 + strlen(val) + 1;
            char *line = malloc(len);
            if (!line) return oom(ctx, h);
            snprintf(line, len, "%s: %s", hk->str, val);
            r->respond_headers[r->nrespond_headers++] = line;
        }
    }
    if (present(n.body)) {
        const char *s;
        if ((rc = mg_cfg_scalar(ctx, "body", n.body, &s))) return rc;
        if (strlen(s) > (1u << 20)) return mg_cfg_error(ctx, n.body, "respond.body: at most 1 MiB");
        if (!(r->respond_body = strdup(s))) return oom(ctx, n.body);
    }
    return 0;
}

/* ---- cluster blocks ---- */

#define CU32(nm, fld, lo, hi) \
    { .name = nm, .type = MG_CFG_U32, .offset = offsetof(mg_cluster_cfg_t, fld), .min = lo, .max = hi }
#define CDUR(nm, fld, lo) \
    { .name = nm, .type = MG_CFG_DURATION, .offset = offsetof(mg_cluster_cfg_t, fld), .min = lo, .max = DAY_MS }

static const mg_cfg_key_t pool_keys[] = {
    CU32("max_connections", bulkhead.max_connections, 0, 10000000),
    CU32("max_requests", bulkhead.max_requests, 0, 10000000),
    CU32("max_pending", bulkhead.max_pending, 0, 10000000),
    CU32("max_requests_per_connection", bulkhead.max_requests_per_connection, 0, 10000000),
};
static const mg_cfg_table_t pool_table = MG_CFG_TABLE_OF("in cluster connection_pool", pool_keys);

int mg_rcfg_cluster_pool(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    return rc ? rc : mg_cfg_walk(ctx, &pool_table, v, obj);
}

static const mg_cfg_key_t od_keys[] = {
    CU32("consecutive_5xx", outlier.consecutive_5xx, 0, 1000000),
    CU32("consecutive_gateway_errors", outlier.consecutive_gateway_errors, 0, 1000000),
    CDUR("interval", outlier.interval_ms, 1),
    CDUR("base_ejection_time", outlier.base_ejection_time_ms, 1),
    CDUR("max_ejection_time", outlier.max_ejection_time_ms, 1),
    CU32("max_ejection_percent", outlier.max_ejection_percent, 0, 100),
    CU32("min_health_percent", outlier.min_health_percent, 0, 100),
};
static const mg_cfg_table_t od_table = MG_CFG_TABLE_OF("in cluster outlier_detection", od_keys);

int mg_rcfg_cluster_outlier(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    mg_outlier_cfg_default(&c->outlier);
    if ((rc = mg_cfg_walk(ctx, &od_table, v, c))) return rc;
    char why[160];
    if (mg_outlier_cfg_validate(&c->outlier, why, sizeof why) != 0) return mg_cfg_error(ctx, v, "%s", why);
    c->has_outlier = true;
    return 0;
}

static const mg_cfg_key_t rb_keys[] = {
    CU32("percent", retry_budget.budget_percent, 0, 100),
    CU32("min_concurrency", retry_budget.min_concurrency, 0, 1000000),
};
static const mg_cfg_table_t rb_table = MG_CFG_TABLE_OF("in cluster retry_budget", rb_keys);

int mg_rcfg_cluster_retry_budget(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    return rc ? rc : mg_cfg_walk(ctx, &rb_table, v, obj);
}

typedef struct {
    mg_cluster_cfg_t *c;
    const mg_ynode_t *expected;
} hc_t;

static int h_hc_path(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    const char *s;
    int rc = mg_cfg_scalar(ctx, k->name, v, &s);
    if (rc) return rc;
    if (s[0] != '/' || strpbrk(s, " \t\r\n#"))
        return mg_cfg_error(ctx, v, "health_check.path: expected a request path like /health, got '%.80s'", s);
    free(c->health.path);
    if (!(c->health.path = strdup(s))) return oom(ctx, v);
    return 0;
}

static int h_hc_expected(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    memset(c->health.expected, 0, sizeof c->health.expected);
    return status_list(ctx, "health_check.expected_statuses", v, add_health_status, c);
}

static const mg_cfg_key_t hc_keys[] = {
    { .name = "path", .type = MG_CFG_CUSTOM, .handler = h_hc_path, .flags = MG_CFG_REQUIRED },
    CDUR("interval", health.interval_ms, 1),
    CDUR("timeout", health.timeout_ms, 1),
    CU32("healthy_threshold", health.healthy_threshold, 1, 1000),
    CU32("unhealthy_threshold", health.unhealthy_threshold, 1, 1000),
    { .name = "expected_statuses", .type = MG_CFG_CUSTOM, .handler = h_hc_expected },
};
static const mg_cfg_table_t hc_table = MG_CFG_TABLE_OF("in cluster health_check", hc_keys);

int mg_rcfg_cluster_health(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    mg_cluster_cfg_t *c = obj;
    int rc = mg_cfg_expect(ctx, k->name, v, MG_YNODE_MAP);
    if (rc) return rc;
    c->health.interval_ms = 10000;
    c->health.timeout_ms = 1000;
    c->health.healthy_threshold = 1;
    c->health.unhealthy_threshold = 3;
    memset(c->health.expected, 0, sizeof c->health.expected);
    add_health_status(c, 200, 399);
    if ((rc = mg_cfg_walk(ctx, &hc_table, v, c))) return rc;
    if (c->health.timeout_ms > c->health.interval_ms)
        return mg_cfg_error(ctx, v, "health_check: timeout (%u ms) must not exceed interval (%u ms)",
                            c->health.timeout_ms, c->health.interval_ms);
    c->has_health = true;
    return 0;
}

void mg_rcfg_cluster_defaults(mg_cluster_cfg_t *c)
{
    mg_bulkhead_cfg_default(&c->bulkhead);
    mg_retry_budget_cfg_default(&c->retry_budget);
    mg_outlier_cfg_default(&c->outlier);
    mg_breaker_cfg_default(&c->breaker);
}

void mg_rcfg_cluster_free(mg_cluster_cfg_t *c)
{
    free(c->health.path);
    c->health.path = NULL;
}

void mg_rcfg_route_free(mg_route_cfg_t *r)
{
    free(r->breaker_name);
    free(r->fallback_path);
    for (size_t i = 0; i < r->nrespond_headers; i++) free(r->respond_headers[i]);
    free(r->respond_headers);
    free(r->respond_body);
    r->breaker_name = r->fallback_path = r->respond_body = NULL;
    r->respond_headers = NULL;
    r->nrespond_headers = 0;
}

/* ---- resilience4j.* ---- */

/* Spring relaxed binding: slidingWindowSize == sliding-window-size ==
 * sliding_window_size (case-insensitive, '-' and '_' ignored). */
static bool relaxed_eq(const char *a, const char *b)
{
    for (;;) {
        while (*a == '-' || *a == '_') a++;
        while (*b == '-' || *b == '_') b++;
        if (!*a || !*b) return !*a && !*b;
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b)) return false;
        a++;
        b++;
    }
}

static int unknown_r4j(mg_cfg_ctx_t *ctx, const mg_ynode_t *k, const char *where, const char *const *names, size_t n)
{
    const char *sug = mg_suggest(k->str, k->len, names, n);
    char list[700];
    size_t w = 0;
    list[0] = '\0';
    for (size_t i = 0; i < n && w < sizeof list; i++) {
        int x = snprintf(list + w, sizeof list - w, "%s%s", i ? ", " : "", names[i]);
        if (x < 0) break;
        w += (size_t)x;
    }
    if (sug)
        return mg_cfg_error(ctx, k, "unknown key '%.60s' in %s (did you mean %s?)", k->str, where, sug);
    return mg_cfg_error(ctx, k, "unknown key '%.60s' in %s (meshgate supports: %s)", k->str, where, list);
}

enum {
    CB_BASE, CB_WTYPE, CB_WSIZE, CB_MINCALLS, CB_FRATE, CB_SRATE, CB_SDUR, CB_WAIT, CB_HALF, CB_AUTO, CB_MAXWAIT,
    CB_RECORD, CB_IGNORE, CB_HEALTH, CB_HEALTHFAIL, CB_EVBUF, CB_STACK, CB_NKEYS
};
static const char *const cb_keys[CB_NKEYS] = {
    "baseConfig", "slidingWindowType", "slidingWindowSize", "minimumNumberOfCalls", "failureRateThreshold",
    "slowCallRateThreshold", "slowCallDurationThreshold", "waitDurationInOpenState",
    "permittedNumberOfCallsInHalfOpenState", "automaticTransitionFromOpenToHalfOpenEnabled",
    "maxWaitDurationInHalfOpenState", "recordExceptions", "ignoreExceptions",
    /* accepted with no effect: they configure Spring Boot actuator endpoints / JVM stack traces,
     * which have no counterpart in meshgate (its admin API always shows breakers) */
    "registerHealthIndicator", "allowHealthIndicatorToFail", "eventConsumerBufferSize", "writableStackTraceEnabled",
};

enum { TL_BASE, TL_TIMEOUT, TL_CANCEL, TL_NKEYS };
static const char *const tl_keys[TL_NKEYS] = { "baseConfig", "timeoutDuration", "cancelRunningFuture" };

typedef struct {
    mg_breaker_cfg_t b;
    bool rec_set;
    unsigned rec, ign;
    uint32_t timeout_ms; /* timelimiter */
} r4j_t;

static int key_index(const char *const *keys, size_t n, const char *k)
{
    for (size_t i = 0; i < n; i++)
        if (relaxed_eq(keys[i], k)) return (int)i;
    return -1;
}

static int r4j_duration(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, uint64_t lo, uint32_t *out)
{
    const char *s;
    uint64_t ms;
    int rc = mg_cfg_scalar(ctx, what, v, &s);
    if (rc) return rc;
    if (mg_spring_duration_ms(s, &ms) != 0 || ms < lo || ms > DAY_MS)
        return mg_cfg_error(ctx, v, "%s: expected a duration of %s (e.g. 500ms, 2s, PT2S; a plain number is ms), "
                                    "got '%.40s'", what, lo ? "at least 1ms and at most 1 day" : "at most 1 day", s);
    *out = (uint32_t)ms;
    return 0;
}

static int r4j_exceptions(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, unsigned *out)
{
    size_t n = v->kind == MG_YNODE_SEQ ? v->nitems : 1;
    if (v->kind == MG_YNODE_MAP) return mg_cfg_error(ctx, v, "%s: expected a list of exception classes", what);
    *out = 0;
    for (size_t i = 0; i < n; i++) {
        const mg_ynode_t *it = v->kind == MG_YNODE_SEQ ? v->items[i] : v;
        const char *s;
        int rc = mg_cfg_scalar(ctx, what, it, &s);
        if (rc) return rc;
        for (const char *p = s;;) { /* Spring binds "a,b" to a list too */
            const char *c = strchr(p, ',');
            size_t e = c ? (size_t)(c - p) : strlen(p), b = 0;
            while (b < e && isspace((unsigned char)p[b])) b++;
            while (e > b && isspace((unsigned char)p[e - 1])) e--;
            if (e > b) {
                char cls[200];
                unsigned k;
                snprintf(cls, sizeof cls, "%.*s", (int)(e - b), p + b);
                if (java_exception_kinds(cls, &k) != 0)
                    return mg_cfg_error(ctx, it, "%s: unknown exception class '%.100s' (meshgate maps java.io.IOException, "
                                                 "java.util.concurrent.TimeoutException, java.net.ConnectException, "
                                                 "java.net.UnknownHostException, reactor.netty.http.client."
                                                 "PrematureCloseException, java.lang.Exception and a few more; see "
                                                 "docs/resilience-config.md)", what, cls);
                *out |= k;
            }
            if (!c) break;
            p = c + 1;
        }
    }
    return 0;
}

/* Apply one config/instance map's own keys over o. */
static int r4j_cb_apply(mg_cfg_ctx_t *ctx, const char *where, const mg_ynode_t *m, r4j_t *o)
{
    int rc;
    for (size_t i = 0; i < m->npairs; i++) {
        const mg_ynode_t *k = m->pairs[i].key, *v = m->pairs[i].value;
        int ki = key_index(cb_keys, CB_NKEYS, k->str);
        if (ki < 0) return unknown_r4j(ctx, k, where, cb_keys, CB_NKEYS);
        if (mg_ynode_is_null(v)) continue;
        mg_breaker_cfg_t *b = &o->b;
        uint64_t x;
        const char *s;
        bool flag;
        switch (ki) {
        case CB_BASE: break;
        case CB_WTYPE:
            if ((rc = mg_cfg_scalar(ctx, k->str, v, &s))) return rc;
            if (relaxed_eq(s, "COUNT_BASED")) b->window_type = MG_CB_COUNT_BASED;
            else if (relaxed_eq(s, "TIME_BASED")) b->window_type = MG_CB_TIME_BASED;
            else return mg_cfg_error(ctx, v, "%s: expected COUNT_BASED or TIME_BASED, got '%.40s'", k->str, s);
            break;
        case CB_WSIZE:
            if ((rc = mg_cfg_uint(ctx, k->str, v, 1, 1000000, &x))) return rc;
            b->window_size = (uint32_t)x;
            break;
        case CB_MINCALLS:
            if ((rc = mg_cfg_uint(ctx, k->str, v, 1, 1000000, &x))) return rc;
            b->minimum_calls = (uint32_t)x;
            break;
        case CB_FRATE:
            if ((rc = percent_node(ctx, k->str, v, &b->failure_rate_threshold))) return rc;
            break;
        case CB_SRATE:
            if ((rc = percent_node(ctx, k->str, v, &b->slow_rate_threshold))) return rc;
            break;
        case CB_SDUR:
            if ((rc = r4j_duration(ctx, k->str, v, 1, &b->slow_call_duration_ms))) return rc;
            break;
        case CB_WAIT:
            if ((rc = r4j_duration(ctx, k->str, v, 1, &b->wait_open_ms))) return rc;
            break;
        case CB_HALF:
            if ((rc = mg_cfg_uint(ctx, k->str, v, 1, 65535, &x))) return rc;
            b->half_open_permits = (uint32_t)x;
            break;
        case CB_AUTO:
            if ((rc = mg_cfg_bool(ctx, k->str, v, &b->automatic_half_open))) return rc;
            break;
        case CB_MAXWAIT:
            if ((rc = r4j_duration(ctx, k->str, v, 0, &b->max_wait_half_open_ms))) return rc;
            break;
        case CB_RECORD:
            if ((rc = r4j_exceptions(ctx, k->str, v, &o->rec))) return rc;
            o->rec_set = true;
            break;
        case CB_IGNORE:
            if ((rc = r4j_exceptions(ctx, k->str, v, &o->ign))) return rc;
            break;
        case CB_HEALTH: case CB_HEALTHFAIL: case CB_STACK:
            if ((rc = mg_cfg_bool(ctx, k->str, v, &flag))) return rc;
            break;
        case CB_EVBUF:
            if ((rc = mg_cfg_uint(ctx, k->str, v, 1, 1000000, &x))) return rc;
            break;
        }
    }
    return 0;
}

static int r4j_tl_apply(mg_cfg_ctx_t *ctx, const char *where, const mg_ynode_t *m, r4j_t *o)
{
    int rc;
    for (size_t i = 0; i < m->npairs; i++) {
        const mg_ynode_t *k = m->pairs[i].key, *v = m->pairs[i].value;
        int ki = key_index(tl_keys, TL_NKEYS, k->str);
        if (ki < 0) return unknown_r4j(ctx, k, where, tl_keys, TL_NKEYS);
        if (mg_ynode_is_null(v)) continue;
        bool flag;
        if (ki == TL_TIMEOUT && (rc = r4j_duration(ctx, k->str, v, 1, &o->timeout_ms))) return rc;
        if (ki == TL_CANCEL && (rc = mg_cfg_bool(ctx, k->str, v, &flag))) return rc; /* meshgate always cancels */
    }
    return 0;
}

typedef struct {
    const mg_ynode_t *configs, *instances; /* maps, or NULL */
} r4j_section_t;

typedef struct {
    r4j_section_t cb, tl;
} r4j_all_t;

static const mg_ynode_t *map_get_relaxed(const mg_ynode_t *m, const char *key)
{
    if (!m || m->kind != MG_YNODE_MAP) return NULL;
    for (size_t i = 0; i < m->npairs; i++)
        if (relaxed_eq(m->pairs[i].key->str, key)) return m->pairs[i].value;
    return NULL;
}

static const mg_ynode_t *get_base_node(const mg_ynode_t *m)
{
    const mg_ynode_t *b = map_get_relaxed(m, "baseConfig");
    return b && !mg_ynode_is_null(b) ? b : NULL;
}

/* Resolve a map with baseConfig chains: defaults <- configs.default (for
 * an instance without baseConfig, as resilience4j-spring-boot) <- base
 * chain <- own keys. depth guards cycles. */
static int r4j_resolve_map(mg_cfg_ctx_t *ctx, const r4j_section_t *sec, bool cb, const mg_ynode_t *m, const char *where,
                           bool is_instance, int depth, r4j_t *o)
{
    int rc;
    if (depth > 8) return mg_cfg_error(ctx, m, "%s: baseConfig chain too deep (a cycle?)", where);
    const mg_ynode_t *bn = get_base_node(m);
    if (bn) {
        const char *bname;
        if ((rc = mg_cfg_scalar(ctx, "baseConfig", bn, &bname))) return rc;
        const mg_ynode_t *base = sec->configs ? mg_ymap_get(sec->configs, bname) : NULL;
        if (!base || mg_ynode_is_null(base))
            return mg_cfg_error(ctx, bn, "baseConfig: no config '%.80s' under resilience4j.%s.configs", bname,
                                cb ? "circuitbreaker" : "timelimiter");
        char w2[200];
        snprintf(w2, sizeof w2, "resilience4j.%s.configs.%.80s", cb ? "circuitbreaker" : "timelimiter", bname);
        if ((rc = r4j_resolve_map(ctx, sec, cb, base, w2, false, depth + 1, o))) return rc;
    } else if (is_instance && sec->configs) {
        const mg_ynode_t *def = mg_ymap_get(sec->configs, "default");
        if (def && !mg_ynode_is_null(def)) {
            char w2[80];
            snprintf(w2, sizeof w2, "resilience4j.%s.configs.default", cb ? "circuitbreaker" : "timelimiter");
            if ((rc = r4j_resolve_map(ctx, sec, cb, def, w2, false, depth + 1, o))) return rc;
        }
    }
    if (mg_ynode_is_null(m)) return 0;
    if ((rc = mg_cfg_expect(ctx, where, m, MG_YNODE_MAP))) return rc;
    return cb ? r4j_cb_apply(ctx, where, m, o) : r4j_tl_apply(ctx, where, m, o);
}

static void r4j_init(r4j_t *o)
{
    memset(o, 0, sizeof *o);
    mg_breaker_cfg_default(&o->b);
    o->timeout_ms = 1000; /* Resilience4j TimeLimiterConfig default: 1 s */
}

/* The settings for breaker `name` (instance, else configs.default, else
 * Resilience4j's defaults). at: where to report a merged-config error. */
static int r4j_resolve(mg_cfg_ctx_t *ctx, const r4j_all_t *a, const char *name, const mg_ynode_t *at, r4j_t *o)
{
    r4j_init(o);
    int rc;
    for (int pass = 0; pass < 2; pass++) {
        const r4j_section_t *sec = pass == 0 ? &a->cb : &a->tl;
        const mg_ynode_t *inst = sec->instances ? mg_ymap_get(sec->instances, name) : NULL;
        char where[260];
        snprintf(where, sizeof where, "resilience4j.%s.instances.%.200s", pass == 0 ? "circuitbreaker" : "timelimiter",
                 name);
        if (inst) {
            rc = r4j_resolve_map(ctx, sec, pass == 0, inst, where, true, 0, o);
        } else if (sec->configs && mg_ymap_get(sec->configs, "default")) {
            const mg_ynode_t *def = mg_ymap_get(sec->configs, "default");
            snprintf(where, sizeof where, "resilience4j.%s.configs.default", pass == 0 ? "circuitbreaker" : "timelimiter");
            rc = r4j_resolve_map(ctx, sec, pass == 0, def, where, false, 0, o);
        } else {
            rc = 0;
        }
        if (rc) return rc;
    }
    unsigned kinds = (o->rec_set ? o->rec : K_ALL) & ~o->ign;
    set_breaker_kinds(&o->b, kinds & K_LOCAL);
    /* K_STATUS (statusCodes) is checked by the caller, which knows them */
    char why[160];
    if (mg_breaker_cfg_validate(&o->b, why, sizeof why) != 0)
        return mg_cfg_error(ctx, at, "circuit breaker '%.80s' (from resilience4j.circuitbreaker): %s", name, why);
    return 0;
}

/* Shape of resilience4j: {circuitbreaker: {configs, instances}, timelimiter: {configs, instances}} */
static int r4j_section(mg_cfg_ctx_t *ctx, const char *what, const mg_ynode_t *v, r4j_section_t *out)
{
    static const char *const keys[] = { "configs", "instances" };
    memset(out, 0, sizeof *out);
    if (mg_ynode_is_null(v)) return 0;
    int rc = mg_cfg_expect(ctx, what, v, MG_YNODE_MAP);
    if (rc) return rc;
    char where[80];
    snprintf(where, sizeof where, "resilience4j.%s", what);
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *k = v->pairs[i].key, *val = v->pairs[i].value;
        int ki = key_index(keys, 2, k->str);
        if (ki < 0) return unknown_r4j(ctx, k, where, keys, 2);
        if (mg_ynode_is_null(val)) continue;
        if ((rc = mg_cfg_expect(ctx, k->str, val, MG_YNODE_MAP))) return rc;
        if (ki == 0) out->configs = val;
        else out->instances = val;
    }
    return 0;
}

static int r4j_read(mg_cfg_ctx_t *ctx, const mg_ynode_t *v, r4j_all_t *a)
{
    static const char *const keys[] = { "circuitbreaker", "timelimiter" };
    memset(a, 0, sizeof *a);
    if (!v || mg_ynode_is_null(v)) return 0;
    int rc = mg_cfg_expect(ctx, "resilience4j", v, MG_YNODE_MAP);
    if (rc) return rc;
    for (size_t i = 0; i < v->npairs; i++) {
        const mg_ynode_t *k = v->pairs[i].key;
        int ki = key_index(keys, 2, k->str);
        if (ki < 0) {
            const char *sug = mg_suggest(k->str, k->len, keys, 2);
            if (sug) return mg_cfg_error(ctx, k, "unknown key '%.60s' in resilience4j (did you mean %s?)", k->str, sug);
            return mg_cfg_error(ctx, k, "unknown key '%.60s' in resilience4j: meshgate reads resilience4j.circuitbreaker "
                                        "and resilience4j.timelimiter (for the CircuitBreaker filter); use the Retry "
                                        "filter or the native retry/connection_pool blocks for the rest", k->str);
        }
        if ((rc = r4j_section(ctx, keys[ki], v->pairs[i].value, ki == 0 ? &a->cb : &a->tl))) return rc;
    }
    /* validate every config and instance, used or not */
    for (int pass = 0; pass < 2; pass++) {
        const r4j_section_t *sec = pass == 0 ? &a->cb : &a->tl;
        for (int which = 0; which < 2; which++) {
            const mg_ynode_t *m = which == 0 ? sec->configs : sec->instances;
            for (size_t i = 0; m && i < m->npairs; i++) {
                char where[260];
                r4j_t o;
                r4j_init(&o);
                snprintf(where, sizeof where, "resilience4j.%s.%s.%.200s", pass == 0 ? "circuitbreaker" : "timelimiter",
                         which == 0 ? "configs" : "instances", m->pairs[i].key->str);
                if ((rc = r4j_resolve_map(ctx, sec, pass == 0, m->pairs[i].value, where, which == 1, 0, &o))) return rc;
                char why[160];
                if (pass == 0 && mg_breaker_cfg_validate(&o.b, why, sizeof why) != 0)
                    return mg_cfg_error(ctx, m->pairs[i].key, "%s: %s", where, why);
            }
        }
    }
    return 0;
}

int mg_rcfg_resilience4j(mg_cfg_ctx_t *ctx, const mg_cfg_key_t *k, const mg_ynode_t *v, void *obj)
{
    r4j_all_t a;
    return r4j_read(ctx, v, &a); /* checked here, in top-level order; applied by mg_rcfg_finish */
}

/* ---- finish: Spring filters -> route fields, cross-route checks ---- */

static const mg_plugin_cfg_t *find_plugin(const mg_plugin_list_t *l, const char *name, size_t *count,
                                          const mg_plugin_cfg_t **second)
{
    const mg_plugin_cfg_t *first = NULL;
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->v[i].name, name)) continue;
        if (!first) first = &l->v[i];
        if (*count && !*second) *second = &l->v[i]; /* counts across calls (default-filters, then the route's) */
        (*count)++;
    }
    return first;
}

/* An error at a plugin's (or a route's) kept position. */
#define plugin_err(ctx, p, ...) mg_cfg_error_at((ctx), (p)->file, (p)->line, (p)->col, __VA_ARGS__)

static bool route_may_match(const mg_route_cfg_t *r, const char *path)
{
    bool any_pattern = false;
    char msg[64];
    mg_path_pattern_t *p;
    if (r->path) {
        any_pattern = true;
        if (mg_path_compile(r->path, &p, msg, sizeof msg) == 0) {
            bool m = mg_path_match(p, path, strlen(path), NULL);
            mg_path_free(p);
            if (m) return true;
        }
    }
    for (size_t i = 0; i < r->predicates.n; i++) {
        const mg_plugin_cfg_t *pc = &r->predicates.v[i];
        if (strcmp(pc->name, "Path")) continue;
        const mg_arg_cfg_t *a = mg_plugin_arg(pc, "patterns");
        for (size_t j = 0; a && j < a->nvalues; j++) {
            any_pattern = true;
            if (mg_path_compile(a->values[j], &p, msg, sizeof msg) == 0) {
                bool m = mg_path_match(p, path, strlen(path), NULL);
                mg_path_free(p);
                if (m) return true;
            }
        }
    }
    return !any_pattern; /* no Path predicate: any path may match */
}

static bool breaker_shareable(const mg_breaker_cfg_t *a, const mg_breaker_cfg_t *b)
{
    mg_breaker_cfg_t x = *a, y = *b;
    memset(x.fail_status, 0, sizeof x.fail_status); /* classification is per route */
    memset(y.fail_status, 0, sizeof y.fail_status);
    x.fail_on_connect = y.fail_on_connect;
    x.fail_on_timeout = y.fail_on_timeout;
    x.fail_on_reset = y.fail_on_reset;
    x.fail_on_protocol = y.fail_on_protocol;
    return mg_breaker_cfg_equal(&x, &y);
}

/* The CircuitBreaker (cb) and Retry (rt) filters that apply to r (either
 * may be NULL), resolved onto r's resilience fields. */
static int apply_filters(mg_cfg_ctx_t *ctx, const r4j_all_t *a, const mg_ynode_t *at, const mg_plugin_cfg_t *cb,
                         const mg_plugin_cfg_t *rt, mg_route_cfg_t *r)
{
    int rc;
    if (cb) {
        mg_cb_filter_args_t fa;
        if ((rc = mg_cb_filter_args(cb, &fa, ctx->err, ctx->errlen))) return rc;
        const char *name = fa.name ? fa.name : r->id;
        r4j_t o;
        if ((rc = r4j_resolve(ctx, a, name, at, &o))) return rc;
        unsigned kinds = (o.rec_set ? o.rec : K_ALL) & ~o.ign;
        if (fa.has_status_codes && !(kinds & K_STATUS)) {
            const mg_arg_cfg_t *sa = mg_plugin_arg(cb, "statusCodes");
            return plugin_err(ctx, &sa->pos, "CircuitBreaker '%s': statusCodes can never count as failures: "
                                             "recordExceptions/ignoreExceptions of its resilience4j config leave "
                                             "out CircuitBreakerStatusCodeException", name);
        }
        r->breaker = o.b;
        memcpy(r->breaker.fail_status, fa.fail_status, sizeof fa.fail_status);
        r->has_breaker = true;
        r->time_limit_ms = o.timeout_ms;
        r->resume_without_error = fa.resume_without_error;
        if (!(r->breaker_name = strdup(name))) return plugin_err(ctx, &cb->pos, "out of memory");
        if (fa.fallback_path && !(r->fallback_path = strdup(fa.fallback_path)))
            return plugin_err(ctx, &cb->pos, "out of memory");
    } else if (r->has_breaker && !r->breaker_name) {
        size_t len = strlen(r->id) + 7;
        if (!(r->breaker_name = malloc(len))) return plugin_err(ctx, &r->pos, "out of memory");
        snprintf(r->breaker_name, len, "route:%s", r->id);
    }
    if (rt) {
        if ((rc = mg_retry_filter_policy(rt, &r->retry, ctx->err, ctx->errlen))) return rc;
        r->has_retry = true;
    }
    return 0;
}

/* A CircuitBreaker or Retry default filter also applies to the discovery
 * locator's routes, which are made at run time (config/locator.c): resolve
 * it once here into a template route they copy. Without a name, Spring's
 * CircuitBreaker takes the route id: each locator route then gets its own
 * breaker (tmpl->breaker_name NULL), configured by resilience4j's defaults
 * (instances named after generated route ids are not looked up). */
static int locator_template(mg_cfg_ctx_t *ctx, const r4j_all_t *a, const mg_ynode_t *at)
{
    mg_config_t *cfg = ((load_t *)ctx->user)->cfg;
    mg_locator_cfg_t *lc = &cfg->discovery.locator;
    size_t n = 0;
    const mg_plugin_cfg_t *second = NULL;
    const mg_plugin_cfg_t *cb = find_plugin(&cfg->default_filters, "CircuitBreaker", &n, &second);
    const mg_plugin_cfg_t *rt = find_plugin(&cfg->default_filters, "Retry", &n, &second);
    if (!lc->enabled || (!cb && !rt))
        return 0;
    mg_route_cfg_t *t = calloc(1, sizeof *t);
    if (!t || !(t->id = strdup("discovery locator routes")))
        return free(t), plugin_err(ctx, &(cb ? cb : rt)->pos, "out of memory");
    t->pos = (cb ? cb : rt)->pos;
    lc->resil = t;
    int rc = apply_filters(ctx, a, at, cb, rt, t);
    if (rc) return rc;
    if (t->breaker_name && !strcmp(t->breaker_name, t->id)) {
        free(t->breaker_name); /* unnamed: one breaker per locator route */
        t->breaker_name = NULL;
    }
    if (t->fallback_path) {
        bool found = false;
        for (size_t j = 0; j < cfg->nroutes && !found; j++)
            found = route_may_match(&cfg->routes[j], t->fallback_path);
        if (!found)
            return plugin_err(ctx, &cb->pos, "discovery locator routes: circuit breaker fallback forward:%s matches "
                                             "no configured route; add one for it (e.g. a native route with path: %s "
                                             "and respond: {status: 503, body: ...})", t->fallback_path, t->fallback_path);
    }
    return 0;
}

int mg_rcfg_finish(mg_cfg_ctx_t *ctx)
{
    load_t *st = ctx->user;
    mg_config_t *cfg = st->cfg;
    const mg_ynode_t *r4j_node = st->root ? mg_ymap_get(st->root, "resilience4j") : NULL;
    r4j_all_t a;
    int rc = r4j_read(ctx, r4j_node, &a);
    if (rc) return rc;
    const mg_ynode_t *at = r4j_node ? r4j_node : st->root;

    for (size_t i = 0; i < cfg->nroutes; i++) {
        mg_route_cfg_t *r = &cfg->routes[i];
        size_t ncb = 0, nrt = 0;
        const mg_plugin_cfg_t *second = NULL;
        const mg_plugin_cfg_t *cb = find_plugin(&cfg->default_filters, "CircuitBreaker", &ncb, &second);
        const mg_plugin_cfg_t *cb2 = find_plugin(&r->filters, "CircuitBreaker", &ncb, &second);
        if (!cb) cb = cb2;
        const mg_plugin_cfg_t *rsecond = NULL;
        const mg_plugin_cfg_t *rt = find_plugin(&cfg->default_filters, "Retry", &nrt, &rsecond);
        const mg_plugin_cfg_t *rt2 = find_plugin(&r->filters, "Retry", &nrt, &rsecond);
        if (!rt) rt = rt2;
        if (ncb > 1)
            return plugin_err(ctx, &second->pos, "route '%s': one CircuitBreaker per route (this one is the second, "
                                                 "counting default-filters)", r->id);
        if (nrt > 1)
            return plugin_err(ctx, &rsecond->pos, "route '%s': one Retry filter per route (this one is the second, "
                                                  "counting default-filters)", r->id);
        if (r->respond && (cb || rt || r->has_breaker || r->has_retry))
            return plugin_err(ctx, cb ? &cb->pos : rt ? &rt->pos : &r->pos,
                              "route '%s' answers with respond: and has no upstream, so it takes no circuit breaker or "
                              "retry", r->id);
        if (cb && r->has_breaker)
            return plugin_err(ctx, &cb->pos, "route '%s' has both a CircuitBreaker filter and a circuit_breaker: "
                                             "block; keep one", r->id);
        if (rt && r->has_retry)
            return plugin_err(ctx, &rt->pos, "route '%s' has both a Retry filter and a retry: block; keep one", r->id);
        if ((rc = apply_filters(ctx, &a, at, cb, rt, r))) return rc;
    }

    /* shared breaker names must agree; fallbacks must reach a route */
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const mg_route_cfg_t *r = &cfg->routes[i];
        if (r->has_breaker) {
            if (!strncmp(r->breaker_name, "cluster:", 8))
                return plugin_err(ctx, &r->pos, "route '%s': breaker name '%s' is reserved for cluster breakers", r->id,
                                  r->breaker_name);
            for (size_t j = 0; j < i; j++) {
                const mg_route_cfg_t *q = &cfg->routes[j];
                if (q->has_breaker && !strcmp(q->breaker_name, r->breaker_name) &&
                    !breaker_shareable(&q->breaker, &r->breaker))
                    return plugin_err(ctx, &r->pos, "route '%s' shares circuit breaker '%s' with route '%s' but with "
                                                    "different settings (one breaker, one config)", r->id,
                                      r->breaker_name, q->id);
            }
        }
        if (r->fallback_path) {
            /* A CircuitBreaker in default-filters also guards the fallback
             * route itself, whose fallback is then itself (Spring loads
             * that; meshgate falls back once, so it cannot loop). */
            size_t ndef = 0;
            const mg_plugin_cfg_t *dsecond = NULL;
            bool self_ok = find_plugin(&cfg->default_filters, "CircuitBreaker", &ndef, &dsecond) != NULL;
            bool found = false;
            for (size_t j = 0; j < cfg->nroutes && !found; j++)
                found = (j != i || self_ok) && route_may_match(&cfg->routes[j], r->fallback_path);
            if (!found)
                return plugin_err(ctx, &r->pos, "route '%s': circuit breaker fallback forward:%s matches no other route; "
                                                "add one for it (e.g. a native route with path: %s and respond: "
                                                "{status: 503, body: ...})", r->id, r->fallback_path, r->fallback_path);
        }
    }
    return locator_template(ctx, &a, at);
}

/* ---- print ---- */

bool mg_rcfg_print_skip(const mg_plugin_cfg_t *pc) { return !strcmp(pc->name, "CircuitBreaker"); }

static void print_breaker(FILE *f, const mg_breaker_cfg_t *b, const char *ind)
{
    if (b->mode == MG_CB_MODE_CONSECUTIVE) {
        fprintf(f, "%sfailure_threshold: %u\n%stimeout: %u\n%sreset_timeout: %u\n", ind, b->failure_threshold, ind,
                b->call_timeout_ms, ind, b->wait_open_ms);
    } else {
        fprintf(f, "%ssliding_window_type: %s\n%ssliding_window_size: %u\n%sminimum_calls: %u\n", ind,
                b->window_type == MG_CB_TIME_BASED ? "time_based" : "count_based", ind, b->window_size, ind,
                b->minimum_calls);
        fprintf(f, "%sfailure_rate_threshold: %g\n%sslow_call_rate_threshold: %g\n%sslow_call_duration: %u\n", ind,
                (double)b->failure_rate_threshold, ind, (double)b->slow_rate_threshold, ind, b->slow_call_duration_ms);
        fprintf(f, "%swait_in_open: %u\n%shalf_open_calls: %u\n%smax_wait_in_half_open: %u\n", ind, b->wait_open_ms,
                ind, b->half_open_permits, ind, b->max_wait_half_open_ms);
    }
    fprintf(f, "%sautomatic_half_open: %s\n%sfailure_statuses: ", ind, b->automatic_half_open ? "true" : "false", ind);
    print_statuses(f, bit_fail, b);
    fprintf(f, "\n%sfailure_kinds: [", ind);
    unsigned k = breaker_kinds(b);
    for (int i = 0, n = 0; kind_names[i]; i++)
        if (k & (1u << i)) fprintf(f, "%s%s", n++ ? ", " : "", kind_names[i]);
    fputs("]\n", f);
}

void mg_rcfg_print_cluster(FILE *f, const mg_cluster_cfg_t *c)
{
    const mg_bulkhead_cfg_t *bh = &c->bulkhead;
    fprintf(f, "    connection_pool:\n      max_connections: %u\n      max_requests: %u\n      max_pending: %u\n"
               "      max_requests_per_connection: %u\n",
            bh->max_connections, bh->max_requests, bh->max_pending, bh->max_requests_per_connection);
    fprintf(f, "    retry_budget:\n      percent: %u\n      min_concurrency: %u\n", c->retry_budget.budget_percent,
            c->retry_budget.min_concurrency);
    if (c->has_outlier) {
        const mg_outlier_cfg_t *o = &c->outlier;
        fprintf(f, "    outlier_detection:\n      consecutive_5xx: %u\n      consecutive_gateway_errors: %u\n"
                   "      interval: %u\n      base_ejection_time: %u\n      max_ejection_time: %u\n"
                   "      max_ejection_percent: %u\n      min_health_percent: %u\n",
                o->consecutive_5xx, o->consecutive_gateway_errors, o->interval_ms, o->base_ejection_time_ms,
                o->max_ejection_time_ms, o->max_ejection_percent, o->min_health_percent);
    }
    if (c->has_breaker) {
        fputs("    circuit_breaker:\n", f);
        print_breaker(f, &c->breaker, "      ");
    }
    if (c->has_health) {
        fputs("    health_check:\n      path: ", f);
        mg_cfg_print_str(f, c->health.path);
        fprintf(f, "\n      interval: %u\n      timeout: %u\n      healthy_threshold: %u\n      unhealthy_threshold: %u\n"
                   "      expected_statuses: ",
                c->health.interval_ms, c->health.timeout_ms, c->health.healthy_threshold, c->health.unhealthy_threshold);
        print_statuses(f, bit_health, c);
        fputc('\n', f);
    }
}

static bool has_plugin(const mg_plugin_list_t *l, const char *name)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].name, name)) return true;
    return false;
}

void mg_rcfg_print_route(FILE *f, const mg_config_t *cfg, const mg_route_cfg_t *r)
{
    if (r->respond) {
        fprintf(f, "    respond:\n      status: %d\n", r->respond_status);
        if (r->nrespond_headers) {
            fputs("      headers:\n", f);
            for (size_t i = 0; i < r->nrespond_headers; i++) {
                const char *line = r->respond_headers[i], *colon = strchr(line, ':');
                char name[256];
                snprintf(name, sizeof name, "%.*s", colon ? (int)(colon - line) : 0, line);
                fputs("        ", f);
                mg_cfg_print_str(f, name);
                fputs(": ", f);
                mg_cfg_print_str(f, colon ? colon + 2 : "");
                fputc('\n', f);
            }
        }
        if (r->respond_body) {
            fputs("      body: ", f);
            mg_cfg_print_str(f, r->respond_body);
            fputc('\n', f);
        }
    }
    if (r->has_breaker) {
        fputs("    circuit_breaker:\n      name: ", f);
        mg_cfg_print_str(f, r->breaker_name);
        fputc('\n', f);
        print_breaker(f, &r->breaker, "      ");
        if (r->fallback_path) {
            fputs("      fallback: ", f);
            mg_cfg_print_str(f, r->fallback_path);
            fputc('\n', f);
        }
        fprintf(f, "      time_limit: %u\n      resume_without_error: %s\n", r->time_limit_ms,
                r->resume_without_error ? "true" : "false");
    }
    /* a Spring Retry filter is written back as the filter itself (lossless) */
    if (r->has_retry && !has_plugin(&r->filters, "Retry") && !has_plugin(&cfg->default_filters, "Retry")) {
        const mg_retry_policy_t *p = &r->retry;
        fprintf(f, "    retry:\n      attempts: %u\n", p->max_retries);
        if (p->per_try_timeout_ms) fprintf(f, "      per_try_timeout: %u\n", p->per_try_timeout_ms);
        fputs("      retry_on: [", f);
        int n = 0;
        uint32_t local = MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET | MG_RETRY_TIMEOUT;
        bool local_done = false;
        if (p->on & MG_RETRY_STATUS_5XX) fprintf(f, "%s\"5xx\"", n++ ? ", " : ""), local_done = true;
        if (p->on & MG_RETRY_STATUS_GATEWAY) fprintf(f, "%s\"gateway-error\"", n++ ? ", " : ""), local_done = true;
        if (!local_done && (p->on & local) == local) fprintf(f, "%s\"reset\"", n++ ? ", " : "");
        else if (!local_done) {
            if (p->on & MG_RETRY_CONNECT_FAILURE) fprintf(f, "%s\"connect-failure\"", n++ ? ", " : "");
            if (p->on & MG_RETRY_RESET) fprintf(f, "%s\"refused-stream\"", n++ ? ", " : "");
        }
        if (p->on & MG_RETRY_STATUS_409) fprintf(f, "%s\"retriable-4xx\"", n++ ? ", " : "");
        for (int s = 100; s <= 599; s++)
            if (bit_retry(p, s)) fprintf(f, "%s\"%d\"", n++ ? ", " : "", s);
        fputs("]\n      methods: [", f);
        n = 0;
        for (int m = MG_METHOD_GET; m <= MG_METHOD_PATCH; m++)
            if (p->methods & (1u << m)) fprintf(f, "%s%s", n++ ? ", " : "", mg_method_name((mg_method_t)m));
        fputs("]\n", f);
        if (p->backoff == MG_BACKOFF_JITTER) fprintf(f, "      backoff:\n        base: %u\n        max: %u\n", p->base_ms, p->max_ms);
    }
}
