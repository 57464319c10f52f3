/* ledger_account: what the ledger keeps of the Pinata account (part of the
 * ledger module; tables created by ledger_account_open):
 *   account_syncs   every successful balance read: at_ms, total_nanos,
 *                   loaned_nanos, available_nanos, and charged_nanos (what
 *                   this process charged since the previous sync, per its
 *                   budget; NULL when unknown, e.g. across a restart);
 *   account_events  at_ms, kind ('topup': credits_nanos added, total_nanos
 *                   and prev_total_nanos the totals around it; 'topup_limit':
 *                   the guard tripped; 'guard_reset': an admin reset it, so
 *                   the top-ups before it no longer count), detail;
 *   topup_changes   every change of the auto top-up settings Pinata
 *                   accepted: at_ms, old (Pinata's answer before, or NULL),
 *                   new (the settings sent), via ('api' or 'cli').
 * Writes go through an account store, a connection of its own on the ledger
 * file (like the alert store): rare, short transactions from the account
 * thread and jobs, which SQLite serialises with the request writer's group
 * commits. Reads for reconciliation go through the ledger's read
 * connection (or, on a ledger opened read-only, its only one); a ledger
 * without these tables reads as having none of their rows. */
#ifndef PINMETER_LEDGER_ACCOUNT_H
#define PINMETER_LEDGER_ACCOUNT_H
#include <stddef.h>
#include <stdint.h>
#include "ledger.h"

typedef struct ledger_sync {
    int64_t at_ms;
    nanos_t total, loaned, available;
    int charged_known;             /* charged is known (else NULL in the table) */
    nanos_t charged;
} ledger_sync_t;

#define LEDGER_EV_TOPUP "topup"
#define LEDGER_EV_TOPUP_LIMIT "topup_limit"
#define LEDGER_EV_GUARD_RESET "guard_reset"

/* One account event; in callbacks the strings are borrowed for the call. */
typedef struct ledger_account_event {
    int64_t at_ms;
    const char *kind;              /* LEDGER_EV_* */
    nanos_t credits;               /* topup: credits added */
    nanos_t total, prev_total;     /* topup: the synced totals after and before */
    const char *detail;            /* NULL: none */
} ledger_account_event_t;

typedef struct ledger_account ledger_account_t;   /* opaque: the account store; any thread */

/* Opens the account store on l's file (for ":memory:", l's own
 * connection) and creates its tables if missing. Call after ledger_recover.
 * NULL with a reason in err. */
ledger_account_t *ledger_account_open(ledger_t *l, char *err, size_t errlen);
/* NULL is fine. */
void ledger_account_close(ledger_account_t *a);

/* Records a sync and, when ev is not NULL, an event in the same
 * transaction (copies both). 0 or -1 (nothing recorded). */
int ledger_account_add_sync(ledger_account_t *a, const ledger_sync_t *s, const ledger_account_event_t *ev);
/* Records an event. 0 or -1. */
int ledger_account_add_event(ledger_account_t *a, const ledger_account_event_t *ev);
/* The last sync recorded: 1 with *out, 0 none yet, -1 error. */
int ledger_account_last_sync(ledger_account_t *a, ledger_sync_t *out);
/* Records a change of the top-up settings. 0 or -1. */
int ledger_account_topup_change(ledger_account_t *a, int64_t at_ms, const char *old_json,
                             const char *new_json, const char *via);
/* The same into the ledger file at path, for the command line: a short
 * connection of its own (the file must exist; the table is created if
 * missing), safe beside a running server. 0, or -1 with err. */
int ledger_account_topup_change_at(const char *path, int64_t at_ms, const char *old_json,
                                const char *new_json, const char *via, char *err,
                                size_t errlen);

typedef int (*ledger_sync_fn)(void *ud, const ledger_sync_t *s);
typedef int (*ledger_account_event_fn)(void *ud, const ledger_account_event_t *e);
/* fn returning non-zero stops the walk (not an error). */

/* The syncs with at_ms in [since_ms, until_ms), oldest first, preceded by
 * the last one before since_ms when there is one (the start of the first
 * interval). Through the read connection. 0, or -1 with err. */
int ledger_account_read_syncs(ledger_t *l, int64_t since_ms, int64_t until_ms, ledger_sync_fn fn,
                           void *ud, char *err, size_t errlen);
/* The events with at_ms in [since_ms, until_ms), oldest first; kind NULL
 * for all. Through the read connection. 0, or -1 with err. */
int ledger_account_read_events(ledger_t *l, int64_t since_ms, int64_t until_ms, const char *kind,
                            ledger_account_event_fn fn, void *ud, char *err, size_t errlen);

/* Every charge (a request's charged_nanos, when not 0) settled in
 * (after_ms, upto_ms]: fn(ud, ended_ms, charged). A request is read through
 * the start-time index, so it must have started at most lookback_ms before
 * after_ms — true of every request that ran normally when lookback_ms is at
 * least the upstream timeout — except interrupted ones (charged at the
 * restart that found them), which are read whatever their start.
 * Through the read connection. 0, or -1 with err. */
typedef int (*ledger_charge_fn)(void *ud, int64_t ended_ms, nanos_t charged);
int ledger_account_read_charges(ledger_t *l, int64_t after_ms, int64_t upto_ms,
                             int64_t lookback_ms, ledger_charge_fn fn, void *ud, char *err,
                             size_t errlen);

#endif
