/* ledger_int.h: private to the ledger module (src/ledger.c and
 * src/ledger_writer.c); nothing else includes it. It holds struct ledger,
 * which both files share, and the one call between them. The layering runs
 * one way: ledger.c (open, schema, recovery, reads, report, close) calls into
 * ledger_writer.c (the queue, the writer thread, group commit); the writer
 * calls nothing in ledger.c. */
#ifndef PINMETER_LEDGER_INT_H
#define PINMETER_LEDGER_INT_H
#include "ledger.h"
#include "journal.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sqlite3.h>

#define BATCH_MAX 4096
#define PAIR_SLOTS (2 * BATCH_MAX)    /* pairing table: at most half full */
#define DAILY_MAX 64                  /* distinct (team, day) sums held per flush */

struct op;                            /* a queued record (ledger_writer.c) */

struct ledger {
    sqlite3 *db;
    sqlite3 *rdb;                     /* reads while the writer runs (own connection) */
    pthread_mutex_t rmu;
    char path[1024];
    sqlite3_stmt *ins, *upd, *daily, *full;
    /* writer thread only: pairing a batch's begins with their completions,
     * and the batch's charges summed per team and day */
    struct op *pair_tab[PAIR_SLOTS];
    size_t pair_used[BATCH_MAX];
    struct { const char *team; int64_t day; nanos_t nanos; } sums[DAILY_MAX];
    size_t n_sums;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct op *head, *tail;
    size_t backlog;
    int stopping;
    int64_t stop_deadline_ms;
    atomic_int failing;               /* the last commit failed */
    atomic_llong write_errors;        /* failed commit attempts */
    /* what the last recovery charged as interrupted, by team and model */
    struct ledger_recovered *recovered;
    size_t n_recovered;
    atomic_int jfail;                 /* the last journal write failed */
    /* Begin journal beside the database (NULL for ":memory:"). A begin is
     * journaled before the request goes upstream; the writer inserts its
     * inflight row later and then marks it done in the journal. */
    journal_t *journal;
};

/* Stops taking begins, lets the writer flush the queue (retrying failed
 * completions until timeout_ms has passed), joins it (or, if it never
 * started, commits the queue once here), then reports and drops whatever is
 * still queued, calling each done with ok = 0. The ledger's queue is empty
 * afterwards; the database is left open. */
void ledger_writer_stop(ledger_t *l, int timeout_ms);

#endif
