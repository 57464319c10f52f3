/* ledger_query: the ledger's reads for people (part of the ledger module;
 * shares struct ledger through src/ledger_int.h) — the report's groups and
 * the request log. Every read goes through ledger_reader_locked: once the
 * writer runs, that is the read connection (WAL: it reads the last commit
 * and never waits on the writer), one read at a time under l->rmu.
 *
 * A report's range splits at hour boundaries: the whole hours inside it are
 * read from usage_hourly (a few rows per hour whatever the traffic), the
 * partial hours at either end from the requests (through the start-time
 * index). Both halves group the same way, so the result is exactly the
 * GROUP BY over the requests that the rollup stands for. A row's price set
 * reads -1 for "not recorded" from both (the rollup's key column cannot be
 * NULL), and from a ledger no server of this version has opened, whose
 * tables lack the price columns. */
#include "ledger_int.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HOUR_MS 3600000LL

/* The group columns in the order they sort and print; ts is unix ms, pi,
 * po and pc the price set. */
static const struct { int flag; const char *expr; } GROUP_COLS[] = {
    {LEDGER_BY_TEAM, "team"},
    {LEDGER_BY_KEY, "key_id"},
    {LEDGER_BY_MODEL, "model"},
    {LEDGER_BY_DAY, "strftime('%Y-%m-%d', ts / 1000, 'unixepoch')"},
    {LEDGER_BY_HOUR, "strftime('%Y-%m-%dT%H:00:00Z', ts / 1000, 'unixepoch')"},
    {LEDGER_BY_PRICE, "pi"},
    {LEDGER_BY_PRICE, "po"},
    {LEDGER_BY_PRICE, "pc"},
};
#define N_GROUP_COLS (sizeof GROUP_COLS / sizeof GROUP_COLS[0])

/* Appends the filters of q as " AND col = ?N" (parameters 10, 11, 12). */
static void add_filters(char *buf, size_t cap, const char *team, const char *key,
                        const char *model)
{
    size_t n = strlen(buf);
    if (team) n += snprintf(buf + n, cap - n, " AND team = ?10");
    if (key) n += snprintf(buf + n, cap - n, " AND key_id = ?11");
    if (model) snprintf(buf + n, cap - n, " AND model = ?12");
}

static void bind_filters(sqlite3_stmt *st, const char *team, const char *key, const char *model)
{
    if (team) sqlite3_bind_text(st, 10, team, -1, SQLITE_STATIC);
    if (key) sqlite3_bind_text(st, 11, key, -1, SQLITE_STATIC);
    if (model) sqlite3_bind_text(st, 12, model, -1, SQLITE_STATIC);
}

/* The hours [*h0, *h1) read from the rollup; false when none are (no
 * rollup, or no whole hour in the range). Hours before 1970 are left to the
 * requests (the rollup's hour is started_ms / HOUR_MS, truncated). */
static int whole_hours(const ledger_t *l, int64_t since, int64_t until, int64_t *h0, int64_t *h1)
{
    if (!l->has_rollup || until <= 0) return 0;
    int64_t s = since < 0 ? 0 : since;
    *h0 = s / HOUR_MS + (s % HOUR_MS != 0);
    *h1 = until / HOUR_MS;
    return *h0 < *h1;
}

