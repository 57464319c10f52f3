/* ratediff: the checks Pinata's live price list must pass before it may
 * replace the rate table, and the difference between two tables (see
 * ratediff.h).
 *
 * The check is stricter than a rates file's (rates.c accepts a missing
 * cache price and an empty list, both fine for a file an operator wrote):
 * an answer that lacks a field, or lists nothing, is far more likely a
 * broken or changed API than a real price list, and taking it would make
 * every model free or unpriced at once. The diff walks the two tables, both
 * sorted by model id, side by side. Pure: no I/O, no clock, no globals. */
#include "ratediff.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PRICE_KEYS[3] = {
    "input_usd_per_1m_tokens", "output_usd_per_1m_tokens", "cache_read_usd_per_1m_tokens",
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The structural checks, on a parsed tree. 0 or -1 with err. */
static int check_tree(const cJSON *root, char *err, size_t errlen)
{
    if (!cJSON_IsArray(root)) {
        set_err(err, errlen, "top level: must be a JSON array of models");
        return -1;
    }
    if (!root->child) {
        set_err(err, errlen, "top level: the list has no models");
        return -1;
    }
    size_t i = 0;
    for (const cJSON *it = root->child; it; it = it->next, i++) {
        if (!cJSON_IsObject(it)) {
            set_err(err, errlen, "[%zu]: must be an object", i);
            return -1;
        }
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "model_id");
        if (!id) {
            set_err(err, errlen, "[%zu].model_id: missing", i);
            return -1;
        }
        if (!cJSON_IsString(id) || !id->valuestring[0]) {
            set_err(err, errlen, "[%zu].model_id: must be a non-empty string", i);
            return -1;
        }
        for (int k = 0; k < 3; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, PRICE_KEYS[k]);
            if (!v) {
                set_err(err, errlen, "[%zu].%s: missing (model %.200s)", i, PRICE_KEYS[k],
                        id->valuestring);
                return -1;
            }
            if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0) {
                set_err(err, errlen, "[%zu].%s: must be a finite number >= 0 (model %.200s)",
                        i, PRICE_KEYS[k], id->valuestring);
                return -1;
            }
        }
    }
    return 0;
}

rates_t *ratediff_parse(const char *json, size_t len, double credits_per_usd,
                        char *err, size_t errlen)
{
    if (!json || len == 0) {
        set_err(err, errlen, "empty answer (not JSON)");
        return NULL;
    }
    /* The JSON error itself, with its place, and the duplicate ids come
     * from rates_parse; the fields it would forgive are checked first. */
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (root && check_tree(root, err, errlen) != 0) {
        cJSON_Delete(root);
        return NULL;
    }
    cJSON_Delete(root);
    return rates_parse(json, len, credits_per_usd, err, errlen);
}

static int rate_eq(const rate_t *a, const rate_t *b)
{
    return a->input == b->input && a->output == b->output && a->cache_read == b->cache_read;
}

/* Appends an item (model copied). 0 or -1. */
static int push(ratediff_t *d, size_t *cap, const char *model, ratediff_kind_t kind,
                const rate_t *old, const rate_t *new_)
{
    if (d->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        ratediff_item_t *nv = realloc(d->v, nc * sizeof *nv);
        if (!nv) return -1;
        d->v = nv;
        *cap = nc;
    }
    ratediff_item_t *it = &d->v[d->n];
    memset(it, 0, sizeof *it);
    if (!(it->model = strdup(model))) return -1;
    it->kind = kind;
    if (old) it->old = *old;
    if (new_) it->new_ = *new_;
    d->n++;
    if (kind == RATEDIFF_ADDED) d->added++;
    else if (kind == RATEDIFF_REMOVED) d->removed++;
    else d->changed++;
    return 0;
}

int ratediff_compute(const rates_t *old, const rates_t *new_, ratediff_t *d)
{
    memset(d, 0, sizeof *d);
    size_t cap = 0, i = 0, j = 0, no = rates_count(old), nn = rates_count(new_);
    while (i < no || j < nn) {
        const char *a = NULL, *b = NULL;
        rate_t ra, rb;
        if (i < no) rates_at(old, i, &a, &ra);
        if (j < nn) rates_at(new_, j, &b, &rb);
        int c = !a ? 1 : !b ? -1 : strcmp(a, b);
        int rc = 0;
        if (c < 0) {
            rc = push(d, &cap, a, RATEDIFF_REMOVED, &ra, NULL);
            i++;
        } else if (c > 0) {
            rc = push(d, &cap, b, RATEDIFF_ADDED, NULL, &rb);
            j++;
        } else {
            if (!rate_eq(&ra, &rb)) rc = push(d, &cap, a, RATEDIFF_CHANGED, &ra, &rb);
            i++;
            j++;
        }
        if (rc != 0) {
            ratediff_free(d);
            return -1;
        }
    }
    return 0;
}

void ratediff_free(ratediff_t *d)
{
    for (size_t i = 0; i < d->n; i++) free(d->v[i].model);
    free(d->v);
    memset(d, 0, sizeof *d);
}

/* "I / O / C" in credits per 1M tokens. */
static char *prices(const rate_t *r, char *buf, size_t len)
{
    char a[MONEY_FMT_MAX], b[MONEY_FMT_MAX], c[MONEY_FMT_MAX];
    snprintf(buf, len, "%s / %s / %s", money_fmt(r->input, a), money_fmt(r->output, b),
             money_fmt(r->cache_read, c));
    return buf;
}

char *ratediff_line(const ratediff_item_t *it, int width, char *buf, size_t buflen)
{
    static const char *const kind[] = {"added  ", "removed", "changed"};
    char p1[3 * MONEY_FMT_MAX + 8], p2[3 * MONEY_FMT_MAX + 8];
    const rate_t *first = it->kind == RATEDIFF_ADDED ? &it->new_ : &it->old;
    if (it->kind == RATEDIFF_CHANGED)
        snprintf(buf, buflen, "%s  %-*s  %s -> %s", kind[it->kind], width, it->model,
                 prices(&it->old, p1, sizeof p1), prices(&it->new_, p2, sizeof p2));
    else
        snprintf(buf, buflen, "%s  %-*s  %s", kind[it->kind], width, it->model,
                 prices(first, p1, sizeof p1));
    return buf;
}

char *ratediff_summary(const ratediff_t *d, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%zu added, %zu removed, %zu changed", d->added, d->removed,
             d->changed);
    return buf;
}
