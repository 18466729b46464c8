/* dnssrc: DNS as a discovery source (clusters' dns: entries).
 *
 * An mg_dnssrc_t lives on the control thread's libuv loop and never
 * blocks it (apart from reading /etc/hosts and /etc/resolv.conf, which the
 * control thread may do). Each configured entry -- A/AAAA of {name, port}
 * or SRV {srv} -- is resolved with UDP queries (per-try timeout, attempts
 * rounds over the resolvers, a fresh socket, ID and source per try; a
 * truncated answer is asked again over TCP), and re-resolved on its TTL
 * (clamped to [min_refresh, max_refresh]) or on its fixed refresh.
 *
 * Failure semantics: an authoritative empty answer (NXDOMAIN, NODATA)
 * empties the entry's set; a timeout, SERVFAIL/REFUSED or malformed answer
 * keeps the last known addresses (marked stale) and retries with
 * exponential backoff. Names in the hosts file resolve from there.
 *
 * When an entry's address set changes, the change callback runs (main.c
 * schedules the coalesced snapshot rebuild). mg_dnssrc_snapshot() gives an
 * immutable, refcounted mg_dns_snapshot_t that the cluster builder reads
 * (cluster/cluster.c); it may be handed to any thread. */
#ifndef MG_DISCOVERY_DNSSRC_H
#define MG_DISCOVERY_DNSSRC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "config/config.h"
#include "core/json.h"

typedef struct {
    struct sockaddr_storage addr; /* with the port */
    socklen_t addrlen;
    uint32_t ttl;       /* seconds, as the record said (hosts file: 0) */
    const char *target; /* SRV: the target host; NULL for A/AAAA entries */
} mg_dns_ep_t;

typedef struct {
    const char *cluster;
    const char *name;  /* the entry's name or SRV name */
    bool srv;
    uint16_t port;     /* A/AAAA entries */
    int family;        /* mg_dns_family_t */
    bool resolved;     /* had an answer (or an authoritative empty one) */
    bool stale;        /* the last resolution failed: eps are from before */
    const mg_dns_ep_t *eps;
    size_t neps;
} mg_dns_set_t;

typedef struct mg_dns_snapshot {
    _Atomic unsigned refs;
    const mg_dns_set_t *sets;
    size_t nsets;
    void *priv;
} mg_dns_snapshot_t;

/* The set of cluster's entry e, or NULL (not resolved yet / unknown). */
const mg_dns_set_t *mg_dns_snapshot_find(const mg_dns_snapshot_t *s, const char *cluster, const mg_dns_cfg_t *e);
void mg_dns_snapshot_ref(mg_dns_snapshot_t *s);
void mg_dns_snapshot_unref(mg_dns_snapshot_t *s); /* NULL is fine */

typedef struct mg_dnssrc mg_dnssrc_t;

typedef struct {
    uint64_t queries;     /* tries sent (UDP and TCP) */
    uint64_t answers;     /* responses parsed */
    uint64_t nxdomain, nodata, servfail; /* servfail: also REFUSED and other RCODEs */
    uint64_t timeouts;
    uint64_t malformed;   /* unparseable responses, socket errors */
    uint64_t mismatched;  /* wrong ID, question or source: ignored */
    uint64_t truncated;   /* TC answers (retried over TCP) */
    uint64_t queue_full;  /* queries refused because the queue was full */
    uint64_t failures;    /* resolutions that kept stale addresses */
    uint64_t changes;     /* address-set changes published */
    uint64_t hosts_hits;  /* names answered from the hosts file */
} mg_dnssrc_stats_t;

typedef void (*mg_dnssrc_change_fn)(void *ud);

mg_dnssrc_t *mg_dnssrc_new(uv_loop_t *loop, mg_dnssrc_change_fn on_change, void *ud);
/* Follow cfg (the running config): keep entries that stay (with their
 * addresses), start new ones, stop removed ones; take the resolvers and
 * limits. Calls on_change if the published sets change. 0 or -ENOMEM. */
int mg_dnssrc_configure(mg_dnssrc_t *d, const mg_config_t *cfg);
/* Entries still waiting for their first outcome (start-up wait). */
size_t mg_dnssrc_first_pending(const mg_dnssrc_t *d);
size_t mg_dnssrc_entries(const mg_dnssrc_t *d);
/* A reference to the current sets (release with mg_dns_snapshot_unref);
 * NULL on out of memory. */
mg_dns_snapshot_t *mg_dnssrc_snapshot(mg_dnssrc_t *d);
const mg_dnssrc_stats_t *mg_dnssrc_stats(const mg_dnssrc_t *d);
/* JSON for the admin API: the counters (an object) and the entries (an array). */
void mg_dnssrc_stats_json(const mg_dnssrc_t *d, mg_buf_t *b);
void mg_dnssrc_entries_json(const mg_dnssrc_t *d, mg_buf_t *b);
/* Cancel everything and close the handles (the loop must then run to let
 * the close callbacks free the memory). d is freed by the last close. */
void mg_dnssrc_stop(mg_dnssrc_t *d);

#endif
