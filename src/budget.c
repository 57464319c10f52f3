/* budget: the in-process budget store (the book behind one mutex, held only
 * for integer arithmetic, never across I/O), or a forward to the shared
 * store on Redis (store.c) when one is configured. */
#include "budget.h"
#include "store.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct budget {
    pthread_mutex_t mu;
    book_t *book;                  /* in-process store */
    store_t *store;                /* shared store (book unused) */
};

budget_t *budget_local_new(size_t n_teams)
{
    budget_t *bg = calloc(1, sizeof *bg);
    if (!bg) return NULL;
    bg->book = book_new(n_teams);
    if (!bg->book) { free(bg); return NULL; }
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
    store_free(bg->store);
    free(bg);
}

#define LOCKED(stmt) do { pthread_mutex_lock(&bg->mu); stmt; \
                          pthread_mutex_unlock(&bg->mu); } while (0)

int budget_grow(budget_t *bg, size_t n)
{
    int rc;
    if (bg->store) return store_grow(bg->store, n);
    LOCKED(rc = book_grow(bg->book, n));
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

int budget_reserve(budget_t *bg, int team, nanos_t amount, int64_t now, const char *rid,
                   budget_hold_t *hold, book_refusal_t *why)
{
    int rc;
    if (bg->store) return store_reserve(bg->store, team, amount, now, rid, hold, why);
    memset(hold, 0, sizeof *hold);
    book_view_t v;
    pthread_mutex_lock(&bg->mu);
    rc = book_reserve(bg->book, team, amount, now, &hold->acct, why);
    if (rc == 0) book_team_view(bg->book, team, now, &v);
    pthread_mutex_unlock(&bg->mu);
    hold->team_available = rc == 0 && v.cap >= 0 ? v.available : -1;
    hold->team = team;
    hold->amount = amount;
    hold->period_start = hold->acct.period_start;
    return rc == 0 ? BUDGET_OK : BUDGET_REFUSED;
}

int budget_async(budget_t *bg)
{
    return bg->store ? store_async(bg->store) : 0;
}

int budget_reserve_async(budget_t *bg, int team, nanos_t amount, int64_t now, const char *rid,
                         budget_hold_t *hold, budget_reserved_fn cb, void *arg)
{
    if (!bg->store) return -1;
    return store_reserve_async(bg->store, team, amount, now, rid, hold, cb, arg);
}

void budget_settle(budget_t *bg, budget_hold_t *hold, nanos_t charge, int64_t now)
{
    if (bg->store) { store_settle(bg->store, hold, charge, now); return; }
    LOCKED(book_settle(bg->book, &hold->acct, charge, now));
}

void budget_release(budget_t *bg, budget_hold_t *hold)
{
    if (bg->store) { store_release(bg->store, hold); return; }
    LOCKED(book_release(bg->book, &hold->acct));
}

int budget_team_view(budget_t *bg, int team, int64_t now, book_view_t *out)
{
    if (bg->store) return store_team_view(bg->store, team, now, out);
    LOCKED(book_team_view(bg->book, team, now, out));
    return 0;
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
