/* fuzz_config: config_parse on arbitrary bytes. A config that is accepted
 * must satisfy every limit the header and the parser's tables promise; a
 * refused one must come with a "fuzz.json: KEY: why" message, truncated
 * cleanly into a small buffer and omitted safely with no buffer.
 *
 * The same bytes, split at the first NUL (or in the middle when there is
 * none), are also a pattern and a string for config_glob_match, which is
 * compared with a straightforward dynamic-programming matcher. */
#include "config.h"
#include "fuzz.h"

#include <math.h>
#include <string.h>

#define FNAME "fuzz.json"

static int is_name(const char *s)
{
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                     "0123456789_.-") == strlen(s);
}

static int nul_in(const char *buf, size_t size)
{
    return memchr(buf, '\0', size) != NULL;
}

static void check_team(const config_t *c, size_t i, const char *probe)
{
    const team_conf_t *t = &c->teams[i];

    FUZZ_CHECK(nul_in(t->name, sizeof t->name) && t->name[0] && is_name(t->name));
    FUZZ_CHECK(t->cap >= -1);
    FUZZ_CHECK(t->cap <= 9000000000LL * 1000000000LL);
    FUZZ_CHECK(t->period == PERIOD_NONE || t->period == PERIOD_DAY ||
               t->period == PERIOD_WEEK || t->period == PERIOD_MONTH);
    FUZZ_CHECK(strcmp(config_period_name(t->period), "unknown") != 0);
    FUZZ_CHECK((t->models == NULL) == (t->n_models == 0));
    for (size_t m = 0; m < t->n_models; m++)
        FUZZ_CHECK(t->models[m] && t->models[m][0]);
    FUZZ_CHECK(t->n_keys == 0 || t->keys != NULL);
    for (size_t k = 0; k < t->n_keys; k++) {
        FUZZ_CHECK(nul_in(t->keys[k].id, sizeof t->keys[k].id));
        FUZZ_CHECK(t->keys[k].id[0] && is_name(t->keys[k].id));
        for (size_t l = 0; l < k; l++)
            FUZZ_CHECK(strcmp(t->keys[l].id, t->keys[k].id) != 0);
        /* one key maps to exactly one team */
        for (size_t j = 0; j <= i; j++)
            for (size_t l = 0; l < (j == i ? k : c->teams[j].n_keys); l++)
                FUZZ_CHECK(memcmp(c->teams[j].keys[l].sha256, t->keys[k].sha256, 32) != 0);
    }
    for (size_t j = 0; j < i; j++)
        FUZZ_CHECK(strcmp(c->teams[j].name, t->name) != 0);

    int allowed = config_model_allowed(t, probe);
    FUZZ_CHECK(allowed == 0 || allowed == 1);
    if (!t->models)
        FUZZ_CHECK(allowed == 1);
    for (size_t m = 0; m < t->n_models; m++)   /* '*' matches a literal '*' too */
        FUZZ_CHECK(config_model_allowed(t, t->models[m]) == 1);
}

static void check_config(const config_t *c, const char *probe)
{
    FUZZ_CHECK(c->path[0] == '\0');
    FUZZ_CHECK(nul_in(c->listen_host, sizeof c->listen_host) && c->listen_host[0]);
    FUZZ_CHECK(c->listen_port >= 1 && c->listen_port <= 65535);

    size_t n = strnlen(c->upstream_base, sizeof c->upstream_base);
    FUZZ_CHECK(n < sizeof c->upstream_base);
    size_t scheme = strncmp(c->upstream_base, "https://", 8) == 0 ? 8 :
                    strncmp(c->upstream_base, "http://", 7) == 0 ? 7 : 0;
    FUZZ_CHECK(scheme && n > scheme && c->upstream_base[n - 1] != '/');

    FUZZ_CHECK(nul_in(c->llm_key_env, sizeof c->llm_key_env) && c->llm_key_env[0]);
    FUZZ_CHECK(nul_in(c->ledger, sizeof c->ledger) && c->ledger[0]);
    FUZZ_CHECK(nul_in(c->rates_file, sizeof c->rates_file) && c->rates_file[0]);
    FUZZ_CHECK(nul_in(c->admin_token_env, sizeof c->admin_token_env));
    FUZZ_CHECK(nul_in(c->jwt_env, sizeof c->jwt_env) && c->jwt_env[0]);
    FUZZ_CHECK(c->timeout_s >= 1 && c->timeout_s <= 86400);
    FUZZ_CHECK(c->sync_s >= 1 && c->sync_s <= 86400);
    FUZZ_CHECK(c->drain_s >= 0 && c->drain_s <= 86400);
    FUZZ_CHECK(c->max_connections >= 1 && c->max_connections <= 1000000);
    FUZZ_CHECK(c->max_body >= 1024 && c->max_body <= 1073741824);
    FUZZ_CHECK(isfinite(c->credits_per_usd) && c->credits_per_usd > 0);
    FUZZ_CHECK(c->default_max_tokens >= 1 && c->default_max_tokens <= 1000000000);
    FUZZ_CHECK(c->unknown_reject == 0 || c->unknown_reject == 1);
    if (!c->unknown_reject)
        FUZZ_CHECK(c->unknown_rate.input >= 0 && c->unknown_rate.output >= 0 &&
                   c->unknown_rate.cache_read >= 0);
    FUZZ_CHECK(c->n_teams == 0 || c->teams != NULL);
    for (size_t i = 0; i < c->n_teams; i++)
        check_team(c, i, probe);
}

