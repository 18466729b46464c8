/* test_consul_api: the Consul-compatible registry API as a client sees it:
 * a register / heartbeat / query / deregister sequence with a fake clock,
 * every malformed registration field answered 400 naming the field (and
 * nothing half-registered), token enforcement, blocking-query verdicts and
 * the JSON shapes Consul clients parse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "discovery/consul_api.h"
#include "discovery/registry.h"

typedef struct {
    mg_registry_t *reg;
    mg_consul_api_t *api;
    mg_consul_resp_t resp;
    int64_t now;
} fx_t;

static fx_t *fx_new(const char *token)
{
    fx_t *f = calloc(1, sizeof *f);
    f->reg = mg_registry_new(NULL);
    mg_consul_opts_t o = { .token = token };
    f->api = mg_consul_api_new(f->reg, &o);
    mg_consul_resp_init(&f->resp);
    f->now = 1000000;
    return f;
}

static void fx_free(fx_t *f)
{
    mg_consul_resp_free(&f->resp);
    mg_consul_api_free(f->api);
    mg_registry_free(f->reg);
    free(f);
}

/* target = path[?query]; hdr = "X-Consul-Token: t" or "Authorization: Bearer t" or NULL. */
static int call_ex(fx_t *f, const char *method, const char *target, const char *body, const char *hdr,
                   unsigned flags, mg_consul_verdict_t *verdict)
{
    mg_consul_req_t rq = { 0 };
    rq.method = mg_slice_cstr(method);
    const char *q = strchr(target, '?');
    rq.path = q ? mg_slice(target, (size_t)(q - target)) : mg_slice_cstr(target);
    rq.query = q ? mg_slice_cstr(q + 1) : MG_SLICE_NULL;
    if (hdr && !strncmp(hdr, "X-Consul-Token: ", 16)) rq.x_consul_token = mg_slice_cstr(hdr + 16);
    if (hdr && !strncmp(hdr, "Authorization: ", 15)) rq.authorization = mg_slice_cstr(hdr + 15);
    rq.body = body ? mg_slice_cstr(body) : MG_SLICE_NULL;
    mg_consul_verdict_t v = mg_consul_handle(f->api, &rq, flags, f->now, &f->resp);
    if (verdict) *verdict = v;
    else assert_int_equal(v, MG_CONSUL_DONE);
    return f->resp.status;
}

static int call(fx_t *f, const char *method, const char *target, const char *body)
{
    return call_ex(f, method, target, body, NULL, 0, NULL);
}

static const char *body(fx_t *f) { return f->resp.body.p ? f->resp.body.p : ""; }

static json_t *jbody(fx_t *f)
{
    json_error_t e;
    json_t *j = json_loads(body(f), 0, &e);
    if (!j) fail_msg("bad JSON (%s): %s", e.text, body(f));
    return j;
}

static uint64_t hdr_index(fx_t *f)
{
    const char *p = strstr(f->resp.headers, "X-Consul-Index: ");
    assert_non_null(p);
    return strtoull(p + 16, NULL, 10);
}

static const char *REG_WEB1 =
    "{\"ID\":\"web-1\",\"Name\":\"web\",\"Address\":\"10.0.0.1\",\"Port\":8080,"
    "\"Tags\":[\"primary\",\"version=v1\"],\"Meta\":{\"version\":\"v1\",\"zone\":\"a\"},"
    "\"Check\":{\"TTL\":\"10s\",\"DeregisterCriticalServiceAfter\":\"1m\"}}";

