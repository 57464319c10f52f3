/* reconcile_api: GET /v0/account/reconcile (see reconcile_api.h). The handler
 * checks since and until on the loop's thread (the usage endpoints' rules
 * and 400s); a job writes the reconciliation into memory with
 * reconcile_write, the code `pinmeter reconcile` prints with. */
#include "reconcile_api.h"
#include "reconcile.h"
#include "usage_params.h"

#include <stdlib.h>
#include <string.h>

#define MAX_LINES 100000              /* intervals in one answer; past it, 400 */

static const char *const PARAMS[] = {"since", "until", NULL};

typedef struct reconcile_job {
    req_t *r;
    reconcile_opts_t o;
} reconcile_job_t;

static void run(void *arg)
{
    reconcile_job_t *j = arg;
    req_t *r = j->r;
    char err[512] = "";
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc = f ? reconcile_write(&j->o, f, err, sizeof err) : RECONCILE_ERROR;
    if (f && fclose(f) != 0 && rc == 0) rc = RECONCILE_ERROR;
    if (!f) snprintf(err, sizeof err, "out of memory");
    if (rc == 0) {
        req_answer_later_as(r, 200, buf, len, "application/json");
    } else {
        free(buf);
        if (rc != RECONCILE_TOO_MANY) base_logl(BASE_ERROR, "reconciliation failed: %s", err);
        req_answer_later(r, rc == RECONCILE_TOO_MANY ? 400 : 500,
                         rc == RECONCILE_TOO_MANY ? usage_params_error("since", err)
                                                  : req_error_json(err, "server_error",
                                                                   "ledger_error"), NULL);
    }
    req_unref(r);
    free(j);
}

enum MHD_Result reconcile_api_serve(req_t *r, struct MHD_Connection *c)
{
    enum MHD_Result ret;
    usage_filter_t f;
    if (usage_params_take(r, c, PARAMS, &ret) != 0 ||
        usage_params_filter(r, c, base_wall_ms(), 0, &f, &ret) != 0)
        return ret;
    reconcile_job_t *j = calloc(1, sizeof *j);
    if (!j) return req_queue_error(c, 500, "out of memory", "server_error", "out_of_memory", NULL);
    j->r = r;
    j->o = (reconcile_opts_t){ .ledger = r->app->ledger, .since_ms = f.since_ms,
                               .until_ms = f.until_ms, .has_since = req_arg(r, "since") != NULL,
                               .has_until = req_arg(r, "until") != NULL,
                               .lookback_ms = reconcile_lookback_ms(r->snap->cfg->timeout_s),
                               .format = RECONCILE_JSON, .max_lines = MAX_LINES };
    return usage_params_submit(r, run, j);
}
