/* key: what a rate limiter counts requests by (Spring's KeyResolver).
 * Kinds: the client IP (the default), a request header, a query parameter,
 * the route id, the request path, or one fixed key. The client IP is the
 * socket peer, unless the peer is a trusted proxy (configured CIDRs): then
 * X-Forwarded-For is walked from the right, skipping trusted addresses, and
 * the first untrusted one is the client (all trusted: the leftmost). An
 * entry that is not an IP address stops the walk at the hop that wrote it,
 * so a client can never choose its own key by sending garbage.
 *
 * Pure functions over the parsed request (http/http1.h) and a caller's
 * buffer; no allocation; any thread; cost is one pass over the field used.
 * The key slice points into the request, the config or the caller's buffer
 * and lives as long as the shortest of them. An empty key is a valid
 * result: the limiter decides what it means (deny-empty-key). */
#ifndef MG_RATELIMIT_KEY_H
#define MG_RATELIMIT_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/slice.h"
#include "http/http1.h"

/* Enough for any IP text and typical header, query or path keys. Longer
 * decoded query/path values fall back to their raw (undecoded) bytes. */
#define MG_RL_KEY_BUF 512

typedef enum {
    MG_RL_KEY_IP = 0, /* client address (default) */
    MG_RL_KEY_HEADER, /* value of header `name` (first occurrence) */
    MG_RL_KEY_QUERY,  /* value of query parameter `name`, %-decoded, '+' = space */
    MG_RL_KEY_ROUTE,  /* the route id: one bucket per route */
    MG_RL_KEY_PATH,   /* request path without query, %-decoded */
    MG_RL_KEY_FIXED,  /* `fixed`: one bucket for everything */
} mg_rl_key_kind_t;

typedef struct {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t bits;   /* prefix length */
    uint8_t addr[16];
} mg_rl_cidr_t;

typedef struct {
    mg_rl_key_kind_t kind;
    mg_slice_t name;              /* HEADER / QUERY */
    mg_slice_t fixed;             /* FIXED */
    const mg_rl_cidr_t *trusted;  /* proxies whose X-Forwarded-For is believed */
    size_t ntrusted;
} mg_rl_key_cfg_t;

typedef struct {
    const mg_http_msg_t *msg;    /* the parsed request */
    const struct sockaddr *peer; /* the client socket's address (may be NULL) */
    mg_slice_t route_id;
} mg_rl_key_input_t;

/* "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128).
 * Returns 0 or MG_EPARSE. Host bits past the prefix are cleared. */
int mg_rl_cidr_parse(mg_slice_t text, mg_rl_cidr_t *out);

/* Whether the address (AF_INET/AF_INET6 bytes; IPv4-mapped IPv6 counts as
 * IPv4) lies in one of the n CIDRs. */
bool mg_rl_cidr_contains(const mg_rl_cidr_t *list, size_t n, int family, const uint8_t *addr);

/* Resolve the key of a request. buf (cap >= 64; MG_RL_KEY_BUF advised)
 * receives IP text and decoded values. Returns 0 (key set, possibly
 * empty). Never fails otherwise. */
int mg_rl_key_resolve(const mg_rl_key_cfg_t *cfg, const mg_rl_key_input_t *in, char *buf,
                      size_t cap, mg_slice_t *key);

/* The kind named by Spring-ish config text: "ip" / "remote-addr", "header",
 * "query", "route", "path", "fixed". Returns 0 or MG_ECONFIG. */
int mg_rl_key_kind_parse(mg_slice_t text, mg_rl_key_kind_t *out);

#endif
