/* Unit tests for admit: each refusal with its message, token-limit
 * precedence, the estimate, the depth guard, and the streaming rewrite
 * (checked by parsing the upstream body back with cJSON). */
#include "admit.h"
#include "t.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static char err[256];

/* admit_parse on a heap copy of exactly strlen(s) bytes, so ASan catches
 * reads past the length. */
static int admit(const char *s, admit_req_t *r)
{
    size_t n = strlen(s);
    char *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    err[0] = '\0';
    int rc = admit_parse(b, n, r, err, sizeof err);
    free(b);
    return rc;
}

/* Expects a refusal whose message contains want. */
static int refused(const char *s, const char *want)
{
    admit_req_t r;
    if (admit(s, &r) != -1) {
        admit_free(&r);
        fprintf(stderr, "  accepted: %s\n", s);
        return 0;
    }
    if (!strstr(err, want)) {
        fprintf(stderr, "  for %s: got \"%s\", want \"%s\"\n", s, err, want);
        return 0;
    }
    return 1;
}

static void test_plain_request(void)
{
    admit_req_t r;
    const char *b = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_STR(r.model, "gpt-4o-mini");
    T_EQ_INT(r.stream, 0);
    T_EQ_INT(r.client_wants_usage, 0);
    T_EQ_INT(r.max_tokens, -1);
    T_EQ_INT(r.est_prompt_tokens, (strlen(b) + 2) / 3);
    T_CHECK(r.upstream_body == NULL);
    admit_free(&r);
}

static void test_errors(void)
{
    const char *model_msg = "field 'model' is required and must be a non-empty string";
    T_CHECK(refused("", "request body is not valid JSON"));
    T_CHECK(refused("{\"model\":\"m\",", "request body is not valid JSON"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[]} x", "request body is not valid JSON"));
    T_CHECK(refused("[{\"model\":\"m\"}]", "request body must be a JSON object"));
    T_CHECK(refused("\"hello\"", "request body must be a JSON object"));
    T_CHECK(refused("{\"messages\":[]}", model_msg));
    T_CHECK(refused("{\"model\":\"\",\"messages\":[]}", model_msg));
    T_CHECK(refused("{\"model\":42,\"messages\":[]}", model_msg));
    T_CHECK(refused("{\"model\":null,\"messages\":[]}", model_msg));
    T_CHECK(refused("{\"Model\":\"m\",\"messages\":[]}", model_msg));   /* case-sensitive */
    T_CHECK(refused("{\"model\":\"m\"}", "field 'messages' is required and must be an array"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":\"hi\"}", "field 'messages'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":0}",
                    "field 'max_tokens' must be a positive integer"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":-5}", "field 'max_tokens'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":1.5}", "field 'max_tokens'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":\"10\"}", "field 'max_tokens'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":1e300}", "field 'max_tokens'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":10,\"max_completion_tokens\":true}",
                    "field 'max_completion_tokens' must be a positive integer"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"stream\":\"true\"}",
                    "field 'stream' must be a boolean"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"stream\":1}", "field 'stream'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":true}",
                    "field 'stream_options' must be an object"));
}

static void test_model_length(void)
{
    char b[600], m[ADMIT_MODEL_MAX + 1];
    admit_req_t r;
    memset(m, 'm', sizeof m);
    m[ADMIT_MODEL_MAX - 1] = '\0';                 /* 255 bytes: fits */
    snprintf(b, sizeof b, "{\"model\":\"%s\",\"messages\":[]}", m);
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_INT(strlen(r.model), ADMIT_MODEL_MAX - 1);
    admit_free(&r);
    m[ADMIT_MODEL_MAX - 1] = 'm';                  /* 256 bytes: too long */
    m[ADMIT_MODEL_MAX] = '\0';
    snprintf(b, sizeof b, "{\"model\":\"%s\",\"messages\":[]}", m);
    T_CHECK(refused(b, "field 'model' is too long"));
}

/* The first occurrence is what cJSON sees, the last is what most upstreams
 * use: a repeated key that metering reads must be refused. */
