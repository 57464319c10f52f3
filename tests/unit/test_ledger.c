/* Unit tests for ledger: begin/complete through the writer thread, exact
 * grouped reports and daily spend, idempotent completions, crash recovery
 * of inflight rows, persistence across close/reopen, the done callback,
 * a 10,000-record group commit, report windows, and what happens to
 * completions the database refuses. Files live in a mkdtemp directory. */
#include "ledger.h"
#include "t.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define C NANOS_PER_CREDIT
#define DAY_MS 86400000LL
#define D1 1795392000000LL          /* 2026-11-23T00:00:00Z, ms */
#define D2 (D1 + DAY_MS)            /* 2026-11-24 */
#define D1_DAY (D1 / DAY_MS)        /* 20780 */
#define HOUR_MS 3600000LL

static char tmpdir[64];

static void path_in_tmp(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* Removes a ledger file and its WAL companions. */
static void remove_ledger(const char *path)
{
    char p[256];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Counts done callbacks (called on the writer thread). */
typedef struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ok, failed;
} counter_t;

static void counter_init(counter_t *c)
{
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->ok = c->failed = 0;
}

static void counter_destroy(counter_t *c)
{
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

static void on_done(void *ud, int ok)
{
    counter_t *c = ud;
    pthread_mutex_lock(&c->mu);
    if (ok == 1) c->ok++; else c->failed++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Waits until ok + failed >= n, at most timeout_ms. 1 if reached. */
static int counter_wait(counter_t *c, int n, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) { dl.tv_sec++; dl.tv_nsec -= 1000000000L; }
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    while (c->ok + c->failed < n && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
    int reached = c->ok + c->failed >= n;
    pthread_mutex_unlock(&c->mu);
    return reached;
}

/* Callbacks so far (ok + failed), read under the lock. */
static int counter_total(counter_t *c)
{
    pthread_mutex_lock(&c->mu);
    int n = c->ok + c->failed;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* Polls ledger_backlog() == 0, at most timeout_ms. 1 if idle. */
static int wait_idle(ledger_t *l, int timeout_ms)
{
    int64_t end = mono_ms() + timeout_ms;
    while (ledger_backlog(l) != 0) {
        if (mono_ms() > end) return 0;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 1;
}

static ledger_rec_t begin_rec(const char *id, const char *team, const char *model,
                              int64_t started_ms, nanos_t reserved)
{
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team, sizeof r.team, "%s", team);
    snprintf(r.key_id, sizeof r.key_id, "%s-key", team);
    snprintf(r.model, sizeof r.model, "%s", model);
    r.started_ms = started_ms;
    r.reserved = reserved;
    r.state = LEDGER_INFLIGHT;
    return r;
}

static ledger_rec_t done_rec(ledger_rec_t r, ledger_state_t state, nanos_t charged,
                             int64_t prompt, int64_t completion, int64_t cached)
{
    r.state = state;
    r.charged = charged;
    r.prompt = prompt;
    r.completion = completion;
    r.cached = cached;
    r.status = 200;
    r.ended_ms = r.started_ms + 1234;
    r.latency_ms = 1234;
    snprintf(r.upstream_id, sizeof r.upstream_id, "up-%s", r.id);
    return r;
}

/* Report rows copied out of the callback. */
typedef struct grow {
    char team[64], key[64], model[256], day[16];
    int has_team, has_key, has_model, has_day;
    int64_t requests, prompt, completion, cached;
    nanos_t credits;
} grow_t;

typedef struct groups { grow_t v[64]; int n; } groups_t;

static void cp(char *dst, size_t n, int *has, const char *src)
{
    *has = src != NULL;
    snprintf(dst, n, "%s", src ? src : "");
}

static int collect(void *ud, const ledger_group_t *g)
{
    groups_t *gs = ud;
    if (gs->n == 64) return -1;
    grow_t *r = &gs->v[gs->n++];
    cp(r->team, sizeof r->team, &r->has_team, g->team);
    cp(r->key, sizeof r->key, &r->has_key, g->key);
    cp(r->model, sizeof r->model, &r->has_model, g->model);
    cp(r->day, sizeof r->day, &r->has_day, g->day);
    r->requests = g->requests;
    r->prompt = g->prompt;
    r->completion = g->completion;
    r->cached = g->cached;
    r->credits = g->credits;
    return 0;
}

static int report(ledger_t *l, int64_t since, int64_t until, int by, groups_t *gs)
{
    char err[256] = "";
    gs->n = 0;
    ledger_query_t q = { .since_ms = since, .until_ms = until, .by = by };
    int rc = ledger_report(l, &q, collect, gs, err, sizeof err);
    if (rc != 0) fprintf(stderr, "  ledger_report: %s\n", err);
    return rc;
}

static nanos_t spent(ledger_t *l, const char *team, int64_t since_day)
{
    nanos_t v = -12345;
    T_EQ_INT(ledger_spent_since(l, team, since_day, &v), 0);
    return v;
}

/* One integer from a separate read-only connection to path. */
static int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -999;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "  sql_int(%s): %s\n", sql, db ? sqlite3_errmsg(db) : "?");
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db) == SQLITE_OK &&
             sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    if (rc) fprintf(stderr, "  sql_exec(%s): %s\n", sql, db ? sqlite3_errmsg(db) : "?");
    sqlite3_close(db);
    return rc;
}

static ledger_t *open_ok(const char *path)
{
    char err[512] = "";
    ledger_t *l = ledger_open(path, err, sizeof err);
    if (!l) fprintf(stderr, "  ledger_open(%s): %s\n", path, err);
    return l;
}

/* Writes five requests over two days and two teams. */
static void write_sample(ledger_t *l, counter_t *c)
{
    ledger_rec_t r1 = begin_rec("r1", "a", "m1", D1 + 1 * HOUR_MS, 5 * C);
    ledger_rec_t r2 = begin_rec("r2", "a", "m1", D1 + 2 * HOUR_MS, 5 * C);
    ledger_rec_t r3 = begin_rec("r3", "a", "m2", D1 + 3 * HOUR_MS, 1 * C);
    ledger_rec_t r4 = begin_rec("r4", "b", "m1", D2 + 1 * HOUR_MS, 9 * C);
    ledger_rec_t r5 = begin_rec("r5", "a", "m1", D2 + 5 * HOUR_MS, 9 * C);
    const ledger_rec_t *begins[] = {&r1, &r2, &r3, &r4, &r5};
    for (int i = 0; i < 5; i++) T_EQ_INT(ledger_submit(l, begins[i], on_done, c), 0);
    ledger_rec_t d[] = {
        done_rec(r1, LEDGER_SETTLED, 1500000000, 100, 50, 10),
        done_rec(r2, LEDGER_SETTLED, 2250000000, 200, 20, 0),
        done_rec(r3, LEDGER_SETTLED, 1, 3, 4, 5),
        done_rec(r4, LEDGER_SETTLED, 3 * C, 30, 30, 30),
        done_rec(r5, LEDGER_ESTIMATED, 4 * C, 40, 0, 0),
    };
    for (int i = 0; i < 5; i++) T_EQ_INT(ledger_submit(l, &d[i], on_done, c), 0);
}

static void check_grow(const grow_t *g, const char *team, const char *model,
                       const char *day, int64_t req, int64_t p, int64_t cpl,
                       int64_t cached, nanos_t credits)
{
    T_EQ_STR(g->team, team);
    T_EQ_STR(g->model, model);
    T_EQ_STR(g->day, day);
    T_EQ_INT(g->has_key, 0);
    T_EQ_INT(g->requests, req);
    T_EQ_INT(g->prompt, p);
    T_EQ_INT(g->completion, cpl);
    T_EQ_INT(g->cached, cached);
    T_EQ_INT(g->credits, credits);
}

static void test_settle_and_report_memory(void)
{
    ledger_t *l = open_ok(":memory:");
    T_CHECK(l != NULL);
    if (!l) return;
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    write_sample(l, &c);
    T_CHECK(counter_wait(&c, 10, 5000));
    T_CHECK(wait_idle(l, 5000));
    T_EQ_INT(c.ok, 10);
    T_EQ_INT(c.failed, 0);
    T_EQ_INT(ledger_backlog(l), 0);

    groups_t gs;
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM | LEDGER_BY_MODEL | LEDGER_BY_DAY, &gs), 0);
    T_EQ_INT(gs.n, 4);
    if (gs.n == 4) {
        check_grow(&gs.v[0], "a", "m1", "2026-11-23", 2, 300, 70, 10, 3750000000LL);
        check_grow(&gs.v[1], "a", "m1", "2026-11-24", 1, 40, 0, 0, 4 * C);
        check_grow(&gs.v[2], "a", "m2", "2026-11-23", 1, 3, 4, 5, 1);
        check_grow(&gs.v[3], "b", "m1", "2026-11-24", 1, 30, 30, 30, 3 * C);
    }
    /* by team only: no model or day in the groups */
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 2);
    T_EQ_STR(gs.v[0].team, "a");
    T_EQ_INT(gs.v[0].has_model, 0);
    T_EQ_INT(gs.v[0].has_day, 0);
    T_EQ_INT(gs.v[0].requests, 4);
    T_EQ_INT(gs.v[0].credits, 7750000001LL);
    T_EQ_STR(gs.v[1].team, "b");
    T_EQ_INT(gs.v[1].credits, 3 * C);
    /* by key */
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_KEY, &gs), 0);
    T_EQ_INT(gs.n, 2);
    T_EQ_STR(gs.v[0].key, "a-key");
    T_EQ_INT(gs.v[0].has_team, 0);
    T_EQ_STR(gs.v[1].key, "b-key");
    /* no grouping: one total row */
    T_EQ_INT(report(l, 0, INT64_MAX, 0, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_INT(gs.v[0].requests, 5);
    T_EQ_INT(gs.v[0].prompt, 373);
    T_EQ_INT(gs.v[0].completion, 104);
    T_EQ_INT(gs.v[0].cached, 45);
    T_EQ_INT(gs.v[0].credits, 10750000001LL);
    T_EQ_INT(gs.v[0].has_team + gs.v[0].has_key + gs.v[0].has_model + gs.v[0].has_day, 0);

    /* daily spend: by start day */
    T_EQ_INT(spent(l, "a", D1_DAY), 7750000001LL);
    T_EQ_INT(spent(l, "a", D1_DAY + 1), 4 * C);
    T_EQ_INT(spent(l, "a", D1_DAY + 2), 0);
    T_EQ_INT(spent(l, "b", D1_DAY), 3 * C);
    T_EQ_INT(spent(l, "b", 0), 3 * C);
    T_EQ_INT(spent(l, "nobody", 0), 0);
    ledger_close(l, 1000);
    counter_destroy(&c);
}

static void test_done_callback(void)
{
    ledger_t *l = open_ok(":memory:");
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    T_EQ_INT(ledger_writer_start(l), 0);          /* second start is a no-op */
    ledger_rec_t r = begin_rec("cb1", "a", "m", D1, 1);
    T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
    T_CHECK(counter_wait(&c, 1, 5000));
    T_EQ_INT(c.ok, 1);
    T_EQ_INT(c.failed, 0);
    /* a NULL callback is allowed */
    ledger_rec_t d = done_rec(r, LEDGER_SETTLED, 1, 1, 1, 0);
    T_EQ_INT(ledger_submit(l, &d, NULL, NULL), 0);
    T_CHECK(wait_idle(l, 5000));
    T_EQ_INT(spent(l, "a", 0), 1);
    /* the callback ran once, not again */
    T_EQ_INT(c.ok, 1);
    ledger_close(l, 1000);
    counter_destroy(&c);
}

static void test_completion_applied_once(void)
{
    char path[128];
    path_in_tmp(path, sizeof path, "twice.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t r = begin_rec("dup", "a", "m", D1 + 10, 3 * C);
    ledger_rec_t d1 = done_rec(r, LEDGER_SETTLED, 2 * C, 10, 10, 0);
    ledger_rec_t d2 = done_rec(r, LEDGER_SETTLED, 5 * C, 99, 99, 99);
    T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
    T_EQ_INT(ledger_submit(l, &d1, on_done, &c), 0);
    T_EQ_INT(ledger_submit(l, &d1, on_done, &c), 0);   /* same completion again */
    T_EQ_INT(ledger_submit(l, &d2, on_done, &c), 0);   /* a different late one */
    T_CHECK(counter_wait(&c, 4, 5000));
    T_CHECK(wait_idle(l, 5000));
    T_EQ_INT(c.ok, 4);
    T_EQ_INT(spent(l, "a", 0), 2 * C);
    groups_t gs;
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_INT(gs.v[0].requests, 1);
    T_EQ_INT(gs.v[0].prompt, 10);
    T_EQ_INT(gs.v[0].credits, 2 * C);
    ledger_close(l, 1000);
    T_EQ_INT(sql_int(path, "SELECT charged_nanos FROM requests WHERE id='dup'"), 2 * C);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), 1);
    T_EQ_INT(sql_int(path, "SELECT nanos FROM spend_daily WHERE team='a'"), 2 * C);
    counter_destroy(&c);
    remove_ledger(path);
}

