/* scrape: GET /metrics — the Prometheus scrape. The handler holds the
 * request and hands it to a job (jobs.h), which reads the gauges without
 * any I/O (the budget's figures as they stand, the account's last sync, the
 * ledger's backlog and write errors, the budget store's state), formats them
 * with the registry (metrics.h) and answers. Nothing here reads SQLite or
 * calls Redis; the request path is locked only for a copy of counters. */
#ifndef PINMETER_SCRAPE_H
#define PINMETER_SCRAPE_H
#include "req.h"

/* The route handler (who may call it is the route table's business). */
enum MHD_Result scrape_serve(req_t *r, struct MHD_Connection *c);

/* The exposition for the app as it stands (the job's work, any thread but
 * the loop's): malloc'd text, length in *len, or NULL on OOM. */
char *scrape_text(app_t *app, const snap_t *sn, size_t *len);

#endif
