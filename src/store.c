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
 * Key caps and rate limits: a key's spent and loaned for its team's period
 * sit next to the team's (the period's keys hash, same hash tag) while the
 * key has a cap; the rate-limit windows, in-flight counts and spend windows
 * of a team and of each key that has limits sit in the team's lim hash.
 * The reserve script checks and takes all of it with the team's reserve;
 * settle and release end it. This instance's share of each capped key's
 * spend is kept and re-synced like the team's. While Redis is down, the
 * limits apply per instance, against this instance's own windows of its own
 * traffic (kept all along), and key caps against a local share like the
 * team's.
 *
 * This file: the public API (store.h) but the reservations, start and
 * free. The reservations and the reserver thread are in store_reserve.c,
 * the worker in store_worker.c, the shared state in store_state.c
 * (store_int.h); the connections and scripts are rconn's. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern const char pm_lua_reserve[], pm_lua_settle[], pm_lua_release[], pm_lua_renew[],
                  pm_lua_sync[], pm_lua_view[], pm_lua_beat[], pm_lua_claim[], pm_lua_ksync[];

#define FAST_TIMEOUT_MS 300           /* a view waits at most this for Redis */
#define DEFAULT_LEASE_MS 30000

/* ---- lifecycle and teams ---- */

store_t *store_new(size_t n_teams, const budget_store_conf_t *c, char *err, size_t errlen)
{
    store_t *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err, errlen, "out of memory"); return NULL; }
    pthread_mutex_init(&s->mu, NULL);
    s->acct = book_new(0);
    s->fb = book_new(0);
    s->kfb = book_new(0);
    s->batch = st_batch_new();
    const char *const texts[S_N] = { pm_lua_reserve, pm_lua_settle, pm_lua_release,
                                     pm_lua_renew, pm_lua_sync, pm_lua_view, pm_lua_beat,
                                     pm_lua_claim, pm_lua_ksync };
    rconn_conf_t rcf = { .host = c->host, .port = c->port, .db = c->db,
                         .password = c->password, .scripts = texts, .n_scripts = S_N,
                         .who = "budget store" };
    s->site = rconn_site_new(&rcf);
    if (!s->acct || !s->fb || !s->kfb || !s->batch || !s->site || store_grow(s, n_teams) != 0)
        goto fail;
    snprintf(s->host, sizeof s->host, "%s", c->host);
    s->port = c->port;
    s->db = c->db;
    snprintf(s->instance, sizeof s->instance, "%s", c->instance);
    s->lease_ms = c->lease_ms > 0 ? c->lease_ms : DEFAULT_LEASE_MS;
    s->down_local = c->down_local;
    s->live.next = s->live.prev = &s->live;
    pthread_mutex_init(&s->fmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_cond_init(&s->rcv, NULL);
    return s;
fail:
    snprintf(err, errlen, "out of memory");
    pthread_mutex_destroy(&s->mu);
    rconn_site_free(s->site);
    book_free(s->acct);
    book_free(s->fb);
    book_free(s->kfb);
    free(s->teams);
    free(s->batch);
    free(s);
    return NULL;
}

/* Called before the threads start (store_new) or with them running. */
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
    for (size_t i = s->n; i < n; i++) {
        t[i].cap = -1;
        t[i].share = -1;
        ratelim_init(&t[i].local);
    }
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

/* ---- the caller side: views ---- */

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
    const char *keys[] = { k.spent, k.loaned, k.holds, k.lease, k.by, k.keys };
    rconn_reply_t r;
    if (run_fast(s, S_VIEW, 6, keys, 0, NULL, &r) != RCONN_OK) return -1;
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
    int64_t now = now_ms / 1000;
    pthread_mutex_lock(&s->mu);
    book_settle(s->acct, &h->acct, charge, now);
    if (h->in_fb) book_settle(s->fb, &h->fb, charge, now);
    if (h->limited & ST_T_KFB) book_settle(s->kfb, &h->keyh, charge, now);
    st_local_end_locked(s, h, 1, charge, tokens, now_ms);
    st_live_del_locked(h);
    st_enqueue_locked(s, OP_SETTLE, h, charge, tokens);
    pthread_mutex_unlock(&s->mu);
}

void store_release(store_t *s, budget_hold_t *h, int64_t now_ms)
{
    pthread_mutex_lock(&s->mu);
    book_release(s->acct, &h->acct);
    if (h->in_fb) book_release(s->fb, &h->fb);
    if (h->limited & ST_T_KFB) book_release(s->kfb, &h->keyh);
    st_local_end_locked(s, h, 0, 0, 0, now_ms);
    st_live_del_locked(h);
    st_enqueue_locked(s, OP_RELEASE, h, 0, 0);
    pthread_mutex_unlock(&s->mu);
}

