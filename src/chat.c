/* chat: admitting a chat completion (see chat.h). Every refusal here comes
 * before the request is recorded or held, except the ledger's: a reservation
 * taken is released when the begin cannot be journaled. */
#include "chat.h"
#include "events.h"
#include "guard.h"
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

/* The 402 body for a refused reservation (malloc'd JSON). A key's refusal
 * describes the key: its cap, spent, loaned and available. */
static char *refusal_body(const req_t *r, const book_refusal_t *why)
{
    char req_s[MONEY_FMT_MAX], av_s[MONEY_FMT_MAX], msg[600], who[200];
    const char *scope = why->scope == BOOK_SCOPE_TEAM ? "team"
                      : why->scope == BOOK_SCOPE_KEY ? "key" : "account";
    if (why->scope == BOOK_SCOPE_TEAM) snprintf(who, sizeof who, "team %s", r->rec.team);
    else if (why->scope == BOOK_SCOPE_KEY)
        snprintf(who, sizeof who, "key %s of team %s", r->rec.key_id, r->rec.team);
    else snprintf(who, sizeof who, "the account");
    snprintf(msg, sizeof msg,
             "insufficient credits: this request needs up to %s credits but %s has %s "
             "available; lower max_tokens (or max_completion_tokens) to reserve less%s",
             money_fmt(why->required, req_s), who, money_fmt(why->available, av_s),
             why->retry ? ", or retry when requests in flight finish" : "");
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "insufficient_credits");
    cJSON_AddStringToObject(e, "code", "insufficient_credits");
    cJSON_AddStringToObject(e, "scope", scope);
    cJSON_AddStringToObject(e, "team", r->rec.team);
    if (why->scope == BOOK_SCOPE_KEY) cJSON_AddStringToObject(e, "key", r->rec.key_id);
    req_add_credits(e, "cap", why->cap);
    req_add_credits(e, "spent", why->spent);
    req_add_credits(e, "loaned", why->loaned);
    req_add_credits(e, "available", why->available);
    req_add_credits(e, "required", why->required);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static const char *const LIMIT_CODE[] = {
    [RATELIM_RPM] = "rpm", [RATELIM_TPM] = "tpm", [RATELIM_INFLIGHT] = "inflight",
    [RATELIM_SPEND_MINUTE] = "max_spend_per_minute", [RATELIM_SPEND_HOUR] = "max_spend_per_hour",
};
static const char *const LIMIT_WHAT[] = {
    [RATELIM_RPM] = "requests per minute", [RATELIM_TPM] = "tokens per minute",
    [RATELIM_INFLIGHT] = "requests in flight at once",
    [RATELIM_SPEND_MINUTE] = "credits spent per minute (the runaway guard)",
    [RATELIM_SPEND_HOUR] = "credits spent per hour (the runaway guard)",
};

static int is_spend(ratelim_which_t w) { return w == RATELIM_SPEND_MINUTE || w == RATELIM_SPEND_HOUR; }

/* The 429 body for a rate limit or the runaway guard (malloc'd JSON). */
static char *limited_body(const req_t *r, const budget_why_t *why)
{
    const ratelim_verdict_t *v = &why->rate;
    int key = why->rate_scope == BUDGET_SCOPE_KEY;
    char msg[600], who[200];
    if (key) snprintf(who, sizeof who, "key %s of team %s", r->rec.key_id, r->rec.team);
    else snprintf(who, sizeof who, "team %s", r->rec.team);
    snprintf(msg, sizeof msg, "rate limit reached: %s is at its limit of %s; retry after %d s",
             who, LIMIT_WHAT[v->which], v->retry_after_s);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", is_spend(v->which) ? "spend_rate_exceeded"
                                                          : "rate_limit_exceeded");
    cJSON_AddStringToObject(e, "code", LIMIT_CODE[v->which]);
    cJSON_AddStringToObject(e, "scope", key ? "key" : "team");
    cJSON_AddStringToObject(e, "team", r->rec.team);
    if (key) cJSON_AddStringToObject(e, "key", r->rec.key_id);
    if (is_spend(v->which)) {
        req_add_credits(e, "spent_in_window", v->spent_in_window);
        req_add_credits(e, "limit", v->limit);
    }
    cJSON_AddNumberToObject(e, "retry_after", v->retry_after_s);
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

