/* guard: the top-up guard. Account sync (account.c) tells it of every
 * top-up it detects (a sync whose total rose); with "account":
 * {"max_topups_per_day": N}, once more than N top-ups fall within 24 h it
 * refuses new requests (402, scope account, reason topup_limit) until the
 * top-up whose ageing brings the count back to N is 24 h old — the oldest
 * of them, for N + 1 — or until an admin calls POST
 * /v0/credits/topup/guard/reset, which also forgets the top-ups counted so
 * far. The top-ups, the trips and the resets are account_events rows, so
 * the guard holds across a restart; with the Redis budget store a trip and
 * a reset are shared with every instance of the fleet (src/lua/guard.lua),
 * each instance learning of them at its next sync (account.sync_s). A trip
 * sends the alert event topup_limit. Refusal checks do no I/O. */
#ifndef PINMETER_GUARD_H
#define PINMETER_GUARD_H
#include <stddef.h>
#include <stdint.h>
#include "app.h"
#include "ledger_account.h"
#include "req.h"

typedef struct guard guard_t;          /* opaque; any thread */

/* Why new requests are refused. */
typedef struct guard_why {
    int topups;                        /* top-ups counted within 24 h */
    int max;                           /* account.max_topups_per_day */
    int64_t until_ms;                  /* when it lifts by itself */
    int fleet;                         /* another instance of the fleet tripped it */
} guard_why_t;

/* A guard over store (borrowed until guard_free): the top-ups counted since
 * the last reset and within 24 h, and a trip still running, are loaded
 * from the ledger. NULL with err. */
guard_t *guard_new(app_t *app, ledger_account_t *store, char *err, size_t errlen);
/* NULL is fine. */
void guard_free(guard_t *g);

/* A top-up detected at at_ms (its account_events row already written):
 * counted, and the guard evaluated (a new trip is recorded, logged and
 * alerted). Returns the top-ups within the 24 h now. Account thread. */
int guard_topup(guard_t *g, int64_t at_ms);
/* After every sync: the guard evaluated at now_ms (trips ending, a lowered
 * max), and with the Redis store shared with the fleet (a Redis call: off
 * the loop). Account thread. */
void guard_tick(guard_t *g, int64_t now_ms);

/* 1 when new requests must be refused at now_ms, with *why; else 0. No
 * I/O (a short mutex): the request path calls it. */
int guard_refuses(guard_t *g, int64_t now_ms, guard_why_t *why);
/* The 402 body for w, the caller's team named (malloc'd JSON). */
char *guard_refusal_body(const guard_why_t *w, const char *team);

/* POST /v0/credits/topup/guard/reset (admin; a job): forgets the top-ups
 * counted, lifts a trip, records the reset (and shares it with the fleet).
 * {"reset": true, "topups_forgotten": N, "was_refusing": bool}. */
enum MHD_Result guard_reset_serve(req_t *r, struct MHD_Connection *c);

#endif
