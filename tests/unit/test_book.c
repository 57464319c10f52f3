/* Unit tests for book: admission against team caps with exact refusal
 * figures, settle/release bookkeeping, the cap invariant under a long
 * pseudo-random run, UTC period boundaries (day, ISO week, calendar month,
 * leap February), holds that straddle a rollover, seeding, uncapped teams
 * and the account projection (sync, exhaustion, off by default). */
#include "book.h"
#include <time.h>
#include "t.h"

#define C NANOS_PER_CREDIT

/* Fixed instants (unix s, UTC). */
#define T_2026_02_01        1769904000LL   /* Sunday */
#define T_2026_02_23        1771804800LL   /* Monday */
#define T_2026_02_28        1772236800LL   /* Saturday 00:00 */
#define T_2026_03_01        1772323200LL   /* Sunday 00:00 */
#define T_2026_03_02        1772409600LL   /* Monday 00:00 */
#define T_2025_12_29        1766966400LL   /* Monday */
#define T_2026_01_01        1767225600LL   /* Thursday */
#define T_2026_11_23        1795392000LL   /* Monday */
#define T_2026_11_26_1530   1795707000LL   /* Thursday 15:30 */
#define T_2026_11_30        1795996800LL   /* Monday */
#define T_2024_02_01        1706745600LL
#define T_2024_02_29_1200   1709208000LL
#define T_2024_03_01        1709251200LL

static void expect_view(book_t *b, int team, int64_t now, nanos_t cap,
                        nanos_t spent, nanos_t loaned, nanos_t available)
{
    book_view_t v;
    book_team_view(b, team, now, &v);
    T_EQ_INT(v.cap, cap);
    T_EQ_INT(v.spent, spent);
    T_EQ_INT(v.loaned, loaned);
    T_EQ_INT(v.available, available);
}

static void test_reserve_within_cap(void)
{
    book_t *b = book_new(2);
    T_CHECK(b != NULL);
    book_team_set(b, 0, 100 * C, PERIOD_DAY);
    int64_t now = T_2026_03_01 + 3600;
    book_hold_t h1, h2, h3;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 30 * C, now, &h1, &why), 0);
    T_EQ_INT(h1.team, 0);
    T_EQ_INT(h1.amount, 30 * C);
    T_EQ_INT(h1.period_start, T_2026_03_01);
    expect_view(b, 0, now, 100 * C, 0, 30 * C, 70 * C);
    /* exactly the rest fits */
    T_EQ_INT(book_reserve(b, 0, 70 * C, now, &h2, &why), 0);
    expect_view(b, 0, now, 100 * C, 0, 100 * C, 0);
    /* one nano more does not */
    T_EQ_INT(book_reserve(b, 0, 1, now, &h3, &why), -1);
    /* a zero reservation still fits at available == 0 */
    T_EQ_INT(book_reserve(b, 0, 0, now, &h3, &why), 0);
    book_release(b, &h3);
    /* the other team is untouched (uncapped) */
    expect_view(b, 1, now, -1, 0, 0, -1);
    book_free(b);
}

