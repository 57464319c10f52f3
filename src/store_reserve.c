/* store_reserve: reservations in the shared store (see store_int.h). A
 * reservation is prepared under mu (the account projection, then either an
 * answer without Redis while it is down, or the reserve script's
 * arguments), sent — alone on the caller's connection (store_reserve), or
 * pipelined with every other one waiting by the reserver thread
 * (store_reserve_async), one round trip for all of them — and its answer
 * applied under mu. The script checks and takes, in one atomic step, the
 * team's cap, the key's cap, and the team's and the key's rate limits and
 * runaway guard (src/lua/reserve.lua); a subject without limits is not
 * counted, so it costs nothing there. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAST_TIMEOUT_MS 300           /* a reserve waits at most this for Redis */

/* One reservation on its way through Redis. */
typedef struct pend {
    struct pend *next;
    int team, key;
    nanos_t amount, cap, kcap;
    int64_t tokens, now_ms;
    char rid[48];
    budget_hold_t *h;
    budget_why_t why;
    budget_reserved_fn cb;         /* NULL: a synchronous call */
    void *arg;
    int rc;                        /* BUDGET_* once decided */
    int send;                      /* needs the script */
    int track;                     /* ST_T_REDIS bits the script is asked to take */
    pkeys_t k;
    char amt[24], caps[24], lease[24], expat[24], kid[64], kcaps[24], tok[24];
    char tlim[112], klim[112];
    const char *keys[7], *args[12];
    rconn_call_t call;             /* the script; call.rc its RCONN_* */
} pend_t;

static void pend_init(pend_t *p, const budget_req_t *q, budget_hold_t *h)
{
    memset(p, 0, sizeof *p);
    p->team = q->team;
    p->key = q->key;
    p->amount = q->amount;
    p->tokens = q->tokens;
    p->now_ms = q->now_ms;
    p->h = h;
    snprintf(p->rid, sizeof p->rid, "%s", q->rid);
}

/* Step 1, with mu held: the account projection, then either an answer
 * without Redis (store down) or the script's arguments. */
static void pend_prepare_locked(store_t *s, pend_t *p)
{
    budget_hold_t *h = p->h;
    int64_t now = p->now_ms / 1000;
    memset(h, 0, sizeof *h);
    h->key = -1;
    p->send = 0;
    if (p->team < 0 || (size_t)p->team >= s->n) { p->rc = BUDGET_REFUSED; return; }
    rteam_t *t = &s->teams[p->team];
    if (book_reserve(s->acct, p->team, p->amount, now, &h->acct, &p->why.money) != 0) {
        p->rc = BUDGET_REFUSED;           /* the account projection */
        return;
    }
    h->team = p->team;
    h->key = p->key >= 0 && (size_t)p->key < s->nk ? p->key : -1;
    h->amount = p->amount;
    h->tokens = p->tokens;
    h->taken_ms = p->now_ms;
    h->period = t->period;
    h->period_start = book_period_start(t->period, now);
    snprintf(h->rid, sizeof h->rid, "%s", p->rid);
    if (!atomic_load(&s->up)) {
        p->rc = st_reserve_down_locked(s, h, &p->why);
        return;
    }
    const rkey_t *k = h->key >= 0 ? &s->keys[h->key] : NULL;
    p->cap = t->cap;
    p->kcap = k ? k->cap : -1;
    p->track = (p->kcap >= 0 ? ST_T_KCAP : 0) | (st_lim_on(&t->lim) ? ST_T_TLIM : 0) |
               (k && st_lim_on(&k->lim) ? ST_T_KLIM : 0);
    st_lim_fmt(p->tlim, sizeof p->tlim, &t->lim);
    if (k) st_lim_fmt(p->klim, sizeof p->klim, &k->lim);
    else p->klim[0] = '\0';
    snprintf(p->kid, sizeof p->kid, "%s", k ? k->id : "");
    st_pkeys_of(&p->k, t->name, h->period, h->period_start);
    snprintf(p->amt, sizeof p->amt, "%lld", (long long)p->amount);
    snprintf(p->caps, sizeof p->caps, "%lld", (long long)(p->cap < 0 ? -1 : p->cap));
    snprintf(p->kcaps, sizeof p->kcaps, "%lld", (long long)(p->kcap < 0 ? -1 : p->kcap));
    snprintf(p->tok, sizeof p->tok, "%lld", (long long)p->tokens);
    snprintf(p->lease, sizeof p->lease, "%d", s->lease_ms);
    st_expat_of(p->expat, sizeof p->expat, h->period, h->period_start);
    const char *keys[] = { p->k.spent, p->k.loaned, p->k.holds, p->k.lease, p->k.keys,
                           p->k.lim, p->k.limlease };
    const char *args[] = { p->rid, p->amt, p->caps, p->lease, p->expat, s->instance,
                           p->kid, p->kcaps, p->tok, p->tlim, p->klim, "" };
    memcpy(p->keys, keys, sizeof keys);
    memcpy(p->args, args, sizeof args);
    p->call.script = S_RESERVE;
    p->call.nk = 7;
    p->call.keys = p->keys;
    p->call.na = 12;
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
    return rconn_pipeline(c, head, 0);
}