/* What ledger_recovered reports, as "team/key/model=rows:nanos;..." */
typedef struct recov { char text[512]; } recov_t;

static void recov_one(void *ud, const char *team, const char *key, const char *model,
                      int64_t rows, nanos_t nanos)
{
    recov_t *r = ud;
    size_t n = strlen(r->text);
    snprintf(r->text + n, sizeof r->text - n, "%s/%s/%s=%lld:%lld;", team, key, model,
             (long long)rows, (long long)nanos);
}

static const char *recovered_text(ledger_t *l, recov_t *r)
{
    r->text[0] = '\0';
    ledger_recovered(l, recov_one, r);
    return r->text;
}

static void test_recover(void)
{
    char path[128];
    path_in_tmp(path, sizeof path, "recover.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t a1 = begin_rec("a1", "a", "m", D1 + HOUR_MS, 7 * C);
    ledger_rec_t a2 = begin_rec("a2", "a", "m", D1 + 2 * HOUR_MS, 2 * C);
    ledger_rec_t b1 = begin_rec("b1", "b", "m", D2 + HOUR_MS, 3 * C);
    ledger_rec_t a2d = done_rec(a2, LEDGER_SETTLED, 1 * C, 1, 1, 0);
    T_EQ_INT(ledger_submit(l, &a1, on_done, &c), 0);
    T_EQ_INT(ledger_submit(l, &a2, on_done, &c), 0);
    T_EQ_INT(ledger_submit(l, &b1, on_done, &c), 0);
    T_EQ_INT(ledger_submit(l, &a2d, on_done, &c), 0);
    T_CHECK(counter_wait(&c, 4, 5000));
    ledger_close(l, 1000);                      /* "crash" with a1, b1 in flight */
    T_EQ_INT(c.ok, 4);

    l = open_ok(path);
    if (!l) { T_CHECK(0); counter_destroy(&c); return; }
    T_EQ_INT(spent(l, "a", D1_DAY), 1 * C);     /* before recovery: a2 only */
    const int64_t at = D2 + 20 * HOUR_MS;
    recov_t rv;
    T_EQ_STR(recovered_text(l, &rv), "");       /* nothing recovered yet */
    T_EQ_INT(ledger_recover(l, at), 2);
    /* what it charged, by team, key and model, for the metrics */
    T_EQ_STR(recovered_text(l, &rv), "a/a-key/m=1:7000000000;b/b-key/m=1:3000000000;");
    T_EQ_INT(spent(l, "a", D1_DAY), 8 * C);
    T_EQ_INT(spent(l, "b", D1_DAY), 3 * C);
    T_EQ_INT(spent(l, "b", D1_DAY + 1), 3 * C);
    T_EQ_INT(spent(l, "b", D1_DAY + 2), 0);
    T_EQ_INT(ledger_recover(l, at), 0);         /* nothing left in flight */
    T_EQ_STR(recovered_text(l, &rv), "");
    T_EQ_INT(spent(l, "a", D1_DAY), 8 * C);

    /* a completion arriving for a recovered request does not count again */
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t a1d = done_rec(a1, LEDGER_SETTLED, 1 * C, 5, 5, 0);
    T_EQ_INT(ledger_submit(l, &a1d, on_done, &c), 0);
    T_CHECK(counter_wait(&c, 5, 5000));
    T_CHECK(wait_idle(l, 5000));
    T_EQ_INT(spent(l, "a", D1_DAY), 8 * C);
    groups_t gs;
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 2);
    T_EQ_INT(gs.v[0].requests, 2);
    T_EQ_INT(gs.v[0].credits, 8 * C);
    T_EQ_INT(gs.v[1].credits, 3 * C);
    ledger_close(l, 1000);

    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state='interrupted'"), 2);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state='inflight'"), 0);
    T_EQ_INT(sql_int(path, "SELECT charged_nanos FROM requests WHERE id='a1'"), 7 * C);
    T_EQ_INT(sql_int(path, "SELECT ended_ms FROM requests WHERE id='a1'"), at);
    T_EQ_INT(sql_int(path, "SELECT state = 'interrupted' FROM requests WHERE id='a1'"), 1);
    T_EQ_INT(sql_int(path, "SELECT state = 'settled' FROM requests WHERE id='a2'"), 1);
    T_EQ_INT(sql_int(path, "SELECT charged_nanos FROM requests WHERE id='b1'"), 3 * C);
    counter_destroy(&c);
    remove_ledger(path);
}

