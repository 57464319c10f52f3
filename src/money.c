/* money: conversions between credit amounts at the JSON edges and the integer
 * nano-credits used everywhere else. Formatting is exact integer arithmetic,
 * so every int64 value, INT64_MIN included, prints digit for digit. */
#include "money.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MONEY_MAX_CREDITS 9e9   /* 9e18 nanos still fits in int64 */

int money_from_double(double credits, nanos_t *out)
{
    if (!isfinite(credits) || fabs(credits) > MONEY_MAX_CREDITS)
        return -1;
    *out = (nanos_t)llround(credits * (double)NANOS_PER_CREDIT);
    return 0;
}

char *money_fmt(nanos_t v, char *buf)
{
    /* Work on the magnitude as unsigned: 0 - (uint64_t)INT64_MIN is 2^63,
     * which is representable, whereas -INT64_MIN is not. Digits are written
     * from the right (a formatted print cost ten times as much, and this
     * runs several times for every request). */
    uint64_t mag = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    uint64_t whole = mag / (uint64_t)NANOS_PER_CREDIT;
    uint64_t frac = mag % (uint64_t)NANOS_PER_CREDIT;
    char tmp[MONEY_FMT_MAX];
    char *p = tmp + sizeof tmp;
    *--p = '\0';
    for (int i = 0; i < 9; i++) {
        *--p = (char)('0' + frac % 10);
        frac /= 10;
    }
    *--p = '.';
    do {
        *--p = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole);
    if (v < 0) *--p = '-';
    memcpy(buf, p, (size_t)(tmp + sizeof tmp - p));
    return buf;
}

double money_to_double(nanos_t v)
{
    /* Split first so the whole part is not rounded together with the
     * fraction; the result is the double nearest to v / 1e9 in practice. */
    nanos_t whole = v / NANOS_PER_CREDIT;
    nanos_t frac = v % NANOS_PER_CREDIT;
    return (double)whole + (double)frac / (double)NANOS_PER_CREDIT;
}