static void test_duplicate_keys(void)
{
    T_CHECK(refused("{\"model\":\"cheap\",\"messages\":[],\"model\":\"dear\"}",
                    "request body repeats the key 'model'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"max_tokens\":1,\"max_tokens\":100000}",
                    "'max_tokens'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"stream\":false,\"stream\":true}", "'stream'"));
    T_CHECK(refused("{\"model\":\"m\",\"mod\\u0065l\":\"x\",\"messages\":[]}", "'model'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":true,\"include_usage\":false}}",
                    "repeats the key 'include_usage'"));
    admit_req_t r;   /* repeats of keys metering ignores are the upstream's business */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"user\":\"a\",\"user\":\"b\"}", &r), 0);
    admit_free(&r);
}

static void test_max_tokens_precedence(void)
{
    admit_req_t r;
    /* both given: the larger, whichever of the two the upstream honours */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"max_tokens\":100,\"max_completion_tokens\":500}", &r), 0);
    T_EQ_INT(r.max_tokens, 500);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"max_tokens\":900,\"max_completion_tokens\":500}", &r), 0);
    T_EQ_INT(r.max_tokens, 900);
    T_EQ_INT(r.n, 1);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"n\":3}", &r), 0);
    T_EQ_INT(r.n, 3);
    admit_free(&r);
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"n\":0}", "'n'"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[],\"n\":129}", "'n'"));
    T_CHECK(refused("{\"model\":\"anthropic/x\\u0000y\",\"messages\":[]}", "u0000"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"a\\u0000\"}]}", "u0000"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"a\tb\"}]}", "control character"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"\xff\"}]}", "UTF-8"));
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"\xc0\xaf\"}]}", "UTF-8"));   /* overlong */
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"\xed\xa0\x80\"}]}", "UTF-8")); /* surrogate */
    T_CHECK(refused("{\"model\":\"m\",\"messages\":[{\"content\":\"\xe2\x82\"}]}", "UTF-8"));   /* cut short */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[{\"content\":\"\xe2\x82\xac \xf0\x9f\x98\x80 \xc3\xa9\"}]}", &r), 0);
    admit_free(&r);
    /* an escaped backslash followed by text u0000 is no NUL */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[{\"content\":\"a\\\\u0000\"}]}", &r), 0);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"max_completion_tokens\":500}", &r), 0);
    T_EQ_INT(r.max_tokens, 500);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"max_tokens\":null,\"max_completion_tokens\":7}", &r), 0);
    T_EQ_INT(r.max_tokens, 7);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"max_tokens\":4096.0}", &r), 0);
    T_EQ_INT(r.max_tokens, 4096);
    admit_free(&r);
}

static void test_estimate(void)
{
    admit_req_t r;
    /* 30 bytes -> 10, 31 -> 11, 32 -> 11 */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[]}   ", &r), 0);
    T_EQ_INT(r.est_prompt_tokens, 10);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[]}    ", &r), 0);
    T_EQ_INT(r.est_prompt_tokens, 11);
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[]}     ", &r), 0);
    T_EQ_INT(r.est_prompt_tokens, 11);
    admit_free(&r);
}

/* Parses the upstream body back and checks include_usage is true. */
static cJSON *upstream_json(const admit_req_t *r)
{
    cJSON *j = r->upstream_body ? cJSON_ParseWithLength(r->upstream_body, r->upstream_len) : NULL;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    T_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "include_usage")));
    T_EQ_INT(strlen(r->upstream_body ? r->upstream_body : ""), r->upstream_len);
    return j;
}

static void test_stream_rewrite_inserts(void)
{
    admit_req_t r;
    const char *b = "  {\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9\"}],"
                    "\"stream\":true,\"seed\":12345678901234567890,\"x_custom\":{\"k\":[1,2]}}";
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_INT(r.stream, 1);
    T_EQ_INT(r.client_wants_usage, 0);
    cJSON *j = upstream_json(&r);
    T_CHECK(j != NULL);
    T_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream")));
    T_CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "messages")) == 1);
    T_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "x_custom"), "k")));
    cJSON_Delete(j);
    /* everything else is the client's bytes, unchanged */
    T_CHECK(strstr(r.upstream_body, "\"seed\":12345678901234567890") != NULL);
    T_CHECK(strstr(r.upstream_body, "h\\u00e9") != NULL);
    T_EQ_INT(r.upstream_len, strlen(b) + strlen("\"stream_options\":{\"include_usage\":true},"));
    admit_free(&r);
    T_CHECK(r.upstream_body == NULL);
}

