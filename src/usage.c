/* usage: reads token usage and stream facts out of upstream JSON, either a
 * whole chat completion body or the data payload of one streaming chunk.
 *
 * Counts are trusted only when they are JSON numbers holding integers in
 * [0, USAGE_MAX_TOKENS]; anything else in a usage object that is present makes
 * the whole parse USAGE_BAD, so a broken upstream is noticed rather than
 * billed as zero. Generated text is measured (in bytes) so the caller can
 * estimate completion tokens when the upstream never reports usage. Lookups
 * are case-sensitive, as the upstream's are; where a key repeats, the first
 * one counts. Pure: no I/O, no clock, no globals.
 *
 * This runs on every stream chunk, so it is one pass over the bytes with no
 * allocation and no tree: a validating scanner that keeps on an explicit stack
 * (no recursion) the kind of each open container, and for the few containers
 * whose members matter (root, usage, its details, choices[i], delta/message,
 * tool_calls[j], function) which keys it has seen. It replaced a cJSON tree
 * walk and accepts exactly what cJSON 1.7.15 (Debian 12's, with its security
 * patches) accepted; fuzz_usage checks the two agree on every input
 * (tests/fuzz/usage_ref.c). The cJSON rules it shares with admit (whitespace
 * and the BOM, where a string ends and how its escapes decode, what a number
 * is) are kept in jscan; these are its own:
 *   - up to 1000 containers may be open at once (CJSON_NESTING_LIMIT);
 *   - the root is an object;
 *   - raw bytes in strings (control bytes, NUL, invalid UTF-8) are kept as
 *     they are;
 *   - a decoded string is a C string to cJSON: keys are compared, and text
 *     and id measured, up to the first NUL, raw or \u0000.
 */
#include "usage.h"
#include "jscan.h"

#include <string.h>

#define NEST_MAX 1000   /* containers open at once, as CJSON_NESTING_LIMIT */
#define SEM_MAX  8      /* the deepest container whose keys matter is 7th */
#define KEY_MAX  24     /* longer than any key looked up */

/* Containers whose members matter; C_NONE for every other. */
enum { C_NONE, C_ROOT, C_USAGE, C_DETAILS, C_CHOICES, C_CHOICE, C_DELTA,
       C_MESSAGE, C_CALLS, C_CALL, C_FUNC };

/* What the value about to be read means. */
enum { R_NONE, R_ROOT, R_ID, R_USAGE, R_CHOICES, R_PROMPT, R_COMPLETION,
       R_CACHED, R_DETAILS, R_CHOICE, R_DELTA, R_MESSAGE, R_TEXT, R_CALLS,
       R_CALL, R_FUNC };

typedef struct keydef {
    const char *name;
    unsigned char len, role;
} keydef_t;

/* The keys that matter in one context, and a bit per key length for a quick
 * "none of these". */
typedef struct keyset {
    uint32_t lens;
    keydef_t keys[6];           /* up to the first without a name */
} keyset_t;

#define KEY(name, role) { name, sizeof name - 1, role }

static const keyset_t KEYSETS[] = {
    [C_ROOT] = { 1u << 2 | 1u << 5 | 1u << 7,
        { KEY("id", R_ID), KEY("usage", R_USAGE), KEY("choices", R_CHOICES) } },
    [C_USAGE] = { 1u << 13 | 1u << 17 | 1u << 21,
        { KEY("prompt_tokens", R_PROMPT), KEY("completion_tokens", R_COMPLETION),
          KEY("prompt_tokens_details", R_DETAILS) } },
    [C_DETAILS] = { 1u << 13, { KEY("cached_tokens", R_CACHED) } },
    [C_CHOICE] = { 1u << 5 | 1u << 7, { KEY("delta", R_DELTA), KEY("message", R_MESSAGE) } },
    /* generated text, all billed as completion */
    [C_DELTA] = { 1u << 7 | 1u << 17 | 1u << 9 | 1u << 10,
        { KEY("content", R_TEXT), KEY("refusal", R_TEXT), KEY("reasoning_content", R_TEXT),
          KEY("reasoning", R_TEXT), KEY("tool_calls", R_CALLS) } },
    [C_MESSAGE] = { 1u << 7 | 1u << 17 | 1u << 9 | 1u << 10,
        { KEY("content", R_TEXT), KEY("refusal", R_TEXT), KEY("reasoning_content", R_TEXT),
          KEY("reasoning", R_TEXT), KEY("tool_calls", R_CALLS) } },
    [C_CALL] = { 1u << 8, { KEY("function", R_FUNC) } },
    [C_FUNC] = { 1u << 9 | 1u << 4, { KEY("arguments", R_TEXT), KEY("name", R_TEXT) } },
};

