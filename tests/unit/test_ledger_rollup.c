/* Unit tests for the ledger's hourly usage rollup and the report over it:
 * after a mixed run (settled, estimated, failed and interrupted rows; a
 * completion in the same batch as its begin and in a later one; journaled
 * begins replayed at recovery; a late completion of a recovered request; a
 * batch with more hours than one flush holds) usage_hourly equals a GROUP BY
 * over the requests, exactly; a ledger from before the rollup gets it built
 * at open; and ledger_report equals a reference GROUP BY over the requests
 * for ranges on and off hour boundaries, every grouping (hour included) and
 * the filters, also through a read-only open without the rollup. */
#include "ledger.h"
#include "t.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define C NANOS_PER_CREDIT
#define HOUR_MS 3600000LL
#define DAY_MS 86400000LL
#define D1 1795392000000LL          /* 2026-11-23T00:00:00Z */

static char tmpdir[64];

static void remove_ledger(const char *path)
{
    char p[256];
    const char *sfx[] = {"", "-wal", "-shm", "-begins.0", "-begins.1"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
}

static int wait_idle(ledger_t *l)
{
    for (int i = 0; i < 10000 && ledger_backlog(l) > 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return ledger_backlog(l) == 0;
}

static ledger_rec_t rec(const char *id, const char *team, const char *key, const char *model,
                        int64_t started_ms, nanos_t reserved)
{
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team, sizeof r.team, "%s", team);
    snprintf(r.key_id, sizeof r.key_id, "%s", key);
    snprintf(r.model, sizeof r.model, "%s", model);
    r.started_ms = started_ms;
    r.reserved = reserved;
    r.state = LEDGER_INFLIGHT;
    /* three price sets by the id's last digit, one of them "not recorded"
     * (as rows from before prices were): hours with several of them */
    int set = id[strlen(id) - 1] % 3;
    r.price_input = set == 0 ? 3 * C : set == 1 ? 35 * C / 10 : -1;
    r.price_output = set == 2 ? -1 : 15 * C;
    r.price_cache_read = set == 0 ? 3 * C / 10 : set == 1 ? 35 * C / 100 : -1;
    return r;
}

static ledger_rec_t done(ledger_rec_t r, ledger_state_t st, nanos_t charged, int64_t p,
                         int64_t c, int64_t k)
{
    r.state = st;
    r.charged = charged;
    r.prompt = p;
    r.completion = c;
    r.cached = k;
    r.status = st == LEDGER_FAILED ? 502 : 200;
    r.ended_ms = r.started_ms + 50;
    r.latency_ms = 50;
    snprintf(r.upstream_id, sizeof r.upstream_id, "up-%s", r.id);
    return r;
}

static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -999;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "  sql_int(%s): %s\n", sql, db ? sqlite3_errmsg(db) : "?");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* The rows of usage_hourly that are not what a GROUP BY over the requests
 * gives, in either direction: 0 when the rollup is exact. */
#define REQ_GROUPS \
    "  SELECT started_ms / 3600000, team, key_id, model, COALESCE(price_input_nanos, -1)," \
    "  COALESCE(price_output_nanos, -1), COALESCE(price_cache_read_nanos, -1), COUNT(*)," \
    "  SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(charged_nanos)" \
    "  FROM requests GROUP BY 1, 2, 3, 4, 5, 6, 7"
#define ROLLUP_ROWS \
    "  SELECT hour, team, key_id, model, price_input_nanos, price_output_nanos," \
    "  price_cache_read_nanos, requests, prompt_tokens, completion_tokens, cached_tokens," \
    "  charged_nanos FROM usage_hourly"
static const char *ROLLUP_DIFF =
    "SELECT (SELECT COUNT(*) FROM (" ROLLUP_ROWS " EXCEPT " REQ_GROUPS "))"
    " + (SELECT COUNT(*) FROM (" REQ_GROUPS " EXCEPT " ROLLUP_ROWS "))";

static char path_main[128];