/* The call sequence of a typical Consul client library. */
static void test_client_sequence(void **st)
{
    (void)st;
    fx_t *f = fx_new(NULL);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", REG_WEB1), 200);
    assert_int_equal(f->resp.body.len, 0);

    /* TTL check starts critical: not in ?passing */
    assert_int_equal(call(f, "GET", "/v1/health/service/web?passing", NULL), 200);
    assert_string_equal(body(f), "[]");
    uint64_t idx0 = hdr_index(f);
    assert_true(idx0 > 0);

    /* the agent view */
    assert_int_equal(call(f, "GET", "/v1/agent/checks", NULL), 200);
    json_t *j = jbody(f);
    json_t *c = json_object_get(j, "service:web-1");
    assert_non_null(c);
    assert_string_equal(json_string_value(json_object_get(c, "Status")), "critical");
    assert_string_equal(json_string_value(json_object_get(c, "Name")), "Service 'web' check");
    assert_string_equal(json_string_value(json_object_get(c, "Type")), "ttl");
    json_decref(j);

    /* heartbeat */
    assert_int_equal(call(f, "PUT", "/v1/agent/check/pass/service:web-1?note=all%20good", NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/health/service/web?passing", NULL), 200);
    assert_true(hdr_index(f) > idx0);
    j = jbody(f);
    assert_int_equal(json_array_size(j), 1);
    json_t *e = json_array_get(j, 0);
    json_t *node = json_object_get(e, "Node"), *svc = json_object_get(e, "Service"), *checks = json_object_get(e, "Checks");
    assert_string_equal(json_string_value(json_object_get(node, "Node")), "meshgate");
    assert_string_equal(json_string_value(json_object_get(node, "Address")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(svc, "ID")), "web-1");
    assert_string_equal(json_string_value(json_object_get(svc, "Service")), "web");
    assert_string_equal(json_string_value(json_object_get(svc, "Address")), "10.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(svc, "Port")), 8080);
    assert_string_equal(json_string_value(json_array_get(json_object_get(svc, "Tags"), 1)), "version=v1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(svc, "Meta"), "zone")), "a");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(svc, "Weights"), "Passing")), 1);
    assert_int_equal(json_array_size(checks), 2); /* serfHealth + the TTL check */
    assert_string_equal(json_string_value(json_object_get(json_array_get(checks, 0), "CheckID")), "serfHealth");
    json_t *ttl = json_array_get(checks, 1);
    assert_string_equal(json_string_value(json_object_get(ttl, "CheckID")), "service:web-1");
    assert_string_equal(json_string_value(json_object_get(ttl, "Status")), "passing");
    assert_string_equal(json_string_value(json_object_get(ttl, "Output")), "all good");
    assert_string_equal(json_string_value(json_object_get(ttl, "ServiceID")), "web-1");
    json_decref(j);

    /* heartbeats every 5 s keep it passing, expire() is a no-op */
    for (int i = 0; i < 10; i++) {
        f->now += 5000;
        mg_registry_expire(f->reg, f->now);
        assert_int_equal(call(f, "PUT", "/v1/agent/check/update/service:web-1",
                              "{\"Status\":\"passing\",\"Output\":\"ok\"}"), 200);
    }
    assert_int_equal(mg_reg_instance_status(mg_registry_instance_get(f->reg, "web-1")), MG_CHECK_PASSING);

    /* warn: out of ?passing but still listed without it */
    assert_int_equal(call(f, "PUT", "/v1/agent/check/warn/service:web-1", NULL), 200);
    call(f, "GET", "/v1/health/service/web?passing=true", NULL);
    assert_string_equal(body(f), "[]");
    call(f, "GET", "/v1/health/service/web", NULL);
    j = jbody(f);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);

    /* catalog and agent listings */
    assert_int_equal(call(f, "GET", "/v1/catalog/services", NULL), 200);
    assert_string_equal(body(f), "{\"web\":[\"primary\",\"version=v1\"]}");
    assert_int_equal(call(f, "GET", "/v1/catalog/service/web?tag=primary", NULL), 200);
    j = jbody(f);
    assert_int_equal(json_array_size(j), 1);
    e = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(e, "ServiceID")), "web-1");
    assert_string_equal(json_string_value(json_object_get(e, "ServiceAddress")), "10.0.0.1");
    assert_int_equal(json_integer_value(json_object_get(e, "ServicePort")), 8080);
    assert_string_equal(json_string_value(json_object_get(e, "Node")), "meshgate");
    json_decref(j);
    call(f, "GET", "/v1/catalog/service/web?tag=nope", NULL);
    assert_string_equal(body(f), "[]");
    assert_int_equal(call(f, "GET", "/v1/agent/services", NULL), 200);
    j = jbody(f);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "web-1"), "Service")), "web");
    json_decref(j);
    assert_int_equal(call(f, "GET", "/v1/agent/service/web-1", NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/status/leader", NULL), 200);
    assert_int_equal(call(f, "GET", "/v1/agent/self", NULL), 200);
    j = jbody(f);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "Config"), "Datacenter")), "dc1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "Config"), "NodeName")), "meshgate");
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "Member"), "Addr")), "127.0.0.1");
    json_decref(j);
    assert_int_equal(call(f, "PUT", "/v1/agent/self", NULL), 405);

    /* deregister */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/deregister/web-1", NULL), 200);
    call(f, "GET", "/v1/health/service/web", NULL);
    assert_string_equal(body(f), "[]");
    call(f, "GET", "/v1/catalog/services", NULL);
    assert_string_equal(body(f), "{}");
    assert_int_equal(call(f, "PUT", "/v1/agent/service/deregister/web-1", NULL), 404);
    assert_non_null(strstr(body(f), "Unknown service ID"));
    assert_int_equal(call(f, "PUT", "/v1/agent/check/pass/service:web-1", NULL), 404);
    fx_free(f);
}

