/* events: the fan-out from the request path to its watchers (see events.h).
 * Each function hands the event to every watcher in turn; none may block.
 * Alerts: the hooks only mark work in the alert thread's inbox (alertq).
 *
 * Metrics (metrics.h): the label values come only from the config and the
 * rate table — the caller's team when it showed a valid key ("" else), the
 * model only when the rate table prices it ("" else), the key id only when
 * "metrics_key_label" is on — never a string the client chose. */
#include "events.h"
#include "alertq.h"
#include "metrics.h"
#include <string.h>

static const char *team_of(const req_t *r)
{
    return r ? r->rec.team : "";
}

static const char *model_of(const req_t *r)
{
    return r->priced ? r->adm.model : "";
}

static const char *key_of(const req_t *r)
{
    return r->snap->cfg->metrics_key_label ? r->rec.key_id : NULL;
}

void events_refused(app_t *app, const req_t *r, const char *reason, const book_refusal_t *why)
{
    metrics_rejected(app->metrics, team_of(r), reason);
    if (app->alertq && r && why && r->team >= 0 && strcmp(reason, EVENTS_TEAM_CAP) == 0)
        alertq_refused(app->alertq, r->team, r->rec.team, r->t_start_ms / 1000, why);
}

void events_limited(app_t *app, const req_t *r, const budget_why_t *why)
{
    static const char *const reason[] = {
        [RATELIM_RPM] = EVENTS_RPM, [RATELIM_TPM] = EVENTS_TPM, [RATELIM_INFLIGHT] = EVENTS_INFLIGHT,
        [RATELIM_SPEND_MINUTE] = EVENTS_SPEND_RATE, [RATELIM_SPEND_HOUR] = EVENTS_SPEND_RATE,
    };
    unsigned w = (unsigned)why->rate.which;
    metrics_rejected(app->metrics, team_of(r), w <= RATELIM_SPEND_HOUR && w ? reason[w] : "");
    if (app->alertq && r && (w == RATELIM_SPEND_MINUTE || w == RATELIM_SPEND_HOUR)) {
        int key = why->rate_scope == BUDGET_SCOPE_KEY;
        alertq_runaway(app->alertq, r->team, r->rec.team, key ? r->key_slot : -1,
                       key ? r->rec.key_id : NULL, w == RATELIM_SPEND_HOUR,
                       why->rate.spent_in_window, why->rate.limit, base_wall_ms());
    }
}

void events_clamped(app_t *app, const req_t *r)
{
    metrics_clamped(app->metrics, team_of(r));
}

void events_admitted(app_t *app, const req_t *r)
{
    metrics_admitted(app->metrics, team_of(r));
    if (app->alertq) alertq_admitted(app->alertq, r->team, r->key_slot);
}

void events_upstream_started(app_t *app, const req_t *r)
{
    metrics_admission(app->metrics, base_mono_us() - r->t_body_us);
}

void events_first_token(app_t *app, const req_t *r)
{
    metrics_first_token(app->metrics, model_of(r), base_mono_us() - r->t_admit_us);
}

void events_settled(app_t *app, const req_t *r, const verdict_t *v)
{
    metrics_state_t st = v->state == LEDGER_SETTLED ? METRICS_SETTLED
                       : v->state == LEDGER_ESTIMATED ? METRICS_ESTIMATED
                       : v->state == LEDGER_INTERRUPTED ? METRICS_INTERRUPTED
                       : METRICS_NO_CHARGE;
    metrics_settle_t s = {
        .team = team_of(r), .model = model_of(r), .key = key_of(r),
        .prompt = v->usage.prompt, .completion = v->usage.completion,
        .cached = v->usage.cached, .state = st, .charge = v->charge,
        .upstream_us = base_mono_us() - r->t_admit_us, .leaves_inflight = 1,
    };
    metrics_settled(app->metrics, &s);
    if (app->alertq && r->team >= 0) alertq_settled(app->alertq, r->team, r->rec.team);
}

void events_answered(app_t *app, const req_t *r, int status)
{
    /* 0: the client left before any answer was queued (the ledger's 499) */
    metrics_answered(app->metrics, team_of(r), model_of(r), key_of(r), status ? status : 499);
}

void events_account_synced(app_t *app)
{
    /* the account gauges are read at scrape time */
    if (app->alertq) alertq_account_synced(app->alertq);
}

void events_alert(app_t *app, const char *event, int sent)
{
    metrics_alert(app->metrics, event, sent);
}
