/* meshgate: command line and the control thread.
 *
 *   meshgate run -c FILE [-c FILE ...]    serve in the foreground
 *   meshgate check -c FILE [-c FILE ...]  validate, print FILE:LINE:COL: message
 *
 * The main thread runs the control loop: signals (SIGHUP reload, SIGTERM /
 * SIGINT drain and exit), the admin API, and config loading. Workers are
 * started by the proxy module. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "admin/admin.h"
#include "config/config.h"
#include "core/err.h"
#include "core/log.h"
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

static int load(mg_snapshot_t **out, char *err, size_t errlen)
{
    mg_config_t *cfg = NULL;
    int rc = mg_config_load(G.files, G.nfiles, &cfg, err, errlen);
    if (rc)
        return rc;
    return mg_snapshot_build(cfg, out, err, errlen);
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
        mg_server_swap(G.srv, snap);
        if (G.health)
            mg_health_update(G.health, snap);
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
    mg_snapshot_t *snap = NULL;
    rc = mg_snapshot_build(first, &snap, err, sizeof err);
    if (rc) {
        fprintf(stderr, "%s\n", err[0] ? err : mg_strerror(rc));
        return 1;
    }
    const mg_config_t *cfg = snap->cfg;
    rc = mg_server_start(G.loop, snap, on_server_exit, NULL, &G.srv, err, sizeof err);
    if (rc) {
        fprintf(stderr, "meshgate: %s\n", err[0] ? err : mg_strerror(rc));
        mg_snapshot_unref(snap);
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
        }
    }
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
        mg_info("admin API on %s:%u", cfg->admin.host, cfg->admin.port);
    mg_info("%u workers, %zu routes, %zu clusters", cfg->workers, cfg->nroutes, cfg->nclusters);
    mg_snapshot_unref(snap);
    uv_run(G.loop, UV_RUN_DEFAULT);
    mg_server_free(G.srv);
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