static void test_reopen_keeps_data(void)
{
    char path[128];
    path_in_tmp(path, sizeof path, "sub/dir/reopen.db");   /* parents created */
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    write_sample(l, &c);
    ledger_close(l, 2000);                      /* flushes what is queued */
    T_EQ_INT(c.ok, 10);
    T_EQ_INT(c.failed, 0);

    l = open_ok(path);
    if (!l) { T_CHECK(0); counter_destroy(&c); return; }
    groups_t gs;
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM | LEDGER_BY_MODEL | LEDGER_BY_DAY, &gs), 0);
    T_EQ_INT(gs.n, 4);
    if (gs.n == 4) {
        check_grow(&gs.v[0], "a", "m1", "2026-11-23", 2, 300, 70, 10, 3750000000LL);
        check_grow(&gs.v[3], "b", "m1", "2026-11-24", 1, 30, 30, 30, 3 * C);
    }
    T_EQ_INT(spent(l, "a", 0), 7750000001LL);
    T_EQ_INT(ledger_recover(l, D2), 0);
    ledger_close(l, 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), 5);
    counter_destroy(&c);
    remove_ledger(path);
    char d[160];
    path_in_tmp(d, sizeof d, "sub/dir");
    rmdir(d);
    path_in_tmp(d, sizeof d, "sub");
    rmdir(d);
}

