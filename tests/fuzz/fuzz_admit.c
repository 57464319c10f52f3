/* fuzz_admit: admit_parse on an arbitrary request body. It must agree with
 * admit_parse_ref, the cJSON tree parse it replaced (admit_ref.c): the same
 * return code, the same error text (also cut to a 4-byte buffer, and with no
 * buffer), *out untouched by both on failure, and on success every field and
 * the upstream body byte for byte. On success the facts
 * metering relies on must hold (model non-empty and NUL-terminated, prompt
 * estimate ceil(len / 3), max_tokens -1 or 1..1e9 and the larger of the two
 * limits, n 1..ADMIT_MAX_CHOICES), no string may hold a NUL (C strings would
 * cut it short: priced as one model, run as another), and a streaming request
 * that did not ask for usage must come with an upstream body that is JSON,
 * asks for usage, and names the same model, stream and limits. UTF-8 is
 * checked against an independent validator. On failure the reason must be a
 * non-empty string. admit_free is always safe. Before fuzzing, a table of
 * inputs the fuzzer is unlikely to build (nesting at the limit, long models
 * and numbers, escapes) gets the same comparison. */
#include "admit.h"
#include "admit_ref.h"
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

#define ERR_MAX 160

/* Aborts unless admit_parse and admit_parse_ref agree on body[0, size) with
 * an error buffer of errlen (<= ERR_MAX) bytes, or none when err is NULL.
 * Returns the code; on 0 *out gets the request (free with admit_free), on -1
 * err gets the message and *out is left alone. */
static int same_as_ref(const char *body, size_t size, char *err, size_t errlen,
                       admit_req_t *out)
{
    admit_req_t a, b, untouched;
    char ea[ERR_MAX], eb[ERR_MAX];

    memset(&a, 0xA5, sizeof a);
    memset(&b, 0xA5, sizeof b);
    memset(&untouched, 0xA5, sizeof untouched);
    memset(ea, 'x', sizeof ea);
    memset(eb, 'x', sizeof eb);
    int rc = admit_parse(body, size, &a, err ? ea : NULL, errlen);
    int rc_ref = admit_parse_ref(body, size, &b, err ? eb : NULL, errlen);
    if (rc != rc_ref || memcmp(ea, eb, sizeof ea) != 0)
        fprintf(stderr, "admit_parse %d \"%.*s\", admit_parse_ref %d \"%.*s\"\n",
                rc, (int)errlen, ea, rc_ref, (int)errlen, eb);
    FUZZ_CHECK(rc == rc_ref);
    FUZZ_CHECK(memcmp(ea, eb, sizeof ea) == 0);
    if (rc != 0) {
        FUZZ_CHECK(memcmp(&a, &untouched, sizeof a) == 0);
        FUZZ_CHECK(memcmp(&b, &untouched, sizeof b) == 0);
        if (err)
            memcpy(err, ea, errlen);
        return rc;
    }
    if (strcmp(a.model, b.model) != 0)
        fprintf(stderr, "model \"%s\", ref \"%s\"\n", a.model, b.model);
    FUZZ_CHECK(memcmp(a.model, b.model, sizeof a.model) == 0);
    FUZZ_CHECK(a.stream == b.stream);
    FUZZ_CHECK(a.client_wants_usage == b.client_wants_usage);
    FUZZ_CHECK(a.max_tokens == b.max_tokens);
    FUZZ_CHECK(a.n == b.n);
    FUZZ_CHECK(a.est_prompt_tokens == b.est_prompt_tokens);
    FUZZ_CHECK((a.upstream_body == NULL) == (b.upstream_body == NULL));
    FUZZ_CHECK(a.upstream_len == b.upstream_len);
    if (a.upstream_body)
        FUZZ_CHECK(memcmp(a.upstream_body, b.upstream_body, a.upstream_len + 1) == 0);
    FUZZ_CHECK(memcmp(ea, eb, sizeof ea) == 0);    /* neither wrote err */
    admit_free_ref(&b);
    *out = a;
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
    FUZZ_CHECK(same_as_ref(r->upstream_body, r->upstream_len, err, sizeof err, &again) == 0);
    FUZZ_CHECK(strcmp(again.model, r->model) == 0);
    FUZZ_CHECK(again.stream && again.client_wants_usage && !again.upstream_body);
    FUZZ_CHECK(again.max_tokens == r->max_tokens && again.n == r->n);
    admit_free(&again);
    cJSON_Delete(up);
}

/* Compares head, c repeated n times, then tail, from a heap buffer of
 * exactly that length. */
static void check_repeat(const char *head, char c, size_t n, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    char *b = malloc(h + n + t + 1);
    char err[ERR_MAX];
    admit_req_t r;
    if (!b)
        abort();
    memcpy(b, head, h);
    memset(b + h, c, n);
    memcpy(b + h + n, tail, t);
    if (same_as_ref(b, h + n + t, err, sizeof err, &r) == 0)
        admit_free(&r);
    free(b);
}