/* The rate-limit figures of a reply from element i on (which, scope,
 * retry, spent in window, limit, then the six header figures). */
static void rate_of(const long long *e, ratelim_verdict_t *v, int *scope)
{
    v->which = e[0] >= RATELIM_RPM && e[0] <= RATELIM_SPEND_HOUR ? (ratelim_which_t)e[0]
                                                                : RATELIM_OK;
    *scope = e[1] == 2 ? BUDGET_SCOPE_KEY : BUDGET_SCOPE_TEAM;
    v->retry_after_s = e[2] >= 1 ? (int)e[2] : 1;
    v->spent_in_window = e[3];
    v->limit = e[4];
    v->limit_requests = e[5];
    v->remaining_requests = e[6];
    v->reset_requests_ms = e[7];
    v->limit_tokens = e[8];
    v->remaining_tokens = e[9];
    v->reset_tokens_ms = e[10];
}

/* Step 3, with mu held: the answer. */
static void pend_apply_locked(store_t *s, pend_t *p)
{
    if (!p->send) return;
    budget_hold_t *h = p->h;
    rteam_t *t = &s->teams[p->team];
    if (p->call.rc != RCONN_OK) {
        p->rc = st_reserve_down_locked(s, h, &p->why);
        /* The script may have run with its reply lost: unless the request
         * is admitted locally (its hold is adopted under the same id later),
         * have the worker release whatever Redis holds under this id, so it
         * does not sit in loaned (and in flight) until its lease runs out. */
        if (p->rc != BUDGET_OK) st_enqueue_locked(s, OP_RELEASE, h, 0, 0);
        return;
    }
    const long long *e = p->call.reply.elem;
    long long code = e[0], spent = e[1], loaned = e[2], kspent = e[3], kloaned = e[4];
    t->fig_known = 1;
    t->fig_start = h->period_start;
    t->fig_spent = spent;
    t->fig_loaned = loaned;
    if (p->track & ST_T_KCAP) {
        rkey_t *k = &s->keys[h->key];
        k->fig_known = 1;
        k->fig_start = h->period_start;
        k->fig_spent = kspent;
        k->fig_loaned = kloaned;
    }
    book_refusal_t *m = &p->why.money;
    if (code == 1) {
        h->team_available = p->cap >= 0 ? p->cap - spent - loaned : -1;
        h->limited = p->track;
        int scope;
        rate_of(e + 5, &p->why.rate, &scope);
        p->why.rate.which = RATELIM_OK;
        p->why.rate.retry_after_s = 0;
        st_local_take_locked(s, h);
        st_live_add_locked(s, h);
        p->rc = BUDGET_OK;
        return;
    }
    book_release(s->acct, &h->acct);
    if (code == 3) {
        rate_of(e + 5, &p->why.rate, &p->why.rate_scope);
        if (p->why.rate.which != RATELIM_OK) {
            p->rc = BUDGET_LIMITED;
            return;
        }
    }
    int key = code == 2;
    nanos_t cap = key ? p->kcap : p->cap;
    m->scope = key ? BOOK_SCOPE_KEY : BOOK_SCOPE_TEAM;
    m->cap = cap;
    m->spent = key ? kspent : spent;
    m->loaned = key ? kloaned : loaned;
    m->available = cap - m->spent - m->loaned;
    m->required = p->amount;
    m->retry = m->loaned > 0 && cap - m->spent >= p->amount;
    p->rc = BUDGET_REFUSED;
}

int store_reserve(store_t *s, const budget_req_t *q, budget_hold_t *h, budget_why_t *why)
{
    pend_t p;
    pend_init(&p, q, h);
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
    pend_t *p = malloc(sizeof *p);
    if (!p) return -1;
    pend_init(p, q, h);
    p->cb = cb;
    p->arg = arg;
    pthread_mutex_lock(&s->rmu);
    if (s->rtail) s->rtail->next = p;
    else s->rhead = p;
    s->rtail = p;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
    return 0;
}

void *st_reserver(void *arg)
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
