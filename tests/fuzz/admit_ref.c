/* admit_ref: the reference for fuzz_admit. This is src/admit.c as it was
 * before the single-pass scanner replaced it (as of f767f3a), unchanged but
 * for the names (admit_parse_ref, admit_free_ref): it builds a cJSON tree
 * (libcjson 1.7.15 as Debian 12 ships it) and reads the request from that.
 * fuzz_admit requires admit_parse to give the same return code, the same
 * error text and, on success, the same request and upstream body bytes on
 * every input. Its original header comment:
 *
 * admit: reads a client's chat completion request at admission.
 *
 * Nesting depth is checked by a byte scan before cJSON sees the body, so a
 * hostile body cannot drive the parser's recursion deep. Members are looked
 * up case-sensitively, and a repeated key among those metering reads is
 * refused: cJSON sees the first occurrence while most upstreams keep the last,
 * so {"model":"cheap","model":"dear"} would otherwise be priced as one model
 * and run as the other.
 *
 * A streaming request must make the upstream report usage. When the client
 * did not ask for it, the upstream body is the client's bytes with
 * "stream_options":{"include_usage":true} inserted after the opening brace
 * (byte-exact otherwise, so large integers and escapes survive), or, when the
 * client sent a stream_options of its own, the body re-serialised by cJSON
 * with include_usage set. Pure: no I/O, no clock, no globals.
 */
#include "admit_ref.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#define ADMIT_TOKENS_LIMIT 1000000000.0   /* largest max_tokens accepted */

static const char USAGE_MEMBER[] = "\"stream_options\":{\"include_usage\":true},";

static int fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* 1 if no container in s[0, len) nests deeper than ADMIT_MAX_DEPTH, 0 if
 * one does, -2 if a string holds a raw control byte or the escape \u0000 (C strings would cut the
 * value short: a model "a\u0000b" would be priced as "a" but run as "a\0b").
 * Brackets inside strings do not count; the scan stops at the first excess. */
static int depth_ok(const char *s, size_t len)
{
    int depth = 0, in_str = 0;

    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_str) {
            if ((unsigned char)c < 0x20)   /* RFC 8259: never raw in a string */
                return -2;
            if (c == '\\' && i + 5 < len && s[i + 1] == 'u' &&
                memcmp(s + i + 2, "0000", 4) == 0)
                return -2;
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > ADMIT_MAX_DEPTH)
                return 0;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return 1;
}

/* 1 if s[0, len) is well-formed UTF-8 (no overlongs, surrogates or code
 * points past U+10FFFF), else 0. ASCII runs are skipped eight at a time. */
static int utf8_ok(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) { i += 8; continue; }
        }
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t n;
        unsigned min, cp;
        if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; min = 0x80; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; min = 0x800; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; min = 0x10000; }
        else return 0;
        for (size_t k = 1; k <= n; k++) {
            if (i + k >= len || (s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += n + 1;
    }
    return 1;
}

/* Parses exactly one JSON value filling s[0, len); trailing non-whitespace
 * (which cJSON_ParseWithLength would ignore) makes it fail. */
static cJSON *parse_whole(const char *s, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);

    for (; root && end < s + len; end++) {
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    return root;
}

/* Name of the first key in keys[] that occurs more than once in obj, or NULL. */
static const char *duplicate_key(const cJSON *obj, const char *const *keys, size_t n)
{
    int seen[8] = {0};
    const cJSON *m;

    cJSON_ArrayForEach(m, obj) {
        for (size_t k = 0; k < n && m->string; k++)
            if (strcmp(m->string, keys[k]) == 0 && ++seen[k] > 1)
                return keys[k];
    }
    return NULL;
}

/* Reads an optional token limit: 0 if absent or null, 1 and *out if a
 * positive integer, -1 (err filled) otherwise. */
static int read_limit(const cJSON *root, const char *key, int64_t *out,
                      char *err, size_t errlen)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    char msg[96];

    if (!it || cJSON_IsNull(it))
        return 0;
    if (cJSON_IsNumber(it) && it->valuedouble >= 1 &&
        it->valuedouble <= ADMIT_TOKENS_LIMIT &&
        (double)(int64_t)it->valuedouble == it->valuedouble) {
        *out = (int64_t)it->valuedouble;
        return 1;
    }
    snprintf(msg, sizeof msg, "field '%s' must be a positive integer (at most %.0f)",
             key, ADMIT_TOKENS_LIMIT);
    return fail(err, errlen, msg);
}

/* The client's bytes with USAGE_MEMBER inserted after the first '{' (the
 * body is a JSON object with members, so only BOM/whitespace precede it). */
static int splice_usage(const char *body, size_t len, admit_req_t *r)
{
    const char *brace = memchr(body, '{', len);
    size_t head = (size_t)(brace - body) + 1, add = sizeof USAGE_MEMBER - 1;
    char *out = cJSON_malloc(len + add + 1);

    if (!out)
        return -1;
    memcpy(out, body, head);
    memcpy(out + head, USAGE_MEMBER, add);
    memcpy(out + head + add, body + head, len - head);
    out[len + add] = '\0';
    r->upstream_body = out;
    r->upstream_len = len + add;
    return 0;
}

