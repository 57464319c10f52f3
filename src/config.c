/* config: parses pinmeter's JSON config into a fresh config_t and validates it
 * as a whole; the caller swaps it in only when this returns non-NULL.
 *
 * Every object is described by a table of rows (key, type, where it goes,
 * limits); one walker applies a table to an object, so every key is
 * type-checked the same way, unknown keys are rejected at every level (typos
 * must not pass silently) and keys starting with "_" or "//" are comments.
 * Cross-entry rules (unique names and keys, prices needing credits_per_usd)
 * run after the walk. Errors read "FILE: KEY: why" with KEY a JSON path such
 * as teams[0].keys[1].sha256. Only config_load does I/O. */
#include "config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_MAX (1 << 20)     /* a config beyond 1 MiB is a mistake */
#define KEY_PATH_MAX 256
#define MEMBER_SIZE(T, m) sizeof(((T *)0)->m)

typedef struct usd3 { double in, out, cache; } usd3_t;

typedef struct pctx {
    const char *fname;
    char *err;
    size_t errlen;
    config_t *c;
    int unknown_prices;               /* unknown_model given as an object */
    usd3_t unknown_usd;
} pctx_t;

typedef int (*custom_fn)(pctx_t *x, const cJSON *v, const char *path, void *base);

enum kind { K_STR, K_INT, K_I64, K_SIZE, K_POSNUM, K_USD, K_OBJ, K_CUSTOM, K_BOOL };
enum { F_REQUIRED = 1, F_EMPTY_OK = 2, F_ENV = 4, F_NAME = 8 };

/* One key of an object: its type, where it is stored (offset into the struct
 * the walker fills) and its limits. Tables end with a row whose key is NULL. */
typedef struct row {
    const char *key;
    enum kind kind;
    int flags;
    size_t off;
    size_t size;                      /* K_STR: buffer size, NUL included */
    double min, max;                  /* K_INT, K_I64, K_SIZE */
    custom_fn fn;                     /* K_CUSTOM */
    const struct row *sub;            /* K_OBJ: the nested object's rows */
} row_t;

static int fail(pctx_t *x, const char *path, const char *fmt, ...)
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
    if (snprintf(out, KEY_PATH_MAX, "%s%s%s", path, *path ? "." : "", key) < 0)
        out[0] = '\0';
}

