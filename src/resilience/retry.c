/* retry: retry decisions, backoff and the retry budget. See retry.h. */
#include "resilience/retry.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "resilience/res_int.h"

#define RLX memory_order_relaxed

#define M(x) (1u << (x))
#define IDEMPOTENT                                                                                       \
    (M(MG_METHOD_GET) | M(MG_METHOD_HEAD) | M(MG_METHOD_OPTIONS) | M(MG_METHOD_TRACE) | M(MG_METHOD_PUT) | \
     M(MG_METHOD_DELETE))
#define LOCAL_FAILURES (MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET | MG_RETRY_TIMEOUT)

void mg_retry_policy_default(mg_retry_policy_t *p)
{
    memset(p, 0, sizeof *p);
    p->max_retries = 1;
    p->on = MG_RETRY_STATUS_GATEWAY | LOCAL_FAILURES;
    p->methods = IDEMPOTENT;
    p->backoff = MG_BACKOFF_JITTER;
    p->base_ms = 25;
    p->max_ms = 250;
}

void mg_retry_policy_spring(mg_retry_policy_t *p)
{
    memset(p, 0, sizeof *p);
    p->max_retries = 3;
    p->on = MG_RETRY_STATUS_SERIES | MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET | MG_RETRY_TIMEOUT;
    p->series = 1u << 5; /* SERVER_ERROR */
    p->methods = M(MG_METHOD_GET);
    p->backoff = MG_BACKOFF_NONE;
}

void mg_retry_spring_backoff(mg_retry_policy_t *p)
{
    p->backoff = MG_BACKOFF_EXPONENTIAL;
    p->base_ms = 5;
    p->max_ms = 0;
    p->factor = 2;
    p->based_on_previous = true;
}

int mg_retry_add_status(mg_retry_policy_t *p, int status)
{
    if (status < 100 || status > 599)
        return MG_ECONFIG;
    p->statuses[status / 64] |= (uint64_t)1 << (status % 64);
    p->on |= MG_RETRY_STATUS_LISTED;
    return 0;
}

static int parse_status(const char *s)
{
    char *end;
    long v = strtol(s, &end, 10);
    return (end != s && *end == 0) ? (int)v : -1;
}

int mg_retry_add_token(mg_retry_policy_t *p, const char *tok)
{
    static const struct {
        const char *name;
        uint32_t bits;
    } toks[] = {
        /* Envoy: 5xx, gateway-error and reset also cover "no response at all". */
        { "5xx", MG_RETRY_STATUS_5XX | LOCAL_FAILURES },
        { "gateway-error", MG_RETRY_STATUS_GATEWAY | LOCAL_FAILURES },
        { "reset", LOCAL_FAILURES },
        { "refused-stream", MG_RETRY_RESET },
        { "connect-failure", MG_RETRY_CONNECT_FAILURE },
        { "retriable-4xx", MG_RETRY_STATUS_409 },
        { "retriable-status-codes", MG_RETRY_STATUS_LISTED },
    };
    for (size_t i = 0; i < sizeof toks / sizeof toks[0]; i++)
        if (strcasecmp(tok, toks[i].name) == 0) {
            p->on |= toks[i].bits;
            return 0;
        }
    int st = parse_status(tok);
    return st >= 0 ? mg_retry_add_status(p, st) : MG_ECONFIG;
}

