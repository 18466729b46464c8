/* cluster: endpoint resolution and the process-wide endpoint registry. */
#include "cluster/cluster.h"

#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "discovery/registry.h"

/* The registry only grows (bounded by the distinct endpoints ever
 * configured); entries are never freed, so workers may keep pointers. */
#define MG_EP_REGISTRY_MAX 65536

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_ep_stats_t *reg[MG_EP_REGISTRY_MAX];
static _Atomic uint32_t reg_count;
static uint32_t reg_nworkers = 1;

void mg_ep_registry_init(uint32_t nworkers) { reg_nworkers = nworkers ? nworkers : 1; }
uint32_t mg_ep_registry_count(void) { return atomic_load(&reg_count); }
mg_ep_stats_t *mg_ep_registry_at(uint32_t i) { return i < atomic_load(&reg_count) ? reg[i] : NULL; }

static mg_ep_stats_t *registry_get(const char *name)
{
    pthread_mutex_lock(&reg_lock);
    uint32_t n = atomic_load(&reg_count);
    mg_ep_stats_t *st = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(reg[i]->name, name) == 0) {
            st = reg[i];
            break;
        }
    }
    if (!st && n < MG_EP_REGISTRY_MAX) {
        st = calloc(1, sizeof *st);
        mg_ep_worker_stats_t *w = st ? aligned_alloc(64, sizeof *w * reg_nworkers) : NULL;
        if (w) {
            memset(w, 0, sizeof *w * reg_nworkers);
            st->w = w;
            st->index = n;
            snprintf(st->name, sizeof st->name, "%s", name);
            reg[n] = st;
            atomic_store(&reg_count, n + 1);
        } else {
            free(st);
            st = NULL;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    return st;
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

int mg_cluster_set_build(const mg_config_t *cfg, const mg_disco_snapshot_t *disco, mg_cluster_set_t *out,
                         char *err, size_t errlen)
{
    out->n = cfg->nclusters;
    out->clusters = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof *out->clusters);
    if (!out->clusters)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const mg_cluster_cfg_t *cc = &cfg->clusters[i];
        mg_cluster_t *c = &out->clusters[i];
        c->cfg = cc;
        const mg_disco_service_t *svc = disco ? mg_disco_snapshot_find(disco, cc->name) : NULL;
        size_t nextra = svc ? svc->neps : 0;
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
            c->neps++;
        }
        for (size_t j = 0; j < nextra; j++) {
            const mg_disco_endpoint_t *de = &svc->eps[j];
            mg_addr_cfg_t a = { .host = (char *)de->address, .port = de->port, .pos = cc->pos };
            char msg[256];
            if (resolve(&a, &c->eps[c->neps], msg, sizeof msg) != 0) {
                mg_warn("cluster %s: registry instance %s skipped: %s", cc->name, de->id, msg);
                continue;
            }
            /* the same address registered twice counts once */
            bool dup = false;
            for (uint32_t k = 0; k < c->neps && !dup; k++)
                dup = c->eps[k].stats == c->eps[c->neps].stats;
            if (!dup)
                c->neps++;
        }
    }
    return 0;
}

void mg_cluster_set_free(mg_cluster_set_t *set)
{
    if (!set->clusters)
        return;
    for (size_t i = 0; i < set->n; i++)
        free(set->clusters[i].eps);
    free(set->clusters);
    set->clusters = NULL;
    set->n = 0;
}
