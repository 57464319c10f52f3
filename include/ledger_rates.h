/* ledger_rates: the `rate_changes` table of the ledger (part of the ledger
 * module; the table is created by ledger_migrate.c). One row per model
 * whose prices the serving process changed, with the old and the new
 * prices, so that a charge can be traced to the price table of its time
 * (each request's row carries its own prices too).
 *
 * Changes are rare (a price update at Pinata, a reload): each call writes
 * its rows in one transaction on a connection of its own, opened for the
 * call, which SQLite serialises with the request writer's group commits
 * (waiting up to 5 s for the lock). Any thread. */
#ifndef PINMETER_LEDGER_RATES_H
#define PINMETER_LEDGER_RATES_H
#include <stddef.h>
#include <stdint.h>
#include "ledger.h"

/* One model's change; prices in nano-credits per 1M tokens. A model added
 * has no old prices, one removed no new ones (NULL in the table). */
typedef struct ledger_rate_change {
    const char *model;
    int has_old, has_new;
    nanos_t old_input, old_output, old_cache_read;
    nanos_t new_input, new_output, new_cache_read;
} ledger_rate_change_t;

/* Records n changes made at at_ms by source ("sync": the background sync
 * from Pinata; "reload": SIGHUP) in one transaction. 0, or -1 with the
 * reason in err (nothing recorded). */
int ledger_rate_changes_add(ledger_t *l, int64_t at_ms, const char *source,
                            const ledger_rate_change_t *v, size_t n, char *err, size_t errlen);

#endif
