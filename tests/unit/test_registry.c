/* test_registry: the embedded registry model with a fake clock — TTL
 * expiry and reaping, indexes, listener events, check merging on
 * re-registration, persist-hook veto (atomicity), limits, the cluster
 * snapshot with labels, and the SQLite store round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <unistd.h>

#include "core/err.h"
#include "discovery/regjson.h"
#include "discovery/registry.h"
#include "discovery/store.h"

static int reg_json(mg_registry_t *r, const char *json, unsigned flags, int64_t now)
{
    mg_reg_def_t d;
    char err[256];
    int rc = mg_regjson_parse(json, strlen(json), &d, err, sizeof err);
    if (rc) {
        print_error("parse: %s\n", err);
        return rc;
    }
    rc = mg_registry_register(r, &d, flags, now, err, sizeof err);
    if (rc) print_message("register: %s\n", err);
    return rc;
}

typedef struct {
    int n;
    mg_reg_event_t last;
    char service[64];
    int endpoints_changed;
} events_t;

static void on_event(void *ud, const mg_reg_event_t *ev)
{
    events_t *e = ud;
    e->n++;
    e->last = *ev;
    snprintf(e->service, sizeof e->service, "%s", ev->service);
    e->endpoints_changed += ev->endpoints_changed;
}

static void test_ttl_lifecycle(void **st)
{
    (void)st;
    mg_registry_t *r = mg_registry_new(NULL);
    events_t ev = { 0 };
    mg_registry_add_listener(r, on_event, &ev);
    int64_t now = 5000;
    assert_int_equal(reg_json(r, "{\"ID\":\"o1\",\"Name\":\"orders\",\"Port\":81,"
                                 "\"Check\":{\"TTL\":\"10s\",\"DeregisterCriticalServiceAfter\":\"2m\"}}", 0, now), 0);
    assert_int_equal(ev.n, 1);
    assert_int_equal(ev.last.kind, MG_REG_EV_REGISTERED);
    const mg_reg_check_t *c = mg_registry_check_get(r, "service:o1");
    assert_non_null(c);
    assert_int_equal(c->status, MG_CHECK_CRITICAL); /* Consul: TTL checks start critical */
    assert_int_equal(mg_registry_next_deadline(r), now + 120000); /* reaping, since it is critical */

    /* the snapshot has no passing endpoint yet */
    mg_disco_snapshot_t *s = mg_registry_snapshot(r, false);
    assert_int_equal(mg_disco_snapshot_find(s, "orders")->neps, 0);
    mg_disco_snapshot_free(s);

    uint64_t i0 = mg_registry_index(r, "orders");
    assert_int_equal(mg_registry_check_ttl(r, "service:o1", MG_CHECK_PASSING, "up", now), 0);
    assert_true(mg_registry_index(r, "orders") > i0);
    assert_int_equal(ev.last.kind, MG_REG_EV_CHECK);
    assert_true(ev.last.endpoints_changed);
    assert_int_equal(ev.last.status, MG_CHECK_PASSING);
    assert_int_equal(mg_registry_next_deadline(r), now + 10000);

    /* same status again: deadline moves, no index bump, no event */
    uint64_t i1 = mg_registry_index(r, "orders");
    int n = ev.n;
    now += 8000;
    assert_int_equal(mg_registry_check_ttl(r, "service:o1", MG_CHECK_PASSING, "still up", now), 0);
    assert_int_equal(mg_registry_index(r, "orders"), i1);
    assert_int_equal(ev.n, n);
    assert_string_equal(c->output, "still up");
    assert_int_equal(mg_registry_expire(r, now + 9999), 0);

    /* not refreshed: critical exactly at the deadline */
    now += 10000;
    assert_int_equal(mg_registry_expire(r, now), 1);
    assert_int_equal(c->status, MG_CHECK_CRITICAL);
    assert_string_equal(c->output, "TTL expired (last output before timeout follows): still up");
    assert_int_equal(ev.last.kind, MG_REG_EV_CHECK);
    assert_true(ev.last.endpoints_changed);
    assert_int_equal(mg_registry_stats(r)->ttl_expired, 1);
    assert_int_equal(mg_registry_next_deadline(r), now + 120000);

    /* a heartbeat while critical revives it and cancels the reaping */
    assert_int_equal(mg_registry_check_ttl(r, "service:o1", MG_CHECK_PASSING, NULL, now + 1000), 0);
    assert_int_equal(mg_registry_expire(r, now + 1000 + 9999), 0);
    now += 1000 + 10000;
    assert_int_equal(mg_registry_expire(r, now), 1);

    /* critical for DeregisterCriticalServiceAfter -> removed */
    assert_int_equal(mg_registry_expire(r, now + 119999), 0);
    assert_int_equal(mg_registry_expire(r, now + 120000), 1);
    assert_null(mg_registry_instance_get(r, "o1"));
    assert_null(mg_registry_check_get(r, "service:o1"));
    assert_int_equal(ev.last.kind, MG_REG_EV_REAPED);
    assert_string_equal(ev.service, "orders");
    assert_int_equal(mg_registry_stats(r)->reaped, 1);
    assert_int_equal(mg_registry_service_count(r), 0);
    assert_int_equal(mg_registry_next_deadline(r), INT64_MAX);
    /* the tombstone keeps the service index moving forward */
    assert_true(mg_registry_index(r, "orders") > i1);

    assert_int_equal(mg_registry_check_ttl(r, "service:o1", MG_CHECK_PASSING, NULL, now), -ENOENT);
    assert_int_equal(mg_registry_deregister(r, "o1", now), -ENOENT);
    mg_registry_free(r);
}

