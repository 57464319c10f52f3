/* store_state: the bottom of the store module (see store_int.h). Owns the
 * key layout in Redis and the state the reserving threads and the worker
 * share under mu: marking the store down, the local shares and this
 * instance's own rate-limit windows that admit requests during an outage,
 * the list of holds in flight, and the queue of settles and releases for the
 * worker. Calls no other file of the store and does no Redis I/O. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRACE_S      (2 * 86400)      /* period keys outlive their period by this */

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

void st_expat_of(char *out, size_t n, period_t p, int64_t start)
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

void st_pkeys_of(pkeys_t *k, const char *team, period_t p, int64_t start)
{
    char b[128];
    key_base(b, sizeof b, team, p, start);
    snprintf(k->spent, sizeof k->spent, "%sspent", b);
    snprintf(k->loaned, sizeof k->loaned, "%sloaned", b);
    snprintf(k->holds, sizeof k->holds, "%sholds", b);
    snprintf(k->lease, sizeof k->lease, "%slease", b);
    snprintf(k->by, sizeof k->by, "%sby", b);
    snprintf(k->keys, sizeof k->keys, "%skeys", b);
    snprintf(k->lim, sizeof k->lim, "pm:{%.63s}:lim", team);
    snprintf(k->limlease, sizeof k->limlease, "pm:{%.63s}:limlease", team);
}

int st_lim_on(const ratelim_conf_t *c)
{
    return c->rpm > 0 || c->tpm > 0 || c->max_inflight > 0 || c->spend_minute > 0 ||
           c->spend_hour > 0;
}

void st_lim_fmt(char *out, size_t n, const ratelim_conf_t *c)
{
    if (!st_lim_on(c)) { snprintf(out, n, "%s", ""); return; }
    snprintf(out, n, "%lld %lld %lld %lld %lld", (long long)c->rpm, (long long)c->tpm,
             (long long)c->max_inflight, (long long)c->spend_minute, (long long)c->spend_hour);
}

void st_done_key(char *out, size_t n, const char *team, const char *rid)
{
    snprintf(out, n, "pm:{%.63s}:done:%.47s", team, rid);
}

/* ---- outage state ---- */

void st_mark_down_locked(store_t *s, const char *why)
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

void st_mark_down(store_t *s, const char *why)
{
    pthread_mutex_lock(&s->mu);
    st_mark_down_locked(s, why);
    pthread_mutex_unlock(&s->mu);
}

/* A local share: what was left at Redis's last answer, divided by the live
 * instances; -1 uncapped, -2 unknown (no figures for this period). */
static nanos_t share_of(nanos_t cap, int known, int64_t fstart, int64_t start, nanos_t spent,
                        nanos_t loaned, int inst)
{
    if (cap < 0) return -1;
    if (!known || fstart != start) return -2;
    nanos_t left = cap - spent - loaned;
    return left > 0 ? left / inst : 0;
}

/* Sets each team's and key's local share for this outage. Call with mu held. */
static void shares_locked(store_t *s, int64_t now)
{
    int inst = s->instances > 0 ? s->instances : 1;
    for (size_t i = 0; i < s->n; i++) {
        rteam_t *t = &s->teams[i];
        int64_t start = book_period_start(t->period, now);
        t->share = share_of(t->cap, t->fig_known, t->fig_start, start, t->fig_spent,
                            t->fig_loaned, inst);
        book_team_set(s->fb, (int)i, t->share >= 0 ? t->share : -1, t->period);
        book_team_seed(s->fb, (int)i, start, 0);
    }
    for (size_t i = 0; i < s->nk; i++) {
        rkey_t *k = &s->keys[i];
        int64_t start = book_period_start(k->period, now);
        k->share = share_of(k->cap, k->fig_known, k->fig_start, start, k->fig_spent,
                            k->fig_loaned, inst);
        book_team_set(s->kfb, (int)i, k->share >= 0 ? k->share : -1, k->period);
        book_team_seed(s->kfb, (int)i, start, 0);
    }
    s->fb_on = 1;
}

/* ---- holds in flight ---- */

void st_live_add_locked(store_t *s, budget_hold_t *h)
{
    h->next = &s->live;
    h->prev = s->live.prev;
    s->live.prev->next = h;
    s->live.prev = h;
}

