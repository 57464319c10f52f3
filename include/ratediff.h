/* ratediff: Pinata's live price list checked as a whole, and what changes
 * between two rate tables — the pure half of `pinmeter rates sync` and of
 * the background sync in serve (ratesync.h does the fetching and writing).
 * No I/O, no clock: bytes and tables in, a table, a list and text out. */
#ifndef PINMETER_RATEDIFF_H
#define PINMETER_RATEDIFF_H
#include <stddef.h>
#include "rates.h"

/* Parses the body of GET /v0/llm/models as a rate table at credits_per_usd,
 * stricter than a rates file: at least one model; every entry an object
 * with a non-empty string model_id and all three of
 * input_usd_per_1m_tokens, output_usd_per_1m_tokens and
 * cache_read_usd_per_1m_tokens, each a finite number >= 0; model ids unique.
 * Then what rates_parse checks (prices at most RATES_MAX_USD, representable
 * at credits_per_usd). NULL with "[INDEX].FIELD: why" (or the JSON error's
 * place) in err; free the table with rates_free. */
rates_t *ratediff_parse(const char *json, size_t len, double credits_per_usd,
                        char *err, size_t errlen);

typedef enum { RATEDIFF_ADDED = 0, RATEDIFF_REMOVED, RATEDIFF_CHANGED } ratediff_kind_t;

/* One model whose prices differ: added (only new is set), removed (only
 * old), or changed (both; at least one of the three prices differs). */
typedef struct ratediff_item {
    char *model;                   /* owned by the diff */
    ratediff_kind_t kind;
    rate_t old, new_;
} ratediff_item_t;

typedef struct ratediff {
    ratediff_item_t *v;            /* in model id order */
    size_t n;
    size_t added, removed, changed;
} ratediff_t;

/* The models whose prices differ between old and new (either may be NULL:
 * an empty table). Fills *d (free with ratediff_free). 0, or -1 out of
 * memory (*d then empty). */
int ratediff_compute(const rates_t *old, const rates_t *new_, ratediff_t *d);
void ratediff_free(ratediff_t *d);

/* One item as a line of text (no newline), prices in credits per 1M
 * tokens with 9 decimals as input / output / cache_read, the model padded
 * to width characters (0: not padded):
 *   "added    MODEL  3.000000000 / 15.000000000 / 0.300000000"
 *   "removed  MODEL  3.000000000 / 15.000000000 / 0.300000000"
 *   "changed  MODEL  3.000000000 / 15.000000000 / 0.300000000 -> 3.500000000 / ..."
 * Returns buf (cut at buflen). */
char *ratediff_line(const ratediff_item_t *it, int width, char *buf, size_t buflen);

/* "1 added, 2 removed, 0 changed" into buf; returns buf. */
char *ratediff_summary(const ratediff_t *d, char *buf, size_t buflen);

#endif
