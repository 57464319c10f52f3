/* store: the shared budget store on Redis. See store.h for the layout.
 *
 * Exactness: money moves only inside the Lua scripts (src/lua), each one
 * atomic, with INCRBY/DECRBY on integer nano-credits. This instance's share
 * of a period's spent (field <instance> of the "by" hash) is written only by
 * this instance's worker, in order, and every settle is retried until Redis
 * acknowledges it; so "mine" (the ledger's spend for the period at start
 * plus every acknowledged settle since) is exactly what the share must be.
 * The sync script sets the share to mine and moves spent by the difference:
 * after Redis lost its data it re-adds the whole share once, and otherwise
 * it changes nothing. Settle is idempotent by request id (a done key).
 *
 * When Redis cannot be reached: "closed" refuses new requests (503);
 * "local" admits against a local share of what the team had left at the
 * last answer, divided by the number of live instances. Settlements queue
 * and are written when Redis is back; holds admitted locally and still in
 * flight are then added to Redis (adopted) before anything else is served. */
#include "store.h"
#include "base.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


extern const char pm_lua_reserve[], pm_lua_settle[], pm_lua_release[], pm_lua_renew[],
                  pm_lua_sync[], pm_lua_view[], pm_lua_beat[];
enum { S_RESERVE, S_SETTLE, S_RELEASE, S_RENEW, S_SYNC, S_VIEW, S_BEAT, S_N };

#define DONE_TTL_S   (2 * 86400)      /* how long a settled mark is kept */
#define GRACE_S      (2 * 86400)      /* period keys outlive their period by this */
#define FAST_TIMEOUT_MS 300           /* a reserve waits at most this for Redis */
#define WORK_TIMEOUT_MS 2000
#define TICK_MS      250
#define STALE_MS     15000            /* an instance not seen for this long is gone */
#define OP_BATCH     256              /* settles and releases per pipeline */

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

    char host[256], password[256], instance[64];
    int port, db, has_password, lease_ms, down_local;
    char sha[S_N][41];
    const char *text[S_N];

    pthread_mutex_t fmu;              /* the caller-side connection */
    redisContext *fc;
    pthread_mutex_t rmu;              /* reservations for the reserver thread */
    pthread_cond_t rcv;
    struct pend *rhead, *rtail;
    int rstop, rredial;
    pthread_t rth;
    redisContext *rc;                 /* the reserver's connection */
    redisContext *wc;                 /* the worker's connection */
    struct opargs *batch;             /* the worker's pipeline buffers [OP_BATCH] */
};

static int64_t wall_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- keys ---- */

static char period_letter(period_t p)
{
    return p == PERIOD_DAY ? 'd' : p == PERIOD_WEEK ? 'w' : p == PERIOD_MONTH ? 'm' : 'n';
}

/* "pm:{TEAM}:m1764547200:" */
static void key_base(char *out, size_t n, const char *team, period_t p, int64_t start)
{
    snprintf(out, n, "pm:{%s}:%c%lld:", team, period_letter(p), (long long)start);
}

/* Unix second after which a period's keys may go: its end plus a grace;
 * "0" for no period. */
static void expat_of(char *out, size_t n, period_t p, int64_t start)
{
    int64_t end;
    switch (p) {
    case PERIOD_DAY: end = start + 86400; break;
    case PERIOD_WEEK: end = start + 7 * 86400; break;
    case PERIOD_MONTH: end = book_period_start(PERIOD_MONTH, start + 32 * 86400); break;
    default: snprintf(out, n, "0"); return;
    }
    snprintf(out, n, "%lld", (long long)(end + GRACE_S));
}

/* The five period keys of a team, in the order the scripts take them. */
typedef struct pkeys { char spent[160], loaned[160], holds[160], lease[160], by[160]; } pkeys_t;

static void pkeys_of(pkeys_t *k, const char *team, period_t p, int64_t start)
{
    char b[128];
    key_base(b, sizeof b, team, p, start);
    snprintf(k->spent, sizeof k->spent, "%sspent", b);
    snprintf(k->loaned, sizeof k->loaned, "%sloaned", b);
    snprintf(k->holds, sizeof k->holds, "%sholds", b);
    snprintf(k->lease, sizeof k->lease, "%slease", b);
    snprintf(k->by, sizeof k->by, "%sby", b);
}

/* ---- connections and scripts ---- */

static redisContext *dial(store_t *s, int timeout_ms)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) { if (c) redisFree(c); return NULL; }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (s->has_password) {
        r = redisCommand(c, "AUTH %s", s->password);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(r);
    }
    if (s->db) {
        r = redisCommand(c, "SELECT %d", s->db);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(r);
    }
    return c;
fail:
    if (r) freeReplyObject(r);
    redisFree(c);
    return NULL;
}

/* Redis errors that pass: retry later as if the connection had failed. */
static int transient(const redisReply *r)
{
    static const char *const busy[] = { "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN",
                                        "READONLY", "CLUSTERDOWN", NULL };
    for (int i = 0; busy[i]; i++)
        if (strncmp(r->str, busy[i], strlen(busy[i])) == 0) return 1;
    return 0;
}

enum { RUN_OK = 0, RUN_IO = -1, RUN_ERR = -2 };

/* Runs script id with keys and args (EVALSHA, EVAL when Redis does not have
 * it yet). RUN_OK with *out (free with freeReplyObject); RUN_IO when the
 * connection failed or Redis is busy (the caller drops the connection and
 * retries later); RUN_ERR for any other error reply (logged). */