static void test_deregister_floor(void **st)
{
    (void)st;
    /* Consul raises DeregisterCriticalServiceAfter below 1 min to 1 min */
    mg_registry_t *r = mg_registry_new(NULL);
    assert_int_equal(reg_json(r, "{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"DeregisterCriticalServiceAfter\":\"5s\"}}", 0, 0), 0);
    assert_int_equal(mg_registry_instance_get(r, "x")->def.checks[0].deregister_after_ms, 60000);
    assert_int_equal(mg_registry_expire(r, 59999), 0);
    assert_int_equal(mg_registry_expire(r, 60000), 1);
    assert_int_equal(mg_registry_instance_count(r), 0);
    mg_registry_free(r);

    /* configurable */
    mg_registry_opts_t o;
    mg_registry_opts_default(&o);
    o.min_deregister_ms = 1;
    r = mg_registry_new(&o);
    assert_int_equal(reg_json(r, "{\"Name\":\"x\",\"Check\":{\"TTL\":\"1s\",\"DeregisterCriticalServiceAfter\":\"5s\"}}", 0, 0), 0);
    assert_int_equal(mg_registry_expire(r, 5000), 1);
    assert_int_equal(mg_registry_instance_count(r), 0);
    mg_registry_free(r);
}

static void test_reregister_and_checks(void **st)
{
    (void)st;
    mg_registry_t *r = mg_registry_new(NULL);
    events_t ev = { 0 };
    mg_registry_add_listener(r, on_event, &ev);
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"pay\",\"Check\":{\"TTL\":\"10s\"}}", 0, 0), 0);
    assert_int_equal(mg_registry_check_ttl(r, "service:p1", MG_CHECK_PASSING, "ok", 0), 0);
    uint64_t idx = mg_registry_index(r, "pay");
    int n = ev.n;

    /* identical re-registration: no change at all */
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"pay\",\"Check\":{\"TTL\":\"10s\"}}", 0, 1000), 0);
    assert_int_equal(mg_registry_index(r, "pay"), idx);
    assert_int_equal(ev.n, n);

    /* changed definition keeps the check's state */
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"pay\",\"Port\":9,\"Check\":{\"TTL\":\"10s\"}}", 0, 2000), 0);
    assert_true(mg_registry_index(r, "pay") > idx);
    const mg_reg_check_t *c = mg_registry_check_get(r, "service:p1");
    assert_int_equal(c->status, MG_CHECK_PASSING);
    assert_string_equal(c->output, "ok");
    assert_int_equal(c->ttl_deadline_ms, 10000);
    const mg_reg_instance_t *in = mg_registry_instance_get(r, "p1");
    assert_true(in->modify_index > in->create_index);

    /* without replace-existing-checks, old checks not named are kept */
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"pay\",\"Check\":{\"CheckID\":\"other\",\"TTL\":\"5s\"}}", 0, 3000), 0);
    assert_int_equal(mg_registry_instance_get(r, "p1")->def.nchecks, 2);
    assert_non_null(mg_registry_check_get(r, "service:p1"));
    /* with it, they go */
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"pay\",\"Check\":{\"CheckID\":\"other\",\"TTL\":\"5s\"}}",
                              MG_REG_REPLACE_CHECKS, 4000), 0);
    assert_int_equal(mg_registry_instance_get(r, "p1")->def.nchecks, 1);
    assert_null(mg_registry_check_get(r, "service:p1"));

    /* a check ID owned by another instance is refused */
    char err[256];
    mg_reg_def_t d;
    const char *j2 = "{\"ID\":\"p2\",\"Name\":\"pay\",\"Check\":{\"CheckID\":\"other\",\"TTL\":\"5s\"}}";
    assert_int_equal(mg_regjson_parse(j2, strlen(j2), &d, err, sizeof err), 0);
    assert_int_equal(mg_registry_register(r, &d, 0, 0, err, sizeof err), MG_EPARSE);
    assert_non_null(strstr(err, "Check.CheckID: \"other\" is already used by service instance \"p1\""));
    assert_null(mg_registry_instance_get(r, "p2"));

    /* moving an ID to another service name */
    assert_int_equal(reg_json(r, "{\"ID\":\"p1\",\"Name\":\"billing\"}", MG_REG_REPLACE_CHECKS, 5000), 0);
    mg_reg_service_view_t v;
    assert_false(mg_registry_service_get(r, "pay", &v));
    assert_true(mg_registry_service_get(r, "billing", &v));
    assert_int_equal(mg_registry_check_count(r), 0);

    /* active-checker results for HTTP checks */
    assert_int_equal(reg_json(r, "{\"ID\":\"h1\",\"Name\":\"h\",\"Check\":{\"HTTP\":\"http://127.0.0.1:1/\",\"Interval\":\"2s\"}}", 0, 0), 0);
    assert_int_equal(mg_registry_check_result(r, "service:h1", MG_CHECK_PASSING, "200 OK", 0), 0);
    assert_int_equal(mg_registry_check_ttl(r, "service:h1", MG_CHECK_PASSING, NULL, 0), MG_EPARSE);
    mg_reg_def_t t;
    const char *j3 = "{\"ID\":\"t1\",\"Name\":\"t\",\"Check\":{\"TTL\":\"5s\"}}";
    assert_int_equal(mg_regjson_parse(j3, strlen(j3), &t, err, sizeof err), 0);
    assert_int_equal(mg_registry_register(r, &t, 0, 0, err, sizeof err), 0);
    assert_int_equal(mg_registry_check_result(r, "service:t1", MG_CHECK_PASSING, NULL, 0), MG_EPARSE);
    mg_registry_free(r);
}

