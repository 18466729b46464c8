/* meshgate: command line and the control thread.
 *
 *   meshgate run -c FILE [-c FILE ...]    serve in the foreground
 *   meshgate check -c FILE [-c FILE ...]  validate, print FILE:LINE:COL: message
 *
 * The main thread runs the control loop: signals (SIGHUP reload, SIGTERM /
 * SIGINT drain and exit), the admin API, and config loading. Workers are
 * started by the proxy module. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "admin/admin.h"
#include "config/config.h"
#include "config/locator.h"
#include "core/err.h"
#include "core/log.h"
#include "discovery/checker.h"
#include "discovery/consul_api.h"
#include "discovery/redisreg.h"
#include "discovery/dnssrc.h"
#include "discovery/registry.h"
#include "discovery/store.h"
#include "obs/accesslog.h"
#include "proxy/proxy.h"
#include "cluster/health.h"
#include "ratelimit/limiter.h"

#define MAX_FILES 32

static struct {
    uv_loop_t *loop;
    const char *files[MAX_FILES];
    size_t nfiles;
    mg_server_t *srv;
    mg_admin_t *admin;
    mg_health_t *health;
    uv_signal_t sighup, sigterm, sigint;
    uv_timer_t tick; /* timed breaker transitions, outlier sweeps */
    bool stopping;
    /* discovery: the embedded registry (NULL when discovery.registry is off) */
    mg_registry_t *reg;
    mg_store_t *store;      /* NULL when the data directory could not be opened */
    mg_redisreg_t *redisreg; /* discovery.backend redis: Redis instead of the store */
    mg_consul_api_t *consul;
    mg_reg_checker_t *checker; /* runs the registry's HTTP/TCP checks */
    uv_timer_t reg_tick;    /* TTL expiry within 50 ms of a deadline, store sync every ~1 s */
    unsigned reg_ticks;
    uv_timer_t rebuild;     /* coalesced snapshot rebuild after registry or DNS changes */
    uint64_t last_rebuild;  /* uv_now of the last rebuild */
    bool reg_timers;
    bool locator;           /* the serving config has the discovery locator on */
    bool rebuild_ready;     /* G.rebuild initialized (registry or DNS in use) */
    mg_dnssrc_t *dns;       /* DNS discovery (clusters' dns: entries) */
} G;

static void usage(FILE *f)
{
    fprintf(f,
            "meshgate %s - a microservices runtime: API gateway, resilience, discovery\n"
            "\n"
            "usage:\n"
            "  meshgate run -c FILE [-c FILE ...]    run in the foreground (later files win)\n"
            "  meshgate check -c FILE [-c FILE ...]  validate config; exit 0, or print\n"
            "                                        FILE:LINE:COL: message and exit 1\n"
            "  meshgate config print -c FILE ...     print the effective config in native form\n"
            "                                        (e.g. to migrate a Spring Cloud Gateway file)\n"
            "  meshgate --help | --version\n"
            "\n"
            "signals: SIGHUP reloads the config files (an invalid config is refused and the\n"
            "running one kept); SIGTERM/SIGINT stop accepting, drain and exit 0.\n",
            MG_VERSION);
}

/* Build a snapshot of cfg (consumed) with the registry's passing instances
 * and the DNS-resolved addresses and, with the discovery locator on, a
 * route per service (locator.h). */
static int build(mg_config_t *cfg, mg_snapshot_t **out, char *err, size_t errlen)
{
    mg_disco_snapshot_t *d = G.reg ? mg_registry_snapshot(G.reg, false) : NULL;
    if (G.reg && !d)
        mg_warn("registry snapshot: out of memory; building without registry instances");
    bool locator = cfg->discovery.locator.enabled;
    const char **names = d && locator ? malloc((d->nservices + 1) * sizeof *names) : NULL;
    for (size_t i = 0; names && i < d->nservices; i++)
        names[i] = d->services[i].name;
    int rc = mg_locator_derive(cfg, names, names ? d->nservices : 0, &cfg, err, errlen);
    free(names);
    mg_dns_snapshot_t *dn = G.dns ? mg_dnssrc_snapshot(G.dns) : NULL;
    if (G.dns && !dn)
        mg_warn("dns snapshot: out of memory; building without DNS addresses");
    mg_cluster_sources_t src = { .registry = d, .dns = dn };
    if (rc == 0)
        rc = mg_snapshot_build_src(cfg, &src, out, err, errlen);
    if (rc == 0)
        G.locator = locator; /* a refused reload keeps the running value */
    mg_disco_snapshot_free(d);
    mg_dns_snapshot_unref(dn);
    return rc;
}

