/* chat: admitting a chat completion (see chat.h). Every refusal here comes
 * before the request is recorded or held, except the ledger's: a reservation
 * taken is released when the begin cannot be journaled. */
#include "chat.h"
#include "events.h"
#include "upstream.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char STORE_DOWN_MSG[] =
    "the shared budget store (Redis) cannot be reached, so pinmeter cannot check the team's "
    "cap across instances and refuses new requests (on_store_down); requests already "
    "admitted are unaffected";
static const char LEDGER_DOWN_MSG[] =
    "the ledger cannot be written, so pinmeter refuses to serve unmetered requests; check "
    "the ledger's disk";

/* The 402 body for a refused reservation (malloc'd JSON). */
static char *refusal_body(const req_t *r, const book_refusal_t *why)
{
    char req_s[MONEY_FMT_MAX], av_s[MONEY_FMT_MAX], msg[512];
    int team_scope = why->scope == BOOK_SCOPE_TEAM;
    snprintf(msg, sizeof msg,
             "insufficient credits: this request needs up to %s credits but %s %s has %s "
             "available; lower max_tokens (or max_completion_tokens) to reserve less%s",
             money_fmt(why->required, req_s), team_scope ? "team" : "the",
             team_scope ? r->rec.team : "account", money_fmt(why->available, av_s),
             why->retry ? ", or retry when requests in flight finish" : "");
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "insufficient_credits");
    cJSON_AddStringToObject(e, "code", "insufficient_credits");
    cJSON_AddStringToObject(e, "scope", team_scope ? "team" : "account");
    cJSON_AddStringToObject(e, "team", r->rec.team);
    req_add_credits(e, "cap", why->cap);
    req_add_credits(e, "spent", why->spent);
    req_add_credits(e, "loaned", why->loaned);
    req_add_credits(e, "available", why->available);
    req_add_credits(e, "required", why->required);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* application/json, or any type/subtype+json, parameters allowed. */
static int is_json_type(const char *ct)
{
    while (*ct == ' ') ct++;
    size_t n = strcspn(ct, "; ");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) return 1;
    return n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* The shared store's answer to a reservation (on its thread): record and
 * send upstream, or answer 402/503. Holds the reference chat_serve took. */
static void on_reserved(void *arg, int rc, const book_refusal_t *why)
{
    req_t *r = arg;
    app_t *app = r->app;
    if (rc == BUDGET_OK) {
        if (ledger_begin(app->ledger, &r->rec) == 0) {
            r->t_admit_us = base_mono_us();
            events_admitted(app, r);
            upstream_submit(app->up, r);          /* the reference goes with it */
            return;
        }
        budget_release(app->budget, &r->hold);
        base_log("ledger cannot be written: refusing request %s (503)", r->rec.id);
        events_refused(app, r, EVENTS_LEDGER_UNAVAILABLE, NULL);
        req_answer_later(r, 503, req_error_json(LEDGER_DOWN_MSG, "ledger_unavailable",
                                                "ledger_unavailable"), NULL);
    } else if (rc == BUDGET_REFUSED) {
        events_refused(app, r, why->scope == BOOK_SCOPE_TEAM ? EVENTS_TEAM_CAP : EVENTS_ACCOUNT,
                       why);
        req_answer_later(r, 402, refusal_body(r, why), why->retry ? "1" : NULL);
    } else {
        events_refused(app, r, EVENTS_STORE_UNAVAILABLE, NULL);
        req_answer_later(r, 503, req_error_json(STORE_DOWN_MSG, "budget_store_unavailable",
                                                "budget_store_unavailable"), NULL);
    }
    req_unref(r);
}

/* Validates and prices r; fills its admission fields and ledger record.
 * 0, or -1 after queuing the refusal. */
