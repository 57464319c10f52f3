/* ledger: the SQLite (WAL) record of every admitted request, one row each,
 * the per-team daily spend and the per-hour usage rollup it sums to, and the
 * reads over them (the report's groups, the request log). Writes go through
 * one writer thread that commits in groups; callers hand over records and get
 * a callback once the record is in the file (durable against process death;
 * no fsync on this path: synchronous=NORMAL). Reads made while the writer
 * runs go through a read connection of their own and never wait on it. Only
 * this module includes sqlite3.h. */
#ifndef PINMETER_LEDGER_H
#define PINMETER_LEDGER_H
#include <stdint.h>
#include <stddef.h>
#include "money.h"

typedef enum {
    LEDGER_INFLIGHT = 0, LEDGER_SETTLED, LEDGER_ESTIMATED, LEDGER_FAILED,
    LEDGER_INTERRUPTED
} ledger_state_t;

#define LEDGER_ID_MAX 48

typedef struct ledger_rec {
    char id[LEDGER_ID_MAX];       /* pinmeter's request id */
    int64_t started_ms, ended_ms; /* unix ms */
    char team[64];
    char key_id[64];
    char model[256];
    int stream;
    int status;                   /* HTTP status given to the client */
    int64_t prompt, completion, cached;
    nanos_t reserved, charged;
    ledger_state_t state;
    char upstream_id[128];
    int64_t latency_ms;
    /* the prices the request was admitted at, fixed at admission, in
     * nano-credits per 1M tokens (written by its begin); -1 = not known */
    nanos_t price_input, price_output, price_cache_read;
} ledger_rec_t;

typedef struct ledger ledger_t;   /* opaque */

/* Called on the writer thread once a record's write committed (ok = 1) or
 * failed (ok = 0). Must not block. */
typedef void (*ledger_done_fn)(void *ud, int ok);

/* Opens (creating if needed) the ledger at path; ":memory:" works. Creates
 * the parent directory if missing. NULL + reason in err on failure. */
ledger_t *ledger_open(const char *path, char *err, size_t errlen);

/* Opens an existing ledger for reading only (`pinmeter report`): no schema
 * change, no begin journal, nothing written, so a running server's files
 * are left as they are. NULL + reason in err when it is missing or not a
 * ledger. Only the reads (report, request log) and ledger_close apply. */
ledger_t *ledger_open_ro(const char *path, char *err, size_t errlen);

/* Turns leftover inflight rows, and journaled begins with no row, into
 * interrupted rows charged at their reservation, then empties the journal.
 * Call before ledger_writer_start. Returns rows changed, or -1. */
int64_t ledger_recover(ledger_t *l, int64_t now_ms);

/* The ledger's instance id (kept in its meta table; fresh is stored the
 * first time). The shared budget store counts each ledger's share under it.
 * Only before ledger_writer_start. 0 or -1. */
int ledger_instance_id(ledger_t *l, const char *fresh, char *out, size_t outlen);

/* Sum of charges for team in requests started on or after unix day
 * since_day (days since 1970-01-01, UTC). 0 or -1. Uses the daily table: no
 * scan of the requests. Thread-safe; once the writer runs it reads through a
 * second connection (so for ":memory:" only before ledger_writer_start). The
 * reads below (report, request log) share that connection, one at a time. */
int ledger_spent_since(ledger_t *l, const char *team, int64_t since_day, nanos_t *out);
/* What key key_id of team charged in requests started at or after since_s
 * (unix s, on an hour), from the hourly rollup. 0 or -1; like
 * ledger_spent_since it reads through the read connection. */
int ledger_key_spent_since(ledger_t *l, const char *team, const char *key_id, int64_t since_s,
                           nanos_t *out);

/* Starts the writer thread. 0 or -1. */
int ledger_writer_start(ledger_t *l);

/* Queues a copy of rec: state INFLIGHT inserts the row, any other state
 * completes it (and adds its charge to the daily table). done may be NULL.
 * A failed completion is kept and retried until it commits. 0 or -1 (the
 * ledger is closing; done is not called). */
int ledger_submit(ledger_t *l, const ledger_rec_t *rec, ledger_done_fn done, void *ud);

/* 1 while the writer's last commit failed (disk full, read-only file). */
int ledger_failing(ledger_t *l);

/* Records an admitted request before it goes upstream: one write() of a
 * line to the begin journal beside the database (durable against process
 * death; no fsync, no wait for the writer thread), then the inflight row is
 * queued for the writer. A journaled begin whose row never reached the
 * database is inserted as interrupted by the next ledger_recover. Returns 0,
 * or -1 (nothing recorded: refuse the request) when the ledger is failing,
 * the journal cannot be written, or the ledger is closing. */
int ledger_begin(ledger_t *l, const ledger_rec_t *rec);

/* Records waiting for the writer (for health/metrics). */
size_t ledger_backlog(ledger_t *l);
/* Commit attempts that failed since the ledger was opened (a failed group
 * is retried record by record: each attempt counts). Any thread. */
int64_t ledger_write_errors(ledger_t *l);