/* ---- start and stop ---- */

int store_start(store_t *s, int wait_ms)
{
    pthread_mutex_lock(&s->mu);
    s->down_since_ms = base_mono_ms();      /* not up until the first sync */
    pthread_mutex_unlock(&s->mu);
    if (pthread_create(&s->th, NULL, st_worker, s) != 0) return 0;
    if (pthread_create(&s->rth, NULL, st_reserver, s) != 0) {
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
    book_free(s->kfb);
    free(s->teams);
    free(s->keys);
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

/* ---- key caps and rate limits ---- */

int store_grow_keys(store_t *s, size_t n)
{
    int rc = -1;
    pthread_mutex_lock(&s->mu);
    if (n <= s->nk) { rc = 0; goto out; }
    rkey_t *k = realloc(s->keys, n * sizeof *k);
    if (!k) goto out;
    s->keys = k;
    if (book_grow(s->kfb, n) != 0) goto out;
    memset(k + s->nk, 0, (n - s->nk) * sizeof *k);
    for (size_t i = s->nk; i < n; i++) {
        k[i].team = -1;
        k[i].cap = -1;
        k[i].share = -1;
        ratelim_init(&k[i].local);
    }
    s->nk = n;
    rc = 0;
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void store_key_set(store_t *s, int key, nanos_t cap, period_t period)
{
    pthread_mutex_lock(&s->mu);
    if (key >= 0 && (size_t)key < s->nk) {
        s->keys[key].cap = cap;
        s->keys[key].period = period;
    }
    pthread_mutex_unlock(&s->mu);
}

void store_key_reset(store_t *s, int key, int team, const char *key_id, nanos_t cap,
                     period_t period, int64_t period_start, nanos_t spent)
{
    pthread_mutex_lock(&s->mu);
    if (key >= 0 && (size_t)key < s->nk) {
        rkey_t *k = &s->keys[key];
        snprintf(k->id, sizeof k->id, "%s", key_id);
        k->team = team;
        k->cap = cap;
        k->period = period;
        k->mine_start = period_start;
        k->mine = spent;
        k->fig_known = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

void store_team_limits(store_t *s, int team, const ratelim_conf_t *c)
{
    pthread_mutex_lock(&s->mu);
    if (team >= 0 && (size_t)team < s->n) s->teams[team].lim = *c;
    pthread_mutex_unlock(&s->mu);
}

void store_key_limits(store_t *s, int key, const ratelim_conf_t *c)
{
    pthread_mutex_lock(&s->mu);
    if (key >= 0 && (size_t)key < s->nk) s->keys[key].lim = *c;
    pthread_mutex_unlock(&s->mu);
}

/* The fleet's figures of a capped key; an uncapped key's are not kept in
 * Redis: cap -1, spent and loaned 0. */
int store_key_view(store_t *s, int key, int64_t now, book_view_t *out)
{
    pthread_mutex_lock(&s->mu);
    if (key < 0 || (size_t)key >= s->nk || s->keys[key].team < 0 || !atomic_load(&s->up)) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    rkey_t *k = &s->keys[key];
    nanos_t cap = k->cap;
    int64_t start = book_period_start(k->period, now);
    char kid[64];
    snprintf(kid, sizeof kid, "%s", k->id);
    pkeys_t pk;
    st_pkeys_of(&pk, s->teams[k->team].name, k->period, start);
    pthread_mutex_unlock(&s->mu);
    memset(out, 0, sizeof *out);
    out->cap = out->available = -1;
    if (cap < 0) return 0;
    const char *keys[] = { pk.spent, pk.loaned, pk.holds, pk.lease, pk.by, pk.keys };
    const char *args[] = { kid };
    rconn_reply_t r;
    if (run_fast(s, S_VIEW, 6, keys, 1, args, &r) != RCONN_OK) return -1;
    out->cap = cap;
    out->spent = r.elem[3];
    out->loaned = r.elem[4];
    out->available = cap - out->spent - out->loaned;
    pthread_mutex_lock(&s->mu);
    k = &s->keys[key];
    k->fig_known = 1;
    k->fig_start = start;
    k->fig_spent = out->spent;
    k->fig_loaned = out->loaned;
    pthread_mutex_unlock(&s->mu);
    return 0;
}