int ledger_report(ledger_t *l, const ledger_query_t *q, ledger_group_fn fn, void *ud,
                  char *err, size_t errlen)
{
    char sel[512] = "", grp[64] = "", where[256] = "";
    /* the price set as each table has it (see the top of the file) */
    const char *rp = l->rollup_prices
        ? "price_input_nanos AS pi, price_output_nanos AS po, price_cache_read_nanos AS pc"
        : "-1 AS pi, -1 AS po, -1 AS pc";
    const char *qp = l->req_prices
        ? "COALESCE(price_input_nanos, -1), COALESCE(price_output_nanos, -1),"
          " COALESCE(price_cache_read_nanos, -1)"
        : "-1, -1, -1";
    for (size_t i = 0; i < N_GROUP_COLS; i++) {
        int on = (q->by & GROUP_COLS[i].flag) != 0;
        size_t n = strlen(sel);
        snprintf(sel + n, sizeof sel - n, "%s, ", on ? GROUP_COLS[i].expr : "NULL");
        if (on) {
            n = strlen(grp);
            snprintf(grp + n, sizeof grp - n, "%s%d", grp[0] ? ", " : "", (int)i + 1);
        }
    }
    add_filters(where, sizeof where, q->team, q->key, q->model);
    int64_t h0 = 0, h1 = 0;
    int rollup = whole_hours(l, q->since_ms, q->until_ms, &h0, &h1);
    /* ?1..?2 the range; with the rollup, ?3..?4 its whole hours and ?5..?6
     * the same in ms: the requests are read in [?1, ?5) and [?6, ?2). */
    char src[3072];
    if (rollup)
        snprintf(src, sizeof src,
                 "SELECT hour * 3600000 AS ts, team, key_id, model, requests AS n,"
                 " prompt_tokens AS p, completion_tokens AS c, cached_tokens AS k,"
                 " charged_nanos AS x, %s FROM usage_hourly WHERE hour >= ?3 AND hour < ?4%s"
                 " UNION ALL SELECT started_ms, team, key_id, model, 1, prompt_tokens,"
                 " completion_tokens, cached_tokens, charged_nanos, %s FROM requests"
                 " WHERE started_ms >= ?1 AND started_ms < ?5%s"
                 " UNION ALL SELECT started_ms, team, key_id, model, 1, prompt_tokens,"
                 " completion_tokens, cached_tokens, charged_nanos, %s FROM requests"
                 " WHERE started_ms >= ?6 AND started_ms < ?2%s",
                 rp, where, qp, where, qp, where);
    else
        snprintf(src, sizeof src,
                 "SELECT started_ms AS ts, team, key_id, model, 1 AS n, prompt_tokens AS p,"
                 " completion_tokens AS c, cached_tokens AS k, charged_nanos AS x,"
                 " %s FROM requests WHERE started_ms >= ?1 AND started_ms < ?2%s",
                 l->req_prices ? "COALESCE(price_input_nanos, -1) AS pi,"
                                 " COALESCE(price_output_nanos, -1) AS po,"
                                 " COALESCE(price_cache_read_nanos, -1) AS pc"
                               : "-1 AS pi, -1 AS po, -1 AS pc", where);
    char sql[5120];
    snprintf(sql, sizeof sql,
             "SELECT %s COALESCE(SUM(n),0), COALESCE(SUM(p),0), COALESCE(SUM(c),0),"
             " COALESCE(SUM(k),0), COALESCE(SUM(x),0) FROM (%s)%s%s%s%s",
             sel, src, grp[0] ? " GROUP BY " : "", grp, grp[0] ? " ORDER BY " : "", grp);
    pthread_mutex_lock(&l->rmu);
    int ok = 0;
    sqlite3_stmt *st = NULL;
    sqlite3 *db = ledger_reader_locked(l);
    if (!db) {
        snprintf(err, errlen, "ledger query failed: cannot open a read connection");
        goto out;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(st, 1, q->since_ms);
    sqlite3_bind_int64(st, 2, q->until_ms);
    if (rollup) {
        sqlite3_bind_int64(st, 3, h0);
        sqlite3_bind_int64(st, 4, h1);
        sqlite3_bind_int64(st, 5, h0 * HOUR_MS);
        sqlite3_bind_int64(st, 6, h1 * HOUR_MS);
    }
    bind_filters(st, q->team, q->key, q->model);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_group_t g;
        g.team = (const char *)sqlite3_column_text(st, 0);
        g.key = (const char *)sqlite3_column_text(st, 1);
        g.model = (const char *)sqlite3_column_text(st, 2);
        g.day = (const char *)sqlite3_column_text(st, 3);
        g.hour = (const char *)sqlite3_column_text(st, 4);
        g.price_input = sqlite3_column_int64(st, 5);      /* NULL (not grouped): 0 */
        g.price_output = sqlite3_column_int64(st, 6);
        g.price_cache_read = sqlite3_column_int64(st, 7);
        g.requests = sqlite3_column_int64(st, 8);
        g.prompt = sqlite3_column_int64(st, 9);
        g.completion = sqlite3_column_int64(st, 10);
        g.cached = sqlite3_column_int64(st, 11);
        g.credits = sqlite3_column_int64(st, 12);
        if (!grp[0] && g.requests == 0) continue;
        if (fn(ud, &g) != 0) break;
    }
    ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    if (!ok) snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return ok ? 0 : -1;
}

