/* req: a request's life (see req.h) — creation and references, suspend and
 * resume through the loop, the buffered and error answers, and the stream's
 * hand-over buffer with the content reader libmicrohttpd pulls it through. */
#include "req.h"
#include "loop.h"
#include <stdlib.h>
#include <string.h>

req_t *req_new(app_t *app, worker_t *w, struct MHD_Connection *c)
{
    req_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->app = app;
    r->w = w;
    r->snap = app_snap(app);
    r->conn = c;
    r->refs = 1;
    r->team = -1;
    r->key_slot = -1;
    r->t_start_ms = base_wall_ms();
    pthread_mutex_init(&r->mu, NULL);
    atomic_fetch_add(&app->active, 1);
    return r;
}

void req_ref(req_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    pthread_mutex_unlock(&r->mu);
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
    free(r->path_rest);
    for (size_t i = 0; i < 2 * r->n_query; i++) free(r->query[i]);
    free(r->query);
    free(r->ubody);
    free(r->out);
    free(r->resp_body);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

void req_suspend_locked(req_t *r)
{
    r->suspended = 1;
    MHD_suspend_connection(r->conn);
    loop_suspended(r->w->loop);
}

void req_resume_locked(req_t *r)
{
    if (r->suspended && !r->client_gone) {
        r->suspended = 0;
        MHD_resume_connection(r->conn);
        /* libmicrohttpd without its own thread acts on it at its next run */
        loop_resumed(r->w->loop);
    }
}

void req_hold(req_t *r)
{
    pthread_mutex_lock(&r->mu);
    r->refs++;
    r->dispatched = 1;
    req_suspend_locked(r);
    pthread_mutex_unlock(&r->mu);
}

typedef struct take { req_t *r; int oom; } take_t;

static enum MHD_Result take_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    take_t *t = cls;
    req_t *r = t->r;
    if (req_arg(r, key)) return MHD_YES;               /* the first value counts */
    char **q = realloc(r->query, (r->n_query + 1) * 2 * sizeof *q);
    if (!q) { t->oom = 1; return MHD_NO; }
    r->query = q;
    q[2 * r->n_query] = strdup(key);
    q[2 * r->n_query + 1] = strdup(value ? value : "");
    r->n_query++;
    if (!q[2 * r->n_query - 2] || !q[2 * r->n_query - 1]) { t->oom = 1; return MHD_NO; }
    return MHD_YES;
}

int req_take_query(req_t *r, struct MHD_Connection *c)
{
    take_t t = { r, 0 };
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, take_arg, &t);
    return t.oom ? -1 : 0;
}

const char *req_arg(const req_t *r, const char *name)
{
    for (size_t i = 0; i < r->n_query; i++)
        if (r->query[2 * i] && strcmp(r->query[2 * i], name) == 0) return r->query[2 * i + 1];
    return NULL;
}

int req_append_body(req_t *r, const char *data, size_t len)
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

void req_add_credits(cJSON *obj, const char *name, nanos_t v)
{
    char buf[MONEY_FMT_MAX];
    cJSON_AddItemToObject(obj, name, cJSON_CreateRaw(money_fmt(v, buf)));
}

/* OpenAI's rate-limit headers, for the tighter of the key's and the team's
 * limits (remaining counts this request as taken when it was admitted). */
static void rate_headers(struct MHD_Response *resp, const ratelim_verdict_t *v)
{
    char n[32], t[24];
    if (v->limit_requests) {
        snprintf(n, sizeof n, "%lld", (long long)v->limit_requests);
        MHD_add_response_header(resp, "x-ratelimit-limit-requests", n);
        snprintf(n, sizeof n, "%lld", (long long)v->remaining_requests);
        MHD_add_response_header(resp, "x-ratelimit-remaining-requests", n);
        MHD_add_response_header(resp, "x-ratelimit-reset-requests",
                                ratelim_reset_fmt(v->reset_requests_ms, t));
    }
    if (v->limit_tokens) {
        snprintf(n, sizeof n, "%lld", (long long)v->limit_tokens);
        MHD_add_response_header(resp, "x-ratelimit-limit-tokens", n);
        snprintf(n, sizeof n, "%lld", (long long)v->remaining_tokens);
        MHD_add_response_header(resp, "x-ratelimit-remaining-tokens", n);
        MHD_add_response_header(resp, "x-ratelimit-reset-tokens",
                                ratelim_reset_fmt(v->reset_tokens_ms, t));
    }
}