static int load(mg_snapshot_t **out, char *err, size_t errlen)
{
    mg_config_t *cfg = NULL;
    int rc = mg_config_load(G.files, G.nfiles, &cfg, err, errlen);
    if (rc)
        return rc;
    return build(cfg, out, err, errlen);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- registry -> serving snapshot ---- */

/* Same config, endpoints (and discovery locator routes) refreshed from the
 * registry. The new snapshot shares the running one's loaded mg_config_t
 * (mg_config_share of its base: a locator config is re-derived). */
static void on_rebuild(uv_timer_t *t)
{
    (void)t;
    if (G.stopping || !G.srv)
        return;
    G.last_rebuild = uv_now(G.loop);
    mg_snapshot_t *cur = mg_server_current(G.srv);
    char err[1024] = "";
    mg_snapshot_t *snap = NULL;
    int rc = build(mg_config_share(mg_config_base(cur->cfg)), &snap, err, sizeof err);
    mg_snapshot_unref(cur);
    if (rc) {
        mg_error("registry change: snapshot rebuild failed: %s", err[0] ? err : mg_strerror(rc));
        return;
    }
    mg_server_swap(G.srv, snap);
    if (G.health)
        mg_health_update(G.health, snap);
    mg_debug("registry change: endpoints refreshed (generation %llu)", (unsigned long long)snap->generation);
    mg_snapshot_unref(snap);
}

/* At most one rebuild per 100 ms. */
static void schedule_rebuild(void)
{
    if (G.stopping || !G.rebuild_ready || uv_is_active((uv_handle_t *)&G.rebuild))
        return;
    uint64_t now = uv_now(G.loop), next = G.last_rebuild + 100;
    uv_timer_start(&G.rebuild, on_rebuild, next > now ? next - now : 0, 0);
}

/* Registry listener: only schedules. */
static void on_registry_event(void *ud, const mg_reg_event_t *ev)
{
    (void)ud;
    if (G.checker && !G.stopping)
        mg_reg_checker_notify(G.checker, ev);
    /* the locator routes every registered service, passing or not */
    bool services_changed = G.locator && ev->kind != MG_REG_EV_CHECK;
    if ((ev->endpoints_changed || services_changed) && G.reg_timers)
        schedule_rebuild();
}

/* DNS: an entry's address set changed. */
static void on_dns_change(void *ud)
{
    (void)ud;
    schedule_rebuild();
}

/* Start DNS discovery and give the first resolutions a bounded chance to
 * complete before the first snapshot, so a DNS-only cluster is not empty
 * at boot when DNS answers: at most 2 x timeout x attempts (SRV then its
 * targets), 10 s at most. */
static void on_dns_wait(uv_timer_t *t) { *(bool *)t->data = true; }

static void dns_start(const mg_config_t *cfg)
{
    bool any = false;
    for (size_t i = 0; i < cfg->nclusters && !any; i++)
        any = cfg->clusters[i].ndns > 0;
    if (!(G.dns = mg_dnssrc_new(G.loop, on_dns_change, NULL))) {
        mg_error("dns: out of memory; dns: entries are not resolved");
        return;
    }
    if (mg_dnssrc_configure(G.dns, cfg) != 0)
        mg_error("dns: out of memory; some dns: entries are not resolved");
    if (!any || !mg_dnssrc_first_pending(G.dns))
        return;
    uint64_t ms = 2ull * cfg->discovery.dns.timeout_ms * cfg->discovery.dns.attempts;
    bool expired = false;
    uv_timer_t t;
    uv_timer_init(G.loop, &t);
    t.data = &expired;
    uv_timer_start(&t, on_dns_wait, ms < 10000 ? ms : 10000, 0);
    while (!expired && mg_dnssrc_first_pending(G.dns))
        uv_run(G.loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(G.loop, UV_RUN_NOWAIT); /* t's close */
    if (mg_dnssrc_first_pending(G.dns))
        mg_warn("dns: %zu entr%s not resolved yet at start-up; their clusters fill when DNS answers",
                mg_dnssrc_first_pending(G.dns), mg_dnssrc_first_pending(G.dns) == 1 ? "y" : "ies");
}

static void dns_stop(void)
{
    if (!G.dns)
        return;
    mg_dnssrc_stop(G.dns); /* freed by its handles' close callbacks */
    G.dns = NULL;
}

static void on_reg_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = (int64_t)uv_now(G.loop);
    if (mg_registry_next_deadline(G.reg) <= now)
        mg_registry_expire(G.reg, now);
    if (G.store && ++G.reg_ticks % 20 == 0) {
        int rc = mg_store_sync(G.store, G.reg, now, wall_ms());
        if (rc)
            mg_warn("registry store: sync failed: %s", mg_strerror(rc));
    }
}

/* Registry, store (load, then write-through), Consul API. A store that
 * cannot be opened is logged and the registry runs in memory only. */
static int registry_start(const mg_config_t *cfg)
{
    if (!cfg->discovery.registry)
        return 0;
    mg_registry_opts_t o;
    mg_registry_opts_default(&o);
    o.max_instances = cfg->discovery.max_instances;
    G.reg = mg_registry_new(&o);
    mg_consul_opts_t co = { .token = cfg->discovery.token, .max_body = 65536, .default_wait_ms = 300000,
                            .max_wait_ms = 600000 };
    G.consul = G.reg ? mg_consul_api_new(G.reg, &co) : NULL;
    if (!G.reg || !G.consul) {
        fprintf(stderr, "meshgate: registry: out of memory\n");
        return -ENOMEM;
    }
    char err[512] = "";
    const char *dir = cfg->discovery.data_dir;
    if (cfg->discovery.backend == MG_DISCO_REDIS) {
        /* Redis is the persistence: no SQLite store (docs/discovery-redis.md) */
        mg_redisreg_opts_t ro = { .host = cfg->discovery.redis.host, .port = cfg->discovery.redis.port,
                                  .db = cfg->discovery.redis.db, .password = cfg->discovery.redis.password,
                                  .prefix = cfg->discovery.prefix };
        if (mg_redisreg_start(G.loop, G.reg, &ro, &G.redisreg) != 0) {
            fprintf(stderr, "meshgate: registry: out of memory\n");
            return -ENOMEM;
        }
    } else if (!mg_store_exists(dir)) {
        /* nothing to restore: the database is created by the first registration */
        mg_store_attach_lazy(dir, G.reg, &G.store);
    } else if (mg_store_open(dir, &G.store, err, sizeof err) != 0) {
        mg_error("registry: %s: registrations are kept in memory only", err[0] ? err : "cannot open the store");
        G.store = NULL;
    } else {
        int n = mg_store_load(G.store, G.reg, (int64_t)uv_now(G.loop), wall_ms(), err, sizeof err);
        if (n < 0) {
            mg_error("registry: loading %s: %s", dir, err[0] ? err : mg_strerror(n));
        } else if (n > 0) {
            mg_info("registry: restored %d instances from %s", n, dir);
        }
        mg_store_attach(G.store, G.reg);
    }
    mg_registry_add_listener(G.reg, on_registry_event, NULL);
    return 0;
}

static void redisreg_stats(void *ud, mg_buf_t *b)
{
    if (G.redisreg == ud)
        mg_redisreg_stats_json(ud, b);
}

static void registry_timers_start(void)
{
    if (!G.reg)
        return;
    uv_timer_init(G.loop, &G.reg_tick);
    uv_timer_start(&G.reg_tick, on_reg_tick, 50, 50);
    G.reg_timers = true;
    /* HTTP/TCP checks of registrations (those loaded from the store too) */
    G.checker = mg_reg_checker_new(G.loop, G.reg);
    if (G.checker)
        mg_reg_checker_sync(G.checker);
    else
        mg_error("registry: out of memory; HTTP/TCP checks are not run");
}

static void registry_stop(void)
{
    if (G.redisreg) { /* not stopped by on_server_exit (start-up failed) */
        mg_redisreg_stop(G.redisreg);
        G.redisreg = NULL;
        uv_run(G.loop, UV_RUN_NOWAIT);
    }
    if (G.store) {
        int64_t now = (int64_t)uv_now(G.loop);
        mg_store_sync(G.store, G.reg, now, wall_ms());
        mg_store_close(G.store);
        G.store = NULL;
    }
    mg_consul_api_free(G.consul);
    G.consul = NULL;
    mg_registry_free(G.reg);
    G.reg = NULL;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    mg_snapshot_t *snap = mg_server_current(G.srv);
    mg_resil_tick(&snap->resil, snap, mg_now_ms());
    mg_snapshot_unref(snap);
}

static void on_server_exit(void *arg)
{
    (void)arg;
    uv_close((uv_handle_t *)&G.tick, NULL);
    if (G.reg_timers) {
        uv_close((uv_handle_t *)&G.reg_tick, NULL);
        G.reg_timers = false;
    }
    if (G.rebuild_ready) {
        uv_close((uv_handle_t *)&G.rebuild, NULL);
        G.rebuild_ready = false;
    }
    if (G.admin)
        mg_admin_set_dns(G.admin, NULL);
    dns_stop();
    mg_reg_checker_stop(G.checker);
    G.checker = NULL;
    mg_redisreg_stop(G.redisreg);
    G.redisreg = NULL;
    uv_close((uv_handle_t *)&G.sighup, NULL);
    uv_close((uv_handle_t *)&G.sigterm, NULL);
    uv_close((uv_handle_t *)&G.sigint, NULL);
    mg_admin_stop(G.admin);
    mg_health_stop(G.health);
    G.health = NULL;
}

static void on_signal(uv_signal_t *h, int sig)
{
    (void)h;
    if (sig == SIGHUP) {
        if (G.stopping)
            return;
        char err[1024] = "";
        mg_snapshot_t *snap = NULL;
        int rc = load(&snap, err, sizeof err);
        if (rc) {
            mg_error("reload refused, keeping the running config: %s", err[0] ? err : mg_strerror(rc));
            return;
        }
        if (snap->cfg->workers != mg_server_workers(G.srv))
            mg_warn("reload: 'workers' changed; it takes effect only at restart");
        if (snap->cfg->discovery.registry != (G.reg != NULL))
            mg_warn("reload: 'discovery.registry' changed; it takes effect only at restart");
        if (G.reg && (snap->cfg->discovery.backend == MG_DISCO_REDIS) != (G.redisreg != NULL))
            mg_warn("reload: 'discovery.backend' changed; it takes effect only at restart");
        mg_server_swap(G.srv, snap);
        if (G.health)
            mg_health_update(G.health, snap);
        /* dns: entries follow the running config (added ones start now) */
        if (G.dns && mg_dnssrc_configure(G.dns, snap->cfg) != 0)
            mg_error("reload: dns: out of memory; some dns: entries are not resolved");
        mg_info("reloaded config (generation %llu, %zu routes, %zu clusters)",
                (unsigned long long)snap->generation, snap->cfg->nroutes, snap->cfg->nclusters);
        mg_snapshot_unref(snap);
        return;
    }
    if (G.stopping)
        return;
    G.stopping = true;
    mg_snapshot_t *snap = mg_server_current(G.srv);
    uint32_t t = snap->cfg->drain_timeout_ms;
    mg_snapshot_unref(snap);
    mg_info("%s: draining (up to %u ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT", t);
    mg_server_drain(G.srv, t);
}

static int parse_files(int argc, char **argv, int i)
{
    for (; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            if (G.nfiles == MAX_FILES) {
                fprintf(stderr, "meshgate: too many -c files (max %d)\n", MAX_FILES);
                return -1;
            }
            G.files[G.nfiles++] = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0 && G.nfiles < MAX_FILES) {
            G.files[G.nfiles++] = argv[i] + 9;
        } else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
            mg_log_min_level = MG_LOG_DEBUG;
        } else {
            fprintf(stderr, "meshgate: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
    }
    if (G.nfiles == 0) {
        fprintf(stderr, "meshgate: no config file given (-c FILE)\n");
        return -1;
    }
    return 0;
}

static int cmd_check(void)
{
    char err[1024] = "";
    mg_snapshot_t *snap = NULL;
    int rc = load(&snap, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err[0] ? err : mg_strerror(rc));
        return 1;
    }
    printf("config ok: %zu routes, %zu clusters\n", snap->cfg->nroutes, snap->cfg->nclusters);
    mg_snapshot_unref(snap);
    return 0;
}

