/* Unit tests for alertcore: the stable id (against an independent SHA-256),
 * threshold limits to the nano, the retry schedule, period ends, RFC 3339
 * formatting and parsing, and the exact bodies of each event. */
#include "alertcore.h"
#include "book.h"
#include "t.h"

#include <stdlib.h>

static void test_id(void)
{
    char a[ALERTCORE_ID_LEN + 1], b[ALERTCORE_ID_LEN + 1];
    /* python3: hashlib.sha256(b"pinmeter-alert:budget_threshold:research:1793491200:500000") */
    alertcore_id(ALERTCORE_THRESHOLD, "research", 1793491200, 500000, a);
    T_EQ_STR(a, "8da8f3baacc449fb164ad86f");
    T_EQ_INT(strlen(a), ALERTCORE_ID_LEN);
    alertcore_id(ALERTCORE_THRESHOLD, "research", 1793491200, 500000, b);
    T_EQ_STR(a, b);                                    /* stable */
    alertcore_id(ALERTCORE_THRESHOLD, "research", 1793491200, 800000, b);
    T_CHECK(strcmp(a, b) != 0);                        /* another threshold */
    alertcore_id(ALERTCORE_THRESHOLD, "research", 1796083200, 500000, b);
    T_CHECK(strcmp(a, b) != 0);                        /* another period */
    alertcore_id(ALERTCORE_THRESHOLD, "support", 1793491200, 500000, b);
    T_CHECK(strcmp(a, b) != 0);                        /* another team */
    alertcore_id(ALERTCORE_CAP_REFUSED, "research", 1793491200, 500000, b);
    T_CHECK(strcmp(a, b) != 0);                        /* another event */
}

static void test_limits(void)
{
    const nanos_t cap = 1000000000;                    /* 1 credit */
    T_EQ_INT(alertcore_limit(cap, 500000), 500000000);
    T_EQ_INT(alertcore_limit(cap, 800000), 800000000);
    T_EQ_INT(alertcore_limit(cap, 1000000), 1000000000);
    T_EQ_INT(alertcore_limit(cap, 10000000), 10000000000LL);
    T_EQ_INT(alertcore_limit(3, 500000), 2);           /* 1.5 nanos: rounded up */
    T_EQ_INT(alertcore_limit(9000000000000000000LL, 1000000), 9000000000000000000LL);
    T_EQ_INT(alertcore_limit(9000000000000000000LL, 10000000), INT64_MAX);   /* no wrap */
    int32_t th[] = { 500000, 800000, 1000000 };
    size_t idx[3];
    T_EQ_INT(alertcore_reached(cap, 499999999, th, 3, idx), 0);
    T_EQ_INT(alertcore_reached(cap, 500000000, th, 3, idx), 1);
    T_EQ_INT(idx[0], 0);
    T_EQ_INT(alertcore_reached(cap, 799999999, th, 3, idx), 1);
    T_EQ_INT(alertcore_reached(cap, 800000000, th, 3, idx), 2);
    T_EQ_INT(idx[1], 1);
    T_EQ_INT(alertcore_reached(cap, 1000000005, th, 3, idx), 3);
    T_EQ_INT(idx[2], 2);
    T_EQ_INT(alertcore_reached(0, 5, th, 3, idx), 0);  /* a zero cap has no fractions */
    T_EQ_INT(alertcore_reached(-1, 5, th, 3, idx), 0); /* nor no cap */
}

static void test_schedule(void)
{
    const int64_t base = 1000, cap = 300000, day = 86400000;
    int64_t next, now = 5000, first = 5000;
    int64_t want[] = { 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000,
                       300000 };
    for (int n = 1; n <= 11; n++) {
        T_EQ_INT(alertcore_next_attempt(first, n, now, base, cap, day, &next), 0);
        T_EQ_INT(next - now, want[n - 1]);
        now = next;
    }
    /* the last attempt starts at most 24 h after the first */
    T_EQ_INT(alertcore_next_attempt(0, 200, day - 300000, base, cap, day, &next), 0);
    T_EQ_INT(next, day);
    next = -7;
    T_EQ_INT(alertcore_next_attempt(0, 200, day - 299999, base, cap, day, &next), -1);
    T_EQ_INT(next, -7);                                /* untouched */
    /* a huge attempt count does not overflow the doubling */
    T_EQ_INT(alertcore_next_attempt(0, 1000000, 10, base, cap, day, &next), 0);
    T_EQ_INT(next, 300010);
}

