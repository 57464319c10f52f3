/* admit: reads a client's chat completion request at admission, through
 * one validating pass over its bytes (admit_scan.c, which says what it
 * accepts and refuses), and checks the fields metering reads.
 *
 * A streaming request must make the upstream report usage. When the client
 * did not ask for it, the upstream body is the client's bytes with
 * "stream_options":{"include_usage":true} inserted after the opening brace
 * (byte-exact otherwise, so large integers and escapes survive), or, when the
 * client sent a stream_options of its own (an object or null), the body
 * parsed and re-serialised by cJSON with include_usage set: the only path
 * that builds a tree. Pure: no I/O, no clock, no globals. */
#include "admit.h"
#include "admit_int.h"
#include "jscan.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#define ADMIT_TOKENS_LIMIT 1000000000.0   /* largest max_tokens accepted */

static const char USAGE_MEMBER[] = "\"stream_options\":{\"include_usage\":true},";

/* Reads an optional token limit: 0 if absent or null, 1 and *out if a
 * positive integer, -1 (err filled) otherwise. */
static int read_limit(const facts_t *f, int field, int64_t *out, char *err, size_t errlen)
{
    char msg[96];

    if (f->kind[field] == K_ABSENT || f->kind[field] == K_NULL)
        return 0;
    if (f->kind[field] == K_NUMBER && jscan_integer(f->num[field], f->num_end[field], 1,
                                                    (int64_t)ADMIT_TOKENS_LIMIT, out) > 0)
        return 1;
    snprintf(msg, sizeof msg, "field '%s' must be a positive integer (at most %.0f)",
             admit_scan_field_name[field], ADMIT_TOKENS_LIMIT);
    return admit_fail(err, errlen, msg);
}

/* The client's bytes with USAGE_MEMBER inserted after the root's '{' (only
 * BOM/whitespace precede it). */