/* The mixed run; leaves the ledger at path_main closed. */
static void test_rollup_after_mixed_run(void)
{
    char err[256];
    remove_ledger(path_main);
    ledger_t *l = ledger_open(path_main, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) { fprintf(stderr, "  %s\n", err); return; }
    static const char *teams[] = {"a", "b"}, *keys[] = {"k1", "k2", "k3"};
    static const char *models[] = {"m1", "m,2"};
    char id[32];
    /* 1. begins with their completions in the same first batch (one row
     * each), over 700 distinct hours: more than one flush of hourly sums */
    for (int i = 0; i < 700; i++) {
        snprintf(id, sizeof id, "a%04d", i);
        ledger_rec_t b = rec(id, teams[i % 2], keys[i % 3], models[i % 2],
                             D1 + (int64_t)i * HOUR_MS + (i * 7919) % HOUR_MS, 5 * C);
        T_EQ_INT(ledger_submit(l, &b, NULL, NULL), 0);
        ledger_state_t st = i % 5 == 0 ? LEDGER_ESTIMATED : i % 7 == 0 ? LEDGER_FAILED
                                                                       : LEDGER_SETTLED;
        ledger_rec_t e = done(b, st, st == LEDGER_FAILED ? 0 : C + i, 100 + i, 10 + i, i % 4);
        T_EQ_INT(ledger_submit(l, &e, NULL, NULL), 0);
    }
    T_EQ_INT(ledger_writer_start(l), 0);
    T_CHECK(wait_idle(l));
    /* 2. begins committed first, completions in a later batch (updates) */
    ledger_rec_t later[60];
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "b%04d", i);
        later[i] = rec(id, teams[i % 2], keys[i % 3], models[(i / 2) % 2],
                       D1 + (int64_t)(i % 5) * HOUR_MS + i * 1000, 3 * C);
        T_EQ_INT(ledger_submit(l, &later[i], NULL, NULL), 0);
    }
    T_CHECK(wait_idle(l));
    for (int i = 0; i < 60; i++) {
        ledger_rec_t e = done(later[i], i % 3 ? LEDGER_SETTLED : LEDGER_ESTIMATED, 2 * C + i,
                              7, 3, 1);
        if (i == 7) snprintf(e.upstream_id, sizeof e.upstream_id, "up-a0001");  /* a repeat */
        T_EQ_INT(ledger_submit(l, &e, NULL, NULL), 0);
    }
    /* 3. begins left in flight at the "crash" (rows, no completion) */
    ledger_rec_t left[10];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "c%04d", i);
        left[i] = rec(id, "a", keys[i % 3], "m1", D1 + 2 * HOUR_MS + i, 4 * C + i);
        T_EQ_INT(ledger_submit(l, &left[i], NULL, NULL), 0);
    }
    T_CHECK(wait_idle(l));
    ledger_close(l, 1000);
    /* 4. begins journaled by a process that died before its writer ran */
    ledger_t *dead = ledger_open(path_main, err, sizeof err);
    T_CHECK(dead != NULL);
    if (!dead) return;
    for (int i = 0; i < 5; i++) {
        snprintf(id, sizeof id, "d%04d", i);
        ledger_rec_t b = rec(id, "b", "k9", "m1", D1 + 3 * HOUR_MS + i, 6 * C);
        T_EQ_INT(ledger_begin(dead, &b), 0);
    }
    /* 5. the restart: recovery, a late completion of a recovered request
     * (counted nowhere), and more traffic */
    l = ledger_open(path_main, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) { ledger_close(dead, 0); return; }
    T_EQ_INT(ledger_recover(l, D1 + 30 * DAY_MS), 15);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t late = done(left[0], LEDGER_SETTLED, 1, 1, 1, 0);
    T_EQ_INT(ledger_submit(l, &late, NULL, NULL), 0);
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "e%04d", i);
        ledger_rec_t b = rec(id, teams[i % 2], keys[i % 3], models[i % 2],
                             D1 + 5 * HOUR_MS + i * 60000, C);
        T_EQ_INT(ledger_submit(l, &b, NULL, NULL), 0);
        if (i % 2) T_CHECK(wait_idle(l));        /* half of them in later batches */
        ledger_rec_t e = done(b, LEDGER_SETTLED, C / 2 + i, 11, 2, 0);
        T_EQ_INT(ledger_submit(l, &e, NULL, NULL), 0);
    }
    T_CHECK(wait_idle(l));
    ledger_close(l, 1000);
    ledger_close(dead, 0);

    T_EQ_INT(sql_int(path_main, "SELECT COUNT(*) FROM requests"), 700 + 60 + 10 + 5 + 40);
    T_EQ_INT(sql_int(path_main, "SELECT COUNT(*) FROM requests WHERE state = 'interrupted'"), 15);
    T_EQ_INT(sql_int(path_main, "SELECT COUNT(DISTINCT state) FROM requests"), 4);
    T_CHECK(sql_int(path_main, "SELECT COUNT(*) FROM usage_hourly") > 700);
    T_EQ_INT(sql_int(path_main, ROLLUP_DIFF), 0);
    T_EQ_INT(sql_int(path_main, "SELECT SUM(charged_nanos) FROM usage_hourly"),
             sql_int(path_main, "SELECT SUM(charged_nanos) FROM requests"));
}