/* TTL not refreshed -> critical at once (leaves ?passing), removed after
 * DeregisterCriticalServiceAfter. */
static void test_ttl_expiry_over_api(void **st)
{
    (void)st;
    fx_t *f = fx_new(NULL);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", REG_WEB1), 200);
    call(f, "PUT", "/v1/agent/check/pass/service:web-1?note=alive", NULL);
    f->now += 10000;
    assert_int_equal(mg_registry_expire(f->reg, f->now), 1);
    call(f, "GET", "/v1/health/service/web?passing", NULL);
    assert_string_equal(body(f), "[]");
    call(f, "GET", "/v1/agent/checks", NULL);
    assert_non_null(strstr(body(f), "TTL expired (last output before timeout follows): alive"));
    f->now += 59999;
    assert_int_equal(mg_registry_expire(f->reg, f->now), 0);
    f->now += 1;
    assert_int_equal(mg_registry_expire(f->reg, f->now), 1);
    call(f, "GET", "/v1/agent/services", NULL);
    assert_string_equal(body(f), "{}");
    fx_free(f);
}

typedef struct {
    const char *body;
    const char *msg; /* substring of the 400 body */
} bad_t;

static void test_malformed(void **st)
{
    (void)st;
    static const bad_t cases[] = {
        { "not json", "Request decode failed: line 1" },
        { "[1,2]", "body: expected a JSON object" },
        { "{}", "Missing service name" },
        { "{\"Name\":\"\"}", "Missing service name" },
        { "{\"Name\":5}", "Name: expected a string" },
        { "{\"Name\":\"a\",\"ID\":[]}", "ID: expected a string" },
        { "{\"Name\":\"a\",\"Address\":1}", "Address: expected a string" },
        { "{\"Name\":\"a\",\"Address\":\"0.0.0.0\"}", "Invalid service address" },
        { "{\"Name\":\"a\",\"Port\":\"80\"}", "Port: expected a number" },
        { "{\"Name\":\"a\",\"Port\":70000}", "Port: must be an integer from 0 to 65535" },
        { "{\"Name\":\"a\",\"Port\":80.5}", "Port: must be an integer" },
        { "{\"Name\":\"a\",\"Port\":-1}", "Port: must be an integer" },
        { "{\"Name\":\"a\",\"Tags\":\"x\"}", "Tags: expected an array of strings" },
        { "{\"Name\":\"a\",\"Tags\":[\"x\",3]}", "Tags[1]: expected a string" },
        { "{\"Name\":\"a\",\"Meta\":[]}", "Meta: expected an object of strings" },
        { "{\"Name\":\"a\",\"Meta\":{\"v\":1}}", "Meta[\"v\"]: expected a string" },
        { "{\"Name\":\"a\",\"Meta\":{\"bad key\":\"1\"}}", "Invalid Service Meta: Meta[\"bad key\"]" },
        { "{\"Name\":\"a\",\"Meta\":{\"consul-x\":\"1\"}}", "reserved" },
        { "{\"Name\":\"a\",\"Weights\":{\"Passing\":0}}", "Weights.Passing" },
        { "{\"Name\":\"a\",\"Weights\":{\"Passing\":\"1\"}}", "Weights.Passing" },
        { "{\"Name\":\"a\",\"EnableTagOverride\":\"yes\"}", "EnableTagOverride: expected true or false" },
        { "{\"Name\":\"a\",\"Kind\":\"connect-proxy\"}", "Kind:" },
        { "{\"Name\":\"a\",\"Check\":5}", "Check: expected an object" },
        { "{\"Name\":\"a\",\"Check\":{\"TTL\":0}}", "Check.TTL: must be > 0" },
        { "{\"Name\":\"a\",\"Check\":{\"TTL\":\"ten\"}}", "Check.TTL: expected a duration" },
        { "{\"Name\":\"a\",\"Check\":{\"TTL\":\"0s\"}}", "Check.TTL: must be > 0" },
        { "{\"Name\":\"a\",\"Check\":{\"HTTP\":\"http://x/h\"}}", "Check.Interval: must be > 0" },
        { "{\"Name\":\"a\",\"Check\":{\"HTTP\":\"ftp://x\",\"Interval\":\"5s\"}}", "Check.HTTP: must be an http" },
        { "{\"Name\":\"a\",\"Check\":{\"HTTP\":7,\"Interval\":\"5s\"}}", "Check.HTTP: expected a string" },
        { "{\"Name\":\"a\",\"Check\":{\"TCP\":\"nohost\",\"Interval\":\"5s\"}}", "Check.TCP: must be \"host:port\"" },
        { "{\"Name\":\"a\",\"Check\":{\"TCP\":\"h:1\",\"TTL\":\"5s\"}}", "exactly one of HTTP, TCP or TTL" },
        { "{\"Name\":\"a\",\"Check\":{\"TTL\":\"5s\",\"Status\":\"ok\"}}", "Check.Status" },
        { "{\"Name\":\"a\",\"Check\":{\"TTL\":\"5s\",\"DeregisterCriticalServiceAfter\":true}}",
          "Check.DeregisterCriticalServiceAfter: expected a duration" },
        { "{\"Name\":\"a\",\"Check\":{\"Args\":[\"/bin/true\"],\"Interval\":\"5s\"}}", "Check.Args: check type not supported" },
        { "{\"Name\":\"a\",\"Check\":{\"GRPC\":\"h:1\",\"Interval\":\"5s\"}}", "Check.GRPC: check type not supported" },
        { "{\"Name\":\"a\",\"Check\":{\"HTTP\":\"http://x\",\"Interval\":\"5s\",\"Header\":{\"A\":\"b\"}}}",
          "Check.Header[\"A\"]: expected an array of strings" },
        { "{\"Name\":\"a\",\"Checks\":{}}", "Checks: expected an array" },
        { "{\"Name\":\"a\",\"Checks\":[{\"TTL\":\"5s\"},{\"TTL\":\"x\"}]}", "Checks[1].TTL: expected a duration" },
        { "{\"Name\":\"a\",\"Checks\":[{\"TTL\":\"5s\",\"CheckID\":\"c\"},{\"TTL\":\"5s\",\"CheckID\":\"c\"}]}",
          "Checks[1].CheckID: duplicate" },
    };
    fx_t *f = fx_new(NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int s = call(f, "PUT", "/v1/agent/service/register", cases[i].body);
        if (s != 400 || !strstr(body(f), cases[i].msg))
            fail_msg("case %zu %s: status %d body \"%s\", want 400 with \"%s\"", i, cases[i].body, s, body(f), cases[i].msg);
        assert_int_equal(mg_registry_instance_count(f->reg), 0); /* nothing half-registered */
        assert_int_equal(mg_registry_check_count(f->reg), 0);
    }
    assert_int_equal(mg_registry_stats(f->reg)->registered, 0);

    /* a bad re-registration leaves the previous one intact */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", REG_WEB1), 200);
    uint64_t idx = mg_registry_index(f->reg, "web");
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register",
                          "{\"ID\":\"web-1\",\"Name\":\"web\",\"Port\":1,\"Checks\":[{\"TTL\":\"5s\"},{\"TTL\":\"bad\"}]}"), 400);
    const mg_reg_instance_t *in = mg_registry_instance_get(f->reg, "web-1");
    assert_non_null(in);
    assert_int_equal(in->def.port, 8080);
    assert_int_equal(mg_registry_index(f->reg, "web"), idx);
    assert_non_null(mg_registry_check_get(f->reg, "service:web-1"));

    /* wrong methods, unknown paths, update bodies */
    assert_int_equal(call(f, "GET", "/v1/agent/service/register", NULL), 405);
    assert_int_equal(call(f, "GET", "/v1/agent/check/update/x", NULL), 405); /* has a body: PUT only */
    assert_int_equal(call(f, "PUT", "/v1/health/service/web", NULL), 405);
    assert_int_equal(call(f, "GET", "/v1/kv/x", NULL), 404);
    assert_int_equal(call(f, "PUT", "/v1/agent/check/update/service:web-1", "{\"Status\":\"great\"}"), 400);
    assert_non_null(strstr(body(f), "Invalid check status"));
    assert_int_equal(call(f, "PUT", "/v1/agent/check/update/service:web-1", "{\"Status\":\"passing\",\"Output\":1}"), 400);
    assert_non_null(strstr(body(f), "Output: expected a string"));
    assert_int_equal(call(f, "GET", "/v1/health/service/web?index=abc", NULL), 400);
    assert_int_equal(call(f, "GET", "/v1/health/service/web?index=1&wait=forever", NULL), 400);
    assert_int_equal(call(f, "GET", "/v1/health/service/web?filter=x", NULL), 400);
    assert_int_equal(call(f, "GET", "/v1/health/service/web?dc=other", NULL), 500);
    fx_free(f);
}