/* Spring's HttpStatus names for the codes a retry list plausibly holds. */
static const struct {
    const char *name;
    int code;
} http_status_names[] = {
    { "CONTINUE", 100 }, { "OK", 200 }, { "CREATED", 201 }, { "ACCEPTED", 202 }, { "NO_CONTENT", 204 },
    { "MOVED_PERMANENTLY", 301 }, { "FOUND", 302 }, { "SEE_OTHER", 303 }, { "NOT_MODIFIED", 304 },
    { "TEMPORARY_REDIRECT", 307 }, { "PERMANENT_REDIRECT", 308 }, { "BAD_REQUEST", 400 },
    { "UNAUTHORIZED", 401 }, { "PAYMENT_REQUIRED", 402 }, { "FORBIDDEN", 403 }, { "NOT_FOUND", 404 },
    { "METHOD_NOT_ALLOWED", 405 }, { "NOT_ACCEPTABLE", 406 }, { "PROXY_AUTHENTICATION_REQUIRED", 407 },
    { "REQUEST_TIMEOUT", 408 }, { "CONFLICT", 409 }, { "GONE", 410 }, { "LENGTH_REQUIRED", 411 },
    { "PRECONDITION_FAILED", 412 }, { "PAYLOAD_TOO_LARGE", 413 }, { "URI_TOO_LONG", 414 },
    { "UNSUPPORTED_MEDIA_TYPE", 415 }, { "TOO_EARLY", 425 }, { "UPGRADE_REQUIRED", 426 },
    { "PRECONDITION_REQUIRED", 428 }, { "TOO_MANY_REQUESTS", 429 },
    { "REQUEST_HEADER_FIELDS_TOO_LARGE", 431 }, { "INTERNAL_SERVER_ERROR", 500 }, { "NOT_IMPLEMENTED", 501 },
    { "BAD_GATEWAY", 502 }, { "SERVICE_UNAVAILABLE", 503 }, { "GATEWAY_TIMEOUT", 504 },
    { "HTTP_VERSION_NOT_SUPPORTED", 505 }, { "VARIANT_ALSO_NEGOTIATES", 506 },
    { "INSUFFICIENT_STORAGE", 507 }, { "LOOP_DETECTED", 508 }, { "BANDWIDTH_LIMIT_EXCEEDED", 509 },
    { "NOT_EXTENDED", 510 }, { "NETWORK_AUTHENTICATION_REQUIRED", 511 },
};

int mg_retry_add_spring_status(mg_retry_policy_t *p, const char *name)
{
    int st = parse_status(name);
    if (st >= 0)
        return mg_retry_add_status(p, st);
    for (size_t i = 0; i < sizeof http_status_names / sizeof http_status_names[0]; i++)
        if (strcasecmp(name, http_status_names[i].name) == 0)
            return mg_retry_add_status(p, http_status_names[i].code);
    return MG_ECONFIG;
}

int mg_retry_add_spring_series(mg_retry_policy_t *p, const char *name)
{
    static const char *const series[] = { "INFORMATIONAL", "SUCCESSFUL", "REDIRECTION", "CLIENT_ERROR",
                                          "SERVER_ERROR" };
    for (int i = 0; i < 5; i++)
        if (strcasecmp(name, series[i]) == 0) {
            p->series |= (uint8_t)(1u << (i + 1));
            p->on |= MG_RETRY_STATUS_SERIES;
            return 0;
        }
    return MG_ECONFIG;
}

int mg_retry_add_spring_exception(mg_retry_policy_t *p, const char *cls)
{
    static const struct {
        const char *name; /* simple class name */
        uint32_t bits;
    } ex[] = {
        { "IOException", MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET },
        { "TimeoutException", MG_RETRY_TIMEOUT },
        { "ReadTimeoutException", MG_RETRY_TIMEOUT },
        { "ConnectException", MG_RETRY_CONNECT_FAILURE },
        { "ConnectTimeoutException", MG_RETRY_CONNECT_FAILURE },
        { "UnknownHostException", MG_RETRY_CONNECT_FAILURE },
        { "NoRouteToHostException", MG_RETRY_CONNECT_FAILURE },
        { "PrematureCloseException", MG_RETRY_RESET },
        { "SocketException", MG_RETRY_RESET | MG_RETRY_CONNECT_FAILURE },
        { "Exception", LOCAL_FAILURES },
        { "Throwable", LOCAL_FAILURES },
    };
    const char *simple = strrchr(cls, '.');
    simple = simple ? simple + 1 : cls;
    simple = strrchr(simple, '$') ? strrchr(simple, '$') + 1 : simple;
    for (size_t i = 0; i < sizeof ex / sizeof ex[0]; i++)
        if (strcmp(simple, ex[i].name) == 0) {
            p->on |= ex[i].bits;
            return 0;
        }
    return MG_ECONFIG;
}