/* A ledger from before the rollup (its table dropped) gets it at open. */
static void test_rollup_built_for_old_ledger(void)
{
    char err[256], path[160], cmd[400];
    snprintf(path, sizeof path, "%s/old.db", tmpdir);
    remove_ledger(path);
    snprintf(cmd, sizeof cmd, "cp %s %s", path_main, path);
    T_EQ_INT(system(cmd), 0);
    sqlite3 *db = NULL;
    T_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
    T_EQ_INT(sqlite3_exec(db, "DROP TABLE usage_hourly; DROP INDEX requests_team;",
                          NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ledger_t *l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (l) ledger_close(l, 1000);
    T_CHECK(sql_int(path, "SELECT COUNT(*) FROM usage_hourly") > 700);
    T_EQ_INT(sql_int(path, ROLLUP_DIFF), 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'requests_team'"), 1);
    remove_ledger(path);
}

/* A group as text: "team|key|model|day|hour|requests|p|c|k|nanos". */
typedef struct lines { char **v; size_t n; } lines_t;

static void lines_add(lines_t *ls, const char *s)
{
    ls->v = realloc(ls->v, (ls->n + 1) * sizeof *ls->v);
    ls->v[ls->n++] = strdup(s);
}

static void lines_free(lines_t *ls)
{
    for (size_t i = 0; i < ls->n; i++) free(ls->v[i]);
    free(ls->v);
    ls->v = NULL;
    ls->n = 0;
}

static int collect(void *ud, const ledger_group_t *g)
{
    char s[1024];
    snprintf(s, sizeof s, "%s|%s|%s|%s|%s|%lld/%lld/%lld|%lld|%lld|%lld|%lld|%lld",
             g->team ? g->team : "-", g->key ? g->key : "-", g->model ? g->model : "-",
             g->day ? g->day : "-", g->hour ? g->hour : "-", (long long)g->price_input,
             (long long)g->price_output, (long long)g->price_cache_read,
             (long long)g->requests, (long long)g->prompt,
             (long long)g->completion, (long long)g->cached, (long long)g->credits);
    lines_add(ud, s);
    return 0;
}

/* The reference: a plain GROUP BY over the requests, as text lines. */
static void reference(const char *path, const ledger_query_t *q, lines_t *out)
{
    const char *exprs[8] = {"team", "key_id", "model",
                            "strftime('%Y-%m-%d', started_ms / 1000, 'unixepoch')",
                            "strftime('%Y-%m-%dT%H:00:00Z', started_ms / 1000, 'unixepoch')",
                            "COALESCE(price_input_nanos, -1)", "COALESCE(price_output_nanos, -1)",
                            "COALESCE(price_cache_read_nanos, -1)"};
    int flags[8] = {LEDGER_BY_TEAM, LEDGER_BY_KEY, LEDGER_BY_MODEL, LEDGER_BY_DAY, LEDGER_BY_HOUR,
                    LEDGER_BY_PRICE, LEDGER_BY_PRICE, LEDGER_BY_PRICE};
    char sel[800] = "", grp[64] = "", sql[2048];
    for (int i = 0; i < 8; i++) {
        size_t n = strlen(sel);
        snprintf(sel + n, sizeof sel - n, "%s, ", (q->by & flags[i]) ? exprs[i]
                                                  : i < 5 ? "'-'" : "0");
        if (q->by & flags[i]) {
            n = strlen(grp);
            snprintf(grp + n, sizeof grp - n, "%s%d", grp[0] ? ", " : "", i + 1);
        }
    }
    snprintf(sql, sizeof sql, "SELECT %s COUNT(*), COALESCE(SUM(prompt_tokens), 0),"
             " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cached_tokens), 0),"
             " COALESCE(SUM(charged_nanos), 0) FROM requests WHERE started_ms >= ?1 AND"
             " started_ms < ?2 AND (?3 IS NULL OR team = ?3) AND (?4 IS NULL OR key_id = ?4)"
             " AND (?5 IS NULL OR model = ?5)%s%s%s%s", sel,
             grp[0] ? " GROUP BY " : "", grp, grp[0] ? " ORDER BY " : "", grp);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "  reference: %s\n", sqlite3_errmsg(db));
        sqlite3_close(db);
        return;
    }
    sqlite3_bind_int64(st, 1, q->since_ms);
    sqlite3_bind_int64(st, 2, q->until_ms);
    if (q->team) sqlite3_bind_text(st, 3, q->team, -1, SQLITE_STATIC);
    if (q->key) sqlite3_bind_text(st, 4, q->key, -1, SQLITE_STATIC);
    if (q->model) sqlite3_bind_text(st, 5, q->model, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (!grp[0] && sqlite3_column_int64(st, 8) == 0) continue;
        char s[1024];
        snprintf(s, sizeof s, "%s|%s|%s|%s|%s|%lld/%lld/%lld|%lld|%lld|%lld|%lld|%lld",
                 sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                 sqlite3_column_text(st, 2), sqlite3_column_text(st, 3),
                 sqlite3_column_text(st, 4), (long long)sqlite3_column_int64(st, 5),
                 (long long)sqlite3_column_int64(st, 6), (long long)sqlite3_column_int64(st, 7),
                 (long long)sqlite3_column_int64(st, 8), (long long)sqlite3_column_int64(st, 9),
                 (long long)sqlite3_column_int64(st, 10), (long long)sqlite3_column_int64(st, 11),
                 (long long)sqlite3_column_int64(st, 12));
        lines_add(out, s);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static int same_as_reference(ledger_t *l, const char *path, const ledger_query_t *q)
{
    lines_t got = {0}, want = {0};
    char err[256] = "";
    int rc = ledger_report(l, q, collect, &got, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  ledger_report: %s\n", err);
    reference(path, q, &want);
    int same = rc == 0 && got.n == want.n;
    for (size_t i = 0; same && i < got.n; i++) same = strcmp(got.v[i], want.v[i]) == 0;
    if (!same) {
        fprintf(stderr, "  by=%d [%lld, %lld) team=%s key=%s model=%s: %zu groups, want %zu\n",
                q->by, (long long)q->since_ms, (long long)q->until_ms, q->team ? q->team : "*",
                q->key ? q->key : "*", q->model ? q->model : "*", got.n, want.n);
        for (size_t i = 0; i < got.n || i < want.n; i++)
            if (i >= got.n || i >= want.n || strcmp(got.v[i], want.v[i]) != 0) {
                fprintf(stderr, "    got  %s\n    want %s\n", i < got.n ? got.v[i] : "(none)",
                        i < want.n ? want.v[i] : "(none)");
                break;
            }
    }
    int nonempty = want.n > 0;
    lines_free(&got);
    lines_free(&want);
    return same ? 1 + nonempty : 0;
}

/* Every grouping over ranges on and off hour boundaries, with filters, from
 * the rollup (ledger_open) and without it (read-only, rollup dropped). */
static void check_reports(ledger_t *l, const char *path)
{
    const int64_t ranges[][2] = {
        {0, INT64_MAX},                                   /* all time */
        {D1, D1 + 30 * DAY_MS},                           /* whole days */
        {D1 + 2 * HOUR_MS, D1 + 9 * HOUR_MS},             /* whole hours */
        {D1 + 2 * HOUR_MS + 1, D1 + 9 * HOUR_MS - 1},     /* a ms inside each end */
        {D1 + 90 * 60000, D1 + 5 * HOUR_MS + 17 * 60000}, /* partial first and last hour */
        {D1 + 2 * HOUR_MS + 10, D1 + 2 * HOUR_MS + 5000}, /* inside one hour */
        {D1 + 3 * HOUR_MS + 2, D1 + 3 * HOUR_MS + 3},     /* one ms */
        {INT64_MIN, D1 + 40 * HOUR_MS + 1},               /* from the open start */
        {D1 + 600 * HOUR_MS + 12345, INT64_MAX},          /* to the open end */
        {D1 - DAY_MS, D1},                                /* empty */
    };
    const int bys[] = {0, LEDGER_BY_TEAM, LEDGER_BY_TEAM | LEDGER_BY_MODEL,
                       LEDGER_BY_KEY | LEDGER_BY_DAY, LEDGER_BY_HOUR,
                       LEDGER_BY_TEAM | LEDGER_BY_KEY | LEDGER_BY_MODEL | LEDGER_BY_DAY |
                       LEDGER_BY_HOUR, LEDGER_BY_MODEL | LEDGER_BY_HOUR,
                       LEDGER_BY_MODEL | LEDGER_BY_PRICE,
                       LEDGER_BY_TEAM | LEDGER_BY_KEY | LEDGER_BY_MODEL | LEDGER_BY_DAY |
                       LEDGER_BY_HOUR | LEDGER_BY_PRICE};
    const char *filters[][3] = {{NULL, NULL, NULL}, {"a", NULL, NULL}, {NULL, "k2", NULL},
                                {NULL, NULL, "m,2"}, {"b", "k9", "m1"}, {"zz", NULL, NULL}};
    int checked = 0, nonempty = 0;
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++)
        for (size_t b = 0; b < sizeof bys / sizeof bys[0]; b++)
            for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
                ledger_query_t q = { ranges[r][0], ranges[r][1], bys[b], filters[f][0],
                                     filters[f][1], filters[f][2] };
                int ok = same_as_reference(l, path, &q);
                T_CHECK(ok);
                checked++;
                nonempty += ok == 2;
            }
    T_EQ_INT(checked, 10 * 9 * 6);
    T_CHECK(nonempty > checked / 2);     /* most of them have rows to compare */
}

static void test_report_equals_group_by(void)
{
    char err[256];
    ledger_t *l = ledger_open(path_main, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    T_EQ_INT(ledger_writer_start(l), 0);           /* reads through the read connection */
    check_reports(l, path_main);
    ledger_close(l, 1000);

    /* without the rollup (read-only open of a ledger that lacks it) */
    char path[160], cmd[400];
    snprintf(path, sizeof path, "%s/norollup.db", tmpdir);
    remove_ledger(path);
    snprintf(cmd, sizeof cmd, "cp %s %s", path_main, path);
    T_EQ_INT(system(cmd), 0);
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    T_EQ_INT(sqlite3_exec(db, "DROP TABLE usage_hourly", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    l = ledger_open_ro(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) { fprintf(stderr, "  %s\n", err); return; }
    check_reports(l, path);
    ledger_close(l, 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'usage_hourly'"), 0);
    remove_ledger(path);
}

/* The rollup is what the report reads: change it behind the ledger's back
 * and an aligned report changes; a report of partial hours does not. */
static void test_report_reads_rollup(void)
{
    char err[256], path[160], cmd[400];
    snprintf(path, sizeof path, "%s/tampered.db", tmpdir);
    remove_ledger(path);
    snprintf(cmd, sizeof cmd, "cp %s %s", path_main, path);
    T_EQ_INT(system(cmd), 0);
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    char upd[256];
    snprintf(upd, sizeof upd, "UPDATE usage_hourly SET charged_nanos = charged_nanos + 1 "
             "WHERE hour = %lld", (long long)(D1 / HOUR_MS + 4));
    T_EQ_INT(sqlite3_exec(db, upd, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ledger_t *l = ledger_open_ro(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    ledger_query_t whole = {D1 + 4 * HOUR_MS, D1 + 5 * HOUR_MS, 0, NULL, NULL, NULL};
    ledger_query_t part = {D1 + 4 * HOUR_MS + 1, D1 + 5 * HOUR_MS, 0, NULL, NULL, NULL};
    T_EQ_INT(same_as_reference(l, path, &whole), 0);
    T_EQ_INT(same_as_reference(l, path, &part), 2);
    ledger_close(l, 0);
    remove_ledger(path);
}

static int price_groups(void *ud, const ledger_group_t *g)
{
    int64_t *v = ud;                  /* groups, groups with unknown prices, credits */
    v[0]++;
    v[1] += g->price_input == -1 && g->price_output == -1 && g->price_cache_read == -1;
    v[2] += g->credits;
    return 0;
}

/* A ledger from before prices were recorded (no price columns, the rollup
 * keyed by hour, team, key and model only): read-only, its rows read as
 * "not recorded"; at its first open it gains the columns (NULL for its
 * rows), a rollup rekeyed with the same figures and the rate_changes
 * table; rows written afterwards split their hour by price set. */
static void test_prices_added_to_old_ledger(void)
{
    char err[256], path[160], cmd[400];
    snprintf(path, sizeof path, "%s/noprices.db", tmpdir);
    remove_ledger(path);
    snprintf(cmd, sizeof cmd, "cp %s %s", path_main, path);
    T_EQ_INT(system(cmd), 0);
    sqlite3 *db = NULL;
    T_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
    T_EQ_INT(sqlite3_exec(db,
        "ALTER TABLE requests DROP COLUMN price_input_nanos;"
        "ALTER TABLE requests DROP COLUMN price_output_nanos;"
        "ALTER TABLE requests DROP COLUMN price_cache_read_nanos;"
        "DROP TABLE rate_changes; DROP TABLE usage_hourly;"
        "CREATE TABLE usage_hourly(hour INTEGER NOT NULL, team TEXT NOT NULL,"
        " key_id TEXT NOT NULL, model TEXT NOT NULL, requests INTEGER NOT NULL,"
        " prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,"
        " cached_tokens INTEGER NOT NULL, charged_nanos INTEGER NOT NULL,"
        " PRIMARY KEY(hour, team, key_id, model)) WITHOUT ROWID;"
        "INSERT INTO usage_hourly SELECT started_ms / 3600000, team, key_id, model, COUNT(*),"
        " SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(charged_nanos)"
        " FROM requests GROUP BY 1, 2, 3, 4;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    int64_t total = sql_int(path, "SELECT SUM(charged_nanos) FROM requests");
    int64_t hours = sql_int(path, "SELECT COUNT(*) FROM usage_hourly");

    /* read-only, as it is: one group per model, prices unknown */
    ledger_t *l = ledger_open_ro(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    int64_t v[3] = {0, 0, 0};
    ledger_query_t q = {0, INT64_MAX, LEDGER_BY_MODEL | LEDGER_BY_PRICE, NULL, NULL, NULL};
    T_EQ_INT(ledger_report(l, &q, price_groups, v, err, sizeof err), 0);
    T_EQ_INT(v[0], 2);
    T_EQ_INT(v[1], 2);
    T_EQ_INT(v[2], total);
    memset(v, 0, sizeof v);
    q.since_ms = D1 + 90 * 60000;                  /* partial hours from the requests too */
    T_EQ_INT(ledger_report(l, &q, price_groups, v, err, sizeof err), 0);
    T_EQ_INT(v[0], v[1]);
    ledger_close(l, 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM pragma_table_info('requests')"
                           " WHERE name LIKE 'price_%'"), 0);      /* untouched */

    /* the first open migrates */
    l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) { fprintf(stderr, "  %s\n", err); return; }
    ledger_close(l, 1000);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM pragma_table_info('requests')"
                           " WHERE name LIKE 'price_%'"), 3);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE price_input_nanos IS NOT NULL"
                           " OR price_output_nanos IS NOT NULL"
                           " OR price_cache_read_nanos IS NOT NULL"), 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM usage_hourly"), hours);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM usage_hourly WHERE price_input_nanos <> -1"), 0);
    T_EQ_INT(sql_int(path, "SELECT SUM(charged_nanos) FROM usage_hourly"), total);
    T_EQ_INT(sql_int(path, ROLLUP_DIFF), 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'rate_changes'"), 1);

    /* a new row in an old row's hour, with prices: a rollup row of its own */
    l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    T_EQ_INT(ledger_recover(l, D1 + 40 * DAY_MS), 0);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t b = rec("f0000", "a", "k1", "m1", D1 + 30 * 60000, C);
    T_EQ_INT(ledger_submit(l, &b, NULL, NULL), 0);
    ledger_rec_t e = done(b, LEDGER_SETTLED, 12345, 10, 5, 0);
    T_EQ_INT(ledger_submit(l, &e, NULL, NULL), 0);
    T_CHECK(wait_idle(l));
    ledger_close(l, 1000);
    T_EQ_INT(sql_int(path, "SELECT price_input_nanos FROM requests WHERE id = 'f0000'"), 3 * C);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM usage_hourly WHERE team = 'a' AND key_id = 'k1'"
                           " AND model = 'm1' AND hour = 1795392000000 / 3600000"), 2);
    T_EQ_INT(sql_int(path, ROLLUP_DIFF), 0);
    remove_ledger(path);
}

static void test_open_ro_errors(void)
{
    char err[256] = "", path[160];
    snprintf(path, sizeof path, "%s/missing.db", tmpdir);
    T_CHECK(ledger_open_ro(path, err, sizeof err) == NULL);
    T_CHECK(strstr(err, path) != NULL);
    T_EQ_INT(access(path, F_OK), -1);             /* nothing created */
    snprintf(path, sizeof path, "%s/notaledger.db", tmpdir);
    sqlite3 *db = NULL;
    sqlite3_open(path, &db);
    sqlite3_exec(db, "CREATE TABLE x(y)", NULL, NULL, NULL);
    sqlite3_close(db);
    err[0] = '\0';
    T_CHECK(ledger_open_ro(path, err, sizeof err) == NULL);
    T_CHECK(strstr(err, "not a pinmeter ledger") != NULL);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM sqlite_master"), 1);   /* left as it was */
    unlink(path);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pinmeter-rollup-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(path_main, sizeof path_main, "%s/main.db", tmpdir);
    T_RUN(test_rollup_after_mixed_run);
    T_RUN(test_rollup_built_for_old_ledger);
    T_RUN(test_report_equals_group_by);
    T_RUN(test_report_reads_rollup);
    T_RUN(test_prices_added_to_old_ledger);
    T_RUN(test_open_ro_errors);
    remove_ledger(path_main);
    rmdir(tmpdir);
    return t_summary("ledger_rollup");
}
