/* dnssrc: DNS discovery on the control loop (see dnssrc.h).
 *
 * Three layers:
 *   - queries: dnsclient.c (tries, resolvers, timeouts, TCP fallback,
 *     the bounded in-flight set and wait queue).
 *   - an entry: one dns: item of one cluster. A round asks A and/or AAAA
 *     (or SRV, then the targets' A/AAAA that the additional section did
 *     not carry), then publishes the new set and arms the next refresh.
 *   - the snapshot: the published sets, rebuilt lazily after a change.
 * Handles are freed only in their close callbacks; the source itself is
 * freed when the last one closes after mg_dnssrc_stop(). */
#include "discovery/dnssrc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/log.h"
#include "discovery/dns.h"
#include "discovery/dnsclient.h"

#define MAX_ADDRS 256         /* addresses kept per entry and family */
#define MAX_SRV_TARGETS 32    /* targets of the best SRV priority resolved per round */
#define HOSTS_REFRESH_MS 30000
#define HOSTS_MAX_BYTES (1u << 20)
#define MAX_BACKOFF_MS 60000

typedef enum { RES_NONE = 0, RES_OK = MG_DNSQ_OK, RES_EMPTY = MG_DNSQ_EMPTY, RES_FAIL = MG_DNSQ_FAIL } res_t;
typedef enum { Q_A4, Q_A6, Q_SRV, Q_T4, Q_T6 } qkind_t;

typedef struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint32_t ttl;
    char *target; /* SRV target (owned) or NULL */
} addr_t;

typedef struct {
    addr_t *v;
    size_t n;
} alist_t;

typedef struct entry entry_t;

typedef struct {
    char name[MG_DNS_MAX_NAME + 1];
    uint16_t port;
} target_t;

struct entry {
    mg_dnssrc_t *d;
    entry_t *next;
    char *cluster, *name;
    bool srv;
    uint16_t port;
    int family;
    uint32_t refresh_ms;
    uv_timer_t timer;
    bool keep; /* reconcile mark */
    /* published */
    alist_t cur4, cur6; /* SRV entries use cur4 for every address */
    bool resolved, stale, first_done, from_hosts;
    uint32_t fails;
    uint64_t next_at;
    const char *last; /* outcome of the last round, for the admin API */
    /* the running round */
    bool running;
    int outstanding;
    bool ask4, ask6, rfail, srv_empty, rlast_fail;
    res_t r4, r6;
    alist_t n4, n6;
    uint32_t rttl, nttl; /* smallest positive / negative TTL of the round */
    bool rttl_set, nttl_set;
    target_t *targets;
    size_t ntargets;
};

struct mg_dnssrc {
    uv_loop_t *loop;
    mg_dnssrc_change_fn on_change;
    void *ud;
    entry_t *entries;
    size_t nentries;
    mg_dnsc_t *client;
    uint32_t min_refresh_ms, max_refresh_ms;
    char *hosts_file; /* NULL = none */
    mg_dnssrc_stats_t st;
    mg_dns_snapshot_t *snap;
    bool dirty;
    bool stopping;
    int nopen;            /* entry timers not closed yet */
    bool client_closed;
};

/* ---- small helpers ---- */

static void alist_free(alist_t *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].target);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static int addr_cmp(const void *pa, const void *pb)
{
    const addr_t *a = pa, *b = pb;
    if (a->addr.ss_family != b->addr.ss_family) return a->addr.ss_family < b->addr.ss_family ? -1 : 1;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&a->addr, *y = (const void *)&b->addr;
        int c = memcmp(&x->sin_addr, &y->sin_addr, 4);
        if (c) return c;
        return (int)ntohs(x->sin_port) - (int)ntohs(y->sin_port);
    }
    const struct sockaddr_in6 *x = (const void *)&a->addr, *y = (const void *)&b->addr;
    int c = memcmp(&x->sin6_addr, &y->sin6_addr, 16);
    if (c) return c;
    return (int)ntohs(x->sin6_port) - (int)ntohs(y->sin6_port);
}

