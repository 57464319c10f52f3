/* limits: sliding windows with exact counts and Retry-After figures. */
#include "t.h"
#include "ratelim.h"

#define T0 1000000500LL                  /* unix ms, half a second into a second */
#define C 1000000000LL                   /* one credit */

static void test_no_limits_admit_everything(void)
{
    ratelim_conf_t c = {0};
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    for (int i = 0; i < 1000; i++) {
        T_EQ_INT(ratelim_check(&c, &s, T0, 1000000, 100 * C, &v), RATELIM_OK);
        ratelim_take(&s, T0, 1000000, 100 * C);
    }
    T_EQ_INT(v.limit_requests, 0);
}

static void test_rpm_exact_and_retry_after(void)
{
    ratelim_conf_t c = { .rpm = 30 };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    for (int i = 0; i < 30; i++) {
        T_EQ_INT(ratelim_check(&c, &s, T0 + i * 100, 10, 0, &v), RATELIM_OK);
        T_EQ_INT(v.remaining_requests, 29 - i);
        ratelim_take(&s, T0 + i * 100, 10, 0);
    }
    /* 30 taken between T0 and T0 + 2.9 s (seconds 1000000..1000002) */
    int64_t now = T0 + 10000;
    T_EQ_INT(ratelim_check(&c, &s, now, 10, 0, &v), RATELIM_RPM);
    /* second 1000000 leaves the window when second 1000060 begins: 49.5 s */
    T_EQ_INT(v.retry_after_s, 50);
    T_EQ_INT(v.remaining_requests, 0);
    T_EQ_INT(ratelim_check(&c, &s, now + 49000, 10, 0, &v), RATELIM_RPM);
    T_EQ_INT(ratelim_check(&c, &s, now + 50000, 10, 0, &v), RATELIM_OK);
}

static void test_window_slides_not_clock_minute(void)
{
    ratelim_conf_t c = { .rpm = 2 };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    int64_t t = 1000059000LL;            /* one second before a clock minute */
    ratelim_take(&s, t, 1, 0);
    ratelim_take(&s, t, 1, 0);
    /* a new clock minute starts 1 s later: still refused for 59 s more */
    T_EQ_INT(ratelim_check(&c, &s, t + 1500, 1, 0, &v), RATELIM_RPM);
    T_EQ_INT(ratelim_check(&c, &s, t + 59500, 1, 0, &v), RATELIM_RPM);
    T_EQ_INT(ratelim_check(&c, &s, t + 60000, 1, 0, &v), RATELIM_OK);
}

static void test_tpm_corrected_at_settle(void)
{
    ratelim_conf_t c = { .tpm = 1000 };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    T_EQ_INT(ratelim_check(&c, &s, T0, 600, 0, &v), RATELIM_OK);
    T_EQ_INT(v.remaining_tokens, 400);
    ratelim_take(&s, T0, 600, 0);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 1000, 500, 0, &v), RATELIM_TPM);
    T_EQ_INT(v.retry_after_s, 59);       /* T0's second leaves 58.5 s after now */
    ratelim_settle(&s, T0, T0 + 2000, 600, 300, 0, 0);   /* it used 300 */
    T_EQ_INT(ratelim_check(&c, &s, T0 + 2000, 500, 0, &v), RATELIM_OK);
    T_EQ_INT(v.remaining_tokens, 200);
    /* a request larger than the whole limit never fits */
    T_EQ_INT(ratelim_check(&c, &s, T0 + 2000, 1001, 0, &v), RATELIM_TPM);
}

static void test_inflight(void)
{
    ratelim_conf_t c = { .max_inflight = 2 };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    ratelim_take(&s, T0, 1, 0);
    ratelim_take(&s, T0, 1, 0);
    T_EQ_INT(ratelim_check(&c, &s, T0, 1, 0, &v), RATELIM_INFLIGHT);
    T_EQ_INT(v.retry_after_s, 1);
    ratelim_settle(&s, T0, T0 + 10, 1, 1, 0, 0);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 10, 1, 0, &v), RATELIM_OK);
}