static int check_and_price(req_t *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    const config_t *cfg = r->snap->cfg;
    char err[256];
    app_t *app = r->app;
    if (r->too_large) {
        events_refused(app, r, EVENTS_BODY_TOO_LARGE, NULL);
        snprintf(err, sizeof err, "request body is larger than the limit of %zu bytes",
                 cfg->max_body);
        *ret = req_queue_error(c, 413, err, "invalid_request_error", "body_too_large", NULL);
        return -1;
    }
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ctype && !is_json_type(ctype)) {
        events_refused(app, r, EVENTS_INVALID_REQUEST, NULL);
        *ret = req_queue_error(c, 415, "send the request body as JSON with "
                               "'Content-Type: application/json'", "invalid_request_error",
                               "unsupported_media_type", NULL);
        return -1;
    }
    if (admit_parse(r->body ? r->body : "", r->body_len, &r->adm, err, sizeof err) != 0) {
        events_refused(app, r, EVENTS_INVALID_REQUEST, NULL);
        *ret = req_queue_error(c, 400, err, "invalid_request_error", "invalid_request", NULL);
        return -1;
    }
    r->priced = rates_lookup(r->snap->rates, r->adm.model, &r->rate) == 0;
    if (r->tconf && !config_model_allowed(r->tconf, r->adm.model)) {
        events_refused(app, r, EVENTS_MODEL_NOT_ALLOWED, NULL);
        snprintf(err, sizeof err, "model '%.150s' is not allowed for team '%.60s'",
                 r->adm.model, r->rec.team);
        *ret = req_queue_error(c, 403, err, "permission_error", "model_not_allowed", NULL);
        return -1;
    }
    if (!r->priced) {
        if (cfg->unknown_reject) {
            events_refused(app, r, EVENTS_MODEL_NOT_PRICED, NULL);
            snprintf(err, sizeof err, "model '%.200s' has no price in the rate table",
                     r->adm.model);
            *ret = req_queue_error(c, 400, err, "model_not_priced", "model_not_priced", NULL);
            return -1;
        }
        r->rate = cfg->unknown_rate;
    }
    int64_t max_out = r->adm.max_tokens > 0 ? r->adm.max_tokens : cfg->default_max_tokens;
    snprintf(r->rec.id, sizeof r->rec.id, "%s-%06llx", app->instance,
             (unsigned long long)atomic_fetch_add(&app->seq, 1));
    r->rec.started_ms = r->t_start_ms;
    snprintf(r->rec.model, sizeof r->rec.model, "%s", r->adm.model);
    r->rec.stream = r->adm.stream;
    r->rec.reserved = cost_reservation(&r->rate, r->adm.est_prompt_tokens, max_out * r->adm.n);
    r->rec.state = LEDGER_INFLIGHT;
    return 0;
}

enum MHD_Result chat_serve(req_t *r, struct MHD_Connection *c)
{
    app_t *app = r->app;
    enum MHD_Result ret = MHD_YES;
    r->up_path = "/v0/llm/chat/completions";
    if (check_and_price(r, c, &ret) != 0) return ret;
    nanos_t need = r->rec.reserved;
    if (budget_async(app->budget)) {
        /* The shared store answers on its own thread (pipelined with other
         * requests); the connection waits suspended meanwhile. The reference
         * is for the store's answer, then the upstream side. */
        req_hold(r);
        if (budget_reserve_async(app->budget, r->team, need, r->t_start_ms / 1000, r->rec.id,
                                 &r->hold, on_reserved, r) == 0)
            return MHD_YES;
        book_refusal_t none = {0};
        on_reserved(r, BUDGET_UNAVAILABLE, &none);
        return MHD_YES;
    }
    book_refusal_t why;
    int brc = budget_reserve(app->budget, r->team, need, r->t_start_ms / 1000, r->rec.id,
                             &r->hold, &why);
    if (brc != BUDGET_OK) {
        r->rec.id[0] = '\0';
        if (brc == BUDGET_UNAVAILABLE) {
            events_refused(app, r, EVENTS_STORE_UNAVAILABLE, NULL);
            return req_queue_error(c, 503, STORE_DOWN_MSG, "budget_store_unavailable",
                                   "budget_store_unavailable", NULL);
        }
        events_refused(app, r, why.scope == BOOK_SCOPE_TEAM ? EVENTS_TEAM_CAP : EVENTS_ACCOUNT,
                       &why);
        char *body = refusal_body(r, &why);
        return req_queue_body(c, 402, body, body ? strlen(body) : 0, "application/json", NULL,
                              why.retry ? "1" : NULL);
    }
    /* Durable before anything goes upstream (one journal write on this
     * thread); fail closed when the ledger cannot take it. */
    if (ledger_begin(app->ledger, &r->rec) != 0) {
        budget_release(app->budget, &r->hold);
        base_log("ledger cannot be written: refusing request %s (503)", r->rec.id);
        events_refused(app, r, EVENTS_LEDGER_UNAVAILABLE, NULL);
        return req_queue_error(c, 503, LEDGER_DOWN_MSG, "ledger_unavailable",
                               "ledger_unavailable", NULL);
    }
    r->t_admit_us = base_mono_us();
    events_admitted(app, r);
    req_hold(r);
    upstream_submit(app->up, r);
    return MHD_YES;
}
