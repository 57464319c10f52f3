/* Shared helper for the libFuzzer targets in tests/fuzz/: an invariant check
 * that aborts (so libFuzzer records a crash and saves the input) and says
 * which invariant broke. Each target includes this and defines only
 * LLVMFuzzerTestOneInput. */
#ifndef PINMETER_FUZZ_H
#define PINMETER_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static inline void fuzz_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "fuzz invariant broken at %s:%d: %s\n", file, line, what);
    abort();
}

/* Aborts with the failed condition's text when cond is false. */
#define FUZZ_CHECK(cond) \
    ((cond) ? (void)0 : fuzz_fail(__FILE__, __LINE__, #cond))

/* A heap copy of exactly n bytes plus a NUL (the NUL is outside [0, n), so
 * ASan still reports a read at [n] by code that was told the length is n,
 * unless that code is meant to see a C string). Aborts on OOM. */
static inline char *fuzz_dup(const uint8_t *p, size_t n, int nul)
{
    char *d = malloc(n + (nul ? 1 : 0) + (n == 0 && !nul));
    if (!d)
        abort();
    for (size_t i = 0; i < n; i++)
        d[i] = (char)p[i];
    if (nul)
        d[n] = '\0';
    return d;
}

#endif