/* The metering headers of a metered request's answer: the rate limits when
 * any applies; for an admitted one also its id, what was reserved, the
 * team's available after the hold, a clamp, and (buffered answers) the
 * charge. */
static void metering_headers(struct MHD_Response *resp, const req_t *r, int buffered)
{
    char buf[MONEY_FMT_MAX];
    if (r->chat && r->rate_known) rate_headers(resp, &r->rate_hdr);
    if (r->chat && r->retry_after_ms > 0) {
        snprintf(buf, sizeof buf, "%lld", (long long)r->retry_after_ms);
        MHD_add_response_header(resp, "retry-after-ms", buf);
    }
    if (!r->rec.id[0]) return;
    MHD_add_response_header(resp, "X-Pinmeter-Request-Id", r->rec.id);
    if (!r->chat) return;
    if (r->clamped) {
        snprintf(buf, sizeof buf, "%lld", (long long)r->clamped);
        MHD_add_response_header(resp, "X-Pinmeter-Clamped", buf);
    }
    MHD_add_response_header(resp, "X-Pinmeter-Reserved", money_fmt(r->rec.reserved, buf));
    if (r->hold.team_available >= 0)
        MHD_add_response_header(resp, "X-Pinmeter-Team-Available",
                                money_fmt(r->hold.team_available, buf));
    if (buffered && r->charged_known)
        MHD_add_response_header(resp, "X-Pinmeter-Cost", money_fmt(r->rec.charged, buf));
}

enum MHD_Result req_queue_body(struct MHD_Connection *c, int status, char *body, size_t len,
                               const char *ctype, const req_t *r, const char *retry_after)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ?
                                        MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) { free(body); return MHD_NO; }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            ctype && *ctype ? ctype : "application/json");
    if (r) metering_headers(resp, r, 1);
    if (retry_after && *retry_after)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, retry_after);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

enum MHD_Result req_queue_error(struct MHD_Connection *c, int status, const char *msg,
                                const char *type, const char *code, const req_t *r)
{
    char *s = req_error_json(msg, type, code);
    return req_queue_body(c, status, s, s ? strlen(s) : 0, "application/json", r, NULL);
}

/* Sets a buffered answer on a suspended request and wakes its connection. */
static void answer_later(req_t *r, int status, char *body, size_t len, const char *ctype,
                         const char *retry_after)
{
    pthread_mutex_lock(&r->mu);
    r->rec.id[0] = '\0';
    r->resp_status = status;
    r->resp_body = body;
    r->resp_len = len;
    snprintf(r->resp_type, sizeof r->resp_type, "%s", ctype);
    snprintf(r->retry_after, sizeof r->retry_after, "%s", retry_after ? retry_after : "");
    r->upstream_done = 1;
    r->resp_kind = RESP_BUFFER;
    req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
}

void req_answer_later(req_t *r, int status, char *body, const char *retry_after)
{
    answer_later(r, status, body, body ? strlen(body) : 0, "application/json", retry_after);
}

void req_answer_later_as(req_t *r, int status, char *body, size_t len, const char *ctype)
{
    answer_later(r, status, body, len, ctype, NULL);
}

void req_answer_upstream(req_t *r, int status, char *body, size_t len, const char *ctype)
{
    pthread_mutex_lock(&r->mu);
    r->upstream_done = 1;
    if (r->resp_kind == RESP_NONE) {
        r->resp_kind = RESP_BUFFER;
        r->resp_status = status;
        r->resp_body = body;
        r->resp_len = len;
        snprintf(r->resp_type, sizeof r->resp_type, "%s", ctype);
        body = NULL;
    }
    req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
    free(body);
}

