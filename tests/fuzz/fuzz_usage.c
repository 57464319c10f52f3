/* fuzz_usage: usage_parse on arbitrary bytes (a response body or one stream
 * chunk's data). On USAGE_OK the facts must be within the documented
 * bounds and cost_of must price them without failing; on any other return
 * *out must be untouched. The parse must also be a pure function of the
 * bytes: a second call gives the same answer. */
#include "usage.h"
#include "rates.h"
#include "fuzz.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exactly size bytes, no NUL after: the parser is given a length */
    char *json = fuzz_dup(data, size, 0);
    usage_info_t info, again, untouched;

    memset(&info, 0xA5, sizeof info);
    untouched = info;
    int rc = usage_parse(json, size, &info);
    FUZZ_CHECK(rc == USAGE_OK || rc == USAGE_NOT_JSON || rc == USAGE_BAD);

    memset(&again, 0x5A, sizeof again);
    FUZZ_CHECK(usage_parse(json, size, &again) == rc);

    if (rc != USAGE_OK) {
        FUZZ_CHECK(memcmp(&info, &untouched, sizeof info) == 0);
        free(json);
        return 0;
    }
    FUZZ_CHECK(memcmp(&info, &again, sizeof info) == 0);

    FUZZ_CHECK(info.has_usage == 0 || info.has_usage == 1);
    FUZZ_CHECK(info.choices_empty == 0 || info.choices_empty == 1);
    if (info.has_usage) {
        FUZZ_CHECK(info.usage.prompt >= 0 && info.usage.prompt <= USAGE_MAX_TOKENS);
        FUZZ_CHECK(info.usage.completion >= 0 &&
                   info.usage.completion <= USAGE_MAX_TOKENS);
        FUZZ_CHECK(info.usage.cached >= 0 && info.usage.cached <= info.usage.prompt);
    } else {
        FUZZ_CHECK(info.usage.prompt == 0 && info.usage.completion == 0 &&
                   info.usage.cached == 0);
    }
    FUZZ_CHECK(info.content_bytes >= 0 && (size_t)info.content_bytes <= size);
    FUZZ_CHECK(info.content_deltas >= 0 && (size_t)info.content_deltas <= size);
    FUZZ_CHECK(memchr(info.id, '\0', sizeof info.id) != NULL);

    int64_t est = usage_estimate_completion(info.content_bytes, info.content_deltas);
    FUZZ_CHECK(est >= info.content_deltas);
    FUZZ_CHECK(est >= info.content_bytes / 3);

    /* a dear model (claude-opus-4-1 prices, 1 credit per USD) */
    rate_t rate;
    FUZZ_CHECK(rate_from_usd(15.0, 75.0, 1.5, 1.0, &rate) == 0);
    nanos_t cost = cost_of(&rate, &info.usage);
    FUZZ_CHECK(cost >= 0);
    if (info.has_usage) {
        /* never less than the exact cost rounded down, never wildly more */
        usage_t none = { 0, 0, 0 };
        FUZZ_CHECK(cost_of(&rate, &none) == 0);
        usage_t more = info.usage;
        more.completion += 1;
        FUZZ_CHECK(cost_of(&rate, &more) >= cost);
    }
    free(json);
    return 0;
}