static void test_accepted_forms(void **st)
{
    (void)st;
    fx_t *f = fx_new(NULL);
    /* snake_case / lower-case keys (Consul translates them), numbers as ns,
     * several checks get "service:<id>:N" ids, HTTP + TCP checks */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register",
                          "{\"name\":\"api\",\"port\":9000,\"checks\":["
                          "{\"http\":\"http://10.0.0.2:9000/health\",\"interval\":\"500ms\",\"header\":{\"X-A\":[\"1\",\"2\"]}},"
                          "{\"tcp\":\"10.0.0.2:9000\",\"interval\":5000000000},"
                          "{\"ttl\":\"30s\",\"deregister_critical_service_after\":\"90s\",\"status\":\"passing\"}]}"), 200);
    const mg_reg_instance_t *in = mg_registry_instance_get(f->reg, "api");
    assert_non_null(in);
    assert_int_equal(in->def.nchecks, 3);
    assert_string_equal(in->def.checks[0].id, "service:api:1");
    assert_string_equal(in->def.checks[2].id, "service:api:3");
    assert_int_equal(in->def.checks[0].kind, MG_CHECK_HTTP);
    assert_int_equal(in->def.checks[0].interval_ms, 1000); /* Consul's 1 s floor */
    assert_int_equal(in->def.checks[0].nheaders, 2);
    assert_int_equal(in->def.checks[1].kind, MG_CHECK_TCP);
    assert_int_equal(in->def.checks[1].interval_ms, 5000);
    assert_int_equal(in->def.checks[2].deregister_after_ms, 90000);
    assert_int_equal(in->checks[2].status, MG_CHECK_PASSING); /* explicit Status */
    assert_int_equal(in->checks[0].status, MG_CHECK_CRITICAL);
    /* pass on an HTTP check is refused */
    assert_int_equal(call(f, "PUT", "/v1/agent/check/pass/service:api:1", NULL), 400);
    assert_non_null(strstr(body(f), "does not have associated TTL"));
    /* empty Check object is ignored, as Consul does */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"Name\":\"bare\",\"Check\":{}}"), 200);
    assert_int_equal(mg_registry_instance_get(f->reg, "bare")->def.nchecks, 0);
    /* encoded IDs in paths */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"ID\":\"a b/1\",\"Name\":\"ab\",\"Check\":{\"TTL\":\"5s\"}}"), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/check/pass/service:a%20b%2F1", NULL), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/deregister/a%20b%2F1", NULL), 200);
    fx_free(f);
}

