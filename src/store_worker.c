/* store_worker: the store's worker thread (see store_int.h) and its own
 * connection. Writes the queued settles and releases in pipelines, keeps this
 * instance's share of each team's period, and of each capped key's, equal to
 * mine (the sync), adds the
 * holds admitted locally during an outage to Redis (adoption), renews the
 * leases of holds in flight, beats for the instance count, and reconnects
 * while Redis is down. Everything it writes is retried until Redis
 * acknowledges it; store.c explains why that keeps the share exact. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DONE_TTL_S   (2 * 86400)      /* how long a settled mark is kept */
#define WORK_TIMEOUT_MS 2000
#define TICK_MS      250
#define STALE_MS     15000            /* an instance not seen for this long is gone */
#define OP_BATCH     256              /* settles and releases per pipeline */

static int64_t wall_s(void)
{
    return (int64_t)time(NULL);
}

/* ---- settles and releases ---- */

/* The arguments of one queued op's script, and its call in the pipeline. */
typedef struct opargs {
    pkeys_t k;
    char done[160], charge[24], expat[24], ttl[24], tokens[24], track[4];
    const char *keys[9], *args[8];
    rconn_call_t call;
} opargs_t;

struct opargs *st_batch_new(void)
{
    return calloc(OP_BATCH, sizeof(opargs_t));
}

/* The "track" argument of the settle script: what the hold took. */
static void track_of(char out[4], int track)
{
    int n = 0;
    if (track & ST_T_KCAP) out[n++] = 'c';
    if (track & ST_T_TLIM) out[n++] = 't';
    if (track & ST_T_KLIM) out[n++] = 'k';
    out[n] = '\0';
}

/* team and kid: the names of o's team and key ("" none). */
static void op_args(store_t *s, const op_t *o, const char *team, const char *kid, opargs_t *a)
{
    rconn_call_t *c = &a->call;
    st_pkeys_of(&a->k, team, o->period, o->start);
    if (o->kind == OP_SETTLE) {
        st_done_key(a->done, sizeof a->done, team, o->rid);
        snprintf(a->charge, sizeof a->charge, "%lld", (long long)o->charge);
        st_expat_of(a->expat, sizeof a->expat, o->period, o->start);
        snprintf(a->ttl, sizeof a->ttl, "%d", DONE_TTL_S);
        snprintf(a->tokens, sizeof a->tokens, "%lld", (long long)o->tokens);
        track_of(a->track, o->track);
        const char *k[] = { a->k.spent, a->k.loaned, a->k.holds, a->k.lease, a->k.by, a->done,
                            a->k.keys, a->k.lim, a->k.limlease };
        const char *v[] = { o->rid, a->charge, s->instance, a->expat, a->ttl, kid, a->tokens,
                            a->track };
        memcpy(a->keys, k, sizeof k);
        memcpy(a->args, v, sizeof v);
        c->script = S_SETTLE;
        c->nk = 9;
        c->na = 8;
    } else {
        const char *k[] = { a->k.loaned, a->k.holds, a->k.lease, a->k.keys, a->k.lim,
                            a->k.limlease };
        memcpy(a->keys, k, sizeof k);
        a->args[0] = o->rid;
        c->script = S_RELEASE;
        c->nk = 6;
        c->na = 1;
    }
    c->keys = a->keys;
    c->args = a->args;
}

/* mine of a period that was start when charged: grows by charge. */
static void mine_add(int64_t *mine_start, nanos_t *mine, int64_t start, nanos_t charge)
{
    if (start == *mine_start) *mine += charge;
    else if (start > *mine_start) { *mine_start = start; *mine = charge; }
}

/* After an acknowledged settle: this instance's share grows by the charge,
 * the team's and its key's (kept here whether or not the key's figures are
 * in Redis: a key that gets a cap is synced from it). */
static void op_done(store_t *s, const op_t *o)
{
    pthread_mutex_lock(&s->mu);
    rteam_t *t = &s->teams[o->team];
    if (o->kind == OP_SETTLE && o->period == t->period)
        mine_add(&t->mine_start, &t->mine, o->start, o->charge);
    if (o->kind == OP_SETTLE && o->key >= 0 && (size_t)o->key < s->nk &&
        o->period == s->keys[o->key].period)
        mine_add(&s->keys[o->key].mine_start, &s->keys[o->key].mine, o->start, o->charge);
    pthread_mutex_unlock(&s->mu);
}

