/* budget: the in-process budget store, the book behind one mutex. The lock is
 * held only for integer arithmetic, never across I/O. */
#include "budget.h"
#include <pthread.h>
#include <stdlib.h>

struct budget {
    pthread_mutex_t mu;
    book_t *book;
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

void budget_free(budget_t *bg)
{
    if (!bg) return;
    pthread_mutex_destroy(&bg->mu);
    book_free(bg->book);
    free(bg);
}

#define LOCKED(stmt) do { pthread_mutex_lock(&bg->mu); stmt; \
                          pthread_mutex_unlock(&bg->mu); } while (0)

int budget_grow(budget_t *bg, size_t n)
{
    int rc;
    LOCKED(rc = book_grow(bg->book, n));
    return rc;
}

void budget_team_set(budget_t *bg, int team, nanos_t cap, period_t period)
{
    LOCKED(book_team_set(bg->book, team, cap, period));
}

void budget_team_seed(budget_t *bg, int team, int64_t period_start, nanos_t spent)
{
    LOCKED(book_team_seed(bg->book, team, period_start, spent));
}

void budget_team_reset(budget_t *bg, int team, nanos_t cap, period_t period,
                       int64_t period_start, nanos_t spent)
{
    pthread_mutex_lock(&bg->mu);
    book_team_set(bg->book, team, cap, period);
    book_team_seed(bg->book, team, period_start, spent);
    pthread_mutex_unlock(&bg->mu);
}

int budget_reserve(budget_t *bg, int team, nanos_t amount, int64_t now,
                   book_hold_t *hold, book_refusal_t *why)
{
    int rc;
    LOCKED(rc = book_reserve(bg->book, team, amount, now, hold, why));
    return rc;
}

void budget_settle(budget_t *bg, const book_hold_t *hold, nanos_t charge, int64_t now)
{
    LOCKED(book_settle(bg->book, hold, charge, now));
}

void budget_release(budget_t *bg, const book_hold_t *hold)
{
    LOCKED(book_release(bg->book, hold));
}

void budget_team_view(budget_t *bg, int team, int64_t now, book_view_t *out)
{
    LOCKED(book_team_view(bg->book, team, now, out));
}

void budget_account_sync(budget_t *bg, nanos_t total, nanos_t available)
{
    LOCKED(book_account_sync(bg->book, total, available));
}

void budget_account_exhausted(budget_t *bg)
{
    LOCKED(book_account_exhausted(bg->book));
}

int budget_account_view(budget_t *bg, book_view_t *out)
{
    int on;
    pthread_mutex_lock(&bg->mu);
    on = book_account_enabled(bg->book);
    if (on) book_account_view(bg->book, out);
    pthread_mutex_unlock(&bg->mu);
    return on ? 0 : -1;
}
