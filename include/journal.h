/* journal: the ledger's begin journal, two append-only segments
 * `<db>-begins.0` and `<db>-begins.1` beside the database. A begin is one
 * write() of one tab-separated line to the active segment (durable against
 * process death, no fsync) before its request goes upstream; the database row
 * follows later. The journal counts, per segment, the begins whose rows are
 * not yet committed, and reuses a segment only once that count is zero. It
 * knows nothing of SQLite or of the ledger: recovery reads it back through a
 * callback. Thread-safe (one mutex inside). */
#ifndef PINMETER_JOURNAL_H
#define PINMETER_JOURNAL_H
#include <stddef.h>
#include <stdint.h>

typedef struct journal journal_t;   /* opaque */

/* One journaled begin. Strings are borrowed: by journal_append for the
 * call, and handed to a journal_replay_fn valid only during the call. */
typedef struct journal_begin {
    const char *id;
    int64_t started_ms;
    const char *team, *key_id, *model;
    int stream;
    int64_t reserved;               /* nano-credits */
    /* the prices it was admitted at, nano-credits per 1M tokens; -1 = not
     * known (a line written before prices were journaled) */
    int64_t price_input, price_output, price_cache_read;
} journal_begin_t;

/* Called by journal_replay for each complete line, oldest segment first.
 * 0 to go on, -1 to stop (journal_replay then returns -1). */
typedef int (*journal_replay_fn)(void *ud, const journal_begin_t *b);

/* Opens (creating if needed) the two segments beside db_path, positioned at
 * their ends. NULL + "SEGMENT: cannot open the begin journal: why" in err on
 * failure (nothing left open). Free with journal_close. */
journal_t *journal_open(const char *db_path, char *err, size_t errlen);

/* Appends b as one line to the active segment, first switching to the other
 * segment (emptied) when the active one is past its size and the other has
 * no open begins. Returns the segment written (0 or 1) with its open count
 * raised, or -1 if the write failed or was short (a partial line is cut off
 * again; while it cannot be, the segment refuses appends). */
int journal_append(journal_t *j, const journal_begin_t *b);

/* A begin appended to seg has its row committed: lowers seg's open count. */
void journal_done(journal_t *j, int seg);

/* 0 if the active segment accepts a zero-length write (open and writable;
 * says nothing about free space), else -1. */
int journal_probe(journal_t *j);

/* Calls fn for each complete begin line in both segments; a torn last line
 * ends a segment, malformed lines are skipped. 0, or -1 if fn stopped it. */
int journal_replay(journal_t *j, journal_replay_fn fn, void *ud);

/* Empties both segments and zeroes their counts (every begin has its row).
 * 0, or -1 if a segment could not be truncated. */
int journal_reset(journal_t *j);

/* Closes the segments, first emptying each one with no open begins (a clean
 * stop has every begin in the database); frees j. NULL is a no-op. */
void journal_close(journal_t *j);

#endif
