/* dnsclient: asynchronous DNS queries over UDP (TCP after truncation) on
 * a libuv loop; internal to src/discovery (used by dnssrc.c).
 *
 * A query asks one question and is tried up to attempts x resolvers times,
 * resolvers in order; each try has a fresh connected UDP socket (a new
 * source port), a fresh random ID and the per-try timeout. An answer
 * counts only if it comes from that resolver with that ID and echoes the
 * question; others are ignored (counted). TC -> the same question over TCP
 * to the same resolver. SERVFAIL/REFUSED, malformed answers and socket
 * errors move to the next try at once. At most MG_DNSC_MAX_INFLIGHT queries
 * run at once; up to MG_DNSC_MAX_QUEUED more wait in a FIFO. One thread
 * (the loop's). */
#ifndef MG_DISCOVERY_DNSCLIENT_H
#define MG_DISCOVERY_DNSCLIENT_H

#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "discovery/dns.h"
#include "discovery/dnssrc.h"

#define MG_DNSC_MAX_SERVERS 8
#define MG_DNSC_MAX_INFLIGHT 64
#define MG_DNSC_MAX_QUEUED 4096

typedef enum { MG_DNSQ_OK = 1, MG_DNSQ_EMPTY, MG_DNSQ_FAIL } mg_dnsq_res_t;

/* The outcome of a query: records (OK), an authoritative empty answer
 * (NXDOMAIN/NODATA), or a failure after every try (ans NULL). ans is
 * valid during the call only. last names the outcome ("ok", "timeout",
 * "servfail", ...; static text). */
typedef void (*mg_dnsq_cb)(void *ud, uintptr_t tag, mg_dnsq_res_t res, const mg_dns_answer_t *ans,
                           const char *last);

typedef struct mg_dnsc mg_dnsc_t;

/* st: the counters to update (owned by the caller, outlives the client). */
mg_dnsc_t *mg_dnsc_new(uv_loop_t *loop, mg_dnssrc_stats_t *st);
/* Resolvers and limits for the queries submitted from now on. */
void mg_dnsc_configure(mg_dnsc_t *c, const struct sockaddr_storage *servers, size_t n, uint32_t timeout_ms,
                       uint32_t attempts);
/* Ask (name, qtype); cb(ud, tag, ...) runs once -- possibly before this
 * returns, if every try fails at once. Returns 0, MG_EPARSE (bad name),
 * MG_ELIMIT (queue full, counted) or -ENOMEM; then cb is never called. */
int mg_dnsc_submit(mg_dnsc_t *c, const char *name, uint16_t qtype, mg_dnsq_cb cb, void *ud, uintptr_t tag);
/* The queries of ud will not call back (their answers are dropped). */
void mg_dnsc_cancel(mg_dnsc_t *c, const void *ud);
size_t mg_dnsc_inflight(const mg_dnsc_t *c);
size_t mg_dnsc_queued(const mg_dnsc_t *c);
/* Cancel everything and close; on_closed(ud) runs once the last handle is
 * closed and the client freed. */
void mg_dnsc_stop(mg_dnsc_t *c, void (*on_closed)(void *ud), void *ud);

#endif
