/* admit_scan: the one pass over a chat completion request body that admit
 * reads it with (admit_int.h). Members are looked up case-sensitively, and a repeated key among those
 * metering reads is refused: a lookup sees the first occurrence while most
 * upstreams keep the last, so {"model":"cheap","model":"dear"} would otherwise
 * be priced as one model and run as the other. Nesting deeper than
 * ADMIT_MAX_DEPTH, raw control bytes and the escape \u0000 in strings (C
 * strings would cut a model "a\u0000b" short: priced as "a", run as "a\0b")
 * and invalid UTF-8 anywhere are refused.
 *
 * This runs on every request, so it is one pass over the bytes with no
 * allocation and no tree: a validating scanner that keeps the kind of each
 * open container in a bit mask (no recursion), and notes the top-level
 * members metering reads and include_usage inside the first stream_options.
 * It replaced a cJSON tree parse and gives the same answers, message for
 * message, so it accepts exactly what cJSON 1.7.15 (Debian 12's, with its
 * security patches) accepted; fuzz_admit checks the two agree on every input
 * (tests/fuzz/admit_ref.c). The cJSON rules it shares with usage (whitespace
 * and the BOM, where a string ends and how its escapes decode, what a number
 * is) are kept in jscan; these are its own:
 *   - the byte after a backslash is never a control byte to refuse;
 *   - as a decoded string is a C string to cJSON, a \u whose four characters
 *     are not all hex digits (U+0000) ends a key or the model there
 *     ("mod\u00zzel" is the key "mod");
 *   - a limit is its double (64.0, 6.4e1 and 64.0000000000000001 are 64;
 *     1e400 is inf, refused).
 * Which refusal a body gets follows the old order (UTF-8, then the byte scan
 * for control bytes, \u0000 and depth, then JSON, then the fields), so when
 * the scanner refuses a body, the first two checks are run over all of it to
 * name the reason. Pure: no I/O, no clock, no globals. */
#include "admit.h"
#include "admit_int.h"
#include "jscan.h"

#include <stdint.h>
#include <string.h>

#define KEY_MAX 24      /* longer than any key looked up */

const char *const admit_scan_field_name[F_COUNT] = { "model", "messages", "max_tokens",
    "max_completion_tokens", "stream", "stream_options", "n" };
static const unsigned char FIELD_BY_LEN[22] = {   /* field + 1, 0 for none */
    [1] = F_N + 1, [5] = F_MODEL + 1, [6] = F_STREAM + 1, [8] = F_MESSAGES + 1,
    [10] = F_MAX_TOKENS + 1, [14] = F_OPTS + 1, [21] = F_MAX_COMPLETION + 1 };

/* What the value about to be read is: a field, include_usage, the root. */
enum { R_NONE, R_ROOT, R_USAGE, R_FIELD };     /* R_FIELD + F_* */

/* 1 if no container in s[0, len) nests deeper than ADMIT_MAX_DEPTH, 0 if
 * one does, -2 if a string holds a raw control byte or the escape \u0000.
 * Brackets inside strings do not count; the scan stops at the first excess.
 * Only names the reason for a refusal: the scanner checks the same. */
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

/* Length of the well-formed UTF-8 sequence at p (*p >= 0x80; no overlongs,
 * surrogates or code points past U+10FFFF), or 0. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = *p, cp, min;
    size_t n;

    if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)(end - p) <= n)
        return 0;
    for (size_t k = 1; k <= n; k++) {
        if ((p[k] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n + 1;
}

/* 1 if s[0, len) is well-formed UTF-8, else 0. ASCII runs are skipped eight
 * at a time. Only names the reason for a refusal. */
static int utf8_ok(const unsigned char *s, size_t len)
{
    const unsigned char *p = s, *end = s + len;

    while (p < end) {
        if (end - p >= 8) {
            uint64_t w;
            memcpy(&w, p, 8);
            if (!(w & 0x8080808080808080ULL)) { p += 8; continue; }
        }
        if (*p < 0x80) { p++; continue; }
        size_t n = utf8_seq(p, end);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* Scans a string whose opening quote is just before p, as cJSON finds its
 * end, also refusing what the byte scan refuses (a control byte not hidden
 * by a backslash, \u0000) and invalid UTF-8. Returns the byte after the
 * closing quote, or NULL. Sets *esc if the string holds a backslash. */
static const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                        int *esc)
{
    for (;;) {
        p = jscan_find(p, end, JSCAN_STRICT);
        if (p == end)
            return NULL;
        unsigned c = *p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            if (end - p < 2)
                return NULL;
            if (p[1] == 'u' && end - p > 5 && memcmp(p + 2, "0000", 4) == 0)
                return NULL;
            *esc = 1;
            if (p[1] < 0x80) {
                p += 2;
                continue;
            }
            c = *++p;   /* hidden from cJSON, but UTF-8 all the same */
        }
        if (c < 0x80)
            return NULL;
        size_t n = utf8_seq(p, end);
        if (!n)
            return NULL;
        p += n;
    }
}

/* Records the kind of a value read in the given role. */
static void note(facts_t *f, int role, int kind)
{
    if (role >= R_FIELD)
        f->kind[role - R_FIELD] = (unsigned char)kind;
    else if (role == R_USAGE)
        f->usage_kind = (unsigned char)kind;
    else if (role == R_ROOT)
        f->root_kind = (unsigned char)kind;
}

/* The role of a root member from its decoded key name[0, n): a field the
 * first time its key is met; a repeat is noted and gets R_NONE. */
