/* Minimal unit-test helpers shared by tests/unit/test_*.c.
 * Each test file defines main(), calls T_RUN(fn) for each test and ends with
 * `return t_summary("name");`, which prints "name: N passed, M failed". */
#ifndef T_H
#define T_H
#include <stdio.h>
#include <string.h>
#include <inttypes.h>

static int t_pass, t_fail, t_cur_failed;

#define T_CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
    t_cur_failed = 1; } } while (0)
#define T_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    if (_a != _b) { fprintf(stderr, "  FAIL %s:%d: %s == %lld, want %lld\n", \
        __FILE__, __LINE__, #a, _a, _b); t_cur_failed = 1; } } while (0)
#define T_EQ_STR(a, b) do { const char *_a = (a), *_b = (b); \
    if (!_a || !_b || strcmp(_a, _b) != 0) { fprintf(stderr, \
        "  FAIL %s:%d: %s == \"%s\", want \"%s\"\n", __FILE__, __LINE__, #a, \
        _a ? _a : "(null)", _b ? _b : "(null)"); t_cur_failed = 1; } } while (0)
#define T_RUN(fn) do { t_cur_failed = 0; fn(); \
    if (t_cur_failed) { t_fail++; fprintf(stderr, "not ok %s\n", #fn); } \
    else t_pass++; } while (0)

static inline int t_summary(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, t_pass, t_fail);
    return t_fail ? 1 : 0;
}
#endif