static void test_spend_minute_counts_loaned_and_charged(void)
{
    ratelim_conf_t c = { .spend_minute = C };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    ratelim_take(&s, T0, 1, 6 * C / 10);                   /* 0.6 loaned */
    T_EQ_INT(ratelim_check(&c, &s, T0, 1, 5 * C / 10, &v), RATELIM_SPEND_MINUTE);
    T_EQ_INT(v.spent_in_window, 6 * C / 10);
    T_EQ_INT(v.limit, C);
    ratelim_settle(&s, T0, T0 + 1000, 1, 1, 6 * C / 10, 3 * C / 10);   /* charged 0.3 */
    T_EQ_INT(ratelim_check(&c, &s, T0 + 1000, 1, 5 * C / 10, &v), RATELIM_OK);
    ratelim_take(&s, T0 + 1000, 1, 5 * C / 10);
    ratelim_settle(&s, T0 + 1000, T0 + 5000, 1, 1, 5 * C / 10, 5 * C / 10);  /* charged 0.5 */
    T_EQ_INT(ratelim_check(&c, &s, T0 + 5000, 1, 3 * C / 10, &v), RATELIM_SPEND_MINUTE);
    T_EQ_INT(v.spent_in_window, 8 * C / 10);
    /* the 0.3 charged in second T0+1 s leaves when second T0+61 s begins */
    T_EQ_INT(v.retry_after_s, 56);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 5000 + 55000, 1, 3 * C / 10, &v), RATELIM_SPEND_MINUTE);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 5000 + 56000, 1, 3 * C / 10, &v), RATELIM_OK);
}

static void test_spend_hour_by_the_minute(void)
{
    ratelim_conf_t c = { .spend_hour = 5 * C };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    int64_t t = 1000000000000LL - 1000000000000LL % 60000;   /* on a minute */
    ratelim_take(&s, t, 1, 3 * C);
    ratelim_settle(&s, t, t + 1000, 1, 1, 3 * C, 3 * C);
    ratelim_take(&s, t + 30 * 60000, 1, 2 * C);
    ratelim_settle(&s, t + 30 * 60000, t + 30 * 60000 + 1000, 1, 1, 2 * C, 2 * C);
    T_EQ_INT(ratelim_check(&c, &s, t + 59 * 60000, 1, 1, &v), RATELIM_SPEND_HOUR);
    T_EQ_INT(v.spent_in_window, 5 * C);
    T_EQ_INT(v.retry_after_s, 60);       /* minute t leaves at t + 60 min */
    T_EQ_INT(ratelim_check(&c, &s, t + 60 * 60000, 1, 1, &v), RATELIM_OK);
}

static void test_untake_leaves_no_trace(void)
{
    ratelim_conf_t c = { .rpm = 1, .tpm = 10, .max_inflight = 1, .spend_minute = C };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    ratelim_take(&s, T0, 10, C);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 5, 1, 1, &v), RATELIM_INFLIGHT);
    ratelim_untake(&s, T0, T0 + 5, 10, C);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 5, 10, C, &v), RATELIM_OK);
}

static void test_reset_headers(void)
{
    ratelim_conf_t c = { .rpm = 3, .tpm = 100 };
    ratelim_t s;
    ratelim_init(&s);
    ratelim_verdict_t v;
    ratelim_take(&s, T0, 40, 0);
    ratelim_take(&s, T0 + 1000, 40, 0);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 2000, 15, 0, &v), RATELIM_OK);
    T_EQ_INT(v.remaining_requests, 0);
    T_EQ_INT(v.remaining_tokens, 5);
    /* room for one more request once T0's second leaves: 57.5 s from now */
    T_EQ_INT(v.reset_requests_ms, 57500);
    /* room for another 15 tokens after this one's: T0's 40 must leave first */
    T_EQ_INT(v.reset_tokens_ms, 57500);
    T_EQ_INT(ratelim_check(&c, &s, T0 + 2000, 5, 0, &v), RATELIM_OK);
    T_EQ_INT(v.reset_tokens_ms, 0);      /* 80 + 5 + another 5 fit now */
    char b[24];
    T_EQ_STR(ratelim_reset_fmt(0, b), "0s");
    T_EQ_STR(ratelim_reset_fmt(1, b), "1s");
    T_EQ_STR(ratelim_reset_fmt(58500, b), "59s");
    T_EQ_STR(ratelim_reset_fmt(360000, b), "6m0s");
    T_EQ_STR(ratelim_reset_fmt(3723000, b), "1h2m3s");
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