static void test_refusal_fields(void)
{
    book_t *b = book_new(1);
    int64_t now = T_2026_03_01 + 60;
    book_team_set(b, 0, 100 * C, PERIOD_DAY);
    book_team_seed(b, 0, T_2026_03_01, 50 * C);
    book_hold_t h, h2;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 30 * C, now, &h, &why), 0);

    /* 20 available, 40 asked; releasing the 30 in flight would free enough */
    memset(&why, 0x5a, sizeof why);
    T_EQ_INT(book_reserve(b, 0, 40 * C, now, &h2, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_TEAM);
    T_EQ_INT(why.cap, 100 * C);
    T_EQ_INT(why.spent, 50 * C);
    T_EQ_INT(why.loaned, 30 * C);
    T_EQ_INT(why.available, 20 * C);
    T_EQ_INT(why.required, 40 * C);
    T_EQ_INT(why.retry, 1);
    /* exactly cap - spent: retry still helps */
    T_EQ_INT(book_reserve(b, 0, 50 * C, now, &h2, &why), -1);
    T_EQ_INT(why.required, 50 * C);
    T_EQ_INT(why.retry, 1);
    /* one nano past cap - spent: waiting cannot help */
    T_EQ_INT(book_reserve(b, 0, 50 * C + 1, now, &h2, &why), -1);
    T_EQ_INT(why.required, 50 * C + 1);
    T_EQ_INT(why.available, 20 * C);
    T_EQ_INT(why.retry, 0);
    /* refusals changed nothing */
    expect_view(b, 0, now, 100 * C, 50 * C, 30 * C, 20 * C);

    /* nothing in flight: retry is 0 even for a small shortfall */
    book_settle(b, &h, 30 * C, now);
    expect_view(b, 0, now, 100 * C, 80 * C, 0, 20 * C);
    T_EQ_INT(book_reserve(b, 0, 21 * C, now, &h2, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_TEAM);
    T_EQ_INT(why.cap, 100 * C);
    T_EQ_INT(why.spent, 80 * C);
    T_EQ_INT(why.loaned, 0);
    T_EQ_INT(why.available, 20 * C);
    T_EQ_INT(why.required, 21 * C);
    T_EQ_INT(why.retry, 0);

    /* overspent (charge above the hold): available goes negative, exactly */
    T_EQ_INT(book_reserve(b, 0, 20 * C, now, &h, &why), 0);
    book_settle(b, &h, 25 * C, now);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h2, &why), -1);
    T_EQ_INT(why.spent, 105 * C);
    T_EQ_INT(why.available, -5 * C);
    T_EQ_INT(why.retry, 0);
    book_free(b);
}

static void test_bad_arguments(void)
{
    book_t *b = book_new(2);
    book_hold_t h;
    book_refusal_t why;
    int64_t now = T_2026_03_01;
    T_EQ_INT(book_reserve(b, 2, 1, now, &h, &why), -1);
    T_EQ_INT(book_reserve(b, -1, 1, now, &h, &why), -1);
    T_EQ_INT(book_reserve(b, 0, -1, now, &h, &why), -1);
    expect_view(b, 0, now, -1, 0, 0, -1);
    book_view_t v = {1, 2, 3, 4};
    book_team_view(b, 7, now, &v);
    T_EQ_INT(v.cap, 0);
    T_EQ_INT(v.spent, 0);
    book_free(b);
    book_free(NULL);
}

static void test_settle_and_release(void)
{
    book_t *b = book_new(1);
    int64_t now = T_2026_03_01 + 100;
    book_team_set(b, 0, 100 * C, PERIOD_MONTH);
    book_hold_t h1, h2;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 30 * C, now, &h1, &why), 0);
    T_EQ_INT(book_reserve(b, 0, 25 * C, now, &h2, &why), 0);
    expect_view(b, 0, now, 100 * C, 0, 55 * C, 45 * C);

    /* settle: the charge (not the hold) goes to spent, the hold leaves loaned */
    book_settle(b, &h1, 12 * C + 345, now + 5);
    expect_view(b, 0, now + 5, 100 * C, 12 * C + 345, 25 * C, 63 * C - 345);

    /* release: the hold leaves, nothing is charged */
    book_release(b, &h2);
    expect_view(b, 0, now + 6, 100 * C, 12 * C + 345, 0, 88 * C - 345);

    /* zero charge settles like a release */
    T_EQ_INT(book_reserve(b, 0, 10 * C, now, &h1, &why), 0);
    book_settle(b, &h1, 0, now + 7);
    expect_view(b, 0, now + 7, 100 * C, 12 * C + 345, 0, 88 * C - 345);
    book_free(b);
}

/* xorshift64*: deterministic and good enough to shuffle sizes and orders. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Only reserves: the holds admitted never sum past the cap, and every
 * refusal is exactly a request larger than what is left. */