/* What the last ledger_recover charged as interrupted, by team, key and
 * model: fn(ud, team, key_id, model, rows, nanos) per group (strings
 * borrowed for the call). Main thread, after ledger_recover. */
typedef void (*ledger_recovered_fn)(void *ud, const char *team, const char *key_id,
                                    const char *model, int64_t rows, nanos_t nanos);
void ledger_recovered(ledger_t *l, ledger_recovered_fn fn, void *ud);

/* Flushes queued records (bounded by timeout_ms for retries), stops the
 * writer and closes the database. */
void ledger_close(ledger_t *l, int timeout_ms);

/* Report grouping flags. */
enum { LEDGER_BY_TEAM = 1, LEDGER_BY_KEY = 2, LEDGER_BY_MODEL = 4, LEDGER_BY_DAY = 8,
       LEDGER_BY_HOUR = 16,
       LEDGER_BY_PRICE = 32 };   /* the price set rows were charged at (the three prices) */

/* What a report reads: rows started in [since_ms, until_ms), optionally only
 * one team, key id or model (NULL = any; borrowed for the call), grouped by
 * the LEDGER_BY_* flags in by. */
typedef struct ledger_query {
    int64_t since_ms, until_ms;
    int by;
    const char *team, *key, *model;
} ledger_query_t;

typedef struct ledger_group {
    const char *team, *key, *model;         /* NULL when not grouped by it */
    const char *day, *hour;                 /* "YYYY-MM-DD", "YYYY-MM-DDTHH:00:00Z"; NULL likewise */
    int64_t requests, prompt, completion, cached;
    nanos_t credits;
    /* with LEDGER_BY_PRICE: the per-1M prices (nanos) of the group's rows,
     * -1 for rows from before prices were recorded; else 0 */
    nanos_t price_input, price_output, price_cache_read;
} ledger_group_t;

/* Called per group in sorted order; strings are valid during the call.
 * Non-zero stops the report. */
typedef int (*ledger_group_fn)(void *ud, const ledger_group_t *g);

/* Groups as q says and calls fn per group in sorted order (the group
 * columns in the order team, key, model, day, hour, price set; an ungrouped
 * report with no rows calls it never). Whole hours come from the hourly
 * rollup and the partial first and last hours from the requests, so any
 * range costs about the same; the figures equal a GROUP BY over the requests
 * to the nano-credit. 0, -1 on a database error (reason in err). */
int ledger_report(ledger_t *l, const ledger_query_t *q, ledger_group_fn fn, void *ud,
                  char *err, size_t errlen);

/* A page of the request log: rows started in [since_ms, until_ms) matching
 * the filters (NULL = any; borrowed for the call), newest first by
 * (started_ms, id), at most limit of them, and with has_after only those
 * strictly after (after_ms, after_id) in that order. A page reads at most
 * scan_max rows (0: LEDGER_LOG_SCAN_MAX) through the index of its most
 * selective filter and checks the other filters on each, so that however
 * few rows match, a page costs a bounded amount of reading. */
#define LEDGER_LOG_SCAN_MAX 5000
typedef struct ledger_log_query {
    int64_t since_ms, until_ms;
    const char *team, *key, *model, *state;
    int limit;
    int has_after;
    int64_t after_ms;
    const char *after_id;
    int scan_max;
} ledger_log_query_t;

/* Where the next page starts: more = 0 at the end of the log; else the
 * page's last position (a row returned, or only read) for the next
 * has_after. A page that stopped at scan_max may hold fewer than limit rows,
 * even none, with more = 1. */
typedef struct ledger_log_next {
    int more;
    int64_t after_ms;
    char after_id[LEDGER_ID_MAX];
} ledger_log_next_t;

/* One request-log row as stored; strings valid during the callback. */
typedef struct ledger_row {
    const char *id, *team, *key_id, *model, *state;
    const char *upstream_id;                /* NULL when none */
    int64_t started_ms;
    int64_t ended_ms;                       /* -1 while in flight */
    int stream;
    int status;                             /* -1 while in flight */
    int64_t prompt, completion, cached;
    nanos_t reserved, charged;
    int64_t latency_ms;                     /* -1 when not recorded */
    nanos_t price_input, price_output, price_cache_read;   /* per 1M tokens; -1 = not recorded */
} ledger_row_t;

/* Called per row in order; non-zero stops. */
typedef int (*ledger_row_fn)(void *ud, const ledger_row_t *row);

/* Calls fn for each row of the page q asks for, and says in *next where the
 * next page starts. 0, -1 on a database error (reason in err). */
int ledger_log(ledger_t *l, const ledger_log_query_t *q, ledger_row_fn fn, void *ud,
               ledger_log_next_t *next, char *err, size_t errlen);

/* Calls fn for the row whose id is id. 1 found, 0 no such row, -1 on a
 * database error (reason in err). */
int ledger_lookup(ledger_t *l, const char *id, ledger_row_fn fn, void *ud,
                  char *err, size_t errlen);

const char *ledger_state_name(ledger_state_t s);
/* The state named s, or -1 for a name that is none of them. */
int ledger_state_parse(const char *s);

#endif