static void join_index(char *out, const char *path, size_t i)
{
    if (snprintf(out, KEY_PATH_MAX, "%s[%zu]", path, i) < 0)
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

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

static int apply_object(pctx_t *x, const cJSON *obj, const char *path,
                        const row_t *rows, void *base);

static int apply_str(pctx_t *x, const row_t *r, const cJSON *v, const char *path,
                     char *dst)
{
    const char *s;
    if (!cJSON_IsString(v))
        return fail(x, path, "must be a string");
    s = v->valuestring;
    if (strlen(s) >= r->size)
        return fail(x, path, "too long (max %zu bytes)", r->size - 1);
    if (!*s && !(r->flags & F_EMPTY_OK))
        return fail(x, path, "must not be empty");
    if (*s && (r->flags & F_ENV) && !env_name_ok(s))
        return fail(x, path, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    if ((r->flags & F_NAME) && !name_ok(s))
        return fail(x, path, "may contain only letters, digits, '_', '.' and '-'");
    memcpy(dst, s, strlen(s) + 1);
    return 0;
}

static int apply_row(pctx_t *x, const row_t *r, const cJSON *v, const char *path,
                     void *base)
{
    char *dst = (char *)base + r->off;
    double d = v->valuedouble;

    switch (r->kind) {
    case K_STR:
        return apply_str(x, r, v, path, dst);
    case K_OBJ:
        return apply_object(x, v, path, r->sub, base);
    case K_CUSTOM:
        return r->fn(x, v, path, base);
    case K_BOOL:
        if (!cJSON_IsBool(v))
            return fail(x, path, "must be true or false");
        *(int *)(void *)dst = cJSON_IsTrue(v);
        return 0;
    case K_POSNUM:
        if (!cJSON_IsNumber(v) || !isfinite(d) || d <= 0)
            return fail(x, path, "must be a number > 0");
        *(double *)(void *)dst = d;
        return 0;
    case K_USD:
        if (!cJSON_IsNumber(v) || !isfinite(d) || d < 0 || d > RATES_MAX_USD)
            return fail(x, path, "must be a number from 0 to %g (USD per 1M tokens)",
                        RATES_MAX_USD);
        *(double *)(void *)dst = d;
        return 0;
    default:                          /* integers */
        if (!cJSON_IsNumber(v) || !isfinite(d) || d != floor(d) ||
            d < r->min || d > r->max)
            return fail(x, path, "must be an integer from %.0f to %.0f", r->min, r->max);
        if (r->kind == K_INT)
            *(int *)(void *)dst = (int)d;
        else if (r->kind == K_I64)
            *(int64_t *)(void *)dst = (int64_t)d;
        else
            *(size_t *)(void *)dst = (size_t)d;
        return 0;
    }
}

/* Applies rows to the object obj, storing into base. */
static int apply_object(pctx_t *x, const cJSON *obj, const char *path,
                        const row_t *rows, void *base)
{
    unsigned long seen = 0;           /* one bit per row; tables stay small */
    char sub[KEY_PATH_MAX];

    if (!cJSON_IsObject(obj))
        return fail(x, path, "must be an object");
    for (const cJSON *v = obj->child; v; v = v->next) {
        size_t i = 0;
        if (is_comment(v->string))
            continue;
        join_key(sub, path, v->string);
        while (rows[i].key && strcmp(rows[i].key, v->string) != 0)
            i++;
        if (!rows[i].key)
            return fail(x, sub, "unknown key (comment keys start with \"_\")");
        if (seen & (1ul << i))
            return fail(x, sub, "duplicate key");
        seen |= 1ul << i;
        if (apply_row(x, &rows[i], v, sub, base) < 0)
            return -1;
    }
    for (size_t i = 0; rows[i].key; i++) {
        if ((rows[i].flags & F_REQUIRED) && !(seen & (1ul << i))) {
            join_key(sub, path, rows[i].key);
            return fail(x, sub, "missing");
        }
    }
    return 0;
}

/* ---- custom keys ---- */

static int parse_listen(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s, *colon, *host;
    size_t hlen;
    long port = 0;

    if (!cJSON_IsString(v))
        return fail(x, path, "must be a string \"HOST:PORT\"");
    s = v->valuestring;
    if (!(colon = strrchr(s, ':')))
        return fail(x, path, "must be \"HOST:PORT\" (e.g. 127.0.0.1:8787 or [::1]:8787)");
    host = s;
    hlen = (size_t)(colon - s);
    if (*s == '[') {
        if (hlen < 2 || s[hlen - 1] != ']')
            return fail(x, path, "an IPv6 host must be written [ADDR]:PORT");
        host++;
        hlen -= 2;
    }
    if (hlen == 0)
        return fail(x, path, "host is empty");
    if (hlen >= sizeof c->listen_host)
        return fail(x, path, "host too long");
    if (memchr(host, '[', hlen) || memchr(host, ']', hlen) || memchr(host, ' ', hlen) ||
        (*s != '[' && memchr(host, ':', hlen)))
        return fail(x, path, "bad host (an IPv6 address must be in brackets, e.g. [::1]:8787)");
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || port > 65535)
            return fail(x, path, "port must be a number from 1 to 65535");
        port = port * 10 + (*p - '0');
    }
    if (port < 1 || port > 65535)
        return fail(x, path, "port must be a number from 1 to 65535");
    memcpy(c->listen_host, host, hlen);
    c->listen_host[hlen] = '\0';
    c->listen_port = (int)port;
    return 0;
}

static int parse_base_url(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s;
    size_t n, scheme;

    if (!cJSON_IsString(v))
        return fail(x, path, "must be a string");
    s = v->valuestring;
    scheme = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (!scheme)
        return fail(x, path, "must start with http:// or https://");
    n = strlen(s);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
            return fail(x, path, "must not contain spaces or control characters");
    while (n > scheme && s[n - 1] == '/')
        n--;
    if (n == scheme)
        return fail(x, path, "must be a URL with a host, e.g. https://agents.pinata.cloud");
    if (n >= sizeof c->upstream_base)
        return fail(x, path, "too long");
    memcpy(c->upstream_base, s, n);
    c->upstream_base[n] = '\0';
    return 0;
}