static void test_reserves_never_exceed_cap(void)
{
    book_t *b = book_new(1);
    const nanos_t cap = 1000 * C;
    int64_t now = T_2026_03_01;
    book_team_set(b, 0, cap, PERIOD_WEEK);
    nanos_t sum = 0;
    int admitted = 0;
    rng_state = 12345;
    for (int i = 0; i < 1000; i++) {
        nanos_t amount = (nanos_t)(rng() % (uint64_t)(5 * C)) + 1;
        book_hold_t h;
        book_refusal_t why;
        int rc = book_reserve(b, 0, amount, now, &h, &why);
        if (rc == 0) {
            sum += amount;
            admitted++;
            T_CHECK(sum <= cap);
        } else {
            T_EQ_INT(why.available, cap - sum);
            T_CHECK(why.available < amount);
            T_EQ_INT(why.required, amount);
        }
        book_view_t v;
        book_team_view(b, 0, now, &v);
        T_EQ_INT(v.loaned, sum);
        T_CHECK(v.spent + v.loaned <= cap);
    }
    T_CHECK(admitted > 100);          /* the run did fill the cap */
    T_CHECK(admitted < 1000);         /* and then refused */
    book_free(b);
}

/* Mixed reserves, settles (charge <= hold) and releases against an
 * independent model: spent + loaned <= cap at every step. */
static void test_random_run_invariant(void)
{
    enum { STEPS = 1000, MAXH = 1000 };
    book_t *b = book_new(2);
    const nanos_t cap = 200 * C;
    int64_t now = T_2026_03_01 + 10;
    book_team_set(b, 0, cap, PERIOD_DAY);
    book_hold_t holds[MAXH];
    int n = 0;
    nanos_t spent = 0, loaned = 0;
    int refused = 0, settled = 0;
    rng_state = 0xdeadbeefcafef00dULL;
    for (int i = 0; i < STEPS; i++) {
        uint64_t op = rng() % 3;
        if (op == 0 || n == 0) {
            nanos_t amount = (nanos_t)(rng() % (uint64_t)(30 * C));
            book_refusal_t why;
            int rc = book_reserve(b, 0, amount, now, &holds[n], &why);
            int fits = cap - spent - loaned >= amount;
            T_EQ_INT(rc, fits ? 0 : -1);
            if (rc == 0) { loaned += amount; n++; }
            else {
                refused++;
                T_EQ_INT(why.spent, spent);
                T_EQ_INT(why.loaned, loaned);
                T_EQ_INT(why.retry, loaned > 0 && cap - spent >= amount);
            }
        } else {
            int k = (int)(rng() % (uint64_t)n);
            book_hold_t h = holds[k];
            holds[k] = holds[--n];
            if (op == 1) {
                nanos_t charge = (nanos_t)(rng() % (uint64_t)(h.amount + 1));
                book_settle(b, &h, charge, now);
                spent += charge;
                settled++;
            } else {
                book_release(b, &h);
            }
            loaned -= h.amount;
        }
        book_view_t v;
        book_team_view(b, 0, now, &v);
        T_EQ_INT(v.spent, spent);
        T_EQ_INT(v.loaned, loaned);
        T_CHECK(v.spent + v.loaned <= cap);
        if (t_cur_failed) break;      /* one report is enough */
    }
    T_CHECK(refused > 0);
    T_CHECK(settled > 0);
    while (n > 0) book_release(b, &holds[--n]);
    expect_view(b, 0, now, cap, spent, 0, cap - spent);
    book_free(b);
}

