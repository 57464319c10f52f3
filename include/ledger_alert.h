/* ledger_alert: the alert events kept in the ledger (part of the ledger
 * module; table `alerts` in ledger.c's schema). An event is recorded here
 * before its first delivery attempt — INSERT OR IGNORE by id is what makes
 * each event fire once across restarts and crashes — then each attempt
 * updates its state, so pending deliveries resume after a restart.
 *
 * Writes go through an alert store: a connection of its own on the ledger
 * file, used by one thread (the alert thread), in short autocommit
 * transactions. They are rare (a few per team and period), so they do not
 * go through the request writer's queue; SQLite serialises them with the
 * writer's group commits (both connections wait up to 5 s on the lock).
 * The listing reads through the ledger's read connection. */
#ifndef PINMETER_LEDGER_ALERT_H
#define PINMETER_LEDGER_ALERT_H
#include <stddef.h>
#include <stdint.h>
#include "ledger.h"

typedef enum { LEDGER_ALERT_PENDING = 0, LEDGER_ALERT_DELIVERED, LEDGER_ALERT_FAILED }
    ledger_alert_state_t;

/* One event. In callbacks every pointer is borrowed for the call. */
typedef struct ledger_alert {
    const char *id;
    const char *event;
    const char *team;              /* NULL for account events */
    int64_t at_ms;                 /* detected; delivery gives up 24 h after */
    ledger_alert_state_t state;
    int attempts;
    const char *last_error;        /* NULL: none yet */
    int64_t next_ms;               /* next attempt (pending) */
    const char *payload;           /* the body POSTed, exactly */
} ledger_alert_t;

typedef struct ledger_alerts ledger_alerts_t;   /* opaque: the alert store */

/* Opens the alert store on l's file (for ":memory:", l's own connection).
 * Call after ledger_recover. NULL with a reason in err. */
ledger_alerts_t *ledger_alerts_open(ledger_t *l, char *err, size_t errlen);
/* NULL is fine. */
void ledger_alerts_close(ledger_alerts_t *a);

/* Records a new event, state pending (copies a). When meta_key is not NULL,
 * sets meta(meta_key) = meta_value in the same transaction. 1 recorded, 0
 * an event with this id was already there (nothing changed), -1 error. */
int ledger_alert_add(ledger_alerts_t *a, const ledger_alert_t *al, const char *meta_key,
                     const char *meta_value);
/* The outcome of an attempt: state, attempts, last_error (NULL keeps the
 * one recorded), next attempt. 0 or -1. */
int ledger_alert_update(ledger_alerts_t *a, const char *id, ledger_alert_state_t state,
                        int attempts, const char *last_error, int64_t next_ms);

typedef int (*ledger_alert_fn)(void *ud, const ledger_alert_t *al);
/* Calls fn for every event (pending = 1: only the pending ones, oldest
 * first; else all, ids only matter), on the store's connection; fn
 * returning non-zero stops. 0 or -1. */
int ledger_alert_each(ledger_alerts_t *a, int pending, ledger_alert_fn fn, void *ud);

/* meta(key) into out ("" when absent). 0 or -1. */
int ledger_alert_meta_get(ledger_alerts_t *a, const char *key, char *out, size_t outlen);
int ledger_alert_meta_set(ledger_alerts_t *a, const char *key, const char *value);

/* The events detected at or after since_ms, newest first, at most limit,
 * through the ledger's read connection (any thread). 0, or -1 with err. */
int ledger_alert_list(ledger_t *l, int64_t since_ms, int limit, ledger_alert_fn fn, void *ud,
                      char *err, size_t errlen);

/* The instance id kept in the ledger file at path, read-only (for the
 * command line, which must not open a ledger a server may be using). 0, or
 * -1 (no such file or no id yet). */
int ledger_alert_peek_instance(const char *path, char *out, size_t outlen);

const char *ledger_alert_state_name(ledger_alert_state_t s);

#endif
