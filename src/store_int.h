/* store_int.h: private to the store module, whose three files share it:
 * store_state.c (the shared state and its locked helpers: the team table,
 * marking down, the outage shares, the live holds, the settle queue, the key
 * layout), store_worker.c (the worker thread) on top of it, and store.c (the
 * public API of store.h, the reserver, start and free) on top of both. No
 * file calls into one above it. Names shared between the files carry st_;
 * store_ is the public API. */
#ifndef PINMETER_STORE_INT_H
#define PINMETER_STORE_INT_H
#include "store.h"
#include "rconn.h"

#include <pthread.h>
#include <stdatomic.h>

/* The scripts, by their index in the connection's script table. */
enum { S_RESERVE, S_SETTLE, S_RELEASE, S_RENEW, S_SYNC, S_VIEW, S_BEAT, S_CLAIM, S_N };

typedef struct rteam {
    char name[64];
    nanos_t cap;                      /* -1: none */
    period_t period;
    int configured;
    int64_t mine_start;               /* this instance's spend in that period */
    nanos_t mine;
    int fig_known;                    /* the fleet's figures at the last answer */
    int64_t fig_start;
    nanos_t fig_spent, fig_loaned;
    nanos_t share;                    /* local share for the current outage; -1 none,
                                       * -2 unknown (refuse) */
} rteam_t;

typedef enum { OP_SETTLE, OP_RELEASE } op_kind_t;

typedef struct op {
    struct op *next;
    op_kind_t kind;
    int team;
    char rid[48];
    nanos_t charge;
    period_t period;
    int64_t start;
    int acked;                        /* Redis answered (worker only) */
} op_t;

struct store {
    pthread_mutex_t mu;               /* everything below but the connections */
    pthread_cond_t cv;
    rteam_t *teams;
    size_t n;
    book_t *acct;                     /* account projection; teams uncapped */
    book_t *fb;                       /* local shares during an outage */
    int fb_on;                        /* shares set for the current outage */
    budget_hold_t live;               /* sentinel of holds in flight */
    op_t *qhead, *qtail;
    size_t qlen;
    int instances;                    /* live instances at the last beat */
    int stop, started;
    pthread_t th;
    atomic_int up;                    /* reachable and synced */
    int64_t down_since_ms;            /* 0: not down (or never up yet) */
    int ever_up;
    int announce;                     /* say so when first reachable after start */
    int kick;                         /* reconnect now, not at the next tick */

    char host[256], instance[64];     /* host, port and db for the log lines */
    int port, db, lease_ms, down_local;
    rconn_site_t *site;               /* where to dial, the scripts */

    pthread_mutex_t fmu;              /* the caller-side connection */
    rconn_t *fc;
    pthread_mutex_t rmu;              /* reservations for the reserver thread */
    pthread_cond_t rcv;
    struct pend *rhead, *rtail;
    int rstop, rredial;
    pthread_t rth;
    rconn_t *rc;                      /* the reserver's connection */
    rconn_t *wc;                      /* the worker's connection */
    struct opargs *batch;             /* the worker's pipeline buffers [OP_BATCH] */
};

/* ---- store_state.c ---- */

/* The five period keys of a team, in the order the scripts take them. */
typedef struct pkeys { char spent[160], loaned[160], holds[160], lease[160], by[160]; } pkeys_t;

void st_pkeys_of(pkeys_t *k, const char *team, period_t p, int64_t start);
/* "pm:{TEAM}:done:<rid>": the mark that a request's settle was applied. */
void st_done_key(char *out, size_t n, const char *team, const char *rid);
/* The key of the live instances' beats. */
#define ST_INSTANCES_KEY "pm:instances"
/* Unix second after which a period's keys may go: its end plus a grace;
 * "0" for no period. */
void st_expat_of(char *out, size_t n, period_t p, int64_t start);

/* Marks the store down (once per outage, logged once) and kicks the worker.
 * The _locked one with mu held, the other takes it. */
void st_mark_down_locked(store_t *s, const char *why);
void st_mark_down(store_t *s, const char *why);

/* Links a hold into (unlinks it from) the list of holds in flight; mu held.
 * Unlinking a hold not in the list does nothing. */
void st_live_add_locked(store_t *s, budget_hold_t *h);
void st_live_del_locked(budget_hold_t *h);

/* Admission while Redis is down, against the local shares (set for this
 * outage on first use). Call with mu held and the account hold taken;
 * releases it on refusal. BUDGET_OK (the hold is live), BUDGET_REFUSED with
 * *why, or BUDGET_UNAVAILABLE (on_store_down closed, or no share known). */
int st_reserve_down_locked(store_t *s, int team, nanos_t amount, int64_t now,
                           budget_hold_t *h, book_refusal_t *why);

/* Queues a settle (kind OP_SETTLE, with charge) or a release of h for the
 * worker and wakes it; mu held. Out of memory: logged, not queued. */
void st_enqueue_locked(store_t *s, op_kind_t kind, const budget_hold_t *h, nanos_t charge);
/* Frees the acknowledged ops at the head of the queue; mu held. */
void st_queue_trim_locked(store_t *s);
/* Frees every op left (at the end, threads stopped). */
void st_queue_free(store_t *s);

/* ---- store_worker.c ---- */

/* The worker's pipeline buffers, for store_new (free with free()). */
struct opargs *st_batch_new(void);
/* The worker thread (arg: the store): writes the queue, keeps the share
 * synced, renews leases, beats; reconnects while down. Ends at s->stop once
 * the queue is written (up to 3 s), or at once while down. */
void *st_worker(void *arg);

#endif