static void test_period_start(void)
{
    /* none */
    T_EQ_INT(book_period_start(PERIOD_NONE, T_2026_03_01 + 5), 0);
    /* day */
    T_EQ_INT(book_period_start(PERIOD_DAY, T_2026_03_01 - 1), T_2026_02_28);
    T_EQ_INT(book_period_start(PERIOD_DAY, T_2026_03_01), T_2026_03_01);
    T_EQ_INT(book_period_start(PERIOD_DAY, T_2026_03_01 + 86399), T_2026_03_01);
    T_EQ_INT(book_period_start(PERIOD_DAY, 0), 0);
    T_EQ_INT(book_period_start(PERIOD_DAY, -1), -86400);
    T_EQ_INT(book_period_start(PERIOD_DAY, -86400), -86400);
    /* ISO week, from Monday 00:00 UTC */
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_03_01), T_2026_02_23);        /* Sunday */
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_03_02 - 1), T_2026_02_23);
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_03_02), T_2026_03_02);        /* Monday */
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_11_26_1530), T_2026_11_23);
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_11_23), T_2026_11_23);
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_11_30 - 1), T_2026_11_23);
    T_EQ_INT(book_period_start(PERIOD_WEEK, T_2026_01_01), T_2025_12_29);        /* across a year */
    T_EQ_INT(book_period_start(PERIOD_WEEK, 0), -259200);                        /* 1969-12-29 */
    /* calendar month */
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2026_03_01 - 1), T_2026_02_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2026_03_01), T_2026_03_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2026_03_02), T_2026_03_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2026_01_01 - 1), 1764547200LL);   /* 2025-12-01 */
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2026_01_01), T_2026_01_01);
    /* leap year: 2024-02-29 is still February */
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2024_02_29_1200), T_2024_02_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2024_03_01 - 1), T_2024_02_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, T_2024_03_01), T_2024_03_01);
    T_EQ_INT(book_period_start(PERIOD_MONTH, 0), 0);
}

/* The end of a period is the next one's start (exclusive). */
static void test_period_end(void)
{
    T_EQ_INT(book_period_end(PERIOD_NONE, T_2026_03_01 + 5), 0);
    T_EQ_INT(book_period_end(PERIOD_DAY, T_2026_02_28), T_2026_03_01);
    T_EQ_INT(book_period_end(PERIOD_DAY, T_2026_03_01 - 1), T_2026_03_01);
    T_EQ_INT(book_period_end(PERIOD_WEEK, T_2026_03_01), T_2026_03_02);         /* Sunday */
    T_EQ_INT(book_period_end(PERIOD_WEEK, T_2026_03_02), T_2026_03_02 + 7 * 86400);
    T_EQ_INT(book_period_end(PERIOD_WEEK, T_2025_12_29 + 3), T_2025_12_29 + 7 * 86400);
    T_EQ_INT(book_period_end(PERIOD_MONTH, T_2026_02_01), T_2026_03_01);       /* 28 days */
    T_EQ_INT(book_period_end(PERIOD_MONTH, T_2026_03_01 - 1), T_2026_03_01);
    T_EQ_INT(book_period_end(PERIOD_MONTH, T_2024_02_29_1200), T_2024_03_01);  /* leap */
    T_EQ_INT(book_period_end(PERIOD_MONTH, 1764547200LL), T_2026_01_01);       /* December */
    T_EQ_INT(book_period_end(PERIOD_MONTH, T_2026_11_30), 1796083200LL);       /* 2026-12-01 */
    /* every month's end is the start of the month after it, for 40 years */
    for (int64_t t = T_2024_02_01; t < T_2024_02_01 + 40LL * 365 * 86400; t += 86400 * 13) {
        int64_t end = book_period_end(PERIOD_MONTH, t);
        T_CHECK(end > t);
        T_EQ_INT(book_period_start(PERIOD_MONTH, end), end);
        T_EQ_INT(book_period_start(PERIOD_MONTH, end - 1), book_period_start(PERIOD_MONTH, t));
    }
}

/* Spends the whole cap at t0, checks it is still spent at t0_last and
 * forgotten at t1. */
static void rollover_case(period_t p, int64_t t0, int64_t t0_last, int64_t t1,
                          int64_t ps0, int64_t ps1)
{
    book_t *b = book_new(1);
    book_team_set(b, 0, 10 * C, p);
    book_hold_t h;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 10 * C, t0, &h, &why), 0);
    T_EQ_INT(h.period_start, ps0);
    book_settle(b, &h, 10 * C, t0);
    T_EQ_INT(book_reserve(b, 0, 1, t0_last, &h, &why), -1);
    T_EQ_INT(why.spent, 10 * C);
    expect_view(b, 0, t0_last, 10 * C, 10 * C, 0, 0);
    expect_view(b, 0, t1, 10 * C, 0, 0, 10 * C);
    T_EQ_INT(book_reserve(b, 0, 10 * C, t1, &h, &why), 0);
    T_EQ_INT(h.period_start, ps1);
    book_free(b);
}

