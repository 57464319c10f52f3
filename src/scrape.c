/* scrape: the /metrics endpoint (see scrape.h). The gauges of each
 * configured team come from the budget for the current period (in passthrough
 * mode, team "default"); the rest from the account, the ledger and the store
 * through their no-I/O getters. */
#include "scrape.h"
#include "account.h"
#include "jobs.h"
#include "metrics.h"
#include "version.h"
#include <stdlib.h>
#include <string.h>

/* One team's gauges from the budget. */
static void team_gauges(app_t *app, int slot, const char *name, nanos_t cap, period_t p,
                        int64_t now_s, metrics_team_t *out)
{
    book_view_t v;
    memset(out, 0, sizeof *out);
    out->name = name;
    out->capped = cap >= 0;
    out->cap = cap;
    out->period_end_s = book_period_end(p, now_s);
    if (budget_team_figures(app->budget, slot, now_s, &v) == 0) {
        out->known = 1;
        out->spent = v.spent;
        out->loaned = v.loaned;
    }
}

char *scrape_text(app_t *app, const snap_t *sn, size_t *len)
{
    const config_t *cfg = sn->cfg;
    int64_t now_s = base_wall_ms() / 1000;
    size_t n = sn->passthrough ? 1 : cfg->n_teams;
    metrics_team_t *teams = calloc(n ? n : 1, sizeof *teams);
    if (!teams) return NULL;
    if (sn->passthrough)
        team_gauges(app, sn->default_slot, "default", -1, PERIOD_NONE, now_s, &teams[0]);
    for (size_t i = 0; !sn->passthrough && i < n; i++)
        team_gauges(app, sn->slot[i], cfg->teams[i].name, cfg->teams[i].cap,
                    cfg->teams[i].period, now_s, &teams[i]);

    metrics_gauges_t g = {
        .version = PINMETER_VERSION, .teams = teams, .n_teams = n,
        .ledger_backlog = (int64_t)ledger_backlog(app->ledger),
        .ledger_write_errors = ledger_write_errors(app->ledger),
    };
    if (app->acct) {
        book_view_t av;
        g.account_on = 1;
        if (budget_account_view(app->budget, &av) == 0) {
            g.projected_known = 1;
            g.projected = av.available;
        }
        g.synced_known = account_last_sync(app->acct, &g.synced, &g.synced_ms) == 0;
        g.drift_known = account_drift(app->acct, &g.drift) == 0;
    }
    const char *store = budget_store_state(app->budget);
    g.store_redis = strncmp(store, "redis", 5) == 0;
    g.store_up = strcmp(store, "redis") == 0;
    char *text = metrics_format(app->metrics, &g, len);
    free(teams);
    return text;
}

static void scrape_job(void *arg)
{
    req_t *r = arg;
    size_t len = 0;
    char *text = scrape_text(r->app, r->snap, &len);
    if (text)
        req_answer_later_as(r, 200, text, len, METRICS_CONTENT_TYPE);
    else
        req_answer_later(r, 503, req_error_json("out of memory formatting the metrics",
                                                "server_error", "out_of_memory"), "1");
    req_unref(r);
}

enum MHD_Result scrape_serve(req_t *r, struct MHD_Connection *c)
{
    (void)c;
    req_hold(r);
    if (jobs_submit(r->app->jobs, scrape_job, r) != 0) {
        req_answer_later(r, 503, req_error_json("pinmeter is stopping", "server_error",
                                                "unavailable"), "1");
        req_unref(r);
    }
    return MHD_YES;
}