/* What the budget is asked for r. */
static budget_req_t ask_of(const req_t *r)
{
    budget_req_t q = { .team = r->team, .key = r->key_slot, .amount = r->rec.reserved,
                       .tokens = r->tokens, .now_ms = r->t_start_ms, .rid = r->rec.id };
    return q;
}

/* A team cap that clamps: when the team's cap refused a reservation that a
 * smaller completion limit (at least clamp_min_tokens) would fit, lowers the
 * forwarded limit to the largest that fits and r's reservation with it.
 * 1 when r was clamped (ask again), else 0. Once per request. */
static int try_clamp(req_t *r, const budget_why_t *why)
{
    const team_conf_t *t = r->tconf;
    if (!t || !t->clamp || r->clamped || why->money.scope != BOOK_SCOPE_TEAM) return 0;
    int64_t max_out = r->adm.max_tokens > 0 ? r->adm.max_tokens
                                            : r->snap->cfg->default_max_tokens;
    int64_t c = cost_max_completion(&r->rate, r->adm.est_prompt_tokens, r->adm.n,
                                    why->money.available);
    if (c < t->clamp_min_tokens || c >= max_out) return 0;
    if (admit_clamp(&r->adm, r->body ? r->body : "", r->body_len, c) != 0) return 0;
    r->clamped = c;
    r->tokens = r->adm.est_prompt_tokens + c * r->adm.n;
    r->rec.reserved = cost_reservation(&r->rate, r->adm.est_prompt_tokens, c * r->adm.n);
    return 1;
}

/* A refusal to answer: its status, body (owned) and Retry-After. */
typedef struct answer { int status; char *body; char retry[16]; } answer_t;

/* The budget's answer to r's reservation, taken: 0 when r is admitted (its
 * hold taken and its begin journaled: it may go upstream), else -1 with the
 * refusal in *a. Any thread. */
static int admit_after(req_t *r, int rc, const budget_why_t *why, answer_t *a)
{
    app_t *app = r->app;
    memset(a, 0, sizeof *a);
    if (rc == BUDGET_OK || rc == BUDGET_LIMITED) {
        r->rate_hdr = why->rate;
        r->rate_known = why->rate.limit_requests || why->rate.limit_tokens;
    }
    if (rc == BUDGET_OK) {
        /* Durable before anything goes upstream (one journal write);
         * fail closed when the ledger cannot take it. */
        if (ledger_begin(app->ledger, &r->rec) == 0) {
            r->t_admit_us = base_mono_us();
            if (r->clamped) events_clamped(app, r);
            events_admitted(app, r);
            return 0;
        }
        budget_release(app->budget, &r->hold, base_wall_ms());
        base_log("ledger cannot be written: refusing request %s (503)", r->rec.id);
        events_refused(app, r, EVENTS_LEDGER_UNAVAILABLE, NULL);
        a->status = 503;
        a->body = req_error_json(LEDGER_DOWN_MSG, "ledger_unavailable", "ledger_unavailable");
    } else if (rc == BUDGET_REFUSED) {
        const book_refusal_t *m = &why->money;
        events_refused(app, r, m->scope == BOOK_SCOPE_TEAM ? EVENTS_TEAM_CAP
                             : m->scope == BOOK_SCOPE_KEY ? EVENTS_KEY_CAP : EVENTS_ACCOUNT, m);
        a->status = 402;
        a->body = refusal_body(r, m);
        if (m->retry) snprintf(a->retry, sizeof a->retry, "1");
    } else if (rc == BUDGET_LIMITED) {
        events_limited(app, r, why);
        a->status = 429;
        a->body = limited_body(r, why);
        r->retry_after_ms = why->rate.retry_after_ms;
        snprintf(a->retry, sizeof a->retry, "%d", why->rate.retry_after_s);
    } else {
        events_refused(app, r, EVENTS_STORE_UNAVAILABLE, NULL);
        a->status = 503;
        a->body = req_error_json(STORE_DOWN_MSG, "budget_store_unavailable",
                                 "budget_store_unavailable");
    }
    r->rec.id[0] = '\0';          /* not admitted: no request id on the answer */
    return -1;
}