/* The facts gathered so far; they count only if the whole text is valid. */
typedef struct scan {
    usage_info_t info;
    int64_t count[3];         /* prompt, completion, cached */
    signed char has[3];       /* per count: 1 read, 0 absent or null, -1 bad */
    signed char usage_kind;   /* "usage": 1 object, 0 absent or null, -1 other */
    signed char details_kind; /* "prompt_tokens_details", the same */
    unsigned char in_delta;   /* text now read belongs to a delta */
    int64_t delta_bytes;      /* text in the current choice's delta */
} scan_t;

/* The rest of scan_string once q, the first '"', '\\' or NUL, is not a
 * closing quote. */
static const unsigned char *scan_string_rest(const unsigned char *p, const unsigned char *q,
                                             const unsigned char *end, size_t *n,
                                             unsigned char *buf, size_t cap, int *raw)
{
    const unsigned char *nul = NULL;
    int escaped = 0;

    for (;;) {
        if (q == end)
            return NULL;
        if (*q == '"')
            break;
        if (*q == '\\') {
            if (end - q < 2)
                return NULL;
            escaped = 1;
            q += 2;
        } else {
            if (!nul)
                nul = q;
            q++;
        }
        q = jscan_find_raw(q, end);
    }
    if (!escaped) {             /* then what stopped scan_string was a NUL */
        *raw = 1;
        *n = (size_t)(nul - p);
        return q + 1;
    }
    if (jscan_decode(p, q, buf, cap, n) < 0)
        return NULL;
    *raw = 0;
    return q + 1;
}

/* Scans a string whose opening quote is just before p. Returns the byte
 * after the closing quote, or NULL if the string is not valid. *n gets its
 * decoded length up to the first NUL. If it holds no escape, *raw is set and
 * those bytes are p[0, *n); otherwise the first min(*n, cap) of them are
 * written to buf. */
static inline const unsigned char *scan_string(const unsigned char *p, const unsigned char *end,
                                               size_t *n, unsigned char *buf, size_t cap,
                                               int *raw)
{
    const unsigned char *q = jscan_find_raw(p, end);
    if (q < end && *q == '"') {     /* the usual case: nothing to decode */
        *raw = 1;
        *n = (size_t)(q - p);
        return q + 1;
    }
    return scan_string_rest(p, q, end, n, buf, cap, raw);
}

/* Notes the type of a value of the given role (the number of a count aside):
 * `kind` is 1 for an object, 0 for null, -1 for anything else. Returns the
 * context an object or array opens. */
static int note_value(scan_t *s, int role, int kind, int is_array)
{
    switch (role) {
    case R_ROOT:
        return C_ROOT;
    case R_USAGE:
        s->usage_kind = (signed char)kind;
        return kind == 1 ? C_USAGE : C_NONE;
    case R_DETAILS:
        s->details_kind = (signed char)kind;
        return kind == 1 ? C_DETAILS : C_NONE;
    case R_PROMPT: case R_COMPLETION: case R_CACHED:
        if (kind != 0)
            s->has[role - R_PROMPT] = -1;
        return C_NONE;
    case R_CHOICES:
        return is_array ? C_CHOICES : C_NONE;
    case R_CALLS:
        return is_array ? C_CALLS : C_NONE;
    case R_CHOICE:
        s->delta_bytes = 0;
        return kind == 1 ? C_CHOICE : C_NONE;
    case R_DELTA: case R_MESSAGE:
        s->in_delta = role == R_DELTA;
        return kind == 1 ? (role == R_DELTA ? C_DELTA : C_MESSAGE) : C_NONE;
    case R_CALL:
        return kind == 1 ? C_CALL : C_NONE;
    case R_FUNC:
        return kind == 1 ? C_FUNC : C_NONE;
    default:
        return C_NONE;
    }
}