void req_start_stream(req_t *r)
{
    /* The connection is resumed with the first event (or the end), so the
     * client's headers and first event leave in one wake-up of the listener
     * rather than two. */
    pthread_mutex_lock(&r->mu);
    r->resp_kind = RESP_STREAM;
    r->resp_status = 200;
    pthread_mutex_unlock(&r->mu);
}

int req_out_append_locked(req_t *r, const char *p, size_t len)
{
    if (r->out_off > 0 && r->out_len + len > r->out_cap) {
        memmove(r->out, r->out + r->out_off, r->out_len - r->out_off);
        r->out_len -= r->out_off;
        r->out_off = 0;
    }
    if (r->out_len + len > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 4 * 1024;   /* SSE events are small */
        while (cap < r->out_len + len) cap *= 2;
        char *n = realloc(r->out, cap);
        if (!n) return -1;
        r->out = n;
        r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, p, len);
    r->out_len += len;
    return 0;
}

/* The loop's thread, from libmicrohttpd: relays stream bytes; suspends when
 * there are none yet. Below the low mark a paused transfer is resumed. */
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
        if (r->paused && !r->unpause_queued && r->out_len - r->out_off < REQ_OUT_LOW_WATER) {
            r->unpause_queued = 1;
            unpause = 1;
        }
    } else if (r->upstream_done) {
        n = r->stream_error ? MHD_CONTENT_READER_END_WITH_ERROR
                            : MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        req_suspend_locked(r);
        n = 0;
    }
    pthread_mutex_unlock(&r->mu);
    if (unpause) {
        req_ref(r);                /* the queued unpause's */
        if (loop_post(r->w->loop, LOOP_UNPAUSE, r) != 0) req_unref(r);
    }
    return n;
}

enum MHD_Result req_queue_prepared(req_t *r, struct MHD_Connection *c, resp_kind_t kind,
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
        metering_headers(resp, r, 0);
        enum MHD_Result ret = MHD_queue_response(c, (unsigned)r->resp_status, resp);
        MHD_destroy_response(resp);
        return ret;
    }
    return req_queue_body(c, r->resp_status, body, r->resp_len, r->resp_type, r, r->retry_after);
}

void req_log(const req_t *r, base_level_t level)
{
    const ledger_rec_t *c = &r->rec;
    char ch[MONEY_FMT_MAX], rs[MONEY_FMT_MAX], st[BASE_TIME_MAX], en[BASE_TIME_MAX];
    char status[16], pt[24], ct[24], kt[24], lat[24], msg[1024];
    money_fmt(c->charged, ch);
    snprintf(msg, sizeof msg, "%s team=%s key=%s model=%s stream=%d status=%d state=%s "
             "charged=%s ms=%lld", c->id, c->team, c->key_id, c->model, c->stream, c->status,
             ledger_state_name(c->state), ch, (long long)c->latency_ms);
    snprintf(status, sizeof status, "%d", c->status);
    snprintf(pt, sizeof pt, "%lld", (long long)c->prompt);
    snprintf(ct, sizeof ct, "%lld", (long long)c->completion);
    snprintf(kt, sizeof kt, "%lld", (long long)c->cached);
    snprintf(lat, sizeof lat, "%lld", (long long)c->latency_ms);
    const base_field_t f[] = {
        { "id", c->id, 0 }, { "started_at", base_time_fmt(c->started_ms, st), 0 },
        { "ended_at", base_time_fmt(c->ended_ms, en), 0 }, { "team", c->team, 0 },
        { "key", c->key_id, 0 }, { "model", c->model, 0 }, { "stream", c->stream ? "true" : "false", 1 },
        { "status", status, 1 }, { "prompt_tokens", pt, 1 }, { "completion_tokens", ct, 1 },
        { "cached_tokens", kt, 1 }, { "reserved", money_fmt(c->reserved, rs), 1 },
        { "charged", ch, 1 }, { "state", ledger_state_name(c->state), 0 },
        { "upstream_id", c->upstream_id[0] ? c->upstream_id : NULL, 0 },
        { "latency_ms", lat, 1 },
    };
    base_log_fields(level, msg, f, (int)(sizeof f / sizeof f[0]));
}
