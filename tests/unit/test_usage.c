/* Unit tests for usage: token counts and stream facts from OpenAI-shaped
 * bodies and chunks, and refusal of counts that cannot be trusted. */
#include "usage.h"
#include "t.h"

#include <stdlib.h>

/* Parses s from a heap copy of exactly strlen(s) bytes (no NUL), so ASan
 * catches any read past the length. */
static int parse(const char *s, usage_info_t *out)
{
    size_t n = strlen(s);
    char *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    int rc = usage_parse(b, n, out);
    free(b);
    return rc;
}

static void test_full_body_with_cached(void)
{
    usage_info_t u;
    const char *body =
        "{\"id\":\"chatcmpl-abc\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"Hello there\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1200,"
        "\"completion_tokens\":3,\"total_tokens\":1203,"
        "\"prompt_tokens_details\":{\"cached_tokens\":1024,\"audio_tokens\":0},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":0}}}\n";
    T_EQ_INT(parse(body, &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 1);
    T_EQ_INT(u.usage.prompt, 1200);
    T_EQ_INT(u.usage.completion, 3);
    T_EQ_INT(u.usage.cached, 1024);
    T_EQ_INT(u.choices_empty, 0);
    T_EQ_INT(u.content_bytes, 11);
    T_EQ_INT(u.content_deltas, 0);        /* a message is not a delta */
    T_EQ_STR(u.id, "chatcmpl-abc");
}

static void test_usage_only_chunk(void)
{
    usage_info_t u;
    const char *chunk =
        "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,"
        "\"completion_tokens\":2,\"total_tokens\":11,"
        "\"prompt_tokens_details\":null}}";
    T_EQ_INT(parse(chunk, &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 1);
    T_EQ_INT(u.choices_empty, 1);
    T_EQ_INT(u.usage.prompt, 9);
    T_EQ_INT(u.usage.completion, 2);
    T_EQ_INT(u.usage.cached, 0);
    T_EQ_INT(u.content_bytes, 0);
}

static void test_delta_chunks(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h\xC3\xA9llo\"}},"
                   "{\"index\":1,\"delta\":{\"content\":\"\"}},"
                   "{\"index\":2,\"delta\":{\"content\":\"ab\"}}],\"usage\":null}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 0);             /* usage: null is not usage */
    T_EQ_INT(u.choices_empty, 0);
    T_EQ_INT(u.content_bytes, 8);         /* bytes, not characters */
    T_EQ_INT(u.content_deltas, 2);        /* empty content is not a delta */

    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 0);
    T_EQ_INT(u.content_deltas, 0);
    T_EQ_STR(u.id, "");

    /* tool-call arguments are generated text too */
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,"
                   "\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 7);
    T_EQ_INT(u.content_deltas, 1);
}

static void test_absent_and_partial_usage(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"id\":\"x\",\"choices\":[{\"delta\":{}}]}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 0);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":5}}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 0);             /* partial report: not usable */
    T_EQ_INT(parse("{\"usage\":{}}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 0);
    T_EQ_INT(u.choices_empty, 0);         /* no "choices" at all is not [] */
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":0}}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 1);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":1e3,\"completion_tokens\":2.0}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.prompt, 1000);       /* integral values in any notation */
    T_EQ_INT(u.usage.completion, 2);
}

static void test_bad_counts(void)
{
    usage_info_t u;
    memset(&u, 0x5a, sizeof u);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":2}}", &u), USAGE_BAD);
    T_EQ_INT(u.has_usage, 0x5a5a5a5a);    /* out untouched on error */
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1.5}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10000001,\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":1e300,\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":1e999,\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":\"10\",\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":true,\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":\"lots\"}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":[1,2]}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":11}}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":-1}}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1,"
                   "\"prompt_tokens_details\":7}}", &u), USAGE_BAD);
    /* the limit itself is fine */
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":10000000,\"completion_tokens\":1,"
                   "\"prompt_tokens_details\":{\"cached_tokens\":10000000}}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.cached, 10000000);
}