static void test_group_commit_10k(void)
{
    enum { N = 10000 };
    char path[128];
    path_in_tmp(path, sizeof path, "bulk.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    int64_t t0 = mono_ms();
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "g-%05d", i);
        ledger_rec_t r = begin_rec(id, i % 2 ? "odd" : "even", "m", D1 + i, 10 * C);
        T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
        ledger_rec_t d = done_rec(r, LEDGER_SETTLED, i + 1, 1, 2, 0);
        T_EQ_INT(ledger_submit(l, &d, on_done, &c), 0);
    }
    T_CHECK(counter_wait(&c, 2 * N, 20000));
    T_CHECK(wait_idle(l, 5000));
    int64_t elapsed = mono_ms() - t0;
    printf("  (info) group commit: %d begins + %d completions in %lld ms\n", N, N,
           (long long)elapsed);
    T_EQ_INT(c.ok, 2 * N);
    T_EQ_INT(c.failed, 0);
    groups_t gs;
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 2);
    /* even i -> charges 1,3,...,9999; odd i -> 2,4,...,10000 */
    T_EQ_INT(gs.v[0].team[0], 'e');
    T_EQ_INT(gs.v[0].requests, N / 2);
    T_EQ_INT(gs.v[0].credits, 25000000LL);
    T_EQ_INT(gs.v[1].requests, N / 2);
    T_EQ_INT(gs.v[1].credits, 25005000LL);
    T_EQ_INT(gs.v[1].prompt, N / 2);
    T_EQ_INT(gs.v[1].completion, N);
    T_EQ_INT(spent(l, "even", 0) + spent(l, "odd", 0), 50005000LL);
    ledger_close(l, 1000);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state='settled'"), N);
    T_EQ_INT(sql_int(path, "SELECT COUNT(DISTINCT id) FROM requests"), N);
    T_EQ_INT(sql_int(path, "SELECT SUM(charged_nanos) FROM requests"), 50005000LL);
    counter_destroy(&c);
    remove_ledger(path);
}

