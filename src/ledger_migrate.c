/* ledger_migrate: what this version adds to a ledger's schema, given to a
 * ledger from before it at its first open (part of the ledger module;
 * shares struct ledger through src/ledger_int.h): the three price columns
 * of the requests, the hourly usage rollup keyed by hour, team, key, model
 * and price set (filled from the rows already there, or an older rollup
 * rekeyed), the request log's indexes and the rate_changes table.
 *
 * Rows from before the price columns keep NULL prices (nobody knows what
 * they were charged at); their rollup rows carry -1 for "not recorded", as
 * a key column cannot be NULL.
 *
 * A ledger of millions of rows makes this a one-time wait at start-up, so it
 * is made short: the rollup is summed in one sequential pass over the table
 * (a hash of hour, team, key and model in memory; SQLite's GROUP BY would
 * sort the whole table first), and the indexes are built with a large page
 * cache for their sorts, restored afterwards. Each step is one transaction:
 * one cut short leaves nothing behind and runs again at the next open. */
#include "ledger_int.h"
#include "base.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROLLUP_COLS \
    " hour INTEGER NOT NULL, team TEXT NOT NULL, key_id TEXT NOT NULL, model TEXT NOT NULL," \
    " requests INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL," \
    " completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL," \
    " charged_nanos INTEGER NOT NULL," \
    " price_input_nanos INTEGER NOT NULL DEFAULT -1," \
    " price_output_nanos INTEGER NOT NULL DEFAULT -1," \
    " price_cache_read_nanos INTEGER NOT NULL DEFAULT -1," \
    " PRIMARY KEY(hour, team, key_id, model, price_input_nanos, price_output_nanos," \
    " price_cache_read_nanos)) WITHOUT ROWID;"

static const char *ROLLUP_TABLE = "CREATE TABLE usage_hourly(" ROLLUP_COLS;

/* An older rollup (keyed by hour, team, key and model) rekeyed: its rows
 * are from before prices were recorded. */
static const char *ROLLUP_REKEY =
    "CREATE TABLE usage_hourly_priced(" ROLLUP_COLS
    "INSERT INTO usage_hourly_priced(hour, team, key_id, model, requests, prompt_tokens,"
    " completion_tokens, cached_tokens, charged_nanos)"
    " SELECT hour, team, key_id, model, requests, prompt_tokens, completion_tokens,"
    " cached_tokens, charged_nanos FROM usage_hourly;"
    "DROP TABLE usage_hourly;"
    "ALTER TABLE usage_hourly_priced RENAME TO usage_hourly;";

static const char *PRICE_COLUMNS =
    "ALTER TABLE requests ADD COLUMN price_input_nanos INTEGER;"
    "ALTER TABLE requests ADD COLUMN price_output_nanos INTEGER;"
    "ALTER TABLE requests ADD COLUMN price_cache_read_nanos INTEGER;";

/* Every change the serving process applied to its rate table
 * (ledger_rates.c): the old and the new prices, NULL for a model added or
 * removed; nano-credits per 1M tokens; unix ms. */
static const char *RATE_CHANGES =
    "CREATE TABLE IF NOT EXISTS rate_changes("
    " at_ms INTEGER NOT NULL, model TEXT NOT NULL, source TEXT NOT NULL,"
    " old_input_nanos INTEGER, old_output_nanos INTEGER, old_cache_read_nanos INTEGER,"
    " new_input_nanos INTEGER, new_output_nanos INTEGER, new_cache_read_nanos INTEGER);"
    "CREATE INDEX IF NOT EXISTS rate_changes_at ON rate_changes(at_ms);";

/* The request log's filters, each with the start time it is ordered by.
 * The state index leaves out settled rows, most of the ledger: a page of
 * settled rows is found well enough through the start-time index, and most
 * rows (a begin and its completion in one batch) then cost it nothing. */
static const char *LOG_INDEXES =
    "CREATE INDEX IF NOT EXISTS requests_team ON requests(team, started_ms);"
    "CREATE INDEX IF NOT EXISTS requests_key ON requests(key_id, started_ms);"
    "CREATE INDEX IF NOT EXISTS requests_model ON requests(model, started_ms);"
    "CREATE INDEX IF NOT EXISTS requests_state ON requests(state, started_ms)"
    " WHERE state <> 'settled';";

#define BUILD_CACHE_KIB 262144        /* page cache while building (256 MiB) */

int ledger_has_object(sqlite3 *db, const char *name)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE name = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int ledger_has_column(sqlite3 *db, const char *table, const char *col)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", -1, &st,
                           NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* The sums being built: open addressing over owned copies of the strings. */
typedef struct sums {
    struct hour_sum *v;
    size_t cap, n;
} sums_t;

