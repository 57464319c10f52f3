/* usage_params: what the three usage endpoints (GET /v0/usage,
 * /v0/usage/requests and /v0/usage/requests/{id}) share — checking and
 * parsing their query parameters, the caller's scope (the admin token sees
 * every team, a team key only its own: a team= naming another team is 403),
 * and the error answers, whose 400s name the parameter. Runs on the loop's
 * thread, before the endpoint's job (usage_api.c, reqlog.c) reads the ledger. */
#ifndef PINMETER_USAGE_PARAMS_H
#define PINMETER_USAGE_PARAMS_H
#include <stdint.h>
#include "req.h"

/* The range and filters a usage query reads, once scoped. Strings are
 * borrowed from the request (valid until its last req_unref); NULL = any. */
typedef struct usage_filter {
    int64_t since_ms, until_ms;          /* [since, until) */
    const char *team, *key, *model;
} usage_filter_t;

/* An OpenAI-style 400 whose error also carries "param": param (malloc'd
 * JSON). why is the message; it never echoes the value. */
char *usage_params_error(const char *param, const char *why);
/* Queues that 400. */
enum MHD_Result usage_params_bad(struct MHD_Connection *c, const char *param, const char *why);

/* Copies r's query arguments and checks each one's name is in names (a
 * NULL-terminated list). 0, or -1 with an answer queued in *ret (400 naming
 * the first unknown parameter, or 500). */
int usage_params_take(req_t *r, struct MHD_Connection *c, const char *const *names,
                      enum MHD_Result *ret);

/* Parses since and until (a date or an RFC 3339 UTC instant; see utc.h) and
 * the team, key and model filters, and scopes them to the caller: a team
 * key's team filter is its own team. With month_default, no since and no
 * until mean the current UTC month around now_ms, a since alone runs to the
 * end of that month, an until alone starts at the start of its own month;
 * without month_default an absent end is open. 0, or -1 with an answer
 * queued in *ret (400 naming the parameter, 403 for another team). */
int usage_params_filter(req_t *r, struct MHD_Connection *c, int64_t now_ms, int month_default,
                        usage_filter_t *f, enum MHD_Result *ret);

/* The team r may see: NULL for the admin (every team), else its own. */
const char *usage_params_own_team(const req_t *r);

/* Submits fn(arg) as a job answering r: holds r first (the job answers it
 * and drops that reference). If the job cannot be queued (stopping, out of
 * memory), answers 503 at once, drops the reference and frees arg with
 * free(). Returns what the handler returns. */
enum MHD_Result usage_params_submit(req_t *r, void (*fn)(void *), void *arg);

#endif