static void test_not_json(void)
{
    usage_info_t u;
    T_EQ_INT(parse("[DONE]", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("[1,2]", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("\"usage\"", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":9,\"completion_tok", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":1} {\"b\":2}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":1}\r\n", &u), USAGE_OK);
    T_EQ_INT(usage_parse(NULL, 0, &u), USAGE_NOT_JSON);
}

static void test_id_truncated(void)
{
    usage_info_t u;
    char body[600];
    char id[300];
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    snprintf(body, sizeof body, "{\"id\":\"%s\"}", id);
    T_EQ_INT(parse(body, &u), USAGE_OK);
    T_EQ_INT(strlen(u.id), USAGE_ID_MAX - 1);
    T_CHECK(memcmp(u.id, id, USAGE_ID_MAX - 1) == 0);
    T_EQ_INT(parse("{\"id\":42}", &u), USAGE_OK);
    T_EQ_STR(u.id, "");
}

/* Parses exactly n bytes of s (which may hold NULs) from a heap copy. */
static int parse_n(const char *s, size_t n, usage_info_t *out)
{
    char *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    int rc = usage_parse(b, n, out);
    free(b);
    return rc;
}

/* Text is measured after unescaping, as a C string: up to the first NUL. */
static void test_text_is_unescaped(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"a\\n\\u00e9\\ud83d\\ude00\\\"\"}}]}", &u),
             USAGE_OK);
    T_EQ_INT(u.content_bytes, 1 + 1 + 2 + 4 + 1);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"ab\\u0000cd\"}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 2);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\u0000cd\"}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 0);
    T_EQ_INT(u.content_deltas, 0);
    static const char raw_nul[] = "{\"choices\":[{\"delta\":{\"content\":\"ab\0cd\"}}]}";
    T_EQ_INT(parse_n(raw_nul, sizeof raw_nul - 1, &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 2);         /* a raw NUL ends it too */
    /* cJSON reads a \u with a non-hex digit as U+0000 */
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"ab\\uZZZZcd\"}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 2);
    /* raw control bytes and invalid UTF-8 are kept as they are */
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\x01\t\xff\"}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 3);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\"}}]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\ude00\"}}]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\ud83d\\u0041\"}}]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\x\"}}]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"content\":\"\\u12\"}}]}", &u), USAGE_NOT_JSON);
}

static void test_all_text_kinds(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"refusal\":\"no\",\"reasoning\":\"abc\","
                   "\"reasoning_content\":\"defg\",\"tool_calls\":[{\"function\":"
                   "{\"name\":\"fn\",\"arguments\":\"{}\"}},7,{\"function\":null},"
                   "{\"function\":{\"arguments\":\"x\"}}]}},"
                   "{\"message\":{\"content\":\"12345\",\"tool_calls\":[{\"function\":"
                   "{\"name\":\"abc\"}}]},\"delta\":{\"content\":1}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 2 + 3 + 4 + 2 + 2 + 1 + 5 + 3);
    T_EQ_INT(u.content_deltas, 1);
    /* only the members named, only as strings, only in delta and message */
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"text\":\"abc\",\"content\":[\"abc\"],"
                   "\"function\":{\"name\":\"x\"}},\"content\":\"abc\"},\"abc\",[{\"delta\":"
                   "{\"content\":\"abc\"}}]],\"delta\":{\"content\":\"abc\"}}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 0);
    T_EQ_INT(u.content_deltas, 0);
    T_EQ_INT(u.choices_empty, 0);
    T_EQ_INT(parse("{\"choices\":[{\"delta\":{\"tool_calls\":{\"function\":{\"name\":\"abc\"}}}},"
                   "{\"delta\":{\"tool_calls\":\"abc\"}},{\"delta\":{\"tool_calls\":[[{\"function\":"
                   "{\"name\":\"abc\"}}],{\"function\":[{\"name\":\"abc\"}]}]}}]}", &u), USAGE_OK);
    T_EQ_INT(u.content_bytes, 0);
    T_EQ_INT(parse("{\"choices\":{}}", &u), USAGE_OK);
    T_EQ_INT(u.choices_empty, 0);         /* not an array: not [] */
    T_EQ_INT(parse("{\"choices\":[ \n ]}", &u), USAGE_OK);
    T_EQ_INT(u.choices_empty, 1);
}

/* cJSON takes the first of repeated keys; so does the scanner. Keys are
 * compared after unescaping, up to the first NUL. */
static void test_repeated_and_escaped_keys(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"id\":7,\"id\":\"b\",\"choices\":[{\"delta\":{\"content\":null,"
                   "\"content\":\"abc\"}}],\"choices\":[]}", &u), USAGE_OK);
    T_EQ_STR(u.id, "");
    T_EQ_INT(u.content_bytes, 0);
    T_EQ_INT(u.choices_empty, 0);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,"
                   "\"prompt_tokens\":\"bad\"},\"usage\":7}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 1);
    T_EQ_INT(u.usage.prompt, 5);
    T_EQ_INT(parse("{\"usage\":null,\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}", &u),
             USAGE_OK);
    T_EQ_INT(u.has_usage, 0);
    T_EQ_INT(parse("{\"\\u0069d\":\"a\\u0062\",\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"xy\","
                   "\"content\\u0000junk\":\"zzz\"}}]}", &u), USAGE_OK);
    T_EQ_STR(u.id, "ab");
    T_EQ_INT(u.content_bytes, 2);         /* the second key is "content" too */
    T_EQ_INT(parse("{\"id\":\"a\\u0000b\"}", &u), USAGE_OK);
    T_EQ_STR(u.id, "a");
    T_EQ_INT(parse("{\"Usage\":{\"prompt_tokens\":-1}}", &u), USAGE_OK);
}