/* Nesting of d containers in all: "messages" holds d - 1 of them, open
 * being "[" or "{\"k\":" (closed by "]" or "}"), with a string of brackets
 * before, which must not count. */
static void check_depth(size_t d, const char *open, const char *close)
{
    const char *head = "{\"model\":\"[[{{\",\"stream\":true,\"messages\":";
    size_t h = strlen(head), o = strlen(open), c = strlen(close), n = 0;
    char *b = malloc(h + (d - 1) * (o + c) + 2);
    char err[ERR_MAX];
    admit_req_t r;
    if (!b)
        abort();
    memcpy(b, head, h);
    n = h;
    for (size_t i = 0; i + 1 < d; i++, n += o)
        memcpy(b + n, open, o);
    for (size_t i = 0; i + 1 < d; i++, n += c)
        memcpy(b + n, close, c);
    b[n++] = '}';
    if (same_as_ref(b, n, err, sizeof err, &r) == 0)
        admit_free(&r);
    free(b);
}

/* Inputs out of the fuzzer's easy reach, each compared with the reference. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const limits[] = {
        "64", "64.0", "6.4e1", "640e-1", "0.64E+2", "064", "-0", "0", "-0.0", "1e400",
        "-1e400", "1e-400", "1", "1.", "-.5e1", "1e9", "1000000000", "1000000000.0",
        "1000000001", "1000000000.0000001", "999999999.99999999999", "0.99999999999999999999",
        "1.0000000000000000001", "4096.5", "128", "128.0", "1.28e2", "129", "1e", "1e+",
        "--1", "+1", "0x10", "1.5.3", "12345678901234567890", "999999999999999", "1e0",
        "true", "\"64\"", "null", "[]", "{}",
    };
    static const char *const fields[] = { "max_tokens", "max_completion_tokens", "n" };
    static const char *const texts[] = {
        "{\"mod\\u0065l\":\"m\",\"messages\":[]}",
        "{\"model\":\"m\",\"mod\\u0065l\":\"x\",\"messages\":[]}",
        "{\"model\\u00zz\":\"m\",\"messages\":[]}",
        "{\"model\\u00zzjunk\":\"m\",\"messages\":[],\"model\":\"n\"}",
        "{\"model\":\"a\\u00zzb\",\"messages\":[]}",
        "{\"model\":\"\\u00zz\",\"messages\":[]}",
        "{\"model\":\"\\uD83D\\uDE00\",\"messages\":[]}",
        "{\"model\":\"\\uD83D\",\"messages\":[]}",
        "{\"model\":\"\\uDE00\",\"messages\":[]}",
        "{\"model\":\"\\uD83Dx\\uDE00\",\"messages\":[]}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\u12\\\"ab\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\u123\\\"\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\u12\\\xc3\xa9\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\u12\\\x01x\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\\xc3\xa9\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\\x80\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\uABC\\\\\"}",
        "{\"model\":\"m\",\"messages\":[],\"x\":\"\\\\u0000\"}",
        "{\"model\":\"m\",\"messages\":[],\"m\\u0000\":1}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":1}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include\\u005fusage\":true}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":false,\"include\\u005fusage\":true}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"x\":{\"include_usage\":true}}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"x\":{\"include_usage\":true,\"include_usage\":1}}}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":false,\"stream_options\":{\"include_usage\":true,\"include_usage\":1}}",
        "{\"model\":\"m\",\"messages\":[],\"stream_options\":{},\"stream\":true,\"stream_options\":null}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":null}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":[]}",
        "{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\":null}}",
        "{\"model\":\"m\",\"messages\":{},\"stream\":null}",
        "{\"n\":2,\"model\":\"m\",\"messages\":[],\"n\":3,\"model\":\"x\"}",
        "\xef\xbb\xbf{\"model\":\"m\",\"messages\":[]}",
        "\xef\xbb\xbf{}",
        "\xef\xbb\xbf{",
        ("\xef\xbb\xbf" "1"),
        " \xef\xbb\xbf{\"model\":\"m\",\"messages\":[]}",
        "\x01\x1f{\x7f\"model\":\"m\",\"messages\":[]}",
        "{\x01\"model\"\x1f:\x02\"m\"\x03,\"messages\":[\x04]\x05}",
        "{\"model\":\"m\",\"messages\":[]}\x0b",
        "{\"model\":\"m\",\"messages\":[]} \t\r\n",
        "{\"model\":\"m\",\"messages\":[]}\x01",
        "{\"model\":\"m\",\"messages\":[],}",
        "{\"model\":\"m\",\"messages\":[1,]}",
        "1", "1 ", "1e", "-", "[]", "null", "nul", "true x", "\"x\"", "\"\\u0000\"", " ",
        "\"\\uzzzz\"", "{\"a\":\"\xc3\"}", "{\"a\":\"\xed\xa0\x80\"}", "\xc3\xa9", "{\"\xc3\xa9\":1}",
    };
    char err[ERR_MAX], head[128];
    admit_req_t r;
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        if (same_as_ref(texts[i], strlen(texts[i]), err, sizeof err, &r) == 0)
            admit_free(&r);
    /* NULs between tokens are whitespace; in a string they are refused */
    static const char nuls[] = "{\0\"model\":\"m\",\"messages\":[]\0}\0";
    if (same_as_ref(nuls, sizeof nuls - 2, err, sizeof err, &r) == 0)
        admit_free(&r);
    same_as_ref(nuls, sizeof nuls - 1, err, sizeof err, &r);
    for (size_t f = 0; f < 3; f++) {
        for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
            char b[256];
            snprintf(b, sizeof b, "{\"model\":\"m\",\"messages\":[],\"%s\":%s,\"stream\":true}",
                     fields[f], limits[i]);
            if (same_as_ref(b, strlen(b), err, sizeof err, &r) == 0)
                admit_free(&r);
        }
        /* numbers longer than any buffer: 64 then zeros, or zeros then 64 */
        for (size_t n = 1; n < 3000; n += n < 20 ? 1 : 397) {
            snprintf(head, sizeof head, "{\"model\":\"m\",\"messages\":[],\"%s\":64.", fields[f]);
            check_repeat(head, '0', n, "}");
            check_repeat(head, '0', n, "1}");
            check_repeat(head, '9', n, "}");
            snprintf(head, sizeof head, "{\"model\":\"m\",\"messages\":[],\"%s\":0.", fields[f]);
            check_repeat(head, '0', n, "64e66}");
            check_repeat(head, '0', n, "64}");
            snprintf(head, sizeof head, "{\"model\":\"m\",\"messages\":[],\"%s\":1", fields[f]);
            check_repeat(head, '0', n, "}");
            check_repeat(head, '0', n, "e-3000}");
        }
    }
    /* models about ADMIT_MODEL_MAX long, plain or with escapes */
    for (size_t n = ADMIT_MODEL_MAX - 4; n <= ADMIT_MODEL_MAX + 4; n++) {
        check_repeat("{\"messages\":[],\"model\":\"", 'm', n, "\"}");
        check_repeat("{\"messages\":[],\"model\":\"\\u00e9", 'm', n - 2, "\"}");
        check_repeat("{\"messages\":[],\"model\":\"\\n", 'm', n - 1, "\"}");
        check_repeat("{\"messages\":[],\"model\":\"", 'm', n, "\\u00zzxyz\"}");
        check_repeat("{\"messages\":[],\"model\":\"", 'm', n, "\\uD83D\\uDE00\"}");
        check_repeat("{\"messages\":[],\"model\":\"ab\\u00zz", 'm', n, "\"}");
    }
    /* long keys that shrink to a field's name */
    check_repeat("{\"messages\":[],\"model\\u00zz", 'k', 100, "\":\"m\"}");
    check_repeat("{\"model\":\"m\",\"messages\":[],\"stream\":true,\"stream_options\":{\"include_usage\\u00zz",
                 'k', 100, "\":true}}");
    /* nesting to the limit and past it */
    for (size_t d = ADMIT_MAX_DEPTH - 2; d <= ADMIT_MAX_DEPTH + 2; d++) {
        check_depth(d, "[", "]");
        check_depth(d, "{\"k\":", "}");
        check_depth(d, "[{\"stream_options\":", "}]");
    }
    check_repeat("", '[', 100000, "");
    check_repeat("{\"model\":\"m\",\"messages\":[\"", 'x', 100000, "\"]}");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = fuzz_dup(data, size, 0);
    char err[ERR_MAX];
    admit_req_t r;

    memset(err, 'x', sizeof err);
    memset(&r, 0, sizeof r);
    int rc = same_as_ref(body, size, err, sizeof err, &r);
    int utf8 = utf8_valid(data, size);
    if (rc != 0) {
        FUZZ_CHECK(rc == -1);
        FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL && err[0] != '\0');
        FUZZ_CHECK(utf8 == (strstr(err, "UTF-8") == NULL));
        FUZZ_CHECK(r.upstream_body == NULL);
        admit_free(&r);
        /* a tiny or absent error buffer is fine too */
        char small[4];
        FUZZ_CHECK(same_as_ref(body, size, small, sizeof small, &r) == -1);
        FUZZ_CHECK(memchr(small, '\0', sizeof small) != NULL);
        FUZZ_CHECK(same_as_ref(body, size, NULL, 0, &r) == -1);
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
