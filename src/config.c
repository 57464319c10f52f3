/* config: parses pinmeter's JSON config into a fresh config_t and validates it
 * as a whole; the caller swaps it in only when this returns non-NULL.
 *
 * Every object is described by a table of rows walked by cfgrow (so every key
 * is type-checked the same way, unknown keys are rejected at every level and
 * keys starting with "_" or "//" are comments). This file owns the top-level
 * rows and their custom parsers, the defaults, config_parse/load/free and the
 * model glob; the "teams" array and the rules across teams and keys are in
 * config_team.c, the "alerts" object in config_alerts.c (src/config_int.h).
 * Cross-entry rules (unique names and keys, prices needing credits_per_usd)
 * run after the walk. Errors read
 * "FILE: KEY: why" with KEY a JSON path such as teams[0].keys[1].sha256.
 * Only config_load and config_load_rates (the rates file the config names)
 * do I/O. */
#include "config_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CONFIG_FILE_MAX (1 << 20)     /* a config beyond 1 MiB is a mistake */

typedef struct usd3 { double in, out, cache; } usd3_t;

/* The top level's own parse state, in cfgrow_ctx_t.ud. */
typedef struct top {
    int unknown_prices;               /* unknown_model given as an object */
    usd3_t unknown_usd;
} top_t;

/* ---- custom keys ---- */

static int parse_listen(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s, *colon, *host;
    size_t hlen;
    long port = 0;

    if (!cJSON_IsString(v))
        return cfgrow_fail(x, path, "must be a string \"HOST:PORT\"");
    s = v->valuestring;
    if (!(colon = strrchr(s, ':')))
        return cfgrow_fail(x, path, "must be \"HOST:PORT\" (e.g. 127.0.0.1:8787 or [::1]:8787)");
    host = s;
    hlen = (size_t)(colon - s);
    if (*s == '[') {
        if (hlen < 2 || s[hlen - 1] != ']')
            return cfgrow_fail(x, path, "an IPv6 host must be written [ADDR]:PORT");
        host++;
        hlen -= 2;
    }
    if (hlen == 0)
        return cfgrow_fail(x, path, "host is empty");
    if (hlen >= sizeof c->listen_host)
        return cfgrow_fail(x, path, "host too long");
    if (memchr(host, '[', hlen) || memchr(host, ']', hlen) || memchr(host, ' ', hlen) ||
        (*s != '[' && memchr(host, ':', hlen)))
        return cfgrow_fail(x, path,
                           "bad host (an IPv6 address must be in brackets, e.g. [::1]:8787)");
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            return cfgrow_fail(x, path, "port must be a number from 1 to 65535");
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
        return cfgrow_fail(x, path, "port must be a number from 1 to 65535");
    memcpy(c->listen_host, host, hlen);
    c->listen_host[hlen] = '\0';
    c->listen_port = (int)port;
    return 0;
}

static int parse_base_url(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s;
    size_t n, scheme;

    if (!cJSON_IsString(v))
        return cfgrow_fail(x, path, "must be a string");
    s = v->valuestring;
    scheme = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        return cfgrow_fail(x, path, "must start with http:// or https://");
    n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return cfgrow_fail(x, path, "must not contain spaces or control characters");
    while (n > scheme && s[n - 1] == '/')
        n--;
    if (n == scheme)
        return cfgrow_fail(x, path, "must be a URL with a host, e.g. https://agents.pinata.cloud");
    if (n >= sizeof c->upstream_base)
        return cfgrow_fail(x, path, "too long");
    memcpy(c->upstream_base, s, n);
    c->upstream_base[n] = '\0';
    return 0;
}

/* redis://HOST[:PORT][/DB]; no credentials in the URL (the password comes
 * from the environment variable budget_store_password_env names). */