static int splice_usage(const char *body, size_t len, const char *brace, admit_req_t *r)
{
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

/* The rare rewrite: the client's own stream_options, re-serialised by cJSON.
 * The scanner has accepted the body, so cJSON parses it (trailing
 * whitespace aside) unless out of memory. */
static int rewrite_options(const char *body, size_t len, admit_req_t *r)
{
    cJSON *root = cJSON_ParseWithLength(body, len);

    if (!root)
        return -1;
    int rc = reprint_usage(root, cJSON_GetObjectItemCaseSensitive(root, "stream_options"), r);
    cJSON_Delete(root);
    return rc;
}

/* Checks the fields the scan found and fills r. 0 or -1 (err filled). */
static int read_request(const facts_t *f, const char *body, size_t len,
                        admit_req_t *r, char *err, size_t errlen)
{
    char msg[96];

    if (f->root_kind != K_OBJECT)
        return admit_fail(err, errlen, "request body must be a JSON object");
    if (f->dup >= 0) {
        snprintf(msg, sizeof msg, "request body repeats the key '%s'", admit_scan_field_name[f->dup]);
        return admit_fail(err, errlen, msg);
    }
    if (f->kind[F_MODEL] != K_STRING || f->model_len == 0)
        return admit_fail(err, errlen, "field 'model' is required and must be a non-empty string");
    if (f->model_len >= sizeof r->model) {
        snprintf(msg, sizeof msg, "field 'model' is too long (at most %d bytes)",
                 ADMIT_MODEL_MAX - 1);
        return admit_fail(err, errlen, msg);
    }
    if (f->model)       /* else decoded there by the scan */
        memcpy(r->model, f->model, f->model_len);
    if (f->kind[F_MESSAGES] != K_ARRAY)
        return admit_fail(err, errlen, "field 'messages' is required and must be an array");

    int64_t mt = -1, mct = -1;
    if (read_limit(f, F_MAX_TOKENS, &mt, err, errlen) < 0 ||
        read_limit(f, F_MAX_COMPLETION, &mct, err, errlen) < 0)
        return -1;
    /* Both given: reserve for the larger, whichever the upstream honours. */
    r->max_tokens = mt > mct ? mt : mct;
    int64_t n = 1;
    int has_n = read_limit(f, F_N, &n, err, errlen);
    if (has_n < 0)
        return -1;
    if (has_n && n > ADMIT_MAX_CHOICES) {
        snprintf(msg, sizeof msg, "field 'n' must be at most %d", ADMIT_MAX_CHOICES);
        return admit_fail(err, errlen, msg);
    }
    r->n = has_n ? n : 1;

    int stream = f->kind[F_STREAM];
    if (stream != K_ABSENT && stream != K_NULL && stream != K_TRUE && stream != K_FALSE)
        return admit_fail(err, errlen, "field 'stream' must be a boolean");
    r->stream = stream == K_TRUE;
    r->est_prompt_tokens = (int64_t)(len / 3 + (len % 3 != 0));
    if (!r->stream)
        return 0;

    int opts = f->kind[F_OPTS];
    if (opts != K_ABSENT && opts != K_NULL && opts != K_OBJECT)
        return admit_fail(err, errlen, "field 'stream_options' must be an object");
    if (opts == K_OBJECT && f->usage_twice)
        return admit_fail(err, errlen, "field 'stream_options' repeats the key 'include_usage'");
    r->client_wants_usage = f->usage_kind == K_TRUE;
    if (r->client_wants_usage)
        return 0;
    if ((opts == K_ABSENT ? splice_usage(body, len, (const char *)f->root, r)
                          : rewrite_options(body, len, r)) < 0)
        return admit_fail(err, errlen, "out of memory");
    return 0;
}

int admit_parse(const char *body, size_t len, admit_req_t *out,
                char *err, size_t errlen)
{
    admit_req_t r;
    facts_t f;

    if (!body || len == 0)
        return admit_fail(err, errlen, "request body is not valid JSON");
    memset(&r, 0, sizeof r);
    memset(&f, 0, sizeof f);
    f.dup = -1;
    if (admit_scan_body((const unsigned char *)body, (const unsigned char *)body + len, &f,
                  r.model) < 0)
        return admit_scan_refuse(body, len, err, errlen);
    if (read_request(&f, body, len, &r, err, errlen) < 0) {
        admit_free(&r);
        return -1;
    }
    *out = r;
    return 0;
}

int admit_clamp(admit_req_t *r, const char *body, size_t len, int64_t tokens)
{
    const char *t = r->upstream_body ? r->upstream_body : body;
    size_t tl = r->upstream_body ? r->upstream_len : len;
    facts_t f;
    char model[ADMIT_MODEL_MAX];
    memset(&f, 0, sizeof f);
    memset(model, 0, sizeof model);
    f.dup = -1;
    if (tokens < 1 || admit_scan_body((const unsigned char *)t, (const unsigned char *)t + tl, &f,
                                model) < 0)
        return -1;
    char num[32], ins[48];
    int nl = snprintf(num, sizeof num, "%lld", (long long)tokens);
    /* the spans to replace, in order: the limits the body has (null included) */
    const unsigned char *from[2], *to[2];
    int n = 0;
    int fields[2] = { F_MAX_TOKENS, F_MAX_COMPLETION };
    for (int i = 0; i < 2; i++)
        if (f.kind[fields[i]] == K_NUMBER || f.kind[fields[i]] == K_NULL) {
            from[n] = f.num[fields[i]];
            to[n++] = f.num_end[fields[i]];
        }
    if (n == 2 && from[1] < from[0]) {
        const unsigned char *a = from[0], *b = to[0];
        from[0] = from[1]; to[0] = to[1]; from[1] = a; to[1] = b;
    }
    size_t cap = tl + 2 * (size_t)nl + sizeof ins;
    char *out = cJSON_malloc(cap + 1), *o = out;
    if (!out)
        return -1;
    const char *at = t;
    if (n == 0) {               /* neither given: max_tokens after the root's '{' */
        int il = snprintf(ins, sizeof ins, "\"max_tokens\":%s,", num);
        size_t head = (size_t)((const char *)f.root - t) + 1;
        /* an empty object has no member to put a comma before */
        const unsigned char *q = jscan_skip_ws(f.root + 1, (const unsigned char *)t + tl);
        if (*q == '}') il--;
        memcpy(o, t, head);
        o += head;
        memcpy(o, ins, (size_t)il);
        o += il;
        at = t + head;
    }
    for (int i = 0; i < n; i++) {
        size_t k = (size_t)((const char *)from[i] - at);
        memcpy(o, at, k);
        o += k;
        memcpy(o, num, (size_t)nl);
        o += nl;
        at = (const char *)to[i];
    }
    size_t rest = (size_t)(t + tl - at);
    memcpy(o, at, rest);
    o += rest;
    *o = '\0';
    cJSON_free(r->upstream_body);
    r->upstream_body = out;
    r->upstream_len = (size_t)(o - out);
    r->max_tokens = tokens;
    return 0;
}

void admit_free(admit_req_t *r)
{
    if (!r)
        return;
    cJSON_free(r->upstream_body);
    r->upstream_body = NULL;
    r->upstream_len = 0;
}
