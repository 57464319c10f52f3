/* alertsend: the delivery schedule of alert events (part of the alerts
 * module, on the alert thread). Holds the events still to be delivered,
 * POSTs each when it is due (webhook.h), retries a failure after 1 s, 2 s,
 * 4 s … at most 5 min apart for 24 h (alertcore_next_attempt), records each
 * attempt's outcome in the ledger (ledger_alert_update) and counts it in
 * the metrics (events_alert). One thread at a time (the alert thread's);
 * knows nothing of detection. */
#ifndef PINMETER_ALERTSEND_H
#define PINMETER_ALERTSEND_H
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "app.h"
#include "ledger_alert.h"

typedef struct alertsend alertsend_t;   /* opaque */

/* A schedule that delivers through store (borrowed) with the signing
 * secret (NULL or "": unsigned; copied). stop, when it becomes non-zero,
 * cuts an attempt in progress (it stays pending). NULL when out of memory. */
alertsend_t *alertsend_new(app_t *app, ledger_alerts_t *store, const char *secret,
                           const atomic_int *stop);
/* NULL is fine; pending events are dropped here (the ledger keeps them). */
void alertsend_free(alertsend_t *s);
/* The retry schedule: the first wait, the longest, and when to give up
 * after the first attempt (ms). Shipped: 1 s, 5 min, 24 h. */
void alertsend_schedule(alertsend_t *s, int64_t base_ms, int64_t cap_ms, int64_t giveup_ms);

/* Queues event id (its body payload: ownership taken, freed with free())
 * after attempts already made, first attempted (or detected) at first_ms,
 * next due at next_ms (unix ms). Out of memory: logged and dropped (the
 * ledger keeps it pending; it resumes at the next start). */
void alertsend_add(alertsend_t *s, const char *id, const char *event, char *payload,
                   int attempts, int64_t first_ms, int64_t next_ms);
/* Attempts every event that is due now, until stop is set. */
void alertsend_due(alertsend_t *s);
/* The earliest next attempt, or before when that is later. */
int64_t alertsend_next(const alertsend_t *s, int64_t before);
/* Events waiting for delivery. */
size_t alertsend_pending(const alertsend_t *s);

#endif