/* Numbers are what cJSON took: strtod's reading of [-0-9.eE+]*. */
static void test_number_syntax(void)
{
    usage_info_t u;
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":012,\"completion_tokens\":3.}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.prompt, 12);
    T_EQ_INT(u.usage.completion, 3);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":-.0,\"completion_tokens\":-0e5}}", &u), USAGE_OK);
    T_EQ_INT(u.has_usage, 1);             /* -0 is 0 */
    T_EQ_INT(u.usage.prompt, 0);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":-1e-400,\"completion_tokens\":1E+1}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.prompt, 0);          /* underflows to -0 */
    T_EQ_INT(u.usage.completion, 10);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":-1e-300,\"completion_tokens\":1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":1.0000000000000000000001,"
                   "\"completion_tokens\":99999999e-1}}", &u), USAGE_BAD);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":1.0000000000000000000001,"
                   "\"completion_tokens\":9999999.9999999999999}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.prompt, 1);          /* rounds to the double 1 */
    T_EQ_INT(u.usage.completion, 10000000);
    T_EQ_INT(parse("{\"usage\":{\"prompt_tokens\":0.000000000000000000000000000000000000000000000000"
                   "000000000000000000000000000000000000000000000000000000000000000000000000000000"
                   "12e128,\"completion_tokens\":1}}", &u), USAGE_OK);
    T_EQ_INT(u.usage.prompt, 12);         /* longer than cJSON's old 63-byte limit */
    static const char *const bad[] = { "-", "--1", "+1", ".5", "1e", "1e+", "1.2.3", "0x10",
                                       "1-2", "-inf", "NaN", "1ee5", "1.e" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char b[80];
        snprintf(b, sizeof b, "{\"a\":%s}", bad[i]);
        T_EQ_INT(parse(b, &u), USAGE_NOT_JSON);
    }
    static const char *const good[] = { "-.5", "1.", "00", "1E5", "1e-05", "-0.0e+0" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char b[80];
        snprintf(b, sizeof b, "{\"a\":[%s]}", good[i]);
        T_EQ_INT(parse(b, &u), USAGE_OK);
    }
}

/* cJSON's whitespace: any byte up to 0x20 inside, four kinds after the end;
 * a BOM first; literals spelled out in full; no trailing commas. */
static void test_syntax_edges(void)
{
    usage_info_t u;
    static const char del[] = "\x01{\x1f\"a\"\0:\x7f 1 }", vt[] = "\x01{\x1f\"a\"\0:\x0b 1 }";
    T_EQ_INT(parse_n(del, sizeof del - 1, &u), USAGE_NOT_JSON);   /* 0x7f is not */
    T_EQ_INT(parse_n(vt, sizeof vt - 1, &u), USAGE_OK);
    T_EQ_INT(parse("\xEF\xBB\xBF{\"id\":\"x\"}", &u), USAGE_OK);
    T_EQ_STR(u.id, "x");
    T_EQ_INT(parse("\xEF\xBB\xBF{}", &u), USAGE_OK);
    T_EQ_INT(parse("{}\x0b", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{} \t\r\n ", &u), USAGE_OK);
    T_EQ_INT(parse_n("{}\0", 3, &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":nul}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":nulll}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":True}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":[true,false,null]}", &u), USAGE_OK);
    T_EQ_INT(parse("{\"a\":1,}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":[1,]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":[1}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":{]}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\" 1}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{1:1}", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":1", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":\"x\\", &u), USAGE_NOT_JSON);
    T_EQ_INT(parse("{\"a\":\"x\\\"", &u), USAGE_NOT_JSON);
}

/* As many containers open at once as cJSON allowed (1000), and no more. */
static void test_nesting_limit(void)
{
    usage_info_t u;
    for (size_t d = 999; d <= 1001; d++) {
        size_t n = 0;
        char *b = malloc(2 * d + 8);
        b[n++] = '{';
        memcpy(b + n, "\"a\":", 4);
        n += 4;
        memset(b + n, '[', d - 1);
        n += d - 1;
        memset(b + n, ']', d - 1);
        n += d - 1;
        b[n++] = '}';
        T_EQ_INT(parse_n(b, n, &u), d <= 1000 ? USAGE_OK : USAGE_NOT_JSON);
        free(b);
    }
}

static void test_estimate(void)
{
    T_EQ_INT(usage_estimate_completion(0, 0), 0);
    T_EQ_INT(usage_estimate_completion(1, 0), 1);
    T_EQ_INT(usage_estimate_completion(3, 0), 1);
    T_EQ_INT(usage_estimate_completion(4, 0), 2);
    T_EQ_INT(usage_estimate_completion(30, 25), 25);   /* one token per delta at least */
    T_EQ_INT(usage_estimate_completion(300, 25), 100);
    T_EQ_INT(usage_estimate_completion(-5, -1), 0);
}

int main(void)
{
    T_RUN(test_full_body_with_cached);
    T_RUN(test_usage_only_chunk);
    T_RUN(test_delta_chunks);
    T_RUN(test_absent_and_partial_usage);
    T_RUN(test_bad_counts);
    T_RUN(test_not_json);
    T_RUN(test_id_truncated);
    T_RUN(test_text_is_unescaped);
    T_RUN(test_all_text_kinds);
    T_RUN(test_repeated_and_escaped_keys);
    T_RUN(test_number_syntax);
    T_RUN(test_syntax_edges);
    T_RUN(test_nesting_limit);
    T_RUN(test_estimate);
    return t_summary("usage");
}