static void test_stream_rewrite_existing_options(void)
{
    admit_req_t r;
    const char *b = "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"temperature\":0.5,"
                    "\"stream_options\":{\"include_usage\":false,\"other\":1},\"unknown\":[null]}";
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_INT(r.client_wants_usage, 0);
    cJSON *j = upstream_json(&r);
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    T_EQ_INT(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(o, "other")), 1);
    T_CHECK(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(j, "temperature")) == 0.5);
    T_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "unknown")));
    T_EQ_STR(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "model")), "m");
    cJSON_Delete(j);
    admit_free(&r);

    /* options without include_usage, and options: null */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{}}", &r), 0);
    cJSON_Delete(upstream_json(&r));
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":null}", &r), 0);
    j = upstream_json(&r);
    T_EQ_INT(cJSON_GetArraySize(j), 4);   /* replaced, not added twice */
    cJSON_Delete(j);
    admit_free(&r);
}

static void test_stream_client_asked_usage(void)
{
    admit_req_t r;
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":true,"
                   "\"stream_options\":{\"include_usage\":true}}", &r), 0);
    T_EQ_INT(r.stream, 1);
    T_EQ_INT(r.client_wants_usage, 1);
    T_CHECK(r.upstream_body == NULL);     /* forward the original */
    admit_free(&r);
    /* not streaming: stream_options is left to the upstream, no rewrite */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":false,\"stream_options\":7}", &r), 0);
    T_EQ_INT(r.stream, 0);
    T_CHECK(r.upstream_body == NULL);
    admit_free(&r);
}

static void test_depth_limit(void)
{
    admit_req_t r;
    size_t n = 100000;
    char *b = malloc(n);
    memset(b, '[', n);
    T_EQ_INT(admit_parse(b, n, &r, err, sizeof err), -1);
    T_CHECK(strstr(err, "deeper than 64") != NULL);
    free(b);

    /* 64 levels in total is fine, 65 is not; brackets inside strings don't count */
    char ok[512], deep[512];
    int k = snprintf(ok, sizeof ok, "{\"model\":\"[[[{{{\\\"[\",\"messages\":");
    memcpy(deep, ok, (size_t)k);
    for (int i = 0; i < 63; i++)
        ok[k + i] = deep[k + i] = '[';
    deep[k + 63] = '[';
    for (int i = 0; i < 63; i++)
        ok[k + 63 + i] = deep[k + 64 + i] = ']';
    deep[k + 127] = ']';
    ok[k + 126] = deep[k + 128] = '}';
    ok[k + 127] = deep[k + 129] = '\0';
    T_EQ_INT(admit(ok, &r), 0);
    admit_free(&r);
    T_CHECK(refused(deep, "nests deeper than 64 levels"));
}

/* Expects a refusal with exactly the message want; body is s[0, n). */
static int refused_n(const char *s, size_t n, const char *want)
{
    admit_req_t r;
    char *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    err[0] = '\0';
    int rc = admit_parse(b, n, &r, err, sizeof err);
    free(b);
    if (rc != -1) {
        admit_free(&r);
        fprintf(stderr, "  accepted: %.*s\n", (int)n, s);
        return 0;
    }
    if (strcmp(err, want) != 0) {
        fprintf(stderr, "  for %.*s: got \"%s\", want \"%s\"\n", (int)n, s, err, want);
        return 0;
    }
    return 1;
}

static int refused_exactly(const char *s, const char *want)
{
    return refused_n(s, strlen(s), want);
}

/* The limit admitted for "key":num, or -2 if refused. */
static int64_t limit_of(const char *key, const char *num)
{
    char b[256];
    admit_req_t r;
    snprintf(b, sizeof b, "{\"model\":\"m\",\"messages\":[],\"%s\":%s}", key, num);
    if (admit(b, &r) != 0)
        return -2;
    admit_free(&r);
    return strcmp(key, "n") == 0 ? r.n : r.max_tokens;
}

/* A limit is the double strtod reads (as cJSON's valuedouble was): any
 * spelling of an integer counts, anything else is refused. */
