/* jscan: the pieces of an allocation-free JSON scanner that reproduce what
 * cJSON 1.7.15 (Debian 12's, with its security patches) accepts, shared by the
 * scanners of admit (client requests) and usage (upstream replies). Each call
 * borrows the bytes it is given for the call only; none allocates, does I/O,
 * reads a clock or keeps state (jscan_class is a read-only table). What each
 * scanner refuses beyond cJSON, its nesting limit and the members it reads
 * stay in that scanner. The cJSON rules kept here:
 *   - whitespace is any byte 0x00-0x20 before and inside the text, but only
 *     space, tab, LF and CR after the root value; a UTF-8 BOM before it is
 *     skipped when the text is at least 5 bytes long;
 *   - a string ends at the first '"' not hidden by a backslash; its escapes
 *     are decoded only after that, as cJSON's parse_string does: a \u whose
 *     four characters are not all hex digits stands for U+0000 (parse_hex4),
 *     a lone low surrogate or a high one not followed by \u and a low one is
 *     refused, and the decoded string is a C string (it ends at the first NUL,
 *     raw or escaped);
 *   - a number is a '-' or a digit followed by bytes from "0123456789+-.eE",
 *     accepted when strtod reads all of them (01, 1., -.5e1 and 1E+05 are
 *     numbers), of any length, and its value is what strtod gives.
 * The calls run on every request and stream chunk, so the ones used per byte
 * or per value are static inline here. */
#ifndef PINMETER_JSCAN_H
#define PINMETER_JSCAN_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Bits of jscan_class[byte]. */
enum {
    JSCAN_STOP = 1,     /* '"', '\\' or NUL: where a string scan must look */
    JSCAN_NUMBER = 2,   /* one of "0123456789+-.eE", which cJSON reads as a number */
};
extern const unsigned char jscan_class[256];

/* What a string scan stops at (jscan_find): JSCAN_RAW for '"', '\\' and NUL;
 * JSCAN_STRICT also for every other control byte and every byte from 0x80,
 * for a scan that refuses control bytes and checks UTF-8. */
enum { JSCAN_RAW, JSCAN_STRICT };

static inline int jscan_is_digit(unsigned c) { return c - '0' < 10; }

/* p, or the byte after a UTF-8 BOM at p when [p, end) is at least 5 bytes. */
static inline const unsigned char *jscan_skip_bom(const unsigned char *p,
                                                  const unsigned char *end)
{
    if (end - p >= 5 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        p += 3;
    return p;
}

/* The first byte in [p, end) above 0x20 (cJSON's whitespace), or end. */
static inline const unsigned char *jscan_skip_ws(const unsigned char *p,
                                                 const unsigned char *end)
{
    while (p < end && *p <= ' ')
        p++;
    return p;
}

/* 1 if [p, end), what follows the root value, is only space, tab, LF and CR;
 * else 0. */
static inline int jscan_tail_ok(const unsigned char *p, const unsigned char *end)
{
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            return 0;
    return 1;
}

/* 1 if a string scan in the given mode (JSCAN_RAW or JSCAN_STRICT) stops at c. */
static inline int jscan_stops(unsigned c, int mode)
{
    if (mode == JSCAN_STRICT)
        return c - 0x20 >= 0x60 || c == '"' || c == '\\';
    return jscan_class[c] & JSCAN_STOP;
}

/* The first byte in [p, end) a string scan in the given mode stops at, or end.
 * Sixteen bytes at a time with SSE2 (every x86-64 has it; a signed compare
 * with ' ' finds both the control bytes and those from 0x80); in JSCAN_RAW
 * mode without it, eight at a time where in x - ONES & ~x & HIGHS the lowest
 * set bit marks the first zero byte exactly (borrows only make bits above it
 * wrong). mode should be a constant, so that the other mode's code drops out. */
static inline const unsigned char *jscan_find(const unsigned char *p,
                                              const unsigned char *end, int mode)
{
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\');
    const __m128i space = _mm_set1_epi8(' '), zero = _mm_setzero_si128();
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i low = mode == JSCAN_STRICT ? _mm_cmplt_epi8(x, space)
                                           : _mm_cmpeq_epi8(x, zero);
        __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, quote),
                                                _mm_cmpeq_epi8(x, bslash)), low);
        unsigned m = (unsigned)_mm_movemask_epi8(hit);
        if (m)
            return p + __builtin_ctz(m);
        p += 16;
    }