/* An op's outcome. RCONN_OK also when Redis says it was already done. */
static void op_outcome(store_t *s, op_t *o, int rc)
{
    if (rc == RCONN_IO) return;
    if (rc == RCONN_OK) op_done(s, o);
    else base_log("budget store: %s of %s refused by Redis; dropped (the ledger has it)",
                 o->kind == OP_SETTLE ? "settlement" : "release", o->rid);
    o->acked = 1;
}

/* Sends the first OP_BATCH ops of the queue (those not yet acknowledged) in
 * one pipeline and drops the acknowledged ones from the head. Each settle is
 * idempotent, so ops whose reply was lost are simply sent again: after a
 * reconnect this runs before the share sync, so every op that may have been
 * applied is acknowledged (and counted in mine) before mine is compared.
 * Redis busy counts as a lost connection (RCONN_BUSY_FAILS). */
static int send_batch(store_t *s)
{
    op_t *v[OP_BATCH];
    char names[OP_BATCH][64], kids[OP_BATCH][64];
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (op_t *o = s->qhead; o && n < OP_BATCH; o = o->next) {
        if (o->acked) continue;
        snprintf(names[n], sizeof names[n], "%s", s->teams[o->team].name);
        snprintf(kids[n], sizeof kids[n], "%s",
                 o->key >= 0 && (size_t)o->key < s->nk ? s->keys[o->key].id : "");
        v[n++] = o;
    }
    pthread_mutex_unlock(&s->mu);
    opargs_t *a = s->batch;
    for (int i = 0; i < n; i++) {
        op_args(s, v[i], names[i], kids[i], &a[i]);
        a[i].call.next = i + 1 < n ? &a[i + 1].call : NULL;
    }
    int rc = rconn_pipeline(s->wc, n ? &a[0].call : NULL, RCONN_BUSY_FAILS);
    for (int i = 0; i < n; i++) op_outcome(s, v[i], a[i].call.rc);
    pthread_mutex_lock(&s->mu);
    st_queue_trim_locked(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- the share, adopted holds, leases, the beat ---- */

/* One capped key's sync in a pipeline. */
typedef struct ksync {
    int slot;
    int64_t start;
    pkeys_t k;
    char kid[64], mine[24], expat[24];
    const char *keys[1], *args[4];
    rconn_call_t call;
} ksync_t;

/* Makes this instance's share of each capped key's current period equal to
 * its mine, KB keys a pipeline. (A key without a cap has no figures in
 * Redis; its mine is kept, so when a reload gives it a cap its first sync
 * brings in what it spent so far.) */
static int sync_keys(store_t *s, int64_t now)
{
    enum { KB = 32 };
    ksync_t v[KB];
    for (size_t next = 0;;) {
        int n = 0;
        pthread_mutex_lock(&s->mu);
        for (; next < s->nk && n < KB; next++) {
            rkey_t *k = &s->keys[next];
            if (k->cap < 0 || k->team < 0 || (size_t)k->team >= s->n ||
                !s->teams[k->team].name[0])
                continue;
            ksync_t *x = &v[n++];
            int64_t start = book_period_start(k->period, now);
            if (k->mine_start < start) { k->mine_start = start; k->mine = 0; }
            x->slot = (int)next;
            x->start = start;
            st_pkeys_of(&x->k, s->teams[k->team].name, k->period, start);
            snprintf(x->kid, sizeof x->kid, "%s", k->id);
            snprintf(x->mine, sizeof x->mine, "%lld",
                     (long long)(k->mine_start == start ? k->mine : 0));
            st_expat_of(x->expat, sizeof x->expat, k->period, start);
        }
        pthread_mutex_unlock(&s->mu);
        if (n == 0) return RCONN_OK;
        for (int i = 0; i < n; i++) {
            ksync_t *x = &v[i];
            x->keys[0] = x->k.keys;
            x->args[0] = x->kid;
            x->args[1] = s->instance;
            x->args[2] = x->mine;
            x->args[3] = x->expat;
            x->call = (rconn_call_t){ .next = i + 1 < n ? &v[i + 1].call : NULL,
                                      .script = S_KSYNC, .nk = 1, .na = 4,
                                      .keys = x->keys, .args = x->args };
        }
        if (rconn_pipeline(s->wc, &v[0].call, RCONN_BUSY_FAILS) == RCONN_IO) return RCONN_IO;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < n; i++) {
            if (v[i].call.rc != RCONN_OK) continue;
            rkey_t *k = &s->keys[v[i].slot];
            k->fig_known = 1;
            k->fig_start = v[i].start;
            k->fig_spent = v[i].call.reply.elem[2];
            k->fig_loaned = v[i].call.reply.elem[3];
        }
        pthread_mutex_unlock(&s->mu);
    }
}

/* Makes this instance's share of each team's current period equal to mine,
 * then each capped key's. */
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
        st_pkeys_of(&k, name, p, start);
        char mines[24], expat[24];
        snprintf(mines, sizeof mines, "%lld", (long long)mine);
        st_expat_of(expat, sizeof expat, p, start);
        const char *keys[] = { k.spent, k.by, k.loaned };
        const char *args[] = { s->instance, mines, expat };
        rconn_reply_t r;
        int rc = rconn_run(s->wc, S_SYNC, 3, keys, 3, args, &r);
        if (rc == RCONN_IO) return rc;
        if (rc != RCONN_OK) continue;
        long long had = r.elem[0], prev = r.elem[1];
        pthread_mutex_lock(&s->mu);
        s->teams[i].fig_known = 1;
        s->teams[i].fig_start = start;
        s->teams[i].fig_spent = r.elem[2];
        s->teams[i].fig_loaned = r.elem[3];
        pthread_mutex_unlock(&s->mu);
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
    return sync_keys(s, now);
}

