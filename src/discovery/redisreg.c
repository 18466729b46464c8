/* redisreg: see redisreg.h and docs/discovery-redis.md.
 *
 * Connection state machine (one uv timer serves all three states):
 *   DOWN        no connection; the timer fires the next attempt (backoff
 *               250 ms doubling to backoff_max_ms, +-20% jitter)
 *   CONNECTING  the sync connection is up (AUTH, SELECT done), the async
 *               one is connecting/authenticating/subscribing; the timer
 *               bounds it
 *   UP          subscribed and resynchronised; the timer is the periodic
 *               full resync
 * Any I/O error on either connection drops both (DOWN). */
#include "discovery/redisreg.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libuv.h>
#include <jansson.h>

#include "core/err.h"
#include "core/log.h"
#include "discovery/regjson.h"

#define MAX_OUTPUT 4096
#define MAX_MESSAGE 1024          /* pub/sub payload: "<origin> I <id>", id <= 256 */
#define MAX_ENTRY (256 * 1024)    /* one instance definition in Redis */
#define MAX_STATE (64 * 1024)     /* one check state */
#define MAX_ARGS 80               /* HSET key + 32 checks * 2, HDEL ... */
#define WARN_EVERY_MS 10000

typedef enum { S_DOWN, S_CONNECTING, S_UP } conn_state_t;

static const char *state_name(conn_state_t s)
{
    switch (s) {
    case S_DOWN: return "down";
    case S_CONNECTING: return "connecting";
    default: return "up";
    }
}

struct mg_redisreg {
    uv_loop_t *loop;
    mg_registry_t *reg;
    mg_redisreg_opts_t o;
    char *host, *password, *user;
    char *k_inst, *k_checks, *k_epoch, *chan;
    size_t chan_len;
    redisContext *sc;      /* writes, fetches, resyncs; NULL while down */
    redisAsyncContext *ac; /* the subscription; NULL while down */
    conn_state_t state;
    uv_timer_t timer;
    uint32_t backoff_ms;
    uint64_t rng;
    bool applying;         /* persist hooks write nothing (remote state being applied) */
    bool closing;
    char origin[17];       /* this process, in messages (its own are skipped) */
    char epoch[33];        /* the data set's epoch last seen; "" before the first */
    mg_warn_limit_t warn;
    mg_redisreg_stats_t st;
};

/* ---- small helpers ------------------------------------------------------ */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(const mg_redisreg_t *rr) { return (int64_t)uv_now(rr->loop); }

/* registry clock <-> Unix time */
static int64_t to_wall(const mg_redisreg_t *rr, int64_t t) { return wall_ms() + (t - now_ms(rr)); }
static int64_t from_wall(const mg_redisreg_t *rr, int64_t w) { return now_ms(rr) + (w - wall_ms()); }

static void random_hex(char *out, size_t nbytes)
{
    unsigned char b[16] = { 0 };
    if (nbytes > sizeof b) nbytes = sizeof b;
    if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) {
        uint64_t x = (uint64_t)wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < nbytes; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            b[i] = (unsigned char)x;
        }
    }
    for (size_t i = 0; i < nbytes; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * nbytes] = 0;
}

