/* budget: the budget store behind which reservations are made. Today it is
 * the in-process book behind a mutex; the interface is small (reserve,
 * settle, release, views) so a shared store (Redis) can implement it too.
 * Thread-safe: every call may come from any thread. */
#ifndef PINMETER_BUDGET_H
#define PINMETER_BUDGET_H
#include "book.h"

typedef struct budget budget_t;  /* opaque */

/* In-process store for n_teams teams; NULL on OOM. Free with budget_free. */
budget_t *budget_local_new(size_t n_teams);
void budget_free(budget_t *bg);
/* Makes room for n teams. 0 or -1. */
int budget_grow(budget_t *bg, size_t n);

void budget_team_set(budget_t *bg, int team, nanos_t cap, period_t period);
void budget_team_seed(budget_t *bg, int team, int64_t period_start, nanos_t spent);
/* budget_team_set then budget_team_seed as one step (no reserve between). */
void budget_team_reset(budget_t *bg, int team, nanos_t cap, period_t period,
                       int64_t period_start, nanos_t spent);

int budget_reserve(budget_t *bg, int team, nanos_t amount, int64_t now,
                   book_hold_t *hold, book_refusal_t *why);
void budget_settle(budget_t *bg, const book_hold_t *hold, nanos_t charge, int64_t now);
void budget_release(budget_t *bg, const book_hold_t *hold);
void budget_team_view(budget_t *bg, int team, int64_t now, book_view_t *out);

void budget_account_sync(budget_t *bg, nanos_t total, nanos_t available);
void budget_account_exhausted(budget_t *bg);
/* Returns 0 with *out filled, or -1 when the account projection is off. */
int budget_account_view(budget_t *bg, book_view_t *out);

#endif
