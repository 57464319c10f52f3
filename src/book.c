/* book: per-team spent/loaned per calendar period and the account projection.
 * All arithmetic is integer nano-credits; time comes in as an argument. */
#include "book.h"
#include <stdlib.h>

typedef struct team_state {
    nanos_t cap;              /* < 0: uncapped */
    period_t period;
    int64_t period_start;     /* period that spent belongs to */
    nanos_t spent;
    nanos_t loaned;           /* all holds, whatever their period */
} team_state_t;

struct book {
    size_t n;
    team_state_t *teams;
    int account_on;
    int account_exhausted;
    nanos_t acct_total, acct_available;   /* as last synced */
    nanos_t acct_charged;                 /* charged since that sync */
    nanos_t loaned_all;
};

book_t *book_new(size_t n_teams)
{
    book_t *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->n = n_teams;
    b->teams = calloc(n_teams ? n_teams : 1, sizeof *b->teams);
    if (!b->teams) { free(b); return NULL; }
    for (size_t i = 0; i < n_teams; i++) b->teams[i].cap = -1;
    return b;
}

int book_grow(book_t *b, size_t n)
{
    if (n <= b->n) return 0;
    team_state_t *t = realloc(b->teams, n * sizeof *t);
    if (!t) return -1;
    for (size_t i = b->n; i < n; i++) t[i] = (team_state_t){.cap = -1};
    b->teams = t;
    b->n = n;
    return 0;
}

void book_free(book_t *b)
{
    if (!b) return;
    free(b->teams);
    free(b);
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    /* Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic
     * Gregorian date; pure, no time zone involved. */
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int64_t book_period_start(period_t p, int64_t now)
{
    int64_t day = now >= 0 ? now / 86400 : -((-now + 86399) / 86400);
    switch (p) {
    case PERIOD_DAY:
        return day * 86400;
    case PERIOD_WEEK: {
        /* 1970-01-01 was a Thursday; Monday-based weekday = (day + 3) % 7 */
        int64_t wd = ((day + 3) % 7 + 7) % 7;
        return (day - wd) * 86400;
    }
    case PERIOD_MONTH: {
        /* civil date from days (Hinnant), then back to the 1st: pure integer
         * arithmetic, no libc time zone machinery on the admission path */
        int64_t z = day + 719468;
        int64_t era = (z >= 0 ? z : z - 146096) / 146097;
        unsigned doe = (unsigned)(z - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t y = (int64_t)yoe + era * 400;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        unsigned m = mp < 10 ? mp + 3 : mp - 9;
        return days_from_civil(y + (m <= 2), m, 1) * 86400;
    }
    case PERIOD_NONE:
    default:
        return 0;
    }
}

int64_t book_period_end(period_t p, int64_t now)
{
    int64_t start = book_period_start(p, now);
    switch (p) {
    case PERIOD_DAY: return start + 86400;
    case PERIOD_WEEK: return start + 7 * 86400;
    /* the 1st plus 32 days is always in the next month */
    case PERIOD_MONTH: return book_period_start(p, start + 32 * 86400);
    case PERIOD_NONE:
    default: return 0;
    }
}

/* Moves a team to the period containing now, forgetting old spend. */
static team_state_t *roll(book_t *b, int team, int64_t now)
{
    team_state_t *t = &b->teams[team];
    int64_t ps = book_period_start(t->period, now);
    if (ps != t->period_start) {
        t->period_start = ps;
        t->spent = 0;
    }
    return t;
}

void book_team_set(book_t *b, int team, nanos_t cap, period_t period)
{
    if (team < 0 || (size_t)team >= b->n) return;
    b->teams[team].cap = cap;
    if (b->teams[team].period != period) {
        b->teams[team].period = period;
        b->teams[team].period_start = -1;   /* re-derived on next use */
    }
}

void book_team_seed(book_t *b, int team, int64_t period_start, nanos_t spent)
{
    if (team < 0 || (size_t)team >= b->n) return;
    b->teams[team].period_start = period_start;
    b->teams[team].spent = spent;
}

static nanos_t team_available(const team_state_t *t)
{
    return t->cap - t->spent - t->loaned;
}

static nanos_t account_available(const book_t *b)
{
    if (b->account_exhausted) return 0;
    return b->acct_available - b->acct_charged - b->loaned_all;
}

int book_reserve(book_t *b, int team, nanos_t amount, int64_t now,
                 book_hold_t *hold, book_refusal_t *why)
{
    if (team < 0 || (size_t)team >= b->n || amount < 0) return -1;
    team_state_t *t = roll(b, team, now);
    if (t->cap >= 0 && team_available(t) < amount) {
        why->scope = BOOK_SCOPE_TEAM;
        why->cap = t->cap;
        why->spent = t->spent;
        why->loaned = t->loaned;
        why->available = team_available(t);
        why->required = amount;
        why->retry = t->loaned > 0 && t->cap - t->spent >= amount;
        return -1;
    }
    if (b->account_on && account_available(b) < amount) {
        why->scope = BOOK_SCOPE_ACCOUNT;
        why->cap = b->acct_total;
        why->spent = b->acct_charged;
        why->loaned = b->loaned_all;
        why->available = account_available(b);
        why->required = amount;
        why->retry = !b->account_exhausted && b->loaned_all > 0 &&
                     b->acct_available - b->acct_charged >= amount;
        return -1;
    }
    t->loaned += amount;
    b->loaned_all += amount;
    hold->team = team;
    hold->amount = amount;
    hold->period_start = t->period_start;
    return 0;
}

void book_release(book_t *b, const book_hold_t *hold)
{
    if (hold->team < 0 || (size_t)hold->team >= b->n) return;
    b->teams[hold->team].loaned -= hold->amount;
    b->loaned_all -= hold->amount;
}

void book_settle(book_t *b, const book_hold_t *hold, nanos_t charge, int64_t now)
{
    if (hold->team < 0 || (size_t)hold->team >= b->n) return;
    book_release(b, hold);
    team_state_t *t = roll(b, hold->team, now);
    /* A charge belongs to the period its hold was admitted in. */
    if (hold->period_start == t->period_start) t->spent += charge;
    if (b->account_on) b->acct_charged += charge;
}

void book_team_view(book_t *b, int team, int64_t now, book_view_t *out)
{
    if (team < 0 || (size_t)team >= b->n) { *out = (book_view_t){0}; return; }
    team_state_t *t = roll(b, team, now);
    out->cap = t->cap;
    out->spent = t->spent;
    out->loaned = t->loaned;
    out->available = t->cap >= 0 ? team_available(t) : -1;
}

void book_account_sync(book_t *b, nanos_t total, nanos_t available)
{
    b->account_on = 1;
    b->acct_total = total;
    b->acct_available = available;
    b->acct_charged = 0;
    b->account_exhausted = available <= 0;
}

void book_account_exhausted(book_t *b)
{
    if (b->account_on) b->account_exhausted = 1;
}

int book_account_enabled(const book_t *b)
{
    return b->account_on;
}

void book_account_view(book_t *b, book_view_t *out)
{
    out->cap = b->acct_total - b->acct_charged;
    out->spent = b->acct_charged;
    out->loaned = b->loaned_all;
    out->available = account_available(b);
}