/* Reference glob: '*' matches any run of bytes, anything else itself. */
static int glob_ref(const char *p, const char *s)
{
    size_t pl = strlen(p), sl = strlen(s);
    unsigned char *row = calloc(sl + 1, 1), *next = calloc(sl + 1, 1);
    int r;

    if (!row || !next)
        abort();
    row[0] = 1;                       /* empty pattern matches empty string */
    for (size_t i = 0; i < pl; i++) {
        memset(next, 0, sl + 1);
        for (size_t j = 0; j <= sl; j++) {
            if (p[i] == '*')
                next[j] = row[j] || (j > 0 && next[j - 1]);
            else
                next[j] = j > 0 && row[j - 1] && p[i] == s[j - 1];
        }
        unsigned char *t = row;
        row = next;
        next = t;
    }
    r = row[sl];
    free(row);
    free(next);
    return r;
}

static void check_glob(const uint8_t *data, size_t size, char **probe)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t cut = nul ? (size_t)(nul - data) : size / 2;
    size_t rest = nul ? cut + 1 : cut;
    char *pat = fuzz_dup(data, cut, 1);
    char *str = fuzz_dup(data + rest, size - rest, 1);

    int got = config_glob_match(pat, str);
    FUZZ_CHECK(got == 0 || got == 1);
    if ((strlen(pat) + 1) * (strlen(str) + 1) <= 65536)   /* keep runs fast */
        FUZZ_CHECK(got == glob_ref(pat, str));
    FUZZ_CHECK(config_glob_match(str, str) == 1);   /* a string matches itself */
    FUZZ_CHECK(config_glob_match("*", str) == 1);
    FUZZ_CHECK(config_glob_match(NULL, str) == 0 && config_glob_match(pat, NULL) == 0);

    period_t p;
    if (config_period_parse(str, &p) == 0)
        FUZZ_CHECK(strcmp(config_period_name(p), str) == 0);
    free(pat);
    *probe = str;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = fuzz_dup(data, size, 0);
    char err[512], small[24], *probe = NULL;
    size_t small_len = 1 + size % sizeof small;

    check_glob(data, size, &probe);

    memset(err, 'x', sizeof err);
    config_t *c = config_parse(json, size, FNAME, err, sizeof err);
    if (c) {
        check_config(c, probe);
        config_free(c);
    } else {
        FUZZ_CHECK(nul_in(err, sizeof err));
        FUZZ_CHECK(strncmp(err, FNAME ": ", sizeof FNAME + 1) == 0);
        FUZZ_CHECK(strlen(err) > sizeof FNAME + 1);
    }

    /* the verdict does not depend on the error buffer; a short one holds a
     * prefix of the message */
    memset(small, 'x', sizeof small);
    config_t *c2 = config_parse(json, size, FNAME, small, small_len);
    FUZZ_CHECK((c2 != NULL) == (c != NULL));
    if (!c2) {
        FUZZ_CHECK(nul_in(small, small_len));
        FUZZ_CHECK(strncmp(small, err, strlen(small)) == 0);
    }
    config_free(c2);
    config_t *c3 = config_parse(json, size, FNAME, NULL, 0);
    FUZZ_CHECK((c3 != NULL) == (c != NULL));
    config_free(c3);

    free(probe);
    free(json);
    return 0;
}
