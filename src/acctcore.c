/* acctcore: top-up detection, the guard's window, reconciliation lines (see
 * acctcore.h). Pure arithmetic on nano-credits and milliseconds. */
#include "acctcore.h"

int acctcore_topup(nanos_t prev_total, nanos_t total, nanos_t charged, nanos_t *added)
{
    *added = 0;
    if (total <= prev_total) return 0;
    *added = total - prev_total + (charged > 0 ? charged : 0);
    return 1;
}

int acctcore_guard(const int64_t *times, size_t n, int max, int64_t now_ms,
                   size_t *in_window, int64_t *until_ms)
{
    size_t first = 0;                 /* the oldest top-up within the window */
    while (first < n && times[first] <= now_ms - ACCTCORE_DAY_MS) first++;
    size_t k = n - first;
    *in_window = k;
    *until_ms = 0;
    if (max < 0 || k <= (size_t)max) return 0;
    /* the count falls back to max once the (k - max) oldest have aged out:
     * when the last of them, times[first + k - max - 1], turns 24 h old */
    *until_ms = times[first + (k - (size_t)max) - 1] + ACCTCORE_DAY_MS;
    return 1;
}

void acctcore_line(const acctcore_sync_t *a, const acctcore_sync_t *b, nanos_t added,
                   nanos_t pinmeter, acctcore_line_t *out)
{
    out->from_ms = a->at_ms;
    out->to_ms = b->at_ms;
    out->total_from = a->total;
    out->total_to = b->total;
    out->added = added;
    out->pinata = a->total - b->total + added;
    out->pinmeter = pinmeter;
    out->drift = out->pinata - pinmeter;
}

long acctcore_interval_of(const int64_t *to, size_t n, int64_t first_from, int64_t t)
{
    if (n == 0 || t <= first_from || t > to[n - 1]) return -1;
    size_t lo = 0, hi = n - 1;        /* the first end at or after t */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (to[mid] >= t) hi = mid;
        else lo = mid + 1;
    }
    return (long)lo;
}

nanos_t acctcore_window_drift(const acctcore_line_t *lines, size_t n, int64_t now_ms,
                              int64_t window_ms)
{
    nanos_t sum = 0;
    for (size_t i = 0; i < n; i++)
        if (lines[i].to_ms > now_ms - window_ms && lines[i].to_ms <= now_ms)
            sum += lines[i].drift;
    return sum;
}