/* Adds the holds admitted locally during an outage (still in flight) to
 * Redis, so the fleet sees them loaned. */
static int adopt_local(store_t *s)
{
    for (;;) {
        char name[64], rid[48], amt[24], lease[24], expat[24], kid[64], kcap[24];
        char tlim[112], klim[112];
        period_t p;
        int64_t start;
        pthread_mutex_lock(&s->mu);
        budget_hold_t *h = s->live.next;
        while (h != &s->live && h->in_fb != 1) h = h->next;
        if (h == &s->live) { pthread_mutex_unlock(&s->mu); return RCONN_OK; }
        h->in_fb = 2;                /* adopted (still settles in fb) */
        const rteam_t *t = &s->teams[h->team];
        const rkey_t *key = h->key >= 0 ? &s->keys[h->key] : NULL;
        snprintf(name, sizeof name, "%s", t->name);
        snprintf(rid, sizeof rid, "%s", h->rid);
        snprintf(amt, sizeof amt, "%lld", (long long)h->amount);
        snprintf(kid, sizeof kid, "%s", key ? key->id : "");
        snprintf(kcap, sizeof kcap, "%lld", (long long)(key && key->cap >= 0 ? key->cap : -1));
        st_lim_fmt(tlim, sizeof tlim, &t->lim);
        if (key) st_lim_fmt(klim, sizeof klim, &key->lim);
        else klim[0] = '\0';
        /* From now on its settle tells Redis what the adoption took. */
        h->limited |= (key && key->cap >= 0 ? ST_T_KCAP : 0) | (tlim[0] ? ST_T_TLIM : 0) |
                      (klim[0] ? ST_T_KLIM : 0);
        p = h->period;
        start = h->period_start;
        pthread_mutex_unlock(&s->mu);
        pkeys_t k;
        st_pkeys_of(&k, name, p, start);
        snprintf(lease, sizeof lease, "%d", s->lease_ms);
        st_expat_of(expat, sizeof expat, p, start);
        const char *keys[] = { k.spent, k.loaned, k.holds, k.lease, k.keys, k.lim, k.limlease };
        const char *args[] = { rid, amt, "-1", lease, expat, s->instance, kid, kcap, "0",
                               tlim, klim, "a" };
        if (rconn_run(s->wc, S_RESERVE, 7, keys, 12, args, NULL) == RCONN_IO) return RCONN_IO;
    }
}

/* One live hold to renew. */
typedef struct renewal {
    char team[64];
    period_t p;
    int64_t start;
    char rid[48];
} renewal_t;

