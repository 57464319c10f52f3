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
 * flight are then added to Redis (adopted) before anything else is served.
 *
 * This file: the public API (store.h), the caller side (reserve, view) and
 * the reserver thread that pipelines asynchronous reservations, start and
 * free. The worker is in store_worker.c, the shared state in store_state.c
 * (store_int.h); the connections and scripts are rconn's. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const char pm_lua_reserve[], pm_lua_settle[], pm_lua_release[], pm_lua_renew[],
                  pm_lua_sync[], pm_lua_view[], pm_lua_beat[], pm_lua_claim[];

#define FAST_TIMEOUT_MS 300           /* a reserve waits at most this for Redis */

/* ---- lifecycle and teams ---- */

store_t *store_new(size_t n_teams, const budget_store_conf_t *c, char *err, size_t errlen)
{
    store_t *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    s->acct = book_new(n_teams);
    s->fb = book_new(n_teams);
    s->teams = n_teams ? calloc(n_teams, sizeof *s->teams) : NULL;
    s->batch = st_batch_new();
    const char *const texts[S_N] = { pm_lua_reserve, pm_lua_settle, pm_lua_release,
                                     pm_lua_renew, pm_lua_sync, pm_lua_view, pm_lua_beat,
                                     pm_lua_claim };
    rconn_conf_t rcf = { .host = c->host, .port = c->port, .db = c->db,
                         .password = c->password, .scripts = texts, .n_scripts = S_N,
                         .who = "budget store" };
    s->site = rconn_site_new(&rcf);
    if (!s->acct || !s->fb || (n_teams && !s->teams) || !s->batch || !s->site) goto fail;
    s->n = n_teams;
    snprintf(s->host, sizeof s->host, "%s", c->host);
    s->port = c->port;
    s->db = c->db;
    snprintf(s->instance, sizeof s->instance, "%s", c->instance);
    s->lease_ms = c->lease_ms > 0 ? c->lease_ms : 630000;
    s->down_local = c->down_local;
    s->live.next = s->live.prev = &s->live;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->fmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->rcv, NULL);
    return s;
fail:
    snprintf(err, errlen, "out of memory");
    rconn_site_free(s->site);
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
 * RCONN_IO marks the store down. */
static int run_fast(store_t *s, int id, int nk, const char **keys, int na,
                    const char **args, rconn_reply_t *out)
{
    int rc;
    pthread_mutex_lock(&s->fmu);
    if (!s->fc) s->fc = rconn_dial(s->site, FAST_TIMEOUT_MS);
    if (!s->fc) {
        pthread_mutex_unlock(&s->fmu);
        st_mark_down(s, "cannot connect");
        return RCONN_IO;
    }
    rc = rconn_run(s->fc, id, nk, keys, na, args, out);
    if (rc == RCONN_IO) {
        rconn_close(s->fc);
        s->fc = NULL;
    }
    pthread_mutex_unlock(&s->fmu);
    if (rc == RCONN_IO) st_mark_down(s, "no answer");
    return rc;
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
    budget_why_t why;
    budget_reserved_fn cb;         /* NULL: a synchronous call */
    void *arg;
    int rc;                        /* BUDGET_* once decided */
    int send;                      /* needs the script */
    long long ok, spent, loaned;   /* its answer, when call.rc is RCONN_OK */
    pkeys_t k;
    char amt[24], caps[24], lease[24], expat[24];
    const char *keys[4], *args[6];
    rconn_call_t call;             /* the script; call.rc its RCONN_* */
} pend_t;

/* Step 1, with mu held: the account projection, then either an answer
 * without Redis (store down) or the script's arguments. */
static void pend_prepare_locked(store_t *s, pend_t *p)
{
    budget_hold_t *h = p->h;
    memset(h, 0, sizeof *h);
    h->key = -1;
    p->send = 0;
    if (p->team < 0 || (size_t)p->team >= s->n) { p->rc = BUDGET_REFUSED; return; }
    rteam_t *t = &s->teams[p->team];
    if (book_reserve(s->acct, p->team, p->amount, p->now, &h->acct, &p->why.money) != 0) {
        p->rc = BUDGET_REFUSED;           /* the account projection */
        return;
    }
    h->team = p->team;
    h->amount = p->amount;
    h->period = t->period;
    h->period_start = book_period_start(t->period, p->now);
    snprintf(h->rid, sizeof h->rid, "%s", p->rid);
    if (!atomic_load(&s->up)) {
        p->rc = st_reserve_down_locked(s, p->team, p->amount, p->now, h, &p->why.money);
        return;
    }
    p->cap = t->cap;
    st_pkeys_of(&p->k, t->name, h->period, h->period_start);
    snprintf(p->amt, sizeof p->amt, "%lld", (long long)p->amount);
    snprintf(p->caps, sizeof p->caps, "%lld", (long long)(p->cap < 0 ? -1 : p->cap));
    snprintf(p->lease, sizeof p->lease, "%d", s->lease_ms);
    st_expat_of(p->expat, sizeof p->expat, h->period, h->period_start);
    const char *keys[] = { p->k.spent, p->k.loaned, p->k.holds, p->k.lease };
    const char *args[] = { p->rid, p->amt, p->caps, p->lease, p->expat, s->instance };
    memcpy(p->keys, keys, sizeof keys);
    memcpy(p->args, args, sizeof args);
    p->call.script = S_RESERVE;
    p->call.nk = 4;
    p->call.keys = p->keys;
    p->call.na = 6;
    p->call.args = p->args;
    p->call.rc = RCONN_IO;         /* until Redis answers: a failed dial sends nothing */
    p->send = 1;
}

