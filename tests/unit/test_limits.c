/* limits: sliding windows with exact counts and Retry-After figures. */
#include "t.h"
#include "limits.h"

#define T0 1000000500LL                  /* unix ms, half a second into a second */
#define C 1000000000LL                   /* one credit */

static void test_no_limits_admit_everything(void)
{
    limits_conf_t c = {0};
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    for (int i = 0; i < 1000; i++) {
        T_EQ_INT(limits_check(&c, &s, T0, 1000000, 100 * C, &v), LIMITS_OK);
        limits_take(&s, T0, 1000000, 100 * C);
    }
    T_EQ_INT(v.limit_requests, 0);
}

static void test_rpm_exact_and_retry_after(void)
{
    limits_conf_t c = { .rpm = 30 };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    for (int i = 0; i < 30; i++) {
        T_EQ_INT(limits_check(&c, &s, T0 + i * 100, 10, 0, &v), LIMITS_OK);
        T_EQ_INT(v.remaining_requests, 29 - i);
        limits_take(&s, T0 + i * 100, 10, 0);
    }
    /* 30 taken between T0 and T0 + 2.9 s (seconds 1000000..1000002) */
    int64_t now = T0 + 10000;
    T_EQ_INT(limits_check(&c, &s, now, 10, 0, &v), LIMITS_RPM);
    /* second 1000000 leaves the window when second 1000060 begins: 49.5 s */
    T_EQ_INT(v.retry_after_s, 50);
    T_EQ_INT(v.remaining_requests, 0);
    T_EQ_INT(limits_check(&c, &s, now + 49000, 10, 0, &v), LIMITS_RPM);
    T_EQ_INT(limits_check(&c, &s, now + 50000, 10, 0, &v), LIMITS_OK);
}

static void test_window_slides_not_clock_minute(void)
{
    limits_conf_t c = { .rpm = 2 };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    int64_t t = 1000059000LL;            /* one second before a clock minute */
    limits_take(&s, t, 1, 0);
    limits_take(&s, t, 1, 0);
    /* a new clock minute starts 1 s later: still refused for 59 s more */
    T_EQ_INT(limits_check(&c, &s, t + 1500, 1, 0, &v), LIMITS_RPM);
    T_EQ_INT(limits_check(&c, &s, t + 59500, 1, 0, &v), LIMITS_RPM);
    T_EQ_INT(limits_check(&c, &s, t + 60000, 1, 0, &v), LIMITS_OK);
}

static void test_tpm_corrected_at_settle(void)
{
    limits_conf_t c = { .tpm = 1000 };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    T_EQ_INT(limits_check(&c, &s, T0, 600, 0, &v), LIMITS_OK);
    T_EQ_INT(v.remaining_tokens, 400);
    limits_take(&s, T0, 600, 0);
    T_EQ_INT(limits_check(&c, &s, T0 + 1000, 500, 0, &v), LIMITS_TPM);
    T_EQ_INT(v.retry_after_s, 59);       /* T0's second leaves 58.5 s after now */
    limits_settle(&s, T0, T0 + 2000, 600, 300, 0, 0);   /* it used 300 */
    T_EQ_INT(limits_check(&c, &s, T0 + 2000, 500, 0, &v), LIMITS_OK);
    T_EQ_INT(v.remaining_tokens, 200);
    /* a request larger than the whole limit never fits */
    T_EQ_INT(limits_check(&c, &s, T0 + 2000, 1001, 0, &v), LIMITS_TPM);
}

static void test_inflight(void)
{
    limits_conf_t c = { .max_inflight = 2 };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    limits_take(&s, T0, 1, 0);
    limits_take(&s, T0, 1, 0);
    T_EQ_INT(limits_check(&c, &s, T0, 1, 0, &v), LIMITS_INFLIGHT);
    T_EQ_INT(v.retry_after_s, 1);
    limits_settle(&s, T0, T0 + 10, 1, 1, 0, 0);
    T_EQ_INT(limits_check(&c, &s, T0 + 10, 1, 0, &v), LIMITS_OK);
}

