/* config_alerts: the "alerts" object of pinmeter's config and the threshold
 * lists (part of the config module; see src/config_int.h). Owns the rows of
 * "alerts" (webhook_url, secret_env, thresholds, account_below), their
 * checks, the threshold-list parser a team's "alert_thresholds" shares, and
 * which list applies to a team. Calls nothing in config.c or config_team.c. */
#include "config_int.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_ppm(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int config_thresholds_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path,
                            alert_thresholds_t *out)
{
    char sub[CFGROW_PATH_MAX];
    size_t i = 0;
    alert_thresholds_t t = { .n = 0 };

    if (!cJSON_IsArray(v))
        return cfgrow_fail(x, path,
                           "must be an array of fractions of the cap, e.g. [0.5, 0.8, 1.0]");
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        cfgrow_join_index(sub, path, i);
        if (i >= CONFIG_THRESHOLDS_MAX)
            return cfgrow_fail(x, sub, "at most %d thresholds", CONFIG_THRESHOLDS_MAX);
        double d = e->valuedouble;
        if (!cJSON_IsNumber(e) || !isfinite(d) || d <= 0 || d > 10)
            return cfgrow_fail(x, sub, "must be a number above 0 and at most 10 "
                               "(a fraction of the cap: 0.8 = 80 %%)");
        long long ppm = llround(d * CONFIG_PPM);
        if (ppm < 1)
            return cfgrow_fail(x, sub, "too small: thresholds count to 6 decimals");
        for (size_t j = 0; j < t.n; j++)
            if (t.ppm[j] == ppm)
                return cfgrow_fail(x, sub, "duplicate threshold %g", d);
        t.ppm[t.n++] = (int32_t)ppm;
    }
    qsort(t.ppm, t.n, sizeof t.ppm[0], cmp_ppm);
    *out = t;
    return 0;
}

/* http:// or https:// with a host, no spaces or control characters. The
 * messages never repeat the URL: a webhook URL often carries a token. */
static int parse_url(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (!cJSON_IsString(v))
        return cfgrow_fail(x, path, "must be a string");
    const char *s = v->valuestring;
    size_t scheme = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        return cfgrow_fail(x, path, "must start with http:// or https://");
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return cfgrow_fail(x, path, "must not contain spaces or control characters");
    if (n == scheme || s[scheme] == '/' || s[scheme] == '?' || s[scheme] == '#')
        return cfgrow_fail(x, path, "must name a host, e.g. http://127.0.0.1:9000/pinmeter");
    if (n >= sizeof c->alert_url)
        return cfgrow_fail(x, path, "too long (max %zu bytes)", sizeof c->alert_url - 1);
    memcpy(c->alert_url, s, n + 1);
    return 0;
}

static int parse_global(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    return config_thresholds_parse(x, v, path, &c->alert_thresholds);
}

static int parse_below(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    nanos_t n;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0) || money_from_double(v->valuedouble, &n) < 0 ||
        n <= 0)
        return cfgrow_fail(x, path, "must be a number of credits above 0 (at most 9e9)");
    c->alert_account_below = n;
    return 0;
}

static const cfgrow_row_t alert_rows[] = {
    { .key = "webhook_url", .kind = CFGROW_CUSTOM, .flags = CFGROW_REQUIRED, .fn = parse_url },
    { .key = "secret_env", .kind = CFGROW_STR, .flags = CFGROW_ENV | CFGROW_EMPTY_OK,
      .off = offsetof(config_t, alert_secret_env),
      .size = CFGROW_MEMBER_SIZE(config_t, alert_secret_env) },
    { .key = "thresholds", .kind = CFGROW_CUSTOM, .fn = parse_global },
    { .key = "account_below", .kind = CFGROW_CUSTOM, .fn = parse_below },
    { .key = NULL },
};

int config_alerts_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    c->alerts_on = 1;
    c->alert_secret_env[0] = '\0';
    c->alert_account_below = -1;
    c->alert_thresholds = (alert_thresholds_t){ .ppm = { 500000, 800000, 1000000 }, .n = 3 };
    return cfgrow_apply_object(x, v, path, alert_rows, c);
}

const alert_thresholds_t *config_team_thresholds(const config_t *c, const team_conf_t *t)
{
    return t && t->has_alert_thresholds ? &t->alert_thresholds : &c->alert_thresholds;
}
