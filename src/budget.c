/* budget: the in-process budget store (the book behind one mutex, held only
 * for integer arithmetic, never across I/O) — teams' caps and the account
 * projection in one book, keys' caps in a second, each team's and key's rate
 * limits beside them — or a forward to the shared store on Redis (store.c)
 * when one is configured. */
#include "budget.h"
#include "store.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* A slot's rate limits: its settings and its windows. */
typedef struct lim { ratelim_conf_t conf; ratelim_t state; } lim_t;

struct budget {
    pthread_mutex_t mu;
    book_t *book;                  /* in-process store: the teams and the account */
    book_t *keys;                  /* in-process store: the keys' caps */
    lim_t *tlim, *klim;            /* per team slot / key slot */
    size_t n_teams, n_keys;
    store_t *store;                /* shared store (the books unused) */
};

/* Grows a limits array to n slots, new ones without limits. 0 or -1. */
static int lim_grow(lim_t **v, size_t *have, size_t n)
{
    if (n <= *have) return 0;
    lim_t *nv = realloc(*v, n * sizeof *nv);
    if (!nv) return -1;
    for (size_t i = *have; i < n; i++) {
        memset(&nv[i].conf, 0, sizeof nv[i].conf);
        ratelim_init(&nv[i].state);
    }
    *v = nv;
    *have = n;
    return 0;
}

budget_t *budget_local_new(size_t n_teams)
{
    budget_t *bg = calloc(1, sizeof *bg);
    if (!bg) return NULL;
    bg->book = book_new(n_teams);
    bg->keys = book_new(0);
    if (!bg->book || !bg->keys || lim_grow(&bg->tlim, &bg->n_teams, n_teams) != 0) {
        book_free(bg->book);
        book_free(bg->keys);
        free(bg);
        return NULL;
    }
    pthread_mutex_init(&bg->mu, NULL);
    return bg;
}

budget_t *budget_redis_new(size_t n_teams, const budget_store_conf_t *c,
                           char *err, size_t errlen)
{
    budget_t *bg = calloc(1, sizeof *bg);
    if (!bg) return NULL;
    bg->store = store_new(n_teams, c, err, errlen);
    if (!bg->store) { free(bg); return NULL; }
    pthread_mutex_init(&bg->mu, NULL);
    return bg;
}

int budget_start(budget_t *bg, int wait_ms)
{
    return bg->store ? store_start(bg->store, wait_ms) : 1;
}

void budget_free(budget_t *bg)
{
    if (!bg) return;
    pthread_mutex_destroy(&bg->mu);
    book_free(bg->book);
    book_free(bg->keys);
    free(bg->tlim);
    free(bg->klim);
    store_free(bg->store);
    free(bg);
}

#define LOCKED(stmt) do { pthread_mutex_lock(&bg->mu); stmt; \
                          pthread_mutex_unlock(&bg->mu); } while (0)

int budget_grow(budget_t *bg, size_t n)
{
    int rc;
    if (bg->store) return store_grow(bg->store, n);
    pthread_mutex_lock(&bg->mu);
    rc = book_grow(bg->book, n) == 0 && lim_grow(&bg->tlim, &bg->n_teams, n) == 0 ? 0 : -1;
    pthread_mutex_unlock(&bg->mu);
    return rc;
}

int budget_grow_keys(budget_t *bg, size_t n)
{
    int rc;
    if (bg->store) return store_grow_keys(bg->store, n);
    pthread_mutex_lock(&bg->mu);
    rc = book_grow(bg->keys, n) == 0 && lim_grow(&bg->klim, &bg->n_keys, n) == 0 ? 0 : -1;
    pthread_mutex_unlock(&bg->mu);
    return rc;
}

void budget_team_name(budget_t *bg, int team, const char *name)
{
    if (bg->store) store_team_name(bg->store, team, name);
}

void budget_team_set(budget_t *bg, int team, nanos_t cap, period_t period)
{
    if (bg->store) { store_team_set(bg->store, team, cap, period); return; }
    LOCKED(book_team_set(bg->book, team, cap, period));
}

void budget_team_reset(budget_t *bg, int team, nanos_t cap, period_t period,
                       int64_t period_start, nanos_t spent)
{
    if (bg->store) {
        store_team_reset(bg->store, team, cap, period, period_start, spent);
        return;
    }
    pthread_mutex_lock(&bg->mu);
    book_team_set(bg->book, team, cap, period);
    book_team_seed(bg->book, team, period_start, spent);
    pthread_mutex_unlock(&bg->mu);
}

