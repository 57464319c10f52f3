/* reqlog: the request log endpoints and their cursor (see reqlog.h). The
 * handlers check the parameters and the scope on the loop's thread; the
 * jobs read a page (ledger_log, which says where the next one starts) or one
 * row, and format it as JSON: times RFC 3339 UTC with milliseconds, credits
 * with 9 decimals. */
#include "reqlog.h"
#include "ledger.h"
#include "usage_params.h"
#include "utc.h"
#include <stdlib.h>
#include <string.h>

static const char *const PARAMS[] = {"since", "until", "team", "key", "model", "state",
                                     "limit", "cursor", NULL};

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int reqlog_cursor_encode(int64_t started_ms, const char *id, char *out)
{
    char raw[96];
    size_t idn = strlen(id);
    if (idn == 0 || idn >= LEDGER_ID_MAX) return -1;
    int n = snprintf(raw, sizeof raw, "1:%lld:%s", (long long)started_ms, id);
    if (n < 0 || (size_t)n >= sizeof raw || ((size_t)n + 2) / 3 * 4 >= REQLOG_CURSOR_MAX)
        return -1;
    size_t o = 0;
    for (int i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16;
        if (i + 1 < n) v |= (unsigned char)raw[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)raw[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        if (i + 1 < n) out[o++] = B64[v >> 6 & 63];
        if (i + 2 < n) out[o++] = B64[v & 63];
    }
    out[o] = '\0';
    return 0;
}

static int b64_val(char c)
{
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

int reqlog_cursor_decode(const char *s, int64_t *started_ms, char *id, size_t idlen)
{
    size_t n = strlen(s);
    if (n == 0 || n >= REQLOG_CURSOR_MAX || n % 4 == 1) return -1;
    char raw[REQLOG_CURSOR_MAX];
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int k = n - i < 4 ? (int)(n - i) : 4;
        unsigned v = 0;
        for (int j = 0; j < 4; j++) {
            int d = j < k ? b64_val(s[i + j]) : 0;
            if (d < 0) return -1;
            v = v << 6 | (unsigned)d;
        }
        raw[o++] = (char)(v >> 16);
        if (k > 2) raw[o++] = (char)(v >> 8 & 255);
        if (k > 3) raw[o++] = (char)(v & 255);
    }
    raw[o] = '\0';
    if (strlen(raw) != o || strncmp(raw, "1:", 2) != 0) return -1;
    const char *p = raw + 2;
    int neg = *p == '-';
    if (neg) p++;
    if (*p < '0' || *p > '9') return -1;
    int64_t ms = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (ms > (INT64_MAX - (*p - '0')) / 10) return -1;
        ms = ms * 10 + (*p - '0');
    }
    if (*p++ != ':') return -1;
    size_t idn = strlen(p);
    if (idn == 0 || idn >= LEDGER_ID_MAX || idn >= idlen) return -1;
    for (const char *q = p; *q; q++)
        if ((unsigned char)*q < 0x21 || *q == 0x7f) return -1;
    /* the same cursor again, byte for byte: one position has one spelling */
    char again[REQLOG_CURSOR_MAX];
    if (reqlog_cursor_encode(neg ? -ms : ms, p, again) != 0 || strcmp(again, s) != 0) return -1;
    *started_ms = neg ? -ms : ms;
    memcpy(id, p, idn + 1);
    return 0;
}

/* One row as the log's JSON object. */
static cJSON *row_json(const ledger_row_t *w)
{
    char t[UTC_FMT_MAX];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", w->id);
    cJSON_AddStringToObject(o, "started_at", utc_format(w->started_ms, t));
    if (w->ended_ms >= 0) cJSON_AddStringToObject(o, "ended_at", utc_format(w->ended_ms, t));
    else cJSON_AddNullToObject(o, "ended_at");
    cJSON_AddStringToObject(o, "team", w->team);
    cJSON_AddStringToObject(o, "key", w->key_id);
    cJSON_AddStringToObject(o, "model", w->model);
    cJSON_AddBoolToObject(o, "stream", w->stream);
    if (w->status >= 0) cJSON_AddNumberToObject(o, "status", w->status);
    else cJSON_AddNullToObject(o, "status");
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)w->prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)w->completion);
    cJSON_AddNumberToObject(o, "cached_tokens", (double)w->cached);
    req_add_credits(o, "reserved", w->reserved);
    req_add_credits(o, "charged", w->charged);
    /* the prices it was charged at, credits per 1M tokens (null: a row from
     * before they were recorded) */
    const char *pn[3] = {"price_input", "price_output", "price_cache_read"};
    const nanos_t pv[3] = {w->price_input, w->price_output, w->price_cache_read};
    for (int k = 0; k < 3; k++) {
        if (pv[k] >= 0) req_add_credits(o, pn[k], pv[k]);
        else cJSON_AddNullToObject(o, pn[k]);
    }
    cJSON_AddStringToObject(o, "state", w->state);
    if (w->upstream_id) cJSON_AddStringToObject(o, "upstream_id", w->upstream_id);
    else cJSON_AddNullToObject(o, "upstream_id");
    if (w->latency_ms >= 0) cJSON_AddNumberToObject(o, "latency_ms", (double)w->latency_ms);
    else cJSON_AddNullToObject(o, "latency_ms");
    return o;
}

