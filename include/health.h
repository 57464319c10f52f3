/* health: GET /healthz — {"status", "ledger_backlog", "budget_store"}, 503
 * when this instance cannot serve (the ledger cannot be written, or the
 * Redis store is down under on_store_down "closed"). */
#ifndef PINMETER_HEALTH_H
#define PINMETER_HEALTH_H
#include "req.h"

/* The route's handler (req_serve_fn). */
enum MHD_Result health_serve(req_t *r, struct MHD_Connection *c);

#endif