void budget_key_reset(budget_t *bg, int key, int team, const char *key_id, nanos_t cap,
                      period_t period, int64_t period_start, nanos_t spent)
{
    if (bg->store) {
        store_key_reset(bg->store, key, team, key_id, cap, period, period_start, spent);
        return;
    }
    pthread_mutex_lock(&bg->mu);
    book_team_set(bg->keys, key, cap, period);
    book_team_seed(bg->keys, key, period_start, spent);
    pthread_mutex_unlock(&bg->mu);
}

void budget_key_set(budget_t *bg, int key, nanos_t cap, period_t period)
{
    if (bg->store) { store_key_set(bg->store, key, cap, period); return; }
    LOCKED(book_team_set(bg->keys, key, cap, period));
}

void budget_team_limits(budget_t *bg, int team, const ratelim_conf_t *c)
{
    if (bg->store) { store_team_limits(bg->store, team, c); return; }
    pthread_mutex_lock(&bg->mu);
    if (team >= 0 && (size_t)team < bg->n_teams) bg->tlim[team].conf = *c;
    pthread_mutex_unlock(&bg->mu);
}

void budget_key_limits(budget_t *bg, int key, const ratelim_conf_t *c)
{
    if (bg->store) { store_key_limits(bg->store, key, c); return; }
    pthread_mutex_lock(&bg->mu);
    if (key >= 0 && (size_t)key < bg->n_keys) bg->klim[key].conf = *c;
    pthread_mutex_unlock(&bg->mu);
}

/* The in-process reserve, with mu held: the team's cap and the account, the
 * key's cap, then the team's and the key's rate limits; all or nothing. */
static int reserve_locked(budget_t *bg, const budget_req_t *q, budget_hold_t *h,
                          budget_why_t *why)
{
    int64_t now_s = q->now_ms / 1000;
    int key = q->key >= 0 && (size_t)q->key < bg->n_keys ? q->key : -1;
    if (q->team < 0 || (size_t)q->team >= bg->n_teams) return BUDGET_REFUSED;
    if (book_reserve(bg->book, q->team, q->amount, now_s, &h->acct, &why->money) != 0)
        return BUDGET_REFUSED;
    if (key >= 0 && book_reserve(bg->keys, key, q->amount, now_s, &h->keyh, &why->money) != 0) {
        why->money.scope = BOOK_SCOPE_KEY;
        book_release(bg->book, &h->acct);
        return BUDGET_REFUSED;
    }
    lim_t *tl = &bg->tlim[q->team], *kl = key >= 0 ? &bg->klim[key] : NULL;
    ratelim_verdict_t tv, kv;
    memset(&kv, 0, sizeof kv);
    int scope = 0;
    if (ratelim_check(&tl->conf, &tl->state, q->now_ms, q->tokens, q->amount, &tv))
        scope = BUDGET_SCOPE_TEAM;
    else if (kl && ratelim_check(&kl->conf, &kl->state, q->now_ms, q->tokens, q->amount, &kv))
        scope = BUDGET_SCOPE_KEY;
    if (scope) {
        why->rate = scope == BUDGET_SCOPE_TEAM ? tv : kv;
        why->rate_scope = scope;
        book_release(bg->book, &h->acct);
        if (key >= 0) book_release(bg->keys, &h->keyh);
        return BUDGET_LIMITED;
    }
    ratelim_take(&tl->state, q->now_ms, q->tokens, q->amount);
    if (kl) ratelim_take(&kl->state, q->now_ms, q->tokens, q->amount);
    why->rate = ratelim_tighter(&tv, &kv);
    book_view_t v;
    book_team_view(bg->book, q->team, now_s, &v);
    h->team_available = v.cap >= 0 ? v.available : -1;
    h->key = key;
    h->limited = 1;
    return BUDGET_OK;
}

int budget_reserve(budget_t *bg, const budget_req_t *q, budget_hold_t *hold, budget_why_t *why)
{
    memset(why, 0, sizeof *why);
    if (bg->store) return store_reserve(bg->store, q, hold, why);
    memset(hold, 0, sizeof *hold);
    hold->key = -1;
    pthread_mutex_lock(&bg->mu);
    int rc = reserve_locked(bg, q, hold, why);
    pthread_mutex_unlock(&bg->mu);
    hold->team = q->team;
    hold->amount = q->amount;
    hold->tokens = q->tokens;
    hold->taken_ms = q->now_ms;
    hold->period_start = hold->acct.period_start;
    return rc;
}