/* redis://HOST[:PORT][/DB]; no credentials in the URL (the password comes
 * from the environment variable budget_store_password_env names). */
static int parse_store(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    const char *s, *h, *end;
    long port = 6379, db = 0;

    if (!cJSON_IsString(v))
        return fail(x, path, "must be a string \"redis://HOST:PORT/DB\"");
    s = v->valuestring;
    if (!*s)
        return 0;                     /* "" = the in-process book */
    if (strncmp(s, "rediss://", 9) == 0)
        return fail(x, path, "rediss:// (TLS) needs hiredis built with TLS, which this build "
                    "(Debian 12's hiredis 0.14) lacks; use redis:// on a private network "
                    "or a TLS tunnel");
    if (strncmp(s, "redis://", 8) != 0)
        return fail(x, path, "must start with redis:// (e.g. redis://127.0.0.1:6379/0)");
    if (strlen(s) >= sizeof c->store_url)
        return fail(x, path, "too long");
    h = s + 8;
    if (strchr(h, '@'))
        return fail(x, path, "must not contain credentials; put the password in the "
                    "environment variable named by budget_store_password_env");
    if (*h == '[') {
        if (!(end = strchr(h, ']')))
            return fail(x, path, "an IPv6 host must be written [ADDR]");
        h++;
    } else {
        end = h + strcspn(h, ":/");
    }
    if (end == h || (size_t)(end - h) >= sizeof c->store_host)
        return fail(x, path, "needs a host, e.g. redis://127.0.0.1:6379/0");
    memcpy(c->store_host, h, (size_t)(end - h));
    c->store_host[end - h] = '\0';
    if (*end == ']')
        end++;
    if (*end == ':') {
        char *e;
        port = strtol(end + 1, &e, 10);
        if (e == end + 1 || port < 1 || port > 65535)
            return fail(x, path, "port must be a number from 1 to 65535");
        end = e;
    }
    if (*end == '/' && end[1]) {
        char *e;
        db = strtol(end + 1, &e, 10);
        if (e == end + 1 || *e || db < 0 || db > 1000000)
            return fail(x, path, "database must be a number, e.g. redis://127.0.0.1:6379/0");
        end = e;
    } else if (*end == '/') {
        end++;
    }
    if (*end)
        return fail(x, path, "unexpected \"%.40s\" (want redis://HOST[:PORT][/DB])", end);
    memcpy(c->store_url, s, strlen(s) + 1);
    c->store_port = (int)port;
    c->store_db = (int)db;
    return 0;
}

static int parse_store_down(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "closed") == 0)
        c->store_down_local = 0;
    else if (cJSON_IsString(v) && strcmp(v->valuestring, "local") == 0)
        c->store_down_local = 1;
    else
        return fail(x, path, "must be \"closed\" or \"local\"");
    return 0;
}

static const row_t price_rows[] = {
    { .key = "input_usd_per_1m_tokens", .kind = K_USD, .flags = F_REQUIRED,
      .off = offsetof(usd3_t, in) },
    { .key = "output_usd_per_1m_tokens", .kind = K_USD, .flags = F_REQUIRED,
      .off = offsetof(usd3_t, out) },
    { .key = "cache_read_usd_per_1m_tokens", .kind = K_USD,
      .off = offsetof(usd3_t, cache) },
    { .key = NULL },
};

static int parse_unknown_model(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "reject") == 0) {
        c->unknown_reject = 1;
        x->unknown_prices = 0;
        return 0;
    }
    if (!cJSON_IsObject(v))
        return fail(x, path, "must be \"reject\" or an object of USD prices per 1M tokens");
    x->unknown_usd = (usd3_t){ 0, 0, -1 };   /* cache -1: absent, = input */
    if (apply_object(x, v, path, price_rows, &x->unknown_usd) < 0)
        return -1;
    c->unknown_reject = 0;
    x->unknown_prices = 1;
    return 0;
}

