/* topupcfg: the top-up settings' rules (see topupcfg.h). The body is parsed
 * with cJSON and every rule checked in the order a person reads them: the
 * body is an object, it has no other field, each field is there once and
 * is of its kind. */
#include "topupcfg.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WANT_THRESHOLD "must be a number of at least 5 (credits: when the available balance " \
                       "drops below it, a top-up triggers), or null"
#define WANT_AMOUNT "must be a positive integer (the credits bought each time), or null"

static int fail(char *fieldbuf, size_t fieldlen, const char *field, char *why, size_t whylen,
                const char *msg)
{
    snprintf(fieldbuf, fieldlen, "%s", field);
    snprintf(why, whylen, "%s", msg);
    return -1;
}

/* The rule of one field; 0 or -1 with why. */
static int check_threshold(const cJSON *v, topupcfg_t *out)
{
    if (cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) ||
        v->valuedouble < TOPUPCFG_MIN_THRESHOLD || v->valuedouble > 9e15)
        return -1;
    out->has_threshold = 1;
    out->threshold = v->valuedouble;
    return 0;
}

static int check_amount(const cJSON *v, topupcfg_t *out)
{
    if (cJSON_IsNull(v)) return 0;
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0;
    if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) || d < 1 ||
        d > (double)TOPUPCFG_MAX_AMOUNT)
        return -1;
    out->has_amount = 1;
    out->amount = (int64_t)d;
    return 0;
}

int topupcfg_parse(const char *body, size_t len, topupcfg_t *out, char *fieldbuf,
                   size_t fieldlen, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (len > TOPUPCFG_BODY_MAX)
        return fail(fieldbuf, fieldlen, "", why, whylen, "the body is too large for the top-up "
                    "settings: send {\"threshold\": N|null, \"amount\": N|null}");
    cJSON *j = body ? cJSON_ParseWithLength(body, len) : NULL;
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return fail(fieldbuf, fieldlen, "", why, whylen, "the body must be a JSON object "
                    "{\"threshold\": N|null, \"amount\": N|null}");
    }
    int rc = 0, seen_t = 0, seen_a = 0;
    for (const cJSON *it = j->child; it && rc == 0; it = it->next) {
        const char *k = it->string ? it->string : "";
        int is_t = strcmp(k, "threshold") == 0, is_a = strcmp(k, "amount") == 0;
        if (!is_t && !is_a) {
            char f[64];
            snprintf(f, sizeof f, "%.60s", k);
            rc = fail(fieldbuf, fieldlen, f, why, whylen, "unknown field: the top-up settings "
                      "take only threshold and amount");
        } else if ((is_t && seen_t++) || (is_a && seen_a++)) {
            rc = fail(fieldbuf, fieldlen, k, why, whylen, "given twice");
        } else if (is_t && check_threshold(it, out) != 0) {
            rc = fail(fieldbuf, fieldlen, k, why, whylen, WANT_THRESHOLD);
        } else if (is_a && check_amount(it, out) != 0) {
            rc = fail(fieldbuf, fieldlen, k, why, whylen, WANT_AMOUNT);
        }
    }
    if (rc == 0 && !seen_t)
        rc = fail(fieldbuf, fieldlen, "threshold", why, whylen, "missing: give it (" WANT_THRESHOLD
                  "; both null turns auto top-up off)");
    if (rc == 0 && !seen_a)
        rc = fail(fieldbuf, fieldlen, "amount", why, whylen, "missing: give it (" WANT_AMOUNT
                  "; both null turns auto top-up off)");
    cJSON_Delete(j);
    if (rc != 0) memset(out, 0, sizeof *out);
    return rc;
}

/* One flag's value as JSON text: a number or null, nothing else. */
static int arg_ok(const char *s)
{
    cJSON *v = s ? cJSON_ParseWithOpts(s, NULL, 1) : NULL;   /* nothing after the value */
    int ok = v && (cJSON_IsNumber(v) || cJSON_IsNull(v));
    cJSON_Delete(v);
    return ok;
}

int topupcfg_from_args(const char *threshold, const char *amount, topupcfg_t *out,
                       char *fieldbuf, size_t fieldlen, char *why, size_t whylen)
{
    memset(out, 0, sizeof *out);
    if (!threshold || !arg_ok(threshold))
        return fail(fieldbuf, fieldlen, "threshold", why, whylen, threshold ?
                    "--threshold wants a number or null" : "--threshold is missing (a number "
                    "of at least 5, or null)");
    if (!amount || !arg_ok(amount))
        return fail(fieldbuf, fieldlen, "amount", why, whylen, amount ?
                    "--amount wants a number or null" : "--amount is missing (a positive "
                    "integer, or null)");
    char body[256];
    int n = snprintf(body, sizeof body, "{\"threshold\": %s, \"amount\": %s}", threshold, amount);
    if (n < 0 || (size_t)n >= sizeof body)
        return fail(fieldbuf, fieldlen, "", why, whylen, "the values are too long");
    return topupcfg_parse(body, (size_t)n, out, fieldbuf, fieldlen, why, whylen);
}

char *topupcfg_json(const topupcfg_t *c)
{
    char t[64] = "null", a[32] = "null", *s = malloc(128);
    if (!s) return NULL;
    if (c->has_threshold) {
        /* the shortest form that reads back as the same double */
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, c->threshold);
            if (strtod(t, NULL) == c->threshold) break;
        }
    }
    if (c->has_amount) snprintf(a, sizeof a, "%lld", (long long)c->amount);
    snprintf(s, 128, "{\"threshold\":%s,\"amount\":%s}", t, a);
    return s;
}
