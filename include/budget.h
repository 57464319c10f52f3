/* budget: the budget store behind which reservations are made — each
 * team's cap, each key's cap (per the team's period), and the rate limits
 * of teams and keys (ratelim.h) — checked and taken in one step. Either the
 * in-process book behind a mutex, or the shared store on Redis (store.h) so
 * they hold across several pinmeter instances. Thread-safe: every call may
 * come from any thread. */
#ifndef PINMETER_BUDGET_H
#define PINMETER_BUDGET_H
#include "book.h"
#include "ratelim.h"

typedef struct budget budget_t;  /* opaque */

/* A reservation in flight, owned by the request. Filled by budget_reserve;
 * pass back exactly once to budget_settle or budget_release, and keep it at
 * the same address until then (the shared store links it into its list of
 * live holds, to renew their leases). */
typedef struct budget_hold {
    book_hold_t acct;              /* local book: the team's cap (in-process store)
                                    * or only the account projection (shared store) */
    book_hold_t keyh;              /* the key's cap (in-process store) */
    book_hold_t fb;                /* the local share while the shared store is down */
    int in_fb;
    int team;
    int key;                       /* key slot; -1 none */
    int limited;                   /* the rate limits took it (in-process store; the
                                    * shared store: what it took, src/store_int.h) */
    int64_t taken_ms;              /* when, for the tokens' correction */
    int64_t tokens;                /* tokens it took in the tokens-per-minute windows */
    nanos_t amount;
    nanos_t team_available;        /* the team's available just after this hold (fleet-wide
                                    * with Redis; the local share while it is down); -1
                                    * for an uncapped team */
    period_t period;
    int64_t period_start;          /* period the hold (and its charge) belongs to */
    char rid[48];                  /* request id: the hold's name in the shared store */
    struct budget_hold *prev, *next;
} budget_hold_t;

/* What budget_reserve answers: BUDGET_REFUSED is a cap (402), BUDGET_LIMITED
 * a rate limit or the runaway guard (429). */
enum { BUDGET_OK = 0, BUDGET_REFUSED = -1, BUDGET_UNAVAILABLE = -2, BUDGET_LIMITED = -3 };

/* Whose limit: a rate limit's subject. */
enum { BUDGET_SCOPE_TEAM = 1, BUDGET_SCOPE_KEY = 2 };

/* One reservation asked for. */
typedef struct budget_req {
    int team;                      /* team slot */
    int key;                       /* key slot, -1 none (passthrough) */
    nanos_t amount;                /* the reservation */
    int64_t tokens;                /* prompt estimate + completion reserved (tokens per minute) */
    int64_t now_ms;                /* unix ms */
    const char *rid;               /* the request id: the hold's name */
} budget_req_t;

/* Why a reservation was refused, and the rate-limit figures of an admitted
 * one. */
typedef struct budget_why {
    book_refusal_t money;          /* BUDGET_REFUSED: scope team, account or key */
    ratelim_verdict_t rate;         /* BUDGET_LIMITED: the limit that refused; BUDGET_OK:
                                    * the header figures of the tighter of key and team */
    int rate_scope;                /* BUDGET_LIMITED: BUDGET_SCOPE_TEAM or _KEY */
} budget_why_t;

/* Settings of the shared store (strings are copied). */
typedef struct budget_store_conf {
    const char *host;
    int port, db;
    const char *password;          /* NULL: no AUTH */
    const char *instance;          /* stable id of this instance (its ledger's) */
    int lease_ms;                  /* a hold's lease; renewed every third of it */
    int down_local;                /* on_store_down "local" (else "closed") */
} budget_store_conf_t;

/* In-process store for n_teams teams; NULL on OOM. Free with budget_free. */
budget_t *budget_local_new(size_t n_teams);
/* Shared store on Redis; NULL with err on failure. Serves nothing until
 * budget_start; start it after the teams are set up and seeded. */
budget_t *budget_redis_new(size_t n_teams, const budget_store_conf_t *c,
                           char *err, size_t errlen);
/* Starts the shared store's worker and waits up to wait_ms for its first
 * sync with Redis. Returns 1 when synced, 0 when not (yet); the in-process
 * store returns 1. */
int budget_start(budget_t *bg, int wait_ms);
/* Stops (the shared store first writes queued settlements, up to 3 s) and
 * frees. */
