/* cluster: endpoint resolution and the process-wide endpoint registry. */
#include "cluster/cluster.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "core/arena.h"
#include "core/err.h"
#include "core/log.h"
#include "discovery/dnssrc.h"
#include "discovery/registry.h"

/* The registry holds one slot per distinct endpoint address; slots are
 * never freed (workers may keep pointers and index their pools by slot) but
 * are recycled when full (mg_ep_registry_limit). A name hash over the slots
 * keeps lookups O(1): every snapshot rebuild resolves all endpoints. */
#define MG_EP_REGISTRY_MAX 65536
#define MG_EP_HASH 65536 /* buckets, power of two */

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_ep_stats_t *reg[MG_EP_REGISTRY_MAX];
static uint32_t reg_hash[MG_EP_HASH]; /* index + 1 of the chain's head, 0 = empty */
static _Atomic uint32_t reg_count;
static uint32_t reg_nworkers = 1;
static uint32_t reg_max = MG_EP_REGISTRY_MAX;
static uint32_t reg_scan; /* where the next recycling scan starts */
static _Atomic uint64_t reg_recycled;

void mg_ep_registry_init(uint32_t nworkers) { reg_nworkers = nworkers ? nworkers : 1; }
uint32_t mg_ep_registry_count(void) { return atomic_load(&reg_count); }
mg_ep_stats_t *mg_ep_registry_at(uint32_t i) { return i < atomic_load(&reg_count) ? reg[i] : NULL; }
void mg_ep_registry_limit(uint32_t max) { reg_max = max && max < MG_EP_REGISTRY_MAX ? max : MG_EP_REGISTRY_MAX; }
uint64_t mg_ep_registry_recycled(void) { return atomic_load(&reg_recycled); }

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (MG_EP_HASH - 1);
}

static void hash_link(mg_ep_stats_t *st)
{
    uint32_t b = name_hash(st->name);
    st->hnext = reg_hash[b];
    reg_hash[b] = st->index + 1;
}

static void hash_unlink(mg_ep_stats_t *st)
{
    uint32_t *link = &reg_hash[name_hash(st->name)];
    while (*link && *link != st->index + 1)
        link = &reg[*link - 1]->hnext;
    if (*link)
        *link = st->hnext;
    st->hnext = 0;
}

/* A slot no live cluster set holds, with no connection open on any worker
 * (so no pool keeps a connection to its old address). Lock held. */
static mg_ep_stats_t *recyclable(uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        mg_ep_stats_t *st = reg[(reg_scan + k) % n];
        if (atomic_load(&st->refs))
            continue;
        bool open = false;
        for (uint32_t w = 0; w < reg_nworkers && !open; w++)
            open = atomic_load(&st->w[w].idle) || atomic_load(&st->w[w].active);
        if (open)
            continue;
        reg_scan = (st->index + 1) % n;
        return st;
    }
    return NULL;
}

static mg_ep_stats_t *registry_get(const char *name)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = atomic_load(&reg_count);
    mg_ep_stats_t *st = NULL;
    for (uint32_t i = reg_hash[name_hash(name)]; i && !st; i = reg[i - 1]->hnext)
        if (strcmp(reg[i - 1]->name, name) == 0)
            st = reg[i - 1];
    if (!st && n < reg_max) {
        st = calloc(1, sizeof *st);
        mg_ep_worker_stats_t *w = st ? aligned_alloc(64, sizeof *w * reg_nworkers) : NULL;
        if (w) {
            memset(w, 0, sizeof *w * reg_nworkers);
            st->w = w;
            st->index = n;
            snprintf(st->name, sizeof st->name, "%s", name);
            reg[n] = st;
            hash_link(st);
            atomic_store(&reg_count, n + 1);
        } else {
            free(st);
            st = NULL;
        }
    } else if (!st && (st = recyclable(n)) != NULL) {
        /* a new address in an old slot: its counters and check state restart */
        hash_unlink(st);
        snprintf(st->name, sizeof st->name, "%s", name);
        hash_link(st);
        memset(st->w, 0, sizeof *st->w * reg_nworkers);
        atomic_store(&st->hc_state, 0);
        atomic_store(&st->hc_last_result, 0);
        atomic_store(&st->hc_last_status, 0);
        atomic_store(&st->hc_failures, 0);
        atomic_store(&st->hc_last_ms, 0);
        atomic_store(&st->hc_checks, 0);
        atomic_fetch_add(&reg_recycled, 1);
    }
    pthread_mutex_unlock(&reg_lock);
    return st;
}

