/* teams: the teams endpoint (see teams.h). The figures are the budget's
 * for the period containing now, read without I/O (budget_team_figures: the
 * in-process book's, or with Redis the fleet's as Redis last answered them);
 * requests in flight are the metrics' gauge; the answer is built in a job. */
#include "teams.h"
#include "account.h"
#include "jobs.h"
#include "metrics.h"
#include <stdlib.h>
#include <string.h>

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    char buf[BASE_TIME_MAX];
    cJSON_AddStringToObject(o, name, base_time_fmt(ms, buf));
}

/* {"name", "cap", "period", "period_start", "period_end", "spent", "loaned",
 * "available", "inflight", "models", "keys"} of one team. -1 when its
 * figures cannot be had (the shared store has none yet). */
static int add_team(cJSON *arr, app_t *app, const team_conf_t *t, int slot, int64_t now_s)
{
    book_view_t v;
    /* with Redis, until its first answer for a new period: ask it (this is
     * a job's thread, not the loop) */
    if (budget_team_figures(app->budget, slot, now_s, &v) != 0 &&
        budget_team_view(app->budget, slot, now_s, &v) != 0)
        return -1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", t->name);
    if (t->cap >= 0) req_add_credits(o, "cap", t->cap); else cJSON_AddNullToObject(o, "cap");
    cJSON_AddStringToObject(o, "period", config_period_name(t->period));
    if (t->period != PERIOD_NONE) {
        int64_t start = book_period_start(t->period, now_s);
        add_time(o, "period_start", start * 1000);
        add_time(o, "period_end", book_period_end(t->period, now_s) * 1000);
    } else {
        cJSON_AddNullToObject(o, "period_start");
        cJSON_AddNullToObject(o, "period_end");
    }
    req_add_credits(o, "spent", v.spent);
    req_add_credits(o, "loaned", v.loaned);
    if (t->cap >= 0) req_add_credits(o, "available", v.available);
    else cJSON_AddNullToObject(o, "available");
    cJSON_AddNumberToObject(o, "inflight", (double)metrics_inflight(app->metrics, t->name));
    if (t->models) {
        cJSON *m = cJSON_AddArrayToObject(o, "models");
        for (size_t i = 0; i < t->n_models; i++)
            cJSON_AddItemToArray(m, cJSON_CreateString(t->models[i]));
    } else {
        cJSON_AddNullToObject(o, "models");
    }
    cJSON *keys = cJSON_AddArrayToObject(o, "keys");
    for (size_t i = 0; i < t->n_keys; i++) {
        cJSON *k = cJSON_CreateObject();
        cJSON_AddStringToObject(k, "id", t->keys[i].id);
        cJSON_AddItemToArray(keys, k);
    }
    cJSON_AddItemToArray(arr, o);
    return 0;
}

/* "account": the last sync (null figures until one succeeded) and the
 * projection, or null when account sync is off. */
static void add_account(cJSON *root, app_t *app)
{
    book_view_t v;
    nanos_t synced = 0;
    int64_t at_ms = 0;
    if (!app->acct || budget_account_view(app->budget, &v) != 0) {
        cJSON_AddNullToObject(root, "account");
        return;
    }
    int known = account_last_sync(app->acct, &synced, &at_ms) == 0;
    cJSON *a = cJSON_AddObjectToObject(root, "account");
    /* the view's total is the synced total less what was charged since */
    if (known) req_add_credits(a, "synced_total", v.cap + v.spent);
    else cJSON_AddNullToObject(a, "synced_total");
    if (known) req_add_credits(a, "synced_available", synced);
    else cJSON_AddNullToObject(a, "synced_available");
    req_add_credits(a, "projected_available", v.available);
    if (known) add_time(a, "last_sync_at", at_ms);
    else cJSON_AddNullToObject(a, "last_sync_at");
}

static void teams_job(void *arg)
{
    req_t *r = arg;
    app_t *app = r->app;
    const snap_t *sn = r->snap;
    int64_t now_s = base_wall_ms() / 1000;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "scope", r->admin ? "admin" : "team");
    cJSON *arr = cJSON_AddArrayToObject(root, "teams");
    int bad = 0;
    if (sn->passthrough) {
        static const team_conf_t deflt = { .name = "default", .cap = -1, .period = PERIOD_NONE };
        bad |= add_team(arr, app, &deflt, sn->default_slot, now_s);
    }
    for (size_t i = 0; i < sn->cfg->n_teams; i++)
        if (r->admin || r->tconf == &sn->cfg->teams[i])
            bad |= add_team(arr, app, &sn->cfg->teams[i], sn->slot[i], now_s);
    if (r->admin) add_account(root, app); else cJSON_AddNullToObject(root, "account");
    char *s = bad ? NULL : cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (s) req_answer_later_as(r, 200, s, strlen(s), "application/json");
    else req_answer_later(r, 503, req_error_json("the shared budget store (Redis) has no figures "
                                                 "for this period yet", "budget_store_unavailable",
                                                 "budget_store_unavailable"), NULL);
    req_unref(r);
}

enum MHD_Result teams_serve(req_t *r, struct MHD_Connection *c)
{
    req_hold(r);
    if (jobs_submit(r->app->jobs, teams_job, r) != 0) {
        /* not queued: answer here, as the job would have */
        req_answer_later(r, 503, req_error_json("pinmeter is stopping", "unavailable",
                                                "unavailable"), NULL);
        req_unref(r);
    }
    (void)c;
    return MHD_YES;
}