void budget_free(budget_t *bg);
/* Makes room for n teams / n key slots. 0 or -1. */
int budget_grow(budget_t *bg, size_t n);
int budget_grow_keys(budget_t *bg, size_t n);

/* Names a team slot (the shared store's keys carry the name). */
void budget_team_name(budget_t *bg, int team, const char *name);
void budget_team_set(budget_t *bg, int team, nanos_t cap, period_t period);
/* Sets a team's cap and period and what this instance's ledger says it
 * spent in the period starting at period_start, as one step. */
void budget_team_reset(budget_t *bg, int team, nanos_t cap, period_t period,
                       int64_t period_start, nanos_t spent);

/* Names a key slot (team slot and key id) and sets its cap (< 0 none) for
 * the team's period, with what this instance's ledger says the key spent in
 * the period starting at period_start. */
void budget_key_reset(budget_t *bg, int key, int team, const char *key_id, nanos_t cap,
                      period_t period, int64_t period_start, nanos_t spent);
void budget_key_set(budget_t *bg, int key, nanos_t cap, period_t period);
/* Sets the rate limits of a team or key slot (copied; all zero = none).
 * Windows and counts carry over. */
void budget_team_limits(budget_t *bg, int team, const ratelim_conf_t *c);
void budget_key_limits(budget_t *bg, int key, const ratelim_conf_t *c);

/* BUDGET_OK with *hold filled (and why->rate the header figures);
 * BUDGET_REFUSED or BUDGET_LIMITED with *why filled; BUDGET_UNAVAILABLE when
 * the shared store is down and the policy (or a missing local share)
 * refuses. Nothing is taken unless it fits everything. */
int budget_reserve(budget_t *bg, const budget_req_t *q, budget_hold_t *hold, budget_why_t *why);
/* The answer of budget_reserve_async: rc and why as budget_reserve gives. */
typedef void (*budget_reserved_fn)(void *arg, int rc, const budget_why_t *why);
/* 1 when reservations should go through budget_reserve_async: the shared
 * store, reachable, pipelines them on its own thread (one Redis round trip
 * for all the requests waiting) instead of blocking the caller. */
int budget_async(budget_t *bg);
/* budget_reserve, answered later through cb, exactly once, on the store's
 * thread; *hold must stay put until then. 0, or -1 (out of memory: cb is
 * not called). */
int budget_reserve_async(budget_t *bg, const budget_req_t *q, budget_hold_t *hold,
                         budget_reserved_fn cb, void *arg);
/* Ends a hold with its charge; tokens is what the request really used
 * (prompt + completion), for the tokens-per-minute window. */
void budget_settle(budget_t *bg, budget_hold_t *hold, nanos_t charge, int64_t tokens,
                   int64_t now_ms);
/* Ends a hold charging nothing, as if it had never been taken. */
void budget_release(budget_t *bg, budget_hold_t *hold, int64_t now_ms);
/* 0 with *out filled (fleet-wide for the shared store), -1 when the shared
 * store cannot be reached. */
int budget_team_view(budget_t *bg, int team, int64_t now, book_view_t *out);
/* The same for a key slot: its cap, spent and loaned this period. */
int budget_key_view(budget_t *bg, int key, int64_t now, book_view_t *out);

/* Claims alert event id (of team's current period at now, unix s) for this
 * instance, so one instance of a fleet sends it: 1 claimed (by this
 * instance, now or before), 0 another instance holds it, -1 the shared
 * store cannot be reached (try again later). The in-process store always
 * answers 1. A Redis round trip: call it off the event loop. */
int budget_alert_claim(budget_t *bg, int team, const char *id, int64_t now);

/* The team's figures for the period containing now without any I/O (for a
 * metrics scrape): the in-process book's, or for the shared store the
 * fleet's as Redis last answered them (a reserve, a balance read, the
 * once-a-second sync). 0 with *out filled, or -1 when the shared store has
 * no figures for that period (yet). */
int budget_team_figures(budget_t *bg, int team, int64_t now, book_view_t *out);

/* "local", or for the shared store "redis" / "redis-down". */
const char *budget_store_state(budget_t *bg);

void budget_account_sync(budget_t *bg, nanos_t total, nanos_t available);
void budget_account_exhausted(budget_t *bg);
/* Returns 0 with *out filled, or -1 when the account projection is off. */
int budget_account_view(budget_t *bg, book_view_t *out);

#endif
