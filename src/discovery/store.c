/* store: see store.h. */
#include "discovery/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "discovery/regjson.h"

struct mg_store {
    sqlite3 *db;
    sqlite3_stmt *put_inst, *del_inst, *del_states, *put_state, *put_index;
    mg_store_stats_t stats;
    /* sync context */
    int64_t now_ms, wall_ms;
    int sync_rc;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS instances(id TEXT PRIMARY KEY, def TEXT NOT NULL, idx INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS check_state(check_id TEXT PRIMARY KEY, instance_id TEXT NOT NULL,"
    " status TEXT NOT NULL, output TEXT NOT NULL, expires_wall_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS check_state_inst ON check_state(instance_id);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('schema', 1);"
    "INSERT OR IGNORE INTO meta(key, value) VALUES('index', 1);";

static void seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

const mg_store_stats_t *mg_store_stats(const mg_store_t *s) { return &s->stats; }

void mg_store_close(mg_store_t *s)
{
    if (!s) return;
    sqlite3_finalize(s->put_inst);
    sqlite3_finalize(s->del_inst);
    sqlite3_finalize(s->del_states);
    sqlite3_finalize(s->put_state);
    sqlite3_finalize(s->put_index);
    sqlite3_close(s->db);
    free(s);
}

int mg_store_open(const char *data_dir, mg_store_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        int e = -errno;
        seterr(err, errlen, "%s: %s", data_dir, strerror(-e));
        return e;
    }
    mg_store_t *s = calloc(1, sizeof *s);
    if (!s) return -ENOMEM;
    char path[4096];
    snprintf(path, sizeof path, "%s/registry.db", data_dir);
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        seterr(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        mg_store_close(s);
        return -EIO;
    }
    sqlite3_busy_timeout(s->db, 1000);
    char *msg = NULL;
    if (sqlite3_exec(s->db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        seterr(err, errlen, "%s: %s", path, msg ? msg : "schema");
        sqlite3_free(msg);
        mg_store_close(s);
        return -EIO;
    }
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } stmts[] = {
        { &s->put_inst, "INSERT OR REPLACE INTO instances(id, def, idx) VALUES(?1, ?2, ?3)" },
        { &s->del_inst, "DELETE FROM instances WHERE id = ?1" },
        { &s->del_states, "DELETE FROM check_state WHERE instance_id = ?1" },
        { &s->put_state, "INSERT OR REPLACE INTO check_state(check_id, instance_id, status, output, expires_wall_ms)"
                         " VALUES(?1, ?2, ?3, ?4, ?5)" },
        { &s->put_index, "UPDATE meta SET value = max(value, ?1) WHERE key = 'index'" },
    };
    for (size_t i = 0; i < sizeof stmts / sizeof stmts[0]; i++)
        if (sqlite3_prepare_v2(s->db, stmts[i].sql, -1, stmts[i].st, NULL) != SQLITE_OK) {
            seterr(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
            mg_store_close(s);
            return -EIO;
        }
    *out = s;
    return 0;
}

static int exec(mg_store_t *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
}

static int step(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

static int put_index(mg_store_t *s, uint64_t idx)
{
    sqlite3_bind_int64(s->put_index, 1, (sqlite3_int64)idx);
    return step(s->put_index);
}

static int commit_or_rollback(mg_store_t *s, int rc)
{
    if (rc == 0 && exec(s, "COMMIT") == 0) {
        s->stats.writes++;
        return 0;
    }
    mg_warn("registry store: write failed: %s", sqlite3_errmsg(s->db));
    exec(s, "ROLLBACK");
    s->stats.write_errors++;
    return -EIO;
}

static int hook_save(void *ud, const mg_reg_instance_t *inst, uint64_t index)
{
    mg_store_t *s = ud;
    mg_buf_t b;
    mg_buf_init(&b);
    mg_regjson_write(&b, &inst->def);
    if (b.oom) {
        mg_buf_free(&b);
        return -ENOMEM;
    }
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc == 0) {
        sqlite3_bind_text(s->put_inst, 1, inst->def.id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s->put_inst, 2, b.p, (int)b.len, SQLITE_STATIC);
        sqlite3_bind_int64(s->put_inst, 3, (sqlite3_int64)index);
        rc = step(s->put_inst);
        if (rc == 0) rc = put_index(s, index);
        rc = commit_or_rollback(s, rc);
    } else {
        s->stats.write_errors++;
    }
    mg_buf_free(&b);
    return rc;
}

static int hook_remove(void *ud, const char *id, uint64_t index)
{
    mg_store_t *s = ud;
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) {
        s->stats.write_errors++;
        return rc;
    }
    sqlite3_bind_text(s->del_inst, 1, id, -1, SQLITE_STATIC);
    rc = step(s->del_inst);
    if (rc == 0) {
        sqlite3_bind_text(s->del_states, 1, id, -1, SQLITE_STATIC);
        rc = step(s->del_states);
    }
    if (rc == 0) rc = put_index(s, index);
    return commit_or_rollback(s, rc);
}

void mg_store_attach(mg_store_t *s, mg_registry_t *r)
{
    static const mg_reg_persist_t ops = { hook_save, hook_remove, NULL };
    mg_registry_set_persist(r, &ops, s);
}

/* Lazy attach: the database is created by the first registration, so a
 * gateway that never uses its registry opens no SQLite file (and pays no
 * memory for it). */
static struct {
    char dir[4096];
    mg_store_t **slot;
    bool failed;
} lazy;

static mg_store_t *lazy_open(void)
{
    if (*lazy.slot || lazy.failed)
        return *lazy.slot;
    char err[512] = "";
    if (mg_store_open(lazy.dir, lazy.slot, err, sizeof err) != 0) {
        lazy.failed = true;
        *lazy.slot = NULL;
        mg_error("registry: %s: registrations are kept in memory only", err[0] ? err : "cannot open the store");
    }
    return *lazy.slot;
}

static int lazy_save(void *ud, const mg_reg_instance_t *inst, uint64_t index)
{
    (void)ud;
    mg_store_t *s = lazy_open();
    return s ? hook_save(s, inst, index) : 0;
}

static int lazy_remove(void *ud, const char *id, uint64_t index)
{
    (void)ud;
    mg_store_t *s = lazy_open();
    return s ? hook_remove(s, id, index) : 0;
}

void mg_store_attach_lazy(const char *data_dir, mg_registry_t *r, mg_store_t **slot)
{
    static const mg_reg_persist_t ops = { lazy_save, lazy_remove, NULL };
    snprintf(lazy.dir, sizeof lazy.dir, "%s", data_dir);
    lazy.slot = slot;
    lazy.failed = false;
    mg_registry_set_persist(r, &ops, NULL);
}

bool mg_store_exists(const char *data_dir)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/registry.db", data_dir);
    return access(path, F_OK) == 0;
}

static int sync_one(void *ud, const mg_reg_check_t *c)
{
    mg_store_t *s = ud;
    if (s->sync_rc) return -1;
    int64_t expires = s->wall_ms + (c->ttl_deadline_ms - s->now_ms);
    sqlite3_bind_text(s->put_state, 1, c->def->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put_state, 2, c->inst->def.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put_state, 3, mg_check_status_name(c->status), -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put_state, 4, c->output, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->put_state, 5, expires);
    s->sync_rc = step(s->put_state);
    /* Marks are cleared as rows are written; a failed transaction below
     * loses them, which only costs a state resume after a restart. */
    return s->sync_rc;
}

int mg_store_sync(mg_store_t *s, mg_registry_t *r, int64_t now_ms, int64_t wall_ms)
{
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) {
        s->stats.write_errors++;
        return rc;
    }
    s->now_ms = now_ms;
    s->wall_ms = wall_ms;
    s->sync_rc = 0;
    mg_registry_foreach_dirty_check(r, sync_one, s);
    rc = s->sync_rc;
    if (rc == 0) rc = put_index(s, mg_registry_index(r, NULL));
    return commit_or_rollback(s, rc);
}

