/* usage_api: GET /v0/usage — what was spent, grouped (by team, key, model,
 * day, hour) and filtered, over a range of time (the current UTC month by
 * default), as `pinmeter report --format json` or `--format csv` would print
 * it for the same range, grouping and filters, plus the range echoed in the
 * JSON. The query runs in a job over the ledger's read connection. Not to
 * be confused with usage.c (the usage figures of an upstream reply). */
#ifndef PINMETER_USAGE_API_H
#define PINMETER_USAGE_API_H
#include "req.h"

/* Groups kept in one answer; past it the answer is 400 (narrow the query). */
#define USAGE_API_MAX_GROUPS 100000

/* The route's handler (req_serve_fn). */
enum MHD_Result usage_api_serve(req_t *r, struct MHD_Connection *c);

#endif