typedef struct log_job {
    req_t *r;
    ledger_log_query_t q;             /* strings borrowed from r's query */
    char after_id[LEDGER_ID_MAX];
    char *one;                        /* {id}: the id asked for */
    cJSON *rows;                      /* filled by the row callback */
    int hidden;                       /* {id}: the row is another team's */
} log_job_t;

static int page_row(void *ud, const ledger_row_t *w)
{
    log_job_t *j = ud;
    cJSON_AddItemToArray(j->rows, row_json(w));
    return 0;
}

static void answer_json(req_t *r, int status, cJSON *root)
{
    char *s = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!s) s = req_error_json("out of memory", "server_error", "out_of_memory");
    req_answer_later_as(r, s ? status : 500, s, s ? strlen(s) : 0, "application/json");
}

static void db_failed(req_t *r, const char *err)
{
    base_logl(BASE_ERROR, "request log query failed: %s", err);
    req_answer_later(r, 500, req_error_json(err, "server_error", "ledger_error"), NULL);
}

static void run_page(void *arg)
{
    log_job_t *j = arg;
    char err[512] = "";
    cJSON *root = cJSON_CreateObject();
    j->rows = cJSON_AddArrayToObject(root, "requests");
    ledger_log_next_t next;
    if (ledger_log(j->r->app->ledger, &j->q, page_row, j, &next, err, sizeof err) != 0) {
        cJSON_Delete(root);
        db_failed(j->r, err);
    } else {
        char cur[REQLOG_CURSOR_MAX];
        if (next.more && reqlog_cursor_encode(next.after_ms, next.after_id, cur) == 0)
            cJSON_AddStringToObject(root, "next_cursor", cur);
        else
            cJSON_AddNullToObject(root, "next_cursor");
        answer_json(j->r, 200, root);
    }
    req_unref(j->r);
    free(j);
}

enum MHD_Result reqlog_serve(req_t *r, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    usage_filter_t f;
    if (usage_params_take(r, c, PARAMS, &ret) != 0 ||
        usage_params_filter(r, c, base_wall_ms(), 0, &f, &ret) != 0)
        return ret;
    log_job_t *j = calloc(1, sizeof *j);
    if (!j) return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
    j->r = r;
    j->q = (ledger_log_query_t){ .since_ms = f.since_ms, .until_ms = f.until_ms,
                                 .team = f.team, .key = f.key, .model = f.model,
                                 .limit = REQLOG_LIMIT_DEFAULT };
    const char *state = req_arg(r, "state"), *limit = req_arg(r, "limit");
    const char *cursor = req_arg(r, "cursor");
    const char *bad = NULL, *why = NULL;
    if (state && ledger_state_parse(state) < 0) {
        bad = "state";
        why = "wants inflight, settled, estimated, failed or interrupted";
    }
    j->q.state = state;
    if (limit) {
        long v = 0;
        size_t k = 0;
        for (; limit[k] >= '0' && limit[k] <= '9' && v <= REQLOG_LIMIT_MAX; k++)
            v = v * 10 + (limit[k] - '0');
        if (k == 0 || limit[k] || v < 1 || v > REQLOG_LIMIT_MAX) {
            bad = "limit";
            why = "wants a whole number from 1 to 1000";
        }
        j->q.limit = (int)v;
    }
    if (cursor) {
        if (reqlog_cursor_decode(cursor, &j->q.after_ms, j->after_id, sizeof j->after_id) != 0) {
            bad = "cursor";
            why = "is not a next_cursor this endpoint gave";
        }
        j->q.has_after = 1;
        j->q.after_id = j->after_id;
    }
    if (bad) {
        free(j);
        return usage_params_bad(c, bad, why);
    }
    return usage_params_submit(r, run_page, j);
}

static int one_row(void *ud, const ledger_row_t *w)
{
    log_job_t *j = ud;
    const char *own = usage_params_own_team(j->r);
    if (own && strcmp(own, w->team) != 0) j->hidden = 1;
    else j->rows = row_json(w);
    return 1;
}

static void run_one(void *arg)
{
    log_job_t *j = arg;
    char err[512] = "";
    int found = ledger_lookup(j->r->app->ledger, j->one, one_row, j, err, sizeof err);
    if (found < 0) db_failed(j->r, err);
    else if (found == 0 || j->hidden || !j->rows)
        req_answer_later(j->r, 404, req_error_json("no request with that id", "invalid_request_error",
                                                   "not_found"), NULL);
    else
        answer_json(j->r, 200, j->rows);
    req_unref(j->r);
    free(j);
}

enum MHD_Result reqlog_serve_one(req_t *r, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    static const char *const none[] = {NULL};
    if (usage_params_take(r, c, none, &ret) != 0) return ret;
    const char *id = r->path_rest ? r->path_rest : "";
    size_t n = strlen(id);
    if (n == 0 || n >= LEDGER_ID_MAX || strchr(id, '/'))
        return req_queue_error(c, 404, "no request with that id", "invalid_request_error",
                               "not_found", NULL);
    log_job_t *j = calloc(1, sizeof *j);
    if (!j) return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
    j->r = r;
    j->one = r->path_rest;            /* r's, alive while the job holds r */
    return usage_params_submit(r, run_one, j);
}
