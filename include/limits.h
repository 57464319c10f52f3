/* limits: the rate limits of one team or one key, pure arithmetic over
 * sliding windows — requests per minute, tokens per minute, requests in
 * flight, and the runaway guard's spend per minute and per hour (what was
 * charged in the window plus what is loaned now). Windows slide by the
 * second (the minute windows) or by the minute (the hour window): the last
 * 60 s, not a clock minute. Reads no clock (callers pass now, unix ms), takes
 * no locks, allocates nothing after limits_init. */
#ifndef PINMETER_LIMITS_H
#define PINMETER_LIMITS_H
#include <stdint.h>
#include "money.h"

/* A subject's limits; 0 = none. */
typedef struct limits_conf {
    int64_t rpm, tpm, max_inflight;
    nanos_t spend_minute, spend_hour;    /* max_spend_per_minute / _per_hour */
} limits_conf_t;

#define LIMITS_BUCKETS 60

/* A sliding window of LIMITS_BUCKETS buckets, each width_s seconds. */
typedef struct limits_win {
    int width_s;
    int64_t head;                        /* index (time / width) of the newest bucket */
    int64_t b[LIMITS_BUCKETS];
    int64_t sum;
} limits_win_t;

/* One subject's state. Plain data: copy it, zero it with limits_init. */
typedef struct limits {
    limits_win_t req, tok, spend_min, spend_hour;
    int64_t inflight;
    nanos_t loaned;                      /* reservations of the requests in flight */
} limits_t;

/* Which limit refused (0 = none). */
typedef enum {
    LIMITS_OK = 0, LIMITS_RPM, LIMITS_TPM, LIMITS_INFLIGHT, LIMITS_SPEND_MINUTE,
    LIMITS_SPEND_HOUR,
} limits_which_t;

/* The answer of limits_check. */
typedef struct limits_verdict {
    limits_which_t which;
    int retry_after_s;                   /* >= 1 when refused: that limit then has room */
    int64_t retry_after_ms;              /* the same, exact (Retry-After-Ms) */
    nanos_t spent_in_window, limit;      /* the spend refusals: the window's sum and limit */
    /* OpenAI's rate-limit headers for this subject (when the limit is set):
     * remaining counts this request as taken; reset in milliseconds until
     * the window has room for one more (requests) / for the tokens taken */
    int64_t limit_requests, remaining_requests, reset_requests_ms;
    int64_t limit_tokens, remaining_tokens, reset_tokens_ms;
} limits_verdict_t;

void limits_init(limits_t *s);

/* Whether a request of tokens (prompt estimate + completion reserved) and
 * reservation reserve fits every limit of c at now. Fills *out (also the
 * header figures when it fits). Changes nothing but moving the windows on. */
limits_which_t limits_check(const limits_conf_t *c, limits_t *s, int64_t now_ms,
                            int64_t tokens, nanos_t reserve, limits_verdict_t *out);
/* Takes an admitted request: one request and tokens in the windows, one in
 * flight, reserve loaned. */
void limits_take(limits_t *s, int64_t now_ms, int64_t tokens, nanos_t reserve);
/* Ends it: the tokens of its admission (admitted_ms) corrected to actual
 * while that second is still in the window, one fewer in flight, its
 * reservation no longer loaned, charge counted in the spend windows at now. */
void limits_settle(limits_t *s, int64_t admitted_ms, int64_t now_ms, int64_t tokens_taken,
                   int64_t tokens_actual, nanos_t reserve, nanos_t charge);

/* Undoes limits_take for a request that was not admitted after all (the
 * ledger refused its begin): as if it had never been taken. */
void limits_untake(limits_t *s, int64_t taken_ms, int64_t now_ms, int64_t tokens,
                   nanos_t reserve);

/* The header figures of the tighter of two subjects' verdicts (key and
 * team): for requests and for tokens apart, the one with fewer remaining;
 * the rest of a. */
limits_verdict_t limits_tighter(const limits_verdict_t *a, const limits_verdict_t *b);

/* OpenAI's duration form of ms, rounded up to the second: "1s", "59s",
 * "6m0s", "1h2m3s". Writes at most 24 bytes into out; returns out. */
char *limits_reset_fmt(int64_t ms, char *out);

#endif
