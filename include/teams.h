/* teams: GET /v0/teams — each team's current period as the budget book
 * sees it (cap, spent, loaned, available, requests in flight), its model
 * allow-list and key ids, and the account projection: what the dashboard
 * draws. The admin token sees every team and the account; a team key its
 * own team only (and "account": null). Credits have 9 decimals, times are
 * RFC 3339 UTC; no key hash ever appears. Answered by a job, off the loop. */
#ifndef PINMETER_TEAMS_H
#define PINMETER_TEAMS_H
#include "req.h"

/* The route's handler (req_serve_fn). */
enum MHD_Result teams_serve(req_t *r, struct MHD_Connection *c);

#endif
