/* balance: GET /v0/credits/balance. A team key sees its team's current
 * period (fleet-wide with the Redis store); the admin token sees the Pinata
 * account as pinmeter projects it. (In passthrough mode Pinata answers the
 * caller's own key: passthru.h.) */
#ifndef PINMETER_BALANCE_H
#define PINMETER_BALANCE_H
#include "req.h"

/* The route's handler (req_serve_fn). */
enum MHD_Result balance_serve(req_t *r, struct MHD_Connection *c);

#endif