static void test_report_window(void)
{
    ledger_t *l = open_ok(":memory:");
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    const int64_t at[] = {D1 - 1, D1, D2 - 1, D2, D2 + 5};
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        ledger_rec_t r = begin_rec(id, "a", "m", at[i], C);
        ledger_rec_t d = done_rec(r, LEDGER_SETTLED, (nanos_t)1 << (i * 4), 1, 0, 0);
        T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
        T_EQ_INT(ledger_submit(l, &d, on_done, &c), 0);
    }
    T_CHECK(counter_wait(&c, 10, 5000));
    T_CHECK(wait_idle(l, 5000));
    groups_t gs;
    /* [D1, D2): w1 and w2 only */
    T_EQ_INT(report(l, D1, D2, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_INT(gs.v[0].requests, 2);
    T_EQ_INT(gs.v[0].credits, 0x10 + 0x100);
    T_EQ_INT(report(l, D1, D2, LEDGER_BY_DAY, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_STR(gs.v[0].day, "2026-11-23");
    T_EQ_INT(report(l, D1, D2, 0, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_INT(gs.v[0].credits, 0x110);
    /* [D2, D2+5): w3 only; w4 at D2+5 is outside */
    T_EQ_INT(report(l, D2, D2 + 5, 0, &gs), 0);
    T_EQ_INT(gs.n, 1);
    T_EQ_INT(gs.v[0].requests, 1);
    T_EQ_INT(gs.v[0].credits, 0x1000);
    /* by day over everything: 2026-11-22, -23, -24 */
    T_EQ_INT(report(l, 0, INT64_MAX, LEDGER_BY_DAY, &gs), 0);
    T_EQ_INT(gs.n, 3);
    T_EQ_STR(gs.v[0].day, "2026-11-22");
    T_EQ_INT(gs.v[0].credits, 0x1);
    T_EQ_STR(gs.v[2].day, "2026-11-24");
    T_EQ_INT(gs.v[2].credits, 0x11000);
    /* an empty window: grouped gives no rows, ungrouped no total row either */
    T_EQ_INT(report(l, D1 + 1, D1 + 2, LEDGER_BY_TEAM, &gs), 0);
    T_EQ_INT(gs.n, 0);
    T_EQ_INT(report(l, D1 + 1, D1 + 2, 0, &gs), 0);
    T_EQ_INT(gs.n, 0);
    ledger_close(l, 1000);
    counter_destroy(&c);
}

static void test_open_errors_and_names(void)
{
    char err[512] = "";
    /* a directory is not a database */
    ledger_t *l = ledger_open(tmpdir, err, sizeof err);
    T_CHECK(l == NULL);
    T_CHECK(strstr(err, tmpdir) != NULL);
    if (l) ledger_close(l, 0);
    T_EQ_STR(ledger_state_name(LEDGER_INFLIGHT), "inflight");
    T_EQ_STR(ledger_state_name(LEDGER_SETTLED), "settled");
    T_EQ_STR(ledger_state_name(LEDGER_ESTIMATED), "estimated");
    T_EQ_STR(ledger_state_name(LEDGER_FAILED), "failed");
    T_EQ_STR(ledger_state_name(LEDGER_INTERRUPTED), "interrupted");
    T_EQ_STR(ledger_state_name((ledger_state_t)99), "unknown");
    ledger_close(NULL, 0);
}

/* A completion the database refuses (here: a trigger) is retried until the
 * close deadline, then dropped with done(ok = 0); a begin it refuses fails
 * back at once. */
static void test_refused_writes_with_writer(void)
{
    char path[128];
    path_in_tmp(path, sizeof path, "refuse.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t r = begin_rec("x1", "a", "m", D1, C);
    T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
    T_CHECK(counter_wait(&c, 1, 5000));
    T_EQ_INT(ledger_write_errors(l), 0);
    T_EQ_INT(sql_exec(path, "CREATE TRIGGER no_upd BEFORE UPDATE ON requests"
                            " BEGIN SELECT RAISE(ABORT, 'read only'); END;"
                            "CREATE TRIGGER no_ins BEFORE INSERT ON requests"
                            " BEGIN SELECT RAISE(ABORT, 'read only'); END;"), 0);
    ledger_rec_t r2 = begin_rec("x2", "a", "m", D1, C);
    T_EQ_INT(ledger_submit(l, &r2, on_done, &c), 0);
    T_CHECK(counter_wait(&c, 2, 5000));
    T_EQ_INT(c.failed, 1);                      /* fail closed */
    ledger_rec_t d = done_rec(r, LEDGER_SETTLED, C, 1, 1, 1);
    T_EQ_INT(ledger_submit(l, &d, on_done, &c), 0);
    struct timespec ts = {0, 250 * 1000000};
    nanosleep(&ts, NULL);
    T_EQ_INT(counter_total(&c), 2);             /* still retrying, no callback */
    T_EQ_INT(ledger_backlog(l), 1);
    int64_t errs = ledger_write_errors(l);      /* the begin's, then every retry */
    T_CHECK(errs >= 2);
    nanosleep(&ts, NULL);
    T_CHECK(ledger_write_errors(l) > errs);     /* retries every 100 ms count too */
    ledger_close(l, 300);
    T_EQ_INT(c.ok, 1);
    T_EQ_INT(c.failed, 2);                      /* dropped at close, reported */
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), 1);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM spend_daily"), 0);
    counter_destroy(&c);
    remove_ledger(path);
}

/* Same, but records queued before the writer ever started: ledger_close
 * commits them itself. A refused completion must still get done(ok = 0)
 * (and be freed), as when the writer runs. */
static void test_refused_completion_without_writer(void)
{
    char path[128];
    path_in_tmp(path, sizeof path, "refuse2.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    counter_t c;
    counter_init(&c);
    ledger_rec_t r = begin_rec("y1", "a", "m", D1, C);
    T_EQ_INT(ledger_submit(l, &r, on_done, &c), 0);
    ledger_close(l, 0);                         /* commits the begin itself */
    T_EQ_INT(c.ok, 1);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state='inflight'"), 1);

    T_EQ_INT(sql_exec(path, "CREATE TRIGGER no_upd BEFORE UPDATE ON requests"
                            " BEGIN SELECT RAISE(ABORT, 'read only'); END;"), 0);
    l = open_ok(path);
    if (!l) { T_CHECK(0); counter_destroy(&c); return; }
    ledger_rec_t d = done_rec(r, LEDGER_SETTLED, C, 1, 1, 1);
    T_EQ_INT(ledger_submit(l, &d, on_done, &c), 0);
    ledger_close(l, 0);
    T_EQ_INT(c.ok, 1);
    T_EQ_INT(c.failed, 1);                      /* must be told it was dropped */
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM spend_daily"), 0);
    counter_destroy(&c);
    remove_ledger(path);
}


/* A begin is journaled before the request goes upstream: if the process dies
 * before the writer commits its row, the next recover inserts it as
 * interrupted at its reservation. A begin whose row did get in is not added
 * twice, and a model with tabs/newlines survives the journal's escaping. */
static void test_journal_replay(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "journal.db");
    ledger_t *dead = open_ok(path);          /* never closed: "killed" */
    if (!dead) { T_CHECK(0); return; }
    ledger_rec_t a = begin_rec("j1", "a", "m\tx\n%y", D1 + HOUR_MS, 3 * C);
    ledger_rec_t b = begin_rec("j2", "a", "m1", D1 + 2 * HOUR_MS, 4 * C);
    a.price_input = 3 * C;                   /* the prices travel through the journal */
    a.price_output = 15 * C;
    a.price_cache_read = 3 * C / 10;
    b.price_input = b.price_output = b.price_cache_read = -1;   /* not known: NULL */
    T_EQ_INT(ledger_begin(dead, &a), 0);     /* writer not started: journal only */
    T_EQ_INT(ledger_begin(dead, &b), 0);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), 0);

    ledger_t *l = open_ok(path);             /* the restart */
    if (!l) { T_CHECK(0); return; }
    T_EQ_INT(ledger_recover(l, D1 + DAY_MS), 2);
    recov_t rv;
    T_EQ_STR(recovered_text(l, &rv), "a/a-key/m\tx\n%y=1:3000000000;a/a-key/m1=1:4000000000;");
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state='interrupted'"), 2);
    T_EQ_INT(sql_int(path, "SELECT charged_nanos FROM requests WHERE id='j1'"), 3 * C);
    T_EQ_INT(sql_int(path, "SELECT price_input_nanos = 3000000000 AND price_output_nanos ="
                           " 15000000000 AND price_cache_read_nanos = 300000000"
                           " FROM requests WHERE id='j1'"), 1);
    T_EQ_INT(sql_int(path, "SELECT price_input_nanos IS NULL AND price_output_nanos IS NULL"
                           " AND price_cache_read_nanos IS NULL FROM requests WHERE id='j2'"), 1);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM usage_hourly WHERE price_input_nanos = -1"
                           " AND charged_nanos = 4000000000"), 1);
    T_EQ_INT(sql_int(path, "SELECT model = 'm' || char(9) || 'x' || char(10) || '%y' "
                           "FROM requests WHERE id='j1'"), 1);
    T_EQ_INT(spent(l, "a", D1_DAY), 7 * C);
    /* replayed once: a second recover finds an empty journal */
    T_EQ_INT(ledger_recover(l, D1 + DAY_MS), 0);
    T_EQ_INT(spent(l, "a", D1_DAY), 7 * C);

    /* a begin committed by the writer is recovered from its row, once */
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_rec_t c3 = begin_rec("j3", "a", "m1", D1 + 3 * HOUR_MS, 5 * C);
    T_EQ_INT(ledger_begin(l, &c3), 0);
    for (int i = 0; i < 2000 && ledger_backlog(l) > 0; i++) usleep(1000);
    ledger_t *again = open_ok(path);
    T_EQ_INT(ledger_recover(again, D1 + DAY_MS), 1);
    T_EQ_STR(recovered_text(again, &rv), "a/a-key/m1=1:5000000000;");   /* from its row */
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE id='j3'"), 1);
    T_EQ_INT(spent(again, "a", D1_DAY), 12 * C);
    ledger_close(again, 1000);
    ledger_close(l, 1000);
    ledger_close(dead, 0);
}


