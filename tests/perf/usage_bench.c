/* usage_bench: usage_parse on a typical chat completion reply (the body
 * tests/bench/mockup.c sends) and on one typical stream chunk's data, N times
 * each; prints nanoseconds per call. Instructions per call, which do not
 * depend on machine noise, come from callgrind counting inside usage_parse
 * only:
 *   cc -O2 -g -std=c11 -D_GNU_SOURCE -Iinclude -o /tmp/usage_bench \
 *       tests/perf/usage_bench.c src/usage.c src/jscan.c
 *   valgrind --tool=callgrind --toggle-collect=usage_parse \
 *       --callgrind-out-file=/tmp/cg.usage /tmp/usage_bench 10000 reply
 *   callgrind_annotate /tmp/cg.usage | head    (total Ir / 10000)
 * (make build/perf/usage_bench builds it too, linked with every module.)
 *   usage_bench [N] [reply|chunk|both] */
#include "usage.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char REPLY[] =
    "{\"id\":\"chatcmpl-mock-000000000001\",\"object\":\"chat.completion\",\"created\":1767225600,"
    "\"model\":\"anthropic/claude-haiku-4-5\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"Hello! How can I help you today?\",\"refusal\":null},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":7,\"total_tokens\":19,\"prompt_tokens_details\":"
    "{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}},"
    "\"system_fingerprint\":\"fp_mockup\"}";
static const char CHUNK[] =
    "{\"id\":\"chatcmpl-mock-000000000001\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,"
    "\"model\":\"anthropic/claude-haiku-4-5\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w17\"},"
    "\"finish_reason\":null}]}";

/* The inputs by name, for the mode argument. */
static const struct {
    const char *name, *json;
} CASES[] = { { "reply", REPLY }, { "chunk", CHUNK } };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *mode = argc > 2 ? argv[2] : "both";

    if (n <= 0)
        n = 1;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        if (strcmp(mode, "both") != 0 && strcmp(mode, CASES[c].name) != 0)
            continue;
        size_t len = strlen(CASES[c].json);
        double t0 = now_s();
        for (long i = 0; i < n; i++) {
            usage_info_t info;
            int rc = usage_parse(CASES[c].json, len, &info);
            if (rc != USAGE_OK) {
                fprintf(stderr, "usage_bench: %s: usage_parse returned %d\n", CASES[c].name, rc);
                return 1;
            }
        }
        printf("%s %zu bytes: %.1f ns/call\n", CASES[c].name, len,
               (now_s() - t0) * 1e9 / (double)n);
    }
    return 0;
}
