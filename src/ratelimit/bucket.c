/* bucket: see bucket.h. */
#include "ratelimit/bucket.h"

#include <math.h>

#include "core/err.h"

/* Token counts are sums of exact small integers and products dt * rate;
 * this slack keeps e.g. 3 refills of 1/3 token from counting as 0.999... */
#define EPS 1e-9

int mg_rl_params_check(const mg_rl_params_t *p)
{
    if (!(p->rate > 0) || !isfinite(p->rate) || p->requested == 0)
        return MG_ECONFIG;
    return 0;
}

void mg_rl_bucket_init(mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us)
{
    b->tokens = p->burst;
    b->t_us = now_us;
}

double mg_rl_bucket_tokens(const mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us)
{
    double cap = p->burst;
    if (b->tokens >= cap)
        return cap;
    int64_t dt = now_us - b->t_us;
    if (dt <= 0)
        return b->tokens < 0 ? 0 : b->tokens;
    double t = b->tokens + (double)dt * p->rate / 1e6;
    return t > cap ? cap : t;
}

mg_rl_result_t mg_rl_result_make(const mg_rl_params_t *p, bool allowed, double tokens)
{
    mg_rl_result_t r = { .allowed = allowed, .remaining = 0, .retry_after_s = 0 };
    if (tokens > 0)
        r.remaining = (int64_t)floor(tokens + EPS);
    if (!allowed) {
        if (p->requested > p->burst || !(p->rate > 0)) {
            r.retry_after_s = MG_RL_RETRY_NEVER;
        } else {
            double need = (double)p->requested - (tokens > 0 ? tokens : 0);
            double s = ceil(need / p->rate - EPS);
            if (s < 1)
                s = 1;
            r.retry_after_s = s > MG_RL_RETRY_NEVER ? MG_RL_RETRY_NEVER : (uint32_t)s;
        }
    }
    return r;
}

mg_rl_result_t mg_rl_bucket_take(mg_rl_bucket_t *b, const mg_rl_params_t *p, int64_t now_us)
{
    double filled = mg_rl_bucket_tokens(b, p, now_us);
    bool allowed = filled + EPS >= (double)p->requested;
    double left = allowed ? filled - p->requested : filled;
    if (left < 0) /* only the EPS slack: never keep a negative balance */
        left = 0;
    b->tokens = left;
    if (now_us > b->t_us)
        b->t_us = now_us;
    return mg_rl_result_make(p, allowed, left);
}

double mg_rl_bucket_full_at(const mg_rl_bucket_t *b, const mg_rl_params_t *p)
{
    double missing = (double)p->burst - b->tokens;
    if (missing <= EPS)
        return (double)b->t_us;
    return (double)b->t_us + missing * 1e6 / p->rate;
}
