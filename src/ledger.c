/* ledger: SQLite ledger with a group-committing writer thread.
 *
 * Schema: `requests` holds one row per admitted request; `spend_daily` holds
 * per-team, per-UTC-day charge totals updated in the same transaction as the
 * row's completion, so start-up rebuilds a period's spend from at most a few
 * dozen rows whatever the ledger's size. Leftover inflight rows are found
 * through a partial index. */
#include "ledger.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH_MAX 4096

typedef struct op {
    struct op *next;
    ledger_rec_t rec;
    ledger_done_fn done;
    void *ud;
    int jseg;                         /* journal segment of a journaled begin, else -1 */
    int merged;                       /* begin: its completion is in the same batch;
                                       * completion: insert the whole row */
} op_t;

#define PAIR_SLOTS (2 * BATCH_MAX)    /* pairing table: at most half full */
#define DAILY_MAX 64                  /* distinct (team, day) sums held per flush */
#define GATHER_NS (1000 * 1000)       /* a small batch waits 1 ms for more (off the request path) */
#define GATHER_BELOW 32               /* ...when fewer than this are waiting */
#define LEDGER_WRITER_NICE 5          /* the writer thread's nice value (the loop's is 0) */

#define JOURNAL_ROTATE_BYTES (1 << 20)

struct ledger {
    sqlite3 *db;
    sqlite3 *rdb;                     /* reads while the writer runs (own connection) */
    pthread_mutex_t rmu;
    char path[1024];
    sqlite3_stmt *ins, *upd, *daily, *full;
    /* writer thread only: pairing a batch's begins with their completions,
     * and the batch's charges summed per team and day */
    op_t *pair_tab[PAIR_SLOTS];
    size_t pair_used[BATCH_MAX];
    struct { const char *team; int64_t day; nanos_t nanos; } sums[DAILY_MAX];
    size_t n_sums;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    op_t *head, *tail;
    size_t backlog;
    int stopping;
    int64_t stop_deadline_ms;
    atomic_int failing;               /* the last commit failed */
    atomic_int jfail;                 /* the last journal write failed */
    /* Begin journal: two append-only segments beside the database. A begin
     * is one write() to the active segment (durable against process death,
     * no fsync) before the request goes upstream; the writer inserts its
     * inflight row later. A segment is emptied and reused once every begin
     * in it has its row committed. [jmu] */
    pthread_mutex_t jmu;
    int jfd[2];
    int jactive;
    off_t jsize[2];
    long jopen[2];                    /* begins not yet committed to SQLite */
    char jpath[2][1100];
};

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
    "CREATE TABLE IF NOT EXISTS spend_daily("
    " team TEXT NOT NULL, day INTEGER NOT NULL, nanos INTEGER NOT NULL,"
    " PRIMARY KEY(team, day)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID;";

static const char *STATE_NAMES[] = {
    "inflight", "settled", "estimated", "failed", "interrupted"
};

