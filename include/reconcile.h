/* reconcile: Pinata's spend against pinmeter's charges, interval by
 * interval. Each interval runs from one recorded account sync to the next
 * (account_syncs): Pinata's spend is the fall in its total plus the credits
 * a top-up detected at the interval's end added; pinmeter's charges are the
 * ledger's requests settled in the interval (ended_ms in (from, to]); the
 * drift is Pinata's minus pinmeter's — usage that did not pass through this
 * pinmeter, or a price table out of date (README, "Reconciliation").
 * `pinmeter reconcile` and GET /v0/account/reconcile both write through
 * reconcile_write (the endpoint is reconcile_api.h), so they give the same
 * figures. Credits are exact
 * 9-decimal numbers. */
#ifndef PINMETER_RECONCILE_H
#define PINMETER_RECONCILE_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct ledger;

typedef enum { RECONCILE_TABLE = 0, RECONCILE_CSV, RECONCILE_JSON } reconcile_format_t;

typedef struct reconcile_opts {
    struct ledger *ledger;            /* borrowed: a server's, or one opened read-only */
    int64_t since_ms, until_ms;       /* intervals ending in [since, until) */
    int has_since, has_until;         /* given (else the JSON's since/until are null) */
    int64_t lookback_ms;              /* the longest a request may run (its upstream timeout) */
    reconcile_format_t format;
    size_t max_lines;                 /* 0 = no limit; past it RECONCILE_TOO_MANY */
} reconcile_opts_t;

enum { RECONCILE_ERROR = -1, RECONCILE_TOO_MANY = -2 };

/* The longest a request may run under a config's upstream timeout (s),
 * with a margin: how far before an interval reconciliation looks for the
 * requests settled in it. */
int64_t reconcile_lookback_ms(int timeout_s);

/* Writes the reconciliation to out. 0, or RECONCILE_ERROR with the reason
 * in err, or RECONCILE_TOO_MANY; nothing is written on failure. */
int reconcile_write(const reconcile_opts_t *o, FILE *out, char *err, size_t errlen);

#endif
