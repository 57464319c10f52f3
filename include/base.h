/* base: the bottom room — the log line and the clocks. Every other room may
 * use it; it uses none of them. The pure core (rates, book, usage, sse,
 * admit, verdict …) does not call it: it is handed "now" instead. */
#ifndef PINMETER_BASE_H
#define PINMETER_BASE_H
#include <stdint.h>

/* Writes one line "YYYY-MM-DDTHH:MM:SSZ pinmeter: <message>" to stderr
 * (at most about 2 KiB of message). Thread-safe. Never pass a secret. */
void base_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Wall-clock time, unix milliseconds (for ledger rows and periods). */
int64_t base_wall_ms(void);
/* Monotonic time in milliseconds / microseconds (for deadlines and spacing). */
int64_t base_mono_ms(void);
int64_t base_mono_us(void);

#endif
