/* server: the listener. libmicrohttpd runs in external-epoll mode, driven by
 * the upstream thread's event loop (upstream.c); this file
 * routes requests, authenticates them, admits chat completions against the
 * budget (402 before anything goes upstream), records each admitted one in
 * the ledger's begin journal, hands it to the upstream thread, and relays
 * responses. A connection waiting on the upstream is suspended; the upstream
 * thread resumes it. */
#include "app.h"
#include "keys.h"
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define OUT_LOW_WATER (16 * 1024)

char *req_error_json(const char *message, const char *type, const char *code)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(err, "message", message);
    cJSON_AddStringToObject(err, "type", type);
    cJSON_AddStringToObject(err, "code", code);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

void req_unref(req_t *r)
{
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0) return;
    atomic_fetch_sub(&r->app->active, 1);
    admit_free(&r->adm);
    sse_free(r->sse);
    curl_slist_free_all(r->hdrs);
    free(r->body);
    free(r->client_auth);
    free(r->ubody);
    free(r->out);
    free(r->resp_body);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void req_resume_locked(req_t *r)
{
    if (r->suspended && !r->client_gone) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
        /* libmicrohttpd without its own thread acts on it at its next run */
        upstream_resumed(r->app->up);
    }
}

static void suspend_locked(req_t *r)
{
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
    upstream_suspended(r->app->up);
}

