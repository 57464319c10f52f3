/* ledger: the face of the ledger module (see ledger.h): opening the SQLite
 * file and its schema, recovery at start-up, the read connection and the
 * small reads (spend, instance id), and closing. The write path (queue,
 * writer thread, group commit) is in ledger_writer.c, the report and the
 * request log in ledger_query.c, what an older ledger gains at its first
 * open in ledger_migrate.c, the begin journal in journal.c; struct ledger
 * is in the private src/ledger_int.h. This file calls into ledger_writer.c
 * and ledger_migrate.c, never the other way round.
 *
 * Schema: `requests` holds one row per admitted request, with the prices it
 * was admitted at (added by ledger_migrate.c); `spend_daily` holds
 * per-team, per-UTC-day charge totals updated in the same transaction as the
 * row's completion, so start-up rebuilds a period's spend from at most a few
 * dozen rows whatever the ledger's size. `usage_hourly` holds, per hour,
 * team, key, model and price set, what a GROUP BY over the requests would give
 * (requests, tokens, charges), kept in the same transactions as the rows, so
 * a report over whole hours reads the rollup instead of the requests. Leftover
 * inflight rows are found through a partial index; the request log's filters
 * (team, key, model, state, each with the start time) have an index each.
 * `alerts` holds the budget alert events (ledger_alert.c), `rate_changes` the
 * rate table's changes (ledger_rates.c). */
#include "ledger_int.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *SCHEMA =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS requests("
    " id TEXT PRIMARY KEY, started_ms INTEGER NOT NULL, ended_ms INTEGER,"
    " team TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL,"
    " stream INTEGER NOT NULL DEFAULT 0, status INTEGER,"
    " prompt_tokens INTEGER NOT NULL DEFAULT 0,"
    " completion_tokens INTEGER NOT NULL DEFAULT 0,"
    " cached_tokens INTEGER NOT NULL DEFAULT 0,"
    " reserved_nanos INTEGER NOT NULL DEFAULT 0,"
    " charged_nanos INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL, upstream_id TEXT, latency_ms INTEGER);"
    "CREATE INDEX IF NOT EXISTS requests_started ON requests(started_ms);"
    "CREATE INDEX IF NOT EXISTS requests_inflight ON requests(state)"
    " WHERE state = 'inflight';"
    "CREATE UNIQUE INDEX IF NOT EXISTS requests_upstream_id ON requests(upstream_id)"
    " WHERE upstream_id IS NOT NULL;"
    /* budget alerts (ledger_alert.c): one row per event, recorded before its
     * first delivery attempt; times in unix ms */
    "CREATE TABLE IF NOT EXISTS alerts("
    " id TEXT PRIMARY KEY, event TEXT NOT NULL, team TEXT, at_ms INTEGER NOT NULL,"
    " state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,"
    " next_attempt_ms INTEGER NOT NULL, payload TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS alerts_at ON alerts(at_ms);"
    "CREATE TABLE IF NOT EXISTS spend_daily("
    " team TEXT NOT NULL, day INTEGER NOT NULL, nanos INTEGER NOT NULL,"
    " PRIMARY KEY(team, day)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;";

static void mkparents(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(buf, 0755);
        *p = '/';
    }
}