static int veto_save(void *ud, const mg_reg_instance_t *inst, uint64_t index)
{
    (void)inst;
    (void)index;
    return *(int *)ud;
}

static int veto_remove(void *ud, const char *id, uint64_t index)
{
    (void)id;
    (void)index;
    return *(int *)ud;
}

static void test_persist_veto_is_atomic(void **st)
{
    (void)st;
    mg_registry_t *r = mg_registry_new(NULL);
    int veto = 0;
    mg_reg_persist_t p = { veto_save, veto_remove, NULL };
    mg_registry_set_persist(r, &p, &veto);
    assert_int_equal(reg_json(r, "{\"ID\":\"a\",\"Name\":\"s\",\"Port\":1,\"Check\":{\"TTL\":\"5s\"}}", 0, 0), 0);
    uint64_t idx = mg_registry_index(r, NULL);
    veto = -EIO;
    assert_int_equal(reg_json(r, "{\"ID\":\"a\",\"Name\":\"s\",\"Port\":2,\"Check\":{\"TTL\":\"9s\"}}", 0, 0), -EIO);
    assert_int_equal(reg_json(r, "{\"ID\":\"b\",\"Name\":\"s2\"}", 0, 0), -EIO);
    assert_int_equal(mg_registry_instance_get(r, "a")->def.port, 1);
    assert_int_equal(mg_registry_instance_get(r, "a")->def.checks[0].ttl_ms, 5000);
    assert_null(mg_registry_instance_get(r, "b"));
    assert_int_equal(mg_registry_service_count(r), 1);
    assert_int_equal(mg_registry_index(r, NULL), idx);
    assert_int_equal(mg_registry_deregister(r, "a", 0), -EIO);
    assert_non_null(mg_registry_instance_get(r, "a"));
    assert_int_equal(mg_registry_stats(r)->persist_errors, 3);
    veto = 0;
    assert_int_equal(mg_registry_deregister(r, "a", 0), 0);
    mg_registry_free(r);
}

