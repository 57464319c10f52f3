/* fuzz_admit: admit_parse on an arbitrary request body. On success the facts
 * metering relies on must hold (model non-empty and NUL-terminated, prompt
 * estimate ceil(len / 3), max_tokens -1 or 1..1e9 and the larger of the two
 * limits, n 1..ADMIT_MAX_CHOICES), no string may hold a NUL (C strings would
 * cut it short: priced as one model, run as another), and a streaming request
 * that did not ask for usage must come with an upstream body that is JSON,
 * asks for usage, and names the same model, stream and limits. UTF-8 is
 * checked against an independent validator. On failure the reason must be a
 * non-empty string. admit_free is always safe. */
#include "admit.h"
#include "fuzz.h"

#include <cjson/cJSON.h>
#include <string.h>

/* The limit named key in root as the parser reads it: -1 if absent or null. */
static int64_t limit_of(const cJSON *root, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    return !it || cJSON_IsNull(it) ? -1 : (int64_t)it->valuedouble;
}

/* RFC 3629 well-formed UTF-8, by its table of valid byte sequences. */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        unsigned char lo = 0x80, hi = 0xBF;
        size_t n;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) n = 1;
        else if (c == 0xE0) { n = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) n = 2;
        else if (c == 0xED) { n = 2; hi = 0x9F; }
        else if (c == 0xEE || c == 0xEF) n = 2;
        else if (c == 0xF0) { n = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) n = 3;
        else if (c == 0xF4) { n = 3; hi = 0x8F; }
        else return 0;
        if (len - i <= n)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k <= n; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xBF)
                return 0;
        i += n + 1;
    }
    return 1;
}

/* 1 if a JSON string in s[0, len) holds a NUL, raw or as the escape \u0000. */
static int nul_in_string(const char *s, size_t len)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        if (!in_str) {
            in_str = s[i] == '"';
        } else if (s[i] == '\\') {
            if (len - i > 5 && memcmp(s + i + 1, "u0000", 5) == 0)
                return 1;
            i++;
        } else if (s[i] == '"') {
            in_str = 0;
        } else if (s[i] == '\0') {
            return 1;
        }
    }
    return 0;
}

static void check_upstream(const admit_req_t *r)
{
    /* NUL-terminated, though a raw NUL inside a JSON string may precede it */
    FUZZ_CHECK(r->upstream_body[r->upstream_len] == '\0');
    cJSON *up = cJSON_ParseWithLength(r->upstream_body, r->upstream_len);
    FUZZ_CHECK(cJSON_IsObject(up));

    const cJSON *opts = cJSON_GetObjectItemCaseSensitive(up, "stream_options");
    FUZZ_CHECK(cJSON_IsObject(opts));
    FUZZ_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(opts, "include_usage")));

    const cJSON *model = cJSON_GetObjectItemCaseSensitive(up, "model");
    FUZZ_CHECK(cJSON_IsString(model) && strcmp(model->valuestring, r->model) == 0);
    FUZZ_CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(up, "stream")));
    FUZZ_CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(up, "messages")));

    int64_t mt = limit_of(up, "max_tokens"), mct = limit_of(up, "max_completion_tokens");
    int64_t n = limit_of(up, "n");
    FUZZ_CHECK(r->max_tokens == (mt > mct ? mt : mct));
    FUZZ_CHECK(r->n == (n == -1 ? 1 : n));

    /* what goes upstream is itself an admissible request, asking for usage */
    admit_req_t again;
    char err[128];
    FUZZ_CHECK(admit_parse(r->upstream_body, r->upstream_len, &again, err, sizeof err) == 0);
    FUZZ_CHECK(strcmp(again.model, r->model) == 0);
    FUZZ_CHECK(again.stream && again.client_wants_usage && !again.upstream_body);
    FUZZ_CHECK(again.max_tokens == r->max_tokens && again.n == r->n);
    admit_free(&again);
    cJSON_Delete(up);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_dup(data, size, 0);
    char err[160];
    admit_req_t r;

    memset(err, 'x', sizeof err);
    memset(&r, 0, sizeof r);
    int rc = admit_parse(body, size, &r, err, sizeof err);
    int utf8 = utf8_valid(data, size);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        FUZZ_CHECK(utf8 == (strstr(err, "UTF-8") == NULL));
        FUZZ_CHECK(r.upstream_body == NULL);
        admit_free(&r);
        /* a tiny or absent error buffer is fine too */
        char small[4];
        FUZZ_CHECK(admit_parse(body, size, &r, small, sizeof small) == -1);
        FUZZ_CHECK(memchr(small, '\0', sizeof small) != NULL);
        FUZZ_CHECK(admit_parse(body, size, &r, NULL, 0) == -1);
        free(body);
        return 0;
    }

    FUZZ_CHECK(utf8);
    FUZZ_CHECK(!nul_in_string(body, size));
    FUZZ_CHECK(memchr(r.model, '\0', sizeof r.model) != NULL && r.model[0] != '\0');
    FUZZ_CHECK(r.n >= 1 && r.n <= ADMIT_MAX_CHOICES);
    FUZZ_CHECK(r.est_prompt_tokens == (int64_t)((size + 2) / 3));
    FUZZ_CHECK(r.max_tokens == -1 || (r.max_tokens >= 1 && r.max_tokens <= 1000000000));
    FUZZ_CHECK(r.stream == 0 || r.stream == 1);
    FUZZ_CHECK(r.client_wants_usage == 0 || r.client_wants_usage == 1);
    if (!r.stream)
        FUZZ_CHECK(!r.client_wants_usage && !r.upstream_body);
    else if (r.client_wants_usage)
        FUZZ_CHECK(!r.upstream_body);
    else
        FUZZ_CHECK(r.upstream_body != NULL);
    if (r.upstream_body)
        check_upstream(&r);

    admit_free(&r);
    FUZZ_CHECK(r.upstream_body == NULL && r.upstream_len == 0);
    admit_free(&r);                   /* twice is harmless */
    admit_free(NULL);
    free(body);
    return 0;
}