/* Sort and drop repeated addresses (the first target name wins). */
static void alist_norm(alist_t *l)
{
    if (l->n < 2) return;
    qsort(l->v, l->n, sizeof *l->v, addr_cmp);
    size_t o = 1;
    for (size_t i = 1; i < l->n; i++) {
        if (addr_cmp(&l->v[i], &l->v[o - 1]) == 0) {
            free(l->v[i].target);
            continue;
        }
        l->v[o++] = l->v[i];
    }
    l->n = o;
}

static bool alist_same(const alist_t *a, const alist_t *b)
{
    if (a->n != b->n) return false;
    for (size_t i = 0; i < a->n; i++)
        if (addr_cmp(&a->v[i], &b->v[i]) != 0) return false;
    return true;
}

/* Append one address (bytes of an A or AAAA record). */
static void alist_add(mg_dnssrc_t *d, alist_t *l, int af, const uint8_t *raw, uint16_t port, uint32_t ttl,
                      const char *target)
{
    if (l->n == MAX_ADDRS) return;
    if (l->n % 16 == 0) {
        addr_t *nv = realloc(l->v, (l->n + 16) * sizeof *nv);
        if (!nv) return;
        l->v = nv;
    }
    addr_t *a = &l->v[l->n];
    memset(a, 0, sizeof *a);
    if (af == AF_INET) {
        struct sockaddr_in *s = (void *)&a->addr;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, raw, 4);
        a->addrlen = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (void *)&a->addr;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, raw, 16);
        a->addrlen = sizeof *s;
    }
    a->ttl = ttl;
    if (target && !(a->target = strdup(target))) return;
    l->n++;
    (void)d;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const void *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, ip, sizeof ip);
        snprintf(out, n, "[%s]:%u", ip, ntohs(s->sin6_port));
    } else {
        const struct sockaddr_in *s = (const void *)ss;
        inet_ntop(AF_INET, &s->sin_addr, ip, sizeof ip);
        snprintf(out, n, "%s:%u", ip, ntohs(s->sin_port));
    }
}

static uint32_t clamp_ms(const mg_dnssrc_t *d, uint64_t ms)
{
    if (ms < d->min_refresh_ms) ms = d->min_refresh_ms;
    if (ms > d->max_refresh_ms) ms = d->max_refresh_ms;
    return (uint32_t)ms;
}

/* ---- hosts file ---- */

/* Addresses of name in the hosts file (the wanted families) appended to
 * l4/l6. Returns how many were found. Read on every lookup: the file is
 * small and this runs on the control thread, at most once per refresh. */
static size_t hosts_lookup(mg_dnssrc_t *d, const char *name, bool want4, bool want6, uint16_t port,
                           const char *target, alist_t *l4, alist_t *l6)
{
    if (!d->hosts_file) return 0;
    FILE *f = fopen(d->hosts_file, "r");
    if (!f) return 0;
    char line[1024];
    size_t found = 0, read = 0;
    while (fgets(line, sizeof line, f) && read < HOSTS_MAX_BYTES) {
        read += strlen(line);
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *save = NULL, *ip = strtok_r(line, " \t\r\n", &save);
        if (!ip) continue;
        uint8_t raw[16];
        int af = inet_pton(AF_INET, ip, raw) == 1 ? AF_INET : inet_pton(AF_INET6, ip, raw) == 1 ? AF_INET6 : 0;
        if (!af || (af == AF_INET && !want4) || (af == AF_INET6 && !want6)) continue;
        for (char *h; (h = strtok_r(NULL, " \t\r\n", &save));) {
            if (!mg_dns_name_eq(h, name)) continue;
            alist_add(d, af == AF_INET ? l4 : l6, af, raw, port, 0, target);
            found++;
            break;
        }
    }
    fclose(f);
    if (found) d->st.hosts_hits++;
    return found;
}

static void entry_query_done(entry_t *e, qkind_t kind, size_t tidx, res_t res, const mg_dns_answer_t *ans,
                             const char *last);
static void maybe_free(mg_dnssrc_t *d);