static int run(store_t *s, redisContext *c, int id, int nk, const char **keys,
               int na, const char **args, redisReply **out)
{
    const char *argv[80];
    char nkeys[16];
    int argc = 0;
    if (3 + nk + na > 80) return RUN_ERR;
    snprintf(nkeys, sizeof nkeys, "%d", nk);
    argv[argc++] = "EVALSHA";
    argv[argc++] = s->sha[id];
    argv[argc++] = nkeys;
    for (int i = 0; i < nk; i++) argv[argc++] = keys[i];
    for (int i = 0; i < na; i++) argv[argc++] = args[i];
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = s->text[id];
        r = redisCommandArgv(c, argc, argv, NULL);
    }
    if (!r) return RUN_IO;
    if (r->type == REDIS_REPLY_ERROR) {
        int io = transient(r);
        if (!io) base_log("budget store: script error: %.300s", r->str);
        freeReplyObject(r);
        return io ? RUN_IO : RUN_ERR;
    }
    *out = r;
    return RUN_OK;
}

/* Element i of an array reply as an integer (integer or decimal string). */
static long long elem_ll(const redisReply *r, size_t i)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements) return 0;
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER) return e->integer;
    if (e->type == REDIS_REPLY_STRING) return strtoll(e->str, NULL, 10);
    return 0;
}

/* ---- outage state ---- */

/* Marks the store down (once per outage, logged once). Call with mu held. */
static void mark_down_locked(store_t *s, const char *why)
{
    if (!atomic_load(&s->up) && s->down_since_ms) return;
    atomic_store(&s->up, 0);
    s->down_since_ms = base_mono_ms();
    s->kick = 1;                       /* the worker reconnects and re-syncs at once */
    pthread_cond_signal(&s->cv);
    if (!s->ever_up) return;           /* logged by store_start */
    base_log("budget store: Redis at %s:%d is unreachable (%s); %s; requests already "
            "admitted are unaffected and their settlements are queued until it is back",
            s->host, s->port, why,
            s->down_local ? "on_store_down=local: new requests are admitted against each "
                            "team's local share of what it had left"
                          : "on_store_down=closed: new requests get 503");
}

static void mark_down(store_t *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    mark_down_locked(s, why);
    pthread_mutex_unlock(&s->mu);
}

/* Sets each team's local share for this outage. Call with mu held. */
static void shares_locked(store_t *s, int64_t now)
{
    int inst = s->instances > 0 ? s->instances : 1;
    for (size_t i = 0; i < s->n; i++) {
        rteam_t *t = &s->teams[i];
        int64_t start = book_period_start(t->period, now);
        if (t->cap < 0) t->share = -1;
        else if (!t->fig_known || t->fig_start != start) t->share = -2;
        else {
            nanos_t left = t->cap - t->fig_spent - t->fig_loaned;
            t->share = left > 0 ? left / inst : 0;
        }
        book_team_set(s->fb, (int)i, t->share >= 0 ? t->share : -1, t->period);
        book_team_seed(s->fb, (int)i, start, 0);
    }
    s->fb_on = 1;
}

static void enqueue_locked(store_t *s, int kind, const budget_hold_t *h, nanos_t charge);
static struct opargs *opargs_new(void);

/* ---- lifecycle and teams ---- */

store_t *store_new(size_t n_teams, const budget_store_conf_t *c, char *err, size_t errlen)
{
    store_t *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->acct = book_new(n_teams);
    s->fb = book_new(n_teams);
    s->teams = n_teams ? calloc(n_teams, sizeof *s->teams) : NULL;
    s->batch = opargs_new();
    if (!s->acct || !s->fb || (n_teams && !s->teams) || !s->batch) goto fail;
    s->n = n_teams;
    snprintf(s->host, sizeof s->host, "%s", c->host);
    s->port = c->port;
    s->db = c->db;
    if (c->password) {
        s->has_password = 1;
        snprintf(s->password, sizeof s->password, "%s", c->password);
    }
    snprintf(s->instance, sizeof s->instance, "%s", c->instance);
    s->lease_ms = c->lease_ms > 0 ? c->lease_ms : 630000;
    s->down_local = c->down_local;
    const char *texts[S_N] = { pm_lua_reserve, pm_lua_settle, pm_lua_release, pm_lua_renew,
                               pm_lua_sync, pm_lua_view, pm_lua_beat };
    for (int i = 0; i < S_N; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        s->text[i] = texts[i];
        SHA1((const unsigned char *)texts[i], strlen(texts[i]), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
            snprintf(s->sha[i] + 2 * j, 3, "%02x", md[j]);
    }
    s->live.next = s->live.prev = &s->live;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->fmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->rcv, NULL);
    return s;
fail:
    snprintf(err, errlen, "out of memory");
    book_free(s->acct);
    book_free(s->fb);
    free(s->teams);
    free(s->batch);
    free(s);
    return NULL;
}

int store_grow(store_t *s, size_t n)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (n <= s->n) { rc = 0; goto out; }
    rteam_t *t = realloc(s->teams, n * sizeof *t);
    if (!t) goto out;
    s->teams = t;
    if (book_grow(s->acct, n) != 0 || book_grow(s->fb, n) != 0) goto out;
    memset(t + s->n, 0, (n - s->n) * sizeof *t);
    for (size_t i = s->n; i < n; i++) { t[i].cap = -1; t[i].share = -1; }
    s->n = n;
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void store_team_name(store_t *s, int team, const char *name)
{
    pthread_mutex_lock(&s->mu);
    if (team >= 0 && (size_t)team < s->n)
        snprintf(s->teams[team].name, sizeof s->teams[team].name, "%s", name);
    pthread_mutex_unlock(&s->mu);
}

