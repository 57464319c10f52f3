/* app: the serving process's context, shared by every room that serves: the
 * listener (server.c), the route handlers, the event loop (loop.c), the
 * upstream transfers (upstream.c), account sync and the start-up in main.c.
 * It holds what they reach for — the current config snapshot, the budget,
 * the ledger, the loop — and what start-up reads once for them (the
 * upstream key, the admin token's hash); the serve command's own state (team
 * slots, arguments) stays in serve.c.
 *
 * One app_t lives in serve_run (serve.c) for the whole run and is passed explicitly;
 * there is no global. */
#ifndef PINMETER_APP_H
#define PINMETER_APP_H
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include "base.h"
#include "book.h"
#include "budget.h"
#include "config.h"
#include "ledger.h"
#include "rates.h"

struct loop;
struct upstream;
struct account;
struct server;
struct jobs;
struct alertq;
struct metrics;
struct guard;
struct ledger_account;

/* What one config file says, with its rates, as served at one time. SIGHUP
 * builds a new snapshot and swaps it in only when the whole of it is valid;
 * so does the rates sync (ratesync.c) when Pinata's prices change, with the
 * config of the snapshot it replaces and a new rate table (borrowed = 1:
 * cfg, slot and kslot are that older snapshot's). A request keeps the
 * snapshot it was admitted under. Old snapshots are freed at exit (swaps
 * are rare; no reader ever sees a freed one). */
typedef struct snap {
    config_t *cfg;
    rates_t *rates;
    int *slot;                     /* budget slot of cfg->teams[i] */
    int **kslot;                   /* budget key slot of cfg->teams[i].keys[k] */
    int passthrough;               /* no teams configured */
    int default_slot;              /* passthrough's team "default" */
    int borrowed;                  /* only rates is this snapshot's own */
    struct snap *older;
} snap_t;

/* One event loop and the transfers it runs; serve.c makes app->n_workers of
 * them ("workers"), and the listener gives each a libmicrohttpd daemon of
 * its own on the shared address. A request stays on its worker. */
typedef struct worker {
    struct loop *loop;             /* loop.h */
    struct upstream *up;           /* upstream.h */
} worker_t;

typedef struct app {
    snap_t *_Atomic snap;          /* current config; load once per use */
    pthread_mutex_t snap_mu;       /* held by whoever builds and swaps in a snapshot
                                    * (SIGHUP's reload, the rates sync): one at a time */
    budget_t *budget;
    ledger_t *ledger;
    worker_t *workers;             /* [n_workers] */
    int n_workers;
    struct account *acct;          /* balance sync (account.h); NULL when off */
    struct server *srv;            /* the listener (server.h) */
    struct jobs *jobs;             /* work kept off the loop (jobs.h) */
    struct alertq *alertq;         /* the alert thread's inbox (alertq.h); NULL when off */
    struct metrics *metrics;       /* the Prometheus registry (metrics.h) */
    struct ledger_account *acctdb;    /* the account's tables (ledger_account.h); NULL when
                                    * account sync is off */
    struct guard *guard;           /* the top-up guard (guard.h); NULL likewise */
    char *jwt;                     /* the Pinata JWT (account.jwt_env); NULL when unset */
    char *llm_key;                 /* upstream key from the environment; NULL in passthrough */
    int admin_on;
    unsigned char admin_sha[32];
    char instance[17];             /* random hex, prefixes request ids */
    atomic_uint_fast64_t seq;
    atomic_int active;             /* requests holding a reference (req.h) */
} app_t;

static inline snap_t *app_snap(app_t *app) { return atomic_load(&app->snap); }

#endif