int mg_retry_add_method(mg_retry_policy_t *p, const char *name)
{
    for (int m = MG_METHOD_GET; m <= MG_METHOD_PATCH; m++) {
        const char *n = mg_method_name((mg_method_t)m);
        if (n && strcasecmp(n, name) == 0) {
            p->methods |= M(m);
            return 0;
        }
    }
    return MG_ECONFIG;
}

int mg_retry_policy_validate(const mg_retry_policy_t *p, char *err, size_t errlen)
{
    const char *why = NULL;
    if (p->max_retries > 100)
        why = "retries must be 0..100";
    else if (p->backoff == MG_BACKOFF_JITTER && (p->base_ms < 1 || p->max_ms < p->base_ms))
        why = "retry backoff needs base >= 1 ms and max >= base";
    else if (p->backoff == MG_BACKOFF_EXPONENTIAL && (p->base_ms < 1 || p->factor < 1))
        why = "retry backoff needs firstBackoff >= 1 ms and factor >= 1";
    else if (p->backoff == MG_BACKOFF_EXPONENTIAL && p->max_ms && p->max_ms < p->base_ms)
        why = "retry backoff maxBackoff must be >= firstBackoff";
    if (why) {
        if (err && errlen)
            snprintf(err, errlen, "%s", why);
        return MG_ECONFIG;
    }
    return 0;
}

/* ---- decisions ---- */

static bool status_retriable(const mg_retry_policy_t *p, int st)
{
    uint32_t on = p->on;
    if ((on & MG_RETRY_STATUS_5XX) && st >= 500 && st <= 599)
        return true;
    if ((on & MG_RETRY_STATUS_GATEWAY) && st >= 502 && st <= 504)
        return true;
    if ((on & MG_RETRY_STATUS_409) && st == 409)
        return true;
    if ((on & MG_RETRY_STATUS_LISTED) && st >= 0 && st < 640 && ((p->statuses[st / 64] >> (st % 64)) & 1))
        return true;
    if ((on & MG_RETRY_STATUS_SERIES) && st >= 100 && st <= 599 && ((p->series >> (st / 100)) & 1))
        return true;
    return false;
}

bool mg_retry_should(const mg_retry_policy_t *p, uint32_t attempts, mg_up_result_t r, int status,
                     mg_method_t method, bool response_started)
{
    if (response_started || attempts > p->max_retries || !((p->methods >> method) & 1))
        return false;
    switch (r) {
    case MG_UP_RESPONSE: return status_retriable(p, status);
    case MG_UP_CONNECT_FAILURE: return p->on & MG_RETRY_CONNECT_FAILURE;
    case MG_UP_RESET:
    case MG_UP_PROTOCOL: return p->on & MG_RETRY_RESET;
    case MG_UP_TIMEOUT: return p->on & MG_RETRY_TIMEOUT;
    default: return false; /* cancelled: nobody to answer */
    }
}

uint32_t mg_retry_backoff(const mg_retry_policy_t *p, uint32_t retry, uint32_t prev_ms, uint64_t rnd)
{
    if (retry < 1)
        retry = 1;
    switch (p->backoff) {
    case MG_BACKOFF_JITTER: {
        uint64_t iv = p->base_ms;
        for (uint32_t i = 1; i < retry && iv < p->max_ms; i++)
            iv *= 2;
        if (iv > p->max_ms)
            iv = p->max_ms;
        return iv ? (uint32_t)(rnd % iv) : 0;
    }
    case MG_BACKOFF_EXPONENTIAL: {
        uint64_t cap = p->max_ms ? p->max_ms : UINT32_MAX;
        uint64_t d;
        if (p->based_on_previous) {
            d = (uint64_t)prev_ms * p->factor;
        } else {
            d = p->base_ms;
            for (uint32_t i = 1; i < retry && d < cap; i++)
                d *= p->factor;
        }
        if (d < p->base_ms)
            d = p->base_ms;
        return (uint32_t)(d > cap ? cap : d);
    }
    default:
        return 0;
    }
}

