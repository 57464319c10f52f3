/* Unit tests for money: exact formatting across the whole int64 range and
 * credit<->nano conversion at the JSON edges. */
#include "money.h"
#include "t.h"

#include <math.h>

static void test_fmt_small(void)
{
    char b[MONEY_FMT_MAX];
    T_EQ_STR(money_fmt(0, b), "0.000000000");
    T_EQ_STR(money_fmt(1, b), "0.000000001");
    T_EQ_STR(money_fmt(-1, b), "-0.000000001");
    T_EQ_STR(money_fmt(999999999, b), "0.999999999");
    T_EQ_STR(money_fmt(-999999999, b), "-0.999999999");
    T_EQ_STR(money_fmt(NANOS_PER_CREDIT, b), "1.000000000");
    T_EQ_STR(money_fmt(-1000000001LL, b), "-1.000000001");
    T_EQ_STR(money_fmt(9960000, b), "0.009960000");
    T_EQ_STR(money_fmt(25 * NANOS_PER_CREDIT + 500, b), "25.000000500");
}

static void test_fmt_extremes(void)
{
    char b[MONEY_FMT_MAX];
    T_EQ_STR(money_fmt(INT64_MAX, b), "9223372036.854775807");
    T_EQ_STR(money_fmt(INT64_MIN, b), "-9223372036.854775808");
    T_EQ_STR(money_fmt(INT64_MIN + 1, b), "-9223372036.854775807");
    T_CHECK(strlen(money_fmt(INT64_MIN, b)) < MONEY_FMT_MAX);
    T_CHECK(money_fmt(5, b) == b);
}

static void test_from_double(void)
{
    nanos_t v = 42;
    T_EQ_INT(money_from_double(0, &v), 0);
    T_EQ_INT(v, 0);
    T_EQ_INT(money_from_double(1.5, &v), 0);
    T_EQ_INT(v, 1500000000LL);
    T_EQ_INT(money_from_double(25.0, &v), 0);
    T_EQ_INT(v, 25000000000LL);
    T_EQ_INT(money_from_double(0.1, &v), 0);
    T_EQ_INT(v, 100000000LL);                 /* 0.1 rounds to nearest nano */
    T_EQ_INT(money_from_double(-2.25, &v), 0);
    T_EQ_INT(v, -2250000000LL);
    T_EQ_INT(money_from_double(1e-10, &v), 0);
    T_EQ_INT(v, 0);
    T_EQ_INT(money_from_double(9e9, &v), 0);
    T_EQ_INT(v, 9000000000000000000LL);
    T_EQ_INT(money_from_double(-9e9, &v), 0);
    T_EQ_INT(v, -9000000000000000000LL);
}

static void test_from_double_rejects(void)
{
    nanos_t v = 42;
    T_EQ_INT(money_from_double(NAN, &v), -1);
    T_EQ_INT(money_from_double(INFINITY, &v), -1);
    T_EQ_INT(money_from_double(-INFINITY, &v), -1);
    T_EQ_INT(money_from_double(9.000001e9, &v), -1);
    T_EQ_INT(money_from_double(-1e10, &v), -1);
    T_EQ_INT(v, 42);                          /* unchanged on error */
}

static void test_to_double(void)
{
    T_CHECK(money_to_double(0) == 0.0);
    T_CHECK(money_to_double(1500000000LL) == 1.5);
    T_CHECK(money_to_double(-2250000000LL) == -2.25);
    T_CHECK(money_to_double(1) == 1e-9);
    T_CHECK(fabs(money_to_double(INT64_MAX) - 9223372036.854775807) < 1e-5);
}

/* The digit loop agrees with a formatted print for many values. */
static void test_fmt_matches_printf(void)
{
    char b[MONEY_FMT_MAX], want[64];
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;          /* xorshift64 */
        int64_t v = (int64_t)(x >> (i % 63));
        if (i & 1) v = -v;
        uint64_t mag = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
        snprintf(want, sizeof want, "%s%llu.%09llu", v < 0 ? "-" : "",
                 (unsigned long long)(mag / 1000000000u), (unsigned long long)(mag % 1000000000u));
        if (strcmp(money_fmt(v, b), want) != 0) { T_EQ_STR(b, want); return; }
    }
}

int main(void)
{
    T_RUN(test_fmt_small);
    T_RUN(test_fmt_extremes);
    T_RUN(test_from_double);
    T_RUN(test_from_double_rejects);
    T_RUN(test_to_double);
    T_RUN(test_fmt_matches_printf);
    return t_summary("money");
}
