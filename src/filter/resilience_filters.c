/* resilience_filters: the CircuitBreaker and Retry filter entries. See
 * resilience_filters.h. Argument semantics follow Spring Cloud Gateway's
 * SpringCloudCircuitBreakerFilterFactory and RetryGatewayFilterFactory:
 *
 *   CircuitBreaker: shortcut "CircuitBreaker=NAME"; args name, fallbackUri
 *     (only forward:/path, as Spring), statusCodes (codes "500" or
 *     HttpStatus names "INTERNAL_SERVER_ERROR"; Spring silently drops
 *     anything else, e.g. a series, meshgate refuses it), resumeWithoutError.
 *   Retry: shortcut "Retry=retries,statuses,methods,firstBackoff,maxBackoff,
 *     factor,basedOnPreviousValue" (Spring's shortcutFieldOrder); args
 *     retries (3, must be > 0), statuses, series (SERVER_ERROR), methods
 *     (GET), exceptions (IOException, TimeoutException), backoff {firstBackoff
 *     5ms, maxBackoff none, factor 2, basedOnPreviousValue true} (no backoff
 *     unless the block is given). Setting a list replaces Spring's default
 *     for that list only (statuses do not clear the SERVER_ERROR series). */
#include "filter/resilience_filters.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/err.h"
#include "filter/filters_int.h"

/* ---- durations ---- */

static int iso_duration(const char *s, uint64_t *out_ms)
{
    /* [+]P[nD][T[nH][nM][n[.n]S]] */
    const char *p = s;
    if (*p == '+') p++;
    if (*p != 'P' && *p != 'p') return -1;
    p++;
    bool in_time = false, any = false;
    double total_ms = 0;
    while (*p) {
        if (*p == 'T' || *p == 't') {
            if (in_time) return -1;
            in_time = true;
            p++;
            continue;
        }
        char *end;
        if (!isdigit((unsigned char)*p)) return -1;
        double x = strtod(p, &end);
        if (end == p) return -1;
        bool frac = memchr(p, '.', (size_t)(end - p)) != NULL;
        char u = (char)toupper((unsigned char)*end);
        double mul;
        if (!in_time && u == 'D') mul = 86400000.0;
        else if (in_time && u == 'H') mul = 3600000.0;
        else if (in_time && u == 'M') mul = 60000.0;
        else if (in_time && u == 'S') mul = 1000.0;
        else return -1;
        if (frac && u != 'S') return -1;
        total_ms += x * mul;
        any = true;
        p = end + 1;
    }
    if (!any || total_ms > 4294967295.0) return -1;
    uint64_t ms = (uint64_t)total_ms;
    if ((double)ms < total_ms) ms++; /* round sub-ms up */
    *out_ms = ms;
    return 0;
}

int mg_spring_duration_ms(const char *s, uint64_t *out_ms)
{
    if (!s) return -1;
    while (isspace((unsigned char)*s)) s++;
    if (*s == 'P' || *s == 'p' || ((s[0] == '+') && (s[1] == 'P' || s[1] == 'p'))) return iso_duration(s, out_ms);
    const char *p = s + (*s == '+');
    size_t nd = strspn(p, "0123456789");
    if (nd == 0 || nd > 12) return -1;
    uint64_t x = strtoull(p, NULL, 10);
    const char *u = p + nd;
    uint64_t ms;
    if (!*u || !strcasecmp(u, "ms")) ms = x;
    else if (!strcasecmp(u, "ns")) ms = (x + 999999) / 1000000;
    else if (!strcasecmp(u, "us")) ms = (x + 999) / 1000;
    else if (!strcasecmp(u, "s")) ms = x * 1000;
    else if (!strcasecmp(u, "m")) ms = x * 60000;
    else if (!strcasecmp(u, "h")) ms = x * 3600000;
    else if (!strcasecmp(u, "d")) ms = x * 86400000;
    else return -1;
    if (ms > UINT32_MAX) return -1;
    *out_ms = ms;
    return 0;
}

/* ---- CircuitBreaker ---- */

