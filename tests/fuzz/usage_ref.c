/* usage_ref: the reference for fuzz_usage. This is src/usage.c as it was
 * before the single-pass scanner replaced it (as of b3c5ebb), unchanged but
 * for the name: it builds a cJSON tree (libcjson 1.7.15 as Debian 12 ships
 * it) and reads the facts from that. fuzz_usage requires usage_parse to give
 * the same return code and, on USAGE_OK, the same facts on every input. */
#include "usage_ref.h"

#include <cjson/cJSON.h>
#include <string.h>

/* Reads a token count: 1 and *out when item is an integer in range, 0 when
 * item is absent or null, -1 otherwise. */
static int read_count(const cJSON *item, int64_t *out)
{
    if (!item || cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsNumber(item))
        return -1;
    double v = item->valuedouble;
    /* written so that NaN fails too; the cast is safe once in range */
    if (!(v >= 0 && v <= (double)USAGE_MAX_TOKENS) || (double)(int64_t)v != v)
        return -1;
    *out = (int64_t)v;
    return 1;
}

/* Fills has_usage and usage from the "usage" member. USAGE_OK or USAGE_BAD. */
static int read_usage(const cJSON *root, usage_info_t *info)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    int64_t prompt = 0, completion = 0, cached = 0;

    if (!u || cJSON_IsNull(u))
        return USAGE_OK;
    if (!cJSON_IsObject(u))
        return USAGE_BAD;

    int hp = read_count(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens"), &prompt);
    int hc = read_count(cJSON_GetObjectItemCaseSensitive(u, "completion_tokens"), &completion);
    if (hp < 0 || hc < 0)
        return USAGE_BAD;

    const cJSON *d = cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details");
    if (d && !cJSON_IsNull(d)) {
        if (!cJSON_IsObject(d))
            return USAGE_BAD;
        if (read_count(cJSON_GetObjectItemCaseSensitive(d, "cached_tokens"), &cached) < 0)
            return USAGE_BAD;
    }
    if (!hp || !hc)
        return USAGE_OK;    /* a partial report is not a usage report */
    if (cached > prompt)
        return USAGE_BAD;
    info->has_usage = 1;
    info->usage.prompt = prompt;
    info->usage.completion = completion;
    info->usage.cached = cached;
    return USAGE_OK;
}

/* Bytes of a member that is a string; 0 for anything else. */
static int64_t str_bytes(const cJSON *obj, const char *key)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(s) ? (int64_t)strlen(s->valuestring) : 0;
}

/* Bytes of generated text in a delta or message: content, plus refusal,
 * reasoning and tool-call arguments, which are billed as completion too. */
static int64_t text_bytes(const cJSON *m)
{
    if (!cJSON_IsObject(m))
        return 0;
    int64_t n = str_bytes(m, "content") + str_bytes(m, "refusal") +
                str_bytes(m, "reasoning_content") + str_bytes(m, "reasoning");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
    const cJSON *call;
    if (cJSON_IsArray(calls)) {
        cJSON_ArrayForEach(call, calls) {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
            if (cJSON_IsObject(fn))
                n += str_bytes(fn, "arguments") + str_bytes(fn, "name");
        }
    }
    return n;
}

static void read_choices(const cJSON *root, usage_info_t *info)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    const cJSON *c;

    if (!cJSON_IsArray(choices))
        return;
    info->choices_empty = choices->child == NULL;
    cJSON_ArrayForEach(c, choices) {
        int64_t d = text_bytes(cJSON_GetObjectItemCaseSensitive(c, "delta"));
        if (d > 0)
            info->content_deltas++;
        info->content_bytes += d +
            text_bytes(cJSON_GetObjectItemCaseSensitive(c, "message"));
    }
}

/* Parses exactly one JSON value filling json[0, len): unlike
 * cJSON_ParseWithLength, trailing bytes other than whitespace are refused. */
static cJSON *parse_whole(const char *json, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);

    for (; root && end < json + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    return root;
}

int usage_parse_ref(const char *json, size_t len, usage_info_t *out)
{
    usage_info_t info;
    cJSON *root;
    int rc;

    if (!json || len == 0)
        return USAGE_NOT_JSON;
    root = parse_whole(json, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return USAGE_NOT_JSON;
    }
    memset(&info, 0, sizeof info);
    rc = read_usage(root, &info);
    if (rc == USAGE_OK) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
        if (cJSON_IsString(id)) {
            size_t n = strlen(id->valuestring);
            if (n >= sizeof info.id)
                n = sizeof info.id - 1;
            memcpy(info.id, id->valuestring, n);
            info.id[n] = '\0';
        }
        read_choices(root, &info);
        *out = info;
    }
    cJSON_Delete(root);
    return rc;
}
