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
    T_RUN(test_estimate);
    return t_summary("usage");
}
