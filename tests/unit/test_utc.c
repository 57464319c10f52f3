/* Unit tests for utc: dates, RFC 3339 UTC instants (fractions rounded up to
 * the millisecond, offsets other than UTC refused), range bounds (a date as
 * until is the end of that day), months around a time, and the format. */
#include "utc.h"
#include "t.h"

#define D1 1795392000000LL          /* 2026-11-23T00:00:00Z */
#define DAY UTC_DAY_MS

static void expect(int (*parse)(const char *, int64_t *), const char *s, int64_t want)
{
    int64_t ms = 42;
    int rc = parse(s, &ms);
    if (want == -1) {
        if (rc != -1) fprintf(stderr, "  \"%s\" accepted as %lld\n", s, (long long)ms);
        T_EQ_INT(rc, -1);
        T_EQ_INT(ms, 42);                /* untouched on failure */
    } else {
        if (rc != 0) fprintf(stderr, "  \"%s\" refused\n", s);
        T_EQ_INT(rc, 0);
        T_EQ_INT(ms, want);
    }
}

static void test_date(void)
{
    expect(utc_parse_date, "2026-11-23", D1);
    expect(utc_parse_date, "1970-01-01", 0);
    expect(utc_parse_date, "2024-02-29", 1709164800000LL);
    expect(utc_parse_date, "1969-12-31", -DAY);
    expect(utc_parse_date, "2025-02-29", -1);
    expect(utc_parse_date, "2026-04-31", -1);
    expect(utc_parse_date, "2026-13-01", -1);
    expect(utc_parse_date, "2026-11-2", -1);
    expect(utc_parse_date, "2026-11-23T00:00:00Z", -1);
    expect(utc_parse_date, "+026-11-23", -1);
    expect(utc_parse_date, "", -1);
}

static void test_instant(void)
{
    expect(utc_parse_instant, "2026-11-23T00:00:00Z", D1);
    expect(utc_parse_instant, "2026-11-23T10:00:00Z", D1 + 10 * UTC_HOUR_MS);
    expect(utc_parse_instant, "2026-11-23t10:00:00z", D1 + 10 * UTC_HOUR_MS);
    expect(utc_parse_instant, "2026-11-23T10:00:00+00:00", D1 + 10 * UTC_HOUR_MS);
    expect(utc_parse_instant, "2026-11-23T23:59:59Z", D1 + DAY - 1000);
    expect(utc_parse_instant, "2026-11-23T10:20:30.5Z", D1 + 37230500);
    expect(utc_parse_instant, "2026-11-23T10:20:30.123Z", D1 + 37230123);
    expect(utc_parse_instant, "2026-11-23T10:20:30.120000Z", D1 + 37230120);
    /* finer than a millisecond: up to the next one (rows are whole ms) */
    expect(utc_parse_instant, "2026-11-23T10:20:30.1231Z", D1 + 37230124);
    expect(utc_parse_instant, "2026-11-23T10:20:30.999999999Z", D1 + 37231000);
    expect(utc_parse_instant, "2026-11-23T10:20:30.0000000001Z", -1);   /* 10 digits */
    expect(utc_parse_instant, "2026-11-23T10:20:30.Z", -1);
    expect(utc_parse_instant, "2026-11-23T10:20:30", -1);               /* no zone */
    expect(utc_parse_instant, "2026-11-23T10:20:30+01:00", -1);         /* not UTC */
    expect(utc_parse_instant, "2026-11-23T10:20:30-00:00", -1);
    expect(utc_parse_instant, "2026-11-23T24:00:00Z", -1);
    expect(utc_parse_instant, "2026-11-23T10:60:00Z", -1);
    expect(utc_parse_instant, "2026-11-23T10:00:60Z", -1);
    expect(utc_parse_instant, "2026-11-23 10:00:00Z", -1);
    expect(utc_parse_instant, "2026-11-23T1:00:00Z", -1);
    expect(utc_parse_instant, "2026-02-30T10:00:00Z", -1);
    expect(utc_parse_instant, "2026-11-23T10:00:00ZZ", -1);
    expect(utc_parse_instant, "2026-11-23", -1);
}

static int64_t bound(const char *s, int until)
{
    int64_t ms = 42;
    return utc_parse_bound(s, until, &ms) == 0 ? ms : -42;
}

static void test_bound(void)
{
    T_EQ_INT(bound("2026-11-23", 0), D1);
    T_EQ_INT(bound("2026-11-23", 1), D1 + DAY);           /* the whole 23rd */
    T_EQ_INT(bound("2026-12-31", 1), 1798761600000LL);    /* 2027-01-01T00:00:00Z */
    T_EQ_INT(bound("2026-11-23T10:00:00Z", 0), D1 + 10 * UTC_HOUR_MS);
    T_EQ_INT(bound("2026-11-23T10:00:00Z", 1), D1 + 10 * UTC_HOUR_MS);   /* an instant is itself */
    T_EQ_INT(bound("yesterday", 0), -42);
    T_EQ_INT(bound("2026-11-23T10:00", 1), -42);
}

static void test_months(void)
{
    T_EQ_INT(utc_month_start(D1 + 5 * UTC_HOUR_MS), 1793491200000LL);   /* 2026-11-01 */
    T_EQ_INT(utc_next_month(D1), 1796083200000LL);                      /* 2026-12-01 */
    T_EQ_INT(utc_month_start(1796083200000LL), 1796083200000LL);       /* its own start */
    T_EQ_INT(utc_month_start(1796083200000LL - 1), 1793491200000LL);
    T_EQ_INT(utc_next_month(1798675200000LL), 1798761600000LL);        /* Dec -> next Jan */
    T_EQ_INT(utc_month_start(1709164800000LL), 1706745600000LL);       /* 2024-02-29 -> 02-01 */
    T_EQ_INT(utc_next_month(1706745600000LL), 1709251200000LL);        /* -> 2024-03-01 */
    T_EQ_INT(utc_month_start(-1), -31 * DAY);                          /* 1969-12-01 */
}

static void test_format(void)
{
    char b[UTC_FMT_MAX];
    T_EQ_STR(utc_format(D1, b), "2026-11-23T00:00:00.000Z");
    T_EQ_STR(utc_format(D1 + 37230123, b), "2026-11-23T10:20:30.123Z");
    T_EQ_STR(utc_format(0, b), "1970-01-01T00:00:00.000Z");
    T_EQ_STR(utc_format(-1, b), "1969-12-31T23:59:59.999Z");
    T_EQ_STR(utc_format(1798761600000LL - 1, b), "2026-12-31T23:59:59.999Z");
    /* what it prints parses back to the same instant */
    const int64_t ts[] = {D1 + 1, 1709164800000LL + 86399999, 951782400000LL, 4102444800000LL};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t back = 0;
        T_EQ_INT(utc_parse_instant(utc_format(ts[i], b), &back), 0);
        T_EQ_INT(back, ts[i]);
    }
}

int main(void)
{
    T_RUN(test_date);
    T_RUN(test_instant);
    T_RUN(test_bound);
    T_RUN(test_months);
    T_RUN(test_format);
    return t_summary("utc");
}
