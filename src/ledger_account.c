/* ledger_account: the account's tables (see ledger_account.h; part of the
 * ledger module, sharing struct ledger through src/ledger_int.h). Owns the
 * account store's connection, its schema and statements, and the reads
 * reconciliation makes. Calls ledger_reader_locked and ledger_has_object;
 * nothing in the ledger's other files calls here. */
#include "ledger_account.h"
#include "ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *ACCT_SCHEMA =
    "CREATE TABLE IF NOT EXISTS account_syncs("
    " at_ms INTEGER NOT NULL, total_nanos INTEGER NOT NULL, loaned_nanos INTEGER NOT NULL,"
    " available_nanos INTEGER NOT NULL, charged_nanos INTEGER);"
    "CREATE INDEX IF NOT EXISTS account_syncs_at ON account_syncs(at_ms);"
    "CREATE TABLE IF NOT EXISTS account_events("
    " at_ms INTEGER NOT NULL, kind TEXT NOT NULL, credits_nanos INTEGER NOT NULL DEFAULT 0,"
    " total_nanos INTEGER, prev_total_nanos INTEGER, detail TEXT);"
    "CREATE INDEX IF NOT EXISTS account_events_at ON account_events(at_ms);"
    "CREATE TABLE IF NOT EXISTS topup_changes("
    " at_ms INTEGER NOT NULL, old TEXT, new TEXT NOT NULL, via TEXT NOT NULL);";

struct ledger_account {
    ledger_t *l;
    sqlite3 *db;
    int own;                          /* db is ours (else l->db: a ":memory:" ledger) */
    pthread_mutex_t mu;               /* one transaction at a time on db */
};

