/* store_int.h: private to the store module, whose four files share it:
 * store_state.c (the shared state and its locked helpers: the team and key
 * tables, marking down, the outage shares and this instance's own rate-limit
 * windows, the live holds, the settle queue, the key layout), store_worker.c
 * (the worker thread) and store_reserve.c (reservations and the reserver
 * thread) on top of it, and store.c (the rest of the public API of store.h,
 * start and free) on top of them all. No file calls into one above it.
 * Names shared between the files carry st_; store_ is the public API. */
#ifndef PINMETER_STORE_INT_H
#define PINMETER_STORE_INT_H
#include "store.h"
#include "rconn.h"

#include <pthread.h>
#include <stdatomic.h>

/* The scripts, by their index in the connection's script table. */
enum { S_RESERVE, S_SETTLE, S_RELEASE, S_RENEW, S_SYNC, S_VIEW, S_BEAT, S_CLAIM, S_KSYNC,
       S_N };

/* What a hold took besides the team's period figures in Redis (the shared
 * store's budget_hold_t.limited). */
enum {
    ST_T_KCAP = 1,                    /* the key's period figures (the key has a cap) */
    ST_T_TLIM = 2,                    /* the team's rate-limit windows in Redis */
    ST_T_KLIM = 4,                    /* the key's */
    ST_T_LOCAL = 8,                   /* this instance's own windows of team and key */
    ST_T_KFB = 16,                    /* the key's local share (an outage; keyh) */
    ST_T_REDIS = ST_T_KCAP | ST_T_TLIM | ST_T_KLIM,
};

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
    ratelim_conf_t lim;                /* its rate limits (all 0: not counted in Redis) */
    ratelim_t local;                   /* this instance's own traffic: the limits it
                                       * applies alone while Redis is down */
} rteam_t;

/* A key slot: a key's cap for its team's period, kept in Redis (the
 * period's keys hash) only while it has one, and its rate limits. */
typedef struct rkey {
    char id[64];
    int team;                         /* team slot; -1 not set up */
    nanos_t cap;                      /* -1: none */
    period_t period;                  /* its team's */
    int64_t mine_start;               /* this instance's spend of the key in that period */
    nanos_t mine;
    int fig_known;                    /* the fleet's figures at the last answer */
    int64_t fig_start;
    nanos_t fig_spent, fig_loaned;
    nanos_t share;                    /* as the team's */
    ratelim_conf_t lim;
    ratelim_t local;
} rkey_t;

typedef enum { OP_SETTLE, OP_RELEASE } op_kind_t;

typedef struct op {
    struct op *next;
    op_kind_t kind;
    int team;
    int key;                          /* key slot, -1 none */
    int track;                        /* the hold's ST_T_REDIS bits */
    int64_t tokens;                   /* settle: the tokens really used */
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
    rkey_t *keys;
    size_t nk;
    book_t *acct;                     /* account projection; teams uncapped */
    book_t *fb;                       /* local shares during an outage */
    book_t *kfb;                      /* the keys' local shares (slots as keys) */
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

/* The keys of a team the scripts take: its period's five and its keys hash
 * (pm:{TEAM}:<k><START>:keys: each key's s:<id> spent, l:<id> loaned and
 * b:<id>:<instance> share), and its rate-limit state (pm:{TEAM}:lim and
 * pm:{TEAM}:limlease, not per period). */
typedef struct pkeys {
    char spent[160], loaned[160], holds[160], lease[160], by[160], keys[160];
    char lim[100], limlease[100];
} pkeys_t;

void st_pkeys_of(pkeys_t *k, const char *team, period_t p, int64_t start);
/* A subject's limits as the reserve script takes them: "" for none, else
 * "rpm tpm max_inflight spend_minute spend_hour". */
void st_lim_fmt(char *out, size_t n, const ratelim_conf_t *c);
/* Whether any limit is set. */
int st_lim_on(const ratelim_conf_t *c);
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

/* Admission while Redis is down, against the local shares of team and key
 * (set for this outage on first use) and this instance's own rate-limit
 * windows. Call with mu held, h filled (team, key, amount, tokens,
 * taken_ms) and its account hold taken; releases it on refusal. BUDGET_OK
 * (the hold is live), BUDGET_REFUSED or BUDGET_LIMITED with *why, or
 * BUDGET_UNAVAILABLE (on_store_down closed, or no share known). */
int st_reserve_down_locked(store_t *s, budget_hold_t *h, budget_why_t *why);

/* This instance's own windows (ratelim_t) of h's team and key: taken for
 * every admitted hold (ST_T_LOCAL), ended with it; mu held. */
void st_local_take_locked(store_t *s, budget_hold_t *h);
void st_local_end_locked(store_t *s, budget_hold_t *h, int settled, nanos_t charge,
                         int64_t tokens, int64_t now_ms);

/* Queues a settle (kind OP_SETTLE, with charge and the tokens really used)
 * or a release of h for the worker and wakes it; mu held. Out of memory:
 * logged, not queued. */
void st_enqueue_locked(store_t *s, op_kind_t kind, const budget_hold_t *h, nanos_t charge,
                       int64_t tokens);
/* Frees the acknowledged ops at the head of the queue; mu held. */
void st_queue_trim_locked(store_t *s);
/* Frees every op left (at the end, threads stopped). */
void st_queue_free(store_t *s);

/* ---- store_reserve.c ---- */

/* The reserver thread (arg: the store): pipelines the asynchronous
 * reservations waiting (store_reserve_async) until s->rstop. */
void *st_reserver(void *arg);

/* ---- store_worker.c ---- */

/* The worker's pipeline buffers, for store_new (free with free()). */
struct opargs *st_batch_new(void);
/* The worker thread (arg: the store): writes the queue, keeps the share
 * synced, renews leases, beats; reconnects while down. Ends at s->stop once
 * the queue is written (up to 3 s), or at once while down. */
void *st_worker(void *arg);

#endif