static void test_limit_numbers(void)
{
    const char *mt_msg = "field 'max_tokens' must be a positive integer (at most 1000000000)";
    T_EQ_INT(limit_of("max_tokens", "64"), 64);
    T_EQ_INT(limit_of("max_tokens", "64.0"), 64);
    T_EQ_INT(limit_of("max_tokens", "6.4e1"), 64);
    T_EQ_INT(limit_of("max_tokens", "640E-1"), 64);
    T_EQ_INT(limit_of("max_tokens", "0.64e+2"), 64);
    T_EQ_INT(limit_of("max_tokens", "064"), 64);              /* strtod reads it */
    T_EQ_INT(limit_of("max_tokens", "64."), 64);
    T_EQ_INT(limit_of("max_tokens", "64.0000000000000000001"), 64);   /* rounds to 64 */
    T_EQ_INT(limit_of("max_tokens", "1e9"), 1000000000);
    T_EQ_INT(limit_of("max_tokens", "999999999.99999999999"), 1000000000);
    T_EQ_INT(limit_of("max_tokens", "0.99999999999999999999"), 1);
    T_EQ_INT(limit_of("max_tokens", "1000000001"), -2);
    T_EQ_INT(limit_of("max_tokens", "1e400"), -2);            /* inf */
    T_EQ_INT(limit_of("max_tokens", "1e-400"), -2);           /* 0 */
    T_EQ_INT(limit_of("max_tokens", "-0"), -2);
    T_EQ_INT(limit_of("max_tokens", "-64"), -2);
    T_EQ_INT(limit_of("max_tokens", "64.5"), -2);
    T_EQ_INT(limit_of("max_completion_tokens", "6.4e1"), 64);
    T_EQ_INT(limit_of("n", "128.0"), 128);
    T_EQ_INT(limit_of("n", "1.28e2"), 128);
    T_EQ_INT(limit_of("n", "129"), -2);
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":1e400}", mt_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":-0}", mt_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":false}", mt_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_completion_tokens\":0.5}",
        "field 'max_completion_tokens' must be a positive integer (at most 1000000000)"));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"n\":-1}",
        "field 'n' must be a positive integer (at most 1000000000)"));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"n\":1.29e2}", "field 'n' must be at most 128"));
    /* not numbers at all: what strtod leaves unread, or JSON never allows */
    const char *json_msg = "request body is not valid JSON";
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":64e}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":6.4.1}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":+64}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":.5}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"max_tokens\":0x40}", json_msg));
    /* a number longer than any buffer still rounds as strtod does */
    char b[2100];
    int k = snprintf(b, sizeof b, "{\"model\":\"m\",\"messages\":[],\"max_tokens\":64.");
    memset(b + k, '0', 2000);
    snprintf(b + k + 2000, sizeof b - (size_t)k - 2000, "1}");
    admit_req_t r;
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_INT(r.max_tokens, 64);
    admit_free(&r);
}

/* Keys are compared after their escapes are decoded, as C strings: a \u
 * with a non-hex digit stands for U+0000 (cJSON's rule, kept) and ends the
 * key or the model there. */
