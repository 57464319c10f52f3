/* alertq: the alert thread's inbox (see alertq.h). One mutex over a table
 * indexed by team slot (grown on demand) and two account flags; the
 * condition variable runs on the monotonic clock. A hook that finds its mark
 * already set does nothing more, so a burst of requests costs the thread
 * one wake-up. */
#include "alertq.h"
#include "base.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct alertq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    alertq_team_t *teams;             /* [cap], by slot */
    size_t cap;
    size_t marked;                    /* slots with check or refused set */
    int account, account_synced, stop;
    int waiting;                      /* the thread is in alertq_take's wait */
    /* runaway episodes open (subject: team slot, key slot or -1) and the
     * events begun since the last take */
    struct episode { int slot, kslot; } *ep;
    size_t n_ep, cap_ep;
    atomic_int open_ep;               /* n_ep, read without the mutex */
    alertq_runaway_t run[ALERTQ_RUNAWAY_MAX];
    size_t n_run;
    alertq_acct_t acct[ALERTQ_ACCT_MAX];  /* account events since the last take */
    size_t n_acct;
    int drift_known;
    nanos_t drift;
    int64_t drift_at_ms;
};

alertq_t *alertq_new(void)
{
    alertq_t *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    return q;
}

void alertq_free(alertq_t *q)
{
    if (!q) return;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q->teams);
    free(q->ep);
    free(q);
}

/* The slot's entry, the table grown to hold it; NULL when out of memory
 * (the mark is dropped: the thread's periodic sweep checks every team). */
static alertq_team_t *slot_locked(alertq_t *q, int slot, const char *team)
{
    if (slot < 0) return NULL;
    if ((size_t)slot >= q->cap) {
        size_t cap = q->cap ? q->cap : 16;
        while (cap <= (size_t)slot) cap *= 2;
        alertq_team_t *t = realloc(q->teams, cap * sizeof *t);
        if (!t) return NULL;
        memset(t + q->cap, 0, (cap - q->cap) * sizeof *t);
        q->teams = t;
        q->cap = cap;
    }
    alertq_team_t *t = &q->teams[slot];
    if (strcmp(t->name, team) != 0) snprintf(t->name, sizeof t->name, "%s", team);
    return t;
}

static void wake_locked(alertq_t *q)
{
    if (q->waiting) pthread_cond_signal(&q->cv);
}

static void mark_check_locked(alertq_t *q, int slot, const char *team)
{
    alertq_team_t *t = slot_locked(q, slot, team);
    if (!t || t->check) return;
    if (!t->refused) q->marked++;
    t->check = 1;
    wake_locked(q);
}

void alertq_settled(alertq_t *q, int slot, const char *team)
{
    pthread_mutex_lock(&q->mu);
    mark_check_locked(q, slot, team);
    if (!q->account) {
        q->account = 1;
        wake_locked(q);
    }
    pthread_mutex_unlock(&q->mu);
}

void alertq_refused(alertq_t *q, int slot, const char *team, int64_t now_s,
                    const book_refusal_t *why)
{
    pthread_mutex_lock(&q->mu);
    alertq_team_t *t = slot_locked(q, slot, team);
    if (t && !t->refused) {
        if (!t->check) q->marked++;
        t->refused = 1;
        t->refused_at_s = now_s;
        t->why = *why;
        wake_locked(q);
    }
    pthread_mutex_unlock(&q->mu);
}

void alertq_account_synced(alertq_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->account_synced = 1;
    wake_locked(q);
    pthread_mutex_unlock(&q->mu);
}

void alertq_account_event(alertq_t *q, const alertq_acct_t *ev)
{
    pthread_mutex_lock(&q->mu);
    int kept = q->n_acct < ALERTQ_ACCT_MAX;
    if (kept) {
        q->acct[q->n_acct++] = *ev;
        wake_locked(q);
    }
    pthread_mutex_unlock(&q->mu);
    if (!kept) base_logl(BASE_ERROR, "alerts: too many account events at once; one dropped");
}

void alertq_drift(alertq_t *q, nanos_t drift, int64_t at_ms)
{
    pthread_mutex_lock(&q->mu);
    q->drift_known = 1;
    q->drift = drift;
    q->drift_at_ms = at_ms;
    wake_locked(q);
    pthread_mutex_unlock(&q->mu);
}

