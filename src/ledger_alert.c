/* ledger_alert: the `alerts` table of the ledger (see ledger_alert.h; part of
 * the ledger module, sharing struct ledger through src/ledger_int.h). Owns
 * the alert store's connection and its statements, and the listing over
 * the ledger's read connection. Calls nothing in ledger.c or
 * ledger_writer.c; they call nothing here. */
#include "ledger_alert.h"
#include "ledger_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ledger_alerts {
    ledger_t *l;
    sqlite3 *db;
    int own;                          /* db is ours (else l->db: a ":memory:" ledger) */
};

static const char *STATES[] = { "pending", "delivered", "failed" };

const char *ledger_alert_state_name(ledger_alert_state_t s)
{
    return (unsigned)s < 3 ? STATES[s] : "unknown";
}

static ledger_alert_state_t state_of(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, STATES[i]) == 0) return (ledger_alert_state_t)i;
    return LEDGER_ALERT_FAILED;
}

static int is_memory(const ledger_t *l)
{
    return strcmp(l->path, ":memory:") == 0;
}

ledger_alerts_t *ledger_alerts_open(ledger_t *l, char *err, size_t errlen)
{
    ledger_alerts_t *a = calloc(1, sizeof *a);
    if (!a) { snprintf(err, errlen, "out of memory"); return NULL; }
    a->l = l;
    if (is_memory(l)) {
        a->db = l->db;
        return a;
    }
    a->own = 1;
    if (sqlite3_open_v2(l->path, &a->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot open the ledger for alerts: %s", l->path,
                 a->db ? sqlite3_errmsg(a->db) : "out of memory");
        sqlite3_close(a->db);
        free(a);
        return NULL;
    }
    /* The request writer commits in groups on its own connection: wait for
     * its write lock rather than fail (and it waits for ours likewise). */
    sqlite3_busy_timeout(a->db, 5000);
    return a;
}

void ledger_alerts_close(ledger_alerts_t *a)
{
    if (!a) return;
    if (a->own) sqlite3_close(a->db);
    free(a);
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *s)
{
    if (s) sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else sqlite3_bind_null(st, i);
}

/* Runs one statement already bound; SQLITE_DONE is success. 0 or -1. */
static int step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int meta_put(sqlite3 *db, const char *key, const char *value)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "INSERT OR REPLACE INTO meta(k, v) VALUES(?1, ?2)", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_TRANSIENT);
    return step_done(st);
}