static void on_query(void *ud, uintptr_t tag, mg_dnsq_res_t res, const mg_dns_answer_t *ans, const char *last)
{
    entry_query_done(ud, (qkind_t)(tag & 0xff), (size_t)(tag >> 8), (res_t)res, ans, last);
}

/* One query of e's round (e->outstanding counted by the caller); a query
 * that cannot even start is a failure of the round. */
static void dq_submit(entry_t *e, qkind_t kind, const char *name, size_t tidx)
{
    uint16_t qtype = kind == Q_SRV ? MG_DNS_T_SRV : kind == Q_A4 || kind == Q_T4 ? MG_DNS_T_A : MG_DNS_T_AAAA;
    int rc = mg_dnsc_submit(e->d->client, name, qtype, on_query, e, (uintptr_t)kind | (uintptr_t)tidx << 8);
    if (rc != 0)
        entry_query_done(e, kind, tidx, RES_FAIL, NULL,
                         rc == MG_ELIMIT ? "queue full" : rc == MG_EPARSE ? "bad name" : "out of memory");
}

/* ---- entries ---- */

static void on_entry_timer(uv_timer_t *t);

static void entry_arm(entry_t *e, uint32_t ms)
{
    e->next_at = uv_now(e->d->loop) + ms;
    uv_timer_start(&e->timer, on_entry_timer, ms, 0);
}

static void publish(entry_t *e, alist_t *cur, alist_t *nw, bool *changed)
{
    alist_norm(nw);
    if (!alist_same(cur, nw)) *changed = true;
    alist_free(cur);
    *cur = *nw;
    nw->v = NULL;
    nw->n = 0;
}

static void round_finish(entry_t *e)
{
    mg_dnssrc_t *d = e->d;
    e->running = false;
    bool changed = false, fail;
    size_t before = e->cur4.n + e->cur6.n;
    if (!e->srv) {
        fail = (e->ask4 && e->r4 == RES_FAIL) || (e->ask6 && e->r6 == RES_FAIL);
        if (e->ask4 && e->r4 != RES_FAIL) publish(e, &e->cur4, &e->n4, &changed);
        if (e->ask6 && e->r6 != RES_FAIL) publish(e, &e->cur6, &e->n6, &changed);
    } else {
        fail = e->rfail;
        if (!fail) publish(e, &e->cur4, &e->n4, &changed);
    }
    alist_free(&e->n4);
    alist_free(&e->n6);
    free(e->targets);
    e->targets = NULL;
    e->ntargets = 0;
    bool was_first = !e->first_done;
    e->first_done = true;
    uint32_t delay;
    if (fail) {
        e->fails++;
        e->stale = true;
        d->st.failures++;
        uint64_t b = (uint64_t)d->min_refresh_ms << (e->fails - 1 > 10 ? 10 : e->fails - 1);
        uint64_t cap = d->max_refresh_ms < MAX_BACKOFF_MS ? d->max_refresh_ms : MAX_BACKOFF_MS;
        delay = (uint32_t)(b > cap ? cap : b);
        if (e->fails == 1 || e->fails % 10 == 0)
            mg_warn("dns: cluster %s: %s %s: resolution failed (%s), keeping %zu known address%s; retry in %u ms",
                    e->cluster, e->srv ? "SRV" : "name", e->name, e->last, e->cur4.n + e->cur6.n,
                    e->cur4.n + e->cur6.n == 1 ? "" : "es", delay);
    } else {
        e->fails = 0;
        e->stale = false;
        e->resolved = true;
        if (e->refresh_ms) delay = e->refresh_ms;
        else if (e->from_hosts) delay = d->max_refresh_ms < HOSTS_REFRESH_MS ? d->max_refresh_ms : HOSTS_REFRESH_MS;
        else if (e->rttl_set) delay = clamp_ms(d, (uint64_t)e->rttl * 1000);
        else delay = clamp_ms(d, e->nttl_set ? (uint64_t)e->nttl * 1000 : 0);
    }
    if (changed || was_first) d->dirty = true;
    if (changed) {
        d->st.changes++;
        mg_info("dns: cluster %s: %s %s: %zu -> %zu addresses", e->cluster, e->srv ? "SRV" : "name", e->name,
                before, e->cur4.n + e->cur6.n);
        if (d->on_change) d->on_change(d->ud);
    }
    entry_arm(e, delay);
}