void st_live_del_locked(budget_hold_t *h)
{
    if (!h->next) return;
    h->prev->next = h->next;
    h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

/* ---- this instance's own rate-limit windows ---- */

static ratelim_t *team_local(store_t *s, const budget_hold_t *h)
{
    return h->team >= 0 && (size_t)h->team < s->n ? &s->teams[h->team].local : NULL;
}

static ratelim_t *key_local(store_t *s, const budget_hold_t *h)
{
    return h->key >= 0 && (size_t)h->key < s->nk ? &s->keys[h->key].local : NULL;
}

/* The team's then the key's limits against this instance's windows:
 * BUDGET_OK (why->rate the header figures) or BUDGET_LIMITED. */
static int local_check_locked(store_t *s, const budget_hold_t *h, budget_why_t *why)
{
    ratelim_t *tl = team_local(s, h), *kl = key_local(s, h);
    ratelim_verdict_t tv, kv;
    memset(&tv, 0, sizeof tv);
    memset(&kv, 0, sizeof kv);
    int scope = 0;
    if (tl && ratelim_check(&s->teams[h->team].lim, tl, h->taken_ms, h->tokens, h->amount, &tv))
        scope = BUDGET_SCOPE_TEAM;
    else if (kl && ratelim_check(&s->keys[h->key].lim, kl, h->taken_ms, h->tokens, h->amount,
                                &kv))
        scope = BUDGET_SCOPE_KEY;
    if (scope) {
        why->rate = scope == BUDGET_SCOPE_TEAM ? tv : kv;
        why->rate_scope = scope;
        return BUDGET_LIMITED;
    }
    why->rate = ratelim_tighter(&tv, &kv);
    return BUDGET_OK;
}

void st_local_take_locked(store_t *s, budget_hold_t *h)
{
    ratelim_t *tl = team_local(s, h), *kl = key_local(s, h);
    if (tl) ratelim_take(tl, h->taken_ms, h->tokens, h->amount);
    if (kl) ratelim_take(kl, h->taken_ms, h->tokens, h->amount);
    h->limited |= ST_T_LOCAL;
}

void st_local_end_locked(store_t *s, budget_hold_t *h, int settled, nanos_t charge,
                         int64_t tokens, int64_t now_ms)
{
    if (!(h->limited & ST_T_LOCAL)) return;
    ratelim_t *v[2] = { team_local(s, h), key_local(s, h) };
    for (int i = 0; i < 2; i++) {
        if (!v[i]) continue;
        if (settled)
            ratelim_settle(v[i], h->taken_ms, now_ms, h->tokens, tokens, h->amount, charge);
        else ratelim_untake(v[i], h->taken_ms, now_ms, h->tokens, h->amount);
    }
    h->limited &= ~ST_T_LOCAL;
}

int st_reserve_down_locked(store_t *s, budget_hold_t *h, budget_why_t *why)
{
    int64_t now = h->taken_ms / 1000;
    int team = h->team, key = h->key >= 0 && (size_t)h->key < s->nk ? h->key : -1;
    if (!s->down_local) goto unavailable;
    if (!s->fb_on) shares_locked(s, now);
    if (s->teams[team].share == -2 || (key >= 0 && s->keys[key].share == -2))
        goto unavailable;
    if (book_reserve(s->fb, team, h->amount, now, &h->fb, &why->money) != 0) {
        book_release(s->acct, &h->acct);
        return BUDGET_REFUSED;
    }
    if (key >= 0 && book_reserve(s->kfb, key, h->amount, now, &h->keyh, &why->money) != 0) {
        why->money.scope = BOOK_SCOPE_KEY;
        book_release(s->fb, &h->fb);
        book_release(s->acct, &h->acct);
        return BUDGET_REFUSED;
    }
    if (local_check_locked(s, h, why) != BUDGET_OK) {
        if (key >= 0) book_release(s->kfb, &h->keyh);
        book_release(s->fb, &h->fb);
        book_release(s->acct, &h->acct);
        return BUDGET_LIMITED;
    }
    h->in_fb = 1;
    if (key >= 0) h->limited |= ST_T_KFB;
    st_local_take_locked(s, h);
    book_view_t v;
    book_team_view(s->fb, team, now, &v);
    h->team_available = v.cap >= 0 ? v.available : -1;
    st_live_add_locked(s, h);
    return BUDGET_OK;
unavailable:
    book_release(s->acct, &h->acct);
    return BUDGET_UNAVAILABLE;
}

/* ---- settle and release: queued for the worker ---- */

void st_enqueue_locked(store_t *s, op_kind_t kind, const budget_hold_t *h, nanos_t charge,
                       int64_t tokens)
{
    op_t *o = calloc(1, sizeof *o);
    if (!o) {
        base_log("budget store: out of memory: settlement of %s not sent to Redis (the ledger "
                "has it; the next sync re-adds this instance's share)", h->rid);
        return;
    }
    o->kind = kind;
    o->team = h->team;
    o->key = h->key;
    o->track = h->limited & ST_T_REDIS;
    o->tokens = tokens;
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

void st_queue_trim_locked(store_t *s)
{
    while (s->qhead && s->qhead->acked) {
        op_t *o = s->qhead;
        s->qhead = o->next;
        if (!s->qhead) s->qtail = NULL;
        s->qlen--;
        free(o);
    }
}

void st_queue_free(store_t *s)
{
    while (s->qhead) {
        op_t *o = s->qhead;
        s->qhead = o->next;
        free(o);
    }
    s->qtail = NULL;
    s->qlen = 0;
}