static void test_period_end(void)
{
    T_EQ_INT(alertcore_period_end(PERIOD_DAY, 1795478400), 1795478400 + 86400);
    T_EQ_INT(alertcore_period_end(PERIOD_WEEK, 1795478400), 1795478400 + 7 * 86400);
    T_EQ_INT(alertcore_period_end(PERIOD_MONTH, 1793491200), 1796083200);   /* Nov -> Dec */
    T_EQ_INT(alertcore_period_end(PERIOD_MONTH, 1796083200), 1798761600);   /* Dec -> Jan */
    T_EQ_INT(alertcore_period_end(PERIOD_MONTH, 1832976000), 1835481600);   /* Feb 2028: 29 */
    T_EQ_INT(alertcore_period_end(PERIOD_NONE, 0), 0);
    for (int64_t t = 0; t < 4102444800; t += 86400 * 7 + 3601) {            /* to 2100 */
        int64_t s = book_period_start(PERIOD_MONTH, t);
        T_EQ_INT(book_period_start(PERIOD_MONTH, alertcore_period_end(PERIOD_MONTH, s) - 1), s);
        T_EQ_INT(book_period_start(PERIOD_MONTH, alertcore_period_end(PERIOD_MONTH, s)),
                 alertcore_period_end(PERIOD_MONTH, s));
    }
}

static void test_time(void)
{
    char b[ALERTCORE_TIME_MAX];
    int64_t ms;
    T_EQ_STR(alertcore_time(0, b), "1970-01-01T00:00:00.000Z");
    T_EQ_STR(alertcore_time(1795514400123LL, b), "2026-11-24T10:00:00.123Z");
    T_EQ_STR(alertcore_time(951782400000LL, b), "2000-02-29T00:00:00.000Z");
    T_EQ_STR(alertcore_time(-1, b), "1969-12-31T23:59:59.999Z");
    T_EQ_INT(alertcore_parse_time("2026-11-24T10:00:00Z", &ms), 0);
    T_EQ_INT(ms, 1795514400000LL);
    T_EQ_INT(alertcore_parse_time("2026-11-24t10:00:00.123z", &ms), 0);
    T_EQ_INT(ms, 1795514400123LL);
    T_EQ_INT(alertcore_parse_time("2026-11-24T10:00:00.1234567Z", &ms), 0);
    T_EQ_INT(ms, 1795514400123LL);
    T_EQ_INT(alertcore_parse_time("2026-11-24T12:30:00+02:30", &ms), 0);
    T_EQ_INT(ms, 1795514400000LL);
    T_EQ_INT(alertcore_parse_time("2026-11-24T05:00:00-05:00", &ms), 0);
    T_EQ_INT(ms, 1795514400000LL);
    T_EQ_INT(alertcore_parse_time("2026-11-24", &ms), 0);
    T_EQ_INT(ms, 1795478400000LL);
    T_EQ_INT(alertcore_parse_time("2028-02-29", &ms), 0);
    T_EQ_INT(alertcore_parse_time(alertcore_time(1795514400123LL, b), &ms), 0);
    T_EQ_INT(ms, 1795514400123LL);
    const char *bad[] = { "", "2026", "2026-11", "2026-13-01", "2026-02-29", "2026-11-31",
                          "2026-11-24T10:00Z", "2026-11-24T10:00:00", "2026-11-24T25:00:00Z",
                          "2026-11-24T10:60:00Z", "2026-11-24T10:00:00.Z", "2026-11-24T10:00:00+0200",
                          "2026-11-24T10:00:00Zjunk", "2026-11-24x", "yesterday", "1795514400",
                          "2026-11-24 10:00:00 Z", NULL };
    for (int i = 0; bad[i]; i++) {
        ms = 42;
        if (alertcore_parse_time(bad[i], &ms) != -1)
            fprintf(stderr, "  accepted \"%s\"\n", bad[i]), t_cur_failed = 1;
        T_EQ_INT(ms, 42);
    }
}

