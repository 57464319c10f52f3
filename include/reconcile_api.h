/* reconcile_api: GET /v0/account/reconcile?since=&until= (admin) — the JSON
 * that `pinmeter reconcile --format json` prints for the same range
 * (reconcile.h), written by a job over the ledger's read connection. since
 * and until take the usage endpoints' forms and 400s (usage_params.h); an
 * open end is open (all time by default); more than 100,000 intervals is
 * 400 (narrow the range). */
#ifndef PINMETER_RECONCILE_API_H
#define PINMETER_RECONCILE_API_H
#include "req.h"

/* The route's handler (req_serve_fn). */
enum MHD_Result reconcile_api_serve(req_t *r, struct MHD_Connection *c);

#endif
