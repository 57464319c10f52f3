/* config_team: the "teams" array of pinmeter's config (part of the config
 * module; see src/config_int.h). Owns each team's rows (name, cap, period,
 * models, alert_thresholds) and each key's rows (id, sha256), their custom parsers, the rules
 * across teams and keys (unique names and key ids, one team per key hash),
 * freeing what it allocated, and the period names. Per-team and per-key
 * settings are added here, as rows. Calls nothing in config.c. */
#include "config_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static int parse_cap(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (cJSON_IsNull(v)) {
        t->cap = -1;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
        money_from_double(v->valuedouble, &t->cap) < 0)
        return cfgrow_fail(x, path,
                           "must be a number of credits from 0 to 9e9 (omit for no cap)");
    return 0;
}

static int parse_period(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (!cJSON_IsString(v) || config_period_parse(v->valuestring, &t->period) < 0)
        return cfgrow_fail(x, path, "must be \"day\", \"week\", \"month\" or \"none\"");
    return 0;
}

static int parse_models(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    char sub[CFGROW_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return cfgrow_fail(x, path, "must be an array of model ids or globs");
    if (!v->child)
        return cfgrow_fail(x, path,
                           "must not be empty (omit it to allow every priced model)");
    t->n_models = (size_t)cJSON_GetArraySize(v);
    if (!(t->models = calloc(t->n_models, sizeof *t->models)))
        return cfgrow_fail(x, path, "out of memory");
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        cfgrow_join_index(sub, path, i);
        if (!cJSON_IsString(m) || !m->valuestring[0])
            return cfgrow_fail(x, sub, "must be a non-empty string");
        if (!(t->models[i] = dup_str(m->valuestring)))
            return cfgrow_fail(x, sub, "out of memory");
    }
    return 0;
}

static int parse_sha256(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    key_conf_t *k = base;
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    const char *s = cJSON_IsString(v) ? v->valuestring : NULL;

    if (!s || strlen(s) != 64 || strspn(s, hex) != 64)
        return cfgrow_fail(x, path, "must be 64 hex characters (the SHA-256 of the key)");
    for (size_t i = 0; i < 32; i++) {
        int hi = (int)(strchr(hex, s[2 * i]) - hex) % 16;
        int lo = (int)(strchr(hex, s[2 * i + 1]) - hex) % 16;
        k->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static int parse_on_insufficient(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "reject") == 0) t->clamp = 0;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "clamp") == 0) t->clamp = 1;
    else return cfgrow_fail(x, path, "must be \"reject\" or \"clamp\"");
    return 0;
}

static int parse_key_cap(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    key_conf_t *k = base;
    if (cJSON_IsNull(v)) {
        k->cap = -1;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || money_from_double(v->valuedouble, &k->cap) < 0)
        return cfgrow_fail(x, path,
                           "must be a number of credits from 0 to 9e9 (omit for no cap)");
    return 0;
}

/* The rate limits a team and a key both take (the lim of T). */
#define LIMIT_ROWS(T)                                                                      \
    { .key = "rpm", .kind = CFGROW_I64, .off = offsetof(T, lim.rpm), .min = 1, .max = 1e9 },  \
    { .key = "tpm", .kind = CFGROW_I64, .off = offsetof(T, lim.tpm), .min = 1, .max = 1e12 }, \
    { .key = "max_inflight", .kind = CFGROW_I64, .off = offsetof(T, lim.max_inflight),      \
      .min = 1, .max = 1e6 },                                                              \
    { .key = "max_spend_per_minute", .kind = CFGROW_CREDITS, .flags = CFGROW_POSITIVE,      \
      .off = offsetof(T, lim.spend_minute) },                                              \
    { .key = "max_spend_per_hour", .kind = CFGROW_CREDITS, .flags = CFGROW_POSITIVE,        \
      .off = offsetof(T, lim.spend_hour) }

static const cfgrow_row_t key_rows[] = {
    { .key = "id", .kind = CFGROW_STR, .flags = CFGROW_REQUIRED | CFGROW_NAME,
      .off = offsetof(key_conf_t, id), .size = CFGROW_MEMBER_SIZE(key_conf_t, id) },
    { .key = "sha256", .kind = CFGROW_CUSTOM, .flags = CFGROW_REQUIRED,
      .fn = parse_sha256 },
    { .key = "cap", .kind = CFGROW_CUSTOM, .fn = parse_key_cap },
    LIMIT_ROWS(key_conf_t),
    { .key = NULL },
};

