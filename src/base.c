/* base: the log line and the clocks (see base.h). A line is formatted whole
 * and written with one fprintf, so lines from several threads do not mix. */
#include "base.h"
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static atomic_int g_json;          /* the log's form; the process's one setting */

static const char *const LEVELS[] = { "info", "warn", "error" };

void base_log_json(int on) { atomic_store(&g_json, on ? 1 : 0); }

/* Appends s as the inside of a JSON string (no quotes) to buf at *o. */
static void json_str(char *buf, size_t cap, size_t *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && *o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { buf[(*o)++] = '\\'; buf[(*o)++] = (char)c; }
        else if (c == '\n') { buf[(*o)++] = '\\'; buf[(*o)++] = 'n'; }
        else if (c < 0x20) {
            memcpy(buf + *o, "\\u00", 4);
            *o += 4;
            buf[(*o)++] = hex[c >> 4];
            buf[(*o)++] = hex[c & 15];
        } else buf[(*o)++] = (char)c;
    }
}

static void put(char *buf, size_t cap, size_t *o, const char *s)
{
    for (; *s && *o + 1 < cap; s++) buf[(*o)++] = *s;
}

static void emit(base_level_t level, const char *msg, const base_field_t *f, int n)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    time_t secs = tv.tv_sec;
    gmtime_r(&secs, &tm);
    char ts[40];
    if (!atomic_load(&g_json)) {
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(stderr, "%s pinmeter: %s\n", ts, msg);
        return;
    }
    char line[4096];
    base_time_fmt((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, ts);
    size_t o = 0;
    put(line, sizeof line, &o, "{\"ts\":\"");
    put(line, sizeof line, &o, ts);
    put(line, sizeof line, &o, "\",\"level\":\"");
    put(line, sizeof line, &o, LEVELS[(unsigned)level < 3 ? level : 0]);
    put(line, sizeof line, &o, "\",\"msg\":\"");
    json_str(line, sizeof line, &o, msg);
    put(line, sizeof line, &o, "\"");
    for (int i = 0; i < n; i++) {
        if (!f[i].value) continue;
        put(line, sizeof line, &o, ",\"");
        json_str(line, sizeof line, &o, f[i].name);
        put(line, sizeof line, &o, f[i].raw ? "\":" : "\":\"");
        json_str(line, sizeof line, &o, f[i].value);
        if (!f[i].raw) put(line, sizeof line, &o, "\"");
    }
    put(line, sizeof line, &o, "}");
    line[o] = '\0';
    fprintf(stderr, "%s\n", line);
}

void base_log(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(BASE_INFO, line, NULL, 0);
}

void base_logl(base_level_t level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    emit(level, line, NULL, 0);
}

void base_log_fields(base_level_t level, const char *msg, const base_field_t *f, int n)
{
    emit(level, msg, f, n);
}

char *base_time_fmt(int64_t ms, char *out)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int frac = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char date[24];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, BASE_TIME_MAX, "%s.%03dZ", date, frac);
    return out;
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