void store_team_set(store_t *s, int team, nanos_t cap, period_t period)
{
    pthread_mutex_lock(&s->mu);
    if (team >= 0 && (size_t)team < s->n && (int)period >= 0) {
        rteam_t *t = &s->teams[team];
        t->cap = cap;
        t->period = period;
        t->configured = 1;
        book_team_set(s->acct, team, -1, period);
    }
    pthread_mutex_unlock(&s->mu);
}

void store_team_reset(store_t *s, int team, nanos_t cap, period_t period,
                      int64_t period_start, nanos_t spent)
{
    store_team_set(s, team, cap, period);
    pthread_mutex_lock(&s->mu);
    if (team >= 0 && (size_t)team < s->n) {
        s->teams[team].mine_start = period_start;
        s->teams[team].mine = spent;
        s->teams[team].fig_known = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

/* ---- the caller side: reserve and view ---- */

/* Runs a script on the caller-side connection, dialing it when needed.
 * RUN_IO marks the store down. */
static int run_fast(store_t *s, int id, int nk, const char **keys, int na,
                    const char **args, redisReply **out)
{
    int rc;
    pthread_mutex_lock(&s->fmu);
    if (!s->fc) s->fc = dial(s, FAST_TIMEOUT_MS);
    if (!s->fc) {
        pthread_mutex_unlock(&s->fmu);
        mark_down(s, "cannot connect");
        return RUN_IO;
    }
    rc = run(s, s->fc, id, nk, keys, na, args, out);
    if (rc == RUN_IO) {
        redisFree(s->fc);
        s->fc = NULL;
    }
    pthread_mutex_unlock(&s->fmu);
    if (rc == RUN_IO) mark_down(s, "no answer");
    return rc;
}

static void live_add_locked(store_t *s, budget_hold_t *h)
{
    h->next = &s->live;
    h->prev = s->live.prev;
    s->live.prev->next = h;
    s->live.prev = h;
}

static void live_del_locked(budget_hold_t *h)
{
    if (!h->next) return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

/* Admission while Redis is down. Call with mu held and the account hold
 * taken; releases it on refusal. */
static int reserve_down_locked(store_t *s, int team, nanos_t amount, int64_t now,
                               budget_hold_t *h, book_refusal_t *why)
{
    if (!s->down_local) goto unavailable;
    if (!s->fb_on) shares_locked(s, now);
    if (s->teams[team].share == -2) goto unavailable;
    if (book_reserve(s->fb, team, amount, now, &h->fb, why) != 0) {
        book_release(s->acct, &h->acct);
        return BUDGET_REFUSED;
    }
    h->in_fb = 1;
    live_add_locked(s, h);
    return BUDGET_OK;
unavailable:
    book_release(s->acct, &h->acct);
    return BUDGET_UNAVAILABLE;
}

/* One reservation on its way through Redis: prepared under mu (the account
 * projection, the keys), sent (alone or pipelined with others), then
 * applied under mu. */
typedef struct pend {
    struct pend *next;
    int team;
    nanos_t amount, cap;
    int64_t now;
    char rid[48];
    budget_hold_t *h;
    book_refusal_t why;
    budget_reserved_fn cb;         /* NULL: a synchronous call */
    void *arg;
    int rc;                        /* BUDGET_* once decided */
    int send;                      /* needs the script */
    int run;                       /* RUN_* of the script */
    long long ok, spent, loaned;
    pkeys_t k;
    char amt[24], caps[24], lease[24], expat[24];
    const char *argv[13];
} pend_t;

/* Step 1, with mu held: the account projection, then either an answer
 * without Redis (store down) or the script's arguments. */
static void pend_prepare_locked(store_t *s, pend_t *p)
{
    budget_hold_t *h = p->h;
    memset(h, 0, sizeof *h);
    p->send = 0;
    if (p->team < 0 || (size_t)p->team >= s->n) { p->rc = BUDGET_REFUSED; return; }
    rteam_t *t = &s->teams[p->team];
    if (book_reserve(s->acct, p->team, p->amount, p->now, &h->acct, &p->why) != 0) {
        p->rc = BUDGET_REFUSED;           /* the account projection */
        return;
    }
    h->team = p->team;
    h->amount = p->amount;
    h->period = t->period;
    h->period_start = book_period_start(t->period, p->now);
    snprintf(h->rid, sizeof h->rid, "%s", p->rid);
    if (!atomic_load(&s->up)) {
        p->rc = reserve_down_locked(s, p->team, p->amount, p->now, h, &p->why);
        return;
    }
    p->cap = t->cap;
    pkeys_of(&p->k, t->name, h->period, h->period_start);
    snprintf(p->amt, sizeof p->amt, "%lld", (long long)p->amount);
    snprintf(p->caps, sizeof p->caps, "%lld", (long long)(p->cap < 0 ? -1 : p->cap));
    snprintf(p->lease, sizeof p->lease, "%d", s->lease_ms);
    expat_of(p->expat, sizeof p->expat, h->period, h->period_start);
    const char *argv[] = { "EVALSHA", s->sha[S_RESERVE], "4", p->k.spent, p->k.loaned,
                           p->k.holds, p->k.lease, p->rid, p->amt, p->caps, p->lease,
                           p->expat, s->instance };
    memcpy(p->argv, argv, sizeof argv);
    p->send = 1;
}

static void pend_take_reply(pend_t *p, redisReply *r)
{
    p->run = RUN_OK;
    p->ok = elem_ll(r, 0);
    p->spent = elem_ll(r, 1);
    p->loaned = elem_ll(r, 2);
}

/* Step 2, without mu: runs the reserve script of every pend that needs it
 * on connection c, pipelined (all sent, then all replies read). RUN_IO when
 * the connection failed (pends without a reply then have run = RUN_IO). */
static int pend_send(store_t *s, redisContext *c, pend_t *list)
{
    int io = 0;
    for (pend_t *p = list; p; p = p->next) {
        p->run = RUN_IO;
        if (p->send && redisAppendCommandArgv(c, 13, p->argv, NULL) != REDIS_OK) io = 1;
    }
    for (pend_t *p = list; p && !io; p = p->next) {
        if (!p->send) continue;
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) { io = 1; break; }
        if (r->type == REDIS_REPLY_ERROR) {
            p->run = strncmp(r->str, "NOSCRIPT", 8) == 0 ? RUN_ERR - 1   /* again, by EVAL */
                     : transient(r) ? RUN_IO : RUN_ERR;
            if (p->run == RUN_ERR) base_log("budget store: script error: %.300s", r->str);
        } else {
            pend_take_reply(p, r);
        }
        freeReplyObject(r);
    }
    for (pend_t *p = list; p && !io; p = p->next) {
        if (p->run != RUN_ERR - 1) continue;
        redisReply *r = NULL;
        int rc = run(s, c, S_RESERVE, 4, p->argv + 3, 6, p->argv + 7, &r);
        if (rc == RUN_OK) { pend_take_reply(p, r); freeReplyObject(r); }
        else p->run = rc;
        if (rc == RUN_IO) io = 1;
    }
    return io ? RUN_IO : RUN_OK;
}

/* Step 3, with mu held: the answer. */
static void pend_apply_locked(store_t *s, pend_t *p)
{
    if (!p->send) return;
    budget_hold_t *h = p->h;
    rteam_t *t = &s->teams[p->team];
    if (p->run != RUN_OK) {
        p->rc = reserve_down_locked(s, p->team, p->amount, p->now, h, &p->why);
        /* The script may have run with its reply lost: unless the request
         * is admitted locally (its hold is adopted under the same id later),
         * have the worker release whatever Redis holds under this id, so it
         * does not sit in loaned until its lease runs out. */
        if (p->rc != BUDGET_OK) enqueue_locked(s, OP_RELEASE, h, 0);
        return;
    }
    t->fig_known = 1;
    t->fig_start = h->period_start;
    t->fig_spent = p->spent;
    t->fig_loaned = p->loaned;
    if (p->ok == 1) {
        live_add_locked(s, h);
        p->rc = BUDGET_OK;
        return;
    }
    book_release(s->acct, &h->acct);
    p->why.scope = BOOK_SCOPE_TEAM;
    p->why.cap = p->cap;
    p->why.spent = p->spent;
    p->why.loaned = p->loaned;
    p->why.available = p->cap - p->spent - p->loaned;
    p->why.required = p->amount;
    p->why.retry = p->loaned > 0 && p->cap - p->spent >= p->amount;
    p->rc = BUDGET_REFUSED;
}

int store_reserve(store_t *s, int team, nanos_t amount, int64_t now, const char *rid,
                  budget_hold_t *h, book_refusal_t *why)
{
    pend_t p;
    memset(&p, 0, sizeof p);
    p.team = team;
    p.amount = amount;
    p.now = now;
    p.h = h;
    snprintf(p.rid, sizeof p.rid, "%s", rid);
    pthread_mutex_lock(&s->mu);
    pend_prepare_locked(s, &p);
    pthread_mutex_unlock(&s->mu);
    if (p.send) {
        int io = 0;
        pthread_mutex_lock(&s->fmu);
        if (!s->fc) s->fc = dial(s, FAST_TIMEOUT_MS);
        if (!s->fc || pend_send(s, s->fc, &p) == RUN_IO) {
            io = 1;
            if (s->fc) { redisFree(s->fc); s->fc = NULL; }
        }
        pthread_mutex_unlock(&s->fmu);
        if (io) mark_down(s, "no answer");
        pthread_mutex_lock(&s->mu);
        pend_apply_locked(s, &p);
        pthread_mutex_unlock(&s->mu);
    }
    *why = p.why;
    return p.rc;
}

int store_reserve_async(store_t *s, int team, nanos_t amount, int64_t now, const char *rid,
                        budget_hold_t *h, budget_reserved_fn cb, void *arg)
{
    pend_t *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->team = team;
    p->amount = amount;
    p->now = now;
    p->h = h;
    p->cb = cb;
    p->arg = arg;
    snprintf(p->rid, sizeof p->rid, "%s", rid);
    pthread_mutex_lock(&s->rmu);
    if (s->rtail) s->rtail->next = p;
    else s->rhead = p;
    s->rtail = p;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
    return 0;
}

/* The reserver thread: takes every reservation waiting and sends their
 * scripts in one pipeline, so one Redis round trip serves many requests. */
static void *reserver(void *arg)
{
    store_t *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->rmu);
        while (!s->rhead && !s->rstop) pthread_cond_wait(&s->rcv, &s->rmu);
        pend_t *list = s->rhead;
        s->rhead = s->rtail = NULL;
        int stop = s->rstop, redial = s->rredial;
        s->rredial = 0;
        pthread_mutex_unlock(&s->rmu);
        if (redial && s->rc) { redisFree(s->rc); s->rc = NULL; }
        if (!list && stop) break;
        int any = 0;
        pthread_mutex_lock(&s->mu);
        for (pend_t *p = list; p; p = p->next) {
            pend_prepare_locked(s, p);
            any |= p->send;
        }
        pthread_mutex_unlock(&s->mu);
        if (any) {
            if (!s->rc) s->rc = dial(s, FAST_TIMEOUT_MS);
            if (!s->rc || pend_send(s, s->rc, list) == RUN_IO) {
                if (s->rc) { redisFree(s->rc); s->rc = NULL; }
                mark_down(s, "no answer");
            }
            pthread_mutex_lock(&s->mu);
            for (pend_t *p = list; p; p = p->next) pend_apply_locked(s, p);
            pthread_mutex_unlock(&s->mu);
        }
        while (list) {
            pend_t *p = list;
            list = p->next;
            p->cb(p->arg, p->rc, &p->why);
            free(p);
        }
    }
    return NULL;
}

