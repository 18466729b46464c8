/* rate_limit: Spring's RequestRateLimiter filter and the seed's RateLimiter
 * (an alias: Spring's factory is named RequestRateLimiter; the seed writes
 * RateLimiter, which Spring would refuse). See rate_limit.h.
 *
 * Arguments (Spring's names; relaxed binding, so replenish-rate works too):
 *   redis-rate-limiter.replenishRate   tokens per second; required; > 0
 *                                      (Spring: an integer >= 1; meshgate
 *                                      also takes a fraction, e.g. 0.5)
 *   redis-rate-limiter.burstCapacity   bucket size; required; 0 blocks every
 *                                      request, else >= replenishRate (Spring's rule)
 *   redis-rate-limiter.requestedTokens cost of one request (1); may exceed
 *                                      burstCapacity (such requests never pass, as Spring)
 *   deny-empty-key (true), empty-key-status-code / empty-key-status (403),
 *   status-code (429): numbers 400..599 or names like TOO_MANY_REQUESTS
 *   key-resolver, rate-limiter: Spring beans (#{@name}); refused with the
 *                                      meshgate equivalent
 * meshgate extensions:
 *   key: ip (default) | header:NAME | query:NAME | route | path | fixed:VALUE
 *   trusted-proxies: CIDRs whose X-Forwarded-For is believed (key ip only)
 *   fail-closed: deny instead of allow when Redis fails (false)
 * Spring has no shortcut form for this filter ("RequestRateLimiter=10,20"
 * is refused, as Spring refuses it).
 *
 * Default key: the client IP. Spring's default (PrincipalNameKeyResolver)
 * gives an empty key for every unauthenticated request, so with
 * deny-empty-key the seed's route would answer 403 to everyone; meshgate
 * has no principal, and the client IP is what the seed means. */
#include "filter/rate_limit.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/filters_int.h"

typedef struct {
    mg_rl_cfg_t cfg;
    char *name, *fixed;   /* storage behind cfg.key.name / cfg.key.fixed */
    mg_rl_cidr_t *trusted; /* storage behind cfg.key.trusted */
} rl_st;

#define A_RATE "redis-rate-limiter.replenishRate"
#define A_BURST "redis-rate-limiter.burstCapacity"
#define A_REQ "redis-rate-limiter.requestedTokens"

static void rl_free(void *p)
{
    rl_st *s = p;
    if (!s) return;
    free(s->name);
    free(s->fixed);
    free(s->trusted);
    free(s);
}

static bool all_digits(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s)) return false;
    return true;
}

static int parse_rate(const char *v, double *out)
{
    size_t nd = 0, dots = 0;
    for (const char *p = v; *p; p++) {
        if (isdigit((unsigned char)*p)) nd++;
        else if (*p == '.') dots++;
        else return -1;
    }
    if (nd == 0 || dots > 1 || strlen(v) > 20) return -1;
    errno = 0;
    double x = strtod(v, NULL);
    if (errno || !isfinite(x) || !(x > 0) || x > 1e9) return -1;
    *out = x;
    return 0;
}

static int parse_u32(const char *v, uint32_t min, uint32_t *out)
{
    if (!all_digits(v) || strlen(v) > 10) return -1;
    unsigned long long x = strtoull(v, NULL, 10);
    if (x < min || x > UINT32_MAX) return -1;
    *out = (uint32_t)x;
    return 0;
}

static int status_arg(const mg_plugin_cfg_t *pc, const char *key, int *out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, key, NULL);
    if (!v) return 0;
    int c = mg_http_status_parse(v);
    if (c < 400 || c > 599)
        return mg_plugin_arg_error(err, errlen, pc, key,
                                   "%s: expected a status 400..599 or a name like TOO_MANY_REQUESTS, got '%.40s'", key, v);
    *out = c;
    return 0;
}

static int bool_arg(const mg_plugin_cfg_t *pc, const char *key, bool *out, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, key, NULL);
    if (v && mg_parse_bool(v, out) != 0)
        return mg_plugin_arg_error(err, errlen, pc, key, "%s: expected true or false, got '%.40s'", key, v);
    return 0;
}

