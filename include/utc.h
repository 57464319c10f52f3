/* utc: the time forms of the usage API and `pinmeter report` — a UTC date
 * (YYYY-MM-DD), an RFC 3339 UTC instant (2026-12-01T10:00:00Z, fractions
 * of a second allowed) and the calendar month around a time — converted to
 * and from unix milliseconds. Pure: no clock, no I/O, no globals. */
#ifndef PINMETER_UTC_H
#define PINMETER_UTC_H
#include <stdint.h>

#define UTC_HOUR_MS 3600000LL
#define UTC_DAY_MS 86400000LL
#define UTC_FMT_MAX 48             /* "YYYY-MM-DDTHH:MM:SS.mmmZ" and its NUL, with room for any year */

/* YYYY-MM-DD (a day that exists, digits only) into unix ms at 00:00 UTC.
 * 0, or -1 with *ms untouched. */
int utc_parse_date(const char *s, int64_t *ms);

/* YYYY-MM-DDTHH:MM:SS[.fraction](Z|z|+00:00) into unix ms. A fraction finer
 * than a millisecond rounds up: rows carry whole milliseconds, so a bound t
 * and ceil(t) select the same rows. 0, or -1 with *ms untouched (also for
 * any other offset: only UTC is accepted). */
int utc_parse_instant(const char *s, int64_t *ms);

/* One end of a range [since, until): a date or an instant. As a since
 * (until = 0) a date means its 00:00; as an until (until = 1) a date means
 * the end of that whole day (the next day's 00:00), so `until=2026-12-31`
 * includes the 31st. An instant is itself either way. 0, or -1 with *ms
 * untouched. */
int utc_parse_bound(const char *s, int until, int64_t *ms);

/* The first instant of the UTC month containing ms, and of the month after. */
int64_t utc_month_start(int64_t ms);
int64_t utc_next_month(int64_t ms);

/* ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (at least UTC_FMT_MAX bytes);
 * returns buf. Years outside 0..9999 print as they are. */
char *utc_format(int64_t ms, char *buf);

#endif
