/* alerts_api: the operator's side of budget alerts (part of the alerts
 * module; see alerts.h) — GET /v0/alerts, answered by a job off the loop
 * from the ledger's read connection, and `pinmeter alert test`, one POST of
 * an alert_test event. Uses the alert thread's pieces (alertcore, webhook,
 * ledger_alert), never the thread itself. */
#include "alerts.h"
#include "alertcore.h"
#include "jobs.h"
#include "ledger_alert.h"
#include "webhook.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>

#define LIST_DEFAULT 100
#define LIST_MAX 1000

typedef struct list_job {
    req_t *r;
    int64_t since_ms;
    int limit;
} list_job_t;

static int add_alert(void *ud, const ledger_alert_t *al)
{
    cJSON *arr = ud, *o = cJSON_CreateObject();
    char at[ALERTCORE_TIME_MAX];
    if (!o) return -1;
    cJSON_AddStringToObject(o, "id", al->id);
    cJSON_AddStringToObject(o, "event", al->event);
    if (al->team) cJSON_AddStringToObject(o, "team", al->team);
    else cJSON_AddNullToObject(o, "team");
    cJSON_AddStringToObject(o, "at", alertcore_time(al->at_ms, at));
    cJSON_AddStringToObject(o, "state", ledger_alert_state_name(al->state));
    cJSON_AddNumberToObject(o, "attempts", al->attempts);
    if (al->last_error) cJSON_AddStringToObject(o, "last_error", al->last_error);
    else cJSON_AddNullToObject(o, "last_error");
    /* the exact bytes that are (or were) POSTed */
    cJSON_AddItemToObject(o, "payload", cJSON_CreateRaw(al->payload));
    cJSON_AddItemToArray(arr, o);
    return 0;
}

static void list_job(void *arg)
{
    list_job_t *j = arg;
    req_t *r = j->r;
    char err[256];
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "alerts");
    char *body = NULL;
    int status = 200;
    if (!root || !arr) {
        status = 500;
    } else if (ledger_alert_list(r->app->ledger, j->since_ms, j->limit, add_alert, arr, err,
                                 sizeof err) != 0) {
        base_log("GET /v0/alerts: %s", err);
        status = 503;
    }
    if (status == 200) body = cJSON_PrintUnformatted(root);
    if (!body) {
        status = status == 200 ? 500 : status;
        body = req_error_json("the alerts cannot be read from the ledger now",
                              "ledger_unavailable", "ledger_unavailable");
    }
    cJSON_Delete(root);
    req_answer_later_as(r, status, body, body ? strlen(body) : 0, "application/json");
    req_unref(r);
    free(j);
}

static enum MHD_Result bad_param(struct MHD_Connection *c, const char *msg)
{
    return req_queue_error(c, 400, msg, "invalid_request_error", "invalid_parameter", NULL);
}

enum MHD_Result alerts_serve(req_t *r, struct MHD_Connection *c)
{
    if (req_take_query(r, c) != 0) return MHD_NO;
    int64_t since = INT64_MIN;
    long limit = LIST_DEFAULT;
    const char *s = req_arg(r, "since"), *l = req_arg(r, "limit");
    if (s && alertcore_parse_time(s, &since) != 0)
        return bad_param(c, "since: want an RFC 3339 time (2026-11-24T10:00:00Z) or a date "
                            "(2026-11-24)");
    if (l) {
        char *end;
        limit = strtol(l, &end, 10);
        if (!*l || *end || limit < 1 || limit > LIST_MAX)
            return bad_param(c, "limit: want a whole number from 1 to 1000");
    }
    list_job_t *j = malloc(sizeof *j);
    if (!j) return MHD_NO;
    *j = (list_job_t){ .r = r, .since_ms = since, .limit = (int)limit };
    req_hold(r);
    if (jobs_submit(r->app->jobs, list_job, j) != 0) {
        free(j);
        req_answer_later_as(r, 503, req_error_json("pinmeter is stopping", "unavailable",
                                                   "unavailable"), 0, "application/json");
        req_unref(r);
    }
    return MHD_YES;
}

int alerts_cli_test(const config_t *cfg, FILE *out, FILE *err)
{
    if (!cfg->alerts_on) {
        fprintf(err, "pinmeter: %s: alerts: not configured (add \"alerts\": {\"webhook_url\": "
                "...})\n", cfg->path);
        return 1;
    }
    char instance[64] = "";
    if (cfg->instance_id[0]) snprintf(instance, sizeof instance, "%s", cfg->instance_id);
    else if (ledger_alert_peek_instance(cfg->ledger, instance, sizeof instance) != 0)
        snprintf(instance, sizeof instance, "cli");
    const char *secret = cfg->alert_secret_env[0] ? getenv(cfg->alert_secret_env) : NULL;
    if (cfg->alert_secret_env[0] && (!secret || !*secret))
        fprintf(err, "pinmeter: %s (alerts.secret_env) is not set: the event is sent unsigned\n",
                cfg->alert_secret_env);
    int64_t now = base_wall_ms();
    char id[ALERTCORE_ID_LEN + 1];
    alertcore_id(ALERTCORE_TEST, instance, now, 0, id);
    alertcore_event_t e = { .event = ALERTCORE_TEST, .id = id, .at_ms = now,
                            .instance = instance };
    char *payload = alertcore_payload(&e);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !payload) {
        fprintf(err, "pinmeter: out of memory\n");
        free(payload);
        return 1;
    }
    webhook_t *w = webhook_new(secret, NULL);
    char why[256] = "out of memory";
    long st = w ? webhook_post(w, cfg->alert_url, ALERTCORE_TEST, payload, strlen(payload), why,
                               sizeof why) : 0;
    webhook_free(w);
    curl_global_cleanup();
    int ok = st >= 200 && st < 300;
    if (st > 0)
        fprintf(ok ? out : err, "alert test %s: the receiver answered HTTP %ld%s\n", id, st,
                ok ? "" : " (not 2xx)");
    else
        fprintf(err, "alert test %s: no answer from the receiver: %s\n", id, why);
    free(payload);
    return ok ? 0 : 1;
}
