/* report_int: what report.c shares with report_html.c — the merged rows of
 * one grouping and how to read them. Private to the report module. */
#ifndef PINMETER_REPORT_INT_H
#define PINMETER_REPORT_INT_H
#include "report.h"
#include "ledger.h"
#include "money.h"
#include <stdint.h>
#include <stdio.h>

#define REPORT_NF 5           /* group fields */

typedef struct report_row {
    char *f[REPORT_NF];       /* team, key, model, day, hour (NULL if not grouped) */
    int64_t requests, prompt, completion, cached;
    nanos_t credits;
    nanos_t price[3];         /* LEDGER_BY_PRICE: input, output, cache_read per 1M
                               * tokens; -1 = not recorded; else 0 */
} report_row_t;

typedef struct report_rows {
    report_row_t *v;
    size_t n, cap;
    size_t max;               /* 0 = no limit */
    int failed;               /* out of memory, or over max (too_many) */
    int too_many;
} report_rows_t;

/* The group fields' names, in f[]'s order, and their LEDGER_BY_* flags
 * (a copy in each file: report_html.c calls nothing of report.c's). */
static const char *const report_fields[REPORT_NF] = {"team", "key", "model", "day", "hour"};
static const int report_flags[REPORT_NF] = {LEDGER_BY_TEAM, LEDGER_BY_KEY, LEDGER_BY_MODEL,
                                                  LEDGER_BY_DAY, LEDGER_BY_HOUR};

/* A grouping's price columns (with LEDGER_BY_PRICE, which a grouping by
 * model implies: a model gets one row per price set it was charged at). */
static const char *const report_price_fields[3] = {"price_input", "price_output",
                                                   "price_cache_read"};

/* Reads o's ledgers (or o->open) grouped by `by` (not o->by), merged and
 * sorted, into *rs. 0, or REPORT_ERROR / REPORT_TOO_MANY with err. */
int report_collect(const report_opts_t *o, int by, report_rows_t *rs, char *err, size_t errlen);
void report_rows_free(report_rows_t *rs);
/* The sum of every row. */
report_row_t report_total(const report_rows_t *rs);

/* The HTML report (report_html.c): the table of rows (grouped by o->by)
 * with its total, a chart of spend by day and model (by_day_model), the top
 * teams (by_team); one self-contained file, no script, nothing loaded. */
void report_html_write(FILE *out, const report_opts_t *o, const report_rows_t *rows,
                       const report_row_t *total, const report_rows_t *by_day_model,
                       const report_rows_t *by_team, int64_t now_ms);

#endif
