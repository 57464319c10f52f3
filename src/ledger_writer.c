/* ledger_writer: the ledger's write path (part of the ledger module; shares
 * struct ledger with ledger.c through src/ledger_int.h).
 *
 * Owns the queue of records handed over by ledger_begin and ledger_submit,
 * and the one writer thread that drains it in group commits: a batch of up to
 * BATCH_MAX records in one transaction, a begin paired with its completion in
 * the same batch written as one whole row, the batch's charges summed per
 * team and UTC day into one spend_daily upsert each, and its usage summed per
 * hour, team, key, model and price set into one usage_hourly upsert each (a begin counts
 * its request, its completion the tokens and the charge, so the rollup
 * always equals a GROUP BY over the requests). A failed batch is retried
 * one record at a time; failed completions (and journaled begins) go back to
 * the front of the queue and are retried until they commit, unjournaled
 * begins fail back to their callers. Calls nothing in ledger.c. */
#include "ledger_int.h"
#include "base.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct op {
    struct op *next;
    ledger_rec_t rec;
    ledger_done_fn done;
    void *ud;
    int jseg;                         /* journal segment of a journaled begin, else -1 */
    int merged;                       /* begin: its completion is in the same batch;
                                       * completion: insert the whole row */
} op_t;

/* A small batch waits this long for more (off the request path: begins are
 * journaled). Each commit costs about 130 µs fixed plus about 10 µs a row, and
 * the writer shares the loop's core: 10 ms gathers most requests' begins with
 * their completions into single rows and wakes the writer a tenth as often as
 * 1 ms did (issue 17's profile: the writer's CPU per request at c=1 fell from
 * 24-31 µs to 13 µs, and the 64-stream added time to first event halved). */
#define GATHER_NS (10 * 1000 * 1000)
#define GATHER_BELOW 32               /* ...when fewer than this are waiting */
#define LEDGER_WRITER_NICE 5          /* the writer thread's nice value (the loop's is 0) */

static const char *STATE_NAMES[] = {
    "inflight", "settled", "estimated", "failed", "interrupted"
};

const char *ledger_state_name(ledger_state_t s)
{
    return (unsigned)s < 5 ? STATE_NAMES[s] : "unknown";
}