/* The endpoint being added (c->eps[c->neps]) is kept: the set holds it. */
static void keep(mg_cluster_t *c)
{
    atomic_fetch_add(&c->eps[c->neps].stats->refs, 1);
    c->neps++;
}

static int resolve(const mg_addr_cfg_t *a, mg_endpoint_t *ep, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res = NULL;
    char port[8];
    snprintf(port, sizeof port, "%u", a->port);
    int rc = getaddrinfo(a->host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "%s:%d:%d: cannot resolve endpoint '%s': %s", a->pos.file ? a->pos.file : "?",
                 a->pos.line, a->pos.col, a->host, gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return MG_ECONFIG;
    }
    memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
    ep->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    char name[96];
    if (strchr(a->host, ':'))
        snprintf(name, sizeof name, "[%s]:%u", a->host, a->port);
    else
        snprintf(name, sizeof name, "%s:%u", a->host, a->port);
    ep->stats = registry_get(name);
    if (!ep->stats) {
        snprintf(err, errlen, "%s:%d:%d: too many distinct endpoints", a->pos.file ? a->pos.file : "?",
                 a->pos.line, a->pos.col);
        return MG_ECONFIG;
    }
    return 0;
}

const char *mg_ep_source_name(unsigned source)
{
    return source == MG_EP_DNS ? "dns" : source == MG_EP_REGISTRY ? "registry" : "static";
}

static char *own_str(mg_arena_t *a, const char *s)
{
    size_t n = strlen(s);
    char *p = mg_arena_alloc(a, n + 1);
    if (p)
        memcpy(p, s, n + 1);
    return p;
}

/* The last endpoint of c repeats an earlier one (same address). */
static bool is_dup(const mg_cluster_t *c, const mg_endpoint_t *ep)
{
    for (uint32_t k = 0; k < c->neps; k++)
        if (c->eps[k].stats == ep->stats)
            return true;
    return false;
}

/* A resolved DNS address: no getaddrinfo, the stats are keyed by "ip:port". */
static int dns_endpoint(const mg_dns_ep_t *de, mg_endpoint_t *ep)
{
    char ip[INET6_ADDRSTRLEN], name[96];
    if (de->addr.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const void *)&de->addr;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        snprintf(name, sizeof name, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        const struct sockaddr_in *s4 = (const void *)&de->addr;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
        snprintf(name, sizeof name, "%s:%u", ip, ntohs(s4->sin_port));
    }
    memcpy(&ep->addr, &de->addr, de->addrlen);
    ep->addrlen = de->addrlen;
    ep->stats = registry_get(name);
    return ep->stats ? 0 : MG_ELIMIT;
}

static int add_dns(mg_arena_t *a, const mg_cluster_cfg_t *cc, const struct mg_dns_snapshot *dns, mg_cluster_t *c)
{
    for (size_t j = 0; j < cc->ndns; j++) {
        const mg_dns_set_t *set = mg_dns_snapshot_find(dns, cc->name, &cc->dns[j]);
        for (size_t k = 0; set && k < set->neps; k++) {
            mg_endpoint_t *ep = &c->eps[c->neps];
            memset(ep, 0, sizeof *ep);
            if (dns_endpoint(&set->eps[k], ep) != 0) {
                mg_warn("cluster %s: dns address skipped: too many distinct endpoints", cc->name);
                continue;
            }
            if (is_dup(c, ep))
                continue;
            mg_label_t *l = mg_arena_alloc(a, 2 * sizeof *l);
            if (!l || !(l[0].key = set->srv ? "srv" : "dns") || !(l[0].value = own_str(a, set->name)))
                return -ENOMEM;
            l[1].key = "srv_target";
            if (set->eps[k].target && !(l[1].value = own_str(a, set->eps[k].target)))
                return -ENOMEM;
            ep->labels = l;
            ep->nlabels = set->eps[k].target ? 2 : 1;
            ep->source = MG_EP_DNS;
            keep(c);
        }
    }
    return 0;
}

