/* ratelim: the rate limits of one team or one key, pure arithmetic over
 * sliding windows — requests per minute, tokens per minute, requests in
 * flight, and the runaway guard's spend per minute and per hour (what was
 * charged in the window plus what is loaned now). Windows slide by the
 * second (the minute windows) or by the minute (the hour window): the last
 * 60 s, not a clock minute. Reads no clock (callers pass now, unix ms), takes
 * no locks, allocates nothing after ratelim_init. */
#ifndef PINMETER_RATELIM_H
#define PINMETER_RATELIM_H
#include <stdint.h>
#include "money.h"

/* A subject's limits; 0 = none. */
typedef struct ratelim_conf {
    int64_t rpm, tpm, max_inflight;
    nanos_t spend_minute, spend_hour;    /* max_spend_per_minute / _per_hour */
} ratelim_conf_t;

#define RATELIM_BUCKETS 60

/* A sliding window of RATELIM_BUCKETS buckets, each width_s seconds. */
typedef struct ratelim_win {
    int width_s;
    int64_t head;                        /* index (time / width) of the newest bucket */
    int64_t b[RATELIM_BUCKETS];
    int64_t sum;
} ratelim_win_t;

/* One subject's state. Plain data: copy it, zero it with ratelim_init. */
typedef struct limits {
    ratelim_win_t req, tok, spend_min, spend_hour;
    int64_t inflight;
    nanos_t loaned;                      /* reservations of the requests in flight */
} ratelim_t;

/* Which limit refused (0 = none). */
typedef enum {
    RATELIM_OK = 0, RATELIM_RPM, RATELIM_TPM, RATELIM_INFLIGHT, RATELIM_SPEND_MINUTE,
    RATELIM_SPEND_HOUR,
} ratelim_which_t;

/* The answer of ratelim_check. */
typedef struct ratelim_verdict {
    ratelim_which_t which;
    int retry_after_s;                   /* >= 1 when refused: that limit then has room */
    int64_t retry_after_ms;              /* the same, exact (Retry-After-Ms) */
    nanos_t spent_in_window, limit;      /* the spend refusals: the window's sum and limit */
    /* OpenAI's rate-limit headers for this subject (when the limit is set):
     * remaining counts this request as taken; reset in milliseconds until
     * the window has room for one more (requests) / for the tokens taken */
    int64_t limit_requests, remaining_requests, reset_requests_ms;
    int64_t limit_tokens, remaining_tokens, reset_tokens_ms;
} ratelim_verdict_t;

void ratelim_init(ratelim_t *s);

/* Whether a request of tokens (prompt estimate + completion reserved) and
 * reservation reserve fits every limit of c at now. Fills *out (also the
 * header figures when it fits). Changes nothing but moving the windows on. */
ratelim_which_t ratelim_check(const ratelim_conf_t *c, ratelim_t *s, int64_t now_ms,
                            int64_t tokens, nanos_t reserve, ratelim_verdict_t *out);
/* Takes an admitted request: one request and tokens in the windows, one in
 * flight, reserve loaned. */
void ratelim_take(ratelim_t *s, int64_t now_ms, int64_t tokens, nanos_t reserve);
/* Ends it: the tokens of its admission (admitted_ms) corrected to actual
 * while that second is still in the window, one fewer in flight, its
 * reservation no longer loaned, charge counted in the spend windows at now. */
void ratelim_settle(ratelim_t *s, int64_t admitted_ms, int64_t now_ms, int64_t tokens_taken,
                   int64_t tokens_actual, nanos_t reserve, nanos_t charge);

/* Undoes ratelim_take for a request that was not admitted after all (the
 * ledger refused its begin): as if it had never been taken. */
void ratelim_untake(ratelim_t *s, int64_t taken_ms, int64_t now_ms, int64_t tokens,
                   nanos_t reserve);

/* The header figures of the tighter of two subjects' verdicts (key and
 * team): for requests and for tokens apart, the one with fewer remaining;
 * the rest of a. */
ratelim_verdict_t ratelim_tighter(const ratelim_verdict_t *a, const ratelim_verdict_t *b);

/* OpenAI's duration form of ms, rounded up to the second: "1s", "59s",
 * "6m0s", "1h2m3s". Writes at most 24 bytes into out; returns out. */
char *ratelim_reset_fmt(int64_t ms, char *out);

#endif