int store_async(store_t *s)
{
    return s->started && atomic_load(&s->up);
}

int store_team_view(store_t *s, int team, int64_t now, book_view_t *out)
{
    pthread_mutex_lock(&s->mu);
    if (team < 0 || (size_t)team >= s->n || !atomic_load(&s->up)) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    rteam_t *t = &s->teams[team];
    nanos_t cap = t->cap;
    int64_t start = book_period_start(t->period, now);
    pkeys_t k;
    pkeys_of(&k, t->name, t->period, start);
    pthread_mutex_unlock(&s->mu);
    const char *keys[] = { k.spent, k.loaned, k.holds, k.lease, k.by };
    redisReply *r = NULL;
    if (run_fast(s, S_VIEW, 5, keys, 0, NULL, &r) != RUN_OK) return -1;
    out->cap = cap;
    out->spent = elem_ll(r, 0);
    out->loaned = elem_ll(r, 1);
    out->available = cap >= 0 ? cap - out->spent - out->loaned : -1;
    freeReplyObject(r);
    pthread_mutex_lock(&s->mu);
    t->fig_known = 1;
    t->fig_start = start;
    t->fig_spent = out->spent;
    t->fig_loaned = out->loaned;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- settle and release: queued for the worker ---- */

static void enqueue_locked(store_t *s, int kind, const budget_hold_t *h, nanos_t charge)
{
    op_t *o = calloc(1, sizeof *o);
    if (!o) {
        base_log("budget store: out of memory: settlement of %s not sent to Redis (the ledger "
                "has it; the next sync re-adds this instance's share)", h->rid);
        return;
    }
    o->kind = (op_kind_t)kind;
    o->team = h->team;
    o->charge = charge;
    o->period = h->period;
    o->start = h->period_start;
    snprintf(o->rid, sizeof o->rid, "%s", h->rid);
    if (s->qtail) s->qtail->next = o;
    else s->qhead = o;
    s->qtail = o;
    s->qlen++;
    pthread_cond_signal(&s->cv);
}

void store_settle(store_t *s, budget_hold_t *h, nanos_t charge, int64_t now)
{
    pthread_mutex_lock(&s->mu);
    book_settle(s->acct, &h->acct, charge, now);
    if (h->in_fb) book_settle(s->fb, &h->fb, charge, now);
    live_del_locked(h);
    enqueue_locked(s, OP_SETTLE, h, charge);
    pthread_mutex_unlock(&s->mu);
}

void store_release(store_t *s, budget_hold_t *h)
{
    pthread_mutex_lock(&s->mu);
    book_release(s->acct, &h->acct);
    if (h->in_fb) book_release(s->fb, &h->fb);
    live_del_locked(h);
    enqueue_locked(s, OP_RELEASE, h, 0);
    pthread_mutex_unlock(&s->mu);
}

/* ---- the worker ---- */

/* The arguments of one queued op's script. */
typedef struct opargs {
    pkeys_t k;
    char done[160], charge[24], expat[24], ttl[24], nk[4];
    const char *argv[16];
    int argc;
    int id;
} opargs_t;

static struct opargs *opargs_new(void)
{
    return calloc(OP_BATCH, sizeof(opargs_t));
}

static void op_args(store_t *s, const op_t *o, const char *team, opargs_t *a)
{
    pkeys_of(&a->k, team, o->period, o->start);
    int n = 0;
    a->argv[n++] = "EVALSHA";
    if (o->kind == OP_SETTLE) {
        a->id = S_SETTLE;
        snprintf(a->done, sizeof a->done, "pm:{%.63s}:done:%.47s", team, o->rid);
        snprintf(a->charge, sizeof a->charge, "%lld", (long long)o->charge);
        expat_of(a->expat, sizeof a->expat, o->period, o->start);
        snprintf(a->ttl, sizeof a->ttl, "%d", DONE_TTL_S);
        const char *v[] = { s->sha[S_SETTLE], "6", a->k.spent, a->k.loaned, a->k.holds,
                            a->k.lease, a->k.by, a->done, o->rid, a->charge, s->instance,
                            a->expat, a->ttl };
        memcpy(a->argv + n, v, sizeof v);
        n += (int)(sizeof v / sizeof v[0]);
    } else {
        a->id = S_RELEASE;
        const char *v[] = { s->sha[S_RELEASE], "3", a->k.loaned, a->k.holds, a->k.lease,
                            o->rid };
        memcpy(a->argv + n, v, sizeof v);
        n += (int)(sizeof v / sizeof v[0]);
    }
    a->argc = n;
}

/* After an acknowledged settle: this instance's share grows by the charge. */
static void op_done(store_t *s, const op_t *o)
{
    pthread_mutex_lock(&s->mu);
    rteam_t *t = &s->teams[o->team];
    if (o->kind == OP_SETTLE && o->period == t->period) {
        if (o->start == t->mine_start) t->mine += o->charge;
        else if (o->start > t->mine_start) { t->mine_start = o->start; t->mine = o->charge; }
    }
    pthread_mutex_unlock(&s->mu);
}

/* An op's outcome. RUN_OK also when Redis says it was already done. */
static void op_outcome(store_t *s, op_t *o, int rc)
{
    if (rc == RUN_IO) return;
    if (rc == RUN_OK) op_done(s, o);
    else base_log("budget store: %s of %s refused by Redis; dropped (the ledger has it)",
                 o->kind == OP_SETTLE ? "settlement" : "release", o->rid);
    o->acked = 1;
}

/* Sends the first OP_BATCH ops of the queue (those not yet acknowledged) in
 * one pipeline and drops the acknowledged ones from the head. Each settle is
 * idempotent, so ops whose reply was lost are simply sent again: after a
 * reconnect this runs before the share sync, so every op that may have been
 * applied is acknowledged (and counted in mine) before mine is compared. */
static int send_batch(store_t *s)
{
    op_t *v[OP_BATCH];
    char names[OP_BATCH][64];
    int n = 0, io = 0;
    pthread_mutex_lock(&s->mu);
    for (op_t *o = s->qhead; o && n < OP_BATCH; o = o->next) {
        if (o->acked) continue;
        snprintf(names[n], sizeof names[n], "%s", s->teams[o->team].name);
        v[n++] = o;
    }
    pthread_mutex_unlock(&s->mu);
    opargs_t *a = s->batch;
    for (int i = 0; i < n; i++) {
        op_args(s, v[i], names[i], &a[i]);
        if (redisAppendCommandArgv(s->wc, a[i].argc, a[i].argv, NULL) != REDIS_OK) io = 1;
    }
    int again[OP_BATCH];
    for (int i = 0; i < n && !io; i++) {
        redisReply *r = NULL;
        again[i] = 0;
        if (redisGetReply(s->wc, (void **)&r) != REDIS_OK || !r) { io = 1; break; }
        if (r->type != REDIS_REPLY_ERROR) op_outcome(s, v[i], RUN_OK);
        else if (strncmp(r->str, "NOSCRIPT", 8) == 0) again[i] = 1;
        else if (transient(r)) io = 1;
        else {
            base_log("budget store: script error: %.300s", r->str);
            op_outcome(s, v[i], RUN_ERR);
        }
        freeReplyObject(r);
    }
    for (int i = 0; i < n && !io; i++) {
        if (!again[i]) continue;
        redisReply *r = NULL;
        int rc = run(s, s->wc, a[i].id, atoi(a[i].argv[2]), a[i].argv + 3,
                     a[i].argc - 3 - atoi(a[i].argv[2]), a[i].argv + 3 + atoi(a[i].argv[2]), &r);
        if (r) freeReplyObject(r);
        if (rc == RUN_IO) io = 1;
        else op_outcome(s, v[i], rc);
    }
    pthread_mutex_lock(&s->mu);
    while (s->qhead && s->qhead->acked) {
        op_t *o = s->qhead;
        s->qhead = o->next;
        if (!s->qhead) s->qtail = NULL;
        s->qlen--;
        free(o);
    }
    pthread_mutex_unlock(&s->mu);
    return io ? RUN_IO : RUN_OK;
}

/* Makes this instance's share of each team's current period equal to mine. */
static int sync_all(store_t *s)
{
    int64_t now = wall_s();
    for (size_t i = 0;; i++) {
        char name[64];
        period_t p;
        int64_t start;
        nanos_t mine;
        pthread_mutex_lock(&s->mu);
        if (i >= s->n) { pthread_mutex_unlock(&s->mu); break; }
        rteam_t *t = &s->teams[i];
        if (!t->configured || !t->name[0]) { pthread_mutex_unlock(&s->mu); continue; }
        start = book_period_start(t->period, now);
        if (t->mine_start < start) { t->mine_start = start; t->mine = 0; }
        p = t->period;
        mine = t->mine_start == start ? t->mine : 0;
        snprintf(name, sizeof name, "%s", t->name);
        pthread_mutex_unlock(&s->mu);

        pkeys_t k;
        pkeys_of(&k, name, p, start);
        char mines[24], expat[24];
        snprintf(mines, sizeof mines, "%lld", (long long)mine);
        expat_of(expat, sizeof expat, p, start);
        const char *keys[] = { k.spent, k.by, k.loaned };
        const char *args[] = { s->instance, mines, expat };
        redisReply *r = NULL;
        int rc = run(s, s->wc, S_SYNC, 3, keys, 3, args, &r);
        if (rc == RUN_IO) return rc;
        if (rc != RUN_OK) continue;
        long long had = elem_ll(r, 0), prev = elem_ll(r, 1);
        pthread_mutex_lock(&s->mu);
        s->teams[i].fig_known = 1;
        s->teams[i].fig_start = start;
        s->teams[i].fig_spent = elem_ll(r, 2);
        s->teams[i].fig_loaned = elem_ll(r, 3);
        pthread_mutex_unlock(&s->mu);
        freeReplyObject(r);
        if (mine > prev)
            base_log("budget store: Redis had %s of this instance's spend for team %s this "
                    "period (%lld of %lld nanos; it lost data?): re-added the rest from the "
                    "ledger; the team's fleet totals are incomplete until every instance has "
                    "re-added its own", had ? "only part" : "no record", name, prev,
                    (long long)mine);
        else if (mine < prev)
            base_log("budget store: team %s: this instance's share in Redis was %lld nanos, "
                    "its ledger says %lld; set to the ledger's", name, prev, (long long)mine);
    }
    return RUN_OK;
}

/* Adds the holds admitted locally during an outage (still in flight) to
 * Redis, so the fleet sees them loaned. */
static int adopt_local(store_t *s)
{
    for (;;) {
        char name[64], rid[48], amt[24], lease[24], expat[24];
        period_t p;
        int64_t start;
        pthread_mutex_lock(&s->mu);
        budget_hold_t *h = s->live.next;
        while (h != &s->live && h->in_fb != 1) h = h->next;
        if (h == &s->live) { pthread_mutex_unlock(&s->mu); return RUN_OK; }
        h->in_fb = 2;                /* adopted (still settles in fb) */
        snprintf(name, sizeof name, "%s", s->teams[h->team].name);
        snprintf(rid, sizeof rid, "%s", h->rid);
        snprintf(amt, sizeof amt, "%lld", (long long)h->amount);
        p = h->period;
        start = h->period_start;
        pthread_mutex_unlock(&s->mu);
        pkeys_t k;
        pkeys_of(&k, name, p, start);
        snprintf(lease, sizeof lease, "%d", s->lease_ms);
        expat_of(expat, sizeof expat, p, start);
        const char *keys[] = { k.spent, k.loaned, k.holds, k.lease };
        const char *args[] = { rid, amt, "-1", lease, expat, s->instance };
        redisReply *r = NULL;
        int rc = run(s, s->wc, S_RESERVE, 4, keys, 6, args, &r);
        if (r) freeReplyObject(r);
        if (rc == RUN_IO) return rc;
    }
}

/* Renews the leases of every hold in flight, one script per team period. */
static int renew_all(store_t *s)
{
    enum { MAXR = 64 };
    const char *args[MAXR + 1];
    char rids[MAXR][48], name[64], lease[24];
    snprintf(lease, sizeof lease, "%d", s->lease_ms);
    args[0] = lease;
    for (size_t team = 0;; team++) {
        pthread_mutex_lock(&s->mu);
        if (team >= s->n) { pthread_mutex_unlock(&s->mu); return RUN_OK; }
        snprintf(name, sizeof name, "%s", s->teams[team].name);
        pthread_mutex_unlock(&s->mu);
        int64_t done_upto = -1;          /* period starts are renewed in order */
        for (;;) {
            int n = 0;
            period_t p = PERIOD_NONE;
            int64_t start = -1;
            pthread_mutex_lock(&s->mu);
            for (budget_hold_t *h = s->live.next; h != &s->live && n < MAXR; h = h->next) {
                if (h->team != (int)team || h->period_start <= done_upto) continue;
                if (start < 0) { start = h->period_start; p = h->period; }
                if (h->period_start != start || h->period != p) continue;
                snprintf(rids[n], sizeof rids[n], "%s", h->rid);
                args[1 + n] = rids[n];
                n++;
            }
            pthread_mutex_unlock(&s->mu);
            if (n == 0) break;
            pkeys_t k;
            pkeys_of(&k, name, p, start);
            const char *keys[] = { k.lease };
            redisReply *r = NULL;
            int rc = run(s, s->wc, S_RENEW, 1, keys, 1 + n, args, &r);
            if (r) freeReplyObject(r);
            if (rc == RUN_IO) return rc;
            if (n < MAXR) done_upto = start;   /* else the same period again, later holds */
            else break;                        /* huge batches: the rest next round */
        }
    }
}

static int beat(store_t *s)
{
    const char *keys[] = { "pm:instances" };
    char stale[16];
    snprintf(stale, sizeof stale, "%d", STALE_MS);
    const char *args[] = { s->instance, stale };
    redisReply *r = NULL;
    int rc = run(s, s->wc, S_BEAT, 1, keys, 2, args, &r);
    if (rc != RUN_OK) return rc;
    pthread_mutex_lock(&s->mu);
    s->instances = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : 1;
    pthread_mutex_unlock(&s->mu);
    freeReplyObject(r);
    return RUN_OK;
}

/* Connects (again): the op that may have been cut mid-way first, then the
 * share sync, locally admitted holds, the beat; then the store is up. */
static int reconnect(store_t *s)
{
    if (!s->wc && !(s->wc = dial(s, WORK_TIMEOUT_MS))) return RUN_IO;
    if (send_batch(s) == RUN_IO || sync_all(s) == RUN_IO || adopt_local(s) == RUN_IO ||
        beat(s) == RUN_IO)
        return RUN_IO;
    /* The callers' connections may predate a Redis restart: dial anew. */
    pthread_mutex_lock(&s->fmu);
    if (s->fc) { redisFree(s->fc); s->fc = NULL; }
    pthread_mutex_unlock(&s->fmu);
    pthread_mutex_lock(&s->rmu);
    s->rredial = 1;
    pthread_mutex_unlock(&s->rmu);
    pthread_mutex_lock(&s->mu);
    int64_t was = s->down_since_ms;
    size_t queued = s->qlen;
    s->fb_on = 0;
    s->down_since_ms = 0;
    atomic_store(&s->up, 1);
    if (s->ever_up && was)
        base_log("budget store: Redis is back after %.1f s; %zu queued settlement(s) being "
                "written", (double)(base_mono_ms() - was) / 1000.0, queued);
    else if (!s->ever_up && s->announce)
        base_log("budget store: Redis at %s:%d reachable; serving", s->host, s->port);
    s->ever_up = 1;
    pthread_mutex_unlock(&s->mu);
    return RUN_OK;
}

static void drop_worker_conn(store_t *s, const char *why)
{
    if (s->wc) { redisFree(s->wc); s->wc = NULL; }
    mark_down(s, why);
}

static void *worker(void *arg)
{
    store_t *s = arg;
    int64_t next_tick = 0, next_renew = 0, stop_by = 0;
    int renew_ms = s->lease_ms / 3 > 200 ? s->lease_ms / 3 : 200;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int64_t now = base_mono_ms();
        if (s->stop && !stop_by) stop_by = now + 3000;
        int up0 = atomic_load(&s->up);
        int stopping = s->stop && (!s->qhead || !up0 || now >= stop_by);
        int64_t until = up0 && next_renew < next_tick ? next_renew : next_tick;
        if (!stopping && now < until && !s->kick && (!up0 || !s->qhead)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t wait = until - now;
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) { ts.tv_sec++; ts.tv_nsec -= 1000000000; }
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        int up = atomic_load(&s->up);
        pthread_mutex_unlock(&s->mu);
        if (stopping) break;
        now = base_mono_ms();
        if (!up || !s->wc) {
            pthread_mutex_lock(&s->mu);
            int kick = s->kick;
            s->kick = 0;
            pthread_mutex_unlock(&s->mu);
            if (now < next_tick && !kick) continue;
            next_tick = now + TICK_MS;
            if (reconnect(s) == RUN_IO) drop_worker_conn(s, "cannot connect");
            continue;
        }
        if (send_batch(s) == RUN_IO) { drop_worker_conn(s, "no answer"); continue; }
        if (now >= next_tick) {
            next_tick = now + 1000;      /* once a second: liveness and share check */
            if (beat(s) == RUN_IO || sync_all(s) == RUN_IO) {
                drop_worker_conn(s, "no answer");
                next_tick = now + TICK_MS;
                continue;
            }
        }
        if (now >= next_renew) {
            next_renew = now + renew_ms;
            if (renew_all(s) == RUN_IO) drop_worker_conn(s, "no answer");
        }
    }
    return NULL;
}

