/* usage_params: the usage endpoints' shared parameters and scope (see
 * usage_params.h). */
#include "usage_params.h"
#include "jobs.h"
#include "utc.h"
#include <stdlib.h>
#include <string.h>

char *usage_params_error(const char *param, const char *why)
{
    cJSON *root = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(root, "error");
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s", param, why);
    cJSON_AddStringToObject(err, "message", msg);
    cJSON_AddStringToObject(err, "type", "invalid_request_error");
    cJSON_AddStringToObject(err, "code", "invalid_parameter");
    cJSON_AddStringToObject(err, "param", param);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

enum MHD_Result usage_params_bad(struct MHD_Connection *c, const char *param, const char *why)
{
    char *s = usage_params_error(param, why);
    return req_queue_body(c, 400, s, s ? strlen(s) : 0, "application/json", NULL, NULL);
}

int usage_params_take(req_t *r, struct MHD_Connection *c, const char *const *names,
                      enum MHD_Result *ret)
{
    if (req_take_query(r, c) != 0) {
        *ret = req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
        return -1;
    }
    for (size_t i = 0; i < r->n_query; i++) {
        const char *name = r->query[2 * i];
        size_t k = 0;
        while (names[k] && strcmp(names[k], name) != 0) k++;
        if (names[k]) continue;
        char why[256] = "unknown parameter (this endpoint takes ";
        for (size_t n = 0; names[n]; n++) {
            size_t len = strlen(why);
            snprintf(why + len, sizeof why - len, "%s%s", n ? ", " : "", names[n]);
        }
        size_t len = strlen(why);
        snprintf(why + len, sizeof why - len, "%s)", names[0] ? "" : "none");
        char param[64];
        snprintf(param, sizeof param, "%s", name);
        *ret = usage_params_bad(c, param, why);
        return -1;
    }
    return 0;
}

const char *usage_params_own_team(const req_t *r)
{
    return r->admin ? NULL : r->rec.team;
}

/* A filter's value: NULL when absent; -1 (answered) when present but empty. */
static int filter_arg(const req_t *r, struct MHD_Connection *c, const char *name,
                      const char **out, enum MHD_Result *ret)
{
    const char *v = req_arg(r, name);
    if (v && !*v) {
        *ret = usage_params_bad(c, name, "must not be empty (leave it out for all)");
        return -1;
    }
    *out = v;
    return 0;
}

static const char *TIME_FORMS =
    "wants a date YYYY-MM-DD (a whole UTC day) or an RFC 3339 UTC time like "
    "2026-12-01T10:00:00Z";

int usage_params_filter(req_t *r, struct MHD_Connection *c, int64_t now_ms, int month_default,
                        usage_filter_t *f, enum MHD_Result *ret)
{
    memset(f, 0, sizeof *f);
    const char *since = req_arg(r, "since"), *until = req_arg(r, "until");
    if (since && utc_parse_bound(since, 0, &f->since_ms) != 0) {
        *ret = usage_params_bad(c, "since", TIME_FORMS);
        return -1;
    }
    if (until && utc_parse_bound(until, 1, &f->until_ms) != 0) {
        *ret = usage_params_bad(c, "until", TIME_FORMS);
        return -1;
    }
    if (!month_default) {
        if (!since) f->since_ms = INT64_MIN;
        if (!until) f->until_ms = INT64_MAX;
    } else {
        if (!since) f->since_ms = until ? utc_month_start(f->until_ms - 1) : utc_month_start(now_ms);
        if (!until) f->until_ms = utc_next_month(now_ms);   /* a since alone: up to now */
    }
    if (f->since_ms >= f->until_ms) {
        *ret = usage_params_bad(c, until ? "until" : "since", "the range [since, until) is "
                                "empty: until must be after since");
        return -1;
    }
    if (filter_arg(r, c, "team", &f->team, ret) != 0 ||
        filter_arg(r, c, "key", &f->key, ret) != 0 ||
        filter_arg(r, c, "model", &f->model, ret) != 0)
        return -1;
    const char *own = usage_params_own_team(r);
    if (own) {
        if (f->team && strcmp(f->team, own) != 0) {
            *ret = req_queue_error(c, 403, "a team key sees only its own team's usage",
                                   "permission_error", "team_not_allowed", NULL);
            return -1;
        }
        f->team = own;
    }
    return 0;
}

enum MHD_Result usage_params_submit(req_t *r, void (*fn)(void *), void *arg)
{
    req_hold(r);
    if (jobs_submit(r->app->jobs, fn, arg) == 0) return MHD_YES;
    free(arg);
    req_answer_later(r, 503, req_error_json("pinmeter is stopping or out of memory; try "
                                            "again", "server_error", "unavailable"), NULL);
    req_unref(r);
    return MHD_YES;
}