/* A begin and its completion in one batch become one whole row, exact. */
static void test_begin_and_end_paired(void)
{
    char path[256];
    path_in_tmp(path, sizeof path, "paired.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    ledger_rec_t r = begin_rec("p1", "a", "m1", D1 + HOUR_MS, 9 * C);
    r.price_input = 1;
    r.price_output = 2;
    r.price_cache_read = 0;
    T_EQ_INT(ledger_begin(l, &r), 0);
    r.state = LEDGER_SETTLED;
    r.ended_ms = r.started_ms + 40;
    r.status = 200;
    r.prompt = 30;
    r.completion = 5;
    r.cached = 10;
    r.charged = 2 * C + 1;
    snprintf(r.upstream_id, sizeof r.upstream_id, "up-p1");
    r.latency_ms = 40;
    T_EQ_INT(ledger_submit(l, &r, NULL, NULL), 0);
    T_EQ_INT(ledger_writer_start(l), 0);      /* both are in its first batch */
    for (int i = 0; i < 2000 && ledger_backlog(l) > 0; i++) usleep(1000);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), 1);
    T_EQ_INT(sql_int(path, "SELECT state = 'settled' AND charged_nanos = 2000000001 AND "
                           "reserved_nanos = 9000000000 AND prompt_tokens = 30 AND "
                           "completion_tokens = 5 AND cached_tokens = 10 AND status = 200 AND "
                           "upstream_id = 'up-p1' AND ended_ms - started_ms = 40 AND "
                           "price_input_nanos = 1 AND price_output_nanos = 2 AND "
                           "price_cache_read_nanos = 0 FROM requests WHERE id = 'p1'"), 1);
    T_EQ_INT(spent(l, "a", D1_DAY), 2 * C + 1);
    ledger_close(l, 1000);
}

