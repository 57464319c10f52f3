/* Unit tests for jscan: the cJSON 1.7.15 rules shared by the admit and usage
 * scanners (whitespace, BOM, string stops, escape decoding, numbers). */
#include "jscan.h"
#include "t.h"

#include <stdlib.h>

#define U(s) ((const unsigned char *)(s))

/* jscan_decode of the string body s (no quotes) into a 16-byte buffer:
 * returns its rc; *n and out (NUL-terminated, as far as kept) on success. */
static int dec(const char *s, char out[17], size_t *n)
{
    unsigned char buf[16];
    size_t len = strlen(s);
    int rc = jscan_decode(U(s), U(s) + len, buf, sizeof buf, n);
    if (rc == 0) {
        size_t k = *n < sizeof buf ? *n : sizeof buf;
        memcpy(out, buf, k);
        out[k] = '\0';
    }
    return rc;
}

static void test_whitespace_and_bom(void)
{
    const char ws[] = "\x01\x1f \t{";
    T_CHECK(jscan_skip_ws(U(ws), U(ws) + 5) == U(ws) + 4);      /* any byte <= 0x20 */
    T_CHECK(jscan_skip_ws(U(ws), U(ws) + 2) == U(ws) + 2);
    const char bom[] = "\xEF\xBB\xBF{}x";
    T_CHECK(jscan_skip_bom(U(bom), U(bom) + 5) == U(bom) + 3);
    T_CHECK(jscan_skip_bom(U(bom), U(bom) + 4) == U(bom));       /* under 5 bytes: kept */
    T_CHECK(jscan_skip_bom(U(bom + 1), U(bom) + 6) == U(bom + 1));
    T_EQ_INT(jscan_tail_ok(U(" \t\r\n"), U(" \t\r\n") + 4), 1);
    T_EQ_INT(jscan_tail_ok(U(" \f"), U(" \f") + 2), 0);          /* only four after the root */
    T_EQ_INT(jscan_tail_ok(U(""), U("")), 1);
}

static void test_find_modes(void)
{
    /* every position, past the 16-byte blocks too */
    static const char stops_raw[] = { '"', '\\', 0 };
    static const char stops_strict[] = { '"', '\\', 0, 0x1f, (char)0x80, (char)0xff };
    char b[40];
    for (size_t at = 0; at < sizeof b; at++) {
        for (size_t i = 0; i < sizeof stops_strict; i++) {
            memset(b, 'a', sizeof b);
            b[at] = stops_strict[i];
            const unsigned char *e = U(b) + sizeof b;
            T_CHECK(jscan_find(U(b), e, JSCAN_STRICT) == U(b) + at);
            int raw_stop = memchr(stops_raw, b[at], sizeof stops_raw) != NULL;
            T_CHECK(jscan_find(U(b), e, JSCAN_RAW) == (raw_stop ? U(b) + at : e));
        }
    }
    memset(b, 'a', sizeof b);
    T_CHECK(jscan_find(U(b), U(b) + sizeof b, JSCAN_RAW) == U(b) + sizeof b);
    T_CHECK(jscan_find(U(b), U(b), JSCAN_STRICT) == U(b));
}