/* Sets stream_options.include_usage to true in root and prints it. */
static int reprint_usage(cJSON *root, cJSON *opts, admit_req_t *r)
{
    if (!cJSON_IsObject(opts)) {   /* null */
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_ReplaceItemInObjectCaseSensitive(root, "stream_options", o)) {
            cJSON_Delete(o);
            return -1;
        }
        opts = o;
    }
    cJSON *t = cJSON_CreateTrue();
    int had = cJSON_GetObjectItemCaseSensitive(opts, "include_usage") != NULL;
    if (!t || !(had ? cJSON_ReplaceItemInObjectCaseSensitive(opts, "include_usage", t)
                    : cJSON_AddItemToObject(opts, "include_usage", t))) {
        cJSON_Delete(t);
        return -1;
    }
    r->upstream_body = cJSON_PrintUnformatted(root);
    if (!r->upstream_body)
        return -1;
    r->upstream_len = strlen(r->upstream_body);
    return 0;
}

/* Checks the fields of a parsed object and fills r. 0 or -1 (err filled). */
static int read_request(cJSON *root, const char *body, size_t len,
                        admit_req_t *r, char *err, size_t errlen)
{
    static const char *const top[] = {"model", "messages", "max_tokens",
        "max_completion_tokens", "stream", "stream_options", "n"};
    static const char *const inner[] = {"include_usage"};
    char msg[96];
    const char *dup = duplicate_key(root, top, sizeof top / sizeof top[0]);

    if (dup) {
        snprintf(msg, sizeof msg, "request body repeats the key '%s'", dup);
        return fail(err, errlen, msg);
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || model->valuestring[0] == '\0')
        return fail(err, errlen, "field 'model' is required and must be a non-empty string");
    if (strlen(model->valuestring) >= sizeof r->model) {
        snprintf(msg, sizeof msg, "field 'model' is too long (at most %d bytes)",
                 ADMIT_MODEL_MAX - 1);
        return fail(err, errlen, msg);
    }
    strcpy(r->model, model->valuestring);
    if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "messages")))
        return fail(err, errlen, "field 'messages' is required and must be an array");

    int64_t mt = -1, mct = -1;
    int has_mt = read_limit(root, "max_tokens", &mt, err, errlen);
    if (has_mt < 0 || read_limit(root, "max_completion_tokens", &mct, err, errlen) < 0)
        return -1;
    /* Both given: reserve for the larger, whichever the upstream honours. */
    r->max_tokens = mt > mct ? mt : mct;
    int64_t n = 1;
    int has_n = read_limit(root, "n", &n, err, errlen);
    if (has_n < 0)
        return -1;
    if (has_n && n > ADMIT_MAX_CHOICES) {
        snprintf(msg, sizeof msg, "field 'n' must be at most %d", ADMIT_MAX_CHOICES);
        return fail(err, errlen, msg);
    }
    r->n = has_n ? n : 1;

    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    if (stream && !cJSON_IsNull(stream) && !cJSON_IsBool(stream))
        return fail(err, errlen, "field 'stream' must be a boolean");
    r->stream = cJSON_IsTrue(stream);
    r->est_prompt_tokens = (int64_t)(len / 3 + (len % 3 != 0));
    if (!r->stream)
        return 0;

    cJSON *opts = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (opts && !cJSON_IsNull(opts) && !cJSON_IsObject(opts))
        return fail(err, errlen, "field 'stream_options' must be an object");
    if (cJSON_IsObject(opts) && duplicate_key(opts, inner, 1))
        return fail(err, errlen, "field 'stream_options' repeats the key 'include_usage'");
    r->client_wants_usage =
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(opts, "include_usage"));
    if (r->client_wants_usage)
        return 0;
    if ((opts ? reprint_usage(root, opts, r) : splice_usage(body, len, r)) < 0)
        return fail(err, errlen, "out of memory");
    return 0;
}

int admit_parse_ref(const char *body, size_t len, admit_req_t *out,
                char *err, size_t errlen)
{
    admit_req_t r;
    char msg[96];

    memset(&r, 0, sizeof r);
    if (!body || len == 0)
        return fail(err, errlen, "request body is not valid JSON");
    if (!utf8_ok((const unsigned char *)body, len))
        return fail(err, errlen, "request body is not valid UTF-8");
    int scan = depth_ok(body, len);
    if (scan == -2)
        return fail(err, errlen, "request body has a control character or \\u0000 inside a string");
    if (!scan) {
        snprintf(msg, sizeof msg, "request body nests deeper than %d levels",
                 ADMIT_MAX_DEPTH);
        return fail(err, errlen, msg);
    }
    cJSON *root = parse_whole(body, len);
    if (!root)
        return fail(err, errlen, "request body is not valid JSON");
    int rc = cJSON_IsObject(root)
        ? read_request(root, body, len, &r, err, errlen)
        : fail(err, errlen, "request body must be a JSON object");
    cJSON_Delete(root);
    if (rc < 0) {
        admit_free_ref(&r);
        return -1;
    }
    *out = r;
    return 0;
}

void admit_free_ref(admit_req_t *r)
{
    if (!r)
        return;
    cJSON_free(r->upstream_body);
    r->upstream_body = NULL;
    r->upstream_len = 0;
}
