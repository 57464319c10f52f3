/* store_state: the bottom of the store module (see store_int.h). Owns the
 * key layout in Redis and the state the reserving threads and the worker
 * share under mu: marking the store down, the local shares that admit
 * requests during an outage, the list of holds in flight, and the queue of
 * settles and releases for the worker. Calls no other file of the store and
 * does no Redis I/O. */
#include "store_int.h"
#include "base.h"

#include <stdio.h>
#include <stdlib.h>

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

int st_reserve_down_locked(store_t *s, int team, nanos_t amount, int64_t now,
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

void st_enqueue_locked(store_t *s, op_kind_t kind, const budget_hold_t *h, nanos_t charge)
{
    op_t *o = calloc(1, sizeof *o);
    if (!o) {
        base_log("budget store: out of memory: settlement of %s not sent to Redis (the ledger "
                "has it; the next sync re-adds this instance's share)", h->rid);
        return;
    }
    o->kind = kind;
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
