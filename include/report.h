/* report: spend reports from one or more ledgers, merged, as a table, CSV
 * or JSON. Credits are printed exact to the nano-credit (9 decimals). */
#ifndef PINMETER_REPORT_H
#define PINMETER_REPORT_H
#include <stdint.h>
#include <stdio.h>

typedef enum { REPORT_TABLE = 0, REPORT_CSV, REPORT_JSON } report_format_t;

typedef struct report_opts {
    const char **ledgers;     /* paths, borrowed */
    size_t n_ledgers;
    int64_t since_ms, until_ms;   /* [since, until) */
    int by;                   /* LEDGER_BY_* flags */
    report_format_t format;
} report_opts_t;

/* Parses "team,key,model,day" into LEDGER_BY_* flags; -1 on an unknown name. */
int report_parse_by(const char *s);
/* Parses YYYY-MM-DD into unix ms at 00:00 UTC; -1 if malformed. */
int report_parse_day(const char *s, int64_t *ms);

/* Writes the report to out. 0, or -1 with the reason in err. */
int report_write(const report_opts_t *o, FILE *out, char *err, size_t errlen);

#endif
