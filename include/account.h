/* account: periodic sync of Pinata's balance (GET /v0/credits/balance with
 * the account JWT) into the budget's account projection; every sync is
 * recorded (ledger_account.h), a rise of the total is a top-up (told to the
 * guard, guard.h, and the alerts), and the intervals between syncs give the
 * drift gauge. */
#ifndef PINMETER_ACCOUNT_H
#define PINMETER_ACCOUNT_H
#include "app.h"

/* Reads the balance once (before anything is served), then every sync_s on
 * a thread of its own. jwt is copied. NULL on failure. */
struct account *account_start(app_t *app, const char *jwt);
/* The available credits Pinata reported at the last successful sync and
 * when (unix ms): 0, or -1 when no sync has succeeded yet. Any thread;
 * never waits on a sync in progress. */
int account_last_sync(struct account *a, nanos_t *available, int64_t *at_ms);
/* The drift over the last hour: Pinata's spend minus what this process
 * charged, summed over the sync intervals that ended in the last hour
 * (acctcore_window_drift). 0, or -1 before the first sync. Any thread. */
int account_drift(struct account *a, nanos_t *drift);
/* Stops the thread and frees; NULL is a no-op. */
void account_stop(struct account *a);

#endif