static void add_answer(entry_t *e, alist_t *l, const mg_dns_answer_t *ans, uint16_t port, const char *target)
{
    for (size_t i = 0; i < ans->nrrs; i++) {
        const mg_dns_rr_t *r = &ans->rrs[i];
        alist_add(e->d, l, r->type == MG_DNS_T_A ? AF_INET : AF_INET6, r->addr, port, r->ttl, target);
    }
}

/* A negative answer's TTL matters only when the round found no record
 * (an IPv4-only name's NODATA for AAAA must not shorten the A TTL). */
static void note_ttl(entry_t *e, const mg_dns_answer_t *ans)
{
    if (!ans || !ans->has_ttl) return;
    bool neg = ans->status != MG_DNS_OK;
    uint32_t *t = neg ? &e->nttl : &e->rttl;
    bool *set = neg ? &e->nttl_set : &e->rttl_set;
    if (!*set || ans->ttl < *t) *t = ans->ttl;
    *set = true;
}

/* SRV answer: the best priority's targets; glue or hosts file where we
 * have them, A/AAAA queries for the rest. */
static void srv_targets(entry_t *e, const mg_dns_answer_t *ans)
{
    bool want4 = e->family != MG_DNS_FAMILY_V6, want6 = e->family != MG_DNS_FAMILY_V4;
    int best = -1;
    for (size_t i = 0; i < ans->nrrs; i++)
        if (ans->rrs[i].name[0] && (best < 0 || ans->rrs[i].prio < best)) best = ans->rrs[i].prio;
    if (best < 0) { /* only "." targets: the service is decidedly not available */
        e->srv_empty = true;
        return;
    }
    e->targets = calloc(MAX_SRV_TARGETS, sizeof *e->targets);
    if (!e->targets) {
        e->rfail = true;
        return;
    }
    for (size_t i = 0; i < ans->nrrs && e->ntargets < MAX_SRV_TARGETS; i++) {
        const mg_dns_rr_t *r = &ans->rrs[i];
        if (!r->name[0] || r->prio != best || r->port == 0) continue;
        bool dup = false;
        for (size_t k = 0; k < e->ntargets && !dup; k++)
            dup = e->targets[k].port == r->port && mg_dns_name_eq(e->targets[k].name, r->name);
        if (dup) continue;
        target_t *t = &e->targets[e->ntargets++];
        snprintf(t->name, sizeof t->name, "%s", r->name);
        t->port = r->port;
    }
    for (size_t k = 0; k < e->ntargets; k++) {
        target_t *t = &e->targets[k];
        size_t glue = 0;
        for (size_t i = 0; i < ans->nextra; i++) {
            const mg_dns_rr_t *x = &ans->extra[i];
            bool v4 = x->type == MG_DNS_T_A;
            if (!mg_dns_name_eq(x->name, t->name) || (v4 && !want4) || (!v4 && !want6)) continue;
            alist_add(e->d, &e->n4, v4 ? AF_INET : AF_INET6, x->addr, t->port, x->ttl, t->name);
            if (!e->rttl_set || x->ttl < e->rttl) e->rttl = x->ttl;
            e->rttl_set = true;
            glue++;
        }
        if (glue || hosts_lookup(e->d, t->name, want4, want6, t->port, t->name, &e->n4, &e->n4)) continue;
        if (want4) {
            e->outstanding++;
            dq_submit(e, Q_T4, t->name, k);
        }
        if (want6) {
            e->outstanding++;
            dq_submit(e, Q_T6, t->name, k);
        }
    }
}