static int renewal_cmp(const void *a, const void *b)
{
    const renewal_t *x = a, *y = b;
    int c = strcmp(x->team, y->team);
    if (c) return c;
    if (x->p != y->p) return x->p < y->p ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Renews the leases of every hold in flight (its period hold and its
 * rate-limit record), up to MAXR a script, one script per team period and
 * batch. */
static int renew_all(store_t *s)
{
    enum { MAXR = 64 };
    size_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (budget_hold_t *h = s->live.next; h != &s->live; h = h->next) n++;
    renewal_t *v = n ? malloc(n * sizeof *v) : NULL;
    if (!v) {                            /* none, or no memory: the next round */
        pthread_mutex_unlock(&s->mu);
        return RCONN_OK;
    }
    size_t i = 0;
    for (budget_hold_t *h = s->live.next; h != &s->live; h = h->next, i++) {
        snprintf(v[i].team, sizeof v[i].team, "%s", s->teams[h->team].name);
        v[i].p = h->period;
        v[i].start = h->period_start;
        snprintf(v[i].rid, sizeof v[i].rid, "%s", h->rid);
    }
    pthread_mutex_unlock(&s->mu);
    qsort(v, n, sizeof *v, renewal_cmp);
    const char *args[MAXR + 1];
    char lease[24];
    snprintf(lease, sizeof lease, "%d", s->lease_ms);
    args[0] = lease;
    int rc = RCONN_OK;
    for (i = 0; i < n && rc != RCONN_IO;) {
        size_t j = i;
        int m = 0;
        while (j < n && m < MAXR && renewal_cmp(&v[i], &v[j]) == 0) args[1 + m++] = v[j++].rid;
        pkeys_t k;
        st_pkeys_of(&k, v[i].team, v[i].p, v[i].start);
        const char *keys[] = { k.lease, k.limlease, k.lim };
        rc = rconn_run(s->wc, S_RENEW, 3, keys, 1 + m, args, NULL);
        i = j;
    }
    free(v);
    return rc == RCONN_IO ? RCONN_IO : RCONN_OK;
}

static int beat(store_t *s)
{
    const char *keys[] = { ST_INSTANCES_KEY };
    char stale[16];
    snprintf(stale, sizeof stale, "%d", STALE_MS);
    const char *args[] = { s->instance, stale };
    rconn_reply_t r;
    int rc = rconn_run(s->wc, S_BEAT, 1, keys, 2, args, &r);
    if (rc != RCONN_OK) return rc;
    pthread_mutex_lock(&s->mu);
    s->instances = r.is_int ? (int)r.integer : 1;
    pthread_mutex_unlock(&s->mu);
    return RCONN_OK;
}

/* ---- connecting and the loop ---- */

/* Connects (again): the op that may have been cut mid-way first, then the
 * share sync, locally admitted holds, the beat; then the store is up. */
static int reconnect(store_t *s)
{
    if (!s->wc && !(s->wc = rconn_dial(s->site, WORK_TIMEOUT_MS))) return RCONN_IO;
    if (send_batch(s) == RCONN_IO || sync_all(s) == RCONN_IO || adopt_local(s) == RCONN_IO ||
        beat(s) == RCONN_IO)
        return RCONN_IO;
    /* The callers' connections may predate a Redis restart: dial anew. */
    pthread_mutex_lock(&s->fmu);
    rconn_close(s->fc);
    s->fc = NULL;
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
    return RCONN_OK;
}

static void drop_worker_conn(store_t *s, const char *why)
{
    rconn_close(s->wc);
    s->wc = NULL;
    st_mark_down(s, why);
}

void *st_worker(void *arg)
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
            if (reconnect(s) == RCONN_IO) drop_worker_conn(s, "cannot connect");
            continue;
        }
        if (send_batch(s) == RCONN_IO) { drop_worker_conn(s, "no answer"); continue; }
        if (now >= next_tick) {
            next_tick = now + 1000;      /* once a second: liveness and share check */
            if (beat(s) == RCONN_IO || sync_all(s) == RCONN_IO) {
                drop_worker_conn(s, "no answer");
                next_tick = now + TICK_MS;
                continue;
            }
        }
        if (now >= next_renew) {
            next_renew = now + renew_ms;
            if (renew_all(s) == RCONN_IO) drop_worker_conn(s, "no answer");
        }
    }
    return NULL;
}