ledger_account_t *ledger_account_open(ledger_t *l, char *err, size_t errlen)
{
    ledger_account_t *a = calloc(1, sizeof *a);
    if (!a) { snprintf(err, errlen, "out of memory"); return NULL; }
    a->l = l;
    pthread_mutex_init(&a->mu, NULL);
    if (strcmp(l->path, ":memory:") == 0) {
        a->db = l->db;
    } else {
        a->own = 1;
        if (sqlite3_open_v2(l->path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX,
                            NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot open the ledger for the account: %s", l->path,
                     a->db ? sqlite3_errmsg(a->db) : "out of memory");
            goto fail;
        }
        /* the request writer commits in groups: wait for its lock */
        sqlite3_busy_timeout(a->db, 5000);
    }
    char *msg = NULL;
    if (sqlite3_exec(a->db, ACCT_SCHEMA, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot set up the account tables: %s", l->path,
                 msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    return a;
fail:
    if (a->own) sqlite3_close(a->db);
    pthread_mutex_destroy(&a->mu);
    free(a);
    return NULL;
}

void ledger_account_close(ledger_account_t *a)
{
    if (!a) return;
    if (a->own) sqlite3_close(a->db);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

static int insert_event(sqlite3 *db, const ledger_account_event_t *ev)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO account_events(at_ms, kind, credits_nanos,"
                           " total_nanos, prev_total_nanos, detail) VALUES(?1,?2,?3,?4,?5,?6)",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, ev->at_ms);
    sqlite3_bind_text(st, 2, ev->kind, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, ev->credits);
    sqlite3_bind_int64(st, 4, ev->total);
    sqlite3_bind_int64(st, 5, ev->prev_total);
    bind_text_or_null(st, 6, ev->detail);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int ledger_account_add_sync(ledger_account_t *a, const ledger_sync_t *s, const ledger_account_event_t *ev)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock(&a->mu);
    if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) goto out;
    if (sqlite3_prepare_v2(a->db, "INSERT INTO account_syncs(at_ms, total_nanos, loaned_nanos,"
                           " available_nanos, charged_nanos) VALUES(?1,?2,?3,?4,?5)", -1, &st,
                           NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_int64(st, 1, s->at_ms);
    sqlite3_bind_int64(st, 2, s->total);
    sqlite3_bind_int64(st, 3, s->loaned);
    sqlite3_bind_int64(st, 4, s->available);
    if (s->charged_known) sqlite3_bind_int64(st, 5, s->charged);
    else sqlite3_bind_null(st, 5);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    if (ev && insert_event(a->db, ev) != 0) goto fail;
    if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    rc = 0;
    goto out;
fail:
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int ledger_account_add_event(ledger_account_t *a, const ledger_account_event_t *ev)
{
    pthread_mutex_lock(&a->mu);
    int rc = insert_event(a->db, ev);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

#define SYNC_COLUMNS "at_ms, total_nanos, loaned_nanos, available_nanos, charged_nanos"

static void sync_of(sqlite3_stmt *st, ledger_sync_t *s)
{
    s->at_ms = sqlite3_column_int64(st, 0);
    s->total = sqlite3_column_int64(st, 1);
    s->loaned = sqlite3_column_int64(st, 2);
    s->available = sqlite3_column_int64(st, 3);
    s->charged_known = sqlite3_column_type(st, 4) != SQLITE_NULL;
    s->charged = s->charged_known ? sqlite3_column_int64(st, 4) : 0;
}

int ledger_account_last_sync(ledger_account_t *a, ledger_sync_t *out)
{
    sqlite3_stmt *st;
    int rc = -1;
    pthread_mutex_lock(&a->mu);
    if (sqlite3_prepare_v2(a->db, "SELECT " SYNC_COLUMNS " FROM account_syncs"
                           " ORDER BY at_ms DESC, rowid DESC LIMIT 1", -1, &st, NULL) == SQLITE_OK) {
        int s = sqlite3_step(st);
        if (s == SQLITE_ROW) {
            sync_of(st, out);
            rc = 1;
        } else if (s == SQLITE_DONE) {
            rc = 0;
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&a->mu);
    return rc;
}

static int insert_change(sqlite3 *db, int64_t at_ms, const char *old_json, const char *new_json,
                         const char *via)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT INTO topup_changes(at_ms, old, new, via)"
                           " VALUES(?1,?2,?3,?4)", -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, at_ms);
    bind_text_or_null(st, 2, old_json);
    sqlite3_bind_text(st, 3, new_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, via, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int ledger_account_topup_change(ledger_account_t *a, int64_t at_ms, const char *old_json,
                             const char *new_json, const char *via)
{
    pthread_mutex_lock(&a->mu);
    int rc = insert_change(a->db, at_ms, old_json, new_json, via);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int ledger_account_topup_change_at(const char *path, int64_t at_ms, const char *old_json,
                                const char *new_json, const char *via, char *err,
                                size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open the ledger: %s", path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        goto out;
    }
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, ACCT_SCHEMA, NULL, NULL, NULL) != SQLITE_OK ||
        insert_change(db, at_ms, old_json, new_json, via) != 0) {
        snprintf(err, errlen, "%s: cannot record the change: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    rc = 0;
out:
    sqlite3_close(db);
    return rc;
}

/* ---- reads for reconciliation, through the read connection ---- */

/* The read connection, locked, with table present: 1; 0 when the table is
 * missing (unlocked); -1 error (unlocked, err set). */
static int reader(ledger_t *l, const char *table, sqlite3 **db, char *err, size_t errlen)
{
    pthread_mutex_lock(&l->rmu);
    *db = ledger_reader_locked(l);
    int have = *db ? ledger_has_object(*db, table) : -1;
    if (have == 1) return 1;
    if (have < 0) snprintf(err, errlen, "cannot read the ledger");
    pthread_mutex_unlock(&l->rmu);
    return have;
}

static int query_failed(ledger_t *l, sqlite3 *db, sqlite3_stmt *st, char *err, size_t errlen)
{
    snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return -1;
}

int ledger_account_read_syncs(ledger_t *l, int64_t since_ms, int64_t until_ms, ledger_sync_fn fn,
                           void *ud, char *err, size_t errlen)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int have = reader(l, "account_syncs", &db, err, errlen);
    if (have <= 0) return have;
    if (sqlite3_prepare_v2(db,
            "SELECT * FROM (SELECT " SYNC_COLUMNS ", rowid FROM account_syncs WHERE at_ms < ?1"
            " ORDER BY at_ms DESC, rowid DESC LIMIT 1)"
            " UNION ALL SELECT * FROM (SELECT " SYNC_COLUMNS ", rowid FROM account_syncs"
            " WHERE at_ms >= ?1 AND at_ms < ?2 ORDER BY at_ms, rowid)", -1, &st,
            NULL) != SQLITE_OK)
        return query_failed(l, db, st, err, errlen);
    sqlite3_bind_int64(st, 1, since_ms);
    sqlite3_bind_int64(st, 2, until_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_sync_t s;
        sync_of(st, &s);
        if (fn(ud, &s) != 0) { rc = SQLITE_DONE; break; }
    }
    if (rc != SQLITE_DONE) return query_failed(l, db, st, err, errlen);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return 0;
}

int ledger_account_read_events(ledger_t *l, int64_t since_ms, int64_t until_ms, const char *kind,
                            ledger_account_event_fn fn, void *ud, char *err, size_t errlen)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int have = reader(l, "account_events", &db, err, errlen);
    if (have <= 0) return have;
    if (sqlite3_prepare_v2(db,
            "SELECT at_ms, kind, credits_nanos, total_nanos, prev_total_nanos, detail"
            " FROM account_events WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR kind = ?3)"
            " ORDER BY at_ms, rowid", -1, &st, NULL) != SQLITE_OK)
        return query_failed(l, db, st, err, errlen);
    sqlite3_bind_int64(st, 1, since_ms);
    sqlite3_bind_int64(st, 2, until_ms);
    bind_text_or_null(st, 3, kind);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_account_event_t e = {
            .at_ms = sqlite3_column_int64(st, 0),
            .kind = (const char *)sqlite3_column_text(st, 1),
            .credits = sqlite3_column_int64(st, 2),
            .total = sqlite3_column_int64(st, 3),
            .prev_total = sqlite3_column_int64(st, 4),
            .detail = (const char *)sqlite3_column_text(st, 5),
        };
        if (!e.kind) continue;
        if (fn(ud, &e) != 0) { rc = SQLITE_DONE; break; }
    }
    if (rc != SQLITE_DONE) return query_failed(l, db, st, err, errlen);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return 0;
}

int ledger_account_read_charges(ledger_t *l, int64_t after_ms, int64_t upto_ms,
                             int64_t lookback_ms, ledger_charge_fn fn, void *ud, char *err,
                             size_t errlen)
{
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    int have = reader(l, "requests", &db, err, errlen);
    if (have <= 0) return have;
    /* Normal rows through the start-time index (a request ends at most its
     * upstream timeout after it starts); interrupted rows, charged when a
     * restart found them, whenever they started (they are few), through the
     * partial index of rows not settled ("state <> 'settled'" lets the
     * planner use it; without it, it walks the start-time index from the
     * beginning). */
    if (sqlite3_prepare_v2(db,
            "SELECT ended_ms, charged_nanos FROM requests"
            " WHERE started_ms >= ?3 AND started_ms <= ?2 AND ended_ms > ?1 AND ended_ms <= ?2"
            " AND charged_nanos != 0"
            " UNION ALL SELECT ended_ms, charged_nanos FROM requests"
            " WHERE state = 'interrupted' AND state <> 'settled' AND started_ms < ?3"
            " AND ended_ms > ?1"
            " AND ended_ms <= ?2 AND charged_nanos != 0", -1, &st, NULL) != SQLITE_OK)
        return query_failed(l, db, st, err, errlen);
    sqlite3_bind_int64(st, 1, after_ms);
    sqlite3_bind_int64(st, 2, upto_ms);
    sqlite3_bind_int64(st, 3, after_ms - lookback_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (fn(ud, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1)) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    if (rc != SQLITE_DONE) return query_failed(l, db, st, err, errlen);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return 0;
}