static void test_decode(void)
{
    char out[17];
    size_t n;
    T_EQ_INT(dec("a\\n\\t\\\"\\\\\\/b", out, &n), 0);
    T_EQ_INT(n, 7);
    T_EQ_STR(out, "a\n\t\"\\/b");
    T_EQ_INT(dec("\\u00e9\\u20AC\\ud83d\\ude00", out, &n), 0);
    T_EQ_INT(n, 9);
    T_EQ_STR(out, "\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    /* parse_hex4: not all hex is U+0000, which ends the C string */
    T_EQ_INT(dec("ab\\u00zzcd", out, &n), 0);
    T_EQ_INT(n, 2);
    T_EQ_STR(out, "ab");
    T_EQ_INT(dec("ab\\u0000cd", out, &n), 0);
    T_EQ_INT(n, 2);
    const char raw_nul[] = "ab\0c\\n";
    unsigned char buf[8];
    T_EQ_INT(jscan_decode(U(raw_nul), U(raw_nul) + 6, buf, sizeof buf, &n), 0);
    T_EQ_INT(n, 2);
    /* refused escapes */
    static const char *const bad[] = { "\\x", "\\u12", "\\udc00", "\\ud800", "\\ud800x",
                                       "\\ud800\\u0041", "\\ud800\\n12345", "\\U0041" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        T_EQ_INT(dec(bad[i], out, &n), -1);
    /* the length counts past cap; only cap bytes are kept; a NULL buffer */
    T_EQ_INT(dec("0123456789abcdef\\u0041XY", out, &n), 0);
    T_EQ_INT(n, 19);
    T_EQ_STR(out, "0123456789abcdef");
    T_EQ_INT(jscan_decode(U("x\\ty"), U("x\\ty") + 4, NULL, 0, &n), 0);
    T_EQ_INT(n, 3);
}

/* jscan_number_end on s: 1 if the number is all of s, 0 if refused, -1 if
 * it ends before (what follows is not the number's). */
static int number(const char *s)
{
    const unsigned char *e = U(s) + strlen(s);
    const unsigned char *r = jscan_number_end(U(s), e);
    return r == e ? 1 : r == NULL ? 0 : -1;
}

static void test_number_syntax(void)
{
    static const char *const good[] = { "0", "-0", "01", "00", "1.", "-.5", "-.5e1", "1E+05",
                                        "1e-05", "-0.0e+0" };
    static const char *const bad[] = { "-", "--1", "+1", ".5", "1e", "1e+", "1.2.3", "0x10",
                                       "1-2", "1ee5", "1.e", "1ex", "e1", "x" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        T_EQ_INT(number(good[i]), 1);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        T_CHECK(number(bad[i]) != 1);
    T_EQ_INT(number("0x10"), -1);
    T_EQ_INT(number("1.2.3"), 0);       /* strtod would stop: cJSON refuses */
    T_CHECK(jscan_number_end(U("12,"), U("12,") + 3) == U("12,") + 2);
    T_CHECK(jscan_number_end(U("12e5"), U("12e5") + 2) == U("12e5") + 2);  /* only to end */
}

static void test_number_value(void)
{
    const char *s = "0.1";
    T_CHECK(jscan_number_value(U(s), U(s) + 3) == strtod(s, NULL));
    s = "-0";
    double z = jscan_number_value(U(s), U(s) + 2);
    T_CHECK(z == 0 && 1 / z < 0);
    s = "1e400";
    T_CHECK(jscan_number_value(U(s), U(s) + 5) > 1e308);
    s = "1e-99999999999999999999";
    T_CHECK(jscan_number_value(U(s), U(s) + strlen(s)) == 0);
    /* 2^53 + 1 followed by a thousand zeros and a 1 rounds up, as strtod does */
    size_t len = 16 + 1000 + 1;
    char *big = malloc(len + 1);
    memcpy(big, "9007199254740993", 16);
    memset(big + 16, '0', 1000);
    big[len - 1] = '1';
    big[len] = '\0';
    T_CHECK(jscan_number_value(U(big), U(big) + len) == strtod(big, NULL));
    free(big);
}

static void test_integer(void)
{
    int64_t v = -7;
    const char *s = "999999999999999";      /* 15 digits: read without strtod */
    T_EQ_INT(jscan_integer(U(s), U(s) + 15, 0, 9007199254740992LL, &v), 1);
    T_EQ_INT(v, 999999999999999LL);
    s = "1234567890123456";                 /* 16: through strtod, still exact */
    T_EQ_INT(jscan_integer(U(s), U(s) + 16, 0, 9007199254740992LL, &v), 1);
    T_EQ_INT(v, 1234567890123456LL);
    s = "64.0";
    T_EQ_INT(jscan_integer(U(s), U(s) + 4, 1, 1000000000, &v), 1);
    T_EQ_INT(v, 64);
    s = "6.4e1";
    T_EQ_INT(jscan_integer(U(s), U(s) + 5, 1, 1000000000, &v), 1);
    T_EQ_INT(v, 64);
    v = -7;
    static const char *const out_of_range[] = { "0", "1000000001", "-1", "1.5", "1e400", "-0" };
    for (size_t i = 0; i < sizeof out_of_range / sizeof *out_of_range; i++) {
        s = out_of_range[i];
        T_EQ_INT(jscan_integer(U(s), U(s) + strlen(s), 1, 1000000000, &v), -1);
    }
    T_EQ_INT(v, -7);                        /* untouched */
    s = "-0";
    T_EQ_INT(jscan_integer(U(s), U(s) + 2, 0, 10, &v), 1);
    T_EQ_INT(v, 0);
}

int main(void)
{
    T_RUN(test_whitespace_and_bom);
    T_RUN(test_find_modes);
    T_RUN(test_decode);
    T_RUN(test_number_syntax);
    T_RUN(test_number_value);
    T_RUN(test_integer);
    return t_summary("jscan");
}