static void test_rollover(void)
{
    rollover_case(PERIOD_DAY, T_2026_02_28 + 5, T_2026_03_01 - 1, T_2026_03_01,
                  T_2026_02_28, T_2026_03_01);
    rollover_case(PERIOD_WEEK, T_2026_02_23, T_2026_03_02 - 1, T_2026_03_02,
                  T_2026_02_23, T_2026_03_02);
    rollover_case(PERIOD_MONTH, T_2026_02_01, T_2026_03_01 - 1, T_2026_03_01,
                  T_2026_02_01, T_2026_03_01);
    rollover_case(PERIOD_MONTH, T_2024_02_01 + 7, T_2024_03_01 - 1, T_2024_03_01,
                  T_2024_02_01, T_2024_03_01);
}

/* A hold admitted in February and settled in March charges February (gone),
 * not March; while in flight it still counts as loaned. */
static void test_hold_across_rollover(void)
{
    book_t *b = book_new(1);
    book_team_set(b, 0, 100 * C, PERIOD_MONTH);
    book_hold_t feb, mar, feb2;
    book_refusal_t why;
    int64_t t_feb = T_2026_03_01 - 60, t_mar = T_2026_03_01 + 10;
    T_EQ_INT(book_reserve(b, 0, 40 * C, t_feb, &feb, &why), 0);
    T_EQ_INT(book_reserve(b, 0, 5 * C, t_feb, &feb2, &why), 0);
    T_EQ_INT(feb.period_start, T_2026_02_01);
    book_settle(b, &feb2, 5 * C, t_feb);
    expect_view(b, 0, t_feb, 100 * C, 5 * C, 40 * C, 55 * C);

    expect_view(b, 0, t_mar, 100 * C, 0, 40 * C, 60 * C);
    T_EQ_INT(book_reserve(b, 0, 10 * C, t_mar, &mar, &why), 0);
    T_EQ_INT(mar.period_start, T_2026_03_01);
    book_settle(b, &feb, 40 * C, t_mar + 1);
    expect_view(b, 0, t_mar + 1, 100 * C, 0, 10 * C, 90 * C);
    book_settle(b, &mar, 7 * C, t_mar + 2);
    expect_view(b, 0, t_mar + 2, 100 * C, 7 * C, 0, 93 * C);

    /* settle is the first call in the new period: it rolls by itself */
    book_t *b2 = book_new(1);
    book_team_set(b2, 0, 100 * C, PERIOD_DAY);
    T_EQ_INT(book_reserve(b2, 0, 30 * C, T_2026_03_01 - 1, &feb, &why), 0);
    book_settle(b2, &feb, 30 * C, T_2026_03_01);
    expect_view(b2, 0, T_2026_03_01, 100 * C, 0, 0, 100 * C);
    book_free(b2);
    book_free(b);
}

static void test_uncapped(void)
{
    book_t *b = book_new(2);
    book_team_set(b, 1, -1, PERIOD_DAY);
    book_hold_t h;
    book_refusal_t why;
    int64_t now = T_2026_03_01;
    for (int team = 0; team < 2; team++) {
        for (int i = 0; i < 100; i++)
            T_EQ_INT(book_reserve(b, team, 1000000 * C, now, &h, &why), 0);
        book_settle(b, &h, 1000000 * C, now);
    }
    expect_view(b, 0, now, -1, 1000000 * C, 99 * 1000000 * C, -1);
    expect_view(b, 1, now, -1, 1000000 * C, 99 * 1000000 * C, -1);
    book_free(b);
}