/* memcmp(a, b, n) == 0, without a call for these short keys. */
static int same_bytes(const unsigned char *a, const char *b, size_t n)
{
    uint64_t x, y;
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if (a[i] != (unsigned char)b[i])
                return 0;
        return 1;
    }
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&x, a + i, 8);
        memcpy(&y, b + i, 8);
        if (x != y)
            return 0;
    }
    memcpy(&x, a + n - 8, 8);       /* the last eight, overlapping */
    memcpy(&y, b + n - 8, 8);
    return x == y;
}

/* The role of an element of an array of the given context. */
static int element_role(int ctx)
{
    return ctx == C_CHOICES ? R_CHOICE : ctx == C_CALLS ? R_CALL : R_NONE;
}

/* The role of a member of a context object, from its decoded key (n <= 31).
 * Each key counts once: a repeat is R_NONE. */
static int key_role(int ctx, const unsigned char *name, size_t n, unsigned char *seen)
{
    const keyset_t *set = &KEYSETS[ctx];
    if (!(set->lens >> n & 1))
        return R_NONE;
    for (int i = 0; set->keys[i].name; i++) {
        const keydef_t *k = &set->keys[i];
        if (k->len == n && same_bytes(name, k->name, n)) {
            if (*seen & 1u << i)
                return R_NONE;
            *seen |= (unsigned char)(1u << i);
            return k->role;
        }
    }
    return R_NONE;
}

/* The verdict on what was read of "usage"; fills *out when USAGE_OK. */
static int finish(scan_t *s, usage_info_t *out)
{
    if (s->usage_kind < 0)
        return USAGE_BAD;
    if (s->usage_kind > 0) {
        if (s->has[0] < 0 || s->has[1] < 0 || s->details_kind < 0 ||
            (s->details_kind > 0 && s->has[2] < 0))
            return USAGE_BAD;
        int64_t cached = s->details_kind > 0 && s->has[2] > 0 ? s->count[2] : 0;
        if (s->has[0] && s->has[1]) {   /* a partial report is not a usage report */
            if (cached > s->count[0])
                return USAGE_BAD;
            s->info.has_usage = 1;
            s->info.usage.prompt = s->count[0];
            s->info.usage.completion = s->count[1];
            s->info.usage.cached = cached;
        }
    }
    *out = s->info;
    return USAGE_OK;
}