ledger_t *ledger_open(const char *path, char *err, size_t errlen)
{
    ledger_t *l = calloc(1, sizeof *l);
    if (!l) { snprintf(err, errlen, "out of memory"); return NULL; }
    snprintf(l->path, sizeof l->path, "%s", path);
    if (strcmp(path, ":memory:") != 0) mkparents(path);
    /* SQLite's allocation statistics take a global mutex on every malloc;
     * nothing reads them. (Refused, harmlessly, once SQLite is initialised.) */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* A file ledger's connection is used by one thread at a time (opening
     * and recovery on the main thread, then only the writer; reads have their
     * own connection): NOMUTEX spares a mutex on every SQLite call. A
     * ":memory:" ledger has no second connection, so reads share this one
     * with the writer thread: FULLMUTEX. */
    int memory = strcmp(path, ":memory:") == 0;
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                        (memory ? SQLITE_OPEN_FULLMUTEX : SQLITE_OPEN_NOMUTEX),
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open ledger: %s", path,
                 l->db ? sqlite3_errmsg(l->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(l->db, SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot set up ledger: %s", path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    if (ledger_migrate(l, err, errlen) != 0) goto fail;
    if (sqlite3_prepare_v2(l->db,
            "INSERT INTO requests(id, started_ms, team, key_id, model, stream,"
            " reserved_nanos, state, price_input_nanos, price_output_nanos,"
            " price_cache_read_nanos) VALUES(?1,?2,?3,?4,?5,?6,?7,'inflight',?8,?9,?10)",
            -1, &l->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "UPDATE requests SET ended_ms=?2, status=?3, prompt_tokens=?4,"
            " completion_tokens=?5, cached_tokens=?6, charged_nanos=?7, state=?8,"
            " upstream_id=?9, latency_ms=?10 WHERE id=?1 AND state='inflight'",
            -1, &l->upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "INSERT INTO requests(id, started_ms, team, key_id, model, stream, reserved_nanos,"
            " ended_ms, status, prompt_tokens, completion_tokens, cached_tokens, charged_nanos,"
            " state, upstream_id, latency_ms, price_input_nanos, price_output_nanos,"
            " price_cache_read_nanos)"
            " VALUES(?1,?11,?12,?13,?14,?15,?16,?2,?3,?4,?5,?6,?7,?8,?9,?10,?17,?18,?19)",
            -1, &l->full, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "INSERT INTO spend_daily(team, day, nanos) VALUES(?1,?2,?3)"
            " ON CONFLICT(team, day) DO UPDATE SET nanos = nanos + excluded.nanos",
            -1, &l->daily, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "INSERT INTO usage_hourly(hour, team, key_id, model, requests, prompt_tokens,"
            " completion_tokens, cached_tokens, charged_nanos, price_input_nanos,"
            " price_output_nanos, price_cache_read_nanos)"
            " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)"
            " ON CONFLICT(hour, team, key_id, model, price_input_nanos, price_output_nanos,"
            " price_cache_read_nanos) DO UPDATE SET"
            " requests = requests + excluded.requests,"
            " prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
            " completion_tokens = completion_tokens + excluded.completion_tokens,"
            " cached_tokens = cached_tokens + excluded.cached_tokens,"
            " charged_nanos = charged_nanos + excluded.charged_nanos",
            -1, &l->hourly, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot prepare ledger statements: %s", path,
                 sqlite3_errmsg(l->db));
        goto fail;
    }
    if (strcmp(path, ":memory:") != 0 && !(l->journal = journal_open(path, err, errlen)))
        goto fail;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->rmu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
fail:                                 /* the journal, opened last, is never open here */
    sqlite3_finalize(l->ins);
    sqlite3_finalize(l->upd);
    sqlite3_finalize(l->daily);
    sqlite3_finalize(l->full);
    sqlite3_finalize(l->hourly);
    sqlite3_close(l->db);
    free(l);
    return NULL;
}

ledger_t *ledger_open_ro(const char *path, char *err, size_t errlen)
{
    ledger_t *l = calloc(1, sizeof *l);
    if (!l) { snprintf(err, errlen, "out of memory"); return NULL; }
    snprintf(l->path, sizeof l->path, "%s", path);
    l->ro = 1;
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open ledger: %s", path,
                 l->db ? sqlite3_errmsg(l->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(l->db, 5000);
    int req = ledger_has_object(l->db, "requests");
    if (req != 1) {
        snprintf(err, errlen, "%s: %s", path,
                 req < 0 ? sqlite3_errmsg(l->db) : "not a pinmeter ledger (no requests table)");
        goto fail;
    }
    /* A ledger no server of this version has opened yet may have no rollup
     * (its reports read the requests: the same figures, more slowly) or no
     * prices (its rows' prices read as not recorded). */
    l->has_rollup = ledger_has_object(l->db, "usage_hourly") == 1;
    l->req_prices = ledger_has_column(l->db, "requests", "price_input_nanos") == 1;
    l->rollup_prices = l->has_rollup &&
                       ledger_has_column(l->db, "usage_hourly", "price_input_nanos") == 1;
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->rmu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
fail:
    sqlite3_close(l->db);
    free(l);
    return NULL;
}

/* What a recovery charged as interrupted for one team, key and model. */
struct ledger_recovered {
    char *team, *key, *model;
    int64_t rows;
    nanos_t nanos;
};

static void recovered_free(ledger_t *l)
{
    for (size_t i = 0; i < l->n_recovered; i++) {
        free(l->recovered[i].team);
        free(l->recovered[i].key);
        free(l->recovered[i].model);
    }
    free(l->recovered);
    l->recovered = NULL;
    l->n_recovered = 0;
}

/* Adds to the group of team, key and model (a few groups: a linear
 * search). 0 or -1. */
static int recovered_add(ledger_t *l, const char *team, const char *key, const char *model,
                         int64_t rows, nanos_t nanos)
{
    team = team ? team : "";
    key = key ? key : "";
    model = model ? model : "";
    for (size_t i = 0; i < l->n_recovered; i++) {
        struct ledger_recovered *g = &l->recovered[i];
        if (strcmp(g->team, team) == 0 && strcmp(g->key, key) == 0 &&
            strcmp(g->model, model) == 0) {
            g->rows += rows;
            g->nanos += nanos;
            return 0;
        }
    }
    struct ledger_recovered *ng = realloc(l->recovered, (l->n_recovered + 1) * sizeof *ng);
    if (!ng) return -1;
    l->recovered = ng;
    struct ledger_recovered *g = &ng[l->n_recovered];
    g->key = g->model = NULL;
    if (!(g->team = strdup(team)) || !(g->key = strdup(key)) || !(g->model = strdup(model))) {
        free(g->team);
        free(g->key);
        return -1;
    }
    g->rows = rows;
    g->nanos = nanos;
    l->n_recovered++;
    return 0;
}

void ledger_recovered(ledger_t *l, ledger_recovered_fn fn, void *ud)
{
    for (size_t i = 0; i < l->n_recovered; i++)
        fn(ud, l->recovered[i].team, l->recovered[i].key, l->recovered[i].model,
           l->recovered[i].rows, l->recovered[i].nanos);
}

/* Groups the leftover inflight rows (about to become interrupted) by team,
 * key and model; inside recover's transaction. 0 or -1. */
static int recovered_inflight(ledger_t *l)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(l->db,
            "SELECT team, key_id, model, COUNT(*), SUM(reserved_nanos) FROM requests"
            " WHERE state = 'inflight' GROUP BY team, key_id, model", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (recovered_add(l, (const char *)sqlite3_column_text(st, 0),
                          (const char *)sqlite3_column_text(st, 1),
                          (const char *)sqlite3_column_text(st, 2),
                          sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)) != 0)
            break;
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* One journaled begin, replayed inside recover's transaction: inserted as
 * interrupted unless its row is already there. */
typedef struct replay {
    ledger_t *l;
    sqlite3_stmt *ins;
    int64_t at_ms;
    int64_t n;                        /* rows inserted with a charge */
} replay_t;

static int replay_one(void *ud, const journal_begin_t *b)
{
    replay_t *rp = ud;
    sqlite3_stmt *ins = rp->ins, *daily = rp->l->daily;
    sqlite3_bind_text(ins, 1, b->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(ins, 2, b->started_ms);
    sqlite3_bind_int64(ins, 3, rp->at_ms);
    sqlite3_bind_text(ins, 4, b->team, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 5, b->key_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(ins, 6, b->model, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(ins, 7, b->stream);
    sqlite3_bind_int64(ins, 8, b->reserved);
    ledger_bind_price(ins, 9, b->price_input);
    ledger_bind_price(ins, 10, b->price_output);
    ledger_bind_price(ins, 11, b->price_cache_read);
    int rc = sqlite3_step(ins);
    int added = sqlite3_changes(rp->l->db);
    sqlite3_reset(ins);
    if (rc != SQLITE_DONE) return -1;
    if (!added) return 0;
    if (recovered_add(rp->l, b->team, b->key_id, b->model, 1, b->reserved) != 0) return -1;
    struct hour_sum h = { .team = b->team, .key = b->key_id, .model = b->model,
                          .hour = b->started_ms / 3600000, .requests = 1, .nanos = b->reserved,
                          .price = { b->price_input < 0 ? -1 : b->price_input,
                                     b->price_output < 0 ? -1 : b->price_output,
                                     b->price_cache_read < 0 ? -1 : b->price_cache_read } };
    if (ledger_hourly_add(rp->l, &h) != 0) return -1;
    if (b->reserved == 0) return 0;
    rp->n++;
    sqlite3_bind_text(daily, 1, b->team, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(daily, 2, b->started_ms / 86400000);
    sqlite3_bind_int64(daily, 3, b->reserved);
    rc = sqlite3_step(daily);
    sqlite3_reset(daily);
    sqlite3_clear_bindings(daily);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Inserts rows for journaled begins that never reached the database:
 * interrupted, charged at their reservation. Inside recover's transaction. */
static int replay_journal(ledger_t *l, int64_t at_ms, int64_t *n)
{
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(l->db,
            "INSERT OR IGNORE INTO requests(id, started_ms, ended_ms, team, key_id, model,"
            " stream, reserved_nanos, charged_nanos, state, price_input_nanos,"
            " price_output_nanos, price_cache_read_nanos)"
            " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?8,'interrupted',?9,?10,?11)", -1, &ins,
            NULL) != SQLITE_OK)
        return -1;
    replay_t rp = { .l = l, .ins = ins, .at_ms = at_ms };
    int rc = l->journal ? journal_replay(l->journal, replay_one, &rp) : 0;
    sqlite3_finalize(ins);
    *n += rp.n;
    return rc;
}

int64_t ledger_recover(ledger_t *l, int64_t at_ms)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    recovered_free(l);
    if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    int64_t replayed = 0;
    if (replay_journal(l, at_ms, &replayed) != 0 || recovered_inflight(l) != 0) goto fail;
    /* Never undercount: an interrupted request is charged its reservation. */
    if (sqlite3_exec(l->db,
            "INSERT INTO spend_daily(team, day, nanos)"
            " SELECT team, started_ms / 86400000, SUM(reserved_nanos) FROM requests"
            " WHERE state = 'inflight' GROUP BY team, started_ms / 86400000"
            " ON CONFLICT(team, day) DO UPDATE SET nanos = nanos + excluded.nanos",
            NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    /* ...and so is its hour in the rollup (its tokens stay 0, as recorded) */
    if (sqlite3_exec(l->db,
            "INSERT INTO usage_hourly(hour, team, key_id, model, price_input_nanos,"
            " price_output_nanos, price_cache_read_nanos, requests, prompt_tokens,"
            " completion_tokens, cached_tokens, charged_nanos)"
            " SELECT started_ms / 3600000, team, key_id, model, COALESCE(price_input_nanos, -1),"
            " COALESCE(price_output_nanos, -1), COALESCE(price_cache_read_nanos, -1),"
            " 0, 0, 0, 0, SUM(reserved_nanos)"
            " FROM requests WHERE state = 'inflight' GROUP BY 1, 2, 3, 4, 5, 6, 7"
            " ON CONFLICT(hour, team, key_id, model, price_input_nanos, price_output_nanos,"
            " price_cache_read_nanos) DO UPDATE SET"
            " charged_nanos = charged_nanos + excluded.charged_nanos",
            NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    if (sqlite3_prepare_v2(l->db,
            "UPDATE requests SET state = 'interrupted', charged_nanos = reserved_nanos,"
            " ended_ms = ?1 WHERE state = 'inflight'", -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, at_ms);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    n = sqlite3_changes(l->db) + replayed;
    sqlite3_finalize(st);
    if (sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
        recovered_free(l);
        return -1;
    }
    /* every journaled begin now has its row: start the journal afresh */
    if (l->journal && journal_reset(l->journal) != 0) return -1;
    return n;
fail:
    sqlite3_finalize(st);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    recovered_free(l);
    return -1;
}

int ledger_instance_id(ledger_t *l, const char *fresh, char *out, size_t outlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (l->started || outlen == 0) return -1;
    if (sqlite3_prepare_v2(l->db, "INSERT OR IGNORE INTO meta(k, v) VALUES('instance_id', ?1)",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, fresh, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) goto out;
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(l->db, "SELECT v FROM meta WHERE k = 'instance_id'",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(st) == SQLITE_ROW) {
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = 0;
    }
out:
    sqlite3_finalize(st);
    return rc;
}

sqlite3 *ledger_reader_locked(ledger_t *l)
{
    if (!l->started || strcmp(l->path, ":memory:") == 0) return l->db;
    if (!l->rdb) {                    /* the writer owns l->db */
        if (sqlite3_open_v2(l->path, &l->rdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            sqlite3_close(l->rdb);
            l->rdb = NULL;
            return NULL;
        }
        sqlite3_busy_timeout(l->rdb, 5000);
    }
    return l->rdb;
}

int ledger_spent_since(ledger_t *l, const char *team, int64_t since_day, nanos_t *out)
{
    sqlite3_stmt *st;
    int rc = -1;
    pthread_mutex_lock(&l->rmu);
    sqlite3 *db = ledger_reader_locked(l);
    if (!db) goto out;
    if (sqlite3_prepare_v2(db,
            "SELECT COALESCE(SUM(nanos), 0) FROM spend_daily WHERE team = ?1 AND day >= ?2",
            -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, team, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, since_day);
    rc = sqlite3_step(st) == SQLITE_ROW ? 0 : -1;
    if (rc == 0) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&l->rmu);
    return rc;
}

int ledger_key_spent_since(ledger_t *l, const char *team, const char *key_id, int64_t since_s,
                           nanos_t *out)
{
    sqlite3_stmt *st;
    int rc = -1;
    pthread_mutex_lock(&l->rmu);
    sqlite3 *db = ledger_reader_locked(l);
    if (!db) goto out;
    if (sqlite3_prepare_v2(db,
            "SELECT COALESCE(SUM(charged_nanos), 0) FROM usage_hourly"
            " WHERE team = ?1 AND key_id = ?2 AND hour >= ?3", -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(st, 1, team, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, since_s / 3600);
    rc = sqlite3_step(st) == SQLITE_ROW ? 0 : -1;
    if (rc == 0) *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
out:
    pthread_mutex_unlock(&l->rmu);
    return rc;
}

void ledger_close(ledger_t *l, int timeout_ms)
{
    if (!l) return;
    ledger_writer_stop(l, timeout_ms);
    sqlite3_finalize(l->ins);
    sqlite3_finalize(l->upd);
    sqlite3_finalize(l->daily);
    sqlite3_finalize(l->full);
    sqlite3_finalize(l->hourly);
    sqlite3_close(l->db);
    sqlite3_close(l->rdb);
    /* a clean stop has every begin in the database: empty the journal */
    journal_close(l->journal);
    recovered_free(l);
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->rmu);
    pthread_cond_destroy(&l->cv);
    free(l);
}
