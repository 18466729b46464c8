/* outcome: how one upstream attempt ended, in the words every resilience
 * module understands (breaker, outlier detector, retry policy). The proxy
 * classifies each attempt once, at the point where the exchange learns its
 * fate (response head parsed, connect failed, timer fired, connection
 * dropped), and hands the same value to each module. Plain values; any
 * thread. */
#ifndef MG_RESILIENCE_OUTCOME_H
#define MG_RESILIENCE_OUTCOME_H

typedef enum {
    MG_UP_RESPONSE = 0,   /* a response head arrived; its status says more */
    MG_UP_CONNECT_FAILURE, /* connect refused, unreachable or timed out */
    MG_UP_TIMEOUT,        /* no response head within the (per-try) response timeout */
    MG_UP_RESET,          /* connection closed or reset before the response head */
    MG_UP_PROTOCOL,       /* malformed response head (the client gets 502) */
    MG_UP_CANCELLED,      /* the client went away: says nothing about the upstream */
    MG_UP_NRESULTS
} mg_up_result_t;

/* "response", "connect_failure", ... for logs and the admin API. */
static inline const char *mg_up_result_name(mg_up_result_t r)
{
    static const char *const names[MG_UP_NRESULTS] = {
        "response", "connect_failure", "timeout", "reset", "protocol_error", "cancelled",
    };
    return (unsigned)r < MG_UP_NRESULTS ? names[r] : "?";
}

/* The HTTP status a local failure stands for (Envoy's mapping, used by the
 * outlier detector and by "gateway error" checks): connect failure and
 * reset -> 503, timeout -> 504, protocol error -> 502; 0 for the rest. */
static inline int mg_up_result_status(mg_up_result_t r, int status)
{
    switch (r) {
    case MG_UP_RESPONSE: return status;
    case MG_UP_CONNECT_FAILURE: return 503;
    case MG_UP_RESET: return 503;
    case MG_UP_TIMEOUT: return 504;
    case MG_UP_PROTOCOL: return 502;
    default: return 0;
    }
}

#endif