/* One batch far larger than the old pairing limit (64), over more (team, day)
 * pairs than one flush of daily sums holds: every request is one settled row,
 * and each team's spend per day is exact. */
static void test_large_batch_daily_sums(void)
{
    enum { TEAMS = 70, N = 1400 };
    char path[256];
    path_in_tmp(path, sizeof path, "large-batch.db");
    ledger_t *l = open_ok(path);
    if (!l) { T_CHECK(0); return; }
    nanos_t want[TEAMS][2];
    memset(want, 0, sizeof want);
    for (int i = 0; i < N; i++) {
        char id[32], team[16];
        int t = i % TEAMS, d = (i / TEAMS) % 2;
        snprintf(id, sizeof id, "lb-%04d", i);
        snprintf(team, sizeof team, "t%02d", t);
        ledger_rec_t r = begin_rec(id, team, "m", (d ? D2 : D1) + i, 10 * C);
        T_EQ_INT(ledger_submit(l, &r, NULL, NULL), 0);
        nanos_t charge = i % 7 == 0 ? 0 : C + i;      /* some cost nothing */
        ledger_rec_t e = done_rec(r, LEDGER_SETTLED, charge, 1, 1, 0);
        T_EQ_INT(ledger_submit(l, &e, NULL, NULL), 0);
        want[t][d] += charge;
    }
    T_EQ_INT(ledger_writer_start(l), 0);      /* all 2,800 records in its first batch */
    T_CHECK(wait_idle(l, 10000));
    int days_charged = 0;                     /* (team, day) pairs with a charge */
    for (int t = 0; t < TEAMS; t++) {
        days_charged += (want[t][0] > 0) + (want[t][1] > 0);
        char team[16];
        snprintf(team, sizeof team, "t%02d", t);
        nanos_t both = spent(l, team, D1_DAY), second = spent(l, team, D1_DAY + 1);
        T_EQ_INT(second, want[t][1]);
        T_EQ_INT(both - second, want[t][0]);
    }
    ledger_close(l, 1000);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests WHERE state = 'settled'"), N);
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM requests"), N);
    T_EQ_INT(days_charged, 2 * TEAMS - 20);  /* teams 0, 7, ..., 63 are only charged 0 */
    T_EQ_INT(sql_int(path, "SELECT COUNT(*) FROM spend_daily"), days_charged);
    T_EQ_INT(sql_int(path, "SELECT (SELECT SUM(nanos) FROM spend_daily) = "
                           "(SELECT SUM(charged_nanos) FROM requests)"), 1);
    remove_ledger(path);
}

int main(void)
{
    /* line-buffered, so the summary survives LeakSanitizer's exit */
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pinmeter-ledger-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    T_RUN(test_begin_and_end_paired);
    T_RUN(test_journal_replay);
    T_RUN(test_settle_and_report_memory);
    T_RUN(test_done_callback);
    T_RUN(test_completion_applied_once);
    T_RUN(test_recover);
    T_RUN(test_reopen_keeps_data);
    T_RUN(test_group_commit_10k);
    T_RUN(test_large_batch_daily_sums);
    T_RUN(test_report_window);
    T_RUN(test_open_errors_and_names);
    T_RUN(test_refused_writes_with_writer);
    T_RUN(test_refused_completion_without_writer);
    rmdir(tmpdir);
    return t_summary("ledger");
}