static int parse_cap(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (cJSON_IsNull(v)) {
        t->cap = -1;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
        money_from_double(v->valuedouble, &t->cap) < 0)
        return fail(x, path, "must be a number of credits from 0 to 9e9 (omit for no cap)");
    return 0;
}

static int parse_period(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    if (!cJSON_IsString(v) || config_period_parse(v->valuestring, &t->period) < 0)
        return fail(x, path, "must be \"day\", \"week\", \"month\" or \"none\"");
    return 0;
}

static int parse_models(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    char sub[KEY_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return fail(x, path, "must be an array of model ids or globs");
    if (!v->child)
        return fail(x, path, "must not be empty (omit it to allow every priced model)");
    t->n_models = (size_t)cJSON_GetArraySize(v);
    if (!(t->models = calloc(t->n_models, sizeof *t->models)))
        return fail(x, path, "out of memory");
    for (const cJSON *m = v->child; m; m = m->next, i++) {
        join_index(sub, path, i);
        if (!cJSON_IsString(m) || !m->valuestring[0])
            return fail(x, sub, "must be a non-empty string");
        if (!(t->models[i] = dup_str(m->valuestring)))
            return fail(x, sub, "out of memory");
    }
    return 0;
}

static int parse_sha256(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    key_conf_t *k = base;
    static const char hex[] = "0123456789abcdef0123456789ABCDEF";
    const char *s = cJSON_IsString(v) ? v->valuestring : NULL;

    if (!s || strlen(s) != 64 || strspn(s, hex) != 64)
        return fail(x, path, "must be 64 hex characters (the SHA-256 of the key)");
    for (size_t i = 0; i < 32; i++) {
        int hi = (int)(strchr(hex, s[2 * i]) - hex) % 16;
        int lo = (int)(strchr(hex, s[2 * i + 1]) - hex) % 16;
        k->sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

static const row_t key_rows[] = {
    { .key = "id", .kind = K_STR, .flags = F_REQUIRED | F_NAME,
      .off = offsetof(key_conf_t, id), .size = MEMBER_SIZE(key_conf_t, id) },
    { .key = "sha256", .kind = K_CUSTOM, .flags = F_REQUIRED, .fn = parse_sha256 },
    { .key = NULL },
};

static int parse_keys(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    team_conf_t *t = base;
    char sub[KEY_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return fail(x, path, "must be an array of {\"id\", \"sha256\"}");
    t->n_keys = (size_t)cJSON_GetArraySize(v);
    if (t->n_keys && !(t->keys = calloc(t->n_keys, sizeof *t->keys)))
        return fail(x, path, "out of memory");
    for (const cJSON *k = v->child; k; k = k->next, i++) {
        join_index(sub, path, i);
        if (apply_object(x, k, sub, key_rows, &t->keys[i]) < 0)
            return -1;
    }
    return 0;
}

static const row_t team_rows[] = {
    { .key = "name", .kind = K_STR, .flags = F_REQUIRED | F_NAME,
      .off = offsetof(team_conf_t, name), .size = MEMBER_SIZE(team_conf_t, name) },
    { .key = "cap", .kind = K_CUSTOM, .fn = parse_cap },
    { .key = "period", .kind = K_CUSTOM, .fn = parse_period },
    { .key = "models", .kind = K_CUSTOM, .fn = parse_models },
    { .key = "keys", .kind = K_CUSTOM, .fn = parse_keys },
    { .key = NULL },
};

static int parse_teams(pctx_t *x, const cJSON *v, const char *path, void *base)
{
    config_t *c = base;
    char sub[KEY_PATH_MAX];
    size_t i = 0;

    if (!cJSON_IsArray(v))
        return fail(x, path, "must be an array of teams");
    c->n_teams = (size_t)cJSON_GetArraySize(v);
    if (c->n_teams && !(c->teams = calloc(c->n_teams, sizeof *c->teams)))
        return fail(x, path, "out of memory");
    for (const cJSON *t = v->child; t; t = t->next, i++) {
        c->teams[i].cap = -1;
        c->teams[i].period = PERIOD_MONTH;
        join_index(sub, path, i);
        if (apply_object(x, t, sub, team_rows, &c->teams[i]) < 0)
            return -1;
    }
    return 0;
}

/* Rows for plain config_t fields: a string buffer, or a number with limits. */
#define CSTR(name_, field, flags_) { .key = name_, .kind = K_STR, .flags = flags_, \
    .off = offsetof(config_t, field), .size = MEMBER_SIZE(config_t, field) }
#define CNUM(name_, kind_, field, lo, hi) { .key = name_, .kind = kind_, \
    .off = offsetof(config_t, field), .min = lo, .max = hi }

static const row_t upstream_rows[] = {
    { .key = "base_url", .kind = K_CUSTOM, .fn = parse_base_url },
    CSTR("llm_key_env", llm_key_env, F_ENV),
    CNUM("timeout_s", K_INT, timeout_s, 1, 86400),
    { .key = NULL },
};

static const row_t account_rows[] = {
    CSTR("jwt_env", jwt_env, F_ENV),
    CNUM("sync_s", K_INT, sync_s, 1, 86400),
    { .key = NULL },
};

static const row_t top_rows[] = {
    { .key = "listen", .kind = K_CUSTOM, .fn = parse_listen },
    { .key = "upstream", .kind = K_OBJ, .sub = upstream_rows },
    CSTR("ledger", ledger, 0),
    CSTR("rates_file", rates_file, 0),
    CNUM("credits_per_usd", K_POSNUM, credits_per_usd, 0, 0),
    CNUM("default_max_tokens", K_I64, default_max_tokens, 1, 1e9),
    { .key = "unknown_model", .kind = K_CUSTOM, .fn = parse_unknown_model },
    CSTR("admin_token_env", admin_token_env, F_ENV | F_EMPTY_OK),
    { .key = "account", .kind = K_OBJ, .sub = account_rows },
    CNUM("max_body_bytes", K_SIZE, max_body, 1024, 1073741824),
    CNUM("max_connections", K_INT, max_connections, 1, 1000000),
    CNUM("drain_s", K_INT, drain_s, 0, 86400),
    CNUM("client_timeout_s", K_INT, client_timeout_s, 1, 86400),
    CNUM("log_requests", K_BOOL, log_requests, 0, 1),
    { .key = "budget_store", .kind = K_CUSTOM, .fn = parse_store },
    CSTR("budget_store_password_env", store_password_env, F_ENV | F_EMPTY_OK),
    { .key = "on_store_down", .kind = K_CUSTOM, .fn = parse_store_down },
    CNUM("budget_lease_s", K_INT, lease_s, 1, 86400 * 2),
    CSTR("instance_id", instance_id, F_NAME),
    { .key = "teams", .kind = K_CUSTOM, .fn = parse_teams },
    { .key = NULL },
};

/* ---- whole-config rules ---- */

/* Unique team names, key ids unique within a team, key hashes unique across
 * all teams (one key must map to exactly one team). Quadratic in the number
 * of keys, which is fine for the hundreds a config file holds. */
static int check_unique(pctx_t *x)
{
    const config_t *c = x->c;
    char path[KEY_PATH_MAX];

    for (size_t i = 0; i < c->n_teams; i++) {
        const team_conf_t *t = &c->teams[i];
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->teams[j].name, t->name) == 0) {
                snprintf(path, sizeof path, "teams[%zu].name", i);
                return fail(x, path, "duplicate of teams[%zu].name \"%s\"", j, t->name);
            }
        for (size_t k = 0; k < t->n_keys; k++) {
            for (size_t l = 0; l < k; l++)
                if (strcmp(t->keys[l].id, t->keys[k].id) == 0) {
                    snprintf(path, sizeof path, "teams[%zu].keys[%zu].id", i, k);
                    return fail(x, path, "duplicate of teams[%zu].keys[%zu].id \"%s\"",
                                i, l, t->keys[k].id);
                }
            for (size_t j = 0; j <= i; j++)      /* every earlier key */
                for (size_t l = 0; l < (j == i ? k : c->teams[j].n_keys); l++)
                    if (memcmp(c->teams[j].keys[l].sha256, t->keys[k].sha256, 32) == 0) {
                        snprintf(path, sizeof path, "teams[%zu].keys[%zu].sha256", i, k);
                        return fail(x, path, "same key as teams[%zu].keys[%zu]", j, l);
                    }
        }
    }
    return 0;
}

