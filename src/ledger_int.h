/* ledger_int.h: private to the ledger module (src/ledger.c,
 * src/ledger_writer.c, src/ledger_query.c, src/ledger_migrate.c, and the
 * tables of their own: ledger_alert.c, ledger_rates.c); nothing else
 * includes it. It holds struct ledger, which they share, and the calls
 * between them. The layering runs one way: ledger_query.c (the report and
 * the request log) calls into ledger.c (open, schema, recovery, the read
 * connection, close), which calls into ledger_migrate.c (what an older
 * ledger gains) and ledger_writer.c (the queue, the writer thread, group
 * commit, the rollup upsert); those two call nothing in the others. */
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
#define HOURLY_SLOTS 1024             /* (hour, team, key, model) sums: open addressing, */
#define HOURLY_MAX (HOURLY_SLOTS / 2) /* ...flushed when half full */

struct op;                            /* a queued record (ledger_writer.c) */

/* A batch's usage summed per hour, team, key, model and price set (strings
 * point into the batch's records); one usage_hourly upsert each. */
struct hour_sum {
    const char *team, *key, *model;   /* NULL: a free slot */
    int64_t hour;
    nanos_t price[3];                 /* input, output, cache_read per 1M; -1 = not recorded */
    int64_t requests, prompt, completion, cached;
    nanos_t nanos;
};

struct ledger {
    sqlite3 *db;
    sqlite3 *rdb;                     /* reads while the writer runs (own connection) */
    pthread_mutex_t rmu;
    char path[1024];
    sqlite3_stmt *ins, *upd, *daily, *full, *hourly;
    int ro;                           /* opened by ledger_open_ro: reads only */
    int has_rollup;                   /* usage_hourly is there (and kept) */
    int req_prices;                   /* requests has the price columns */
    int rollup_prices;                /* ...and so does usage_hourly (keyed by them) */
    /* writer thread only: pairing a batch's begins with their completions,
     * and the batch's charges summed per team and day */
    struct op *pair_tab[PAIR_SLOTS];
    size_t pair_used[BATCH_MAX];
    struct { const char *team; int64_t day; nanos_t nanos; } sums[DAILY_MAX];
    size_t n_sums;
    struct hour_sum hsums[HOURLY_SLOTS];
    size_t hused[HOURLY_MAX];         /* the slots in use, in order */
    size_t n_hsums;
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

/* The connection reads use: the read connection once the writer runs on a
 * file (opened here the first time), else the main one. Call with l->rmu
 * held, and keep it until the read is done. NULL if it cannot be opened. */
sqlite3 *ledger_reader_locked(ledger_t *l);

/* Upserts one hour's usage into usage_hourly with l->hourly (inside the
 * caller's transaction). 0 or -1. */
int ledger_hourly_add(ledger_t *l, const struct hour_sum *h);

/* 1 if db's schema has an object named name, 0 if not, -1 on error. */
int ledger_has_object(sqlite3 *db, const char *name);
/* 1 if table has a column named col, 0 if not (or no such table), -1 on error. */
int ledger_has_column(sqlite3 *db, const char *table, const char *col);

/* A price for a price column: NULL when not known (< 0). */
static inline void ledger_bind_price(sqlite3_stmt *st, int i, nanos_t v)
{
    if (v >= 0) sqlite3_bind_int64(st, i, v);
    else sqlite3_bind_null(st, i);
}

/* Gives a ledger what this version adds to the schema, building it from the
 * rows already there when they are many: the requests' price columns,
 * usage_hourly (keyed by the price set too), the request log's indexes and
 * the rate_changes table. Sets l->has_rollup, l->req_prices and
 * l->rollup_prices. Called by ledger_open after the base schema,
 * before the statements are prepared. 0, or -1 with err. */
int ledger_migrate(ledger_t *l, char *err, size_t errlen);

#endif