/* Queues a buffered response, taking ownership of body (malloc'd). */
static enum MHD_Result queue_body(struct MHD_Connection *c, int status, char *body,
                                  size_t len, const char *ctype, const req_t *r,
                                  const char *retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ?
                                        MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(body); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            ctype && *ctype ? ctype : "application/json");
    if (r && r->rec.id[0]) MHD_add_response_header(resp, "X-Pinmeter-Request-Id", r->rec.id);
    if (retry_after && *retry_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result queue_error(struct MHD_Connection *c, int status, const char *msg,
                                   const char *type, const char *code, const req_t *r)
{
    char *s = req_error_json(msg, type, code);
    return queue_body(c, status, s, s ? strlen(s) : 0, "application/json", r, NULL);
}

/* Adds an exact 9-decimal credits number to obj. */
static void add_credits(cJSON *obj, const char *name, nanos_t v)
{
    char buf[MONEY_FMT_MAX];
    cJSON_AddItemToObject(obj, name, cJSON_CreateRaw(money_fmt(v, buf)));
}

static enum MHD_Result queue_balance(struct MHD_Connection *c, const book_view_t *v)
{
    cJSON *o = cJSON_CreateObject();
    if (v->cap >= 0) add_credits(o, "total", v->cap); else cJSON_AddNullToObject(o, "total");
    add_credits(o, "loaned", v->loaned);
    if (v->cap >= 0) add_credits(o, "available", v->available);
    else cJSON_AddNullToObject(o, "available");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return queue_body(c, 200, s, strlen(s), "application/json", NULL, NULL);
}

/* Finds the team whose key hashes to sha; -1 if none. Every key is compared
 * (constant time each) so the time taken does not depend on which matched. */
static int find_team(const snap_t *sn, const unsigned char sha[32], const char **key_id)
{
    int found = -1;
    for (size_t t = 0; t < sn->cfg->n_teams; t++) {
        const team_conf_t *tc = &sn->cfg->teams[t];
        for (size_t k = 0; k < tc->n_keys; k++) {
            if (keys_equal(sha, tc->keys[k].sha256) && found < 0) {
                found = (int)t;
                *key_id = tc->keys[k].id;
            }
        }
    }
    return found;
}

static const char *bearer_of(struct MHD_Connection *c, size_t *len)
{
    const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return keys_bearer(v, len);
}

static req_t *req_new(app_t *app, struct MHD_Connection *c, route_t route)
{
    req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->app = app;
    r->snap = app_snap(app);
    r->conn = c;
    r->route = route;
    r->refs = 1;
    r->team = -1;
    r->t_start_ms = base_wall_ms();
    pthread_mutex_init(&r->mu, NULL);
    atomic_fetch_add(&app->active, 1);
    return r;
}

/* Authenticates a chat request on its first call. Returns 0, or -1 after
 * queuing the 401. */
static int authenticate(req_t *r, struct MHD_Connection *c, enum MHD_Result *ret)
{
    size_t klen;
    const char *key = bearer_of(c, &klen);
    if (!key) {
        *ret = queue_error(c, 401, "missing API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "missing_api_key", NULL);
        return -1;
    }
    unsigned char sha[32];
    keys_sha256(key, klen, sha);
    const snap_t *sn = r->snap;
    if (sn->passthrough) {
        char hex[65];
        keys_hex(sha, hex);
        r->team = sn->default_slot;
        snprintf(r->rec.key_id, sizeof r->rec.key_id, "pt-%.12s", hex);
        snprintf(r->rec.team, sizeof r->rec.team, "default");
        r->client_auth = strdup(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                            MHD_HTTP_HEADER_AUTHORIZATION));
        return 0;
    }
    const char *key_id = NULL;
    int team = find_team(sn, sha, &key_id);
    if (team < 0) {
        *ret = queue_error(c, 401, "invalid API key", "authentication_error",
                           "invalid_api_key", NULL);
        return -1;
    }
    r->tconf = &sn->cfg->teams[team];
    r->team = sn->slot[team];
    snprintf(r->rec.team, sizeof r->rec.team, "%s", r->tconf->name);
    snprintf(r->rec.key_id, sizeof r->rec.key_id, "%s", key_id);
    return 0;
}

static enum MHD_Result serve_balance(app_t *app, const snap_t *sn, struct MHD_Connection *c)
{
    size_t klen;
    const char *key = bearer_of(c, &klen);
    if (!key)
        return queue_error(c, 401, "missing API key: send 'Authorization: Bearer <key>'",
                           "authentication_error", "missing_api_key", NULL);
    unsigned char sha[32];
    keys_sha256(key, klen, sha);
    book_view_t v;
    if (app->admin_on && keys_equal(sha, app->admin_sha)) {
        if (budget_account_view(app->budget, &v) != 0)
            return queue_error(c, 503, "the account balance is not available: account sync "
                               "is not configured or has not succeeded yet (see account.jwt_env)",
                               "account_unavailable", "account_unavailable", NULL);
        return queue_balance(c, &v);
    }
    const char *key_id;
    int team = find_team(sn, sha, &key_id);
    if (team < 0)
        return queue_error(c, 401, "invalid API key", "authentication_error",
                           "invalid_api_key", NULL);
    if (budget_team_view(app->budget, sn->slot[team], base_wall_ms() / 1000, &v) != 0)
        return queue_error(c, 503, "the shared budget store (Redis) cannot be reached, so the "
                           "team's fleet-wide balance is not available", "budget_store_unavailable",
                           "budget_store_unavailable", NULL);
    return queue_balance(c, &v);
}

static void conn_mark(app_t *app, struct MHD_Connection *c, int in_request);
static void conn_set_req(app_t *app, struct MHD_Connection *c, req_t *r);

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
    add_credits(e, "cap", why->cap);
    add_credits(e, "spent", why->spent);
    add_credits(e, "loaned", why->loaned);
    add_credits(e, "available", why->available);
    add_credits(e, "required", why->required);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static const char STORE_DOWN_MSG[] =
    "the shared budget store (Redis) cannot be reached, so pinmeter cannot check the team's "
    "cap across instances and refuses new requests (on_store_down); requests already "
    "admitted are unaffected";
static const char LEDGER_DOWN_MSG[] =
    "the ledger cannot be written, so pinmeter refuses to serve unmetered requests; check "
    "the ledger's disk";

/* application/json, or any type/subtype+json, parameters allowed. */
static int is_json_type(const char *ct)
{
    while (*ct == ' ') ct++;
    size_t n = strcspn(ct, "; ");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) return 1;
    return n > 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* Prepares a buffered answer for a suspended request and wakes its
 * connection (which queues it); takes ownership of body. */
static void answer_later(req_t *r, int status, char *body, const char *retry_after)
{
    pthread_mutex_lock(&r->mu);
    r->rec.id[0] = '\0';
    r->resp_status = status;
    r->resp_body = body;
    r->resp_len = body ? strlen(body) : 0;
    snprintf(r->resp_type, sizeof r->resp_type, "application/json");
    snprintf(r->retry_after, sizeof r->retry_after, "%s", retry_after ? retry_after : "");
    r->upstream_done = 1;
    r->resp_kind = RESP_BUFFER;
    req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

/* The shared store's answer to a reservation (on its thread): record and
 * send upstream, or answer 402/503. Holds the reference admit_chat took. */
static void on_reserved(void *arg, int rc, const book_refusal_t *why)
{
    req_t *r = arg;
    app_t *app = r->app;
    if (rc == BUDGET_OK) {
        if (ledger_begin(app->ledger, &r->rec) == 0) {
            upstream_submit(app->up, r);          /* the reference goes with it */
            return;
        }
        budget_release(app->budget, &r->hold);
        base_log("ledger cannot be written: refusing request %s (503)", r->rec.id);
        answer_later(r, 503, req_error_json(LEDGER_DOWN_MSG, "ledger_unavailable",
                                            "ledger_unavailable"), NULL);
    } else if (rc == BUDGET_REFUSED) {
        answer_later(r, 402, refusal_body(r, why), why->retry ? "1" : NULL);
    } else {
        answer_later(r, 503, req_error_json(STORE_DOWN_MSG, "budget_store_unavailable",
                                            "budget_store_unavailable"), NULL);
    }
    req_unref(r);
}

/* Admits a complete chat request: validate, price, reserve, record. Queues
 * an error response, or suspends the connection until the upstream answers. */
static enum MHD_Result admit_chat(app_t *app, req_t *r, struct MHD_Connection *c)
{
    const config_t *cfg = r->snap->cfg;
    char err[256];
    if (r->too_large) {
        snprintf(err, sizeof err, "request body is larger than the limit of %zu bytes",
                 cfg->max_body);
        return queue_error(c, 413, err, "invalid_request_error", "body_too_large", NULL);
    }
    const char *ctype = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ctype && !is_json_type(ctype))
        return queue_error(c, 415, "send the request body as JSON with "
                           "'Content-Type: application/json'", "invalid_request_error",
                           "unsupported_media_type", NULL);
    if (admit_parse(r->body ? r->body : "", r->body_len, &r->adm, err, sizeof err) != 0)
        return queue_error(c, 400, err, "invalid_request_error", "invalid_request", NULL);
    if (r->tconf && !config_model_allowed(r->tconf, r->adm.model)) {
        snprintf(err, sizeof err, "model '%.150s' is not allowed for team '%.60s'",
                 r->adm.model, r->rec.team);
        return queue_error(c, 403, err, "permission_error", "model_not_allowed", NULL);
    }
    if (rates_lookup(r->snap->rates, r->adm.model, &r->rate) != 0) {
        if (cfg->unknown_reject) {
            snprintf(err, sizeof err, "model '%.200s' has no price in the rate table",
                     r->adm.model);
            return queue_error(c, 400, err, "model_not_priced", "model_not_priced", NULL);
        }
        r->rate = cfg->unknown_rate;
    }
    int64_t max_out = r->adm.max_tokens > 0 ? r->adm.max_tokens : cfg->default_max_tokens;
    nanos_t need = cost_reservation(&r->rate, r->adm.est_prompt_tokens, max_out * r->adm.n);
    snprintf(r->rec.id, sizeof r->rec.id, "%s-%06llx", app->instance,
             (unsigned long long)atomic_fetch_add(&app->seq, 1));
    r->rec.started_ms = r->t_start_ms;
    snprintf(r->rec.model, sizeof r->rec.model, "%s", r->adm.model);
    r->rec.stream = r->adm.stream;
    r->rec.reserved = need;
    r->rec.state = LEDGER_INFLIGHT;
    conn_set_req(app, c, r);
    if (budget_async(app->budget)) {
        /* The shared store answers on its own thread (pipelined with other
         * requests); the connection waits suspended meanwhile. */
        pthread_mutex_lock(&r->mu);
        r->refs++;                 /* for the store's answer, then the upstream side */
        r->dispatched = 1;
        suspend_locked(r);
        pthread_mutex_unlock(&r->mu);
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
        if (brc == BUDGET_UNAVAILABLE)
            return queue_error(c, 503, STORE_DOWN_MSG, "budget_store_unavailable",
                               "budget_store_unavailable", NULL);
        char *body = refusal_body(r, &why);
        return queue_body(c, 402, body, body ? strlen(body) : 0, "application/json", NULL,
                          why.retry ? "1" : NULL);
    }
    /* Durable before anything goes upstream (one journal write on this
     * thread); fail closed when the ledger cannot take it. */
    if (ledger_begin(app->ledger, &r->rec) != 0) {
        budget_release(app->budget, &r->hold);
        base_log("ledger cannot be written: refusing request %s (503)", r->rec.id);
        return queue_error(c, 503, LEDGER_DOWN_MSG, "ledger_unavailable", "ledger_unavailable",
                           NULL);
    }
    pthread_mutex_lock(&r->mu);
    r->refs++;                     /* for the upstream side */
    r->dispatched = 1;
    suspend_locked(r);
    pthread_mutex_unlock(&r->mu);
    upstream_submit(app->up, r);
    return MHD_YES;
}

/* Event loop: relays stream bytes; suspends when there are none yet. */
static ssize_t read_stream(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    req_t *r = cls;
    int unpause = 0;
    ssize_t n;
    pthread_mutex_lock(&r->mu);
    size_t avail = r->out_len - r->out_off;
    if (avail > 0) {
        n = (ssize_t)(avail < max ? avail : max);
        memcpy(buf, r->out + r->out_off, (size_t)n);
        r->out_off += (size_t)n;
        if (r->out_off == r->out_len) r->out_off = r->out_len = 0;
        if (r->paused && !r->unpause_queued && r->out_len - r->out_off < OUT_LOW_WATER) {
            r->unpause_queued = 1;
            unpause = 1;
        }
    } else if (r->upstream_done) {
        n = r->stream_error ? MHD_CONTENT_READER_END_WITH_ERROR
                            : MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        suspend_locked(r);
        n = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (unpause) upstream_unpause(r->app->up, r);
    return n;
}

/* Queues the response prepared for r (kind, and the buffered body, owned).
 * The fields it reads were set before resp_kind under r->mu and do not
 * change after: call without r->mu. */
static enum MHD_Result queue_prepared(req_t *r, struct MHD_Connection *c, resp_kind_t kind,
                                      char *body)
{
    if (kind == RESP_STREAM) {
        free(body);                /* none: a stream's bytes come from r->out */
        struct MHD_Response *resp =
            /* block size 1 KiB: SSE events are small, and this buffer is
             * allocated (zeroed) per response: at 32 KiB it was resident for
             * every open stream (7 KiB a stream measured in stream10k) */
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, read_stream, r, NULL);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                r->content_type[0] ? r->content_type : "text/event-stream");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        if (r->rec.id[0]) MHD_add_response_header(resp, "X-Pinmeter-Request-Id", r->rec.id);
        enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->resp_status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    return queue_body(c, r->resp_status, body, r->resp_len, r->resp_type, r, r->retry_after);
}

static int is_chat_path(const char *url)
{
    return strcmp(url, "/v0/llm/chat/completions") == 0 ||
           strcmp(url, "/v1/chat/completions") == 0;
}

/* First call of a request: route it and check what can be checked from the
 * headers alone. */
static enum MHD_Result first_call(app_t *app, struct MHD_Connection *c, const char *url,
                                  const char *method, void **con_cls)
{
    const snap_t *sn = app_snap(app);
    if (atomic_load(&app->conns) > sn->cfg->max_connections) {
        /* Over the limit: a cheap, clear refusal rather than a hang. */
        char *s = req_error_json("too many connections: pinmeter is at max_connections; "
                                 "retry shortly", "overloaded", "too_many_connections");
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            s ? strlen(s) : 0, s ? s : (char *)"", s ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
        enum MHD_Result ret = MHD_queue_response(c, 503, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    int post = strcmp(method, "POST") == 0;
    route_t route;
    if (strcmp(url, "/healthz") == 0) {
        if (!get) return queue_error(c, 405, "use GET", "invalid_request_error",
                                     "method_not_allowed", NULL);
        char buf[192];
        int failing = ledger_failing(app->ledger);
        const char *store = budget_store_state(app->budget);
        /* down under "closed": this instance cannot serve (take it out of rotation) */
        int store_down = strcmp(store, "redis-down") == 0 && !sn->cfg->store_down_local;
        snprintf(buf, sizeof buf, "{\"status\":\"%s\",\"ledger_backlog\":%zu,"
                 "\"budget_store\":\"%s\"}",
                 failing ? "ledger_unavailable" : store_down ? "budget_store_unavailable" : "ok",
                 ledger_backlog(app->ledger), store);
        return queue_body(c, failing || store_down ? 503 : 200, strdup(buf), strlen(buf),
                          "application/json", NULL, NULL);
    } else if (is_chat_path(url)) {
        if (!post) return queue_error(c, 405, "use POST", "invalid_request_error",
                                      "method_not_allowed", NULL);
        route = ROUTE_CHAT;
    } else if (strcmp(url, "/v0/llm/models") == 0) {
        if (!get) return queue_error(c, 405, "use GET", "invalid_request_error",
                                     "method_not_allowed", NULL);
        route = ROUTE_MODELS;
    } else if (strcmp(url, "/v0/credits/balance") == 0) {
        if (!get) return queue_error(c, 405, "use GET", "invalid_request_error",
                                     "method_not_allowed", NULL);
        if (!sn->passthrough) return serve_balance(app, sn, c);
        route = ROUTE_BALANCE_PT;    /* passthrough: Pinata answers the caller's key */
    } else {
        return queue_error(c, 404, "no such endpoint", "invalid_request_error",
                           "not_found", NULL);
    }

    req_t *r = req_new(app, c, route);
    if (!r) return MHD_NO;
    *con_cls = r;
    enum MHD_Result ret = MHD_YES;
    if (route == ROUTE_CHAT && authenticate(r, c, &ret) != 0) return ret;
    if (route == ROUTE_BALANCE_PT) {
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_AUTHORIZATION);
        if (auth) r->client_auth = strdup(auth);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    if (declared > r->snap->cfg->max_body) r->too_large = 1;
    else r->body_hint = (size_t)declared;
    return MHD_YES;
}

static int append_body(req_t *r, const char *data, size_t len)
{
    if (r->too_large || r->body_len + len > r->snap->cfg->max_body) {
        r->too_large = 1;
        return 0;
    }
    if (r->body_len + len + 1 > r->body_cap) {
        /* the declared length when there is one (one exact allocation) */
        size_t cap = r->body_cap ? r->body_cap : r->body_hint ? r->body_hint + 1 : 4096;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *nb = realloc(r->body, cap);
        if (!nb) return -1;
        r->body = nb;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    app_t *app = cls;
    req_t *r = *con_cls;
    if (!r) {
        conn_mark(app, c, 1);
        return first_call(app, c, url, method, con_cls);
    }
    if (*upload_size) {
        if (append_body(r, upload, *upload_size) != 0) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&r->mu);
    resp_kind_t kind = r->resp_kind;
    if (kind != RESP_NONE) {
        /* Taken under the lock, queued outside it: libmicrohttpd calls
         * read_stream (which takes r->mu) under its response's lock, so
         * queuing under r->mu would take the two in the other order. */
        char *body = r->resp_body;
        r->resp_body = NULL;
        pthread_mutex_unlock(&r->mu);
        return queue_prepared(r, c, kind, body);
    }
    if (r->dispatched) {           /* woken early: wait for the upstream */
        suspend_locked(r);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    if (r->route == ROUTE_CHAT) return admit_chat(app, r, c);
    pthread_mutex_lock(&r->mu);
    r->refs++;
    r->dispatched = 1;
    suspend_locked(r);
    pthread_mutex_unlock(&r->mu);
    upstream_submit(app->up, r);
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    app_t *app = cls;
    conn_mark(app, c, 0);
    req_t *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->client_gone = 1;
    int abort = r->dispatched && !r->upstream_done && r->adm.stream;
    pthread_mutex_unlock(&r->mu);
    /* A stream whose reader left is cut upstream too; a non-stream request
     * runs to its end so its usage is known and charged exactly. */
    if (abort) upstream_abort(app->up, r);
    req_unref(r);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    app_t *app = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&app->conns, 1);
        conn_rec_t *cr = calloc(1, sizeof *cr);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!cr || !ci) { free(cr); return; }
        cr->fd = ci->connect_fd;
        cr->wait_since_ms = base_wall_ms();
        pthread_mutex_lock(&app->conns_mu);
        cr->next = app->conns_list.next;
        cr->prev = &app->conns_list;
        cr->next->prev = cr;
        app->conns_list.next = cr;
        pthread_mutex_unlock(&app->conns_mu);
        *socket_ctx = cr;
        return;
    }
    atomic_fetch_sub(&app->conns, 1);
    conn_rec_t *cr = *socket_ctx;
    if (!cr) return;
    pthread_mutex_lock(&app->conns_mu);
    cr->prev->next = cr->next;
    cr->next->prev = cr->prev;
    pthread_mutex_unlock(&app->conns_mu);
    free(cr);
    *socket_ctx = NULL;
}

static conn_rec_t *conn_rec_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Marks the connection as inside a request (headers in) or waiting again. */
static void conn_mark(app_t *app, struct MHD_Connection *c, int in_request)
{
    conn_rec_t *cr = conn_rec_of(c);
    if (!cr) return;
    pthread_mutex_lock(&app->conns_mu);
    cr->in_request = in_request;
    cr->wait_since_ms = base_wall_ms();
    if (!in_request) cr->req = NULL;
    pthread_mutex_unlock(&app->conns_mu);
}

/* Remembers the request on its connection, so the sweep can see a client
 * leave while the connection is suspended. */
static void conn_set_req(app_t *app, struct MHD_Connection *c, req_t *r)
{
    conn_rec_t *cr = conn_rec_of(c);
    if (!cr) return;
    pthread_mutex_lock(&app->conns_mu);
    cr->req = r;
    pthread_mutex_unlock(&app->conns_mu);
}

/* Shuts down connections that have waited for a request's headers longer
 * than the limit. shutdown(), not close(): libmicrohttpd sees the end of the
 * socket and closes it itself, so no descriptor is reused under it. */
static void sweep_connections(app_t *app, int64_t limit_ms)
{
    int64_t now = base_wall_ms();
    pthread_mutex_lock(&app->conns_mu);
    for (conn_rec_t *cr = app->conns_list.next; cr != &app->conns_list; cr = cr->next) {
        if (!cr->in_request && !cr->cut && now - cr->wait_since_ms > limit_ms) {
            shutdown(cr->fd, SHUT_RDWR);
            cr->cut = 1;
            continue;
        }
        /* libmicrohttpd does not watch a suspended connection, so a stream's
         * client that leaves before the upstream answers would hold its
         * reservation and the upstream transfer until then. Peek instead. */
        req_t *r = cr->req;
        if (!r || !r->adm.stream) continue;
        pthread_mutex_lock(&r->mu);
        /* only while waiting for the upstream's headers: a stream already
         * relaying notices its client at the next event it sends */
        int waiting = r->suspended && r->dispatched && !r->upstream_done &&
                      !r->aborted_early && r->resp_kind == RESP_NONE;
        pthread_mutex_unlock(&r->mu);
        if (!waiting) continue;
        char b;
        ssize_t n = recv(cr->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            pthread_mutex_lock(&r->mu);
            r->aborted_early = 1;
            pthread_mutex_unlock(&r->mu);
            upstream_abort(app->up, r);
        }
    }
    pthread_mutex_unlock(&app->conns_mu);
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

int server_run(app_t *app, volatile sig_atomic_t *stop, volatile sig_atomic_t *hup,
               void (*reload)(app_t *app))
{
    const config_t *cfg = app_snap(app)->cfg;
    pthread_mutex_init(&app->conns_mu, NULL);
    app->conns_list.next = app->conns_list.prev = &app->conns_list;
    struct addrinfo hints = {0}, *ai = NULL;
    char port[16], host[256];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    snprintf(host, sizeof host, "%s", cfg->listen_host);
    size_t hl = strlen(host);
    if (hl > 1 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        base_log("cannot resolve listen address %s: %s", cfg->listen_host, gai_strerror(gai));
        return -1;
    }
    if (!is_loopback(ai->ai_addr))
        base_log("WARNING: listening on %s, which is not loopback: anyone who can reach it "
                "and holds a key can spend credits", cfg->listen_host);
    /* No thread of its own: the upstream loop runs it (one thread per request
     * path, no hand-over). */
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    app->mhd = MHD_start_daemon(flags, (uint16_t)cfg->listen_port, NULL, NULL,
                                on_request, app,
                                MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, app,
                                MHD_OPTION_NOTIFY_CONNECTION, on_connection, app,
                                /* hard limit above the soft one, so that extra
                                 * clients get a 503 instead of a refused socket */
                                MHD_OPTION_CONNECTION_LIMIT,
                                (unsigned)cfg->max_connections + 256,
                                MHD_OPTION_CONNECTION_TIMEOUT,
                                (unsigned)cfg->client_timeout_s,
                                /* per-connection pool: request headers (up to
                                 * ~11 KiB; more gets 431) and the send buffer.
                                 * libmicrohttpd zeroes it between requests, so
                                 * its size is paid on every request (the 32 KiB
                                 * default was an eighth of pinmeter's
                                 * instructions) and it is resident for every
                                 * open stream (12 KiB: 10,000 streams fit in
                                 * 400 MiB). */
                                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(12 * 1024),
                                MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!app->mhd) {
        base_log("cannot listen on %s:%d (address in use or not permitted)",
                cfg->listen_host, cfg->listen_port);
        return -1;
    }
    upstream_attach(app->up, app->mhd);
    base_log("listening on %s:%d, upstream %s, ledger %s, %s mode", cfg->listen_host,
            cfg->listen_port, cfg->upstream_base, cfg->ledger,
            app_snap(app)->passthrough ? "passthrough" : "team");
    unsigned ticks = 0;
    while (!*stop) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (++ticks % 4 == 0)      /* every 200 ms */
            sweep_connections(app, (int64_t)cfg->client_timeout_s * 1000);
        if (*hup) {
            *hup = 0;
            reload(app);
        }
    }
    /* Drain: stop accepting, let requests in flight finish up to drain_s. */
    base_log("stopping: draining %d request(s) in flight (up to %d s)",
            (int)atomic_load(&app->active), cfg->drain_s);
    upstream_quiesce(app->up);      /* on the loop's thread, which runs the listener */
    int64_t deadline = base_wall_ms() + (int64_t)cfg->drain_s * 1000;
    while (atomic_load(&app->active) > 0 && base_wall_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}