int ledger_state_parse(const char *s)
{
    for (int i = 0; i < 5; i++)
        if (strcmp(s, STATE_NAMES[i]) == 0) return i;
    return -1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#ifdef PINMETER_TEST_HOOKS
/* Test builds only: while the file named by PINMETER_TEST_LEDGER_FAULT
 * exists, every commit and journal write fails as if the disk were full. */
static int fault_injected(void)
{
    const char *p = getenv("PINMETER_TEST_LEDGER_FAULT");
    return p && *p && access(p, F_OK) == 0;
}
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

int ledger_begin(ledger_t *l, const ledger_rec_t *rec)
{
    if (atomic_load(&l->failing)) return -1;     /* rows cannot be committed */
    if (fault_injected()) {
        atomic_store(&l->jfail, 1);
        return -1;
    }
    op_t *o = op_new(rec, NULL, NULL);
    if (!o) return -1;
    if (l->journal) {
        journal_begin_t b = {
            .id = rec->id, .started_ms = rec->started_ms, .team = rec->team,
            .key_id = rec->key_id, .model = rec->model, .stream = rec->stream,
            .reserved = rec->reserved, .price_input = rec->price_input,
            .price_output = rec->price_output, .price_cache_read = rec->price_cache_read,
        };
        int seg = journal_append(l->journal, &b);
        if (seg < 0) {
            atomic_store(&l->jfail, 1);
            free(o);
            return -1;
        }
        atomic_store(&l->jfail, 0);
        o->jseg = seg;
    }
    if (enqueue(l, o) != 0) {
        /* closing: the journal line stays and is replayed as interrupted */
        free(o);
        return -1;
    }
    return 0;
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

int ledger_hourly_add(ledger_t *l, const struct hour_sum *h)
{
    sqlite3_stmt *st = l->hourly;
    sqlite3_bind_int64(st, 1, h->hour);
    sqlite3_bind_text(st, 2, h->team, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, h->key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, h->model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, h->requests);
    sqlite3_bind_int64(st, 6, h->prompt);
    sqlite3_bind_int64(st, 7, h->completion);
    sqlite3_bind_int64(st, 8, h->cached);
    sqlite3_bind_int64(st, 9, h->nanos);
    for (int k = 0; k < 3; k++) sqlite3_bind_int64(st, 10 + k, h->price[k]);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Empties the batch's table of hourly sums. */
static void clear_hourly(ledger_t *l)
{
    for (size_t i = 0; i < l->n_hsums; i++) l->hsums[l->hused[i]].team = NULL;
    l->n_hsums = 0;
}

/* Writes the batch's hourly sums into usage_hourly (inside the open
 * transaction; stops at the first failure, after which SQLite may have
 * rolled the transaction back) and empties the table. 0 or -1. */
static int flush_hourly(ledger_t *l)
{
    int rc = 0;
    for (size_t i = 0; i < l->n_hsums && rc == 0; i++)
        rc = ledger_hourly_add(l, &l->hsums[l->hused[i]]);
    clear_hourly(l);
    return rc;
}

/* Adds a record's share to the batch's sum for its hour, team, key, model
 * and price set: requests (1 for the row's insert, else 0) and, with usage,
 * its tokens and charge. r must outlive the batch's commit. 0 or -1. */
static int add_hourly(ledger_t *l, const ledger_rec_t *r, int requests, int usage)
{
    int64_t hour = r->started_ms / 3600000;
    const nanos_t price[3] = { r->price_input < 0 ? -1 : r->price_input,
                               r->price_output < 0 ? -1 : r->price_output,
                               r->price_cache_read < 0 ? -1 : r->price_cache_read };
    uint32_t hv = 2166136261u ^ (uint32_t)hour;              /* FNV-1a over the key */
    for (const char *s = r->key_id; *s; s++) hv = (hv ^ (unsigned char)*s) * 16777619u;
    for (const char *s = r->model; *s; s++) hv = (hv ^ (unsigned char)*s) * 16777619u;
    for (const char *s = r->team; *s; s++) hv = (hv ^ (unsigned char)*s) * 16777619u;
    for (int k = 0; k < 3; k++) hv = (hv ^ (uint32_t)price[k]) * 16777619u;
    size_t i = hv & (HOURLY_SLOTS - 1);
    struct hour_sum *h;
    for (; (h = &l->hsums[i])->team; i = (i + 1) & (HOURLY_SLOTS - 1))
        if (h->hour == hour && strcmp(h->team, r->team) == 0 &&
            strcmp(h->key, r->key_id) == 0 && strcmp(h->model, r->model) == 0 &&
            memcmp(h->price, price, sizeof price) == 0)
            break;
    if (!h->team) {
        if (l->n_hsums == HOURLY_MAX) {
            if (flush_hourly(l) != 0) return -1;
            return add_hourly(l, r, requests, usage);
        }
        *h = (struct hour_sum){ .team = r->team, .key = r->key_id, .model = r->model,
                                .hour = hour, .price = { price[0], price[1], price[2] } };
        l->hused[l->n_hsums++] = i;
    }
    h->requests += requests;
    if (usage) {
        h->prompt += r->prompt;
        h->completion += r->completion;
        h->cached += r->cached;
        h->nanos += r->charged;
    }
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
        ledger_bind_price(st, 8, r->price_input);
        ledger_bind_price(st, 9, r->price_output);
        ledger_bind_price(st, 10, r->price_cache_read);
    } else {
        st = o->merged ? l->full : l->upd;
        if (o->merged) {
            sqlite3_bind_int64(st, 11, r->started_ms);
            sqlite3_bind_text(st, 12, r->team, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 13, r->key_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 14, r->model, -1, SQLITE_STATIC);
            sqlite3_bind_int(st, 15, r->stream);
            sqlite3_bind_int64(st, 16, r->reserved);
            ledger_bind_price(st, 17, r->price_input);
            ledger_bind_price(st, 18, r->price_output);
            ledger_bind_price(st, 19, r->price_cache_read);
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
        base_logl(BASE_WARN, "ledger: upstream id %s seen twice; stored as %s",
                r->upstream_id, dup);
        sqlite3_bind_text(st, 9, dup, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
        changed = sqlite3_changes(l->db);
        sqlite3_reset(st);
    }
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) return -1;
    if (r->state == LEDGER_INFLIGHT) return add_hourly(l, r, 1, 0);
    /* A completion that matched no inflight row was already applied (or its
     * row was recovered as interrupted): adding its charge again would
     * double-count. */
    if (changed == 0) return 0;
    if (add_hourly(l, r, o->merged, 1) != 0) return -1;
    if (r->charged == 0) return 0;
    return add_daily(l, r->team, r->started_ms / 86400000, r->charged);
}

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
    if (fault_injected()) {
        atomic_fetch_add(&l->write_errors, 1);
        return 0;
    }
    pair_up(l, batch);
    l->n_sums = 0;
    int ok = sqlite3_exec(l->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
    for (op_t *o = batch; ok && o; o = o->next)
        ok = apply(l, o) == 0;
    if (ok) ok = flush_daily(l) == 0;
    if (ok) ok = flush_hourly(l) == 0;
    clear_hourly(l);                             /* a failed batch's sums are dropped */
    if (ok) ok = sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) {
        sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
        atomic_fetch_add(&l->write_errors, 1);
    }
    return ok;
}

/* Commits a batch. On failure, begins are failed back to their callers and
 * completions are returned to the front of the queue for a later retry. */
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
        if (ok && o->jseg >= 0) journal_done(l->journal, o->jseg);
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
                base_logl(BASE_ERROR, "ledger: writes are failing (%s); new requests get "
                          "503 and completions are kept and retried", sqlite3_errmsg(l->db));
            else
                base_log("ledger: writable again");
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

int ledger_failing(ledger_t *l)
{
    if (atomic_load(&l->jfail) && !fault_injected()) {
        /* The last begin could not be journaled. A zero-length write shows
         * only that the file is open and writable again, not that there is
         * space; the next begin finds that out and sets the flag again. */
        int ok = !l->journal || journal_probe(l->journal) == 0;
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

int64_t ledger_write_errors(ledger_t *l)
{
    return atomic_load(&l->write_errors);
}

void ledger_writer_stop(ledger_t *l, int timeout_ms)
{
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
        base_logl(BASE_ERROR, "ledger: could not record completion of %s", o->rec.id);
        if (o->done) o->done(o->ud, 0);
        free(o);
    }
}
