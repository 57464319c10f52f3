/* rates: the per-model price table and the cost arithmetic.
 *
 * The table is parsed from the JSON array Pinata serves at GET /v0/llm/models
 * and kept as an array sorted by model id, searched with bsearch; ids are
 * unique (a duplicate is a parse error, not a silent override). Prices are
 * integers in nano-credits per 1M tokens, so a cost is one exact 128-bit sum
 * divided by 1e6 once, rounded up. Pure: no I/O, no clock, no globals. */
#include "rates.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RATE_MAX_NANOS 1e18          /* per 1M tokens; keeps llround defined */
#define TOKENS_PER_RATE 1000000u     /* rates are per 1M tokens */

__extension__ typedef unsigned __int128 u128;

typedef struct entry {
    char *id;
    rate_t rate;
    size_t idx;                      /* position in the source array */
} entry_t;

struct rates {
    entry_t *v;                      /* sorted by id */
    size_t n;
};

static int usd_ok(double usd)
{
    return isfinite(usd) && usd >= 0 && usd <= RATES_MAX_USD;
}

static int to_nanos(double usd, double credits_per_usd, int64_t *out)
{
    double n = usd * credits_per_usd * (double)NANOS_PER_CREDIT;
    if (!usd_ok(usd) || !isfinite(n) || n > RATE_MAX_NANOS)
        return -1;
    *out = (int64_t)llround(n);
    return 0;
}

int rate_from_usd(double in_usd, double out_usd, double cache_usd,
                  double credits_per_usd, rate_t *out)
{
    rate_t r;
    if (!isfinite(credits_per_usd) || credits_per_usd <= 0)
        return -1;
    if (to_nanos(in_usd, credits_per_usd, &r.input) < 0 ||
        to_nanos(out_usd, credits_per_usd, &r.output) < 0 ||
        to_nanos(cache_usd, credits_per_usd, &r.cache_read) < 0)
        return -1;
    *out = r;
    return 0;
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Line and column (1-based) of the byte at pos, for parse errors. */
static void line_col(const char *json, const char *pos, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (const char *p = json; pos && p < pos; p++) {
        if (*p == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

/* 1 if only whitespace (or a terminating NUL) follows the value at *end. */
static int tail_ok(const char **end, const char *limit)
{
    while (*end < limit && (**end == ' ' || **end == '\t' || **end == '\r' ||
                            **end == '\n'))
        ++*end;
    return *end >= limit || **end == '\0';
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const entry_t *)a)->id, ((const entry_t *)b)->id);
}

/* Sort order: by id, then source position, so duplicates are reported as
 * "later entry duplicates the earliest one" whatever qsort does. */
static int sort_cmp(const void *a, const void *b)
{
    const entry_t *x = a, *y = b;
    int d = strcmp(x->id, y->id);
    return d ? d : (x->idx > y->idx) - (x->idx < y->idx);
}

/* Reads one optional-or-required price; 1 = present, 0 = absent, -1 = bad. */
static int price(const cJSON *item, size_t i, const char *key, double *out,
                 char *err, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(item, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsNumber(v)) {
        set_err(err, errlen, "[%zu].%s: must be a number", i, key);
        return -1;
    }
    if (!usd_ok(v->valuedouble)) {
        set_err(err, errlen, "[%zu].%s: must be between 0 and %g USD per 1M tokens",
                i, key, RATES_MAX_USD);
        return -1;
    }
    *out = v->valuedouble;
    return 1;
}

static int parse_entry(const cJSON *item, size_t i, double cpu, entry_t *e,
                       char *err, size_t errlen)
{
    static const char *const required[] = { "input_usd_per_1m_tokens",
                                            "output_usd_per_1m_tokens" };
    double usd[3] = { 0, 0, 0 };
    const cJSON *id;
    size_t len;

    if (!cJSON_IsObject(item)) {
        set_err(err, errlen, "[%zu]: must be an object", i);
        return -1;
    }
    id = cJSON_GetObjectItemCaseSensitive(item, "model_id");
    if (!cJSON_IsString(id) || id->valuestring[0] == '\0') {
        set_err(err, errlen, "[%zu].model_id: %s", i,
                id ? "must be a non-empty string" : "missing");
        return -1;
    }
    for (size_t k = 0; k < 2; k++) {
        int got = price(item, i, required[k], &usd[k], err, errlen);
        if (got < 0)
            return -1;
        if (got == 0) {
            set_err(err, errlen, "[%zu].%s: missing", i, required[k]);
            return -1;
        }
    }
    switch (price(item, i, "cache_read_usd_per_1m_tokens", &usd[2], err, errlen)) {
    case -1: return -1;
    case 0: usd[2] = usd[0]; break;   /* no cache discount published */
    default: break;
    }
    if (rate_from_usd(usd[0], usd[1], usd[2], cpu, &e->rate) < 0) {
        set_err(err, errlen, "[%zu]: price too large at credits_per_usd %g", i, cpu);
        return -1;
    }
    len = strlen(id->valuestring);
    if (!(e->id = malloc(len + 1))) {
        set_err(err, errlen, "[%zu]: out of memory", i);
        return -1;
    }
    memcpy(e->id, id->valuestring, len + 1);
    e->idx = i;
    return 0;
}

rates_t *rates_parse(const char *json, size_t len, double credits_per_usd,
                     char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *root = NULL;
    rates_t *r = NULL;
    size_t i = 0;

    if (!isfinite(credits_per_usd) || credits_per_usd <= 0) {
        set_err(err, errlen, "credits_per_usd: must be a number > 0");
        return NULL;
    }
    if (!json) {
        set_err(err, errlen, "no JSON text");
        return NULL;
    }
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root || !tail_ok(&end, json + len)) {
        int line, col;
        line_col(json, end, &line, &col);
        set_err(err, errlen, "line %d, column %d: %s", line, col,
                root ? "unexpected data after the JSON value" : "invalid JSON");
        goto fail;
    }
    if (!cJSON_IsArray(root)) {
        set_err(err, errlen, "top level: must be a JSON array of models");
        goto fail;
    }
    if (!(r = calloc(1, sizeof *r)))
        goto oom;
    r->n = (size_t)cJSON_GetArraySize(root);
    if (r->n && !(r->v = calloc(r->n, sizeof *r->v)))
        goto oom;
    for (const cJSON *item = root->child; item; item = item->next, i++)
        if (parse_entry(item, i, credits_per_usd, &r->v[i], err, errlen) < 0)
            goto fail;
    if (r->n)
        qsort(r->v, r->n, sizeof *r->v, sort_cmp);
    for (i = 1; i < r->n; i++) {
        if (strcmp(r->v[i - 1].id, r->v[i].id) == 0) {
            set_err(err, errlen, "[%zu].model_id: duplicate of [%zu] (\"%s\")",
                    r->v[i].idx, r->v[i - 1].idx, r->v[i].id);
            goto fail;
        }
    }
    cJSON_Delete(root);
    return r;
oom:
    set_err(err, errlen, "out of memory");
fail:
    cJSON_Delete(root);
    rates_free(r);
    return NULL;
}

