/* admit_ref: the cJSON-based admit_parse that src/admit.c replaced, kept
 * verbatim as the oracle fuzz_admit compares the scanner against. Test-only;
 * links -lcjson. */
#ifndef PINMETER_ADMIT_REF_H
#define PINMETER_ADMIT_REF_H
#include <stddef.h>
#include "admit.h"

/* Same contract as admit_parse; free with admit_free_ref. */
int admit_parse_ref(const char *body, size_t len, admit_req_t *out,
                    char *err, size_t errlen);
void admit_free_ref(admit_req_t *r);

#endif