int mg_cb_filter_args(const mg_plugin_cfg_t *pc, mg_cb_filter_args_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *name = mg_plugin_str(pc, "name", NULL);
    if (name && !*name) name = NULL; /* Spring: empty name -> the route id */
    if (name && strlen(name) > 200)
        return mg_plugin_arg_error(err, errlen, pc, "name", "CircuitBreaker: name is too long (at most 200 characters)");
    out->name = name;
    const char *fb = mg_plugin_str(pc, "fallbackUri", NULL);
    if (fb) {
        if (!strncmp(fb, "forward:", 8)) {
            const char *path = fb + 8;
            if (path[0] != '/' || strpbrk(path, "?# \t"))
                return mg_plugin_arg_error(err, errlen, pc, "fallbackUri",
                                           "CircuitBreaker: fallbackUri: expected forward:/path (a path with no "
                                           "query), got '%.80s'", fb);
            out->fallback_path = path;
        } else {
            return mg_plugin_arg_error(err, errlen, pc, "fallbackUri",
                                       "CircuitBreaker: fallbackUri: only forward:/path is supported (as in Spring "
                                       "Cloud Gateway), got '%.80s'; to fall back to another service, add a route "
                                       "for the path and forward to it", fb);
        }
    }
    const char *rwe = mg_plugin_str(pc, "resumeWithoutError", NULL);
    if (rwe && mg_parse_bool(rwe, &out->resume_without_error) != 0)
        return mg_plugin_arg_error(err, errlen, pc, "resumeWithoutError",
                                   "CircuitBreaker: resumeWithoutError: expected true or false, got '%.40s'", rwe);
    const mg_arg_cfg_t *sc = mg_plugin_arg(pc, "statusCodes");
    for (size_t i = 0; sc && i < sc->nvalues; i++) {
        char up[64];
        snprintf(up, sizeof up, "%s", sc->values[i]);
        for (char *q = up; *q; q++) *q = (char)toupper((unsigned char)*q);
        int code = mg_http_status_parse(up);
        if (code < 0)
            return mg_plugin_error(err, errlen, &sc->pos,
                                   "CircuitBreaker: statusCodes: expected a status code 100..599 or a name like "
                                   "INTERNAL_SERVER_ERROR, got '%.40s' (Spring ignores anything else, e.g. a series)",
                                   sc->values[i]);
        out->fail_status[code / 64] |= (uint64_t)1 << (code % 64);
        out->has_status_codes = true;
    }
    return 0;
}

static int cb_compile(const mg_plugin_cfg_t *pc, void **state, char *err, size_t errlen)
{
    mg_cb_filter_args_t a;
    *state = NULL;
    return mg_cb_filter_args(pc, &a, err, errlen);
}

const mg_plugin_spec_t mg_f_circuit_breaker = {
    .name = "CircuitBreaker",
    .kind = MG_PLUGIN_FILTER,
    .args = { { "name", 0 }, { "fallbackUri", 0 }, { "statusCodes", MG_ARG_LIST }, { "resumeWithoutError", 0 } },
    .shortcut = MG_SHORTCUT_FIELDS,
    .compile = cb_compile,
};

/* ---- Retry ---- */

static int list_each(const mg_plugin_cfg_t *pc, const char *key, mg_retry_policy_t *p,
                     int (*add)(mg_retry_policy_t *, const char *), const char *what, char *err, size_t errlen)
{
    const mg_arg_cfg_t *a = mg_plugin_arg(pc, key);
    for (size_t i = 0; a && i < a->nvalues; i++)
        if (add(p, a->values[i]) != 0)
            return mg_plugin_error(err, errlen, &a->pos, "Retry: %s: unknown %s '%.60s'", key, what, a->values[i]);
    return 0;
}

static int add_method(mg_retry_policy_t *p, const char *s) { return mg_retry_add_method(p, s); }
static int add_series(mg_retry_policy_t *p, const char *s) { return mg_retry_add_spring_series(p, s); }
static int add_exception(mg_retry_policy_t *p, const char *s) { return mg_retry_add_spring_exception(p, s); }
static int add_status(mg_retry_policy_t *p, const char *s) { return mg_retry_add_spring_status(p, s); }