static void test_seed(void)
{
    book_t *b = book_new(1);
    int64_t now = T_2026_11_26_1530;
    book_team_set(b, 0, 100 * C, PERIOD_WEEK);
    book_team_seed(b, 0, book_period_start(PERIOD_WEEK, now), 70 * C);
    expect_view(b, 0, now, 100 * C, 70 * C, 0, 30 * C);
    book_hold_t h;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 30 * C + 1, now, &h, &why), -1);
    T_EQ_INT(why.spent, 70 * C);
    T_EQ_INT(why.available, 30 * C);
    T_EQ_INT(book_reserve(b, 0, 30 * C, now, &h, &why), 0);
    book_release(b, &h);
    /* same period and cap again: the figures stay */
    book_team_set(b, 0, 100 * C, PERIOD_WEEK);
    expect_view(b, 0, now, 100 * C, 70 * C, 0, 30 * C);
    /* a new cap keeps the spend */
    book_team_set(b, 0, 80 * C, PERIOD_WEEK);
    expect_view(b, 0, now, 80 * C, 70 * C, 0, 10 * C);
    /* the seeded spend belongs to its week only */
    expect_view(b, 0, T_2026_11_30, 80 * C, 0, 0, 80 * C);

    /* a seed for a past period is forgotten on first use */
    book_t *b2 = book_new(1);
    book_team_set(b2, 0, 100 * C, PERIOD_DAY);
    book_team_seed(b2, 0, T_2026_02_28, 60 * C);
    expect_view(b2, 0, T_2026_03_01 + 1, 100 * C, 0, 0, 100 * C);
    book_free(b2);
    book_free(b);
}

static void expect_account(book_t *b, nanos_t cap, nanos_t spent, nanos_t loaned,
                           nanos_t available)
{
    book_view_t v;
    book_account_view(b, &v);
    T_EQ_INT(v.cap, cap);
    T_EQ_INT(v.spent, spent);
    T_EQ_INT(v.loaned, loaned);
    T_EQ_INT(v.available, available);
}

static void test_account_projection(void)
{
    book_t *b = book_new(3);
    int64_t now = T_2026_03_01;
    book_team_set(b, 2, 1 * C, PERIOD_DAY);
    T_EQ_INT(book_account_enabled(b), 0);
    book_account_sync(b, 100 * C, 80 * C);
    T_EQ_INT(book_account_enabled(b), 1);
    expect_account(b, 100 * C, 0, 0, 80 * C);

    book_hold_t h0, h1, h2;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 50 * C, now, &h0, &why), 0);
    expect_account(b, 100 * C, 0, 50 * C, 30 * C);
    /* all teams' holds count: team 1 (uncapped) sees 30 left */
    T_EQ_INT(book_reserve(b, 1, 40 * C, now, &h1, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_ACCOUNT);
    T_EQ_INT(why.cap, 100 * C);
    T_EQ_INT(why.spent, 0);
    T_EQ_INT(why.loaned, 50 * C);
    T_EQ_INT(why.available, 30 * C);
    T_EQ_INT(why.required, 40 * C);
    T_EQ_INT(why.retry, 1);
    T_EQ_INT(book_reserve(b, 1, 80 * C + 1, now, &h1, &why), -1);
    T_EQ_INT(why.retry, 0);               /* more than the synced available */
    /* the team cap is checked first */
    T_EQ_INT(book_reserve(b, 2, 2 * C, now, &h2, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_TEAM);
    T_EQ_INT(why.cap, 1 * C);

    /* charged since the sync comes off the projection */
    book_settle(b, &h0, 20 * C, now);
    expect_account(b, 80 * C, 20 * C, 0, 60 * C);
    T_EQ_INT(book_reserve(b, 1, 60 * C + 1, now, &h1, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_ACCOUNT);
    T_EQ_INT(why.cap, 100 * C);          /* the synced total */
    T_EQ_INT(why.spent, 20 * C);
    T_EQ_INT(why.loaned, 0);
    T_EQ_INT(why.available, 60 * C);
    T_EQ_INT(why.required, 60 * C + 1);
    T_EQ_INT(why.retry, 0);               /* nothing in flight */
    T_EQ_INT(book_reserve(b, 1, 60 * C, now, &h1, &why), 0);
    expect_account(b, 80 * C, 20 * C, 60 * C, 0);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h0, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_ACCOUNT);
    T_EQ_INT(why.retry, 1);

    /* a new sync resets the charged count; holds in flight still count */
    book_account_sync(b, 200 * C, 100 * C);
    expect_account(b, 200 * C, 0, 60 * C, 40 * C);
    T_EQ_INT(book_reserve(b, 0, 40 * C + 1, now, &h0, &why), -1);
    T_EQ_INT(book_reserve(b, 0, 40 * C, now, &h0, &why), 0);
    book_release(b, &h1);
    book_release(b, &h0);
    expect_account(b, 200 * C, 0, 0, 100 * C);
    /* a release charges nothing on the account either */
    expect_view(b, 0, now, -1, 20 * C, 0, -1);
    book_free(b);
}

static void test_account_exhausted(void)
{
    book_t *b = book_new(1);
    int64_t now = T_2026_03_01;
    book_account_sync(b, 100 * C, 100 * C);
    book_hold_t h, h2;
    book_refusal_t why;
    T_EQ_INT(book_reserve(b, 0, 10 * C, now, &h, &why), 0);
    book_account_exhausted(b);
    expect_account(b, 100 * C, 0, 10 * C, 0);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h2, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_ACCOUNT);
    T_EQ_INT(why.available, 0);
    T_EQ_INT(why.required, 1);
    T_EQ_INT(why.loaned, 10 * C);
    T_EQ_INT(why.retry, 0);               /* finishing holds does not help */
    /* still blocked after holds end */
    book_settle(b, &h, 3 * C, now);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h2, &why), -1);
    /* a sync with nothing available keeps it blocked */
    book_account_sync(b, 100 * C, 0);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h2, &why), -1);
    T_EQ_INT(why.available, 0);
    book_account_sync(b, 100 * C, -5 * C);
    T_EQ_INT(book_reserve(b, 0, 1, now, &h2, &why), -1);
    T_EQ_INT(why.available, 0);
    /* the next sync with credit unblocks */
    book_account_sync(b, 100 * C, 1 * C);
    T_EQ_INT(book_reserve(b, 0, 1 * C, now, &h2, &why), 0);
    book_free(b);
}

