/* usage_api: GET /v0/usage (see usage_api.h). The handler checks the
 * parameters and the caller's scope on the loop's thread; a job formats the
 * report into memory with report_write, the very code `pinmeter report`
 * prints with, so the two agree row for row and to the nano-credit. */
#include "usage_api.h"
#include "ledger.h"
#include "report.h"
#include "usage_params.h"
#include "utc.h"
#include <stdlib.h>
#include <string.h>

static const char *const PARAMS[] = {"since", "until", "by", "team", "key", "model", "format",
                                     NULL};

typedef struct usage_job {
    req_t *r;
    report_opts_t o;
    char since[UTC_FMT_MAX], until[UTC_FMT_MAX];
} usage_job_t;

static void run_report(void *arg)
{
    usage_job_t *j = arg;
    req_t *r = j->r;
    char err[512] = "";
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = f ? report_write(&j->o, f, err, sizeof err) : REPORT_ERROR;
    if (f && fclose(f) != 0 && rc == 0) rc = REPORT_ERROR;
    if (!f) snprintf(err, sizeof err, "out of memory");
    if (rc == 0) {
        req_answer_later_as(r, 200, buf, len, j->o.format == REPORT_CSV ?
                            "text/csv; charset=utf-8" : "application/json");
    } else {
        free(buf);
        char *e = rc == REPORT_TOO_MANY ? usage_params_error("by", err)
                                        : req_error_json(err, "server_error", "ledger_error");
        if (rc != REPORT_TOO_MANY) base_logl(BASE_ERROR, "usage query failed: %s", err);
        req_answer_later(r, rc == REPORT_TOO_MANY ? 400 : 500, e, NULL);
    }
    req_unref(r);
    free(j);
}

enum MHD_Result usage_api_serve(req_t *r, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    usage_filter_t f;
    if (usage_params_take(r, c, PARAMS, &ret) != 0 ||
        usage_params_filter(r, c, base_wall_ms(), 1, &f, &ret) != 0)
        return ret;
    const char *by = req_arg(r, "by"), *format = req_arg(r, "format");
    int flags = by ? report_parse_by(by) : LEDGER_BY_TEAM | LEDGER_BY_MODEL;
    if (flags < 0)
        return usage_params_bad(c, "by", "wants a comma list of team, key, model, day, hour");
    report_format_t fmt = REPORT_JSON;
    if (format && strcmp(format, "csv") == 0) fmt = REPORT_CSV;
    else if (format && strcmp(format, "json") != 0)
        return usage_params_bad(c, "format", "wants json or csv");
    usage_job_t *j = calloc(1, sizeof *j);
    if (!j) return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
    j->r = r;
    j->o = (report_opts_t){ .since_ms = f.since_ms, .until_ms = f.until_ms, .by = flags,
                            .format = fmt, .team = f.team, .key = f.key, .model = f.model,
                            .open = r->app->ledger, .since_label = j->since,
                            .until_label = j->until, .max_groups = USAGE_API_MAX_GROUPS };
    utc_format(f.since_ms, j->since);
    utc_format(f.until_ms, j->until);
    return usage_params_submit(r, run_report, j);
}