static void test_spend_minute_counts_loaned_and_charged(void)
{
    limits_conf_t c = { .spend_minute = C };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    limits_take(&s, T0, 1, 6 * C / 10);                   /* 0.6 loaned */
    T_EQ_INT(limits_check(&c, &s, T0, 1, 5 * C / 10, &v), LIMITS_SPEND_MINUTE);
    T_EQ_INT(v.spent_in_window, 6 * C / 10);
    T_EQ_INT(v.limit, C);
    limits_settle(&s, T0, T0 + 1000, 1, 1, 6 * C / 10, 3 * C / 10);   /* charged 0.3 */
    T_EQ_INT(limits_check(&c, &s, T0 + 1000, 1, 5 * C / 10, &v), LIMITS_OK);
    limits_take(&s, T0 + 1000, 1, 5 * C / 10);
    limits_settle(&s, T0 + 1000, T0 + 5000, 1, 1, 5 * C / 10, 5 * C / 10);  /* charged 0.5 */
    T_EQ_INT(limits_check(&c, &s, T0 + 5000, 1, 3 * C / 10, &v), LIMITS_SPEND_MINUTE);
    T_EQ_INT(v.spent_in_window, 8 * C / 10);
    /* the 0.3 charged in second T0+1 s leaves when second T0+61 s begins */
    T_EQ_INT(v.retry_after_s, 56);
    T_EQ_INT(limits_check(&c, &s, T0 + 5000 + 55000, 1, 3 * C / 10, &v), LIMITS_SPEND_MINUTE);
    T_EQ_INT(limits_check(&c, &s, T0 + 5000 + 56000, 1, 3 * C / 10, &v), LIMITS_OK);
}

static void test_spend_hour_by_the_minute(void)
{
    limits_conf_t c = { .spend_hour = 5 * C };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    int64_t t = 1000000000000LL - 1000000000000LL % 60000;   /* on a minute */
    limits_take(&s, t, 1, 3 * C);
    limits_settle(&s, t, t + 1000, 1, 1, 3 * C, 3 * C);
    limits_take(&s, t + 30 * 60000, 1, 2 * C);
    limits_settle(&s, t + 30 * 60000, t + 30 * 60000 + 1000, 1, 1, 2 * C, 2 * C);
    T_EQ_INT(limits_check(&c, &s, t + 59 * 60000, 1, 1, &v), LIMITS_SPEND_HOUR);
    T_EQ_INT(v.spent_in_window, 5 * C);
    T_EQ_INT(v.retry_after_s, 60);       /* minute t leaves at t + 60 min */
    T_EQ_INT(limits_check(&c, &s, t + 60 * 60000, 1, 1, &v), LIMITS_OK);
}

static void test_untake_leaves_no_trace(void)
{
    limits_conf_t c = { .rpm = 1, .tpm = 10, .max_inflight = 1, .spend_minute = C };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    limits_take(&s, T0, 10, C);
    T_EQ_INT(limits_check(&c, &s, T0 + 5, 1, 1, &v), LIMITS_INFLIGHT);
    limits_untake(&s, T0, T0 + 5, 10, C);
    T_EQ_INT(limits_check(&c, &s, T0 + 5, 10, C, &v), LIMITS_OK);
}

static void test_reset_headers(void)
{
    limits_conf_t c = { .rpm = 3, .tpm = 100 };
    limits_t s;
    limits_init(&s);
    limits_verdict_t v;
    limits_take(&s, T0, 40, 0);
    limits_take(&s, T0 + 1000, 40, 0);
    T_EQ_INT(limits_check(&c, &s, T0 + 2000, 15, 0, &v), LIMITS_OK);
    T_EQ_INT(v.remaining_requests, 0);
    T_EQ_INT(v.remaining_tokens, 5);
    /* room for one more request once T0's second leaves: 57.5 s from now */
    T_EQ_INT(v.reset_requests_ms, 57500);
    /* room for another 15 tokens after this one's: T0's 40 must leave first */
    T_EQ_INT(v.reset_tokens_ms, 57500);
    T_EQ_INT(limits_check(&c, &s, T0 + 2000, 5, 0, &v), LIMITS_OK);
    T_EQ_INT(v.reset_tokens_ms, 0);      /* 80 + 5 + another 5 fit now */
    char b[24];
    T_EQ_STR(limits_reset_fmt(0, b), "0s");
    T_EQ_STR(limits_reset_fmt(1, b), "1s");
    T_EQ_STR(limits_reset_fmt(58500, b), "59s");
    T_EQ_STR(limits_reset_fmt(360000, b), "6m0s");
    T_EQ_STR(limits_reset_fmt(3723000, b), "1h2m3s");
}

int main(void)
{
    T_RUN(test_no_limits_admit_everything);
    T_RUN(test_rpm_exact_and_retry_after);
    T_RUN(test_window_slides_not_clock_minute);
    T_RUN(test_tpm_corrected_at_settle);
    T_RUN(test_inflight);
    T_RUN(test_spend_minute_counts_loaned_and_charged);
    T_RUN(test_spend_hour_by_the_minute);
    T_RUN(test_untake_leaves_no_trace);
    T_RUN(test_reset_headers);
    return t_summary("limits");
}