static void entry_query_done(entry_t *e, qkind_t kind, size_t tidx, res_t res, const mg_dns_answer_t *ans,
                             const char *last)
{
    e->outstanding--;
    if (res != RES_FAIL) note_ttl(e, ans);
    /* what the admin API shows: the first failure of the round, else the last outcome */
    if (last && (res == RES_FAIL || !e->rlast_fail)) e->last = last;
    if (res == RES_FAIL) e->rlast_fail = true;
    switch (kind) {
    case Q_A4:
    case Q_A6: {
        bool v4 = kind == Q_A4;
        *(v4 ? &e->r4 : &e->r6) = res;
        if (res == RES_OK) add_answer(e, v4 ? &e->n4 : &e->n6, ans, e->port, NULL);
        break;
    }
    case Q_SRV:
        if (res == RES_FAIL) e->rfail = true;
        else if (res == RES_EMPTY) e->srv_empty = true;
        else {
            e->outstanding++; /* hold the round open while targets are submitted */
            srv_targets(e, ans);
            e->outstanding--;
        }
        break;
    case Q_T4:
    case Q_T6:
        if (res == RES_FAIL) e->rfail = true;
        else if (res == RES_OK && tidx < e->ntargets)
            add_answer(e, &e->n4, ans, e->targets[tidx].port, e->targets[tidx].name);
        break;
    }
    if (e->outstanding == 0) round_finish(e);
}

static void entry_round(entry_t *e)
{
    if (e->running || e->d->stopping) return;
    e->running = true;
    e->rfail = e->srv_empty = e->from_hosts = e->rlast_fail = false;
    e->r4 = e->r6 = RES_NONE;
    e->rttl = e->nttl = 0;
    e->rttl_set = e->nttl_set = false;
    e->ask4 = e->family != MG_DNS_FAMILY_V6;
    e->ask6 = e->family != MG_DNS_FAMILY_V4;
    e->outstanding = 1; /* held while submitting */
    if (e->srv) {
        e->outstanding++;
        dq_submit(e, Q_SRV, e->name, 0);
    } else if (hosts_lookup(e->d, e->name, e->ask4, e->ask6, e->port, NULL, &e->n4, &e->n6)) {
        e->from_hosts = true;
        e->r4 = e->r6 = RES_OK;
        e->last = "hosts file";
    } else {
        if (e->ask4) {
            e->outstanding++;
            dq_submit(e, Q_A4, e->name, 0);
        }
        if (e->ask6) {
            e->outstanding++;
            dq_submit(e, Q_A6, e->name, 0);
        }
    }
    if (--e->outstanding == 0) round_finish(e);
}

static void on_entry_timer(uv_timer_t *t) { entry_round(t->data); }

static void entry_closed(uv_handle_t *h)
{
    entry_t *e = h->data;
    mg_dnssrc_t *d = e->d;
    alist_free(&e->cur4);
    alist_free(&e->cur6);
    alist_free(&e->n4);
    alist_free(&e->n6);
    free(e->targets);
    free(e->cluster);
    free(e->name);
    free(e);
    d->nopen--;
    maybe_free(d);
}

/* Drop e: its queries' results are ignored from now on. */
static void entry_drop(entry_t *e)
{
    mg_dnsc_cancel(e->d->client, e);
    uv_close((uv_handle_t *)&e->timer, entry_closed);
}

/* ---- the source ---- */

static void maybe_free(mg_dnssrc_t *d)
{
    if (!d->stopping || d->nopen > 0 || !d->client_closed) return;
    mg_dns_snapshot_unref(d->snap);
    free(d->hosts_file);
    free(d);
}

mg_dnssrc_t *mg_dnssrc_new(uv_loop_t *loop, mg_dnssrc_change_fn on_change, void *ud)
{
    mg_dnssrc_t *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->loop = loop;
    d->on_change = on_change;
    d->ud = ud;
    if (!(d->client = mg_dnsc_new(loop, &d->st))) {
        free(d);
        return NULL;
    }
    d->min_refresh_ms = 1000;
    d->max_refresh_ms = 300000;
    d->dirty = true;
    return d;
}

static bool set_server(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (void *)ss;
    struct sockaddr_in6 *s6 = (void *)ss;
    if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        return true;
    }
    if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        return true;
    }
    return false;
}