static void test_account_off(void)
{
    book_t *b = book_new(1);
    int64_t now = T_2026_03_01;
    book_hold_t h;
    book_refusal_t why;
    book_account_exhausted(b);            /* no sync yet: ignored */
    T_EQ_INT(book_account_enabled(b), 0);
    for (int i = 0; i < 10; i++) {
        T_EQ_INT(book_reserve(b, 0, 1000000 * C, now, &h, &why), 0);
        book_settle(b, &h, 1000000 * C, now);
    }
    T_EQ_INT(book_account_enabled(b), 0);
    /* with a team cap, the refusal is the team's */
    book_team_set(b, 0, 5 * C, PERIOD_DAY);
    T_EQ_INT(book_reserve(b, 0, 6 * C, now, &h, &why), -1);
    T_EQ_INT(why.scope, BOOK_SCOPE_TEAM);
    book_free(b);
}


/* The month start is pure arithmetic; check it against libc for every day
 * from 1900 to 2200 (and a few seconds into each day). */
static void test_month_start_matches_libc(void)
{
    for (int64_t day = -25567; day < 84000; day++) {
        int64_t now = day * 86400 + (day % 7) * 3600 + 59;
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        tm.tm_mday = 1;
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        int64_t want = (int64_t)timegm(&tm);
        if (book_period_start(PERIOD_MONTH, now) != want) {
            T_EQ_INT(book_period_start(PERIOD_MONTH, now), want);
            return;
        }
    }
}

int main(void)
{
    T_RUN(test_month_start_matches_libc);
    T_RUN(test_reserve_within_cap);
    T_RUN(test_refusal_fields);
    T_RUN(test_bad_arguments);
    T_RUN(test_settle_and_release);
    T_RUN(test_reserves_never_exceed_cap);
    T_RUN(test_random_run_invariant);
    T_RUN(test_period_start);
    T_RUN(test_period_end);
    T_RUN(test_rollover);
    T_RUN(test_hold_across_rollover);
    T_RUN(test_uncapped);
    T_RUN(test_seed);
    T_RUN(test_account_projection);
    T_RUN(test_account_exhausted);
    T_RUN(test_account_off);
    return t_summary("book");
}
