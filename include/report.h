/* report: spend reports from one or more ledgers, merged, as a table, CSV
 * or JSON. Credits are printed exact to the nano-credit (9 decimals).
 * `pinmeter report` and GET /v0/usage both write through report_write, so
 * the two give the same rows, columns and figures by construction. */
#ifndef PINMETER_REPORT_H
#define PINMETER_REPORT_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct ledger;

typedef enum { REPORT_TABLE = 0, REPORT_CSV, REPORT_JSON, REPORT_HTML } report_format_t;

typedef struct report_opts {
    const char **ledgers;     /* paths, borrowed; opened read-only */
    size_t n_ledgers;
    int64_t since_ms, until_ms;   /* [since, until) */
    int by;                   /* LEDGER_BY_* flags */
    report_format_t format;
    const char *team, *key, *model;   /* only these (NULL = all); borrowed */
    struct ledger *open;      /* instead of ledgers: one already open (the server's), borrowed */
    const char *since_label, *until_label;  /* JSON: echoed as "since"/"until" when set */
    size_t max_groups;        /* 0 = no limit; past it report_write fails with REPORT_TOO_MANY */
} report_opts_t;

enum { REPORT_ERROR = -1, REPORT_TOO_MANY = -2 };

/* Parses "team,key,model,day,hour" into LEDGER_BY_* flags; -1 on an unknown name. */
int report_parse_by(const char *s);
/* Parses YYYY-MM-DD into unix ms at 00:00 UTC; -1 if malformed. */
int report_parse_day(const char *s, int64_t *ms);

/* Writes the report to out. 0, or REPORT_ERROR with the reason in err, or
 * REPORT_TOO_MANY; nothing is written on failure. */
int report_write(const report_opts_t *o, FILE *out, char *err, size_t errlen);

#endif
