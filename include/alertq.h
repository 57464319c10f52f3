/* alertq: the inbox between the request path's hooks (events.c) and the
 * alert thread (alerts.c). A hook only marks what the thread must look at —
 * "check team T", "team T was refused for its cap", "check the account" —
 * under a short mutex, coalescing repeats, and wakes the thread; it never
 * blocks on I/O. The thread takes everything marked in one step. Any
 * thread may call the hooks. */
#ifndef PINMETER_ALERTQ_H
#define PINMETER_ALERTQ_H
#include <stddef.h>
#include <stdint.h>
#include "book.h"

typedef struct alertq alertq_t;        /* opaque */

/* What one team slot has waiting. */
typedef struct alertq_team {
    char name[64];
    int check;                         /* spend changed: compare with the thresholds */
    int refused;                       /* a 402 of scope team since the last take */
    int64_t refused_at_s;              /* the first of them: when, and its figures */
    book_refusal_t why;
} alertq_team_t;

/* A runaway guard's refusal that began an episode (until the subject is
 * admitted again). */
typedef struct alertq_runaway {
    int slot;                          /* the team's slot */
    char team[64], key[64];            /* key "" for a team limit */
    int hour;                          /* the window: 0 minute, 1 hour */
    nanos_t spent_in_window, limit;
    int64_t at_ms;
} alertq_runaway_t;

#define ALERTQ_RUNAWAY_MAX 64          /* episodes begun between two takes, at most */

/* An account event for an alert (from the account thread, or the guard). */
enum { ALERTQ_TOPUP = 1, ALERTQ_TOPUP_LIMIT = 2 };
typedef struct alertq_acct {
    int kind;                          /* ALERTQ_TOPUP (topup_detected), ALERTQ_TOPUP_LIMIT */
    int64_t at_ms;                     /* the top-up's sync; for a limit, the top-up that tripped it */
    nanos_t added, total, prev_total;  /* ALERTQ_TOPUP: credits added, the totals after and before */
    int topups;                        /* top-ups within the last 24 h */
    int max;                           /* account.max_topups_per_day; -1 none */
    int64_t until_ms;                  /* ALERTQ_TOPUP_LIMIT: when it lifts by itself */
} alertq_acct_t;

#define ALERTQ_ACCT_MAX 32             /* account events between two takes, at most */

/* What the thread takes: the marked teams (by slot), the account flags. */
typedef struct alertq_take {
    alertq_team_t *teams;              /* [n], owned by the take: free with free() */
    int *slots;                        /* [n] */
    size_t n;
    alertq_runaway_t runaway[ALERTQ_RUNAWAY_MAX];
    size_t n_runaway;
    int account;                       /* spend changed: has it fallen below? */
    int account_synced;                /* a sync: below, or back above? */
    alertq_acct_t acct[ALERTQ_ACCT_MAX];
    size_t n_acct;
    int drift_known;                   /* a sync measured the last hour's drift: */
    nanos_t drift;                     /* the latest one */
    int64_t drift_at_ms;
    int stop;                          /* alertq_stop was called */
} alertq_take_t;

/* NULL when out of memory. Free with alertq_free once no hook can run. */
alertq_t *alertq_new(void);
void alertq_free(alertq_t *q);

/* Hooks (any thread, non-blocking). team is the slot's name (copied). */
void alertq_settled(alertq_t *q, int slot, const char *team);
void alertq_refused(alertq_t *q, int slot, const char *team, int64_t now_s,
                    const book_refusal_t *why);
void alertq_account_synced(alertq_t *q);
/* An account event (copied); past ALERTQ_ACCT_MAX waiting, dropped (logged). */
void alertq_account_event(alertq_t *q, const alertq_acct_t *ev);
/* The drift over the last hour, measured at at_ms (the latest one wins). */
void alertq_drift(alertq_t *q, nanos_t drift, int64_t at_ms);
/* A runaway refusal of a team (key_slot -1, key NULL) or a key: the first
 * one of an episode is queued for an alert, later ones are not until the
 * subject is admitted again. */
void alertq_runaway(alertq_t *q, int slot, const char *team, int key_slot, const char *key,
                    int hour, nanos_t spent_in_window, nanos_t limit, int64_t at_ms);
/* A request of team slot (and key_slot) was admitted: their episodes end.
 * Cheap when no episode is open. */
void alertq_admitted(alertq_t *q, int slot, int key_slot);
/* Marks every slot in slots[n] (names[n]) for a check, as a settle would. */
void alertq_check_all(alertq_t *q, const int *slots, const char *const *names, size_t n);

/* The thread: waits until something is marked, stop, or the monotonic
 * deadline_ms passes (-1: no deadline), then takes what is marked into *out
 * (clearing it). 0, or -1 when out of memory (nothing is lost: the marks
 * stay for the next take). */
int alertq_take(alertq_t *q, int64_t deadline_ms, alertq_take_t *out);
/* Frees what a take holds. */
void alertq_take_free(alertq_take_t *t);
/* Wakes the thread for good: every take from now on has stop set. */
void alertq_stop(alertq_t *q);

#endif
