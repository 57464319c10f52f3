/* alertcore: the pure part of budget alerts — an event's stable id, which
 * thresholds a spend has reached, the body that is POSTed, the retry
 * schedule, and the RFC 3339 times events carry. No I/O, no clock, no
 * globals: callers pass "now". The alerts module (alerts.c) detects and
 * delivers with these; tests/unit/test_alertcore.c checks each. */
#ifndef PINMETER_ALERTCORE_H
#define PINMETER_ALERTCORE_H
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "money.h"

/* Event names (X-Pinmeter-Event, the payload's "event"). */
#define ALERTCORE_THRESHOLD "budget_threshold"
#define ALERTCORE_CAP_REFUSED "cap_refused"
#define ALERTCORE_ACCOUNT_LOW "account_low"
#define ALERTCORE_TEST "alert_test"
#define ALERTCORE_RUNAWAY "runaway"
#define ALERTCORE_TOPUP "topup_detected"
#define ALERTCORE_TOPUP_LIMIT "topup_limit"
#define ALERTCORE_DRIFT "drift"

#define ALERTCORE_ID_LEN 24            /* hex characters of an event id */
#define ALERTCORE_TIME_MAX 32          /* "2026-11-24T10:00:00.123Z" and its NUL */

/* The id of (event, scope, period_start, ppm): the first 24 hex digits of
 * SHA-256 of "pinmeter-alert:<event>:<scope>:<period_start>:<ppm>" (decimal
 * integers). scope is the team for team events (the instance for
 * account_low, whose period_start is then its crossing number). Every
 * instance and every restart computes the same id. */
void alertcore_id(const char *event, const char *scope, int64_t period_start, int32_t ppm,
                  char out[ALERTCORE_ID_LEN + 1]);

/* The spend at which threshold ppm (parts per million) of cap is reached:
 * ceil(cap * ppm / 10^6), exact (128-bit); INT64_MAX when beyond it. */
nanos_t alertcore_limit(nanos_t cap, int32_t ppm);

/* Which of the n thresholds (sorted, as config keeps them) spent has
 * reached for cap: their indices into out[n], ascending. Returns how many;
 * 0 when cap <= 0 (no meaningful fraction of a zero or absent cap). */
size_t alertcore_reached(nanos_t cap, nanos_t spent, const int32_t *ppm, size_t n,
                         size_t *out);

/* The end (exclusive, unix s) of the period p that starts at start: the
 * next period's start; 0 for PERIOD_NONE (no end). */
int64_t alertcore_period_end(period_t p, int64_t start);

/* The retry schedule. After failed attempt number attempts (1 = the first),
 * made at now_ms, of an event first attempted at first_ms: the next attempt
 * waits base_ms * 2^(attempts-1), at most cap_ms. Returns 0 with *next_ms
 * set, or -1 (give up: state failed) when that attempt would start more than
 * giveup_ms after the first. Shipped: 1 s, 5 min, 24 h. */
int alertcore_next_attempt(int64_t first_ms, int attempts, int64_t now_ms, int64_t base_ms,
                           int64_t cap_ms, int64_t giveup_ms, int64_t *next_ms);

/* Unix ms as RFC 3339 UTC with milliseconds: "2026-11-24T10:00:00.123Z".
 * Returns out. */
char *alertcore_time(int64_t ms, char out[ALERTCORE_TIME_MAX]);
/* Parses an RFC 3339 time ("2026-11-24T10:00:00Z", fraction and "+HH:MM"
 * offsets allowed, 't' and 'z' too) or a date ("2026-11-24", its UTC
 * midnight) into unix ms. 0, or -1 when it is neither. */
int alertcore_parse_time(const char *s, int64_t *ms);

/* One event's facts, from which its body is made. Strings are borrowed. */
typedef struct alertcore_event {
    const char *event;             /* ALERTCORE_* */
    const char *id;
    int64_t at_ms;                 /* when it was detected */
    const char *instance;          /* the instance that detected it */
    const char *team;              /* team events; NULL (JSON null) for the others */
    int64_t period_start, period_end;   /* team events, unix s; end 0 = none (null) */
    int32_t ppm;                   /* budget_threshold: the threshold */
    /* budget_threshold, cap_refused: the team's cap, spent, loaned,
     * available; account_low: the account's total, loaned, available */
    nanos_t cap, spent, loaned, available;
    nanos_t required;              /* cap_refused: the refused reservation */
    nanos_t below;                 /* account_low: account_below */
    const char *key;               /* runaway: the key whose limit it was (NULL: the team's) */
    int hour;                      /* runaway: the window, 0 minute, 1 hour */
    nanos_t spent_in_window, limit;   /* runaway */
    nanos_t added, prev_total;     /* topup_detected: credits added, the total before (cap:
                                    * the total after) */
    int topups, max_topups;        /* topup_detected, topup_limit: within 24 h; the limit
                                    * (-1: none, null) */
    int64_t until_ms;              /* topup_limit: when the guard lifts by itself */
    nanos_t drift;                 /* drift: the last hour's (limit: drift_alert) */
} alertcore_event_t;

/* The JSON body POSTed for e (malloc'd, NUL-terminated; free with free()),
 * or NULL when out of memory. Credits are exact 9-decimal numbers, times
 * RFC 3339 strings, the threshold a number ("0.8"). The fields:
 *   budget_threshold: event id at instance team period_start period_end
 *                     threshold cap spent loaned available
 *   cap_refused:      event id at instance team period_start period_end
 *                     cap spent loaned available required
 *   account_low:      event id at instance team(null) account_below total
 *                     loaned available
 *   alert_test:       event id at instance team(null) message
 *   runaway:          event id at instance team key(null for the team's
 *                     limit) window ("minute" / "hour") spent_in_window limit
 *   topup_detected:   event id at instance team(null) credits_added total
 *                     previous_total topups_24h max_topups_per_day (null: none)
 *   topup_limit:      event id at instance team(null) topups_24h
 *                     max_topups_per_day until message
 *   drift:            event id at instance team(null) drift drift_alert window_s */
char *alertcore_payload(const alertcore_event_t *e);

#endif