static void set_defaults(config_t *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen_host, "127.0.0.1");
    c->listen_port = 8787;
    strcpy(c->upstream_base, "https://agents.pinata.cloud");
    strcpy(c->llm_key_env, "PINATA_LLM_KEY");
    c->timeout_s = 600;
    strcpy(c->ledger, "var/pinmeter.db");
    strcpy(c->rates_file, "conf/rates.json");
    c->credits_per_usd = 1.0;
    c->default_max_tokens = 4096;
    c->unknown_reject = 1;
    strcpy(c->admin_token_env, "PINMETER_ADMIN_TOKEN");
    strcpy(c->jwt_env, "PINATA_JWT");
    c->sync_s = 30;
    c->max_body = 8388608;
    c->max_connections = 1024;
    c->drain_s = 30;
    c->client_timeout_s = 30;
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
    pctx_t x = { .fname = fname ? fname : "config", .err = err, .errlen = errlen };
    const char *end = NULL;
    cJSON *root = NULL;

    if (!json)
        return fail(&x, "", "no JSON text"), NULL;
    if (!(x.c = malloc(sizeof *x.c)))
        return fail(&x, "", "out of memory"), NULL;
    set_defaults(x.c);
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (root)                         /* only whitespace may follow */
        while (end < json + len && strchr(" \t\r\n", *end) && *end)
            end++;
    if (!root || (end < json + len && *end)) {
        char where[64];
        int line, col;
        line_col(json, end, &line, &col);
        snprintf(where, sizeof where, "line %d, column %d", line, col);
        fail(&x, where, root ? "unexpected data after the JSON value" : "invalid JSON");
        goto fail;
    }
    if (!cJSON_IsObject(root)) {
        fail(&x, "", "must be a JSON object");
        goto fail;
    }
    if (apply_object(&x, root, "", top_rows, x.c) < 0)
        goto fail;
    if (x.unknown_prices) {
        usd3_t *u = &x.unknown_usd;
        if (rate_from_usd(u->in, u->out, u->cache < 0 ? u->in : u->cache,
                          x.c->credits_per_usd, &x.c->unknown_rate) < 0) {
            fail(&x, "unknown_model", "price too large at credits_per_usd %g",
                 x.c->credits_per_usd);
            goto fail;
        }
    }
    if (check_unique(&x) < 0)
        goto fail;
    cJSON_Delete(root);
    return x.c;