static int parse_keys(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    char sub[CFGROW_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return cfgrow_fail(x, path, "must be an array of {\"id\", \"sha256\"}");
    t->n_keys = (size_t)cJSON_GetArraySize(v);
    if (t->n_keys && !(t->keys = calloc(t->n_keys, sizeof *t->keys)))
        return cfgrow_fail(x, path, "out of memory");
    for (const cJSON *k = v->child; k; k = k->next, i++) {
        t->keys[i].cap = -1;
        cfgrow_join_index(sub, path, i);
        if (cfgrow_apply_object(x, k, sub, key_rows, &t->keys[i]) < 0)
            return -1;
    }
    return 0;
}

static int parse_alert_thresholds(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (config_thresholds_parse(x, v, path, &t->alert_thresholds) < 0)
        return -1;
    t->has_alert_thresholds = 1;
    return 0;
}

static const cfgrow_row_t team_rows[] = {
    { .key = "name", .kind = CFGROW_STR, .flags = CFGROW_REQUIRED | CFGROW_NAME,
      .off = offsetof(team_conf_t, name),
      .size = CFGROW_MEMBER_SIZE(team_conf_t, name) },
    { .key = "cap", .kind = CFGROW_CUSTOM, .fn = parse_cap },
    { .key = "period", .kind = CFGROW_CUSTOM, .fn = parse_period },
    { .key = "models", .kind = CFGROW_CUSTOM, .fn = parse_models },
    { .key = "keys", .kind = CFGROW_CUSTOM, .fn = parse_keys },
    { .key = "alert_thresholds", .kind = CFGROW_CUSTOM, .fn = parse_alert_thresholds },
    LIMIT_ROWS(team_conf_t),
    { .key = "on_insufficient", .kind = CFGROW_CUSTOM, .fn = parse_on_insufficient },
    { .key = "clamp_min_tokens", .kind = CFGROW_I64, .off = offsetof(team_conf_t, clamp_min_tokens),
      .min = 1, .max = 1e9 },
    { .key = NULL },
};

int config_team_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    char sub[CFGROW_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return cfgrow_fail(x, path, "must be an array of teams");
    c->n_teams = (size_t)cJSON_GetArraySize(v);
    if (c->n_teams && !(c->teams = calloc(c->n_teams, sizeof *c->teams)))
        return cfgrow_fail(x, path, "out of memory");
    for (const cJSON *t = v->child; t; t = t->next, i++) {
        c->teams[i].cap = -1;
        c->teams[i].period = PERIOD_MONTH;
        c->teams[i].clamp_min_tokens = 256;
        cfgrow_join_index(sub, path, i);
        if (cfgrow_apply_object(x, t, sub, team_rows, &c->teams[i]) < 0)
            return -1;
    }
    return 0;
}

/* Unique team names, key ids unique within a team, key hashes unique across
 * all teams (one key must map to exactly one team). Quadratic in the number
 * of keys, which is fine for the hundreds a config file holds. */
int config_team_check(cfgrow_ctx_t *x, const config_t *c)
{
    char path[CFGROW_PATH_MAX];

    for (size_t i = 0; i < c->n_teams; i++) {
        const team_conf_t *t = &c->teams[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->teams[j].name, t->name) == 0) {
                snprintf(path, sizeof path, "teams[%zu].name", i);
                return cfgrow_fail(x, path, "duplicate of teams[%zu].name \"%s\"",
                                   j, t->name);
            }
        for (size_t k = 0; k < t->n_keys; k++) {
            for (size_t l = 0; l < k; l++)
                if (strcmp(t->keys[l].id, t->keys[k].id) == 0) {
                    snprintf(path, sizeof path, "teams[%zu].keys[%zu].id", i, k);
                    return cfgrow_fail(x, path,
                                       "duplicate of teams[%zu].keys[%zu].id \"%s\"",
                                       i, l, t->keys[k].id);
                }
            for (size_t j = 0; j <= i; j++)      /* every earlier key */
                for (size_t l = 0; l < (j == i ? k : c->teams[j].n_keys); l++)
                    if (memcmp(c->teams[j].keys[l].sha256, t->keys[k].sha256, 32) == 0) {
                        snprintf(path, sizeof path, "teams[%zu].keys[%zu].sha256", i, k);
                        return cfgrow_fail(x, path, "same key as teams[%zu].keys[%zu]", j, l);
                    }
        }
    }
    /* in team mode a team without keys is one nobody can use: a mistake */
    for (size_t i = 0; i < c->n_teams; i++)
        if (c->teams[i].n_keys == 0) {
            snprintf(path, sizeof path, "teams[%zu].keys", i);
            return cfgrow_fail(x, path, "team \"%s\" has no keys, so nobody can use it "
                               "(add one with pinmeter keygen, or drop the team)",
                               c->teams[i].name);
        }
    return 0;
}

void config_team_free(team_conf_t *teams, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        team_conf_t *t = &teams[i];
        for (size_t m = 0; m < t->n_models && t->models; m++)
            free(t->models[m]);
        free(t->models);
        free(t->keys);
    }
    free(teams);
}

static const struct { const char *name; period_t p; } periods[] = {
    { "none", PERIOD_NONE }, { "day", PERIOD_DAY },
    { "week", PERIOD_WEEK }, { "month", PERIOD_MONTH },
};

int config_period_parse(const char *s, period_t *out)
{
    for (size_t i = 0; s && i < sizeof periods / sizeof periods[0]; i++)
        if (strcmp(s, periods[i].name) == 0) {
            *out = periods[i].p;
            return 0;
        }
    return -1;
}

const char *config_period_name(period_t p)
{
    for (size_t i = 0; i < sizeof periods / sizeof periods[0]; i++)
        if (periods[i].p == p)
            return periods[i].name;
    return "unknown";
}
