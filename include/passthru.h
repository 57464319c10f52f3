/* passthru: requests forwarded to Pinata as they are, unmetered — GET
 * /v0/llm/models (Pinata's public price list), and in passthrough mode GET
 * /v0/credits/balance with the caller's own credentials. */
#ifndef PINMETER_PASSTHRU_H
#define PINMETER_PASSTHRU_H
#include "req.h"

/* GET /v0/llm/models, and passthrough's GET /v0/credits/balance
 * (req_serve_fn). */
enum MHD_Result passthru_models(req_t *r, struct MHD_Connection *c);
enum MHD_Result passthru_balance(req_t *r, struct MHD_Connection *c);

#endif
