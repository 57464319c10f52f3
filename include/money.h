/* money: credits as integer nano-credits, the only money type inside pinmeter.
 * Floats appear only at JSON edges, converted here. Pure; no I/O. */
#ifndef PINMETER_MONEY_H
#define PINMETER_MONEY_H
#include <stdint.h>
#include <stddef.h>

typedef int64_t nanos_t;               /* 1 credit = 1e9 nanos */
#define NANOS_PER_CREDIT 1000000000LL
#define MONEY_FMT_MAX 32

/* Converts a credit amount (e.g. a cap from the config) to nanos, rounding to
 * the nearest nano. Returns 0, or -1 (and leaves *out unchanged) for NaN,
 * infinity or a value outside +-9e9 credits. */
int money_from_double(double credits, nanos_t *out);

/* Writes v as a decimal with exactly 9 fraction digits ("-1.000000001") into
 * buf (at least MONEY_FMT_MAX bytes) and returns buf. Exact, no float. */
char *money_fmt(nanos_t v, char *buf);

/* v as a double, for JSON fields that must be numbers; exact only where the
 * double can represent it, so prefer money_fmt with cJSON_CreateRaw. */
double money_to_double(nanos_t v);

#endif
