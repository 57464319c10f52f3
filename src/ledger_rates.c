/* ledger_rates: the `rate_changes` table (see ledger_rates.h; part of the
 * ledger module, sharing struct ledger through src/ledger_int.h). Owns the
 * short-lived connection a change is written on. Calls nothing in the
 * ledger's other files and they call nothing here. */
#include "ledger_rates.h"
#include "ledger_int.h"

#include <stdio.h>
#include <string.h>

static void bind_opt(sqlite3_stmt *st, int i, int has, nanos_t v)
{
    if (has) sqlite3_bind_int64(st, i, v);
    else sqlite3_bind_null(st, i);
}

int ledger_rate_changes_add(ledger_t *l, int64_t at_ms, const char *source,
                            const ledger_rate_change_t *v, size_t n, char *err, size_t errlen)
{
    /* A ":memory:" ledger has one connection (FULLMUTEX), which the writer
     * thread uses too: no transaction of ours may straddle its batches, so
     * there each row is its own statement. */
    int memory = strcmp(l->path, ":memory:") == 0;
    sqlite3 *db = memory ? l->db : NULL;
    sqlite3_stmt *st = NULL;
    int ok = 0;
    if (!memory) {
        if (sqlite3_open_v2(l->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            snprintf(err, errlen, "%s: cannot open the ledger: %s", l->path,
                     db ? sqlite3_errmsg(db) : "out of memory");
            goto out;
        }
        sqlite3_busy_timeout(db, 5000);
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) goto dberr;
    }
    if (sqlite3_prepare_v2(db,
            "INSERT INTO rate_changes(at_ms, model, source, old_input_nanos, old_output_nanos,"
            " old_cache_read_nanos, new_input_nanos, new_output_nanos, new_cache_read_nanos)"
            " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)", -1, &st, NULL) != SQLITE_OK)
        goto dberr;
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, at_ms);
        sqlite3_bind_text(st, 2, v[i].model, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, source, -1, SQLITE_STATIC);
        bind_opt(st, 4, v[i].has_old, v[i].old_input);
        bind_opt(st, 5, v[i].has_old, v[i].old_output);
        bind_opt(st, 6, v[i].has_old, v[i].old_cache_read);
        bind_opt(st, 7, v[i].has_new, v[i].new_input);
        bind_opt(st, 8, v[i].has_new, v[i].new_output);
        bind_opt(st, 9, v[i].has_new, v[i].new_cache_read);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        if (rc != SQLITE_DONE) goto dberr;
    }
    if (!memory && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) goto dberr;
    ok = 1;
    goto out;
dberr:
    snprintf(err, errlen, "%s: cannot record the rate change: %s", l->path, sqlite3_errmsg(db));
out:
    sqlite3_finalize(st);
    if (!memory && db) {
        if (!ok) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close(db);
    }
    return ok ? 0 : -1;
}
