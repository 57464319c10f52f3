/* utc: dates, RFC 3339 UTC instants and months as unix milliseconds (see
 * utc.h). The calendar arithmetic is the proleptic Gregorian days-from-civil
 * and civil-from-days pair, exact for every int64 day count used here. */
#include "utc.h"
#include <stdio.h>
#include <string.h>

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Days since 1970-01-01 of y-m-d (m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* n digits at s as a number; -1 if any is not a digit. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The date in the first 10 characters of s (which has at least 10). */
static int date_prefix(const char *s, int64_t *days)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (s[4] != '-' || s[7] != '-') return -1;
    int y = digits(s, 4), m = digits(s + 5, 2), d = digits(s + 8, 2);
    if (y < 0 || m < 1 || m > 12 || d < 1) return -1;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] + (m == 2 && leap)) return -1;
    *days = days_from_civil(y, m, d);
    return 0;
}

int utc_parse_date(const char *s, int64_t *ms)
{
    int64_t days;
    if (strlen(s) != 10 || date_prefix(s, &days) != 0) return -1;
    *ms = days * UTC_DAY_MS;
    return 0;
}

int utc_parse_instant(const char *s, int64_t *ms)
{
    int64_t days;
    size_t n = strlen(s);
    if (n < 20 || date_prefix(s, &days) != 0) return -1;
    if ((s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':') return -1;
    int hh = digits(s + 11, 2), mi = digits(s + 14, 2), ss = digits(s + 17, 2);
    if (hh < 0 || hh > 23 || mi < 0 || mi > 59 || ss < 0 || ss > 59) return -1;
    const char *p = s + 19;
    int64_t frac_ms = 0;
    if (*p == '.') {
        int nd = 0, finer = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, nd++) {
            if (nd < 3) frac_ms = frac_ms * 10 + (*p - '0');
            else if (*p != '0') finer = 1;
        }
        if (nd == 0 || nd > 9) return -1;
        for (int i = nd; i < 3; i++) frac_ms *= 10;
        frac_ms += finer;             /* round up to the next whole millisecond */
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "z") != 0 && strcmp(p, "+00:00") != 0) return -1;
    *ms = days * UTC_DAY_MS + ((int64_t)hh * 3600 + mi * 60 + ss) * 1000 + frac_ms;
    return 0;
}

int utc_parse_bound(const char *s, int until, int64_t *ms)
{
    int64_t v;
    if (utc_parse_date(s, &v) == 0) {
        *ms = until ? v + UTC_DAY_MS : v;
        return 0;
    }
    return utc_parse_instant(s, ms);
}

int64_t utc_month_start(int64_t ms)
{
    int64_t y;
    int m, d;
    civil_from_days(floor_div(ms, UTC_DAY_MS), &y, &m, &d);
    return days_from_civil(y, m, 1) * UTC_DAY_MS;
}

int64_t utc_next_month(int64_t ms)
{
    int64_t y;
    int m, d;
    civil_from_days(floor_div(ms, UTC_DAY_MS), &y, &m, &d);
    if (++m > 12) { m = 1; y++; }
    return days_from_civil(y, m, 1) * UTC_DAY_MS;
}

char *utc_format(int64_t ms, char *buf)
{
    int64_t days = floor_div(ms, UTC_DAY_MS), rest = ms - days * UTC_DAY_MS;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(buf, UTC_FMT_MAX, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
             (int)(rest / 3600000), (int)(rest / 60000 % 60), (int)(rest / 1000 % 60),
             (int)(rest % 1000));
    return buf;
}
