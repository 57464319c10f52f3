/* usage_ref: the cJSON-based usage_parse that src/usage.c replaced, kept
 * verbatim as the oracle fuzz_usage compares the scanner against. Test-only;
 * links -lcjson. */
#ifndef PINMETER_USAGE_REF_H
#define PINMETER_USAGE_REF_H
#include <stddef.h>
#include "usage.h"

/* Same contract as usage_parse. */
int usage_parse_ref(const char *json, size_t len, usage_info_t *out);

#endif