/* The request log reads only the server's ledger, which has the price
 * columns (ledger_migrate). */
#define ROW_COLS "id, started_ms, ended_ms, team, key_id, model, stream, status, prompt_tokens," \
                 " completion_tokens, cached_tokens, reserved_nanos, charged_nanos, state," \
                 " upstream_id, latency_ms, price_input_nanos, price_output_nanos," \
                 " price_cache_read_nanos"

static const char *text_or_empty(sqlite3_stmt *st, int i)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    return s ? s : "";
}

static void row_of(sqlite3_stmt *st, ledger_row_t *r)
{
    r->id = text_or_empty(st, 0);
    r->started_ms = sqlite3_column_int64(st, 1);
    r->ended_ms = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 2);
    r->team = text_or_empty(st, 3);
    r->key_id = text_or_empty(st, 4);
    r->model = text_or_empty(st, 5);
    r->stream = sqlite3_column_int(st, 6) != 0;
    r->status = sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 7);
    r->prompt = sqlite3_column_int64(st, 8);
    r->completion = sqlite3_column_int64(st, 9);
    r->cached = sqlite3_column_int64(st, 10);
    r->reserved = sqlite3_column_int64(st, 11);
    r->charged = sqlite3_column_int64(st, 12);
    r->state = text_or_empty(st, 13);
    r->upstream_id = (const char *)sqlite3_column_text(st, 14);
    r->latency_ms = sqlite3_column_type(st, 15) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 15);
    nanos_t *price[3] = {&r->price_input, &r->price_output, &r->price_cache_read};
    for (int k = 0; k < 3; k++)
        *price[k] = sqlite3_column_type(st, 16 + k) == SQLITE_NULL ? -1
                                                                   : sqlite3_column_int64(st, 16 + k);
}

/* Prepares sql on the read connection, binds with bind(st, arg), and calls
 * fn per row. Returns the rows seen, or -1 (reason in err). */
static int64_t run_rows(ledger_t *l, const char *sql, void (*bind)(sqlite3_stmt *, const void *),
                        const void *arg, ledger_row_fn fn, void *ud, char *err, size_t errlen)
{
    pthread_mutex_lock(&l->rmu);
    int64_t n = -1;
    sqlite3_stmt *st = NULL;
    sqlite3 *db = ledger_reader_locked(l);
    if (!db) {
        snprintf(err, errlen, "ledger query failed: cannot open a read connection");
        goto out;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    bind(st, arg);
    int rc;
    int64_t seen = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_row_t r;
        row_of(st, &r);
        seen++;
        if (fn(ud, &r) != 0) { rc = SQLITE_DONE; break; }
    }
    if (rc == SQLITE_DONE) n = seen;
    else snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&l->rmu);
    return n;
}

/* The page being read: the query, where it stands, and the caller's fn. */
typedef struct log_scan {
    const ledger_log_query_t *q;
    int scan_max;
    ledger_row_fn fn;
    void *ud;
    ledger_log_next_t *next;
    int scanned, returned;
} log_scan_t;

static void bind_log(sqlite3_stmt *st, const void *arg)
{
    const log_scan_t *ls = arg;
    const ledger_log_query_t *q = ls->q;
    /* one upper bound only: given two, the planner may range on the wrong one */
    int64_t until = q->until_ms;
    if (q->has_after && q->after_ms < until) until = q->after_ms + 1;
    sqlite3_bind_int64(st, 1, q->since_ms);
    sqlite3_bind_int64(st, 2, until);
    sqlite3_bind_int(st, 3, ls->scan_max + 1);
    if (q->has_after) {
        sqlite3_bind_int64(st, 4, q->after_ms);
        sqlite3_bind_text(st, 5, q->after_id, -1, SQLITE_STATIC);
    }
    bind_filters(st, q->team, q->key, q->model);
}

/* Each row read: counted, returned when it matches every filter (column
 * 19), and where the page stops decided. */
static int log_row(void *ud, const ledger_row_t *r, int match)
{
    log_scan_t *ls = ud;
    ledger_log_next_t *nx = ls->next;
    if (ls->scanned == ls->scan_max || (match && ls->returned == ls->q->limit)) {
        nx->more = 1;                 /* a row past the page: another page follows */
        return 1;
    }
    ls->scanned++;
    nx->after_ms = r->started_ms;
    snprintf(nx->after_id, sizeof nx->after_id, "%s", r->id);
    if (!match) return 0;
    ls->returned++;
    return ls->fn(ls->ud, r) != 0;
}

