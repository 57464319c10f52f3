/* acctcore: the pure part of watching the Pinata account — what a sync
 * means (a top-up: the total rose), the top-up guard's window (more than N
 * top-ups within 24 h), and reconciliation (per interval between two syncs:
 * Pinata's spend, pinmeter's charges, the drift between them). No I/O, no
 * clock, no globals: callers pass "now". Money is integer nano-credits.
 * tests/unit/test_acctcore.c checks each. */
#ifndef PINMETER_ACCTCORE_H
#define PINMETER_ACCTCORE_H
#include <stddef.h>
#include <stdint.h>
#include "money.h"

#define ACCTCORE_DAY_MS 86400000LL      /* the guard's window */
#define ACCTCORE_HOUR_MS 3600000LL      /* the drift gauge's window */

/* One read of Pinata's balance. */
typedef struct acctcore_sync {
    int64_t at_ms;
    nanos_t total, loaned, available;
} acctcore_sync_t;

/* A sync after one whose total was prev_total, with pinmeter having charged
 * charged (>= 0) in between: 1 when credits were added (total is higher),
 * with *added = the rise plus what was charged in between (what the top-up
 * must have been for the total to end where it did); 0 otherwise (*added
 * 0). */
int acctcore_topup(nanos_t prev_total, nanos_t total, nanos_t charged, nanos_t *added);

/* The top-up guard at now_ms: times[n] are the top-ups counted (since the
 * last reset), ascending; max is account.max_topups_per_day (< 0: no
 * guard). *in_window = how many fall within the last 24 h (t > now - 24 h).
 * Returns 1 when more than max do — new requests are refused — with
 * *until_ms the instant that stops being so (the top-up whose ageing brings
 * the count back to max turns 24 h old; for max + 1 top-ups, the oldest);
 * else 0 with *until_ms 0. */
int acctcore_guard(const int64_t *times, size_t n, int max, int64_t now_ms,
                   size_t *in_window, int64_t *until_ms);

/* One interval of the reconciliation: from one sync to the next. */
typedef struct acctcore_line {
    int64_t from_ms, to_ms;
    nanos_t total_from, total_to;
    nanos_t added;                 /* credits a top-up detected at to_ms added (0: none) */
    nanos_t pinata;                /* Pinata's spend: total_from - total_to + added */
    nanos_t pinmeter;              /* pinmeter's charges settled in (from_ms, to_ms] */
    nanos_t drift;                 /* pinata - pinmeter */
} acctcore_line_t;

/* The line from sync a to sync b, with the credits a top-up detected at b
 * added and what pinmeter charged in between. */
void acctcore_line(const acctcore_sync_t *a, const acctcore_sync_t *b, nanos_t added,
                   nanos_t pinmeter, acctcore_line_t *out);

/* Which interval instant t (a charge's settle time) belongs to: the index i
 * of the interval (from_i, to_i] where to[] are the n intervals' ends,
 * ascending, from_0 = first_from and from_i = to[i-1]. -1 when t is in
 * none (at or before first_from, after the last end). */
long acctcore_interval_of(const int64_t *to, size_t n, int64_t first_from, int64_t t);

/* The sum of the drifts of the intervals ending in (now - window_ms, now]:
 * lines[n] in any order. */
nanos_t acctcore_window_drift(const acctcore_line_t *lines, size_t n, int64_t now_ms,
                              int64_t window_ms);

#endif