/* nameserver lines of /etc/resolv.conf (a %scope suffix is dropped). */
static size_t resolv_conf(struct sockaddr_storage *out, size_t max)
{
    FILE *f = fopen("/etc/resolv.conf", "r");
    if (!f) return 0;
    char line[512];
    size_t n = 0;
    while (n < max && fgets(line, sizeof line, f)) {
        char *save = NULL, *k = strtok_r(line, " \t\r\n", &save);
        if (!k || strcmp(k, "nameserver") != 0) continue;
        char *ip = strtok_r(NULL, " \t\r\n", &save);
        if (!ip) continue;
        char *pct = strchr(ip, '%');
        if (pct) *pct = '\0';
        if (set_server(&out[n], ip, 53)) n++;
    }
    fclose(f);
    return n;
}

static bool entry_matches(const entry_t *e, const char *cluster, const mg_dns_cfg_t *c)
{
    if (strcmp(e->cluster, cluster) != 0 || e->srv != (c->srv != NULL) || e->family != c->family) return false;
    return e->srv ? mg_dns_name_eq(e->name, c->srv) : mg_dns_name_eq(e->name, c->name) && e->port == c->port;
}

int mg_dnssrc_configure(mg_dnssrc_t *d, const mg_config_t *cfg)
{
    const typeof(cfg->discovery.dns) *o = &cfg->discovery.dns;
    d->min_refresh_ms = o->min_refresh_ms;
    d->max_refresh_ms = o->max_refresh_ms;
    struct sockaddr_storage servers[MG_DNSC_MAX_SERVERS];
    size_t ns = 0;
    for (size_t i = 0; i < o->nresolvers && ns < MG_DNSC_MAX_SERVERS; i++)
        if (set_server(&servers[ns], o->resolvers[i].host, o->resolvers[i].port)) ns++;
    if (!ns) ns = resolv_conf(servers, MG_DNSC_MAX_SERVERS);
    if (!ns) {
        set_server(&servers[0], "127.0.0.1", 53);
        ns = 1;
    }
    mg_dnsc_configure(d->client, servers, ns, o->timeout_ms, o->attempts);
    const char *hf = o->hosts_file ? o->hosts_file : "/etc/hosts";
    free(d->hosts_file);
    d->hosts_file = strcmp(hf, "off") == 0 ? NULL : strdup(hf);

    for (entry_t *e = d->entries; e; e = e->next) e->keep = false;
    int rc = 0;
    entry_t *added = NULL;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const mg_cluster_cfg_t *cc = &cfg->clusters[i];
        for (size_t j = 0; j < cc->ndns; j++) {
            const mg_dns_cfg_t *c = &cc->dns[j];
            entry_t *e = d->entries;
            while (e && !(entry_matches(e, cc->name, c) && !e->keep)) e = e->next;
            if (e) {
                e->keep = true;
                e->refresh_ms = c->refresh_ms; /* applies from the next refresh */
                continue;
            }
            e = calloc(1, sizeof *e);
            if (!e || !(e->cluster = strdup(cc->name)) || !(e->name = strdup(c->srv ? c->srv : c->name))) {
                if (e) free(e->cluster);
                free(e);
                rc = -ENOMEM;
                continue;
            }
            e->d = d;
            e->srv = c->srv != NULL;
            e->port = c->port;
            e->family = c->family;
            e->refresh_ms = c->refresh_ms;
            e->keep = true;
            e->last = "pending";
            uv_timer_init(d->loop, &e->timer);
            e->timer.data = e;
            d->nopen++;
            e->next = added;
            added = e;
        }
    }
    /* drop the entries no longer configured */
    bool removed = false;
    for (entry_t **pe = &d->entries; *pe;) {
        entry_t *e = *pe;
        if (e->keep) {
            pe = &e->next;
            continue;
        }
        *pe = e->next;
        d->nentries--;
        removed = removed || e->cur4.n + e->cur6.n > 0;
        entry_drop(e);
        d->dirty = true;
    }
    while (added) {
        entry_t *e = added;
        added = e->next;
        e->next = d->entries;
        d->entries = e;
        d->nentries++;
        d->dirty = true;
        entry_round(e);
    }
    if (removed && d->on_change) d->on_change(d->ud);
    return rc;
}