static int parse_store(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s, *h, *end;
    long port = 6379, db = 0;

    if (!cJSON_IsString(v))
        return cfgrow_fail(x, path, "must be a string \"redis://HOST:PORT/DB\"");
    s = v->valuestring;
    if (!*s)
        return 0;                     /* "" = the in-process book */
    if (strncmp(s, "rediss://", 9) == 0)
        return cfgrow_fail(x, path, "rediss:// (TLS) needs hiredis built with TLS, which "
                           "this build (Debian 12's hiredis 0.14) lacks; use redis:// on a "
                           "private network or a TLS tunnel");
    if (strncmp(s, "redis://", 8) != 0)
        return cfgrow_fail(x, path, "must start with redis:// (e.g. redis://127.0.0.1:6379/0)");
    if (strlen(s) >= sizeof c->store_url)
        return cfgrow_fail(x, path, "too long");
    h = s + 8;
    if (strchr(h, '@'))
        return cfgrow_fail(x, path, "must not contain credentials; put the password in "
                           "the environment variable named by budget_store_password_env");
    if (*h == '[') {
        if (!(end = strchr(h, ']')))
            return cfgrow_fail(x, path, "an IPv6 host must be written [ADDR]");
        h++;
    } else {
        end = h + strcspn(h, ":/");
    }
    if (end == h || (size_t)(end - h) >= sizeof c->store_host)
        return cfgrow_fail(x, path, "needs a host, e.g. redis://127.0.0.1:6379/0");
    memcpy(c->store_host, h, (size_t)(end - h));
    c->store_host[end - h] = '\0';
    if (*end == ']')
        end++;
    if (*end == ':') {
        char *e;
        port = strtol(end + 1, &e, 10);
        if (e == end + 1 || port < 1 || port > 65535)
            return cfgrow_fail(x, path, "port must be a number from 1 to 65535");
        end = e;
    }
    if (*end == '/' && end[1]) {
        char *e;
        db = strtol(end + 1, &e, 10);
        if (e == end + 1 || *e || db < 0 || db > 1000000)
            return cfgrow_fail(x, path,
                               "database must be a number, e.g. redis://127.0.0.1:6379/0");
        end = e;
    } else if (*end == '/') {
        end++;
    }
    if (*end)
        return cfgrow_fail(x, path, "unexpected \"%.40s\" (want redis://HOST[:PORT][/DB])", end);
    memcpy(c->store_url, s, strlen(s) + 1);
    c->store_port = (int)port;
    c->store_db = (int)db;
    return 0;
}

static int parse_store_down(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "closed") == 0)
        c->store_down_local = 0;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "local") == 0)
        c->store_down_local = 1;
    else
        return cfgrow_fail(x, path, "must be \"closed\" or \"local\"");
    return 0;
}

static int parse_log_format(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "text") == 0)
        c->log_json = 0;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "json") == 0)
        c->log_json = 1;
    else
        return cfgrow_fail(x, path, "must be \"text\" or \"json\"");
    return 0;
}

static int parse_metrics_auth(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "admin") == 0)
        c->metrics_open = 0;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0)
        c->metrics_open = 1;
    else
        return cfgrow_fail(x, path, "must be \"admin\" (the admin token) or \"none\"");
    return 0;
}

static const cfgrow_row_t price_rows[] = {
    { .key = "input_usd_per_1m_tokens", .kind = CFGROW_USD, .flags = CFGROW_REQUIRED,
      .off = offsetof(usd3_t, in) },
    { .key = "output_usd_per_1m_tokens", .kind = CFGROW_USD, .flags = CFGROW_REQUIRED,
      .off = offsetof(usd3_t, out) },
    { .key = "cache_read_usd_per_1m_tokens", .kind = CFGROW_USD,
      .off = offsetof(usd3_t, cache) },
    { .key = NULL },
};

static int parse_unknown_model(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    top_t *top = x->ud;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "reject") == 0) {
        c->unknown_reject = 1;
        top->unknown_prices = 0;
        return 0;
    }
    if (!cJSON_IsObject(v))
        return cfgrow_fail(x, path,
                           "must be \"reject\" or an object of USD prices per 1M tokens");
    top->unknown_usd = (usd3_t){ 0, 0, -1 };   /* cache -1: absent, = input */
    if (cfgrow_apply_object(x, v, path, price_rows, &top->unknown_usd) < 0)
        return -1;
    c->unknown_reject = 0;
    top->unknown_prices = 1;
    return 0;
}

/* Rows for plain config_t fields: a string buffer, or a number with limits. */
#define CSTR(name_, field, flags_) { .key = name_, .kind = CFGROW_STR, .flags = flags_, \
    .off = offsetof(config_t, field), .size = CFGROW_MEMBER_SIZE(config_t, field) }
#define CNUM(name_, kind_, field, lo, hi) { .key = name_, .kind = kind_, \
    .off = offsetof(config_t, field), .min = lo, .max = hi }