uint64_t mg_retry_try_timeout(const mg_retry_policy_t *p, uint64_t now_ms, uint64_t route_deadline_ms)
{
    uint64_t t = p->per_try_timeout_ms ? p->per_try_timeout_ms : UINT64_MAX;
    if (route_deadline_ms) {
        if (now_ms >= route_deadline_ms)
            return 0;
        if (route_deadline_ms - now_ms < t)
            t = route_deadline_ms - now_ms;
    }
    return t;
}

/* ---- budget ---- */

typedef struct {
    _Atomic uint64_t granted, overflow;
    char pad[MG_CACHELINE - 2 * sizeof(uint64_t)];
} bslot_t;

struct mg_retry_budget {
    _Atomic uint32_t percent, min;
    uint32_t nslots;
    bslot_t *slots;
    _Alignas(MG_CACHELINE) _Atomic uint32_t active;
};

void mg_retry_budget_cfg_default(mg_retry_budget_cfg_t *c)
{
    c->budget_percent = 20;
    c->min_concurrency = 3;
}

static uint32_t budget_max(uint32_t pct, uint32_t min, uint32_t active)
{
    uint64_t m = (uint64_t)active * pct / 100;
    return m > min ? (m > UINT32_MAX ? UINT32_MAX : (uint32_t)m) : min;
}

uint32_t mg_retry_budget_max(const mg_retry_budget_cfg_t *c, uint32_t active)
{
    return budget_max(c->budget_percent, c->min_concurrency, active);
}

mg_retry_budget_t *mg_retry_budget_new(const mg_retry_budget_cfg_t *c, uint32_t nslots)
{
    if (nslots == 0)
        return NULL;
    mg_retry_budget_t *b = mg_aligned_calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->slots = mg_aligned_calloc(nslots, sizeof *b->slots);
    if (!b->slots) {
        free(b);
        return NULL;
    }
    b->nslots = nslots;
    mg_retry_budget_update(b, c);
    return b;
}

void mg_retry_budget_free(mg_retry_budget_t *b)
{
    if (!b)
        return;
    free(b->slots);
    free(b);
}

void mg_retry_budget_update(mg_retry_budget_t *b, const mg_retry_budget_cfg_t *c)
{
    atomic_store_explicit(&b->percent, c->budget_percent, RLX);
    atomic_store_explicit(&b->min, c->min_concurrency, RLX);
}

bool mg_retry_budget_acquire(mg_retry_budget_t *b, uint32_t slot, uint32_t active_requests)
{
    bslot_t *s = &b->slots[mg_slot_clamp(slot, b->nslots)];
    uint32_t max = budget_max(atomic_load_explicit(&b->percent, RLX), atomic_load_explicit(&b->min, RLX),
                              active_requests);
    /* Envoy: allowed while the retries in flight are fewer than max. */
    uint32_t n = atomic_fetch_add_explicit(&b->active, 1, RLX);
    if (n >= max) {
        atomic_fetch_sub_explicit(&b->active, 1, RLX);
        mg_ctr_inc(&s->overflow);
        return false;
    }
    mg_ctr_inc(&s->granted);
    return true;
}

void mg_retry_budget_release(mg_retry_budget_t *b)
{
    atomic_fetch_sub_explicit(&b->active, 1, RLX);
}

void mg_retry_budget_stats(const mg_retry_budget_t *b, mg_retry_budget_stats_t *out)
{
    memset(out, 0, sizeof *out);
    out->active_retries = atomic_load_explicit(&((mg_retry_budget_t *)b)->active, RLX);
    for (uint32_t i = 0; i < b->nslots; i++) {
        out->granted += mg_ctr_get(&b->slots[i].granted);
        out->overflow += mg_ctr_get(&b->slots[i].overflow);
    }
}