/* Step 2, without mu: runs the reserve script of every pend that needs it
 * on connection c, pipelined. RCONN_IO when the connection failed (pends
 * without a reply then have call.rc RCONN_IO); Redis busy fails only the
 * pends it answered. */
static int pend_send(rconn_t *c, pend_t *list)
{
    rconn_call_t *head = NULL, **tail = &head;
    for (pend_t *p = list; p; p = p->next) {
        if (!p->send) continue;
        *tail = &p->call;
        tail = &p->call.next;
    }
    *tail = NULL;
    int rc = rconn_pipeline(c, head, 0);
    for (pend_t *p = list; p; p = p->next) {
        if (!p->send || p->call.rc != RCONN_OK) continue;
        p->ok = p->call.reply.elem[0];
        p->spent = p->call.reply.elem[1];
        p->loaned = p->call.reply.elem[2];
    }
    return rc;
}

/* Step 3, with mu held: the answer. */
static void pend_apply_locked(store_t *s, pend_t *p)
{
    if (!p->send) return;
    budget_hold_t *h = p->h;
    rteam_t *t = &s->teams[p->team];
    if (p->call.rc != RCONN_OK) {
        p->rc = st_reserve_down_locked(s, p->team, p->amount, p->now, h, &p->why.money);
        /* The script may have run with its reply lost: unless the request
         * is admitted locally (its hold is adopted under the same id later),
         * have the worker release whatever Redis holds under this id, so it
         * does not sit in loaned until its lease runs out. */
        if (p->rc != BUDGET_OK) st_enqueue_locked(s, OP_RELEASE, h, 0);
        return;
    }
    t->fig_known = 1;
    t->fig_start = h->period_start;
    t->fig_spent = p->spent;
    t->fig_loaned = p->loaned;
    if (p->ok == 1) {
        h->team_available = p->cap >= 0 ? p->cap - p->spent - p->loaned : -1;
        st_live_add_locked(s, h);
        p->rc = BUDGET_OK;
        return;
    }
    book_release(s->acct, &h->acct);
    p->why.money.scope = BOOK_SCOPE_TEAM;
    p->why.money.cap = p->cap;
    p->why.money.spent = p->spent;
    p->why.money.loaned = p->loaned;
    p->why.money.available = p->cap - p->spent - p->loaned;
    p->why.money.required = p->amount;
    p->why.money.retry = p->loaned > 0 && p->cap - p->spent >= p->amount;
    p->rc = BUDGET_REFUSED;
}

int store_reserve(store_t *s, const budget_req_t *q, budget_hold_t *h, budget_why_t *why)
{
    pend_t p;
    memset(&p, 0, sizeof p);
    p.team = q->team;
    p.amount = q->amount;
    p.now = q->now_ms / 1000;
    p.h = h;
    snprintf(p.rid, sizeof p.rid, "%s", q->rid);
    pthread_mutex_lock(&s->mu);
    pend_prepare_locked(s, &p);
    pthread_mutex_unlock(&s->mu);
    if (p.send) {
        int io = 0;
        pthread_mutex_lock(&s->fmu);
        if (!s->fc) s->fc = rconn_dial(s->site, FAST_TIMEOUT_MS);
        if (!s->fc || pend_send(s->fc, &p) == RCONN_IO) {
            io = 1;
            rconn_close(s->fc);
            s->fc = NULL;
        }
        pthread_mutex_unlock(&s->fmu);
        if (io) st_mark_down(s, "no answer");
        pthread_mutex_lock(&s->mu);
        pend_apply_locked(s, &p);
        pthread_mutex_unlock(&s->mu);
    }
    *why = p.why;
    return p.rc;
}

