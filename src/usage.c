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
 * patches) accepted, so these cJSON rules are kept on purpose; fuzz_usage
 * checks the two agree on every input (tests/fuzz/usage_ref.c):
 *   - whitespace is any byte 0x00-0x20 inside the text and before it, but only
 *     space, tab, LF and CR after the root object; a UTF-8 BOM before it is
 *     skipped when the input is at least 5 bytes long;
 *   - up to 1000 containers may be open at once (CJSON_NESTING_LIMIT);
 *   - a string ends at the first '"' not hidden by a backslash, and escapes
 *     are decoded only after that; raw bytes (control bytes, NUL, invalid
 *     UTF-8) are kept as they are; a \u whose four characters are not all hex
 *     digits stands for U+0000; a lone low surrogate or a high one not followed
 *     by \u and a low one is refused;
 *   - a decoded string is a C string to cJSON: keys are compared, and text
 *     and id measured, up to the first NUL, raw or \u0000;
 *   - a number is a '-' or digit followed by bytes from "0123456789+-.eE",
 *     accepted when strtod reads all of them (so 01, 1., -.5 and 1E+05 are
 *     numbers), of any length.
 */
#include "usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define NEST_MAX 1000   /* containers open at once, as CJSON_NESTING_LIMIT */
#define SEM_MAX  8      /* the deepest container whose keys matter is 7th */
#define KEY_MAX  24     /* longer than any key looked up */
#define SIG_MAX  800    /* digits kept to round a count like strtod (> 767) */

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

/* Bytes a string scan stops at: the quote, a backslash, NUL. */
static const unsigned char STR_STOP[256] = { [0] = 1, ['"'] = 1, ['\\'] = 1 };
/* Bytes cJSON copies as part of a number. */
static const unsigned char NUM_BYTE[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1, ['e'] = 1,
    ['E'] = 1 };

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

static int is_digit(unsigned c) { return c - '0' < 10; }

static const unsigned char *skip_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p <= ' ')
        p++;
    return p;
}

/* The first byte in [p, end) that is '"', '\\' or NUL, or end. Sixteen bytes
 * at a time with SSE2 (every x86-64 has it); otherwise eight, where in
 * x - ONES & ~x & HIGHS the lowest set bit marks the first zero byte exactly
 * (borrows only make bits above it wrong). */
static const unsigned char *find_stop(const unsigned char *p, const unsigned char *end)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i zero = _mm_setzero_si128();
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                                _mm_cmpeq_epi8(x, bslash)),
                                   _mm_cmpeq_epi8(x, zero));
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#elif defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    while (end - p >= 8) {
        uint64_t x, q, b;
        memcpy(&x, p, 8);
        q = x ^ ones * '"';
        b = x ^ ones * '\\';
        uint64_t m = ((x - ones) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b);
        m &= highs;
        if (m)
            return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && !STR_STOP[*p])
        p++;
    return p;
}

/* cJSON's parse_hex4: 0 when any of the four is not a hex digit. */
static unsigned hex4(const unsigned char *p)
{
    unsigned h = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (is_digit(c))
            d = c - '0';
        else if ((c | 0x20) - 'a' < 6)
            d = (c | 0x20) - 'a' + 10;
        else
            return 0;
        h = h << 4 | d;
    }
    return h;
}

/* Decoded bytes of a string, as a C string: counted up to the first NUL,
 * of which the first cap are kept in buf. */
typedef struct sink {
    unsigned char *buf;
    size_t cap, n;
    int ended;
} sink_t;

static void put(sink_t *o, unsigned c)
{
    if (o->ended)
        return;
    if (c == 0) {
        o->ended = 1;
        return;
    }
    if (o->n < o->cap)
        o->buf[o->n] = (unsigned char)c;
    o->n++;
}

/* Decodes the escapes of p[0, q), q being the closing quote, as cJSON's
 * parse_string does. 0, or -1 for an escape cJSON refuses. */