int budget_async(budget_t *bg)
{
    return bg->store ? store_async(bg->store) : 0;
}

int budget_reserve_async(budget_t *bg, const budget_req_t *q, budget_hold_t *hold,
                         budget_reserved_fn cb, void *arg)
{
    if (!bg->store) return -1;
    return store_reserve_async(bg->store, q, hold, cb, arg);
}

void budget_settle(budget_t *bg, budget_hold_t *hold, nanos_t charge, int64_t tokens,
                   int64_t now_ms)
{
    if (bg->store) { store_settle(bg->store, hold, charge, tokens, now_ms); return; }
    pthread_mutex_lock(&bg->mu);
    book_settle(bg->book, &hold->acct, charge, now_ms / 1000);
    if (hold->key >= 0) book_settle(bg->keys, &hold->keyh, charge, now_ms / 1000);
    if (hold->limited) {
        ratelim_settle(&bg->tlim[hold->team].state, hold->taken_ms, now_ms, hold->tokens, tokens,
                      hold->amount, charge);
        if (hold->key >= 0)
            ratelim_settle(&bg->klim[hold->key].state, hold->taken_ms, now_ms, hold->tokens,
                          tokens, hold->amount, charge);
    }
    pthread_mutex_unlock(&bg->mu);
}

void budget_release(budget_t *bg, budget_hold_t *hold, int64_t now_ms)
{
    if (bg->store) { store_release(bg->store, hold, now_ms); return; }
    pthread_mutex_lock(&bg->mu);
    book_release(bg->book, &hold->acct);
    if (hold->key >= 0) book_release(bg->keys, &hold->keyh);
    if (hold->limited) {
        ratelim_untake(&bg->tlim[hold->team].state, hold->taken_ms, now_ms, hold->tokens,
                      hold->amount);
        if (hold->key >= 0)
            ratelim_untake(&bg->klim[hold->key].state, hold->taken_ms, now_ms, hold->tokens,
                          hold->amount);
    }
    pthread_mutex_unlock(&bg->mu);
}

int budget_team_view(budget_t *bg, int team, int64_t now, book_view_t *out)
{
    if (bg->store) return store_team_view(bg->store, team, now, out);
    LOCKED(book_team_view(bg->book, team, now, out));
    return 0;
}

int budget_key_view(budget_t *bg, int key, int64_t now, book_view_t *out)
{
    if (bg->store) return store_key_view(bg->store, key, now, out);
    pthread_mutex_lock(&bg->mu);
    int ok = key >= 0 && (size_t)key < bg->n_keys;
    if (ok) book_team_view(bg->keys, key, now, out);
    pthread_mutex_unlock(&bg->mu);
    return ok ? 0 : -1;
}

int budget_alert_claim(budget_t *bg, int team, const char *id, int64_t now)
{
    return bg->store ? store_alert_claim(bg->store, team, id, now) : 1;
}

int budget_team_figures(budget_t *bg, int team, int64_t now, book_view_t *out)
{
    if (bg->store) return store_team_figures(bg->store, team, now, out);
    LOCKED(book_team_view(bg->book, team, now, out));
    return 0;
}

const char *budget_store_state(budget_t *bg)
{
    return bg->store ? store_state(bg->store) : "local";
}

void budget_account_sync(budget_t *bg, nanos_t total, nanos_t available)
{
    if (bg->store) { store_account_sync(bg->store, total, available); return; }
    LOCKED(book_account_sync(bg->book, total, available));
}

void budget_account_exhausted(budget_t *bg)
{
    if (bg->store) { store_account_exhausted(bg->store); return; }
    LOCKED(book_account_exhausted(bg->book));
}

int budget_account_view(budget_t *bg, book_view_t *out)
{
    int on;
    if (bg->store) return store_account_view(bg->store, out);
    pthread_mutex_lock(&bg->mu);
    on = book_account_enabled(bg->book);
    if (on) book_account_view(bg->book, out);
    pthread_mutex_unlock(&bg->mu);
    return on ? 0 : -1;
}
