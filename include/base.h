/* base: the bottom room — the log line and the clocks. Every other room may
 * use it; it uses none of them. The pure core (rates, book, usage, sse,
 * admit, verdict …) does not call it: it is handed "now" instead. */
#ifndef PINMETER_BASE_H
#define PINMETER_BASE_H
#include <stdint.h>

typedef enum { BASE_INFO = 0, BASE_WARN, BASE_ERROR } base_level_t;

/* One field of a structured log line: a name and its value, written as a
 * JSON string, or as it is when raw (a number, true/false). */
typedef struct base_field {
    const char *name;
    const char *value;             /* NULL: the field is left out */
    int raw;
} base_field_t;

/* The log's form, for every thread: 0 text (the default), 1 JSON lines.
 * Set at start and on reload. */
void base_log_json(int on);

/* Writes one line to stderr (at most about 2 KiB of message): text
 * "YYYY-MM-DDTHH:MM:SSZ pinmeter: <message>", or JSON {"ts", "level",
 * "msg"}. Thread-safe. Never pass a secret. base_log is BASE_INFO. */
void base_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void base_logl(base_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line with fields: JSON {"ts", "level", "msg", <fields>…}, or in text
 * the message alone (the caller's text already carries them). */
void base_log_fields(base_level_t level, const char *msg, const base_field_t *f, int n);

/* Writes unix milliseconds ms as RFC 3339 UTC with milliseconds,
 * "2026-12-01T10:00:00.123Z", into out (at least BASE_TIME_MAX bytes). */
#define BASE_TIME_MAX 32
char *base_time_fmt(int64_t ms, char *out);

/* Wall-clock time, unix milliseconds (for ledger rows and periods). */
int64_t base_wall_ms(void);
/* Monotonic time in milliseconds / microseconds (for deadlines and spacing). */
int64_t base_mono_ms(void);
int64_t base_mono_us(void);

#endif