static int decode(const unsigned char *p, const unsigned char *q, sink_t *o)
{
    while (p < q) {
        if (*p != '\\') {         /* a run of plain bytes; a NUL only first */
            const unsigned char *r = find_stop(p + 1, q);
            if (*p == 0)
                o->ended = 1;
            if (!o->ended) {
                size_t k = (size_t)(r - p);
                if (o->n < o->cap)
                    memcpy(o->buf + o->n, p, o->cap - o->n < k ? o->cap - o->n : k);
                o->n += k;
            }
            p = r;
            continue;
        }
        unsigned c = p[1];      /* p + 1 <= q: a backslash before q hides no quote */
        switch (c) {
        case 'b': put(o, '\b'); break;
        case 'f': put(o, '\f'); break;
        case 'n': put(o, '\n'); break;
        case 'r': put(o, '\r'); break;
        case 't': put(o, '\t'); break;
        case '"': case '\\': case '/': put(o, c); break;
        case 'u': {
            if (q - p < 6)
                return -1;
            unsigned long cp = hex4(p + 2);
            if (cp >= 0xDC00 && cp <= 0xDFFF)
                return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (q - p < 12 || p[6] != '\\' || p[7] != 'u')
                    return -1;
                unsigned lo = hex4(p + 8);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return -1;
                cp = 0x10000 + (((cp & 0x3FF) << 10) | (lo & 0x3FF));
                p += 6;
            }
            if (cp < 0x80) {
                put(o, (unsigned)cp);
            } else if (cp < 0x800) {
                put(o, 0xC0 | (unsigned)(cp >> 6));
                put(o, 0x80 | (unsigned)(cp & 0x3F));
            } else if (cp < 0x10000) {
                put(o, 0xE0 | (unsigned)(cp >> 12));
                put(o, 0x80 | (unsigned)(cp >> 6 & 0x3F));
                put(o, 0x80 | (unsigned)(cp & 0x3F));
            } else {
                put(o, 0xF0 | (unsigned)(cp >> 18));
                put(o, 0x80 | (unsigned)(cp >> 12 & 0x3F));
                put(o, 0x80 | (unsigned)(cp >> 6 & 0x3F));
                put(o, 0x80 | (unsigned)(cp & 0x3F));
            }
            p += 4;
            break;
        }
        default:
            return -1;
        }
        p += 2;
    }
    return 0;
}

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
        q = find_stop(q, end);
    }
    if (!escaped) {             /* then what stopped scan_string was a NUL */
        *raw = 1;
        *n = (size_t)(nul - p);
        return q + 1;
    }
    sink_t o = { buf, cap, 0, 0 };
    if (decode(p, q, &o) < 0)
        return NULL;
    *raw = 0;
    *n = o.n;
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
    const unsigned char *q = find_stop(p, end);
    if (q < end && *q == '"') {     /* the usual case: nothing to decode */
        *raw = 1;
        *n = (size_t)(q - p);
        return q + 1;
    }
    return scan_string_rest(p, q, end, n, buf, cap, raw);
}

/* Reads a number where cJSON would (p at '-' or a digit). Returns the byte
 * after it, or NULL unless strtod would read every byte cJSON hands it. */
static const unsigned char *scan_number(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *d;
    size_t digits;

    if (*p == '-')
        p++;
    for (d = p; p < end && is_digit(*p); p++)
        ;
    digits = (size_t)(p - d);
    if (p < end && *p == '.') {
        for (d = ++p; p < end && is_digit(*p); p++)
            ;
        digits += (size_t)(p - d);
    }
    if (digits == 0)
        return NULL;
    if (p < end && (*p | 0x20) == 'e') {
        const unsigned char *x = p + 1;
        if (x < end && (*x == '+' || *x == '-'))
            x++;
        if (x < end && is_digit(*x)) {
            while (x < end && is_digit(*x))
                x++;
            p = x;
        }
    }
    return p < end && NUM_BYTE[*p] ? NULL : p;
}