void alertq_runaway(alertq_t *q, int slot, const char *team, int key_slot, const char *key,
                    int hour, nanos_t spent_in_window, nanos_t limit, int64_t at_ms)
{
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->n_ep; i++)
        if (q->ep[i].slot == slot && q->ep[i].kslot == key_slot) goto out;   /* open */
    if (q->n_ep == q->cap_ep) {
        size_t cap = q->cap_ep ? q->cap_ep * 2 : 8;
        struct episode *e = realloc(q->ep, cap * sizeof *e);
        if (!e) goto out;
        q->ep = e;
        q->cap_ep = cap;
    }
    q->ep[q->n_ep].slot = slot;
    q->ep[q->n_ep].kslot = key_slot;
    q->n_ep++;
    atomic_store(&q->open_ep, (int)q->n_ep);
    if (q->n_run < ALERTQ_RUNAWAY_MAX) {
        alertq_runaway_t *r = &q->run[q->n_run++];
        r->slot = slot;
        snprintf(r->team, sizeof r->team, "%s", team);
        snprintf(r->key, sizeof r->key, "%s", key ? key : "");
        r->hour = hour;
        r->spent_in_window = spent_in_window;
        r->limit = limit;
        r->at_ms = at_ms;
        wake_locked(q);
    }
out:
    pthread_mutex_unlock(&q->mu);
}

void alertq_admitted(alertq_t *q, int slot, int key_slot)
{
    if (atomic_load(&q->open_ep) == 0) return;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < q->n_ep;) {
        if (q->ep[i].slot == slot && (q->ep[i].kslot == -1 || q->ep[i].kslot == key_slot))
            q->ep[i] = q->ep[--q->n_ep];
        else i++;
    }
    atomic_store(&q->open_ep, (int)q->n_ep);
    pthread_mutex_unlock(&q->mu);
}

void alertq_check_all(alertq_t *q, const int *slots, const char *const *names, size_t n)
{
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) mark_check_locked(q, slots[i], names[i]);
    q->account = 1;
    wake_locked(q);
    pthread_mutex_unlock(&q->mu);
}

static int any_locked(const alertq_t *q)
{
    return q->marked || q->account || q->account_synced || q->stop || q->n_run || q->n_acct ||
           q->drift_known;
}

int alertq_take(alertq_t *q, int64_t deadline_ms, alertq_take_t *out)
{
    memset(out, 0, sizeof *out);
    struct timespec ts = { deadline_ms / 1000, (deadline_ms % 1000) * 1000000 };
    pthread_mutex_lock(&q->mu);
    q->waiting = 1;
    while (!any_locked(q)) {
        int rc = deadline_ms < 0 ? pthread_cond_wait(&q->cv, &q->mu)
                                 : pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        if (rc == ETIMEDOUT) break;
    }
    q->waiting = 0;
    if (q->marked) {
        out->teams = malloc(q->marked * sizeof *out->teams);
        out->slots = malloc(q->marked * sizeof *out->slots);
        if (!out->teams || !out->slots) {
            pthread_mutex_unlock(&q->mu);
            alertq_take_free(out);
            return -1;
        }
        for (size_t i = 0; i < q->cap && out->n < q->marked; i++) {
            alertq_team_t *t = &q->teams[i];
            if (!t->check && !t->refused) continue;
            out->slots[out->n] = (int)i;
            out->teams[out->n++] = *t;
            t->check = t->refused = 0;
        }
        q->marked = 0;
    }
    memcpy(out->runaway, q->run, q->n_run * sizeof q->run[0]);
    out->n_runaway = q->n_run;
    q->n_run = 0;
    memcpy(out->acct, q->acct, q->n_acct * sizeof q->acct[0]);
    out->n_acct = q->n_acct;
    q->n_acct = 0;
    out->drift_known = q->drift_known;
    out->drift = q->drift;
    out->drift_at_ms = q->drift_at_ms;
    q->drift_known = 0;
    out->account = q->account;
    out->account_synced = q->account_synced;
    out->stop = q->stop;
    q->account = q->account_synced = 0;
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void alertq_take_free(alertq_take_t *t)
{
    free(t->teams);
    free(t->slots);
    t->teams = NULL;
    t->slots = NULL;
    t->n = 0;
}

void alertq_stop(alertq_t *q)
{
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}