static void test_limits(void **st)
{
    (void)st;
    mg_registry_opts_t o;
    mg_registry_opts_default(&o);
    o.max_instances = 3;
    o.max_services = 2;
    o.max_checks_per_instance = 2;
    mg_registry_t *r = mg_registry_new(&o);
    assert_int_equal(reg_json(r, "{\"ID\":\"a1\",\"Name\":\"a\"}", 0, 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"b1\",\"Name\":\"b\"}", 0, 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"c1\",\"Name\":\"c\"}", 0, 0), MG_ELIMIT); /* services */
    assert_int_equal(reg_json(r, "{\"ID\":\"a2\",\"Name\":\"a\"}", 0, 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"a3\",\"Name\":\"a\"}", 0, 0), MG_ELIMIT); /* instances */
    assert_int_equal(reg_json(r, "{\"ID\":\"a2\",\"Name\":\"a\",\"Checks\":[{\"TTL\":\"1s\"},{\"TTL\":\"1s\"},{\"TTL\":\"1s\"}]}", 0, 0),
                     MG_EPARSE);
    assert_int_equal(mg_registry_stats(r)->rejected_full, 2);
    assert_int_equal(mg_registry_deregister(r, "b1", 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"c1\",\"Name\":\"c\"}", 0, 0), 0);
    mg_registry_free(r);
}

static void test_snapshot_labels(void **st)
{
    (void)st;
    mg_registry_t *r = mg_registry_new(NULL);
    assert_int_equal(reg_json(r, "{\"ID\":\"u1\",\"Name\":\"users\",\"Address\":\"10.0.0.1\",\"Port\":8080,"
                                 "\"Tags\":[\"version=v2\",\"canary\",\"track=beta\"],\"Meta\":{\"version\":\"v1\"},"
                                 "\"Weights\":{\"Passing\":10,\"Warning\":1}}", 0, 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"u2\",\"Name\":\"users\",\"Port\":8081,\"Check\":{\"TTL\":\"5s\",\"Status\":\"warning\"}}", 0, 0), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"u3\",\"Name\":\"users\",\"Port\":8082,\"Check\":{\"TTL\":\"5s\"}}", 0, 0), 0);
    mg_disco_snapshot_t *s = mg_registry_snapshot(r, false);
    assert_non_null(s);
    assert_int_equal(s->nservices, 1);
    const mg_disco_service_t *ds = mg_disco_snapshot_find(s, "users");
    assert_non_null(ds);
    assert_null(mg_disco_snapshot_find(s, "nope"));
    assert_int_equal(ds->neps, 1); /* only passing */
    const mg_disco_endpoint_t *ep = &ds->eps[0];
    assert_string_equal(ep->id, "u1");
    assert_string_equal(ep->address, "10.0.0.1");
    assert_int_equal(ep->port, 8080);
    assert_int_equal(ep->weight, 10);
    assert_string_equal(mg_disco_endpoint_label(ep, "version"), "v1"); /* Meta wins over a tag */
    assert_string_equal(mg_disco_endpoint_label(ep, "track"), "beta");
    assert_null(mg_disco_endpoint_label(ep, "canary"));
    assert_int_equal(ep->ntags, 3);
    assert_int_equal(ep->nlabels, 2);
    mg_disco_snapshot_free(s);

    s = mg_registry_snapshot(r, true);
    ds = mg_disco_snapshot_find(s, "users");
    assert_int_equal(ds->neps, 2);
    assert_string_equal(ds->eps[1].id, "u2");
    assert_string_equal(ds->eps[1].address, "127.0.0.1"); /* node address */
    assert_int_equal(ds->eps[1].status, MG_CHECK_WARNING);
    assert_int_equal(ds->eps[1].weight, 1);
    mg_registry_free(r); /* the snapshot is self-contained */
    assert_string_equal(ds->eps[0].id, "u1");
    mg_disco_snapshot_free(s);
}