void rates_free(rates_t *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].id);
    free(r->v);
    free(r);
}

size_t rates_count(const rates_t *r)
{
    return r ? r->n : 0;
}

int rates_at(const rates_t *r, size_t i, const char **id, rate_t *out)
{
    if (!r || i >= r->n)
        return -1;
    *id = r->v[i].id;
    *out = r->v[i].rate;
    return 0;
}

int rates_lookup(const rates_t *r, const char *model, rate_t *out)
{
    entry_t key, *hit;
    if (!r || !model || r->n == 0)
        return -1;
    key.id = (char *)model;
    hit = bsearch(&key, r->v, r->n, sizeof *r->v, entry_cmp);
    if (!hit)
        return -1;
    *out = hit->rate;
    return 0;
}

/* Sum of up to three count*price terms, each < 2^126, so the sum < 2^128. */
static nanos_t finish(u128 sum)
{
    u128 q = sum / TOKENS_PER_RATE + (sum % TOKENS_PER_RATE != 0);
    return q > (u128)INT64_MAX ? INT64_MAX : (nanos_t)q;
}

static int rate_bad(const rate_t *r)
{
    return !r || r->input < 0 || r->output < 0 || r->cache_read < 0;
}

nanos_t cost_of(const rate_t *rate, const usage_t *u)
{
    int64_t cached;
    u128 sum;
    if (rate_bad(rate) || !u || u->prompt < 0 || u->completion < 0)
        return -1;
    cached = u->cached < 0 ? 0 : u->cached > u->prompt ? u->prompt : u->cached;
    sum = (u128)(uint64_t)(u->prompt - cached) * (uint64_t)rate->input
        + (u128)(uint64_t)cached * (uint64_t)rate->cache_read
        + (u128)(uint64_t)u->completion * (uint64_t)rate->output;
    return finish(sum);
}

nanos_t cost_reservation(const rate_t *rate, int64_t est_prompt, int64_t max_out)
{
    if (rate_bad(rate) || est_prompt < 0 || max_out < 0)
        return -1;
    return finish((u128)(uint64_t)est_prompt * (uint64_t)rate->input
                  + (u128)(uint64_t)max_out * (uint64_t)rate->output);
}

int64_t cost_max_completion(const rate_t *rate, int64_t est_prompt, int64_t n, nanos_t available)
{
    if (rate_bad(rate) || est_prompt < 0 || n < 1 || available < 0) return -1;
    /* ceil(x / 1e6) <= available  <=>  x <= available * 1e6 (x an integer) */
    u128 room = (u128)(uint64_t)available * 1000000u;
    u128 prompt = (u128)(uint64_t)est_prompt * (uint64_t)rate->input;
    if (prompt > room) return -1;
    if (rate->output == 0) return INT64_MAX;
    u128 c = (room - prompt) / ((u128)(uint64_t)n * (uint64_t)rate->output);
    return c > (u128)INT64_MAX ? INT64_MAX : (int64_t)c;
}