static int field_role(facts_t *f, const unsigned char *name, size_t n)
{
    int i;

    if (n >= sizeof FIELD_BY_LEN || (i = FIELD_BY_LEN[n] - 1) < 0 ||
        memcmp(name, admit_scan_field_name[i], n) != 0)
        return R_NONE;
    if (f->kind[i] != K_ABSENT) {
        if (f->dup < 0)
            f->dup = (signed char)i;
        return R_NONE;
    }
    return R_FIELD + i;
}

int admit_scan_body(const unsigned char *p, const unsigned char *end, facts_t *f,
                    char *model)
{
    uint64_t arrays = 0;        /* bit d: the container at depth d+1 is an array */
    int depth = 0, in_array = 0, in_opts = 0, role = R_ROOT;

    p = jscan_skip_ws(jscan_skip_bom(p, end), end);
    f->root = p;

value:  /* p is at the first byte of a value read in role */
    if (p == end)
        return -1;
    switch (*p) {
    case '{': case '[':
        in_array = *p == '[';
        if (depth == ADMIT_MAX_DEPTH)
            return -1;
        note(f, role, in_array ? K_ARRAY : K_OBJECT);
        if (in_array)
            arrays |= (uint64_t)1 << depth;
        else
            arrays &= ~((uint64_t)1 << depth);
        if (role == R_FIELD + F_OPTS && !in_array)
            in_opts = 1;        /* its members are at depth 2 */
        depth++;
        p = jscan_skip_ws(p + 1, end);
        if (p < end && *p == (in_array ? ']' : '}')) {
            p++;
            goto close;
        }
        if (!in_array)
            goto key;
        role = R_NONE;
        goto value;
    case '"': {
        const unsigned char *t = p + 1;
        int esc = 0;
        p = scan_string(t, end, &esc);
        if (!p)
            return -1;
        int is_model = role == R_FIELD + F_MODEL;
        if (esc) {              /* decoded to check its escapes; a model kept */
            size_t n;
            if (jscan_decode(t, p - 1, is_model ? (unsigned char *)model : NULL,
                             is_model ? ADMIT_MODEL_MAX - 1 : 0, &n) < 0)
                return -1;
            if (is_model)
                f->model_len = n;
        } else if (is_model) {
            f->model = t;
            f->model_len = (size_t)(p - 1 - t);
        }
        note(f, role, K_STRING);
        goto next;
    }
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return -1;
        if (role >= R_FIELD) {  /* a null limit is a span a clamp may replace */
            f->num[role - R_FIELD] = p;
            f->num_end[role - R_FIELD] = p + 4;
        }
        p += 4;
        note(f, role, K_NULL);
        goto next;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return -1;
        p += 4;
        note(f, role, K_TRUE);
        goto next;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return -1;
        p += 5;
        note(f, role, K_FALSE);
        goto next;
    default: {
        const unsigned char *t = p;
        p = jscan_number_end(p, end);
        if (!p)
            return -1;
        if (role >= R_FIELD) {
            f->num[role - R_FIELD] = t;
            f->num_end[role - R_FIELD] = p;
        }
        note(f, role, K_NUMBER);
        goto next;
    }
    }

key:    /* p is at the first non-space byte after '{' or ',' */
    if (p == end || *p != '"')
        return -1;
    {
        const unsigned char *t = p + 1, *name = t;
        unsigned char buf[KEY_MAX];
        size_t n;
        int esc = 0;
        p = scan_string(t, end, &esc);
        if (!p)
            return -1;
        n = (size_t)(p - 1 - t);
        if (esc) {
            if (jscan_decode(t, p - 1, buf, sizeof buf, &n) < 0)
                return -1;
            name = buf;
        }
        role = R_NONE;
        if (depth == 1) {
            role = field_role(f, name, n);
        } else if (depth == 2 && in_opts && n == 13 && memcmp(name, "include_usage", 13) == 0) {
            if (f->usage_kind == K_ABSENT)
                role = R_USAGE;
            else
                f->usage_twice = 1;
        }
    }
    p = jscan_skip_ws(p, end);
    if (p == end || *p != ':')
        return -1;
    p = jscan_skip_ws(p + 1, end);
    goto value;

next:   /* after a value inside the container at depth (or the root) */
    if (depth == 0)
        goto done;
    p = jscan_skip_ws(p, end);
    if (p == end)
        return -1;
    if (*p == ',') {
        p = jscan_skip_ws(p + 1, end);
        if (!in_array)
            goto key;
        role = R_NONE;
        goto value;
    }
    if (*p != (in_array ? ']' : '}'))
        return -1;
    p++;

close:  /* the container at depth has just been closed */
    if (--depth == 1)
        in_opts = 0;
    if (depth > 0) {
        in_array = (int)(arrays >> (depth - 1) & 1);
        goto next;
    }

done:
    return jscan_tail_ok(p, end) ? 0 : -1;
}

int admit_scan_refuse(const char *body, size_t len, char *err, size_t errlen)
{
    char msg[96];

    if (!utf8_ok((const unsigned char *)body, len))
        return admit_fail(err, errlen, "request body is not valid UTF-8");
    int scan = depth_ok(body, len);
    if (scan == -2)
        return admit_fail(err, errlen, "request body has a control character or \\u0000 inside a string");
    if (!scan) {
        snprintf(msg, sizeof msg, "request body nests deeper than %d levels",
                 ADMIT_MAX_DEPTH);
        return admit_fail(err, errlen, msg);
    }
    return admit_fail(err, errlen, "request body is not valid JSON");
}