int mg_store_load(mg_store_t *s, mg_registry_t *r, int64_t now_ms, int64_t wall_ms, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int loaded = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'index'", -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    if (sqlite3_step(st) == SQLITE_ROW) mg_registry_raise_index(r, (uint64_t)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);

    if (sqlite3_prepare_v2(s->db, "SELECT id, def FROM instances ORDER BY id", -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        const char *def = (const char *)sqlite3_column_text(st, 1);
        int n = sqlite3_column_bytes(st, 1);
        char msg[512];
        mg_reg_def_t d;
        int prc = mg_regjson_parse(def ? def : "", def ? (size_t)n : 0, &d, msg, sizeof msg);
        if (prc == 0) prc = mg_registry_register(r, &d, MG_REG_REPLACE_CHECKS | MG_REG_RESTORING, now_ms, msg, sizeof msg);
        if (prc) {
            mg_warn("registry store: skipping saved instance %s: %s", id ? id : "?", msg);
            s->stats.load_skipped++;
            continue;
        }
        loaded++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto dberr;

    if (sqlite3_prepare_v2(s->db, "SELECT check_id, status, output, expires_wall_ms FROM check_state", -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *cid = (const char *)sqlite3_column_text(st, 0);
        int status = mg_check_status_parse((const char *)sqlite3_column_text(st, 1));
        const char *output = (const char *)sqlite3_column_text(st, 2);
        int64_t expires = sqlite3_column_int64(st, 3);
        if (!cid || status < 0 || status == MG_CHECK_CRITICAL || expires <= wall_ms) continue;
        mg_registry_check_restore(r, cid, (mg_check_status_t)status, output, now_ms + (expires - wall_ms), now_ms);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto dberr;
    /* Orphaned states (instances that did not load) are harmless; drop them. */
    exec(s, "DELETE FROM check_state WHERE instance_id NOT IN (SELECT id FROM instances)");
    return loaded;
dberr:
    seterr(err, errlen, "registry store: %s", sqlite3_errmsg(s->db));
    return -EIO;
}