const char *ledger_state_name(ledger_state_t s)
{
    return (unsigned)s < 5 ? STATE_NAMES[s] : "unknown";
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    l->jfd[0] = l->jfd[1] = -1;
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
    if (sqlite3_prepare_v2(l->db,
            "INSERT INTO requests(id, started_ms, team, key_id, model, stream,"
            " reserved_nanos, state) VALUES(?1,?2,?3,?4,?5,?6,?7,'inflight')",
            -1, &l->ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "UPDATE requests SET ended_ms=?2, status=?3, prompt_tokens=?4,"
            " completion_tokens=?5, cached_tokens=?6, charged_nanos=?7, state=?8,"
            " upstream_id=?9, latency_ms=?10 WHERE id=?1 AND state='inflight'",
            -1, &l->upd, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "INSERT INTO requests(id, started_ms, team, key_id, model, stream, reserved_nanos,"
            " ended_ms, status, prompt_tokens, completion_tokens, cached_tokens, charged_nanos,"
            " state, upstream_id, latency_ms)"
            " VALUES(?1,?11,?12,?13,?14,?15,?16,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
            -1, &l->full, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(l->db,
            "INSERT INTO spend_daily(team, day, nanos) VALUES(?1,?2,?3)"
            " ON CONFLICT(team, day) DO UPDATE SET nanos = nanos + excluded.nanos",
            -1, &l->daily, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: cannot prepare ledger statements: %s", path,
                 sqlite3_errmsg(l->db));
        goto fail;
    }
    for (int i = 0; i < 2 && strcmp(path, ":memory:") != 0; i++) {
        snprintf(l->jpath[i], sizeof l->jpath[i], "%s-begins.%d", path, i);
        l->jfd[i] = open(l->jpath[i], O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (l->jfd[i] < 0) {
            snprintf(err, errlen, "%s: cannot open the begin journal: %s", l->jpath[i],
                     strerror(errno));
            goto fail;
        }
        l->jsize[i] = lseek(l->jfd[i], 0, SEEK_END);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_mutex_init(&l->rmu, NULL);
    pthread_mutex_init(&l->jmu, NULL);
    pthread_cond_init(&l->cv, NULL);
    return l;
fail:
    for (int i = 0; i < 2; i++)
        if (l->jfd[i] >= 0) close(l->jfd[i]);
    sqlite3_finalize(l->ins);
    sqlite3_finalize(l->upd);
    sqlite3_finalize(l->daily);
    sqlite3_finalize(l->full);
    sqlite3_close(l->db);
    free(l);
    return NULL;
}

/* Writes s into buf with bytes < 0x20, '%', '\t' and 0x7f as %XX, so a
 * journal line has exactly its tab-separated fields. */
static void jescape(char *buf, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == '%' || c == 0x7f) {
            buf[o++] = '%';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
}

static void junescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%' && r[1] && r[2]) {
            char h[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(h, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

#ifdef PINMETER_TEST_HOOKS
static int fault_injected(void);
#else
static int fault_injected(void) { return 0; }
#endif

static op_t *op_new(const ledger_rec_t *rec, ledger_done_fn done, void *ud)
{
    op_t *o = malloc(sizeof *o);
    if (!o) return NULL;
    o->next = NULL;
    o->rec = *rec;
    o->done = done;
    o->ud = ud;
    o->jseg = -1;
    o->merged = 0;
    return o;
}

static int enqueue(ledger_t *l, op_t *o);

int ledger_begin(ledger_t *l, const ledger_rec_t *rec)
{
    if (atomic_load(&l->failing)) return -1;     /* rows cannot be committed */
    if (fault_injected()) {
        atomic_store(&l->jfail, 1);
        return -1;
    }
    op_t *o = op_new(rec, NULL, NULL);
    if (!o) return -1;
    if (l->jfd[0] >= 0) {
        char team[200], key[200], model[800], line[1400];
        jescape(team, sizeof team, rec->team);
        jescape(key, sizeof key, rec->key_id);
        jescape(model, sizeof model, rec->model);
        int n = snprintf(line, sizeof line, "B\t%s\t%lld\t%s\t%s\t%s\t%d\t%lld\n", rec->id,
                         (long long)rec->started_ms, team, key, model, rec->stream,
                         (long long)rec->reserved);
        pthread_mutex_lock(&l->jmu);
        int a = l->jactive;
        if (l->jsize[a] > JOURNAL_ROTATE_BYTES && l->jopen[1 - a] == 0 &&
            ftruncate(l->jfd[1 - a], 0) == 0) {
            l->jsize[1 - a] = 0;
            a = l->jactive = 1 - a;
        }
        ssize_t w = write(l->jfd[a], line, (size_t)n);
        if (w != n) {
            /* a short write leaves a partial line, which replay ignores */
            pthread_mutex_unlock(&l->jmu);
            atomic_store(&l->jfail, 1);
            free(o);
            return -1;
        }
        atomic_store(&l->jfail, 0);
        l->jsize[a] += n;
        l->jopen[a]++;
        o->jseg = a;
        pthread_mutex_unlock(&l->jmu);
    }
    if (enqueue(l, o) != 0) {
        /* closing: the journal line stays and is replayed as interrupted */
        free(o);
        return -1;
    }
    return 0;
}

/* Inserts rows for journaled begins that never reached the database:
 * interrupted, charged at their reservation. Inside recover's transaction. */
static int replay_journal(ledger_t *l, int64_t at_ms, int64_t *n)
{
    sqlite3_stmt *ins = NULL;
    if (sqlite3_prepare_v2(l->db,
            "INSERT OR IGNORE INTO requests(id, started_ms, ended_ms, team, key_id, model,"
            " stream, reserved_nanos, charged_nanos, state)"
            " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?8,'interrupted')", -1, &ins, NULL) != SQLITE_OK)
        return -1;
    for (int i = 0; i < 2 && l->jfd[i] >= 0; i++) {
        FILE *f = fopen(l->jpath[i], "r");
        if (!f) continue;
        char line[1600];
        while (fgets(line, sizeof line, f)) {
            size_t len = strlen(line);
            if (len == 0 || line[len - 1] != '\n') break;     /* torn last line */
            line[len - 1] = '\0';
            char *fld[8], *save = NULL;
            int k = 0;
            for (char *t = strtok_r(line, "\t", &save); t && k < 8; t = strtok_r(NULL, "\t", &save))
                fld[k++] = t;
            if (k != 8 || strcmp(fld[0], "B") != 0) continue;
            for (int j = 3; j <= 5; j++) junescape(fld[j]);
            int64_t started = strtoll(fld[2], NULL, 10), reserved = strtoll(fld[7], NULL, 10);
            sqlite3_bind_text(ins, 1, fld[1], -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(ins, 2, started);
            sqlite3_bind_int64(ins, 3, at_ms);
            sqlite3_bind_text(ins, 4, fld[3], -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 5, fld[4], -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(ins, 6, fld[5], -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(ins, 7, atoi(fld[6]));
            sqlite3_bind_int64(ins, 8, reserved);
            int rc = sqlite3_step(ins);
            int added = sqlite3_changes(l->db);
            sqlite3_reset(ins);
            if (rc != SQLITE_DONE) { fclose(f); sqlite3_finalize(ins); return -1; }
            if (!added || reserved == 0) continue;
            (*n)++;
            sqlite3_bind_text(l->daily, 1, fld[3], -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(l->daily, 2, started / 86400000);
            sqlite3_bind_int64(l->daily, 3, reserved);
            rc = sqlite3_step(l->daily);
            sqlite3_reset(l->daily);
            sqlite3_clear_bindings(l->daily);
            if (rc != SQLITE_DONE) { fclose(f); sqlite3_finalize(ins); return -1; }
        }
        fclose(f);
    }
    sqlite3_finalize(ins);
    return 0;
}

int64_t ledger_recover(ledger_t *l, int64_t at_ms)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -1;
    int64_t replayed = 0;
    if (replay_journal(l, at_ms, &replayed) != 0) goto fail;
    /* Never undercount: an interrupted request is charged its reservation. */
    if (sqlite3_exec(l->db,
            "INSERT INTO spend_daily(team, day, nanos)"
            " SELECT team, started_ms / 86400000, SUM(reserved_nanos) FROM requests"
            " WHERE state = 'inflight' GROUP BY team, started_ms / 86400000"
            " ON CONFLICT(team, day) DO UPDATE SET nanos = nanos + excluded.nanos",
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
        return -1;
    }
    /* every journaled begin now has its row: start the journal afresh */
    for (int i = 0; i < 2 && l->jfd[i] >= 0; i++) {
        if (ftruncate(l->jfd[i], 0) != 0) return -1;
        l->jsize[i] = 0;
        l->jopen[i] = 0;
    }
    return n;
fail:
    sqlite3_finalize(st);
    sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
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

int ledger_spent_since(ledger_t *l, const char *team, int64_t since_day, nanos_t *out)
{
    sqlite3_stmt *st;
    int rc = -1;
    pthread_mutex_lock(&l->rmu);
    sqlite3 *db = l->db;
    if (l->started && strcmp(l->path, ":memory:") != 0) {   /* the writer owns l->db */
        if (!l->rdb && sqlite3_open_v2(l->path, &l->rdb, SQLITE_OPEN_READONLY |
                                       SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
            sqlite3_close(l->rdb);
            l->rdb = NULL;
            goto out;
        }
        sqlite3_busy_timeout(l->rdb, 5000);
        db = l->rdb;
    }
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

/* Writes the summed charges into spend_daily (inside the open transaction).
 * 0 or -1. */
static int flush_daily(ledger_t *l)
{
    sqlite3_stmt *st = l->daily;
    int rc = SQLITE_DONE;
    for (size_t i = 0; i < l->n_sums && rc == SQLITE_DONE; i++) {
        sqlite3_bind_text(st, 1, l->sums[i].team, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, l->sums[i].day);
        sqlite3_bind_int64(st, 3, l->sums[i].nanos);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    l->n_sums = 0;
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Adds a charge to the batch's sum for its team and day: one spend_daily
 * upsert per team and day per batch, not per row. team must outlive the
 * batch's commit (it points into the batch). 0 or -1. */
static int add_daily(ledger_t *l, const char *team, int64_t day, nanos_t nanos)
{
    for (size_t i = 0; i < l->n_sums; i++) {
        if (l->sums[i].day == day && strcmp(l->sums[i].team, team) == 0) {
            l->sums[i].nanos += nanos;
            return 0;
        }
    }
    if (l->n_sums == DAILY_MAX && flush_daily(l) != 0) return -1;
    l->sums[l->n_sums].team = team;
    l->sums[l->n_sums].day = day;
    l->sums[l->n_sums].nanos = nanos;
    l->n_sums++;
    return 0;
}

/* Applies one record inside the open transaction. 0 or -1. */
static int apply(ledger_t *l, const op_t *o)
{
    const ledger_rec_t *r = &o->rec;
    sqlite3_stmt *st;
    if (r->state == LEDGER_INFLIGHT && o->merged) return 0;   /* its completion inserts */
    if (r->state == LEDGER_INFLIGHT) {
        st = l->ins;
        sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, r->started_ms);
        sqlite3_bind_text(st, 3, r->team, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, r->key_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, r->model, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 6, r->stream);
        sqlite3_bind_int64(st, 7, r->reserved);
    } else {
        st = o->merged ? l->full : l->upd;
        if (o->merged) {
            sqlite3_bind_int64(st, 11, r->started_ms);
            sqlite3_bind_text(st, 12, r->team, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 13, r->key_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 14, r->model, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 15, r->stream);
            sqlite3_bind_int64(st, 16, r->reserved);
        }
        sqlite3_bind_text(st, 1, r->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, r->ended_ms);
        sqlite3_bind_int(st, 3, r->status);
        sqlite3_bind_int64(st, 4, r->prompt);
        sqlite3_bind_int64(st, 5, r->completion);
        sqlite3_bind_int64(st, 6, r->cached);
        sqlite3_bind_int64(st, 7, r->charged);
        sqlite3_bind_text(st, 8, ledger_state_name(r->state), -1, SQLITE_STATIC);
        if (r->upstream_id[0])
            sqlite3_bind_text(st, 9, r->upstream_id, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 9);
        sqlite3_bind_int64(st, 10, r->latency_ms);
    }
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(l->db);
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT && r->state != LEDGER_INFLIGHT && r->upstream_id[0]) {
        /* The upstream reused a request id: keep the row (the spend is real)
         * and mark the id as a repeat rather than lose or merge it. */
        char dup[sizeof r->upstream_id + LEDGER_ID_MAX + 8];
        snprintf(dup, sizeof dup, "%s#dup-%s", r->upstream_id, r->id);
        fprintf(stderr, "pinmeter: ledger: upstream id %s seen twice; stored as %s\n",
                r->upstream_id, dup);
        sqlite3_bind_text(st, 9, dup, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        changed = sqlite3_changes(l->db);
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return -1;
    /* A completion that matched no inflight row was already applied (or its
     * row was recovered as interrupted): adding its charge again would
     * double-count. */
    if (r->state == LEDGER_INFLIGHT || changed == 0 || r->charged == 0) return 0;
    return add_daily(l, r->team, r->started_ms / 86400000, r->charged);
}

/* Commits a batch. On failure, begins are failed back to their callers and
 * completions are returned to the front of the queue for a later retry. */
#ifdef PINMETER_TEST_HOOKS
/* Test builds only: while the file named by PINMETER_TEST_LEDGER_FAULT
 * exists, every commit and journal write fails as if the disk were full. */
static int fault_injected(void)
{
    const char *p = getenv("PINMETER_TEST_LEDGER_FAULT");
    return p && *p && access(p, F_OK) == 0;
}
#endif

static uint32_t id_hash(const char *s)
{
    uint32_t h = 2166136261u;                 /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* A begin whose completion follows in the same batch is written as one whole
 * row (one statement instead of two, and no later update of the row and its
 * indexes). Begins go into an open-addressing table by id; a completion
 * takes the first unpaired begin with its id. */
static void pair_up(ledger_t *l, op_t *batch)
{
    size_t n_used = 0;
    for (op_t *o = batch; o; o = o->next) o->merged = 0;   /* a retried batch pairs anew */
    for (op_t *o = batch; o; o = o->next) {
        size_t h = id_hash(o->rec.id) & (PAIR_SLOTS - 1);
        if (o->rec.state == LEDGER_INFLIGHT) {
            if (n_used == BATCH_MAX) break;                 /* cannot happen: batch <= BATCH_MAX */
            while (l->pair_tab[h]) h = (h + 1) & (PAIR_SLOTS - 1);
            l->pair_tab[h] = o;
            l->pair_used[n_used++] = h;
            continue;
        }
        for (op_t *b; (b = l->pair_tab[h]); h = (h + 1) & (PAIR_SLOTS - 1)) {
            if (!b->merged && strcmp(b->rec.id, o->rec.id) == 0) {
                b->merged = o->merged = 1;
                break;
            }
        }
    }
    for (size_t i = 0; i < n_used; i++) l->pair_tab[l->pair_used[i]] = NULL;
}

static int try_commit(ledger_t *l, op_t *batch)
{
    if (fault_injected()) return 0;
    pair_up(l, batch);
    l->n_sums = 0;
    int ok = sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    for (op_t *o = batch; ok && o; o = o->next)
        ok = apply(l, o) == 0;
    if (ok) ok = flush_daily(l) == 0;
    if (ok) ok = sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
    return ok;
}

static int commit_batch(ledger_t *l, op_t *batch)
{
    int ok = try_commit(l, batch);
    if (!ok && batch && batch->next) {
        /* One bad record must not sink the group: commit one at a time. */
        int any_ok = 0;
        while (batch) {
            op_t *o = batch;
            batch = o->next;
            o->next = NULL;
            any_ok |= commit_batch(l, o);
        }
        return any_ok;
    }

    op_t *retry = NULL, *rlast = NULL;
    size_t freed = 0;
    while (batch) {
        op_t *o = batch;
        batch = o->next;
        o->next = NULL;
        /* Completions, and begins already journaled (their request went
         * upstream), wait and retry; a begin that is not journaled fails
         * back to its caller. */
        if (!ok && (o->rec.state != LEDGER_INFLIGHT || o->jseg >= 0)) {
            if (rlast) rlast->next = o; else retry = o;
            rlast = o;
            continue;
        }
        if (ok && o->jseg >= 0) {
            pthread_mutex_lock(&l->jmu);
            l->jopen[o->jseg]--;
            pthread_mutex_unlock(&l->jmu);
        }
        if (o->done) o->done(o->ud, ok);
        free(o);
        freed++;
    }
    pthread_mutex_lock(&l->mu);
    if (retry) {
        rlast->next = l->head;
        if (!l->head) l->tail = rlast;
        l->head = retry;
    }
    l->backlog -= freed;
    pthread_mutex_unlock(&l->mu);
    return ok;
}

static void *writer_main(void *arg)
{
    ledger_t *l = arg;
    int failing = 0;
    /* Background work: nothing waits on a commit (begins are journaled), so
     * the writer yields the core to the request loop when both are ready. At
     * nice 5 it still gets a quarter of a saturated core, more than a full
     * request rate needs. Lowering one's own priority needs no privilege. */
    setpriority(PRIO_PROCESS, (id_t)gettid(), LEDGER_WRITER_NICE);
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->head && !l->stopping)
            pthread_cond_wait(&l->cv, &l->mu);
        if (!l->head || (l->stopping && failing && now_ms() > l->stop_deadline_ms)) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        if (!l->stopping && !failing && l->backlog < GATHER_BELOW) {
            /* A small batch waits a moment: its requests' completions often
             * arrive meanwhile, and pair with their begins. Nothing waits on
             * this: begins are already journaled. */
            pthread_mutex_unlock(&l->mu);
            struct timespec ts = {0, GATHER_NS};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&l->mu);
        }
        op_t *batch = l->head, *last = batch;
        for (int n = 1; n < BATCH_MAX && last->next; n++) last = last->next;
        l->head = last->next;
        if (!l->head) l->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&l->mu);

        failing = !commit_batch(l, batch);
        if (failing != l->failing) {
            if (failing)
                fprintf(stderr, "pinmeter: ledger: writes are failing (%s); new requests get "
                        "503 and completions are kept and retried\n", sqlite3_errmsg(l->db));
            else
                fprintf(stderr, "pinmeter: ledger: writable again\n");
            atomic_store(&l->failing, failing);
        }
        if (failing) {
            /* The disk is full or the file read-only: completions wait and
             * retry; begins were already failed back (fail closed). */
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

int ledger_writer_start(ledger_t *l)
{
    if (l->started) return 0;
    if (pthread_create(&l->thread, NULL, writer_main, l) != 0) return -1;
    pthread_setname_np(l->thread, "pm-ledger");
    l->started = 1;
    return 0;
}

int ledger_submit(ledger_t *l, const ledger_rec_t *rec, ledger_done_fn done, void *ud)
{
    op_t *o = op_new(rec, done, ud);
    if (!o) return -1;
    if (enqueue(l, o) != 0) {
        free(o);
        return -1;
    }
    return 0;
}

static int enqueue(ledger_t *l, op_t *o)
{
    pthread_mutex_lock(&l->mu);
    if (l->stopping && o->rec.state == LEDGER_INFLIGHT) {
        pthread_mutex_unlock(&l->mu);
        return -1;
    }
    if (l->tail) l->tail->next = o; else l->head = o;
    l->tail = o;
    l->backlog++;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    return 0;
}

int ledger_failing(ledger_t *l)
{
    if (atomic_load(&l->jfail) && !fault_injected()) {
        /* The last begin could not be journaled. A zero-length write shows
         * only that the file is open and writable again, not that there is
         * space; the next begin finds that out and sets the flag again. */
        pthread_mutex_lock(&l->jmu);
        int ok = l->jfd[0] < 0 || write(l->jfd[l->jactive], "", 0) == 0;
        pthread_mutex_unlock(&l->jmu);
        if (ok) atomic_store(&l->jfail, 0);
    }
    return atomic_load(&l->failing) || atomic_load(&l->jfail);
}

size_t ledger_backlog(ledger_t *l)
{
    pthread_mutex_lock(&l->mu);
    size_t n = l->backlog;
    pthread_mutex_unlock(&l->mu);
    return n;
}

void ledger_close(ledger_t *l, int timeout_ms)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    l->stop_deadline_ms = now_ms() + timeout_ms;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (l->started) pthread_join(l->thread, NULL);
    else if (l->head) {
        op_t *batch = l->head;
        l->head = l->tail = NULL;
        commit_batch(l, batch);
    }
    while (l->head) {             /* gave up retrying: report and drop */
        op_t *o = l->head;
        l->head = o->next;
        fprintf(stderr, "pinmeter: ledger: could not record completion of %s\n", o->rec.id);
        if (o->done) o->done(o->ud, 0);
        free(o);
    }
    sqlite3_finalize(l->ins);
    sqlite3_finalize(l->upd);
    sqlite3_finalize(l->daily);
    sqlite3_finalize(l->full);
    sqlite3_close(l->db);
    sqlite3_close(l->rdb);
    /* a clean stop has every begin in the database: empty the journal */
    for (int i = 0; i < 2; i++) {
        if (l->jfd[i] < 0) continue;
        if (l->jopen[i] == 0 && ftruncate(l->jfd[i], 0) != 0) { /* replayed next start */ }
        close(l->jfd[i]);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_mutex_destroy(&l->rmu);
    pthread_mutex_destroy(&l->jmu);
    pthread_cond_destroy(&l->cv);
    free(l);
}

int ledger_report(ledger_t *l, int64_t since_ms, int64_t until_ms, int by,
                  ledger_group_fn fn, void *ud, char *err, size_t errlen)
{
    static const struct { int flag; const char *expr; } cols[] = {
        {LEDGER_BY_TEAM, "team"},
        {LEDGER_BY_KEY, "key_id"},
        {LEDGER_BY_MODEL, "model"},
        {LEDGER_BY_DAY, "strftime('%Y-%m-%d', started_ms / 1000, 'unixepoch')"},
    };
    char sel[512] = "", grp[512] = "";
    for (size_t i = 0; i < 4; i++) {
        const char *e = (by & cols[i].flag) ? cols[i].expr : "NULL";
        size_t n = strlen(sel);
        snprintf(sel + n, sizeof sel - n, "%s%s", e, ", ");
        if (by & cols[i].flag) {
            n = strlen(grp);
            snprintf(grp + n, sizeof grp - n, "%s%d", grp[0] ? ", " : "", (int)i + 1);
        }
    }
    char sql[2048];
    snprintf(sql, sizeof sql,
             "SELECT %s COUNT(*), COALESCE(SUM(prompt_tokens),0),"
             " COALESCE(SUM(completion_tokens),0), COALESCE(SUM(cached_tokens),0),"
             " COALESCE(SUM(charged_nanos),0) FROM requests"
             " WHERE started_ms >= ?1 AND started_ms < ?2%s%s%s%s",
             sel, grp[0] ? " GROUP BY " : "", grp, grp[0] ? " ORDER BY " : "", grp);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(l->db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(l->db));
        return -1;
    }
    sqlite3_bind_int64(st, 1, since_ms);
    sqlite3_bind_int64(st, 2, until_ms);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        ledger_group_t g;
        g.team = (const char *)sqlite3_column_text(st, 0);
        g.key = (const char *)sqlite3_column_text(st, 1);
        g.model = (const char *)sqlite3_column_text(st, 2);
        g.day = (const char *)sqlite3_column_text(st, 3);
        g.requests = sqlite3_column_int64(st, 4);
        g.prompt = sqlite3_column_int64(st, 5);
        g.completion = sqlite3_column_int64(st, 6);
        g.cached = sqlite3_column_int64(st, 7);
        g.credits = sqlite3_column_int64(st, 8);
        if (!grp[0] && g.requests == 0) continue;
        if (fn(ud, &g) != 0) break;
    }
    int ok = rc == SQLITE_ROW || rc == SQLITE_DONE;
    if (!ok) snprintf(err, errlen, "ledger query failed: %s", sqlite3_errmsg(l->db));
    sqlite3_finalize(st);
    return ok ? 0 : -1;
}