size_t mg_dnssrc_first_pending(const mg_dnssrc_t *d)
{
    size_t n = 0;
    for (const entry_t *e = d->entries; e; e = e->next) n += !e->first_done;
    return n;
}

size_t mg_dnssrc_entries(const mg_dnssrc_t *d) { return d->nentries; }
const mg_dnssrc_stats_t *mg_dnssrc_stats(const mg_dnssrc_t *d) { return &d->st; }

/* ---- snapshots ---- */

void mg_dns_snapshot_ref(mg_dns_snapshot_t *s) { atomic_fetch_add(&s->refs, 1); }

void mg_dns_snapshot_unref(mg_dns_snapshot_t *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
    mg_arena_free(s->priv);
    free(s);
}

const mg_dns_set_t *mg_dns_snapshot_find(const mg_dns_snapshot_t *s, const char *cluster, const mg_dns_cfg_t *c)
{
    if (!s) return NULL;
    for (size_t i = 0; i < s->nsets; i++) {
        const mg_dns_set_t *x = &s->sets[i];
        if (strcmp(x->cluster, cluster) != 0 || x->srv != (c->srv != NULL) || x->family != c->family) continue;
        if (x->srv ? mg_dns_name_eq(x->name, c->srv) : mg_dns_name_eq(x->name, c->name) && x->port == c->port)
            return x;
    }
    return NULL;
}