int usage_parse(const char *json, size_t len, usage_info_t *out)
{
    const unsigned char *p = (const unsigned char *)json, *end;
    uint64_t arrays[(NEST_MAX + 63) / 64];  /* bit d: container at depth d+1 is an array */
    unsigned char ctx[SEM_MAX], seen[SEM_MAX];
    int depth = 0, sem = 0, role = R_ROOT;  /* containers open; of those, contexts */
    int in_array = 0;                       /* the innermost open container is one */
    scan_t s;

    if (!json || len == 0)
        return USAGE_NOT_JSON;
    end = p + len;
    p = jscan_skip_ws(jscan_skip_bom(p, end), end);
    if (p == end || *p != '{')
        return USAGE_NOT_JSON;
    memset(&s, 0, sizeof s);

value:  /* p is at the first byte of a value whose meaning is role */
    if (p == end)
        return USAGE_NOT_JSON;
    switch (*p) {
    case '{': case '[': {
        int c = C_NONE;
        in_array = *p == '[';
        if (role != R_NONE)
            c = note_value(&s, role, in_array ? -1 : 1, in_array);
        if (depth == NEST_MAX)
            return USAGE_NOT_JSON;
        if (in_array)
            arrays[depth >> 6] |= (uint64_t)1 << (depth & 63);
        else
            arrays[depth >> 6] &= ~((uint64_t)1 << (depth & 63));
        if (c != C_NONE) {      /* only under a context: contexts are depths 1..sem */
            ctx[sem] = (unsigned char)c;
            seen[sem++] = 0;
        }
        depth++;
        p = jscan_skip_ws(p + 1, end);
        if (p < end && *p == (in_array ? ']' : '}')) {
            if (c == C_CHOICES)
                s.info.choices_empty = 1;
            p++;
            goto close;
        }
        if (!in_array)
            goto key;
        role = element_role(c);
        goto value;
    }
    case '"': {
        size_t n;
        int raw;
        const unsigned char *t = p + 1;
        if (role == R_ID) {
            p = scan_string(t, end, &n, (unsigned char *)s.info.id, USAGE_ID_MAX - 1, &raw);
            if (!p)
                return USAGE_NOT_JSON;
            if (n > USAGE_ID_MAX - 1)
                n = USAGE_ID_MAX - 1;
            if (raw)
                memcpy(s.info.id, t, n);
            s.info.id[n] = '\0';
        } else {
            p = scan_string(t, end, &n, NULL, 0, &raw);
            if (!p)
                return USAGE_NOT_JSON;
            if (role == R_TEXT) {
                if (s.in_delta)
                    s.delta_bytes += (int64_t)n;
                else
                    s.info.content_bytes += (int64_t)n;
            } else if (role != R_NONE) {
                note_value(&s, role, -1, 0);
            }
        }
        goto next;
    }
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4) != 0)
            return USAGE_NOT_JSON;
        p += 4;
        if (role != R_NONE)
            note_value(&s, role, 0, 0);
        goto next;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4) != 0)
            return USAGE_NOT_JSON;
        p += 4;
        if (role != R_NONE)
            note_value(&s, role, -1, 0);
        goto next;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5) != 0)
            return USAGE_NOT_JSON;
        p += 5;
        if (role != R_NONE)
            note_value(&s, role, -1, 0);
        goto next;
    default: {
        const unsigned char *t = p;
        p = jscan_number_end(p, end);
        if (!p)
            return USAGE_NOT_JSON;
        if (role >= R_PROMPT && role <= R_CACHED)
            s.has[role - R_PROMPT] = (signed char)jscan_integer(t, p, 0, USAGE_MAX_TOKENS,
                                                                &s.count[role - R_PROMPT]);
        else if (role != R_NONE)
            note_value(&s, role, -1, 0);
        goto next;
    }
    }

key:    /* p is at the first non-space byte after '{' or ',' */
    if (p == end || *p != '"')
        return USAGE_NOT_JSON;
    {
        unsigned char name[KEY_MAX];
        const unsigned char *t = p + 1;
        size_t n;
        int raw;
        p = scan_string(t, end, &n, name, sizeof name, &raw);
        if (!p)
            return USAGE_NOT_JSON;
        role = R_NONE;
        if (sem == depth && n <= sizeof name)
            role = key_role(ctx[sem - 1], raw ? t : name, n, &seen[sem - 1]);
    }
    p = jscan_skip_ws(p, end);
    if (p == end || *p != ':')
        return USAGE_NOT_JSON;
    p = jscan_skip_ws(p + 1, end);
    goto value;

next:   /* after a value inside the container at depth */
    p = jscan_skip_ws(p, end);
    if (p == end)
        return USAGE_NOT_JSON;
    if (*p == ',') {
        p = jscan_skip_ws(p + 1, end);
        if (!in_array)
            goto key;
        role = element_role(sem == depth ? ctx[sem - 1] : C_NONE);
        goto value;
    }
    if (*p != (in_array ? ']' : '}'))
        return USAGE_NOT_JSON;
    p++;

close:  /* the container at depth has just been closed */
    if (sem == depth) {
        if (ctx[sem - 1] == C_CHOICE) {
            s.info.content_deltas += s.delta_bytes > 0;
            s.info.content_bytes += s.delta_bytes;
        }
        sem--;
    }
    if (--depth > 0) {
        in_array = (int)(arrays[(depth - 1) >> 6] >> ((depth - 1) & 63) & 1);
        goto next;
    }

    if (!jscan_tail_ok(p, end))
        return USAGE_NOT_JSON;
    return finish(&s, out);
}

int64_t usage_estimate_completion(int64_t content_bytes, int content_deltas)
{
    int64_t by_bytes = content_bytes > 0 ? content_bytes / 3 + (content_bytes % 3 != 0) : 0;
    int64_t by_deltas = content_deltas > 0 ? content_deltas : 0;
    return by_bytes > by_deltas ? by_bytes : by_deltas;
}
