/* Unit tests for acctcore: top-up detection, the guard's window, the
 * reconciliation lines and the assignment of a charge to its interval. */
#include "acctcore.h"
#include "t.h"

#define DAY ACCTCORE_DAY_MS
#define C NANOS_PER_CREDIT

static void test_topup(void)
{
    nanos_t added = -1;
    /* fell: no top-up */
    T_EQ_INT(acctcore_topup(100 * C, 99 * C, C, &added), 0);
    T_EQ_INT(added, 0);
    /* unchanged: none */
    T_EQ_INT(acctcore_topup(100 * C, 100 * C, 0, &added), 0);
    /* rose by 8 while pinmeter charged 2: 10 were added */
    T_EQ_INT(acctcore_topup(100 * C, 108 * C, 2 * C, &added), 1);
    T_EQ_INT(added, 10 * C);
    /* one nano is a rise */
    T_EQ_INT(acctcore_topup(5, 6, 0, &added), 1);
    T_EQ_INT(added, 1);
    /* a negative charge (none known) adds nothing */
    T_EQ_INT(acctcore_topup(5, 7, -3, &added), 1);
    T_EQ_INT(added, 2);
}

static void test_guard(void)
{
    size_t k = 99;
    int64_t until = -1;
    int64_t now = 100 * DAY;
    int64_t t[] = { now - 50000, now - 40000, now - 30000, now - 20000, now - 10000 };
    /* no guard: counts, never refuses */
    T_EQ_INT(acctcore_guard(t, 5, -1, now, &k, &until), 0);
    T_EQ_INT(k, 5);
    T_EQ_INT(until, 0);
    /* three within a day with max 3: fine */
    T_EQ_INT(acctcore_guard(t, 3, 3, now, &k, &until), 0);
    T_EQ_INT(k, 3);
    /* the fourth trips it until the oldest is a day old */
    T_EQ_INT(acctcore_guard(t, 4, 3, now, &k, &until), 1);
    T_EQ_INT(k, 4);
    T_EQ_INT(until, t[0] + DAY);
    /* five with max 3: until the second oldest is a day old */
    T_EQ_INT(acctcore_guard(t, 5, 3, now, &k, &until), 1);
    T_EQ_INT(until, t[1] + DAY);
    /* max 0: any top-up trips, until it is a day old */
    T_EQ_INT(acctcore_guard(t + 4, 1, 0, now, &k, &until), 1);
    T_EQ_INT(until, t[4] + DAY);
    /* just before the oldest turns a day old: still refused; at it, lifted */
    T_EQ_INT(acctcore_guard(t, 4, 3, t[0] + DAY - 1, &k, &until), 1);
    T_EQ_INT(acctcore_guard(t, 4, 3, t[0] + DAY, &k, &until), 0);
    T_EQ_INT(k, 3);
    T_EQ_INT(until, 0);
    /* top-ups older than a day do not count */
    int64_t old[] = { now - 2 * DAY, now - DAY, now - DAY + 1, now - 5, now - 4, now - 3 };
    T_EQ_INT(acctcore_guard(old, 6, 3, now, &k, &until), 1);
    T_EQ_INT(k, 4);
    T_EQ_INT(until, now - DAY + 1 + DAY);
    T_EQ_INT(acctcore_guard(NULL, 0, 0, now, &k, &until), 0);
    T_EQ_INT(k, 0);
}

static void test_line(void)
{
    acctcore_sync_t a = { 1000, 100 * C, 0, 100 * C }, b = { 31000, 98 * C + 500000000, 0, 0 };
    acctcore_line_t l;
    acctcore_line(&a, &b, 0, C, &l);
    T_EQ_INT(l.from_ms, 1000);
    T_EQ_INT(l.to_ms, 31000);
    T_EQ_INT(l.pinata, C + 500000000);
    T_EQ_INT(l.pinmeter, C);
    T_EQ_INT(l.drift, 500000000);
    /* a top-up of 10 at b: Pinata spent the fall plus the 10 */
    acctcore_sync_t c = { 61000, 107 * C, 0, 0 };
    acctcore_line(&b, &c, 10 * C, C + 500000000, &l);
    T_EQ_INT(l.pinata, C + 500000000);
    T_EQ_INT(l.drift, 0);
    T_EQ_INT(l.added, 10 * C);
    /* pinmeter charged more than Pinata drew: negative drift */
    acctcore_line(&a, &b, 0, 2 * C, &l);
    T_EQ_INT(l.drift, -500000000);
}

static void test_interval_of(void)
{
    int64_t to[] = { 20, 30, 40 };
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 10), -1);     /* at the first sync: before */
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 11), 0);
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 20), 0);      /* at a sync: the interval it ends */
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 21), 1);
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 30), 1);
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 39), 2);
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 40), 2);
    T_EQ_INT(acctcore_interval_of(to, 3, 10, 41), -1);
    T_EQ_INT(acctcore_interval_of(to, 0, 10, 15), -1);
    T_EQ_INT(acctcore_interval_of(to, 1, 10, 15), 0);
}

static void test_window(void)
{
    acctcore_line_t l[3] = { { .to_ms = 1000, .drift = 5 }, { .to_ms = 5000, .drift = -2 },
                             { .to_ms = 9000, .drift = 7 } };
    T_EQ_INT(acctcore_window_drift(l, 3, 9000, 10000), 10);
    T_EQ_INT(acctcore_window_drift(l, 3, 9000, 8000), 5);    /* (1000, 9000]: not the first */
    T_EQ_INT(acctcore_window_drift(l, 3, 8999, 8000), 3);    /* the last is not yet */
    T_EQ_INT(acctcore_window_drift(l, 0, 9000, 8000), 0);
}

int main(void)
{
    T_RUN(test_topup);
    T_RUN(test_guard);
    T_RUN(test_line);
    T_RUN(test_interval_of);
    T_RUN(test_window);
    return t_summary("acctcore");
}