static void test_duration_parse(void **st)
{
    (void)st;
    int64_t ms;
    assert_int_equal(mg_duration_parse("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(mg_duration_parse("1m30s", &ms), 0);
    assert_int_equal(ms, 90000);
    assert_int_equal(mg_duration_parse("1.5h", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(mg_duration_parse("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(mg_duration_parse("10us", &ms), 0);
    assert_int_equal(ms, 1);
    assert_int_equal(mg_duration_parse("0", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(mg_duration_parse("10", &ms), -EINVAL);
    assert_int_equal(mg_duration_parse("-1s", &ms), -EINVAL);
    assert_int_equal(mg_duration_parse("s", &ms), -EINVAL);
    assert_int_equal(mg_duration_parse("5d", &ms), -EINVAL);
    assert_int_equal(mg_duration_parse("", &ms), -EINVAL);
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) print_error("could not remove %s\n", dir);
}

static void test_store_round_trip(void **st)
{
    (void)st;
    char dir[] = "/tmp/mg_regstore_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char data[300];
    snprintf(data, sizeof data, "%s/data", dir); /* created by the store */
    char err[256];
    int64_t now = 1000, wall = 1700000000000;

    mg_store_t *s;
    assert_int_equal(mg_store_open(data, &s, err, sizeof err), 0);
    mg_registry_t *r = mg_registry_new(NULL);
    assert_int_equal(mg_store_load(s, r, now, wall, err, sizeof err), 0);
    mg_store_attach(s, r);
    assert_int_equal(reg_json(r, "{\"ID\":\"w1\",\"Name\":\"web\",\"Address\":\"10.1.1.1\",\"Port\":80,"
                                 "\"Tags\":[\"a\",\"version=v1\"],\"Meta\":{\"zone\":\"eu\"},\"Weights\":{\"Passing\":5,\"Warning\":2},"
                                 "\"Checks\":[{\"TTL\":\"30s\",\"DeregisterCriticalServiceAfter\":\"10m\"},"
                                 "{\"Name\":\"http\",\"HTTP\":\"https://10.1.1.1/h\",\"Method\":\"HEAD\",\"Interval\":\"10s\","
                                 "\"Timeout\":\"2s\",\"TLSSkipVerify\":true,\"Header\":{\"X-T\":[\"1\"]},\"Status\":\"passing\"}]}", 0, now), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"w2\",\"Name\":\"web\",\"Port\":81,\"Check\":{\"TTL\":\"30s\"}}", 0, now), 0);
    assert_int_equal(reg_json(r, "{\"ID\":\"gone\",\"Name\":\"tmp\"}", 0, now), 0);
    assert_int_equal(mg_registry_deregister(r, "gone", now), 0);
    /* w1's TTL passes, w2's expires */
    assert_int_equal(mg_registry_check_ttl(r, "service:w1:1", MG_CHECK_PASSING, "fine", now), 0);
    assert_int_equal(mg_registry_check_ttl(r, "service:w2", MG_CHECK_PASSING, "fine", now), 0);
    assert_int_equal(mg_store_sync(s, r, now, wall), 0);
    assert_int_equal(mg_registry_check_ttl(r, "service:w2", MG_CHECK_CRITICAL, "down", now + 100), 0);
    assert_int_equal(mg_store_sync(s, r, now + 100, wall + 100), 0);
    uint64_t idx = mg_registry_index(r, NULL);
    mg_registry_free(r);
    mg_store_close(s);

    /* restart 10 s later (new clock origin) */
    int64_t now2 = 50, wall2 = wall + 10000;
    assert_int_equal(mg_store_open(data, &s, err, sizeof err), 0);
    r = mg_registry_new(NULL);
    assert_int_equal(mg_store_load(s, r, now2, wall2, err, sizeof err), 2);
    mg_store_attach(s, r);
    assert_true(mg_registry_index(r, NULL) >= idx); /* X-Consul-Index never goes back */
    assert_null(mg_registry_instance_get(r, "gone"));
    const mg_reg_instance_t *in = mg_registry_instance_get(r, "w1");
    assert_non_null(in);
    assert_string_equal(in->def.address, "10.1.1.1");
    assert_int_equal(in->def.port, 80);
    assert_int_equal(in->def.ntags, 2);
    assert_string_equal(in->def.meta[0].value, "eu");
    assert_int_equal(in->def.weight_passing, 5);
    assert_int_equal(in->def.nchecks, 2);
    const mg_check_def_t *h = &in->def.checks[1];
    assert_string_equal(h->id, "service:w1:2");
    assert_string_equal(h->name, "http");
    assert_int_equal(h->kind, MG_CHECK_HTTP);
    assert_string_equal(h->method, "HEAD");
    assert_int_equal(h->timeout_ms, 2000);
    assert_true(h->tls_skip_verify);
    assert_int_equal(h->nheaders, 1);
    assert_int_equal(in->def.checks[0].deregister_after_ms, 600000);
    /* unexpired TTL state resumes with its remaining time (30 s - 10 s) */
    const mg_reg_check_t *c1 = mg_registry_check_get(r, "service:w1:1");
    assert_int_equal(c1->status, MG_CHECK_PASSING);
    assert_string_equal(c1->output, "fine");
    assert_int_equal(c1->ttl_deadline_ms, now2 + 20000);
    /* the HTTP check restarts critical despite "Status": "passing" (Consul) */
    assert_int_equal(mg_registry_check_get(r, "service:w1:2")->status, MG_CHECK_CRITICAL);
    /* the failed TTL check stays critical */
    assert_int_equal(mg_registry_check_get(r, "service:w2")->status, MG_CHECK_CRITICAL);

    /* changes after restart are written through too */
    assert_int_equal(mg_registry_deregister(r, "w2", now2), 0);
    mg_registry_free(r);
    mg_store_close(s);

    /* third start, long after every TTL expired */
    assert_int_equal(mg_store_open(data, &s, err, sizeof err), 0);
    r = mg_registry_new(NULL);
    assert_int_equal(mg_store_load(s, r, 0, wall2 + 3600000, err, sizeof err), 1);
    assert_null(mg_registry_instance_get(r, "w2"));
    assert_int_equal(mg_registry_check_get(r, "service:w1:1")->status, MG_CHECK_CRITICAL);
    /* and the reaper clock starts at load */
    assert_int_equal(mg_registry_expire(r, 600000 - 1), 0);
    mg_store_attach(s, r);
    assert_int_equal(mg_registry_expire(r, 600000), 1);
    mg_registry_free(r);
    mg_store_close(s);

    assert_int_equal(mg_store_open(data, &s, err, sizeof err), 0);
    r = mg_registry_new(NULL);
    assert_int_equal(mg_store_load(s, r, 0, wall2, err, sizeof err), 0); /* the reap was persisted */
    mg_registry_free(r);
    mg_store_close(s);
    rm_rf(dir);
}

/* A remote TTL state (another gateway's heartbeat, read from the shared
 * backend) is applied with an event and an index bump, never through the
 * persist hooks; an already expired remote state turns the check critical
 * since its deadline, so reaping counts from the same moment everywhere. */
static int veto_all_check(void *ud, const mg_reg_check_t *c, mg_check_status_t st, const char *o, int64_t d)
{
    (void)c; (void)st; (void)o; (void)d;
    (*(int *)ud)++;
    return -EAGAIN;
}

static void test_check_apply_remote(void **st)
{
    (void)st;
    mg_registry_t *r = mg_registry_new(NULL);
    events_t ev = { 0 };
    mg_registry_add_listener(r, on_event, &ev);
    int64_t now = 1000;
    assert_int_equal(reg_json(r, "{\"ID\":\"a\",\"Name\":\"svc\",\"Port\":80,"
                                 "\"Checks\":[{\"TTL\":\"10s\",\"DeregisterCriticalServiceAfter\":\"1m\"},"
                                 "{\"TCP\":\"127.0.0.1:1\",\"Interval\":\"5s\"}]}", 0, now), 0);
    int calls = 0;
    mg_reg_persist_t p = { NULL, NULL, veto_all_check };
    mg_registry_set_persist(r, &p, &calls);

    /* a local heartbeat goes through the hook, which may veto it */
    assert_int_equal(mg_registry_check_ttl(r, "service:a:1", MG_CHECK_PASSING, "x", now), -EAGAIN);
    assert_int_equal(calls, 1);
    assert_int_equal(mg_registry_check_get(r, "service:a:1")->status, MG_CHECK_CRITICAL);
    assert_int_equal(mg_registry_stats(r)->persist_errors, 1);

    /* a remote state does not: event + index bump on a status change */
    int n0 = ev.n;
    uint64_t i0 = mg_registry_index(r, "svc");
    assert_int_equal(mg_registry_check_apply(r, "service:a:1", MG_CHECK_PASSING, "remote up", now + 9000, now), 0);
    assert_int_equal(calls, 1);
    const mg_reg_check_t *c = mg_registry_check_get(r, "service:a:1");
    assert_int_equal(c->status, MG_CHECK_PASSING);
    assert_string_equal(c->output, "remote up");
    assert_int_equal(c->ttl_deadline_ms, now + 9000);
    assert_false(c->state_dirty);
    assert_int_equal(ev.n, n0 + 1);
    assert_int_equal(ev.last.kind, MG_REG_EV_CHECK);
    assert_true(mg_registry_index(r, "svc") > i0);
    /* the TCP check is still critical (the instance's aggregate) */
    assert_int_equal(ev.last.status, MG_CHECK_CRITICAL);
    assert_int_equal(mg_registry_check_result(r, "service:a:2", MG_CHECK_PASSING, "", now), 0);
    assert_int_equal(ev.last.status, MG_CHECK_PASSING);
    assert_true(ev.last.endpoints_changed);

    /* same status, later deadline: no event, no bump (as a local heartbeat) */
    n0 = ev.n;
    i0 = mg_registry_index(r, "svc");
    assert_int_equal(mg_registry_check_apply(r, "service:a:1", MG_CHECK_PASSING, "remote up", now + 12000, now + 2000), 0);
    assert_int_equal(ev.n, n0);
    assert_int_equal(mg_registry_index(r, "svc"), i0);
    assert_int_equal(mg_registry_next_deadline(r), now + 12000);
    /* expiry follows the applied deadline */
    assert_int_equal(mg_registry_expire(r, now + 11999), 0);
    assert_int_equal(mg_registry_expire(r, now + 12000), 1);
    assert_int_equal(c->status, MG_CHECK_CRITICAL);

    /* remote warning, then a remote state already past its deadline */
    assert_int_equal(mg_registry_check_apply(r, "service:a:1", MG_CHECK_WARNING, "slow", now + 30000, now + 20000), 0);
    assert_int_equal(c->status, MG_CHECK_WARNING);
    n0 = ev.n;
    assert_int_equal(mg_registry_check_apply(r, "service:a:1", MG_CHECK_PASSING, "old", now + 25000, now + 40000), 0);
    assert_int_equal(c->status, MG_CHECK_CRITICAL);
    assert_int_equal(ev.n, n0 + 1);
    assert_string_equal(c->output, "TTL expired (last output before timeout follows): old");
    assert_int_equal(c->critical_since_ms, now + 25000);
    /* applied again: already critical, nothing changes */
    n0 = ev.n;
    assert_int_equal(mg_registry_check_apply(r, "service:a:1", MG_CHECK_PASSING, "old", now + 25000, now + 41000), 0);
    assert_int_equal(ev.n, n0);
    /* reaping counts from the deadline: 1 min after now + 25000 */
    assert_int_equal(mg_registry_next_deadline(r), now + 25000 + 60000);
    assert_int_equal(mg_registry_expire(r, now + 84999), 0);
    assert_int_equal(mg_registry_expire(r, now + 85000), 1);
    assert_null(mg_registry_instance_get(r, "a"));

    /* errors */
    assert_int_equal(mg_registry_check_apply(r, "nope", MG_CHECK_PASSING, "", 1, 0), -ENOENT);
    assert_int_equal(reg_json(r, "{\"ID\":\"h\",\"Name\":\"svc\",\"Port\":80,"
                                 "\"Check\":{\"HTTP\":\"http://127.0.0.1:1/\",\"Interval\":\"5s\"}}", 0, now), 0);
    assert_int_equal(mg_registry_check_apply(r, "service:h", MG_CHECK_PASSING, "", now + 1000, now), MG_EPARSE);
    mg_registry_set_persist(r, NULL, NULL);
    mg_registry_free(r);
}

static void test_store_open_error(void **st)
{
    (void)st;
    mg_store_t *s;
    char err[256];
    assert_true(mg_store_open("/proc/definitely/not/here", &s, err, sizeof err) < 0);
    assert_null(s);
    assert_non_null(strstr(err, "/proc/definitely/not/here"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ttl_lifecycle),
        cmocka_unit_test(test_deregister_floor),
        cmocka_unit_test(test_reregister_and_checks),
        cmocka_unit_test(test_persist_veto_is_atomic),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_snapshot_labels),
        cmocka_unit_test(test_duration_parse),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_store_open_error),
        cmocka_unit_test(test_check_apply_remote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
