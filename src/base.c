/* base: the log line and the clocks (see base.h). */
#include "base.h"
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

void base_log(const char *fmt, ...)
{
    char line[2048], ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s pinmeter: %s\n", ts, line);
}

static int64_t clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t base_wall_ms(void) { return clock_us(CLOCK_REALTIME) / 1000; }
int64_t base_mono_ms(void) { return clock_us(CLOCK_MONOTONIC) / 1000; }
int64_t base_mono_us(void) { return clock_us(CLOCK_MONOTONIC); }