static const cfgrow_row_t upstream_rows[] = {
    { .key = "base_url", .kind = CFGROW_CUSTOM, .fn = parse_base_url },
    CSTR("llm_key_env", llm_key_env, CFGROW_ENV),
    CNUM("timeout_s", CFGROW_INT, timeout_s, 1, 86400),
    CSTR("ca_file", ca_file, CFGROW_EMPTY_OK),
    CNUM("h2_connections", CFGROW_INT, h2_connections, 0, 1000),
    { .key = NULL },
};

static const cfgrow_row_t account_rows[] = {
    CSTR("jwt_env", jwt_env, CFGROW_ENV),
    CNUM("sync_s", CFGROW_INT, sync_s, 1, 86400),
    CNUM("max_topups_per_day", CFGROW_INT, max_topups_per_day, 0, 100000),
    { .key = "drift_alert", .kind = CFGROW_CREDITS, .flags = CFGROW_POSITIVE,
      .off = offsetof(config_t, drift_alert) },
    { .key = NULL },
};

static const cfgrow_row_t top_rows[] = {
    { .key = "listen", .kind = CFGROW_CUSTOM, .fn = parse_listen },
    { .key = "upstream", .kind = CFGROW_OBJ, .sub = upstream_rows },
    CSTR("ledger", ledger, 0),
    CSTR("rates_file", rates_file, 0),
    CNUM("rates_sync_s", CFGROW_INT, rates_sync_s, 0, 7 * 86400),
    CNUM("credits_per_usd", CFGROW_POSNUM, credits_per_usd, 0, 0),
    CNUM("default_max_tokens", CFGROW_I64, default_max_tokens, 1, 1e9),
    { .key = "unknown_model", .kind = CFGROW_CUSTOM, .fn = parse_unknown_model },
    CSTR("admin_token_env", admin_token_env, CFGROW_ENV | CFGROW_EMPTY_OK),
    { .key = "account", .kind = CFGROW_OBJ, .sub = account_rows },
    CNUM("max_body_bytes", CFGROW_SIZE, max_body, 1024, 1073741824),
    CNUM("max_connections", CFGROW_INT, max_connections, 1, 1000000),
    CNUM("drain_s", CFGROW_INT, drain_s, 0, 86400),
    CNUM("workers", CFGROW_INT, workers, 1, 64),
    CNUM("client_timeout_s", CFGROW_INT, client_timeout_s, 1, 86400),
    CNUM("log_requests", CFGROW_BOOL, log_requests, 0, 1),
    { .key = "log_format", .kind = CFGROW_CUSTOM, .fn = parse_log_format },
    { .key = "metrics_auth", .kind = CFGROW_CUSTOM, .fn = parse_metrics_auth },
    CNUM("metrics_key_label", CFGROW_BOOL, metrics_key_label, 0, 1),
    { .key = "budget_store", .kind = CFGROW_CUSTOM, .fn = parse_store },
    CSTR("budget_store_password_env", store_password_env, CFGROW_ENV | CFGROW_EMPTY_OK),
    { .key = "on_store_down", .kind = CFGROW_CUSTOM, .fn = parse_store_down },
    CNUM("budget_lease_s", CFGROW_INT, lease_s, 1, 86400 * 2),
    CSTR("instance_id", instance_id, CFGROW_NAME),
    { .key = "teams", .kind = CFGROW_CUSTOM, .fn = config_team_parse },
    { .key = "alerts", .kind = CFGROW_CUSTOM, .fn = config_alerts_parse },
    { .key = NULL },
};

static void set_defaults(config_t *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8787;
    strcpy(c->upstream_base, "https://agents.pinata.cloud");
    strcpy(c->llm_key_env, "PINATA_LLM_KEY");
    c->timeout_s = 600;
    c->h2_connections = 10;
    strcpy(c->ledger, "var/pinmeter.db");
    strcpy(c->rates_file, "conf/rates.json");
    c->credits_per_usd = 1.0;
    c->default_max_tokens = 4096;
    c->unknown_reject = 1;
    strcpy(c->admin_token_env, "PINMETER_ADMIN_TOKEN");
    strcpy(c->jwt_env, "PINATA_JWT");
    c->sync_s = 30;
    c->max_topups_per_day = -1;
    c->drift_alert = -1;
    c->max_body = 8388608;
    c->max_connections = 1024;
    c->drain_s = 30;
    c->client_timeout_s = 30;
    c->alert_account_below = -1;
}

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