/* Warnings at most every 10 s, with the number suppressed in between. */
static void rwarn(mg_redisreg_t *rr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rwarn(mg_redisreg_t *rr, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mg_warn_limited(&rr->warn, WARN_EVERY_MS, "registry backend redis %s:%u: %s", rr->host, rr->o.port, msg);
}

static char *joinkey(const char *prefix, const char *suffix)
{
    size_t n = strlen(prefix) + strlen(suffix) + 2;
    char *k = malloc(n);
    if (k) snprintf(k, n, "%s:%s", prefix, suffix);
    return k;
}

/* ---- TTL check state encoding ------------------------------------------ */

void mg_redisreg_state_encode(mg_buf_t *b, const char *instance_id, mg_check_status_t st, const char *output,
                              int64_t deadline_ms)
{
    if (!output) output = "";
    size_t n = strlen(output);
    if (n > MAX_OUTPUT) {
        n = MAX_OUTPUT;
        while (n > 0 && ((unsigned char)output[n] & 0xC0) == 0x80) n--;
    }
    mg_buf_lit(b, "{\"Instance\":");
    mg_buf_json_str(b, mg_slice_cstr(instance_id ? instance_id : ""));
    mg_buf_addf(b, ",\"Status\":\"%s\",\"Output\":", mg_check_status_name(st));
    mg_buf_json_str(b, (mg_slice_t){ output, n });
    mg_buf_addf(b, ",\"DeadlineMs\":%lld}", (long long)deadline_ms);
}

void mg_redisreg_state_free(mg_redisreg_state_t *s)
{
    if (!s) return;
    free(s->instance_id);
    free(s->output);
    memset(s, 0, sizeof *s);
}

int mg_redisreg_state_decode(const char *s, size_t n, mg_redisreg_state_t *out)
{
    memset(out, 0, sizeof *out);
    if (!s || n > MAX_STATE) return MG_EPARSE;
    json_error_t je;
    json_t *root = json_loadb(s, n, JSON_REJECT_DUPLICATES, &je);
    if (!root) return MG_EPARSE;
    json_t *ji = json_object_get(root, "Instance"), *js = json_object_get(root, "Status"),
           *jo = json_object_get(root, "Output"), *jd = json_object_get(root, "DeadlineMs");
    int st = js && json_is_string(js) ? mg_check_status_parse(json_string_value(js)) : -1;
    int rc = MG_EPARSE;
    if (json_is_object(root) && ji && json_is_string(ji) && json_string_length(ji) > 0 &&
        json_string_length(ji) <= 256 && strlen(json_string_value(ji)) == json_string_length(ji) && st >= 0 &&
        jo && json_is_string(jo) && json_string_length(jo) <= MAX_OUTPUT &&
        strlen(json_string_value(jo)) == json_string_length(jo) && jd && json_is_integer(jd)) {
        out->instance_id = strdup(json_string_value(ji));
        out->output = strdup(json_string_value(jo));
        out->status = (mg_check_status_t)st;
        out->deadline_ms = (int64_t)json_integer_value(jd);
        rc = out->instance_id && out->output ? 0 : -ENOMEM;
        if (rc) mg_redisreg_state_free(out);
    }
    json_decref(root);
    return rc;
}

/* ---- connection ---------------------------------------------------------- */

static void schedule(mg_redisreg_t *rr, uint64_t ms);
static void on_timer(uv_timer_t *t);
static void connect_start(mg_redisreg_t *rr);
static int full_resync(mg_redisreg_t *rr);

static void drop(mg_redisreg_t *rr)
{
    if (rr->sc) {
        redisFree(rr->sc);
        rr->sc = NULL;
    }
    redisAsyncContext *ac = rr->ac;
    rr->ac = NULL;
    if (ac) redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
    if (rr->st.connected) rr->st.disconnects++;
    rr->st.connected = false;
    rr->state = S_DOWN;
}

static void schedule_reconnect(mg_redisreg_t *rr)
{
    if (rr->closing) return;
    uint32_t b = rr->backoff_ms;
    rr->rng ^= rr->rng << 13;
    rr->rng ^= rr->rng >> 7;
    rr->rng ^= rr->rng << 17;
    uint32_t jitter = b / 5 ? (uint32_t)(rr->rng % (2 * (b / 5) + 1)) : 0;
    rr->backoff_ms = b * 2 > rr->o.backoff_max_ms ? rr->o.backoff_max_ms : b * 2;
    schedule(rr, (uint64_t)b - b / 5 + jitter);
}

/* Both connections dropped; reconnect later. */
static void conn_lost(mg_redisreg_t *rr, const char *what, const char *why)
{
    bool was_up = rr->state == S_UP;
    rr->st.backend_errors++;
    drop(rr);
    if (was_up)
        mg_error("registry backend redis %s:%u: %s%s%s; routing on the last known registry, writes refused until it is back",
                 rr->host, rr->o.port, what, why ? ": " : "", why ? why : "");
    else
        rwarn(rr, "%s%s%s", what, why ? ": " : "", why ? why : "");
    schedule_reconnect(rr);
}

static void schedule(mg_redisreg_t *rr, uint64_t ms)
{
    if (!rr->closing) uv_timer_start(&rr->timer, on_timer, ms, 0);
}

static bool reply_ok(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "OK");
}

/* One synchronous command. NULL on an I/O error (the connection is then
 * dropped); an error reply is returned as is. */
static redisReply *cmd(mg_redisreg_t *rr, int argc, const char **argv, const size_t *argl)
{
    if (!rr->sc) return NULL;
    redisReply *r = redisCommandArgv(rr->sc, argc, argv, argl);
    if (!r) conn_lost(rr, "command failed", rr->sc && rr->sc->errstr[0] ? rr->sc->errstr : NULL);
    return r;
}

static redisReply *cmd2(mg_redisreg_t *rr, const char *a, const char *b)
{
    const char *argv[2] = { a, b };
    size_t argl[2] = { strlen(a), strlen(b) };
    return cmd(rr, 2, argv, argl);
}

static void on_sub(redisAsyncContext *ac, void *reply, void *priv);

static void on_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    mg_redisreg_t *rr = priv;
    redisReply *r = reply;
    if (!r || rr->ac != ac) return;
    if (!reply_ok(r)) {
        conn_lost(rr, "AUTH refused (subscription)", r->type == REDIS_REPLY_ERROR ? r->str : NULL);
        return;
    }
    const char *argv[2] = { "SUBSCRIBE", rr->chan };
    size_t argl[2] = { 9, rr->chan_len };
    if (redisAsyncCommandArgv(ac, on_sub, rr, 2, argv, argl) != REDIS_OK)
        conn_lost(rr, "SUBSCRIBE failed", NULL);
}