static int cmd_print(void)
{
    char err[1024] = "";
    mg_config_t *cfg = NULL;
    int rc = mg_config_load(G.files, G.nfiles, &cfg, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err[0] ? err : mg_strerror(rc));
        return 1;
    }
    rc = mg_config_print(cfg, stdout);
    mg_config_free(cfg);
    return rc ? 1 : 0;
}

static int cmd_run(void)
{
    char err[1024] = "";
    mg_config_t *first = NULL;
    int rc = mg_config_load(G.files, G.nfiles, &first, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err[0] ? err : mg_strerror(rc));
        return 1;
    }
    /* Per-worker endpoint counters are sized once; `workers` is fixed for
     * the life of the process (a reload that changes it is warned about). */
    mg_ep_registry_init(first->workers);
    mg_rl_registry_init(first->workers);
    mg_resil_init(first->workers);
    signal(SIGPIPE, SIG_IGN);
    G.loop = uv_default_loop();
    rc = mg_alog_start(first->access_log && strcmp(first->access_log, "off") != 0 ? first->access_log : NULL);
    if (rc) {
        fprintf(stderr, "meshgate: access log %s: %s\n", first->access_log, mg_strerror(rc));
        mg_config_free(first);
        return 1;
    }
    if (registry_start(first) != 0) {
        mg_config_free(first);
        registry_stop();
        return 1;
    }
    dns_start(first);
    mg_snapshot_t *snap = NULL;
    rc = build(first, &snap, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err[0] ? err : mg_strerror(rc));
        dns_stop();
        uv_run(G.loop, UV_RUN_NOWAIT);
        registry_stop();
        return 1;
    }
    const mg_config_t *cfg = snap->cfg;
    rc = mg_server_start(G.loop, snap, on_server_exit, NULL, &G.srv, err, sizeof err);
    if (rc) {
        fprintf(stderr, "meshgate: %s\n", err[0] ? err : mg_strerror(rc));
        mg_snapshot_unref(snap);
        dns_stop();
        uv_run(G.loop, UV_RUN_NOWAIT);
        registry_stop();
        return 1;
    }
    G.health = mg_health_new(G.loop);
    if (G.health)
        mg_health_update(G.health, snap);
    if (cfg->admin_enabled) {
        rc = mg_admin_start(G.loop, G.srv, cfg, &G.admin, err, sizeof err);
        if (rc) {
            fprintf(stderr, "meshgate: %s\n", err);
            mg_server_drain(G.srv, 0);
        } else if (G.reg) {
            mg_admin_set_discovery(G.admin, G.reg, G.consul);
            if (G.redisreg)
                mg_admin_set_stats_extra(G.admin, redisreg_stats, G.redisreg);
        }
        if (G.admin)
            mg_admin_set_dns(G.admin, G.dns);
    }
    uv_timer_init(G.loop, &G.rebuild);
    G.rebuild_ready = true;
    registry_timers_start();
    uv_timer_init(G.loop, &G.tick);
    uv_timer_start(&G.tick, on_tick, 100, 100);
    uv_signal_init(G.loop, &G.sighup);
    uv_signal_init(G.loop, &G.sigterm);
    uv_signal_init(G.loop, &G.sigint);
    uv_signal_start(&G.sighup, on_signal, SIGHUP);
    uv_signal_start(&G.sigterm, on_signal, SIGTERM);
    uv_signal_start(&G.sigint, on_signal, SIGINT);
    for (size_t i = 0; i < cfg->nlisten; i++)
        mg_info("listening on %s:%u", cfg->listen[i].host, cfg->listen[i].port);
    if (cfg->admin_enabled && G.admin)
        mg_info("admin API on %s:%u%s", cfg->admin.host, cfg->admin.port,
                G.reg ? " (service registry: Consul API under /v1/)" : "");
    mg_info("%u workers, %zu routes, %zu clusters", cfg->workers, cfg->nroutes, cfg->nclusters);
    mg_snapshot_unref(snap);
    uv_run(G.loop, UV_RUN_DEFAULT);
    mg_server_free(G.srv);
    registry_stop();
    mg_alog_stop();
    uv_loop_close(G.loop);
    mg_info("stopped");
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("meshgate %s\n", MG_VERSION);
        return 0;
    }
    if (strcmp(argv[1], "run") == 0 || strcmp(argv[1], "check") == 0) {
        if (parse_files(argc, argv, 2))
            return 2;
        return strcmp(argv[1], "run") == 0 ? cmd_run() : cmd_check();
    }
    if (strcmp(argv[1], "config") == 0 && argc > 2 && strcmp(argv[2], "print") == 0) {
        if (parse_files(argc, argv, 3))
            return 2;
        return cmd_print();
    }
    /* `meshgate -c FILE` is `meshgate run -c FILE`. */
    if (strcmp(argv[1], "-c") == 0) {
        if (parse_files(argc, argv, 1))
            return 2;
        return cmd_run();
    }
    fprintf(stderr, "meshgate: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