int mg_retry_filter_policy(const mg_plugin_cfg_t *pc, mg_retry_policy_t *p, char *err, size_t errlen)
{
    mg_retry_policy_spring(p);
    int rc;
    const char *s = mg_plugin_str(pc, "retries", NULL);
    if (s) {
        size_t nd = strspn(s, "0123456789");
        long x = nd && nd <= 4 && !s[nd] ? atol(s) : -1;
        if (x < 1 || x > 100)
            return mg_plugin_arg_error(err, errlen, pc, "retries", "Retry: retries: expected an integer 1..100 (Spring "
                                                                   "requires retries > 0), got '%.40s'", s);
        p->max_retries = (uint32_t)x;
    }
    /* A list given replaces Spring's default for that list. */
    if (mg_plugin_arg(pc, "methods")) p->methods = 0;
    if ((rc = list_each(pc, "methods", p, add_method, "method", err, errlen))) return rc;
    if ((rc = list_each(pc, "statuses", p, add_status, "status", err, errlen))) return rc;
    if (mg_plugin_arg(pc, "series")) {
        p->series = 0;
        p->on &= ~(uint32_t)MG_RETRY_STATUS_SERIES;
    }
    if ((rc = list_each(pc, "series", p, add_series, "series (expected INFORMATIONAL, SUCCESSFUL, REDIRECTION, "
                                                     "CLIENT_ERROR or SERVER_ERROR)", err, errlen)))
        return rc;
    if (mg_plugin_arg(pc, "exceptions"))
        p->on &= ~(uint32_t)(MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET | MG_RETRY_TIMEOUT);
    if ((rc = list_each(pc, "exceptions", p, add_exception, "exception class (meshgate knows IOException, "
                                                            "TimeoutException, ConnectException, ...)", err, errlen)))
        return rc;
    if (!p->methods) return mg_plugin_error(err, errlen, &pc->pos, "Retry: methods may not be empty");
    if (!(p->on & (MG_RETRY_STATUS_LISTED | MG_RETRY_STATUS_SERIES | MG_RETRY_CONNECT_FAILURE | MG_RETRY_RESET |
                   MG_RETRY_TIMEOUT)))
        return mg_plugin_error(err, errlen, &pc->pos, "Retry: series, statuses and exceptions may not all be empty");

    static const char *const bk[] = { "backoff.firstBackoff", "backoff.maxBackoff", "backoff.factor",
                                      "backoff.basedOnPreviousValue" };
    bool any = false;
    for (size_t i = 0; i < 4; i++) any |= mg_plugin_arg(pc, bk[i]) != NULL;
    if (any) {
        mg_retry_spring_backoff(p);
        uint64_t ms;
        if ((s = mg_plugin_str(pc, bk[0], NULL))) {
            if (mg_spring_duration_ms(s, &ms) != 0 || ms < 1)
                return mg_plugin_arg_error(err, errlen, pc, bk[0], "Retry: backoff.firstBackoff: expected a duration "
                                                                   "of at least 1ms (e.g. 10ms, 1s, PT0.1S), got '%.40s'", s);
            p->base_ms = (uint32_t)ms;
        }
        if ((s = mg_plugin_str(pc, bk[1], NULL))) {
            if (mg_spring_duration_ms(s, &ms) != 0)
                return mg_plugin_arg_error(err, errlen, pc, bk[1], "Retry: backoff.maxBackoff: expected a duration "
                                                                   "(e.g. 50ms, 1s), got '%.40s'", s);
            p->max_ms = (uint32_t)ms;
        }
        if ((s = mg_plugin_str(pc, bk[2], NULL))) {
            size_t nd = strspn(s, "0123456789");
            long x = nd && nd <= 4 && !s[nd] ? atol(s) : -1;
            if (x < 1 || x > 1000)
                return mg_plugin_arg_error(err, errlen, pc, bk[2], "Retry: backoff.factor: expected an integer 1..1000, got '%.40s'", s);
            p->factor = (uint32_t)x;
        }
        if ((s = mg_plugin_str(pc, bk[3], NULL)) && mg_parse_bool(s, &p->based_on_previous) != 0)
            return mg_plugin_arg_error(err, errlen, pc, bk[3], "Retry: backoff.basedOnPreviousValue: expected true or false, got '%.40s'", s);
    }
    char why[160];
    if (mg_retry_policy_validate(p, why, sizeof why) != 0)
        return mg_plugin_error(err, errlen, &pc->pos, "Retry: %s", why);
    return 0;
}

static int retry_compile(const mg_plugin_cfg_t *pc, void **state, char *err, size_t errlen)
{
    mg_retry_policy_t p;
    *state = NULL;
    return mg_retry_filter_policy(pc, &p, err, errlen);
}

const mg_plugin_spec_t mg_f_retry = {
    .name = "Retry",
    .kind = MG_PLUGIN_FILTER,
    .args = { { "retries", 0 },
              { "statuses", MG_ARG_LIST },
              { "methods", MG_ARG_LIST },
              { "backoff.firstBackoff", 0 },
              { "backoff.maxBackoff", 0 },
              { "backoff.factor", 0 },
              { "backoff.basedOnPreviousValue", 0 },
              { "series", MG_ARG_LIST },
              { "exceptions", MG_ARG_LIST } },
    .shortcut = MG_SHORTCUT_FIELDS,
    .compile = retry_compile,
};