fail:
    cJSON_Delete(root);
    config_free(x.c);
    return NULL;
}

config_t *config_load(const char *path, char *err, size_t errlen)
{
    pctx_t x = { .fname = path, .err = err, .errlen = errlen };
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n;
    config_t *c = NULL;

    if (!f)
        return fail(&x, "cannot read", "%s", strerror(errno)), NULL;
    if (!(buf = malloc(CONFIG_FILE_MAX + 1))) {
        fail(&x, "cannot read", "out of memory");
        goto out;
    }
    n = fread(buf, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f))
        fail(&x, "cannot read", "%s", strerror(errno));
    else if (n > CONFIG_FILE_MAX)
        fail(&x, "cannot read", "larger than %d bytes", CONFIG_FILE_MAX);
    else if ((c = config_parse(buf, n, path, err, errlen)) &&
             snprintf(c->path, sizeof c->path, "%s", path) >= (int)sizeof c->path) {
        fail(&x, "cannot read", "path longer than %zu bytes", sizeof c->path - 1);
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
    for (size_t i = 0; i < c->n_teams; i++) {
        team_conf_t *t = &c->teams[i];
        for (size_t m = 0; m < t->n_models && t->models; m++)
            free(t->models[m]);
        free(t->models);
        free(t->keys);
    }
    free(c->teams);
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
