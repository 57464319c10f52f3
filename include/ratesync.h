/* ratesync: Pinata's live prices into pinmeter's rate table. Pinata's
 * models page says to read GET /v0/llm/models (public, no key) because
 * prices change; this module reads it, checks the whole list (ratediff.h),
 * and when the prices differ writes rates_file atomically (the previous
 * file kept as <rates_file>.prev). `pinmeter rates sync` does it once; in
 * serve, with rates_sync_s, a thread of its own does it every rates_sync_s
 * seconds and swaps the new table in for requests admitted from then on. */
#ifndef PINMETER_RATESYNC_H
#define PINMETER_RATESYNC_H
#include <stdio.h>
#include "app.h"
#include "config.h"

/* `pinmeter rates sync`: reads from (NULL: {upstream.base_url}/v0/llm/models
 * of cfg), checks the list, prints the diff against cfg->rates_file to out
 * and, unless dry_run, writes the file when the prices differ. Errors go to
 * errout. The exit code: 0 when the file is current (changed or not; with
 * dry_run, when the diff was printed), 1 on any error, the file untouched
 * and no temporary file left. */
int ratesync_cli(const config_t *cfg, const char *from, int dry_run, FILE *out, FILE *errout);

typedef struct ratesync ratesync_t;

/* serve: when the config has rates_sync_s > 0, starts the refresh thread
 * ("pm-rates"): a first round at once, then one every rates_sync_s (read
 * from the current snapshot each time: a reload may change it, or set 0 to
 * pause it). A round that finds new prices, under app->snap_mu, writes
 * rates_file and swaps in a snapshot with the new table, then logs the diff
 * and records it in the ledger's rate_changes; a failed round keeps the
 * current table and is logged once per outage. NULL when off (or the
 * thread could not start, logged). Needs the ledger writer running. */
ratesync_t *ratesync_start(app_t *app);
/* Stops the thread (an HTTP read in progress is cut short) and frees; NULL
 * is a no-op. */
void ratesync_stop(ratesync_t *s);

/* A swapped-in snapshot changed the rate table from old to new_ (SIGHUP's
 * reload): logs the diff and records it in rate_changes with source (e.g.
 * "reload"). Nothing when the prices are the same. Any thread; does SQLite
 * I/O, so never on the event loop. */
void ratesync_note(app_t *app, const rates_t *old, const rates_t *new_, const char *source);

#endif