static char *arena_str(mg_arena_t *a, const char *s)
{
    size_t n = strlen(s);
    char *p = mg_arena_alloc(a, n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

static mg_dns_snapshot_t *build_snapshot(const mg_dnssrc_t *d)
{
    mg_dns_snapshot_t *s = calloc(1, sizeof *s);
    mg_arena_t *a = mg_arena_new(16384, (size_t)1 << 30);
    mg_dns_set_t *sets = a && d->nentries ? mg_arena_alloc(a, d->nentries * sizeof *sets) : NULL;
    if (!s || !a || (d->nentries && !sets)) goto oom;
    size_t n = 0;
    for (const entry_t *e = d->entries; e; e = e->next) {
        mg_dns_set_t *x = &sets[n++];
        size_t ne = e->cur4.n + e->cur6.n;
        mg_dns_ep_t *eps = ne ? mg_arena_alloc(a, ne * sizeof *eps) : NULL;
        x->cluster = arena_str(a, e->cluster);
        x->name = arena_str(a, e->name);
        if ((ne && !eps) || !x->cluster || !x->name) goto oom;
        x->srv = e->srv;
        x->port = e->port;
        x->family = e->family;
        x->resolved = e->resolved;
        x->stale = e->stale;
        size_t k = 0;
        for (int f = 0; f < 2; f++) {
            const alist_t *l = f ? &e->cur6 : &e->cur4;
            for (size_t i = 0; i < l->n; i++, k++) {
                eps[k].addr = l->v[i].addr;
                eps[k].addrlen = l->v[i].addrlen;
                eps[k].ttl = l->v[i].ttl;
                eps[k].target = l->v[i].target ? arena_str(a, l->v[i].target) : NULL;
                if (l->v[i].target && !eps[k].target) goto oom;
            }
        }
        x->eps = eps;
        x->neps = ne;
    }
    s->sets = sets;
    s->nsets = n;
    s->priv = a;
    atomic_init(&s->refs, 1);
    return s;
oom:
    mg_arena_free(a);
    free(s);
    return NULL;
}

mg_dns_snapshot_t *mg_dnssrc_snapshot(mg_dnssrc_t *d)
{
    if (d->dirty || !d->snap) {
        mg_dns_snapshot_t *s = build_snapshot(d);
        if (!s) return NULL;
        mg_dns_snapshot_unref(d->snap);
        d->snap = s;
        d->dirty = false;
    }
    mg_dns_snapshot_ref(d->snap);
    return d->snap;
}

/* ---- admin JSON ---- */

void mg_dnssrc_stats_json(const mg_dnssrc_t *d, mg_buf_t *b)
{
    size_t stale = 0, unresolved = 0;
    for (const entry_t *e = d->entries; e; e = e->next) {
        stale += e->stale;
        unresolved += !e->resolved;
    }
    const mg_dnssrc_stats_t *s = &d->st;
    mg_buf_addf(b,
                "{\"names\":%zu,\"stale\":%zu,\"unresolved\":%zu,\"inflight\":%zu,\"queued\":%zu,\"queries\":%llu,"
                "\"answers\":%llu,\"nxdomain\":%llu,\"nodata\":%llu,\"servfail\":%llu,\"timeouts\":%llu,"
                "\"malformed\":%llu,\"mismatched\":%llu,\"truncated\":%llu,\"queue_full\":%llu,\"failures\":%llu,"
                "\"changes\":%llu,\"hosts_hits\":%llu}",
                d->nentries, stale, unresolved, mg_dnsc_inflight(d->client), mg_dnsc_queued(d->client), (unsigned long long)s->queries,
                (unsigned long long)s->answers, (unsigned long long)s->nxdomain, (unsigned long long)s->nodata,
                (unsigned long long)s->servfail, (unsigned long long)s->timeouts, (unsigned long long)s->malformed,
                (unsigned long long)s->mismatched, (unsigned long long)s->truncated,
                (unsigned long long)s->queue_full, (unsigned long long)s->failures, (unsigned long long)s->changes,
                (unsigned long long)s->hosts_hits);
}

void mg_dnssrc_entries_json(const mg_dnssrc_t *d, mg_buf_t *b)
{
    static const char *const fams[] = { "any", "v4", "v6" };
    uint64_t now = uv_now(d->loop);
    mg_buf_add(b, "[", 1);
    for (const entry_t *e = d->entries; e; e = e->next) {
        mg_buf_addf(b, "%s{\"cluster\":", e == d->entries ? "" : ",");
        mg_buf_json_str(b, mg_slice_cstr(e->cluster));
        mg_buf_addf(b, ",\"%s\":", e->srv ? "srv" : "name");
        mg_buf_json_str(b, mg_slice_cstr(e->name));
        if (!e->srv) mg_buf_addf(b, ",\"port\":%u", e->port);
        mg_buf_addf(b,
                    ",\"family\":\"%s\",\"resolved\":%s,\"stale\":%s,\"from_hosts\":%s,\"last_result\":\"%s\","
                    "\"consecutive_failures\":%u,\"next_refresh_ms\":%lld,\"addresses\":[",
                    fams[e->family], e->resolved ? "true" : "false", e->stale ? "true" : "false",
                    e->from_hosts ? "true" : "false", e->last ? e->last : "", e->fails,
                    e->running ? 0LL : (long long)(e->next_at > now ? e->next_at - now : 0));
        bool first = true;
        for (int f = 0; f < 2; f++) {
            const alist_t *l = f ? &e->cur6 : &e->cur4;
            for (size_t i = 0; i < l->n; i++, first = false) {
                char a[80];
                fmt_addr(&l->v[i].addr, a, sizeof a);
                mg_buf_addf(b, "%s{\"address\":\"%s\",\"ttl\":%u", first ? "" : ",", a, l->v[i].ttl);
                if (l->v[i].target) {
                    mg_buf_lit(b, ",\"target\":");
                    mg_buf_json_str(b, mg_slice_cstr(l->v[i].target));
                }
                mg_buf_add(b, "}", 1);
            }
        }
        mg_buf_add(b, "]}", 2);
    }
    mg_buf_add(b, "]", 1);
}

static void client_closed(void *ud)
{
    mg_dnssrc_t *d = ud;
    d->client_closed = true;
    maybe_free(d);
}

void mg_dnssrc_stop(mg_dnssrc_t *d)
{
    if (!d || d->stopping) return;
    d->stopping = true;
    while (d->entries) {
        entry_t *e = d->entries;
        d->entries = e->next;
        uv_close((uv_handle_t *)&e->timer, entry_closed);
    }
    d->nentries = 0;
    /* last: with nothing open this frees d (through client_closed) */
    mg_dnsc_stop(d->client, client_closed, d);
}