static void test_escaped_keys(void)
{
    admit_req_t r;
    T_EQ_INT(admit("{\"mod\\u0065l\":\"m\",\"m\\u0065ssages\":[],\"max_tok\\u0065ns\":5}", &r), 0);
    T_EQ_STR(r.model, "m");
    T_EQ_INT(r.max_tokens, 5);
    admit_free(&r);
    T_CHECK(refused_exactly("{\"mod\\u0065l\":\"a\",\"messages\":[],\"m\\u006fdel\":\"b\"}",
                            "request body repeats the key 'model'"));
    /* the first key met twice is named, whichever was first met once */
    T_CHECK(refused_exactly("{\"n\":1,\"model\":\"m\",\"messages\":[],\"model\":\"x\",\"n\":2}",
                            "request body repeats the key 'model'"));
    T_EQ_INT(admit("{\"model\\u00zzjunk\":\"m\",\"messages\":[]}", &r), 0);
    T_EQ_STR(r.model, "m");
    admit_free(&r);
    T_EQ_INT(admit("{\"model\":\"a\\u00zzb\",\"messages\":[]}", &r), 0);
    T_EQ_STR(r.model, "a");
    admit_free(&r);
    T_CHECK(refused_exactly("{\"model\":\"\\u00zz\",\"messages\":[]}",
                            "field 'model' is required and must be a non-empty string"));
    T_EQ_INT(admit("{\"model\":\"caf\\u00e9\\n\\ud83d\\ude00\",\"messages\":[]}", &r), 0);
    T_EQ_STR(r.model, "caf\xc3\xa9\n\xf0\x9f\x98\x80");
    admit_free(&r);
    T_CHECK(refused_exactly("{\"model\":\"\\ud83d\",\"messages\":[]}", "request body is not valid JSON"));
    T_CHECK(refused_exactly("{\"model\":\"\\ude00\",\"messages\":[]}", "request body is not valid JSON"));
    T_CHECK(refused_exactly("{\"model\":\"\\x\",\"messages\":[]}", "request body is not valid JSON"));
    /* an escape decoding to 256 bytes is too long, though written in fewer */
    char b[600], m[300];
    memset(m, 'm', 254);              /* 254 + 2 bytes */
    memcpy(m + 254, "\\u00e9", 7);
    snprintf(b, sizeof b, "{\"model\":\"%s\",\"messages\":[]}", m);
    T_CHECK(refused_exactly(b, "field 'model' is too long (at most 255 bytes)"));
    memcpy(m + 253, "\\u00e9", 7);    /* 253 + 2 bytes */
    snprintf(b, sizeof b, "{\"model\":\"%s\",\"messages\":[]}", m);
    T_EQ_INT(admit(b, &r), 0);
    T_EQ_INT(strlen(r.model), 255);
    admit_free(&r);
    /* include_usage is found escaped too, and repeats are refused escaped */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":true,"
                   "\"stream_options\":{\"include\\u005fusage\":true}}", &r), 0);
    T_EQ_INT(r.client_wants_usage, 1);
    admit_free(&r);
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":"
                            "{\"include_usage\":false,\"include\\u005fusage\":true}}",
                            "field 'stream_options' repeats the key 'include_usage'"));
    /* only stream_options' own members count */
    T_EQ_INT(admit("{\"model\":\"m\",\"messages\":[],\"stream\":true,"
                   "\"stream_options\":{\"x\":{\"include_usage\":true}}}", &r), 0);
    T_EQ_INT(r.client_wants_usage, 0);
    T_CHECK(r.upstream_body != NULL);
    admit_free(&r);
}

/* Whitespace and the BOM as cJSON had them, and the order of refusals. */
static void test_whitespace_and_order(void)
{
    const char *json_msg = "request body is not valid JSON";
    const char *ctl_msg = "request body has a control character or \\u0000 inside a string";
    admit_req_t r;
    T_EQ_INT(admit("\xef\xbb\xbf {\"model\":\"m\",\"messages\":[],\"stream\":true}", &r), 0);
    /* spliced after the root's brace, the BOM kept */
    T_CHECK(r.upstream_body && memcmp(r.upstream_body, "\xef\xbb\xbf {\"stream_options\"", 21) == 0);
    admit_free(&r);
    T_CHECK(refused_exactly(" \xef\xbb\xbf{\"model\":\"m\",\"messages\":[]}", json_msg));
    T_CHECK(refused_exactly("\xef\xbb\xbf{}", "field 'model' is required and must be a non-empty string"));
    T_CHECK(refused_exactly("\xef\xbb\xbf" "1", json_msg));   /* 4 bytes: BOM not skipped */
    /* any byte up to 0x20 separates tokens; after the root only four do */
    static const char nul_ws[] = "\x01{\0\"model\"\x1f:\"m\",\"messages\":[\x7f]}";
    T_CHECK(refused_n(nul_ws, sizeof nul_ws - 1, json_msg));            /* DEL is no space */
    static const char ws[] = "\x01{\0\"model\"\x1f:\"m\",\"messages\":[\x02]} \t\r\n";
    char *b = malloc(sizeof ws - 1);
    memcpy(b, ws, sizeof ws - 1);
    T_EQ_INT(admit_parse(b, sizeof ws - 1, &r, err, sizeof err), 0);
    free(b);
    admit_free(&r);
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[]}\x0b", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[]}\x01", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[],}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[1,]}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[]} {}", json_msg));
    T_CHECK(refused_exactly("   ", json_msg));
    T_CHECK(refused_exactly("1 ", "request body must be a JSON object"));
    T_CHECK(refused_exactly("1e", json_msg));
    T_CHECK(refused_exactly("null", "request body must be a JSON object"));
    /* the byte after a backslash is hidden from the control check, but
     * not from UTF-8, and it must still be an escape */
    T_CHECK(refused_exactly("{\"model\":\"m\\\x01\",\"messages\":[]}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\\\xc3\xa9\",\"messages\":[]}", json_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\\\x80\",\"messages\":[]}", "request body is not valid UTF-8"));
    /* ... unless a broken \u swallowed it: the model is then "" up to the NUL */
    T_CHECK(refused_exactly("{\"model\":\"\\u12\\\x01\",\"messages\":[]}",
                            "field 'model' is required and must be a non-empty string"));
    /* UTF-8 anywhere first, then control bytes and depth, then JSON */
    T_CHECK(refused_exactly("{\"model\":\"m\" x \"\t\xff", "request body is not valid UTF-8"));
    T_CHECK(refused_exactly("{\"model\":\"m\" x \"\t\"", ctl_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\" x \"\\u0000\"", ctl_msg));
    T_CHECK(refused_exactly("{\"model\":\"m\",\"messages\":[]}\"\t\"", ctl_msg));
}