int ledger_log(ledger_t *l, const ledger_log_query_t *q, ledger_row_fn fn, void *ud,
               ledger_log_next_t *next, char *err, size_t errlen)
{
    int st = q->state ? ledger_state_parse(q->state) : -1;
    if (q->state && st < 0) {
        snprintf(err, errlen, "unknown state");
        return -1;
    }
    /* The index the page reads: its most selective filter's — a state other
     * than settled (few rows, a partial index: the query must say
     * "state <> 'settled'" for SQLite to use it), a key, a model, a team —
     * or the start time's. The other filters are checked per row (column
     * 19), each row read counting towards scan_max. The state goes in as a
     * literal: one of the five names, never the caller's text. */
    char idx[160] = "", chk[256] = "";
    int rare_state = st >= 0 && st != LEDGER_SETTLED;
    const char *state_name = st >= 0 ? ledger_state_name((ledger_state_t)st) : NULL;
    int used_key = 0, used_model = 0, used_team = 0;
    if (rare_state)
        snprintf(idx, sizeof idx, " AND state = '%s' AND state <> 'settled'", state_name);
    else if (q->key) { snprintf(idx, sizeof idx, " AND key_id = ?11"); used_key = 1; }
    else if (q->model) { snprintf(idx, sizeof idx, " AND model = ?12"); used_model = 1; }
    else if (q->team) { snprintf(idx, sizeof idx, " AND team = ?10"); used_team = 1; }
    size_t n = 0;
    if (st >= 0 && !rare_state)
        n += snprintf(chk + n, sizeof chk - n, " AND state = '%s'", state_name);
    if (q->team && !used_team) n += snprintf(chk + n, sizeof chk - n, " AND team = ?10");
    if (q->key && !used_key) n += snprintf(chk + n, sizeof chk - n, " AND key_id = ?11");
    if (q->model && !used_model) snprintf(chk + n, sizeof chk - n, " AND model = ?12");
    /* Strictly after the cursor in (started_ms DESC, id DESC): the range's
     * upper end becomes the cursor's time + 1 (bind_log), so that the index
     * range starts there, and ties on that time are broken by id. */
    char sql[1536];
    snprintf(sql, sizeof sql,
             "SELECT " ROW_COLS ", 1%s FROM requests WHERE started_ms >= ?1 AND started_ms < ?2%s%s"
             " ORDER BY started_ms DESC, id DESC LIMIT ?3", chk, idx,
             q->has_after ? " AND (started_ms < ?4 OR id < ?5)" : "");
    /* next may be where q's cursor lives (the last page's): copy it first */
    ledger_log_query_t qc = *q;
    char after_id[LEDGER_ID_MAX];
    if (q->has_after) {
        snprintf(after_id, sizeof after_id, "%s", q->after_id ? q->after_id : "");
        qc.after_id = after_id;
    }
    q = &qc;
    memset(next, 0, sizeof *next);
    log_scan_t ls = { .q = q, .scan_max = q->scan_max > 0 ? q->scan_max : LEDGER_LOG_SCAN_MAX,
                      .fn = fn, .ud = ud, .next = next };
    pthread_mutex_lock(&l->rmu);
    int ok = 0;
    sqlite3_stmt *stmt = NULL;
    sqlite3 *db = ledger_reader_locked(l);
    if (!db) {
        snprintf(err, errlen, "ledger query failed: cannot open a read connection");
        goto out;
    }
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    bind_log(stmt, &ls);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        ledger_row_t r;
        row_of(stmt, &r);
        if (log_row(&ls, &r, sqlite3_column_int(stmt, 19)) != 0) break;
    }
    ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    if (!ok) snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(db));
out:
    sqlite3_finalize(stmt);
    pthread_mutex_unlock(&l->rmu);
    return ok ? 0 : -1;
}

static void bind_id(sqlite3_stmt *st, const void *arg)
{
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
}

int ledger_lookup(ledger_t *l, const char *id, ledger_row_fn fn, void *ud,
                  char *err, size_t errlen)
{
    int64_t n = run_rows(l, "SELECT " ROW_COLS " FROM requests WHERE id = ?1", bind_id, id,
                         fn, ud, err, errlen);
    return n < 0 ? -1 : n > 0;
}