int store_reserve_async(store_t *s, const budget_req_t *q, budget_hold_t *h,
                        budget_reserved_fn cb, void *arg)
{
    pend_t *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->team = q->team;
    p->amount = q->amount;
    p->now = q->now_ms / 1000;
    p->h = h;
    p->cb = cb;
    p->arg = arg;
    snprintf(p->rid, sizeof p->rid, "%s", q->rid);
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
        if (redial && s->rc) { rconn_close(s->rc); s->rc = NULL; }
        if (!list && stop) break;
        int any = 0;
        pthread_mutex_lock(&s->mu);
        for (pend_t *p = list; p; p = p->next) {
            pend_prepare_locked(s, p);
            any |= p->send;
        }
        pthread_mutex_unlock(&s->mu);
        if (any) {
            if (!s->rc) s->rc = rconn_dial(s->site, FAST_TIMEOUT_MS);
            if (!s->rc || pend_send(s->rc, list) == RCONN_IO) {
                rconn_close(s->rc);
                s->rc = NULL;
                st_mark_down(s, "no answer");
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
    st_pkeys_of(&k, t->name, t->period, start);
    pthread_mutex_unlock(&s->mu);
    const char *keys[] = { k.spent, k.loaned, k.holds, k.lease, k.by };
    rconn_reply_t r;
    if (run_fast(s, S_VIEW, 5, keys, 0, NULL, &r) != RCONN_OK) return -1;
    out->cap = cap;
    out->spent = r.elem[0];
    out->loaned = r.elem[1];
    out->available = cap >= 0 ? cap - out->spent - out->loaned : -1;
    pthread_mutex_lock(&s->mu);
    t->fig_known = 1;
    t->fig_start = start;
    t->fig_spent = out->spent;
    t->fig_loaned = out->loaned;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

int store_alert_claim(store_t *s, int team, const char *id, int64_t now)
{
    pthread_mutex_lock(&s->mu);
    if (team < 0 || (size_t)team >= s->n || !atomic_load(&s->up)) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    rteam_t *t = &s->teams[team];
    char key[192], expat[24];
    snprintf(key, sizeof key, "pm:{%s}:alert:%s", t->name, id);
    st_expat_of(expat, sizeof expat, t->period, book_period_start(t->period, now));
    pthread_mutex_unlock(&s->mu);
    const char *keys[] = { key };
    const char *args[] = { s->instance, expat };
    rconn_reply_t r;
    if (run_fast(s, S_CLAIM, 1, keys, 2, args, &r) != RCONN_OK) return -1;
    return r.is_int && r.integer == 1 ? 1 : 0;
}

/* The figures of Redis's last answer, when they are for the current period. */
int store_team_figures(store_t *s, int team, int64_t now, book_view_t *out)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (team >= 0 && (size_t)team < s->n) {
        const rteam_t *t = &s->teams[team];
        if (t->fig_known && t->fig_start == book_period_start(t->period, now)) {
            out->cap = t->cap;
            out->spent = t->fig_spent;
            out->loaned = t->fig_loaned;
            out->available = t->cap >= 0 ? t->cap - t->fig_spent - t->fig_loaned : -1;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- settle and release: queued for the worker ---- */

void store_settle(store_t *s, budget_hold_t *h, nanos_t charge, int64_t tokens,
                  int64_t now_ms)
{
    (void)tokens;
    int64_t now = now_ms / 1000;
    pthread_mutex_lock(&s->mu);
    book_settle(s->acct, &h->acct, charge, now);
    if (h->in_fb) book_settle(s->fb, &h->fb, charge, now);
    st_live_del_locked(h);
    st_enqueue_locked(s, OP_SETTLE, h, charge);
    pthread_mutex_unlock(&s->mu);
}

void store_release(store_t *s, budget_hold_t *h, int64_t now_ms)
{
    (void)now_ms;
    pthread_mutex_lock(&s->mu);
    book_release(s->acct, &h->acct);
    if (h->in_fb) book_release(s->fb, &h->fb);
    st_live_del_locked(h);
    st_enqueue_locked(s, OP_RELEASE, h, 0);
    pthread_mutex_unlock(&s->mu);
}

/* ---- start and stop ---- */

int store_start(store_t *s, int wait_ms)
{
    pthread_mutex_lock(&s->mu);
    s->down_since_ms = base_mono_ms();      /* not up until the first sync */
    pthread_mutex_unlock(&s->mu);
    if (pthread_create(&s->th, NULL, st_worker, s) != 0) return 0;
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
    st_queue_free(s);
    rconn_close(s->fc);
    rconn_close(s->wc);
    rconn_close(s->rc);
    rconn_site_free(s->site);             /* wipes the password */
    free(s->batch);
    book_free(s->acct);
    book_free(s->fb);
    free(s->teams);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fmu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->cv);
    pthread_cond_destroy(&s->rcv);
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

/* ---- key caps and rate limits (not shared through Redis yet) ---- */

int store_grow_keys(store_t *s, size_t n) { (void)s; (void)n; return 0; }

void store_key_reset(store_t *s, int key, int team, const char *key_id, nanos_t cap,
                     period_t period, int64_t period_start, nanos_t spent)
{
    (void)s; (void)key; (void)team; (void)key_id; (void)cap; (void)period;
    (void)period_start; (void)spent;
}

void store_key_set(store_t *s, int key, nanos_t cap, period_t period)
{
    (void)s; (void)key; (void)cap; (void)period;
}

void store_team_limits(store_t *s, int team, const limits_conf_t *c)
{
    (void)s; (void)team; (void)c;
}

void store_key_limits(store_t *s, int key, const limits_conf_t *c)
{
    (void)s; (void)key; (void)c;
}

int store_key_view(store_t *s, int key, int64_t now, book_view_t *out)
{
    (void)s; (void)key; (void)now; (void)out;
    return -1;
}
