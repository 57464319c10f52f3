/* topup: the auto top-up settings (see topup.h). The checks are topupcfg's;
 * the call is a libcurl easy transfer on the caller's thread (a job for the
 * endpoints); the audit row goes through the account store (the endpoint)
 * or a short connection of the command line's own. */
#include "topup.h"
#include "jobs.h"
#include "ledger_account.h"
#include "routes.h"
#include "topupcfg.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char NO_JWT[] =
    "the top-up settings need the Pinata JWT: set the environment variable account.jwt_env "
    "names (PINATA_JWT by default) and restart pinmeter";

typedef struct acc { char *p; size_t n; int over; } acc_t;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    acc_t *b = ud;
    size_t len = size * nmemb;
    if (b->n + len > TOPUP_REPLY_MAX) { b->over = 1; return 0; }
    char *np = realloc(b->p, b->n + len + 1);
    if (!np) return 0;
    memcpy(np + b->n, ptr, len);
    b->n += len;
    np[b->n] = '\0';
    b->p = np;
    return len;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    topup_reply_t *out = ud;
    size_t len = size * nmemb;
    if (len > 13 && strncasecmp(ptr, "content-type:", 13) == 0) {
        const char *v = ptr + 13;
        size_t n = len - 13;
        while (n && (*v == ' ' || *v == '\t')) { v++; n--; }
        while (n && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' ')) n--;
        snprintf(out->ctype, sizeof out->ctype, "%.*s", (int)n, v);
    }
    return len;
}

