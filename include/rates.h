/* rates: the per-model price table, in the exact format of Pinata's
 * GET /v0/llm/models, and the cost arithmetic. Pure: parses bytes it is given,
 * does no I/O. Prices are kept as nano-credits per 1M tokens, integers. */
#ifndef PINMETER_RATES_H
#define PINMETER_RATES_H
#include <stdint.h>
#include <stddef.h>
#include "money.h"

/* One model's prices in nano-credits per 1,000,000 tokens. */
typedef struct rate {
    int64_t input;
    int64_t output;
    int64_t cache_read;
} rate_t;

/* Token counts reported by the upstream for one request. */
typedef struct usage {
    int64_t prompt;       /* includes cached */
    int64_t completion;
    int64_t cached;       /* prompt_tokens_details.cached_tokens */
} usage_t;

typedef struct rates rates_t;  /* opaque */

/* Highest accepted price, USD per 1M tokens; anything above is a typo. */
#define RATES_MAX_USD 1e6

/* Converts USD-per-1M prices to a rate at credits_per_usd, each price as
 * llround(usd * credits_per_usd * 1e9). Returns 0, or -1 (and leaves *out
 * unchanged) for a negative/NaN/absurd (> RATES_MAX_USD) price, a
 * credits_per_usd that is not a finite number > 0, or a converted rate above
 * 1e18 nanos (1e9 credits) per 1M tokens. */
int rate_from_usd(double in_usd, double out_usd, double cache_usd,
                  double credits_per_usd, rate_t *out);

/* Parses a JSON array [{"model_id", "input_usd_per_1m_tokens",
 * "output_usd_per_1m_tokens", "cache_read_usd_per_1m_tokens"}]. Missing
 * cache_read price = the input price. On error returns NULL and writes why
 * (naming the entry index and key) into err. Caller frees with rates_free. */
rates_t *rates_parse(const char *json, size_t len, double credits_per_usd,
                     char *err, size_t errlen);
void rates_free(rates_t *r);
size_t rates_count(const rates_t *r);

/* The i-th model of the table in model id order (i < rates_count): 0 and
 * its id (borrowed until rates_free) and prices, or -1 past the end. */
int rates_at(const rates_t *r, size_t i, const char **id, rate_t *out);

/* Looks up an exact model id. Returns 0 and fills *out, or -1 if not priced. */
int rates_lookup(const rates_t *r, const char *model, rate_t *out);

/* Exact cost of usage at rate: (prompt-cached)*input + cached*cache_read +
 * completion*output, divided by 1e6 once at the end and rounded up to the
 * next nano (never undercounts). cached is clamped to [0, prompt]. Counts must
 * be non-negative and <= 1e9: callers pass validated counts (usage_parse
 * does). The sum is taken in 128 bits, so no int64 input can overflow it; a
 * result above INT64_MAX saturates there. A negative prompt or completion
 * count, a negative price or a NULL argument is a caller bug and returns -1,
 * never a (smaller) cost; nothing is silently treated as 0. */
nanos_t cost_of(const rate_t *rate, const usage_t *u);

/* Reservation held at admission: est_prompt*input + max_out*output, rounded
 * up, computed like cost_of (128-bit sum, saturating at INT64_MAX, so a huge
 * client max_tokens gives a huge reservation, not an overflow). Returns -1
 * for a negative count or price or a NULL rate. */
nanos_t cost_reservation(const rate_t *rate, int64_t est_prompt, int64_t max_out);
/* The most completion tokens per choice (n choices) whose reservation with
 * est_prompt fits available: the largest c with cost_reservation(rate,
 * est_prompt, c * n) <= available; INT64_MAX when output is free; -1 when
 * not even the prompt fits (or for bad arguments). */
int64_t cost_max_completion(const rate_t *rate, int64_t est_prompt, int64_t n, nanos_t available);

#endif