static void test_payloads(void)
{
    alertcore_event_t e = {
        .event = ALERTCORE_THRESHOLD, .id = "8da8f3baacc449fb164ad86f", .at_ms = 1795514400123LL,
        .instance = "i1", .team = "research", .period_start = 1793491200,
        .period_end = 1796083200, .ppm = 800000, .cap = 25000000000LL, .spent = 20000000001LL,
        .loaned = 7, .available = 4999999992LL,
    };
    char *p = alertcore_payload(&e);
    T_EQ_STR(p, "{\"event\":\"budget_threshold\",\"id\":\"8da8f3baacc449fb164ad86f\","
                "\"at\":\"2026-11-24T10:00:00.123Z\",\"instance\":\"i1\",\"team\":\"research\","
                "\"period_start\":\"2026-11-01T00:00:00.000Z\","
                "\"period_end\":\"2026-12-01T00:00:00.000Z\",\"threshold\":0.8,"
                "\"cap\":25.000000000,\"spent\":20.000000001,\"loaned\":0.000000007,"
                "\"available\":4.999999992}");
    free(p);
    e.ppm = 1000000;
    e.period_end = 0;
    p = alertcore_payload(&e);
    T_CHECK(p && strstr(p, "\"threshold\":1,") && strstr(p, "\"period_end\":null,"));
    free(p);
    e.ppm = 333333;
    p = alertcore_payload(&e);
    T_CHECK(p && strstr(p, "\"threshold\":0.333333,"));
    free(p);
    e.event = ALERTCORE_CAP_REFUSED;
    e.required = 123;
    e.period_end = 1796083200;
    p = alertcore_payload(&e);
    T_EQ_STR(p, "{\"event\":\"cap_refused\",\"id\":\"8da8f3baacc449fb164ad86f\","
                "\"at\":\"2026-11-24T10:00:00.123Z\",\"instance\":\"i1\",\"team\":\"research\","
                "\"period_start\":\"2026-11-01T00:00:00.000Z\","
                "\"period_end\":\"2026-12-01T00:00:00.000Z\","
                "\"cap\":25.000000000,\"spent\":20.000000001,\"loaned\":0.000000007,"
                "\"available\":4.999999992,\"required\":0.000000123}");
    free(p);
    alertcore_event_t acc = { .event = ALERTCORE_ACCOUNT_LOW, .id = "x", .at_ms = 0,
                              .instance = "i1", .cap = 50000000000LL, .loaned = 0,
                              .available = -1, .below = 20000000000LL };
    p = alertcore_payload(&acc);
    T_EQ_STR(p, "{\"event\":\"account_low\",\"id\":\"x\",\"at\":\"1970-01-01T00:00:00.000Z\","
                "\"instance\":\"i1\",\"team\":null,\"account_below\":20.000000000,"
                "\"total\":50.000000000,\"loaned\":0.000000000,\"available\":-0.000000001}");
    free(p);
    alertcore_event_t up = { .event = ALERTCORE_TOPUP, .id = "u", .at_ms = 0, .instance = "i1",
                             .added = 10500000000LL, .cap = 109000000000LL,
                             .prev_total = 99500000000LL, .topups = 2, .max_topups = 3 };
    p = alertcore_payload(&up);
    T_EQ_STR(p, "{\"event\":\"topup_detected\",\"id\":\"u\",\"at\":\"1970-01-01T00:00:00.000Z\","
                "\"instance\":\"i1\",\"team\":null,\"credits_added\":10.500000000,"
                "\"total\":109.000000000,\"previous_total\":99.500000000,\"topups_24h\":2,"
                "\"max_topups_per_day\":3}");
    free(p);
    up.max_topups = -1;
    p = alertcore_payload(&up);
    T_CHECK(p && strstr(p, "\"max_topups_per_day\":null}"));
    free(p);
    alertcore_event_t lim = { .event = ALERTCORE_TOPUP_LIMIT, .id = "l", .at_ms = 0,
                              .instance = "i1", .topups = 4, .max_topups = 3,
                              .until_ms = 86400000 };
    p = alertcore_payload(&lim);
    T_EQ_STR(p, "{\"event\":\"topup_limit\",\"id\":\"l\",\"at\":\"1970-01-01T00:00:00.000Z\","
                "\"instance\":\"i1\",\"team\":null,\"topups_24h\":4,\"max_topups_per_day\":3,"
                "\"until\":\"1970-01-02T00:00:00.000Z\",\"message\":\"new requests get 402 "
                "topup_limit until then, or until POST /v0/credits/topup/guard/reset\"}");
    free(p);
    alertcore_event_t dr = { .event = ALERTCORE_DRIFT, .id = "d", .at_ms = 0, .instance = "i1",
                             .drift = -1500000000LL, .limit = 1000000000LL };
    p = alertcore_payload(&dr);
    T_EQ_STR(p, "{\"event\":\"drift\",\"id\":\"d\",\"at\":\"1970-01-01T00:00:00.000Z\","
                "\"instance\":\"i1\",\"team\":null,\"drift\":-1.500000000,"
                "\"drift_alert\":1.000000000,\"window_s\":3600}");
    free(p);
    alertcore_event_t t = { .event = ALERTCORE_TEST, .id = "y", .at_ms = 0, .instance = "i\"1" };
    p = alertcore_payload(&t);
    T_EQ_STR(p, "{\"event\":\"alert_test\",\"id\":\"y\",\"at\":\"1970-01-01T00:00:00.000Z\","
                "\"instance\":\"i\\\"1\",\"team\":null,"
                "\"message\":\"a test event from pinmeter alert test\"}");
    free(p);
}

int main(void)
{
    T_RUN(test_id);
    T_RUN(test_limits);
    T_RUN(test_schedule);
    T_RUN(test_period_end);
    T_RUN(test_time);
    T_RUN(test_payloads);
    return t_summary("alertcore");
}