int topup_call(const config_t *cfg, const char *jwt, const char *method, const char *body,
               topup_reply_t *out, char *err, size_t errlen)
{
    char url[1200];
    memset(out, 0, sizeof *out);
    snprintf(url, sizeof url, "%s/v0/credits/topup/config", cfg->upstream_base);
    size_t alen = strlen(jwt) + 32;
    char *auth = malloc(alen);
    CURL *e = curl_easy_init();
    if (!auth || !e) {
        free(auth);
        curl_easy_cleanup(e);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(auth, alen, "Authorization: Bearer %s", jwt);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json");
    acc_t b = {0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, out);
    if (cfg->ca_file[0]) curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)TOPUP_TIMEOUT_S);
    CURLcode res = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    /* the JWT is not left behind in memory we free */
    memset(auth, 0, alen);
    free(auth);
    if (res != CURLE_OK) {
        snprintf(err, errlen, "%s", b.over ? "Pinata's answer is too large"
                                           : curl_easy_strerror(res));
        free(b.p);
        memset(out, 0, sizeof *out);
        return -1;
    }
    if (!b.p && !(b.p = calloc(1, 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    out->body = b.p;
    out->len = b.n;
    return 0;
}

/* The settings before a change, as Pinata gives them (NULL when it does
 * not answer 2xx): for the audit row only. */
static char *settings_before(const config_t *cfg, const char *jwt)
{
    topup_reply_t rep;
    char err[256];
    if (topup_call(cfg, jwt, "GET", NULL, &rep, err, sizeof err) != 0) return NULL;
    if (rep.status >= 200 && rep.status < 300 && memchr(rep.body, '\0', rep.len) == NULL)
        return rep.body;
    free(rep.body);
    return NULL;
}

/* ---- the endpoints ---- */

typedef struct topup_job {
    req_t *r;
    char *body;                       /* PUT: the settings to send; NULL for GET */
} topup_job_t;

static void run_call(void *arg)
{
    topup_job_t *j = arg;
    req_t *r = j->r;
    app_t *app = r->app;
    const config_t *cfg = r->snap->cfg;
    char *old = j->body ? settings_before(cfg, app->jwt) : NULL;
    topup_reply_t rep;
    char err[256];
    if (topup_call(cfg, app->jwt, j->body ? "PUT" : "GET", j->body, &rep, err,
                   sizeof err) != 0) {
        base_logl(BASE_WARN, "top-up settings: no answer from Pinata (%s)", err);
        char msg[400];
        snprintf(msg, sizeof msg, "Pinata did not answer the top-up settings request (%s)", err);
        req_answer_later(r, 502, req_error_json(msg, "upstream_error", "upstream_unreachable"),
                         NULL);
    } else {
        if (j->body && rep.status >= 200 && rep.status < 300) {
            base_log("top-up settings changed through the API: %s (Pinata answered %ld)",
                     j->body, rep.status);
            if (!app->acctdb ||
                ledger_account_topup_change(app->acctdb, base_wall_ms(), old, j->body, "api") != 0)
                base_logl(BASE_ERROR, "top-up settings: the change is made but could not be "
                          "recorded in the ledger's topup_changes");
        } else if (j->body) {
            base_logl(BASE_WARN, "top-up settings: Pinata refused a change (HTTP %ld)",
                      rep.status);
        }
        req_answer_later_as(r, (int)rep.status, rep.body, rep.len,
                            rep.ctype[0] ? rep.ctype : "application/json");
    }
    free(old);
    free(j->body);
    free(j);
    req_unref(r);
}

/* An OpenAI-style 400 naming the field ("param"), code invalid_request. */
static enum MHD_Result bad_field(struct MHD_Connection *c, const char *field, const char *why)
{
    char msg[512];
    if (*field) snprintf(msg, sizeof msg, "%s: %s", field, why);
    else snprintf(msg, sizeof msg, "%s", why);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
    cJSON_AddStringToObject(e, "code", "invalid_request");
    if (*field) cJSON_AddStringToObject(e, "param", field);
    else cJSON_AddNullToObject(e, "param");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return req_queue_body(c, 400, s, s ? strlen(s) : 0, "application/json", NULL, NULL);
}

enum MHD_Result topup_serve(req_t *r, struct MHD_Connection *c)
{
    if (!r->app->jwt)
        return req_queue_error(c, 503, NO_JWT, "account_unavailable", "account_unavailable",
                               NULL);
    topup_job_t *j = calloc(1, sizeof *j);
    if (!j) return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
    j->r = r;
    if (r->method == ROUTE_PUT) {
        topupcfg_t cfg;
        char field[64], why[300];
        if (r->too_large || topupcfg_parse(r->body, r->body_len, &cfg, field, sizeof field, why,
                                           sizeof why) != 0) {
            free(j);
            if (r->too_large) return bad_field(c, "", "the body is too large");
            return bad_field(c, field, why);
        }
        if (!(j->body = topupcfg_json(&cfg))) {
            free(j);
            return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory",
                                   NULL);
        }
    }
    req_hold(r);
    if (jobs_submit(r->app->jobs, run_call, j) != 0) {
        free(j->body);
        free(j);
        req_answer_later(r, 503, req_error_json("pinmeter is stopping or out of memory; try "
                                                "again", "server_error", "unavailable"), NULL);
        req_unref(r);
    }
    return MHD_YES;
}

/* ---- pinmeter topup ---- */

int topup_cli(const config_t *cfg, const char *sub, const char *threshold, const char *amount,
              FILE *out, FILE *err)
{
    int set = strcmp(sub, "set") == 0, disable = strcmp(sub, "disable") == 0;
    if (!set && !disable && strcmp(sub, "show") != 0) {
        fprintf(err, "pinmeter: topup wants show, set or disable\n");
        return 1;
    }
    if (!set && (threshold || amount)) {
        fprintf(err, "pinmeter: --threshold and --amount go with topup set\n");
        return 1;
    }
    char *body = NULL;
    if (set || disable) {
        topupcfg_t c;
        char field[64], why[300];
        if (topupcfg_from_args(disable ? "null" : threshold, disable ? "null" : amount, &c,
                               field, sizeof field, why, sizeof why) != 0) {
            fprintf(err, "pinmeter: %s%s%s (nothing was sent to Pinata)\n", field,
                    *field ? ": " : "", why);
            return 1;
        }
        if (!(body = topupcfg_json(&c))) {
            fprintf(err, "pinmeter: out of memory\n");
            return 1;
        }
    }
    const char *jwt = cfg->jwt_env[0] ? getenv(cfg->jwt_env) : NULL;
    if (!jwt || !*jwt) {
        fprintf(err, "pinmeter: topup needs the Pinata JWT in the environment variable %s "
                "(account.jwt_env), which is not set; nothing was sent\n", cfg->jwt_env);
        free(body);
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(err, "pinmeter: cannot start the HTTP client\n");
        free(body);
        return 1;
    }
    char *old = body ? settings_before(cfg, jwt) : NULL;
    topup_reply_t rep;
    char e[256];
    int rc = 1;
    if (topup_call(cfg, jwt, body ? "PUT" : "GET", body, &rep, e,
                   sizeof e) != 0) {
        fprintf(err, "pinmeter: Pinata did not answer (%s)\n", e);
        goto done;
    }
    int ok = rep.status >= 200 && rep.status < 300;
    FILE *to = ok ? out : err;
    if (!ok) fprintf(err, "pinmeter: Pinata answered HTTP %ld:\n", rep.status);
    fwrite(rep.body, 1, rep.len, to);
    if (rep.len && rep.body[rep.len - 1] != '\n') fputc('\n', to);
    if (ok && body &&
        ledger_account_topup_change_at(cfg->ledger, base_wall_ms(), old, body, "cli", e,
                                    sizeof e) != 0)
        fprintf(err, "pinmeter: the change is made, but not recorded in the ledger (%s)\n", e);
    free(rep.body);
    rc = ok ? 0 : 1;
done:
    curl_global_cleanup();
    free(old);
    free(body);
    return rc;
}
