/* health: the health endpoint (see health.h). */
#include "health.h"
#include <stdio.h>
#include <string.h>

enum MHD_Result health_serve(req_t *r, struct MHD_Connection *c)
{
    app_t *app = r->app;
    char buf[192];
    int failing = ledger_failing(app->ledger);
    const char *store = budget_store_state(app->budget);
    /* down under "closed": this instance cannot serve (take it out of rotation) */
    int store_down = strcmp(store, "redis-down") == 0 && !r->snap->cfg->store_down_local;
    snprintf(buf, sizeof buf, "{\"status\":\"%s\",\"ledger_backlog\":%zu,"
             "\"budget_store\":\"%s\"}",
             failing ? "ledger_unavailable" : store_down ? "budget_store_unavailable" : "ok",
             ledger_backlog(app->ledger), store);
    return req_queue_body(c, failing || store_down ? 503 : 200, strdup(buf), strlen(buf),
                          "application/json", NULL, NULL);
}
