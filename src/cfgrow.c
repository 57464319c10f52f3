/* cfgrow: the row walker (see cfgrow.h). Owns the walk over an object and
 * its rows, the checks every row kind and flag implies, the JSON path of each
 * value and the "FILE: KEY: why" message; knows nothing of what the rows
 * fill. Every key is type-checked the same way, and unknown keys are rejected
 * at every level (typos must not pass silently). */
#include "cfgrow.h"
#include "rates.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int cfgrow_fail(cfgrow_ctx_t *x, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (!x->err || x->errlen == 0)
        return -1;
    n = snprintf(x->err, x->errlen, "%s: %s: ", x->fname, *path ? path : "top level");
    if (n >= 0 && (size_t)n < x->errlen) {
        va_start(ap, fmt);
        vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void join_key(char *out, const char *path, const char *key)
{
    if (snprintf(out, CFGROW_PATH_MAX, "%s%s%s", path, *path ? "." : "", key) < 0)
        out[0] = '\0';
}

void cfgrow_join_index(char *out, const char *path, size_t i)
{
    if (snprintf(out, CFGROW_PATH_MAX, "%s[%zu]", path, i) < 0)
        out[0] = '\0';
}

static int is_comment(const char *key)
{
    return key[0] == '_' || strncmp(key, "//", 2) == 0;
}

static int env_name_ok(const char *s)
{
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_'))
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_") == strlen(s);
}

static int name_ok(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_.-") == strlen(s);
}

static int apply_str(cfgrow_ctx_t *x, const cfgrow_row_t *r, const cJSON *v,
                     const char *path, char *dst)
{
    const char *s;
    if (!cJSON_IsString(v))
        return cfgrow_fail(x, path, "must be a string");
    s = v->valuestring;
    if (strlen(s) >= r->size)
        return cfgrow_fail(x, path, "too long (max %zu bytes)", r->size - 1);
    if (!*s && !(r->flags & CFGROW_EMPTY_OK))
        return cfgrow_fail(x, path, "must not be empty");
    if (*s && (r->flags & CFGROW_ENV) && !env_name_ok(s))
        return cfgrow_fail(x, path,
                           "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    if ((r->flags & CFGROW_NAME) && !name_ok(s))
        return cfgrow_fail(x, path, "may contain only letters, digits, '_', '.' and '-'");
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int apply_row(cfgrow_ctx_t *x, const cfgrow_row_t *r, const cJSON *v,
                     const char *path, void *base)
{
    char *dst = (char *)base + r->off;
    double d = v->valuedouble;

    switch (r->kind) {
    case CFGROW_STR:
        return apply_str(x, r, v, path, dst);
    case CFGROW_OBJ:
        return cfgrow_apply_object(x, v, path, r->sub, base);
    case CFGROW_CUSTOM:
        return r->fn(x, v, path, base);
    case CFGROW_BOOL:
        if (!cJSON_IsBool(v))
            return cfgrow_fail(x, path, "must be true or false");
        *(int *)(void *)dst = cJSON_IsTrue(v);
        return 0;
    case CFGROW_POSNUM:
        if (!cJSON_IsNumber(v) || !isfinite(d) || d <= 0)
            return cfgrow_fail(x, path, "must be a number > 0");
        *(double *)(void *)dst = d;
        return 0;
    case CFGROW_CREDITS: {
        nanos_t n;
        if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || money_from_double(d, &n) < 0 ||
            ((r->flags & CFGROW_POSITIVE) && n <= 0))
            return cfgrow_fail(x, path, "must be a number of credits from %s to 9e9",
                               (r->flags & CFGROW_POSITIVE) ? "more than 0" : "0");
        *(nanos_t *)(void *)dst = n;
        return 0;
    }
    case CFGROW_USD:
        if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || d > RATES_MAX_USD)
            return cfgrow_fail(x, path, "must be a number from 0 to %g (USD per 1M tokens)",
                               RATES_MAX_USD);
        *(double *)(void *)dst = d;
        return 0;
    default:                          /* integers */
        if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) ||
            d < r->min || d > r->max)
            return cfgrow_fail(x, path, "must be an integer from %.0f to %.0f",
                               r->min, r->max);
        if (r->kind == CFGROW_INT)
            *(int *)(void *)dst = (int)d;
        else if (r->kind == CFGROW_I64)
            *(int64_t *)(void *)dst = (int64_t)d;
        else
            *(size_t *)(void *)dst = (size_t)d;
        return 0;
    }
}

int cfgrow_apply_object(cfgrow_ctx_t *x, const cJSON *obj, const char *path,
                        const cfgrow_row_t *rows, void *base)
{
    unsigned long seen = 0;           /* one bit per row; tables stay small */
    char sub[CFGROW_PATH_MAX];

    if (!cJSON_IsObject(obj))
        return cfgrow_fail(x, path, "must be an object");
    for (const cJSON *v = obj->child; v; v = v->next) {
        size_t i = 0;
        if (is_comment(v->string))
            continue;
        join_key(sub, path, v->string);
        while (rows[i].key && strcmp(rows[i].key, v->string) != 0)
            i++;
        if (!rows[i].key)
            return cfgrow_fail(x, sub, "unknown key (comment keys start with \"_\")");
        if (seen & (1ul << i))
            return cfgrow_fail(x, sub, "duplicate key");
        seen |= 1ul << i;
        if (apply_row(x, &rows[i], v, sub, base) < 0)
            return -1;
    }
    for (size_t i = 0; rows[i].key; i++) {
        if ((rows[i].flags & CFGROW_REQUIRED) && !(seen & (1ul << i))) {
            join_key(sub, path, rows[i].key);
            return cfgrow_fail(x, sub, "missing");
        }
    }
    return 0;
}