static void test_token(void **st)
{
    (void)st;
    fx_t *f = fx_new("s3cret");
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", REG_WEB1), 403);
    assert_non_null(strstr(body(f), "Permission denied"));
    assert_int_equal(call_ex(f, "PUT", "/v1/agent/service/register", REG_WEB1, "X-Consul-Token: wrong", 0, NULL), 403);
    assert_int_equal(call_ex(f, "PUT", "/v1/agent/service/register", REG_WEB1, "Authorization: Bearer s3cre", 0, NULL), 403);
    assert_int_equal(mg_registry_instance_count(f->reg), 0);
    assert_int_equal(call_ex(f, "PUT", "/v1/agent/service/register", REG_WEB1, "X-Consul-Token: s3cret", 0, NULL), 200);
    assert_int_equal(call_ex(f, "PUT", "/v1/agent/check/pass/service:web-1", NULL, "Authorization: Bearer s3cret", 0, NULL), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/check/fail/service:web-1", NULL), 403);
    assert_int_equal(mg_registry_check_get(f->reg, "service:web-1")->status, MG_CHECK_PASSING);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/deregister/web-1", NULL), 403);
    /* reads are open */
    assert_int_equal(call(f, "GET", "/v1/agent/services", NULL), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/deregister/web-1?token=s3cret", NULL), 200);
    assert_int_equal(mg_consul_stats(f->api)->denied, 5);
    fx_free(f);
}

static void test_blocking(void **st)
{
    (void)st;
    fx_t *f = fx_new(NULL);
    call(f, "PUT", "/v1/agent/service/register", REG_WEB1);
    call(f, "PUT", "/v1/agent/service/register", "{\"Name\":\"other\",\"Port\":1}");
    call(f, "GET", "/v1/health/service/web", NULL);
    uint64_t idx = hdr_index(f);

    char target[128];
    mg_consul_verdict_t v;
    /* same index -> park, with Consul's wait and jitter */
    snprintf(target, sizeof target, "/v1/health/service/web?passing&index=%llu&wait=10s", (unsigned long long)idx);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    assert_string_equal(f->resp.watch_service, "web");
    assert_int_equal(f->resp.watch_index, idx);
    assert_true(f->resp.wait_ms >= 10000 && f->resp.wait_ms <= 10000 + 10000 / 16);
    assert_false(mg_consul_woken(f->api, &f->resp));

    /* a change to another service does not wake it */
    call(f, "PUT", "/v1/agent/service/register", "{\"Name\":\"other\",\"Port\":2}");
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    assert_false(mg_consul_woken(f->api, &f->resp));

    /* an idempotent re-registration changes nothing either */
    call(f, "PUT", "/v1/agent/service/register", REG_WEB1);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);

    /* a heartbeat that changes the status wakes it; the re-call answers */
    call(f, "PUT", "/v1/agent/check/pass/service:web-1", NULL);
    assert_true(mg_consul_woken(f->api, &f->resp));
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_DONE);
    assert_int_equal(f->resp.status, 200);
    assert_true(hdr_index(f) > idx);
    json_t *j = jbody(f);
    assert_int_equal(json_array_size(j), 1);
    json_decref(j);

    /* timeout: the lead re-calls with NOBLOCK and gets the same result */
    uint64_t idx2 = hdr_index(f);
    snprintf(target, sizeof target, "/v1/health/service/web?index=%llu", (unsigned long long)idx2);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    assert_true(f->resp.wait_ms >= 300000 && f->resp.wait_ms <= 300000 + 300000 / 16); /* default 5 min */
    call_ex(f, "GET", target, NULL, NULL, MG_CONSUL_NOBLOCK, &v);
    assert_int_equal(v, MG_CONSUL_DONE);
    assert_int_equal(hdr_index(f), idx2);

    /* wait is capped at 10 min */
    snprintf(target, sizeof target, "/v1/health/service/web?index=%llu&wait=1h", (unsigned long long)idx2);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    assert_true(f->resp.wait_ms <= 600000 + 600000 / 16);

    /* a different (stale or future) index answers at once */
    snprintf(target, sizeof target, "/v1/health/service/web?index=%llu", (unsigned long long)idx2 + 100);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_DONE);
    call_ex(f, "GET", "/v1/health/service/web?index=0", NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_DONE);

    /* catalog/services watches the global index */
    call(f, "GET", "/v1/catalog/services", NULL);
    uint64_t g = hdr_index(f);
    snprintf(target, sizeof target, "/v1/catalog/services?index=%llu", (unsigned long long)g);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    assert_string_equal(f->resp.watch_service, "");
    call(f, "PUT", "/v1/agent/service/deregister/other", NULL);
    f->resp.watch_index = g; /* (resp was reused by the PUT) */
    f->resp.watch_service[0] = 0;
    assert_true(mg_consul_woken(f->api, &f->resp));

    /* a service that does not exist yet: blocks on the global index and
     * wakes when it is registered */
    call(f, "GET", "/v1/health/service/later", NULL);
    assert_string_equal(body(f), "[]");
    uint64_t li = hdr_index(f);
    snprintf(target, sizeof target, "/v1/health/service/later?index=%llu", (unsigned long long)li);
    call_ex(f, "GET", target, NULL, NULL, 0, &v);
    assert_int_equal(v, MG_CONSUL_BLOCK);
    mg_consul_resp_t parked = f->resp;
    mg_buf_init(&f->resp.body);
    call(f, "PUT", "/v1/agent/service/register", "{\"Name\":\"later\",\"Port\":3}");
    assert_true(mg_consul_woken(f->api, &parked));
    mg_consul_resp_free(&parked);
    assert_true(mg_consul_stats(f->api)->blocked >= 6);
    fx_free(f);
}

static void test_limits_429(void **st)
{
    (void)st;
    mg_registry_opts_t o;
    mg_registry_opts_default(&o);
    o.max_instances = 2;
    fx_t *f = calloc(1, sizeof *f);
    f->reg = mg_registry_new(&o);
    f->api = mg_consul_api_new(f->reg, NULL);
    mg_consul_resp_init(&f->resp);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"ID\":\"a1\",\"Name\":\"a\"}"), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"ID\":\"a2\",\"Name\":\"a\"}"), 200);
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"ID\":\"a3\",\"Name\":\"a\"}"), 429);
    assert_non_null(strstr(body(f), "registry full"));
    /* updating an existing one is still fine */
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", "{\"ID\":\"a2\",\"Name\":\"a\",\"Port\":5}"), 200);
    assert_int_equal(mg_registry_stats(f->reg)->rejected_full, 1);
    /* oversize body */
    char *big = malloc(70000);
    memset(big, ' ', 69999);
    big[69999] = 0;
    assert_int_equal(call(f, "PUT", "/v1/agent/service/register", big), 413);
    free(big);
    fx_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_sequence),
        cmocka_unit_test(test_ttl_expiry_over_api),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_accepted_forms),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_blocking),
        cmocka_unit_test(test_limits_429),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
