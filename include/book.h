/* book: the in-process budget book. Pure arithmetic over teams' spent and
 * loaned nano-credits per calendar period, plus the account projection. It
 * reads no clock (callers pass now, unix seconds) and takes no locks (the
 * budget module serialises access). */
#ifndef PINMETER_BOOK_H
#define PINMETER_BOOK_H
#include <stdint.h>
#include <stddef.h>
#include "money.h"
#include "config.h"

typedef struct book book_t;   /* opaque */

/* A reservation in flight. Filled by book_reserve; pass back exactly once to
 * book_settle or book_release. */
typedef struct book_hold {
    int team;
    nanos_t amount;
    int64_t period_start;     /* period the hold (and its charge) belongs to */
} book_hold_t;

enum { BOOK_SCOPE_TEAM = 1, BOOK_SCOPE_ACCOUNT = 2, BOOK_SCOPE_KEY = 3 };

/* Why a reservation was refused, in nanos, for the 402 body. */
typedef struct book_refusal {
    int scope;                /* BOOK_SCOPE_* */
    nanos_t cap, spent, loaned, available, required;
    int retry;                /* 1 when holds in flight would free enough */
} book_refusal_t;

/* A team's figures for the period containing now. cap < 0: no cap. */
typedef struct book_view {
    nanos_t cap, spent, loaned, available;
} book_view_t;

/* New book for n_teams teams, all uncapped with no period; NULL on OOM. */
book_t *book_new(size_t n_teams);
void book_free(book_t *b);
/* Grows the book to n teams (new ones uncapped). 0, or -1 on OOM (unchanged). */
int book_grow(book_t *b, size_t n);

/* Sets a team's cap (< 0 = none) and period; keeps its figures. */
void book_team_set(book_t *b, int team, nanos_t cap, period_t period);

/* Sets what the team had already spent in the period starting at
 * period_start (rebuilt from the ledger at start). */
void book_team_seed(book_t *b, int team, int64_t period_start, nanos_t spent);

/* Start (unix s, UTC) of the period containing now: day, ISO week from
 * Monday, calendar month; 0 for PERIOD_NONE. */
int64_t book_period_start(period_t p, int64_t now);
/* End (unix s, UTC, exclusive: the next period's start) of the period
 * containing now; 0 for PERIOD_NONE. */
int64_t book_period_end(period_t p, int64_t now);

/* Admits amount for team if it fits both the team's available and, when the
 * account projection is on, the account's projected available. Returns 0 and
 * fills *hold, or -1 and fills *why (state unchanged). */
int book_reserve(book_t *b, int team, nanos_t amount, int64_t now,
                 book_hold_t *hold, book_refusal_t *why);

/* Ends a hold with its actual charge (>= 0). */
void book_settle(book_t *b, const book_hold_t *hold, nanos_t charge, int64_t now);
/* Ends a hold charging nothing. */
void book_release(book_t *b, const book_hold_t *hold);

void book_team_view(book_t *b, int team, int64_t now, book_view_t *out);

/* Account projection: synced available from Pinata's balance minus what was
 * charged since that sync minus everything loaned. */
void book_account_sync(book_t *b, nanos_t total, nanos_t available);
void book_account_exhausted(book_t *b);      /* upstream said 402 */
int book_account_enabled(const book_t *b);
/* total = synced total minus what was charged since; loaned = all of
 * pinmeter's holds; available = projected (synced available - charged since
 * - loaned). In a refusal of scope account, cap is the synced total and
 * spent what was charged since the sync. */
void book_account_view(book_t *b, book_view_t *out);

#endif