int store_start(store_t *s, int wait_ms)
{
    pthread_mutex_lock(&s->mu);
    s->down_since_ms = base_mono_ms();      /* not up until the first sync */
    pthread_mutex_unlock(&s->mu);
    if (pthread_create(&s->th, NULL, worker, s) != 0) return 0;
    if (pthread_create(&s->rth, NULL, reserver, s) != 0) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
        return 0;
    }
    pthread_setname_np(s->th, "pm-store");
    pthread_setname_np(s->rth, "pm-reserve");
    s->started = 1;
    for (int waited = 0; waited < wait_ms && !atomic_load(&s->up); waited += 10) {
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (atomic_load(&s->up)) {
        base_log("budget store: Redis at %s:%d db %d, instance %s, lease %d ms", s->host,
                s->port, s->db, s->instance, s->lease_ms);
        return 1;
    }
    pthread_mutex_lock(&s->mu);
    s->announce = !s->ever_up;
    pthread_mutex_unlock(&s->mu);
    base_log("budget store: Redis at %s:%d is not reachable yet; %s until it is", s->host,
            s->port, s->down_local ? "on_store_down=local, but with no figures from Redis "
                                     "yet, capped teams get 503"
                                   : "on_store_down=closed: requests get 503");
    return 0;
}

void store_free(store_t *s)
{
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->rmu);      /* the reserver answers what is waiting, then ends */
        s->rstop = 1;
        pthread_cond_signal(&s->rcv);
        pthread_mutex_unlock(&s->rmu);
        pthread_join(s->rth, NULL);
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->th, NULL);
    }
    if (s->qlen)
        base_log("budget store: %zu settlement(s) not written to Redis at stop; the ledger has "
                "them and the next start re-adds this instance's share", s->qlen);
    while (s->qhead) {
        op_t *o = s->qhead;
        s->qhead = o->next;
        free(o);
    }
    if (s->fc) redisFree(s->fc);
    if (s->wc) redisFree(s->wc);
    if (s->rc) redisFree(s->rc);
    free(s->batch);
    book_free(s->acct);
    book_free(s->fb);
    free(s->teams);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fmu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->rcv);
    memset(s->password, 0, sizeof s->password);
    free(s);
}

const char *store_state(store_t *s)
{
    return atomic_load(&s->up) ? "redis" : "redis-down";
}

void store_account_sync(store_t *s, nanos_t total, nanos_t available)
{
    pthread_mutex_lock(&s->mu);
    book_account_sync(s->acct, total, available);
    pthread_mutex_unlock(&s->mu);
}

void store_account_exhausted(store_t *s)
{
    pthread_mutex_lock(&s->mu);
    book_account_exhausted(s->acct);
    pthread_mutex_unlock(&s->mu);
}

int store_account_view(store_t *s, book_view_t *out)
{
    int on;
    pthread_mutex_lock(&s->mu);
    on = book_account_enabled(s->acct);
    if (on) book_account_view(s->acct, out);
    pthread_mutex_unlock(&s->mu);
    return on ? 0 : -1;
}