#elif defined(__GNUC__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
    while (mode == JSCAN_RAW && end - p >= 8) {
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
    while (p < end && !jscan_stops(*p, mode))
        p++;
    return p;
}

/* jscan_find(p, end, JSCAN_RAW), not inlined: for a caller whose own fast
 * path must stay small enough to be inlined where it is called. */
const unsigned char *jscan_find_raw(const unsigned char *p, const unsigned char *end);

/* Decodes the escapes of the string p[0, q), q being its closing quote (so a
 * backslash in it is never the last byte), as cJSON's parse_string does. The
 * decoded string counts up to its first NUL: its length goes to *n and its
 * first min(*n, cap) bytes to buf (NULL if cap is 0). 0, or -1 for an escape
 * cJSON refuses (*n and buf then hold no meaning). */
int jscan_decode(const unsigned char *p, const unsigned char *q,
                 unsigned char *buf, size_t cap, size_t *n);

/* The end of the number at p (p < end), which cJSON takes as all the bytes
 * from "0123456789+-.eE" that follow: the byte after it, or NULL when no
 * number starts at p or strtod would not read every one of those bytes. */
static inline const unsigned char *jscan_number_end(const unsigned char *p,
                                                    const unsigned char *end)
{
    const unsigned char *d;
    size_t digits;

    if (*p == '-')
        p++;
    else if (!jscan_is_digit(*p))
        return NULL;
    for (d = p; p < end && jscan_is_digit(*p); p++)
        ;
    digits = (size_t)(p - d);
    if (p < end && *p == '.') {
        for (d = ++p; p < end && jscan_is_digit(*p); p++)
            ;
        digits += (size_t)(p - d);
    }
    if (digits == 0)
        return NULL;
    if (p < end && (*p | 0x20) == 'e') {
        const unsigned char *x = p + 1;
        if (x < end && (*x == '+' || *x == '-'))
            x++;
        if (x < end && jscan_is_digit(*x)) {
            while (x < end && jscan_is_digit(*x))
                x++;
            p = x;
        }
    }
    return p < end && (jscan_class[*p] & JSCAN_NUMBER) ? NULL : p;
}

/* The double strtod gives for the number s[0, e) that jscan_number_end
 * accepted, whatever its length (thousands of digits, huge exponents). */
double jscan_number_value(const unsigned char *s, const unsigned char *e);

/* For the number s[0, e) that jscan_number_end accepted: 1 and *out when its
 * double is an integer in [lo, hi], else -1 (*out untouched). lo and hi must
 * be exact in a double (|x| <= 2^53). Plain digits up to 15 of them, exact in a
 * double, are read without strtod. */
static inline int jscan_integer(const unsigned char *s, const unsigned char *e,
                                int64_t lo, int64_t hi, int64_t *out)
{
    if (e - s <= 15) {
        int64_t v = 0;
        const unsigned char *d = s;
        while (d < e && jscan_is_digit(*d))
            v = v * 10 + (*d++ - '0');
        if (d == e) {
            if (v < lo || v > hi)
                return -1;
            *out = v;
            return 1;
        }
    }
    double v = jscan_number_value(s, e);
    /* written so that NaN fails too; the cast is safe once in range */
    if (!(v >= (double)lo && v <= (double)hi) || (double)(int64_t)v != v)
        return -1;
    *out = (int64_t)v;
    return 1;
}

#endif