static void on_async_connect(const redisAsyncContext *ac, int status)
{
    mg_redisreg_t *rr = ac->data;
    if (rr->ac != ac) return;
    if (status != REDIS_OK) {
        rr->ac = NULL; /* hiredis frees it after this callback */
        conn_lost(rr, "connect failed (subscription)", ac->errstr);
        return;
    }
    redisAsyncContext *c = (redisAsyncContext *)ac;
    int rc;
    if (rr->password) {
        if (rr->user)
            rc = redisAsyncCommand(c, on_auth, rr, "AUTH %s %s", rr->user, rr->password);
        else
            rc = redisAsyncCommand(c, on_auth, rr, "AUTH %s", rr->password);
    } else {
        redisReply ok = { .type = REDIS_REPLY_STATUS, .str = "OK", .len = 2 };
        on_auth(c, &ok, rr);
        return;
    }
    if (rc != REDIS_OK) conn_lost(rr, "AUTH failed (subscription)", NULL);
}

static void on_async_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    mg_redisreg_t *rr = ac->data;
    if (rr->ac != ac) return; /* dropped by us */
    rr->ac = NULL;
    conn_lost(rr, "connection lost", ac->errstr[0] ? ac->errstr : NULL);
}

static int sync_auth_select(mg_redisreg_t *rr)
{
    redisReply *r;
    if (rr->password) {
        if (rr->user) r = redisCommand(rr->sc, "AUTH %s %s", rr->user, rr->password);
        else r = redisCommand(rr->sc, "AUTH %s", rr->password);
        if (!reply_ok(r)) {
            rwarn(rr, "AUTH refused: %s", r && r->type == REDIS_REPLY_ERROR ? r->str : rr->sc->errstr);
            if (r) freeReplyObject(r);
            return -1;
        }
        freeReplyObject(r);
    }
    if (rr->o.db) {
        r = redisCommand(rr->sc, "SELECT %u", rr->o.db);
        if (!reply_ok(r)) {
            rwarn(rr, "SELECT %u refused: %s", rr->o.db, r && r->type == REDIS_REPLY_ERROR ? r->str : rr->sc->errstr);
            if (r) freeReplyObject(r);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

static void connect_start(mg_redisreg_t *rr)
{
    struct timeval tv = { rr->o.timeout_ms / 1000, (rr->o.timeout_ms % 1000) * 1000 };
    rr->sc = redisConnectWithTimeout(rr->host, rr->o.port, tv);
    if (!rr->sc || rr->sc->err) {
        rr->st.backend_errors++;
        rwarn(rr, "connect failed: %s", rr->sc ? rr->sc->errstr : "out of memory");
        drop(rr);
        schedule_reconnect(rr);
        return;
    }
    redisSetTimeout(rr->sc, tv);
    if (sync_auth_select(rr) != 0) {
        rr->st.backend_errors++;
        drop(rr);
        schedule_reconnect(rr);
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(rr->host, rr->o.port);
    if (!ac || ac->err) {
        rr->st.backend_errors++;
        rwarn(rr, "connect failed (subscription): %s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        drop(rr);
        schedule_reconnect(rr);
        return;
    }
    ac->data = rr;
    if (redisLibuvAttach(ac, rr->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        drop(rr);
        schedule_reconnect(rr);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_async_connect);
    redisAsyncSetDisconnectCallback(ac, on_async_disconnect);
    rr->ac = ac;
    rr->state = S_CONNECTING;
    schedule(rr, rr->o.timeout_ms * 4 > 2000 ? rr->o.timeout_ms * 4 : 2000);
}

static void on_timer(uv_timer_t *t)
{
    mg_redisreg_t *rr = t->data;
    if (rr->closing) return;
    switch (rr->state) {
    case S_DOWN:
        connect_start(rr);
        break;
    case S_CONNECTING:
        conn_lost(rr, "subscription not confirmed in time", NULL);
        break;
    case S_UP:
        full_resync(rr);
        if (rr->state == S_UP) schedule(rr, rr->o.resync_ms); /* else reconnecting */
        break;
    }
}

/* ---- applying remote state ---------------------------------------------- */

/* Counts a remote change when the registry's index moved since before. */
static bool applied(mg_redisreg_t *rr, uint64_t before)
{
    bool changed = mg_registry_index(rr->reg, NULL) != before;
    if (changed) rr->st.remote_applied++;
    return changed;
}

static void apply_remove(mg_redisreg_t *rr, const char *id)
{
    if (!mg_registry_instance_get(rr->reg, id)) return;
    uint64_t before = mg_registry_index(rr->reg, NULL);
    rr->applying = true;
    mg_registry_deregister(rr->reg, id, now_ms(rr));
    rr->applying = false;
    applied(rr, before);
}

static void apply_def(mg_redisreg_t *rr, const char *id, const char *json, size_t len)
{
    if (len > MAX_ENTRY) {
        rr->st.entries_skipped++;
        rwarn(rr, "instance %.256s: definition of %zu bytes skipped (limit %d)", id, len, MAX_ENTRY);
        return;
    }
    mg_reg_def_t d;
    char err[512];
    int rc = mg_regjson_parse(json, len, &d, err, sizeof err);
    if (rc == 0 && (!d.id || strcmp(d.id, id) != 0)) {
        snprintf(err, sizeof err, "ID does not match its key");
        mg_reg_def_free(&d);
        rc = MG_EPARSE;
    }
    if (rc == 0) {
        uint64_t before = mg_registry_index(rr->reg, NULL);
        rr->applying = true;
        rc = mg_registry_register(rr->reg, &d, MG_REG_REPLACE_CHECKS, now_ms(rr), err, sizeof err);
        rr->applying = false;
        applied(rr, before);
    }
    if (rc) {
        rr->st.entries_skipped++;
        rwarn(rr, "instance %.256s in Redis not applied: %s", id, err[0] ? err : mg_strerror(rc));
    }
}

static void apply_state(mg_redisreg_t *rr, const char *check_id, const char *s, size_t len)
{
    mg_redisreg_state_t ds;
    if (mg_redisreg_state_decode(s, len, &ds) != 0) {
        rr->st.entries_skipped++;
        rwarn(rr, "check %.256s: state in Redis does not parse", check_id);
        return;
    }
    const mg_reg_check_t *c = mg_registry_check_get(rr->reg, check_id);
    if (c && c->def->kind == MG_CHECK_TTL && !strcmp(c->inst->def.id, ds.instance_id)) {
        uint64_t before = mg_registry_index(rr->reg, NULL);
        mg_registry_check_apply(rr->reg, check_id, ds.status, ds.output, from_wall(rr, ds.deadline_ms), now_ms(rr));
        applied(rr, before);
    }
    mg_redisreg_state_free(&ds);
}

static redisReply *hget(mg_redisreg_t *rr, const char *key, const char *field)
{
    const char *argv[3] = { "HGET", key, field };
    size_t argl[3] = { 4, strlen(key), strlen(field) };
    redisReply *r = cmd(rr, 3, argv, argl);
    if (r && r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL) {
        rwarn(rr, "HGET %s: %s", key, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rr->st.backend_errors++;
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* An instance changed somewhere: fetch its definition and TTL states. */
static void fetch_instance(mg_redisreg_t *rr, const char *id)
{
    redisReply *r = hget(rr, rr->k_inst, id);
    if (!r) return;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        apply_remove(rr, id);
        return;
    }
    apply_def(rr, id, r->str, r->len);
    freeReplyObject(r);
    const mg_reg_instance_t *inst = mg_registry_instance_get(rr->reg, id);
    if (!inst) return;
    /* check IDs copied: applying a state may not move them, but be safe */
    size_t nc = inst->def.nchecks;
    char *cids[64];
    size_t k = 0;
    for (size_t i = 0; i < nc && k < 64; i++)
        if (inst->def.checks[i].kind == MG_CHECK_TTL) cids[k++] = strdup(inst->def.checks[i].id);
    for (size_t i = 0; i < k; i++) {
        if (!cids[i]) continue;
        redisReply *s = rr->sc ? hget(rr, rr->k_checks, cids[i]) : NULL;
        if (s && s->type == REDIS_REPLY_STRING) apply_state(rr, cids[i], s->str, s->len);
        if (s) freeReplyObject(s);
    }
    for (size_t i = 0; i < k; i++) free(cids[i]);
}

static void fetch_check(mg_redisreg_t *rr, const char *cid)
{
    redisReply *s = hget(rr, rr->k_checks, cid);
    if (s && s->type == REDIS_REPLY_STRING) apply_state(rr, cid, s->str, s->len);
    if (s) freeReplyObject(s);
}

/* "<origin> I <id>", "<origin> C <check id>", "<origin> *" */
static void on_message(mg_redisreg_t *rr, const char *p, size_t n)
{
    rr->st.messages++;
    char msg[MAX_MESSAGE + 1];
    if (n > MAX_MESSAGE || n < 18 || memchr(p, 0, n) || p[16] != ' ') {
        rr->st.messages_dropped++;
        return;
    }
    memcpy(msg, p, n);
    msg[n] = 0;
    if (!strncmp(msg, rr->origin, 16)) return; /* ours: already applied */
    const char *rest = msg + 17;
    if (!strcmp(rest, "*")) {
        full_resync(rr);
        if (rr->state == S_UP) schedule(rr, rr->o.resync_ms);
    } else if (rest[0] == 'I' && rest[1] == ' ' && rest[2]) {
        fetch_instance(rr, rest + 2);
    } else if (rest[0] == 'C' && rest[1] == ' ' && rest[2]) {
        fetch_check(rr, rest + 2);
    } else {
        rr->st.messages_dropped++;
    }
}

static void on_sub(redisAsyncContext *ac, void *reply, void *priv)
{
    mg_redisreg_t *rr = priv;
    redisReply *r = reply;
    if (!r || rr->ac != ac || rr->closing) return;
    if (r->type == REDIS_REPLY_ERROR) {
        conn_lost(rr, "SUBSCRIBE refused", r->str);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || r->element[0]->type != REDIS_REPLY_STRING) return;
    const char *kind = r->element[0]->str;
    if (!strcmp(kind, "subscribe")) {
        if (rr->state == S_UP) return;
        /* subscribed first, then read everything: no change is missed */
        bool again = rr->st.connects > 0;
        rr->state = S_UP;
        rr->st.connected = true;
        rr->st.connects++;
        rr->backoff_ms = 250;
        int rc = full_resync(rr);
        if (rr->state != S_UP) return; /* the resync lost the connection */
        if (again || rc == 0)
            mg_info("registry backend redis %s:%u: %s (%zu instances)", rr->host, rr->o.port,
                    again ? "reconnected and resynchronised" : "subscribed and synchronised",
                    mg_registry_instance_count(rr->reg));
        schedule(rr, rr->o.resync_ms);
    } else if (!strcmp(kind, "message") && r->element[2]->type == REDIS_REPLY_STRING) {
        on_message(rr, r->element[2]->str, r->element[2]->len);
    }
}

/* ---- persist hooks: local writes go to Redis first ---------------------- */

typedef struct {
    int n;
    const char *argv[MAX_ARGS];
    size_t argl[MAX_ARGS];
} args_t;

static void arg(args_t *a, const char *p, size_t n)
{
    if (a->n < MAX_ARGS) {
        a->argv[a->n] = p;
        a->argl[a->n] = n;
        a->n++;
    }
}
#define ARGS(a, s) arg((a), (s), strlen(s))

static int refuse(mg_redisreg_t *rr, const char *what)
{
    rr->st.writes_refused++;
    rr->st.backend_errors++;
    rwarn(rr, "%s refused: Redis is %s", what, state_name(rr->state));
    return -EAGAIN;
}

/* MULTI, the commands, EXEC (the PUBLISH is among the commands, so the
 * message goes out with the write or not at all). 0, -EAGAIN (connection
 * lost) or -EIO (Redis answered an error). */
static int transact(mg_redisreg_t *rr, args_t *cmds, int ncmds, const char *what)
{
    if (rr->state != S_UP || !rr->sc) return refuse(rr, what);
    const char *multi = "MULTI", *exec = "EXEC";
    size_t ml = 5, el = 4;
    redisAppendCommandArgv(rr->sc, 1, &multi, &ml);
    for (int i = 0; i < ncmds; i++) redisAppendCommandArgv(rr->sc, cmds[i].n, cmds[i].argv, cmds[i].argl);
    redisAppendCommandArgv(rr->sc, 1, &exec, &el);
    int rc = 0;
    for (int i = 0; i < ncmds + 2; i++) {
        redisReply *r = NULL;
        if (redisGetReply(rr->sc, (void **)&r) != REDIS_OK || !r) {
            conn_lost(rr, "write failed", rr->sc ? rr->sc->errstr : NULL);
            rr->st.writes_refused++;
            return -EAGAIN;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            rwarn(rr, "%s: %s", what, r->str);
            rc = -EIO;
        } else if (i == ncmds + 1) {
            if (r->type != REDIS_REPLY_ARRAY) rc = -EIO; /* aborted transaction */
            for (size_t j = 0; rc == 0 && j < r->elements; j++)
                if (r->element[j]->type == REDIS_REPLY_ERROR) {
                    rwarn(rr, "%s: %s", what, r->element[j]->str);
                    rc = -EIO;
                }
        }
        freeReplyObject(r);
    }
    if (rc) {
        rr->st.writes_refused++;
        rr->st.backend_errors++;
    } else {
        rr->st.writes++;
    }
    return rc;
}

static int hook_save(void *ud, const mg_reg_instance_t *inst, uint64_t index)
{
    (void)index;
    mg_redisreg_t *rr = ud;
    if (rr->applying) return 0;
    if (rr->state != S_UP) return refuse(rr, "registration");
    int rc = -ENOMEM;
    mg_buf_t def, states[32], msg;
    size_t nst = 0;
    mg_buf_init(&def);
    mg_buf_init(&msg);
    mg_regjson_write(&def, &inst->def);
    mg_buf_addf(&msg, "%s I %s", rr->origin, inst->def.id);
    args_t cmds[4];
    memset(cmds, 0, sizeof cmds);
    int nc = 0;
    args_t *a = &cmds[nc++];
    ARGS(a, "HSET");
    ARGS(a, rr->k_inst);
    ARGS(a, inst->def.id);
    arg(a, def.p ? def.p : "", def.len);
    args_t *hs = &cmds[nc];
    ARGS(hs, "HSET");
    ARGS(hs, rr->k_checks);
    for (size_t i = 0; i < inst->def.nchecks && nst < 32; i++) {
        const mg_reg_check_t *c = &inst->checks[i];
        if (c->def->kind != MG_CHECK_TTL) continue;
        mg_buf_init(&states[nst]);
        mg_redisreg_state_encode(&states[nst], inst->def.id, c->status, c->output, to_wall(rr, c->ttl_deadline_ms));
        ARGS(hs, c->def->id);
        arg(hs, states[nst].p ? states[nst].p : "", states[nst].len);
        if (states[nst++].oom) goto out;
    }
    if (hs->n > 2) nc++;
    /* checks of the previous registration this one dropped */
    const mg_reg_instance_t *old = mg_registry_instance_get(rr->reg, inst->def.id);
    args_t *hd = &cmds[nc];
    ARGS(hd, "HDEL");
    ARGS(hd, rr->k_checks);
    for (size_t i = 0; old && i < old->def.nchecks; i++) {
        bool kept = false;
        for (size_t j = 0; j < inst->def.nchecks && !kept; j++)
            kept = !strcmp(old->def.checks[i].id, inst->def.checks[j].id) &&
                   inst->def.checks[j].kind == MG_CHECK_TTL;
        if (!kept) ARGS(hd, old->def.checks[i].id);
    }
    if (hd->n > 2) nc++;
    if (def.oom || msg.oom) goto out;
    args_t pub = { 0 };
    ARGS(&pub, "PUBLISH");
    ARGS(&pub, rr->chan);
    arg(&pub, msg.p, msg.len);
    cmds[nc++] = pub;
    rc = transact(rr, cmds, nc, "registration");
out:
    for (size_t i = 0; i < nst; i++) mg_buf_free(&states[i]);
    mg_buf_free(&def);
    mg_buf_free(&msg);
    return rc;
}

/* ---- full resync ---------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Writes the local replica back into a Redis that lost its data (HSETNX:
 * whatever another gateway re-seeded first stays). */
static int reseed(mg_redisreg_t *rr)
{
    size_t n = mg_registry_instance_count(rr->reg);
    mg_warn("registry backend redis %s:%u: Redis has lost the registry (no epoch key); writing back this gateway's %zu instances",
            rr->host, rr->o.port, n);
    rr->st.reseeds++;
    size_t sent = 0;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const mg_reg_instance_t *inst = mg_registry_instance_at(rr->reg, i);
        mg_buf_t b;
        mg_buf_init(&b);
        mg_regjson_write(&b, &inst->def);
        if (!b.oom && redisAppendCommand(rr->sc, "HSETNX %s %s %b", rr->k_inst, inst->def.id, b.p, b.len) == REDIS_OK)
            sent++;
        mg_buf_free(&b);
        for (size_t j = 0; j < inst->def.nchecks; j++) {
            const mg_reg_check_t *c = &inst->checks[j];
            if (c->def->kind != MG_CHECK_TTL) continue;
            mg_buf_init(&b);
            mg_redisreg_state_encode(&b, inst->def.id, c->status, c->output, to_wall(rr, c->ttl_deadline_ms));
            if (!b.oom && redisAppendCommand(rr->sc, "HSETNX %s %s %b", rr->k_checks, c->def->id, b.p, b.len) == REDIS_OK)
                sent++;
            mg_buf_free(&b);
        }
        /* drain in batches so the output buffer stays bounded */
        while (sent > 0 && (sent >= 256 || i + 1 == n)) {
            redisReply *r = NULL;
            if (redisGetReply(rr->sc, (void **)&r) != REDIS_OK || !r) {
                conn_lost(rr, "re-seeding failed", rr->sc ? rr->sc->errstr : NULL);
                return -EAGAIN;
            }
            if (r->type == REDIS_REPLY_ERROR) rc = -EIO;
            freeReplyObject(r);
            sent--;
        }
    }
    return rc;
}

/* Epoch check (re-seed a Redis that lost its data), then make the replica
 * equal to Redis: apply every definition and TTL state, remove local
 * instances Redis does not have. */
static int full_resync(mg_redisreg_t *rr)
{
    redisReply *e = cmd2(rr, "GET", rr->k_epoch);
    if (!e) return -EAGAIN;
    if (e->type != REDIS_REPLY_NIL && e->type != REDIS_REPLY_STRING) {
        rwarn(rr, "GET %s: %s", rr->k_epoch, e->type == REDIS_REPLY_ERROR ? e->str : "unexpected reply");
        freeReplyObject(e);
        rr->st.backend_errors++;
        return -EIO;
    }
    bool lost = rr->epoch[0] && (e->type == REDIS_REPLY_NIL || strcmp(e->str, rr->epoch) != 0);
    bool missing = e->type == REDIS_REPLY_NIL;
    if (!missing) snprintf(rr->epoch, sizeof rr->epoch, "%.32s", e->str);
    freeReplyObject(e);
    if (lost && mg_registry_instance_count(rr->reg) > 0) {
        if (reseed(rr) == -EAGAIN) return -EAGAIN;
    }
    if (missing) {
        char ep[33];
        random_hex(ep, 16);
        redisReply *r = redisCommand(rr->sc, "SET %s %s NX", rr->k_epoch, ep);
        if (!r) {
            conn_lost(rr, "SET epoch failed", rr->sc ? rr->sc->errstr : NULL);
            return -EAGAIN;
        }
        freeReplyObject(r);
        if (!(r = cmd2(rr, "GET", rr->k_epoch))) return -EAGAIN;
        if (r->type == REDIS_REPLY_STRING) snprintf(rr->epoch, sizeof rr->epoch, "%.32s", r->str);
        freeReplyObject(r);
    }
    if (lost) { /* tell the others to re-read what was written back */
        char msg[32];
        snprintf(msg, sizeof msg, "%s *", rr->origin);
        redisReply *r = redisCommand(rr->sc, "PUBLISH %s %s", rr->chan, msg);
        if (r) freeReplyObject(r);
    }

    redisReply *ri = cmd2(rr, "HGETALL", rr->k_inst);
    if (!ri) return -EAGAIN;
    redisReply *rc = cmd2(rr, "HGETALL", rr->k_checks);
    if (!rc) {
        freeReplyObject(ri);
        return -EAGAIN;
    }
    int ret = 0;
    if (ri->type != REDIS_REPLY_ARRAY || rc->type != REDIS_REPLY_ARRAY) {
        rwarn(rr, "HGETALL: %s", ri->type == REDIS_REPLY_ERROR ? ri->str
                                 : rc->type == REDIS_REPLY_ERROR ? rc->str : "unexpected reply");
        rr->st.backend_errors++;
        ret = -EIO;
        goto out;
    }
    size_t n = ri->elements / 2;
    const char **ids = calloc(n ? n : 1, sizeof *ids);
    if (!ids) {
        ret = -ENOMEM;
        goto out;
    }
    size_t nids = 0;
    for (size_t i = 0; i + 1 < ri->elements; i += 2) {
        const redisReply *k = ri->element[i], *v = ri->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || strlen(k->str) != k->len) continue;
        ids[nids++] = k->str;
        apply_def(rr, k->str, v->str, v->len);
    }
    qsort(ids, nids, sizeof *ids, cmp_str);
    /* local instances Redis does not have: removed (collect first, the
     * registry's arrays move as instances go) */
    size_t nl = mg_registry_instance_count(rr->reg), ngone = 0;
    char **gone = calloc(nl ? nl : 1, sizeof *gone);
    for (size_t i = 0; gone && i < nl; i++) {
        const char *id = mg_registry_instance_at(rr->reg, i)->def.id;
        if (!bsearch(&id, ids, nids, sizeof *ids, cmp_str)) gone[ngone++] = strdup(id);
    }
    for (size_t i = 0; i < ngone; i++) {
        if (gone[i]) apply_remove(rr, gone[i]);
        free(gone[i]);
    }
    free(gone);
    free(ids);
    for (size_t i = 0; i + 1 < rc->elements; i += 2) {
        const redisReply *k = rc->element[i], *v = rc->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        apply_state(rr, k->str, v->str, v->len);
    }
    rr->st.resyncs++;
out:
    freeReplyObject(ri);
    freeReplyObject(rc);
    return ret;
}

static int hook_remove(void *ud, const char *id, uint64_t index)
{
    (void)index;
    mg_redisreg_t *rr = ud;
    if (rr->applying) return 0;
    if (rr->state != S_UP) return refuse(rr, "deregistration");
    const mg_reg_instance_t *inst = mg_registry_instance_get(rr->reg, id);
    mg_buf_t msg;
    mg_buf_init(&msg);
    mg_buf_addf(&msg, "%s I %s", rr->origin, id);
    if (msg.oom) {
        mg_buf_free(&msg);
        return -ENOMEM;
    }
    args_t cmds[3];
    memset(cmds, 0, sizeof cmds);
    int nc = 0;
    args_t *a = &cmds[nc++];
    ARGS(a, "HDEL");
    ARGS(a, rr->k_inst);
    ARGS(a, id);
    args_t *hd = &cmds[nc];
    ARGS(hd, "HDEL");
    ARGS(hd, rr->k_checks);
    for (size_t i = 0; inst && i < inst->def.nchecks; i++) ARGS(hd, inst->def.checks[i].id);
    if (hd->n > 2) nc++;
    args_t *pub = &cmds[nc++];
    ARGS(pub, "PUBLISH");
    ARGS(pub, rr->chan);
    arg(pub, msg.p, msg.len);
    int rc = transact(rr, cmds, nc, "deregistration");
    mg_buf_free(&msg);
    return rc;
}

static int hook_check(void *ud, const mg_reg_check_t *c, mg_check_status_t st, const char *output, int64_t deadline_ms)
{
    mg_redisreg_t *rr = ud;
    if (rr->applying) return 0;
    if (rr->state != S_UP) return refuse(rr, "heartbeat");
    mg_buf_t state, msg;
    mg_buf_init(&state);
    mg_buf_init(&msg);
    mg_redisreg_state_encode(&state, c->inst->def.id, st, output, to_wall(rr, deadline_ms));
    mg_buf_addf(&msg, "%s C %s", rr->origin, c->def->id);
    int rc = -ENOMEM;
    if (!state.oom && !msg.oom) {
        args_t cmds[2];
        memset(cmds, 0, sizeof cmds);
        ARGS(&cmds[0], "HSET");
        ARGS(&cmds[0], rr->k_checks);
        ARGS(&cmds[0], c->def->id);
        arg(&cmds[0], state.p, state.len);
        ARGS(&cmds[1], "PUBLISH");
        ARGS(&cmds[1], rr->chan);
        arg(&cmds[1], msg.p, msg.len);
        rc = transact(rr, cmds, 2, "heartbeat");
    }
    mg_buf_free(&state);
    mg_buf_free(&msg);
    return rc;
}

/* ---- life cycle ------------------------------------------------------------ */

static void rr_free(mg_redisreg_t *rr)
{
    free(rr->host);
    free(rr->password);
    free(rr->user);
    free(rr->k_inst);
    free(rr->k_checks);
    free(rr->k_epoch);
    free(rr->chan);
    free(rr);
}

int mg_redisreg_start(uv_loop_t *loop, mg_registry_t *reg, const mg_redisreg_opts_t *o, mg_redisreg_t **out)
{
    *out = NULL;
    mg_redisreg_t *rr = calloc(1, sizeof *rr);
    if (!rr) return -ENOMEM;
    rr->loop = loop;
    rr->reg = reg;
    rr->o = *o;
    if (!rr->o.port) rr->o.port = 6379;
    if (!rr->o.timeout_ms) rr->o.timeout_ms = 500;
    if (!rr->o.resync_ms) rr->o.resync_ms = 30000;
    if (!rr->o.backoff_max_ms) rr->o.backoff_max_ms = 5000;
    const char *prefix = o->prefix && *o->prefix ? o->prefix : "meshgate:registry";
    rr->host = strdup(o->host ? o->host : "127.0.0.1");
    rr->password = o->password ? strdup(o->password) : NULL;
    rr->k_inst = joinkey(prefix, "instances");
    rr->k_checks = joinkey(prefix, "checks");
    rr->k_epoch = joinkey(prefix, "epoch");
    rr->chan = joinkey(prefix, "events");
    if (!rr->host || (o->password && !rr->password) || !rr->k_inst || !rr->k_checks || !rr->k_epoch || !rr->chan) {
        rr_free(rr);
        return -ENOMEM;
    }
    /* "user:pass" (Redis 6 ACL) as the password means AUTH user pass */
    char *colon = rr->password ? strchr(rr->password, ':') : NULL;
    if (colon) {
        *colon = 0;
        rr->user = rr->password;
        rr->password = strdup(colon + 1);
        if (!rr->password) {
            rr_free(rr);
            return -ENOMEM;
        }
        if (!*rr->user) {
            free(rr->user);
            rr->user = NULL;
        }
    }
    rr->chan_len = strlen(rr->chan);
    rr->backoff_ms = 250;
    random_hex(rr->origin, 8);
    rr->rng = (uint64_t)wall_ms() | 1;
    uv_timer_init(loop, &rr->timer);
    rr->timer.data = rr;
    static const mg_reg_persist_t ops = { hook_save, hook_remove, hook_check };
    mg_registry_set_persist(reg, &ops, rr);
    /* Load synchronously so the first snapshot already routes to every
     * instance; the async subscription then resyncs once it is confirmed. */
    connect_start(rr);
    if (rr->sc) {
        rr->state = S_UP; /* lets full_resync run; writes wait for the subscription */
        int rc = full_resync(rr);
        if (rr->sc) rr->state = S_CONNECTING;
        if (rc == 0)
            mg_info("registry backend redis %s:%u: loaded %zu instances", rr->host, rr->o.port,
                    mg_registry_instance_count(reg));
    } else {
        mg_error("registry backend redis %s:%u: unreachable at start; starting with an empty registry, "
                 "writes refused until it is reachable", rr->host, rr->o.port);
    }
    *out = rr;
    return 0;
}

static void on_timer_closed(uv_handle_t *h) { rr_free(h->data); }

void mg_redisreg_stop(mg_redisreg_t *rr)
{
    if (!rr) return;
    rr->closing = true;
    mg_registry_set_persist(rr->reg, NULL, NULL);
    drop(rr);
    uv_close((uv_handle_t *)&rr->timer, on_timer_closed);
}

const mg_redisreg_stats_t *mg_redisreg_stats(const mg_redisreg_t *rr) { return &rr->st; }

void mg_redisreg_stats_json(const mg_redisreg_t *rr, mg_buf_t *b)
{
    const mg_redisreg_stats_t *s = &rr->st;
    mg_buf_addf(b,
                ",\"registry_backend\":{\"backend\":\"redis\",\"state\":\"%s\",\"connected\":%s,"
                "\"backend_errors\":%llu,\"writes\":%llu,\"writes_refused\":%llu,\"resyncs\":%llu,"
                "\"reseeds\":%llu,\"remote_changes_applied\":%llu,\"messages\":%llu,\"messages_dropped\":%llu,"
                "\"entries_skipped\":%llu,\"connects\":%llu,\"disconnects\":%llu}",
                state_name(rr->state), rr->state == S_UP ? "true" : "false", (unsigned long long)s->backend_errors,
                (unsigned long long)s->writes, (unsigned long long)s->writes_refused, (unsigned long long)s->resyncs,
                (unsigned long long)s->reseeds, (unsigned long long)s->remote_applied,
                (unsigned long long)s->messages, (unsigned long long)s->messages_dropped,
                (unsigned long long)s->entries_skipped, (unsigned long long)s->connects,
                (unsigned long long)s->disconnects);
}
