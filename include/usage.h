/* usage: extracting token usage and stream facts from upstream JSON. Pure. */
#ifndef PINMETER_USAGE_H
#define PINMETER_USAGE_H
#include <stddef.h>
#include <stdint.h>
#include "rates.h"

#define USAGE_MAX_TOKENS 10000000LL   /* above this a count is absurd */
#define USAGE_ID_MAX 128

enum {
    USAGE_OK = 0,
    USAGE_NOT_JSON = -1,      /* not parseable JSON (or not an object) */
    USAGE_BAD = -2,           /* usage present but negative/absurd/non-integer */
};

/* Facts about one JSON body or one stream chunk. */
typedef struct usage_info {
    int has_usage;            /* a "usage" object with prompt/completion counts */
    usage_t usage;
    int choices_empty;        /* "choices" present and [] (the usage-only chunk) */
    int64_t content_bytes;    /* bytes of choices[].delta.content (+ message.content),
                                 also refusal, reasoning[_content], tool_calls[].function
                                 name+arguments: all billed as completion; counted
                                 unescaped, each up to its first NUL */
    int content_deltas;       /* number of choices whose delta has any of that text */
    char id[USAGE_ID_MAX];    /* top-level "id", truncated; "" if absent */
} usage_info_t;

/* Parses a whole JSON response body or one chunk's data payload, borrowing
 * json[0, len) (no NUL needed) for the call only; allocates nothing.
 * Returns USAGE_OK, USAGE_NOT_JSON or USAGE_BAD; *out is filled on OK and
 * left untouched otherwise. */
int usage_parse(const char *json, size_t len, usage_info_t *out);

/* Conservative completion-token estimate from streamed content seen so far:
 * max(deltas, ceil(bytes/3)). */
int64_t usage_estimate_completion(int64_t content_bytes, int content_deltas);

#endif
