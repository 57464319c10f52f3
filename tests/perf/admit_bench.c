/* admit_bench: admit_parse on the body tests/bench/post.lua sends (and the
 * same body streaming, which adds the spliced upstream body), N times each;
 * prints nanoseconds per call. Instructions per call, which do not depend on
 * machine noise, come from callgrind counting inside admit_parse only:
 *   cc -O2 -g -std=c11 -D_GNU_SOURCE -Iinclude -o /tmp/admit_bench \
 *       tests/perf/admit_bench.c src/admit.c src/jscan.c -lcjson
 *   valgrind --tool=callgrind --toggle-collect=admit_parse \
 *       --callgrind-out-file=/tmp/cg.admit /tmp/admit_bench 10000 plain
 *   callgrind_annotate /tmp/cg.admit | head    (total Ir / 10000)
 * (make build/perf/admit_bench builds it too, linked with every module.)
 *   admit_bench [N] [plain|stream|both] */
#include "admit.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char PLAIN[] =
    "{\"model\":\"anthropic/claude-haiku-4-5\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are a terse assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in five words.\"}],"
    "\"max_tokens\":64,\"temperature\":0.2}";
static const char STREAM[] =
    "{\"model\":\"anthropic/claude-haiku-4-5\",\"messages\":[{\"role\":\"system\",\"content\":"
    "\"You are a terse assistant.\"},{\"role\":\"user\",\"content\":\"Say hello in five words.\"}],"
    "\"max_tokens\":64,\"temperature\":0.2,\"stream\":true}";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Admits body n times; returns seconds taken, or -1 if a call fails. */
static double run(const char *body, long n)
{
    size_t len = strlen(body);
    char err[128];
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        admit_req_t r;
        if (admit_parse(body, len, &r, err, sizeof err) != 0) {
            fprintf(stderr, "admit_bench: %s\n", err);
            return -1;
        }
        admit_free(&r);
    }
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    const char *mode = argc > 2 ? argv[2] : "both";
    int plain = strcmp(mode, "stream") != 0, stream = strcmp(mode, "plain") != 0;

    if (n <= 0)
        n = 1;
    if (plain) {
        double s = run(PLAIN, n);
        if (s < 0)
            return 1;
        printf("plain  %zu bytes: %.1f ns/call\n", strlen(PLAIN), s * 1e9 / (double)n);
    }
    if (stream) {
        double s = run(STREAM, n);
        if (s < 0)
            return 1;
        printf("stream %zu bytes: %.1f ns/call\n", strlen(STREAM), s * 1e9 / (double)n);
    }
    return 0;
}