/* The shared store's answer to a reservation (on its thread): a clamp asks
 * again; otherwise admit and send upstream, or answer. Holds the reference
 * chat_serve took. */
static void on_reserved(void *arg, int rc, const budget_why_t *why)
{
    req_t *r = arg;
    app_t *app = r->app;
    if (rc == BUDGET_REFUSED && try_clamp(r, why)) {
        budget_req_t q = ask_of(r);
        if (budget_reserve_async(app->budget, &q, &r->hold, on_reserved, r) == 0) return;
        rc = BUDGET_UNAVAILABLE;
    }
    answer_t a;
    if (admit_after(r, rc, why, &a) == 0) {
        upstream_submit(r->w->up, r);          /* the reference goes with it */
        return;
    }
    req_answer_later(r, a.status, a.body, a.retry);
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
    /* the prices it pays, fixed now: a rate table swapped in while it runs
     * does not change them, and its ledger row records them */
    r->rec.price_input = r->rate.input;
    r->rec.price_output = r->rate.output;
    r->rec.price_cache_read = r->rate.cache_read;
    r->rec.reserved = cost_reservation(&r->rate, r->adm.est_prompt_tokens, max_out * r->adm.n);
    r->tokens = r->adm.est_prompt_tokens + max_out * r->adm.n;
    r->rec.state = LEDGER_INFLIGHT;
    return 0;
}

enum MHD_Result chat_serve(req_t *r, struct MHD_Connection *c)
{
    app_t *app = r->app;
    enum MHD_Result ret = MHD_YES;
    r->up_path = "/v0/llm/chat/completions";
    if (check_and_price(r, c, &ret) != 0) return ret;
    guard_why_t gw;
    if (app->guard && guard_refuses(app->guard, r->t_start_ms, &gw)) {
        /* the top-up guard: nothing is reserved, recorded or forwarded */
        events_refused(app, r, EVENTS_TOPUP_LIMIT, NULL);
        r->rec.id[0] = '\0';
        char *b = guard_refusal_body(&gw, r->rec.team);
        return req_queue_body(c, 402, b, b ? strlen(b) : 0, "application/json", r, NULL);
    }
    budget_req_t q = ask_of(r);
    if (budget_async(app->budget)) {
        /* The shared store answers on its own thread (pipelined with other
         * requests); the connection waits suspended meanwhile. The reference
         * is for the store's answer, then the upstream side. */
        req_hold(r);
        if (budget_reserve_async(app->budget, &q, &r->hold, on_reserved, r) == 0)
            return MHD_YES;
        budget_why_t none;
        memset(&none, 0, sizeof none);
        on_reserved(r, BUDGET_UNAVAILABLE, &none);
        return MHD_YES;
    }
    budget_why_t why;
    int rc = budget_reserve(app->budget, &q, &r->hold, &why);
    if (rc == BUDGET_REFUSED && try_clamp(r, &why)) {
        q = ask_of(r);
        rc = budget_reserve(app->budget, &q, &r->hold, &why);
    }
    answer_t a;
    if (admit_after(r, rc, &why, &a) != 0)
        return req_queue_body(c, a.status, a.body, a.body ? strlen(a.body) : 0,
                              "application/json", r, a.retry);
    req_hold(r);
    upstream_submit(r->w->up, r);
    return MHD_YES;
}