/* The double strtod gives for the valid number s[0, e), whatever its length:
 * past SIG_MAX significant digits the rest only decide rounding, and a
 * nonzero digit in their place rounds the same way, since no halfway point
 * between doubles has more than 767. */
static double number_value(const unsigned char *s, const unsigned char *e)
{
    char buf[SIG_MAX + 32];
    size_t k = 0, first;
    long long exp10 = 0, ev = 0;
    int neg = *s == '-', point = 0, sticky = 0;

    if (neg)
        buf[k++] = (char)*s++;
    first = k;
    for (; s < e && (is_digit(*s) || *s == '.'); s++) {
        if (*s == '.') {
            point = 1;
            continue;
        }
        exp10 -= point;
        if (k == first && *s == '0')
            continue;
        if (k - first < SIG_MAX) {
            buf[k++] = (char)*s;
        } else {
            exp10++;
            sticky |= *s != '0';
        }
    }
    if (k == first)
        return neg ? -0.0 : 0.0;
    if (sticky) {
        buf[k++] = '1';
        exp10--;
    }
    if (s < e) {                /* the exponent, saturated */
        int below = *++s == '-';
        s += *s == '-' || *s == '+';
        for (; s < e; s++)
            if (ev < 100000000)
                ev = ev * 10 + (*s - '0');
        exp10 += below ? -ev : ev;
    }
    /* beyond this the value is 0 or inf whatever the digits */
    if (exp10 > 1000000)
        exp10 = 1000000;
    if (exp10 < -1000000)
        exp10 = -1000000;
    snprintf(buf + k, sizeof buf - k, "e%lld", exp10);
    return strtod(buf, NULL);
}

/* A count from the number s[0, e): 1 and *out when it is an integer in
 * [0, USAGE_MAX_TOKENS], -1 otherwise. */
static int read_count(const unsigned char *s, const unsigned char *e, int64_t *out)
{
    if (e - s <= 8) {           /* plain digits: no need for strtod */
        int64_t v = 0;
        const unsigned char *d = s;
        while (d < e && is_digit(*d))
            v = v * 10 + (*d++ - '0');
        if (d == e) {
            if (v > USAGE_MAX_TOKENS)
                return -1;
            *out = v;
            return 1;
        }
    }
    double v = number_value(s, e);
    /* written so that NaN fails too; the cast is safe once in range */
    if (!(v >= 0 && v <= (double)USAGE_MAX_TOKENS) || (double)(int64_t)v != v)
        return -1;
    *out = (int64_t)v;
    return 1;
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
    if (len >= 5 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        p += 3;
    p = skip_ws(p, end);
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
        p = skip_ws(p + 1, end);
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
        if (*p != '-' && !is_digit(*p))
            return USAGE_NOT_JSON;
        p = scan_number(p, end);
        if (!p)
            return USAGE_NOT_JSON;
        if (role >= R_PROMPT && role <= R_CACHED)
            s.has[role - R_PROMPT] = (signed char)read_count(t, p, &s.count[role - R_PROMPT]);
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
    p = skip_ws(p, end);
    if (p == end || *p != ':')
        return USAGE_NOT_JSON;
    p = skip_ws(p + 1, end);
    goto value;

next:   /* after a value inside the container at depth */
    p = skip_ws(p, end);
    if (p == end)
        return USAGE_NOT_JSON;
    if (*p == ',') {
        p = skip_ws(p + 1, end);
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

    for (; p < end; p++)        /* only this whitespace after the root */
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return USAGE_NOT_JSON;
    return finish(&s, out);
}

int64_t usage_estimate_completion(int64_t content_bytes, int content_deltas)
{
    int64_t by_bytes = content_bytes > 0 ? content_bytes / 3 + (content_bytes % 3 != 0) : 0;
    int64_t by_deltas = content_deltas > 0 ? content_deltas : 0;
    return by_bytes > by_deltas ? by_bytes : by_deltas;
}