int ledger_alert_add(ledger_alerts_t *a, const ledger_alert_t *al, const char *meta_key,
                     const char *meta_value)
{
    sqlite3_stmt *st = NULL;
    int added = -1;
    if (sqlite3_exec(a->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) return -1;
    if (sqlite3_prepare_v2(a->db,
            "INSERT OR IGNORE INTO alerts(id, event, team, at_ms, state, attempts, last_error,"
            " next_attempt_ms, payload) VALUES(?1,?2,?3,?4,'pending',0,NULL,?5,?6)",
            -1, &st, NULL) != SQLITE_OK)
        goto fail;
    sqlite3_bind_text(st, 1, al->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, al->event, -1, SQLITE_TRANSIENT);
    bind_text_or_null(st, 3, al->team);
    sqlite3_bind_int64(st, 4, al->at_ms);
    sqlite3_bind_int64(st, 5, al->next_ms);
    sqlite3_bind_text(st, 6, al->payload, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_DONE) goto fail;
    added = sqlite3_changes(a->db) > 0;
    sqlite3_finalize(st);
    st = NULL;
    if (meta_key && meta_put(a->db, meta_key, meta_value) != 0) goto fail;
    if (sqlite3_exec(a->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto fail;
    return added;
fail:
    sqlite3_finalize(st);
    sqlite3_exec(a->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int ledger_alert_update(ledger_alerts_t *a, const char *id, ledger_alert_state_t state,
                        int attempts, const char *last_error, int64_t next_ms)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(a->db,
            "UPDATE alerts SET state = ?2, attempts = ?3,"
            " last_error = COALESCE(?4, last_error), next_attempt_ms = ?5 WHERE id = ?1",
            -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, ledger_alert_state_name(state), -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, attempts);
    bind_text_or_null(st, 4, last_error);
    sqlite3_bind_int64(st, 5, next_ms);
    return step_done(st);
}

#define COLUMNS "id, event, team, at_ms, state, attempts, last_error, next_attempt_ms, payload"

/* Steps st (selecting COLUMNS) and calls fn per row. 0 or -1. */
static int each_row(sqlite3_stmt *st, ledger_alert_fn fn, void *ud)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_alert_t al = {
            .id = (const char *)sqlite3_column_text(st, 0),
            .event = (const char *)sqlite3_column_text(st, 1),
            .team = (const char *)sqlite3_column_text(st, 2),
            .at_ms = sqlite3_column_int64(st, 3),
            .state = state_of((const char *)sqlite3_column_text(st, 4)),
            .attempts = sqlite3_column_int(st, 5),
            .last_error = (const char *)sqlite3_column_text(st, 6),
            .next_ms = sqlite3_column_int64(st, 7),
            .payload = (const char *)sqlite3_column_text(st, 8),
        };
        if (!al.id || !al.event || !al.payload) continue;
        if (fn(ud, &al) != 0) return 0;
    }
    return rc == SQLITE_DONE ? 0 : -1;
}

int ledger_alert_each(ledger_alerts_t *a, int pending, ledger_alert_fn fn, void *ud)
{
    sqlite3_stmt *st;
    const char *sql = pending
        ? "SELECT " COLUMNS " FROM alerts WHERE state = 'pending' ORDER BY at_ms, id"
        : "SELECT " COLUMNS " FROM alerts";
    if (sqlite3_prepare_v2(a->db, sql, -1, &st, NULL) != SQLITE_OK) return -1;
    int rc = each_row(st, fn, ud);
    sqlite3_finalize(st);
    return rc;
}

int ledger_alert_meta_get(ledger_alerts_t *a, const char *key, char *out, size_t outlen)
{
    sqlite3_stmt *st;
    if (outlen == 0) return -1;
    out[0] = '\0';
    if (sqlite3_prepare_v2(a->db, "SELECT v FROM meta WHERE k = ?1", -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : -1;
}

int ledger_alert_meta_set(ledger_alerts_t *a, const char *key, const char *value)
{
    return meta_put(a->db, key, value);
}

int ledger_alert_list(ledger_t *l, int64_t since_ms, int limit, ledger_alert_fn fn, void *ud,
                      char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = -1;
    pthread_mutex_lock(&l->rmu);
    sqlite3 *db = l->db;
    if (l->started && !is_memory(l)) {     /* the writer owns l->db: the read connection */
        if (!l->rdb && sqlite3_open_v2(l->path, &l->rdb, SQLITE_OPEN_READONLY |
                                       SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
            snprintf(err, errlen, "cannot open the ledger for reading");
            sqlite3_close(l->rdb);
            l->rdb = NULL;
            goto out;
        }
        sqlite3_busy_timeout(l->rdb, 5000);
        db = l->rdb;
    }
    if (sqlite3_prepare_v2(db, "SELECT " COLUMNS " FROM alerts WHERE at_ms >= ?1"
                           " ORDER BY at_ms DESC, id DESC LIMIT ?2", -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, since_ms);
    sqlite3_bind_int(st, 2, limit);
    rc = each_row(st, fn, ud);
    if (rc != 0) snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return rc;
}

int ledger_alert_peek_instance(const char *path, char *out, size_t outlen)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = -1;
    if (outlen == 0) return -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) goto out;
    sqlite3_busy_timeout(db, 1000);
    if (sqlite3_prepare_v2(db, "SELECT v FROM meta WHERE k = 'instance_id'", -1, &st,
                           NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
        rc = 0;
    }
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return rc;
}