config_t *config_parse(const char *json, size_t len, const char *fname,
                       char *err, size_t errlen)
{
    top_t top = { 0 };
    cfgrow_ctx_t x = { .fname = fname ? fname : "config", .err = err, .errlen = errlen,
                       .ud = &top };
    const char *end = NULL;
    cJSON *root = NULL;
    config_t *c;

    if (!json)
        return cfgrow_fail(&x, "", "no JSON text"), NULL;
    if (!(c = malloc(sizeof *c)))
        return cfgrow_fail(&x, "", "out of memory"), NULL;
    set_defaults(c);
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root)                         /* only whitespace may follow */
        while (end < json + len && strchr(" \t\r\n", *end) && *end)
            end++;
    if (!root || (end < json + len && *end)) {
        char where[64];
        int line, col;
        line_col(json, end, &line, &col);
        snprintf(where, sizeof where, "line %d, column %d", line, col);
        cfgrow_fail(&x, where, root ? "unexpected data after the JSON value" : "invalid JSON");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        cfgrow_fail(&x, "", "must be a JSON object");
        goto fail;
    }
    if (cfgrow_apply_object(&x, root, "", top_rows, c) < 0)
        goto fail;
    if (top.unknown_prices) {
        usd3_t *u = &top.unknown_usd;
        if (rate_from_usd(u->in, u->out, u->cache < 0 ? u->in : u->cache,
                          c->credits_per_usd, &c->unknown_rate) < 0) {
            cfgrow_fail(&x, "unknown_model", "price too large at credits_per_usd %g",
                        c->credits_per_usd);
            goto fail;
        }
    }
    if (config_team_check(&x, c) < 0)
        goto fail;
    cJSON_Delete(root);
    return c;
fail:
    cJSON_Delete(root);
    config_free(c);
    return NULL;
}

config_t *config_load(const char *path, char *err, size_t errlen)
{
    cfgrow_ctx_t x = { .fname = path, .err = err, .errlen = errlen };
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    config_t *c = NULL;

    if (!f)
        return cfgrow_fail(&x, "cannot read", "%s", strerror(errno)), NULL;
    if (!(buf = malloc(CONFIG_FILE_MAX + 1))) {
        cfgrow_fail(&x, "cannot read", "out of memory");
        goto out;
    }
    n = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f))
        cfgrow_fail(&x, "cannot read", "%s", strerror(errno));
    else if (n > CONFIG_FILE_MAX)
        cfgrow_fail(&x, "cannot read", "larger than %d bytes", CONFIG_FILE_MAX);
    else if ((c = config_parse(buf, n, path, err, errlen)) &&
             snprintf(c->path, sizeof c->path, "%s", path) >= (int)sizeof c->path) {
        cfgrow_fail(&x, "cannot read", "path longer than %zu bytes", sizeof c->path - 1);
        config_free(c);
        c = NULL;
    } else if (c && c->ca_file[0] && access(c->ca_file, R_OK) != 0) {
        cfgrow_fail(&x, "upstream.ca_file", "cannot read %s: %s", c->ca_file, strerror(errno));
        config_free(c);
        c = NULL;
    }
out:
    free(buf);
    fclose(f);
    return c;
}

void config_free(config_t *c)
{
    if (!c)
        return;
    config_team_free(c->teams, c->n_teams);
    free(c);
}

/* Iterative matcher: on a mismatch after a '*', retry with that star eating
 * one more character. Worst case O(len(pattern) * len(s)), never exponential. */
int config_glob_match(const char *p, const char *s)
{
    const char *star = NULL, *resume = NULL;

    if (!p || !s)
        return 0;
    while (*s) {
        if (*p == '*') {
            star = ++p;
            resume = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star) {
            p = star;
            s = ++resume;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}

int config_model_allowed(const team_conf_t *t, const char *model)
{
    if (!t || !model)
        return 0;
    if (!t->models)
        return 1;
    for (size_t i = 0; i < t->n_models; i++)
        if (config_glob_match(t->models[i], model))
            return 1;
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

rates_t *config_load_rates(const config_t *cfg, char *err, size_t errlen)
{
    size_t len;
    char *txt = read_file(cfg->rates_file, &len);
    if (!txt) {
        snprintf(err, errlen, "%.400s: cannot read the rates file (rates_file in %.400s)",
                 cfg->rates_file, cfg->path);
        return NULL;
    }
    char e[400];
    rates_t *r = rates_parse(txt, len, cfg->credits_per_usd, e, sizeof e);
    free(txt);
    if (!r) snprintf(err, errlen, "%.400s: %.400s", cfg->rates_file, e);
    return r;
}