/* Clamps body to tokens and compares what goes upstream with want. */
static void clamp_case(const char *body, int64_t tokens, const char *want)
{
    admit_req_t r;
    char err[256];
    T_EQ_INT(admit_parse(body, strlen(body), &r, err, sizeof err), 0);
    T_EQ_INT(admit_clamp(&r, body, strlen(body), tokens), 0);
    T_EQ_STR(r.upstream_body, want);
    T_EQ_INT(r.upstream_len, strlen(want));
    T_EQ_INT(r.max_tokens, tokens);
    admit_free(&r);
}

static void test_clamp(void)
{
    /* only the limit's digits change; spacing, order and the rest stay */
    clamp_case("{\"model\":\"m\", \"messages\":[], \"max_tokens\" : 4096, \"x\":1e400000}",
               300, "{\"model\":\"m\", \"messages\":[], \"max_tokens\" : 300, \"x\":1e400000}");
    clamp_case("{\"max_completion_tokens\":900,\"model\":\"m\",\"messages\":[]}", 257,
               "{\"max_completion_tokens\":257,\"model\":\"m\",\"messages\":[]}");
    /* both given: both lowered */
    clamp_case("{\"model\":\"m\",\"max_completion_tokens\":900,\"messages\":[],\"max_tokens\":50}",
               40, "{\"model\":\"m\",\"max_completion_tokens\":40,\"messages\":[],\"max_tokens\":40}");
    /* neither: max_tokens added first; a null one is replaced, not repeated */
    clamp_case(" {\"model\":\"m\",\"messages\":[]}", 512,
               " {\"max_tokens\":512,\"model\":\"m\",\"messages\":[]}");
    clamp_case("{\"model\":\"m\",\"messages\":[],\"max_tokens\":null}", 8,
               "{\"model\":\"m\",\"messages\":[],\"max_tokens\":8}");
    /* a stream whose usage option was spliced in keeps it */
    clamp_case("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"max_tokens\":1000}", 600,
               "{\"stream_options\":{\"include_usage\":true},\"model\":\"m\",\"messages\":[],"
               "\"stream\":true,\"max_tokens\":600}");
    admit_req_t r;
    char err[64];
    const char *b = "{\"model\":\"m\",\"messages\":[]}";
    T_EQ_INT(admit_parse(b, strlen(b), &r, err, sizeof err), 0);
    T_EQ_INT(admit_clamp(&r, b, strlen(b), 0), -1);
    T_CHECK(r.upstream_body == NULL);
    admit_free(&r);
}

int main(void)
{
    T_RUN(test_plain_request);
    T_RUN(test_errors);
    T_RUN(test_model_length);
    T_RUN(test_duplicate_keys);
    T_RUN(test_max_tokens_precedence);
    T_RUN(test_estimate);
    T_RUN(test_stream_rewrite_inserts);
    T_RUN(test_stream_rewrite_existing_options);
    T_RUN(test_stream_client_asked_usage);
    T_RUN(test_depth_limit);
    T_RUN(test_limit_numbers);
    T_RUN(test_escaped_keys);
    T_RUN(test_whitespace_and_order);
    T_RUN(test_clamp);
    return t_summary("admit");
}