static int registry_labels(mg_arena_t *a, const mg_disco_endpoint_t *de, mg_endpoint_t *ep)
{
    ep->source = MG_EP_REGISTRY;
    ep->check_status = (uint8_t)de->status;
    if (!(ep->instance_id = own_str(a, de->id)))
        return -ENOMEM;
    if (!de->nlabels)
        return 0;
    mg_label_t *l = mg_arena_alloc(a, de->nlabels * sizeof *l);
    if (!l)
        return -ENOMEM;
    for (size_t i = 0; i < de->nlabels; i++)
        if (!(l[i].key = own_str(a, de->labels[i].name)) || !(l[i].value = own_str(a, de->labels[i].value)))
            return -ENOMEM;
    ep->labels = l;
    ep->nlabels = de->nlabels;
    return 0;
}

int mg_cluster_set_build(const mg_config_t *cfg, const mg_disco_snapshot_t *disco, mg_cluster_set_t *out,
                         char *err, size_t errlen)
{
    mg_cluster_sources_t src = { .registry = disco };
    return mg_cluster_set_build_src(cfg, &src, out, err, errlen);
}

int mg_cluster_set_build_src(const mg_config_t *cfg, const mg_cluster_sources_t *src, mg_cluster_set_t *out,
                             char *err, size_t errlen)
{
    const mg_disco_snapshot_t *disco = src ? src->registry : NULL;
    const struct mg_dns_snapshot *dns = src ? src->dns : NULL;
    out->n = cfg->nclusters;
    out->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof *out->clusters);
    mg_arena_t *arena = mg_arena_new(4096, (size_t)1 << 30);
    out->owned = arena;
    if (!out->clusters || !arena) {
        mg_cluster_set_free(out);
        return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const mg_cluster_cfg_t *cc = &cfg->clusters[i];
        mg_cluster_t *c = &out->clusters[i];
        c->cfg = cc;
        const mg_disco_service_t *svc = disco ? mg_disco_snapshot_find(disco, cc->name) : NULL;
        size_t nextra = svc ? svc->neps : 0;
        for (size_t j = 0; j < cc->ndns; j++) {
            const mg_dns_set_t *set = mg_dns_snapshot_find(dns, cc->name, &cc->dns[j]);
            nextra += set ? set->neps : 0;
        }
        c->eps = calloc(cc->nendpoints + nextra ? cc->nendpoints + nextra : 1, sizeof *c->eps);
        if (!c->eps) {
            mg_cluster_set_free(out);
            return -ENOMEM;
        }
        for (size_t j = 0; j < cc->nendpoints; j++) {
            int rc = resolve(&cc->endpoints[j], &c->eps[j], err, errlen);
            if (rc) {
                mg_cluster_set_free(out);
                return rc;
            }
            c->eps[j].labels = cc->endpoints[j].labels;
            c->eps[j].nlabels = cc->endpoints[j].nlabels;
            keep(c);
        }
        for (size_t j = 0; svc && j < svc->neps; j++) {
            const mg_disco_endpoint_t *de = &svc->eps[j];
            mg_addr_cfg_t a = { .host = (char *)de->address, .port = de->port, .pos = cc->pos };
            char msg[256];
            memset(&c->eps[c->neps], 0, sizeof c->eps[c->neps]);
            if (resolve(&a, &c->eps[c->neps], msg, sizeof msg) != 0) {
                mg_warn("cluster %s: registry instance %s skipped: %s", cc->name, de->id, msg);
                continue;
            }
            /* the same address registered twice counts once */
            if (is_dup(c, &c->eps[c->neps]))
                continue;
            if (registry_labels(arena, de, &c->eps[c->neps]) != 0) {
                mg_cluster_set_free(out);
                return -ENOMEM;
            }
            keep(c);
        }
        if (add_dns(arena, cc, dns, c) != 0) {
            mg_cluster_set_free(out);
            return -ENOMEM;
        }
    }
    return 0;
}

void mg_cluster_set_free(mg_cluster_set_t *set)
{
    mg_arena_free(set->owned);
    set->owned = NULL;
    if (!set->clusters)
        return;
    for (size_t i = 0; i < set->n; i++) {
        for (uint32_t j = 0; j < set->clusters[i].neps; j++)
            atomic_fetch_sub(&set->clusters[i].eps[j].stats->refs, 1);
        free(set->clusters[i].eps);
    }
    free(set->clusters);
    set->clusters = NULL;
    set->n = 0;
}