static bool is_tchar(char c)
{
    return isalnum((unsigned char)c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* "ip", "header:NAME", "query:NAME", "route", "path", "fixed:VALUE" */
static int key_arg(const mg_plugin_cfg_t *pc, rl_st *s, char *err, size_t errlen)
{
    const char *v = mg_plugin_str(pc, "key", NULL);
    if (!v) return 0;
    const char *colon = strchr(v, ':');
    size_t kl = colon ? (size_t)(colon - v) : strlen(v);
    const char *arg = colon ? colon + 1 : NULL;
    mg_rl_key_kind_t kind;
    if (mg_rl_key_kind_parse(mg_slice(v, kl), &kind) != 0)
        return mg_plugin_arg_error(err, errlen, pc, "key", "key: unknown key '%.60s' (expected " MG_RL_KEY_SYNTAX ")", v);
    s->cfg.key.kind = kind;
    switch (kind) {
    case MG_RL_KEY_HEADER:
    case MG_RL_KEY_QUERY: {
        const char *what = kind == MG_RL_KEY_HEADER ? "header" : "query";
        if (!arg || !*arg)
            return mg_plugin_arg_error(err, errlen, pc, "key", "key: '%.60s' needs a name: %s:NAME", v, what);
        for (const char *p = arg; *p; p++)
            if (kind == MG_RL_KEY_HEADER ? !is_tchar(*p) : (*p == '&' || *p == '=' || *p == '#' || (unsigned char)*p <= ' '))
                return mg_plugin_arg_error(err, errlen, pc, "key", "key: bad %s name '%.60s'", what, arg);
        if (!(s->name = strdup(arg))) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        s->cfg.key.name = mg_slice_cstr(s->name);
        return 0;
    }
    case MG_RL_KEY_FIXED:
        if (!arg || !*arg)
            return mg_plugin_arg_error(err, errlen, pc, "key", "key: 'fixed' needs a value: fixed:VALUE");
        if (!(s->fixed = strdup(arg))) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        s->cfg.key.fixed = mg_slice_cstr(s->fixed);
        return 0;
    default:
        if (arg)
            return mg_plugin_arg_error(err, errlen, pc, "key", "key: '%.*s' takes no value (expected " MG_RL_KEY_SYNTAX ")",
                                       (int)(kl > 40 ? 40 : kl), v);
        return 0;
    }
}

static int rl_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    /* Spring beans first: a config written for Spring should learn what to
     * write instead before anything else. */
    const char *kr = mg_plugin_str(pc, "key-resolver", NULL);
    if (kr) {
        if (kr[0] == '#' && kr[1] == '{')
            return mg_plugin_arg_error(err, errlen, pc, "key-resolver",
                                       "key-resolver '%.80s' is a Spring bean and cannot be evaluated; use key: " MG_RL_KEY_SYNTAX, kr);
        return mg_plugin_arg_error(err, errlen, pc, "key-resolver",
                                   "key-resolver '%.80s' is not supported (Spring takes a bean here); use key: " MG_RL_KEY_SYNTAX, kr);
    }
    const char *rlb = mg_plugin_str(pc, "rate-limiter", NULL);
    if (rlb)
        return mg_plugin_arg_error(err, errlen, pc, "rate-limiter",
                                   "rate-limiter '%.80s' is a Spring bean and cannot be evaluated; use "
                                   A_RATE ", " A_BURST " and " A_REQ, rlb);

    rl_st *s = calloc(1, sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    mg_rl_cfg_default(&s->cfg);
    int rc = 0;
    const char *v;
    if (!(v = mg_plugin_str(pc, A_RATE, NULL))) {
        rc = mg_plugin_error(err, errlen, &pc->pos, "%s: missing the replenish rate (" A_RATE ")", pc->name);
        goto fail;
    }
    if (parse_rate(v, &s->cfg.params.rate) != 0) {
        rc = mg_plugin_arg_error(err, errlen, pc, A_RATE, "replenish rate: expected a number of tokens per second > 0, got '%.40s'", v);
        goto fail;
    }
    if (!(v = mg_plugin_str(pc, A_BURST, NULL))) {
        rc = mg_plugin_error(err, errlen, &pc->pos, "%s: missing the burst capacity (" A_BURST ")", pc->name);
        goto fail;
    }
    if (parse_u32(v, 0, &s->cfg.params.burst) != 0) {
        rc = mg_plugin_arg_error(err, errlen, pc, A_BURST, "burst capacity: expected an integer 0..4294967295, got '%.40s'", v);
        goto fail;
    }
    if (s->cfg.params.burst && s->cfg.params.burst < s->cfg.params.rate) {
        rc = mg_plugin_arg_error(err, errlen, pc, A_BURST,
                                 "burst capacity (%u) must be >= the replenish rate (%g), or 0 to block every request",
                                 s->cfg.params.burst, s->cfg.params.rate);
        goto fail;
    }
    if ((v = mg_plugin_str(pc, A_REQ, NULL)) && parse_u32(v, 1, &s->cfg.params.requested) != 0) {
        rc = mg_plugin_arg_error(err, errlen, pc, A_REQ, "requested tokens: expected an integer >= 1, got '%.40s'", v);
        goto fail;
    }
    if ((rc = bool_arg(pc, "deny-empty-key", &s->cfg.deny_empty_key, err, errlen))) goto fail;
    if (mg_plugin_arg(pc, "empty-key-status-code") && mg_plugin_arg(pc, "empty-key-status")) {
        rc = mg_plugin_arg_error(err, errlen, pc, "empty-key-status", "give empty-key-status or empty-key-status-code, not both");
        goto fail;
    }
    if ((rc = status_arg(pc, "empty-key-status-code", &s->cfg.empty_key_status, err, errlen))) goto fail;
    if ((rc = status_arg(pc, "empty-key-status", &s->cfg.empty_key_status, err, errlen))) goto fail;
    if ((rc = status_arg(pc, "status-code", &s->cfg.deny_status, err, errlen))) goto fail;
    if ((rc = bool_arg(pc, "fail-closed", &s->cfg.fail_closed, err, errlen))) goto fail;
    if ((rc = key_arg(pc, s, err, errlen))) goto fail;

    const mg_arg_cfg_t *tp = mg_plugin_arg(pc, "trusted-proxies");
    if (tp && tp->nvalues) {
        if (s->cfg.key.kind != MG_RL_KEY_IP) {
            rc = mg_plugin_arg_error(err, errlen, pc, "trusted-proxies", "trusted-proxies applies only to key: ip");
            goto fail;
        }
        if (!(s->trusted = calloc(tp->nvalues, sizeof *s->trusted))) {
            rc = mg_plugin_error(err, errlen, &pc->pos, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < tp->nvalues; i++) {
            if (mg_rl_cidr_parse(mg_slice_cstr(tp->values[i]), &s->trusted[i]) != 0) {
                rc = mg_plugin_arg_error(err, errlen, pc, "trusted-proxies",
                                         "trusted-proxies: bad address or CIDR '%.60s' (expected e.g. 10.0.0.0/8, ::1)", tp->values[i]);
                goto fail;
            }
        }
        s->cfg.key.trusted = s->trusted;
        s->cfg.key.ntrusted = tp->nvalues;
    }

    /* the engine's own checks, so route.c's init cannot fail later */
    mg_rl_limiter_t probe;
    char why[160];
    if (mg_rl_limiter_init(&probe, &s->cfg, MG_SLICE_LIT("probe"), NULL, why, sizeof why) != 0) {
        rc = mg_plugin_error(err, errlen, &pc->pos, "%s", why);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    rl_free(s);
    return rc;
}

#define RL_ARGS                                                                                                \
    { { A_RATE, 0 }, { A_BURST, 0 }, { A_REQ, 0 }, { "key-resolver", 0 }, { "deny-empty-key", 0 },             \
      { "empty-key-status-code", 0 }, { "empty-key-status", 0 }, { "status-code", 0 }, { "key", 0 },           \
      { "trusted-proxies", MG_ARG_LIST }, { "fail-closed", 0 }, { "rate-limiter", 0 } }

/* No request/response hooks: the proxy runs the limiter itself. */
const mg_plugin_spec_t mg_f_request_rate_limiter = {
    .name = "RequestRateLimiter", .kind = MG_PLUGIN_FILTER, .args = RL_ARGS, .shortcut = MG_SHORTCUT_NONE,
    .compile = rl_compile, .free = rl_free,
};

/* The seed's name. Spring's factory is RequestRateLimiter; Spring itself
 * would refuse "RateLimiter". */
const mg_plugin_spec_t mg_f_rate_limiter = {
    .name = "RateLimiter", .kind = MG_PLUGIN_FILTER, .args = RL_ARGS, .shortcut = MG_SHORTCUT_NONE,
    .compile = rl_compile, .free = rl_free,
};

bool mg_plugin_is_rate_limiter(const mg_plugin_spec_t *s)
{
    return s == &mg_f_request_rate_limiter || s == &mg_f_rate_limiter;
}

const mg_rl_cfg_t *mg_rate_limit_cfg(const void *state) { return &((const rl_st *)state)->cfg; }
