/* alerts: budget alerts (issue 13) — detection, the event store and
 * delivery, on a thread of their own ("pm-alerts") so that nothing here
 * ever blocks or delays a request.
 *
 * Detection: the request path's hooks (events.c) only mark work in the
 * inbox (alertq.h). The thread then reads the budget (budget_team_view: a
 * Redis call with the shared store, fine here) and fires
 *   budget_threshold  a team's settled spend in its current period reaches
 *                     threshold x cap (each threshold once per period),
 *   cap_refused       the first 402 of scope team for a team in a period,
 *   account_low       the account's projected available falls below
 *                     account_below (once per crossing; re-armed when a
 *                     sync shows it above again),
 *   runaway           a runaway guard's first refusal of an episode,
 *   topup_detected    a sync's total rose (account.c),
 *   topup_limit       the top-up guard tripped (guard.c),
 *   drift             the last hour's drift passed account.drift_alert
 *                     either way (once per crossing, as account_low).
 * Every team is also checked at start and every 15 s (a crash between a
 * crossing and its detection, the fleet's spend, a store outage).
 *
 * Once: an event's id is derived from what it is about (alertcore_id); with
 * the shared store the id is claimed in Redis first (one instance of a fleet
 * sends it), then recorded in the ledger (INSERT OR IGNORE by id) before the
 * first attempt. Delivery is at least once: POSTed (webhook.h) until the
 * receiver answers 2xx, retried after 1 s, 2 s, 4 s … at most 5 min apart,
 * for 24 h; each attempt's outcome is recorded, so pending events resume
 * after a restart. Each event is a log line. */
#ifndef PINMETER_ALERTS_H
#define PINMETER_ALERTS_H
#include <stdio.h>
#include "app.h"
#include "req.h"

typedef struct alerts alerts_t;    /* opaque */

/* When app's config has "alerts": opens the alert store on the ledger (its
 * recovery and writer must have run), loads the events still pending,
 * starts the thread and sets app->alertq (the hooks' inbox). instance names
 * this instance in events (copied). 0 with *out set (NULL when alerts are
 * off), or -1 with err. */
int alerts_start(app_t *app, const char *instance, alerts_t **out, char *err, size_t errlen);
/* Stops the thread (an attempt in progress is cut and stays pending) and
 * closes the store; the inbox stays, for hooks still running. NULL is fine;
 * a second call does nothing. */
void alerts_stop(alerts_t *a);
/* Frees everything, the inbox too (app->alertq becomes NULL): call once no
 * hook can run. NULL is fine. */
void alerts_free(alerts_t *a);

/* GET /v0/alerts?since=&limit= (admin): the events, newest first, read by a
 * job off the loop. since: RFC 3339 or YYYY-MM-DD (default: all); limit:
 * 1..1000 (default 100); 400 naming the parameter otherwise. */
enum MHD_Result alerts_serve(req_t *r, struct MHD_Connection *c);

/* pinmeter alert test: POSTs one alert_test event to cfg's receiver (no
 * retries), says on out what it answered (on err why not). Returns the exit
 * status: 0 only when the receiver answered 2xx. */
int alerts_cli_test(const config_t *cfg, FILE *out, FILE *err);

#endif
