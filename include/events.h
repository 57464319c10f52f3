/* events: what happens to metered requests (and to the account), told to
 * the rooms that watch the money flow — metrics and alerts. The request path
 * calls these at fixed points; each watcher does its own (short,
 * non-blocking) bookkeeping. Any thread may call them: the loop's, the
 * Redis reserver's (a refusal from the shared store), account sync's. */
#ifndef PINMETER_EVENTS_H
#define PINMETER_EVENTS_H
#include "req.h"
#include "verdict.h"

/* Refusal reasons (pinmeter_rejections_total's "reason" label). */
#define EVENTS_TEAM_CAP "team_cap"
#define EVENTS_ACCOUNT "account"
#define EVENTS_UNAUTHORIZED "unauthorized"
#define EVENTS_MODEL_NOT_ALLOWED "model_not_allowed"
#define EVENTS_MODEL_NOT_PRICED "model_not_priced"
#define EVENTS_INVALID_REQUEST "invalid_request"
#define EVENTS_BODY_TOO_LARGE "body_too_large"
#define EVENTS_LEDGER_UNAVAILABLE "ledger_unavailable"
#define EVENTS_STORE_UNAVAILABLE "budget_store_unavailable"
#define EVENTS_TOO_MANY_CONNECTIONS "too_many_connections"
#define EVENTS_KEY_CAP "key_cap"
#define EVENTS_RPM "rpm"
#define EVENTS_TPM "tpm"
#define EVENTS_INFLIGHT "inflight"
#define EVENTS_SPEND_RATE "spend_rate"
#define EVENTS_TOPUP_LIMIT "topup_limit"

/* A metered request refused before anything went upstream (r is NULL when
 * no request was created: too_many_connections). why is the 402's refusal
 * when reason is team_cap or account, else NULL. */
void events_refused(app_t *app, const req_t *r, const char *reason, const book_refusal_t *why);
/* Refused with 429 by a rate limit or the runaway guard (why->rate says
 * which, why->rate_scope whose). */
void events_limited(app_t *app, const req_t *r, const budget_why_t *why);
/* Admitted with its completion limit clamped to r->clamped (before
 * events_admitted). */
void events_clamped(app_t *app, const req_t *r);
/* Admitted: its hold is taken and its begin journaled; it goes upstream. */
void events_admitted(app_t *app, const req_t *r);
/* Its upstream request was handed to libcurl (loop thread). */
void events_upstream_started(app_t *app, const req_t *r);
/* The first content event of its stream was relayed (loop thread). */
void events_first_token(app_t *app, const req_t *r);
/* Finished: its ledger row has its final state and charge, its hold is
 * settled (after events_admitted, exactly once). */
void events_settled(app_t *app, const req_t *r, const verdict_t *v);
/* Its answer went to the client with this status (loop thread, at the end
 * of the request; after the others). */
void events_answered(app_t *app, const req_t *r, int status);
/* Account sync read Pinata's balance (account's thread). */
void events_account_synced(app_t *app);
/* An alert delivery attempt ended: sent (the receiver answered 2xx) or
 * failed (the alert sender's thread). */
void events_alert(app_t *app, const char *event, int sent);

#endif