static uint32_t sum_hash(int64_t hour, const char *team, const char *key, const char *model,
                         const nanos_t *price)
{
    uint32_t h = 2166136261u ^ (uint32_t)hour ^ (uint32_t)(hour >> 32);
    for (int k = 0; k < 3; k++) h = (h ^ (uint32_t)price[k]) * 16777619u;
    for (const char *s = team; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *s = key; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (const char *s = model; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct hour_sum *sum_slot(struct hour_sum *v, size_t cap, int64_t hour, const char *team,
                                 const char *key, const char *model, const nanos_t *price)
{
    size_t i = sum_hash(hour, team, key, model, price) & (cap - 1);
    for (; v[i].team; i = (i + 1) & (cap - 1))
        if (v[i].hour == hour && strcmp(v[i].team, team) == 0 && strcmp(v[i].key, key) == 0 &&
            strcmp(v[i].model, model) == 0 && memcmp(v[i].price, price, sizeof v[i].price) == 0)
            break;
    return &v[i];
}

/* Doubles the table (kept at most half full). 0 or -1. */
static int sums_grow(sums_t *s)
{
    size_t cap = s->cap ? s->cap * 2 : 4096;
    struct hour_sum *v = calloc(cap, sizeof *v);
    if (!v) return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->v[i].team)
            *sum_slot(v, cap, s->v[i].hour, s->v[i].team, s->v[i].key, s->v[i].model,
                      s->v[i].price) = s->v[i];
    free(s->v);
    s->v = v;
    s->cap = cap;
    return 0;
}

static void sums_free(sums_t *s)
{
    for (size_t i = 0; i < s->cap; i++) {
        free((char *)s->v[i].team);
        free((char *)s->v[i].key);
        free((char *)s->v[i].model);
    }
    free(s->v);
}

static const char *col(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

/* Sums every row of requests per hour, team, key, model and price set into
 * s. 0 or -1. */
static int sum_rows(ledger_t *l, sums_t *s)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(l->db,
            "SELECT started_ms / 3600000, team, key_id, model, prompt_tokens,"
            " completion_tokens, cached_tokens, charged_nanos, COALESCE(price_input_nanos, -1),"
            " COALESCE(price_output_nanos, -1), COALESCE(price_cache_read_nanos, -1)"
            " FROM requests", -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (s->n + 1 > s->cap / 2 && sums_grow(s) != 0) break;
        int64_t hour = sqlite3_column_int64(st, 0);
        const char *team = col(st, 1), *key = col(st, 2), *model = col(st, 3);
        const nanos_t price[3] = { sqlite3_column_int64(st, 8), sqlite3_column_int64(st, 9),
                                   sqlite3_column_int64(st, 10) };
        struct hour_sum *h = sum_slot(s->v, s->cap, hour, team, key, model, price);
        if (!h->team) {
            h->hour = hour;
            memcpy(h->price, price, sizeof h->price);
            h->key = strdup(key);
            h->model = strdup(model);
            h->team = strdup(team);
            s->n++;
            if (!h->team || !h->key || !h->model) break;
        }
        h->requests++;
        h->prompt += sqlite3_column_int64(st, 4);
        h->completion += sqlite3_column_int64(st, 5);
        h->cached += sqlite3_column_int64(st, 6);
        h->nanos += sqlite3_column_int64(st, 7);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Creates usage_hourly with the sums of the rows already there, in one
 * transaction. 0 or -1. */
static int build_rollup(ledger_t *l)
{
    sums_t s = {0};
    sqlite3_stmt *ins = NULL;
    int ok = sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    int have = ok ? ledger_has_object(l->db, "usage_hourly") : -1;   /* built meanwhile? */
    if (have != 0) goto done;
    ok = sqlite3_exec(l->db, ROLLUP_TABLE, NULL, NULL, NULL) == SQLITE_OK &&
         sums_grow(&s) == 0 && sum_rows(l, &s) == 0 &&
         sqlite3_prepare_v2(l->db,
             "INSERT INTO usage_hourly(hour, team, key_id, model, requests, prompt_tokens,"
             " completion_tokens, cached_tokens, charged_nanos, price_input_nanos,"
             " price_output_nanos, price_cache_read_nanos)"
             " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)", -1, &ins, NULL) == SQLITE_OK;
    for (size_t i = 0; ok && i < s.cap; i++) {
        const struct hour_sum *h = &s.v[i];
        if (!h->team) continue;
        sqlite3_bind_int64(ins, 1, h->hour);
        sqlite3_bind_text(ins, 2, h->team, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, h->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 4, h->model, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 5, h->requests);
        sqlite3_bind_int64(ins, 6, h->prompt);
        sqlite3_bind_int64(ins, 7, h->completion);
        sqlite3_bind_int64(ins, 8, h->cached);
        sqlite3_bind_int64(ins, 9, h->nanos);
        for (int k = 0; k < 3; k++) sqlite3_bind_int64(ins, 10 + k, h->price[k]);
        ok = sqlite3_step(ins) == SQLITE_DONE;
        sqlite3_reset(ins);
    }
done:
    sqlite3_finalize(ins);
    sums_free(&s);
    if (have < 0) ok = 0;
    if (ok && sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* The indexes this version adds that db lacks (0..4). */
static int missing_indexes(sqlite3 *db)
{
    static const char *names[] = {"requests_team", "requests_key", "requests_model",
                                  "requests_state"};
    int n = 0;
    for (size_t i = 0; i < 4; i++) n += ledger_has_object(db, names[i]) != 1;
    return n;
}

/* The requests' price columns and, for an older rollup, the rollup rekeyed
 * by the price set: one transaction. 0 or -1. */
static int add_prices(ledger_t *l)
{
    int ok = sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    /* again under the lock: another process may have done it meanwhile */
    int cols = ok ? ledger_has_column(l->db, "requests", "price_input_nanos") : -1;
    int have = ok ? ledger_has_object(l->db, "usage_hourly") : -1;
    int rcols = have == 1 ? ledger_has_column(l->db, "usage_hourly", "price_input_nanos") : 1;
    ok = ok && cols >= 0 && have >= 0 && rcols >= 0;
    if (ok && !cols) ok = sqlite3_exec(l->db, PRICE_COLUMNS, NULL, NULL, NULL) == SQLITE_OK;
    if (ok && !rcols) ok = sqlite3_exec(l->db, ROLLUP_REKEY, NULL, NULL, NULL) == SQLITE_OK;
    if (ok && sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK) return 0;
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

int ledger_migrate(ledger_t *l, char *err, size_t errlen)
{
    int have = ledger_has_object(l->db, "usage_hourly");
    int idx = missing_indexes(l->db);
    int cols = ledger_has_column(l->db, "requests", "price_input_nanos");
    int rcols = have == 1 ? ledger_has_column(l->db, "usage_hourly", "price_input_nanos") : 0;
    if (have < 0 || cols < 0 || rcols < 0 ||
        sqlite3_exec(l->db, RATE_CHANGES, NULL, NULL, NULL) != SQLITE_OK)
        goto fail;
    if (have && idx == 0 && cols && rcols) {
        l->has_rollup = l->req_prices = l->rollup_prices = 1;
        return 0;
    }
    /* a larger page cache for the sorts (and the pass) while building */
    char pragma[64];
    snprintf(pragma, sizeof pragma, "PRAGMA cache_size = -%d", BUILD_CACHE_KIB);
    sqlite3_exec(l->db, pragma, NULL, NULL, NULL);
    int64_t t0 = base_mono_ms();
    if ((!cols || (have && !rcols)) && add_prices(l) != 0) {
        snprintf(err, errlen, "%s: cannot add the price columns: %s", l->path,
                 sqlite3_errmsg(l->db));
        goto restore;
    }
    l->req_prices = 1;
    if (have && !rcols && base_mono_ms() - t0 >= 1000)
        base_log("ledger %s: keyed the hourly usage rollup by price set in %.1f s (once, for "
                 "a ledger from before it)", l->path, (base_mono_ms() - t0) / 1000.0);
    t0 = base_mono_ms();
    if (!have && build_rollup(l) != 0) {
        snprintf(err, errlen, "%s: cannot build the hourly usage rollup: %s", l->path,
                 sqlite3_errmsg(l->db));
        goto restore;
    }
    int64_t t1 = base_mono_ms();
    if (!have && t1 - t0 >= 1000)
        base_log("ledger %s: built the hourly usage rollup in %.1f s (once, for a ledger "
                 "from before it)", l->path, (t1 - t0) / 1000.0);
    l->has_rollup = l->rollup_prices = 1;
    if (sqlite3_exec(l->db, LOG_INDEXES, NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot build the request log's indexes: %s", l->path,
                 sqlite3_errmsg(l->db));
        goto restore;
    }
    if (base_mono_ms() - t1 >= 1000)
        base_log("ledger %s: built the request log's %d index(es) in %.1f s (once, for a "
                 "ledger from before them)", l->path, idx, (base_mono_ms() - t1) / 1000.0);
    sqlite3_exec(l->db, "PRAGMA cache_size = -2000", NULL, NULL, NULL);   /* SQLite's default */
    return 0;
restore:
    sqlite3_exec(l->db, "PRAGMA cache_size = -2000", NULL, NULL, NULL);
    return -1;
fail:
    snprintf(err, errlen, "%s: cannot set up ledger: %s", l->path, sqlite3_errmsg(l->db));
    return -1;
}
