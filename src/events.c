/* events: the fan-out from the request path to its watchers (see events.h).
 * Each function hands the event to every watcher in turn; none may block.
 * Alerts: the hooks only mark work in the alert thread's inbox (alertq). */
#include "events.h"
#include "alertq.h"
#include <string.h>

void events_refused(app_t *app, const req_t *r, const char *reason, const book_refusal_t *why)
{
    if (app->alertq && r && why && r->team >= 0 && strcmp(reason, EVENTS_TEAM_CAP) == 0)
        alertq_refused(app->alertq, r->team, r->rec.team, r->t_start_ms / 1000, why);
}

void events_admitted(app_t *app, const req_t *r)
{
    (void)app; (void)r;
}

void events_upstream_started(app_t *app, const req_t *r)
{
    (void)app; (void)r;
}

void events_first_token(app_t *app, const req_t *r)
{
    (void)app; (void)r;
}

void events_settled(app_t *app, const req_t *r, const verdict_t *v)
{
    (void)v;
    if (app->alertq && r->team >= 0) alertq_settled(app->alertq, r->team, r->rec.team);
}

void events_answered(app_t *app, const req_t *r, int status)
{
    (void)app; (void)r; (void)status;
}

void events_account_synced(app_t *app)
{
    if (app->alertq) alertq_account_synced(app->alertq);
}

void events_alert(app_t *app, const char *event, int sent)
{
    (void)app; (void)event; (void)sent;
}
