/* jscan: the out-of-line part of the shared JSON scanning helpers (the
 * contract is in include/jscan.h): the byte classes, a string scan's stop
 * finder as a call, the decoding of string escapes, and the value of a number
 * of any length. Decoding runs only for a string that holds a backslash and
 * the value only for a number that is not a few plain digits, so neither is
 * on the scanners' usual path. Pure: no I/O, no clock, no globals but the
 * read-only table. */
#include "jscan.h"

#include <stdio.h>
#include <stdlib.h>

#define SIG_MAX 800     /* digits kept to round a number like strtod (> 767) */

const unsigned char jscan_class[256] = {
    [0] = JSCAN_STOP, ['"'] = JSCAN_STOP, ['\\'] = JSCAN_STOP,
    ['0'] = JSCAN_NUMBER, ['1'] = JSCAN_NUMBER, ['2'] = JSCAN_NUMBER, ['3'] = JSCAN_NUMBER,
    ['4'] = JSCAN_NUMBER, ['5'] = JSCAN_NUMBER, ['6'] = JSCAN_NUMBER, ['7'] = JSCAN_NUMBER,
    ['8'] = JSCAN_NUMBER, ['9'] = JSCAN_NUMBER, ['+'] = JSCAN_NUMBER, ['-'] = JSCAN_NUMBER,
    ['.'] = JSCAN_NUMBER, ['e'] = JSCAN_NUMBER, ['E'] = JSCAN_NUMBER,
};

const unsigned char *jscan_find_raw(const unsigned char *p, const unsigned char *end)
{
    return jscan_find(p, end, JSCAN_RAW);
}

/* cJSON's parse_hex4: 0 when any of the four is not a hex digit. */
static unsigned hex4(const unsigned char *p)
{
    unsigned h = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (jscan_is_digit(c))
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

/* Code point cp (< 0x110000) as UTF-8, as cJSON writes it. */
static void put_utf8(sink_t *o, unsigned long cp)
{
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
}

int jscan_decode(const unsigned char *p, const unsigned char *q,
                 unsigned char *buf, size_t cap, size_t *n)
{
    sink_t o = { buf, cap, 0, 0 };

    while (p < q) {
        if (*p != '\\') {         /* a run of plain bytes; a NUL only first */
            const unsigned char *r = jscan_find(p + 1, q, JSCAN_RAW);
            if (*p == 0)
                o.ended = 1;
            if (!o.ended) {
                size_t k = (size_t)(r - p);
                if (o.n < o.cap)
                    memcpy(o.buf + o.n, p, o.cap - o.n < k ? o.cap - o.n : k);
                o.n += k;
            }
            p = r;
            continue;
        }
        unsigned c = p[1];      /* p + 1 <= q: a backslash before q hides no quote */
        switch (c) {
        case 'b': put(&o, '\b'); break;
        case 'f': put(&o, '\f'); break;
        case 'n': put(&o, '\n'); break;
        case 'r': put(&o, '\r'); break;
        case 't': put(&o, '\t'); break;
        case '"': case '\\': case '/': put(&o, c); break;
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
            put_utf8(&o, cp);
            p += 4;
            break;
        }
        default:
            return -1;
        }
        p += 2;
    }
    *n = o.n;
    return 0;
}

/* Past SIG_MAX significant digits the rest only decide rounding, and a
 * nonzero digit in their place rounds the same way, since no halfway point
 * between doubles has more than 767. */
double jscan_number_value(const unsigned char *s, const unsigned char *e)
{
    char buf[SIG_MAX + 32];
    size_t k = 0, first;
    long long exp10 = 0, ev = 0;
    int neg = *s == '-', point = 0, sticky = 0;

    if (neg)
        buf[k++] = (char)*s++;
    first = k;
    for (; s < e && (jscan_is_digit(*s) || *s == '.'); s++) {
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
