/* metrics: pinmeter's Prometheus registry — the counters and histograms the
 * request path feeds (through events.c), keyed by label values, and their
 * text exposition (format 0.0.4) together with the gauges a scrape reads
 * elsewhere and hands in. No I/O, no clock: callers pass durations.
 *
 * Label values are strings the caller takes only from the config (team
 * names) and the rate table (model ids), "" otherwise; a key id only when
 * the config asks for it. Each is copied; the registry keeps every label set
 * it has seen for its whole life (counters start at 0 with the process and
 * never go back), so its size is bounded by the config's teams × the rate
 * table's models (× keys).
 *
 * Thread-safe: every call may come from any thread. Updates take one mutex
 * for a hash lookup and a few additions; metrics_format copies the counters
 * under it and formats outside it. */
#ifndef PINMETER_METRICS_H
#define PINMETER_METRICS_H
#include <stddef.h>
#include <stdint.h>
#include "money.h"

typedef struct metrics metrics_t;   /* opaque */

/* Charge states (pinmeter_credits_charged_total's "state" label). */
typedef enum {
    METRICS_SETTLED = 0, METRICS_ESTIMATED, METRICS_INTERRUPTED, METRICS_N_STATES,
    METRICS_NO_CHARGE = -1         /* failed: charged nothing, no credits series */
} metrics_state_t;

/* An empty registry; NULL on OOM. Free with metrics_free. */
metrics_t *metrics_new(void);
/* NULL is a no-op. No other call may run on m meanwhile or after. */
void metrics_free(metrics_t *m);

/* Every update below does nothing when m is NULL, and on OOM (the series
 * is then missing, never wrong). Strings are borrowed for the call. */

/* A request refused before forwarding (pinmeter_rejections_total). */
void metrics_rejected(metrics_t *m, const char *team, const char *reason);
/* A request admitted with its completion limit clamped
 * (pinmeter_clamped_total). */
void metrics_clamped(metrics_t *m, const char *team);
/* A request took its reservation: team's in-flight gauge + 1. */
void metrics_admitted(metrics_t *m, const char *team);
/* The team's in-flight gauge now (requests holding a reservation; 0 when m
 * is NULL). Any thread; takes the registry's mutex for one lookup. */
int64_t metrics_inflight(metrics_t *m, const char *team);
/* Complete client request to upstream request handed to libcurl, in µs
 * (pinmeter_admission_duration_seconds). */
void metrics_admission(metrics_t *m, int64_t us);
/* Admission to the first content event relayed, in µs. */
void metrics_first_token(metrics_t *m, const char *model, int64_t us);

/* A finished (or, at start, an interrupted) request. */
typedef struct metrics_settle {
    const char *team, *model;
    const char *key;               /* NULL: no key label */
    int64_t prompt, completion, cached;   /* prompt includes cached */
    metrics_state_t state;
    nanos_t charge;
    int64_t upstream_us;           /* admission to last upstream byte; < 0: none */
    int leaves_inflight;           /* 1: the team's in-flight gauge - 1 */
} metrics_settle_t;
void metrics_settled(metrics_t *m, const metrics_settle_t *s);

/* The answer a metered request got (pinmeter_requests_total); key as above. */
void metrics_answered(metrics_t *m, const char *team, const char *model, const char *key,
                      int code);
/* An alert delivery ended: sent or failed (pinmeter_alerts_total). */
void metrics_alert(metrics_t *m, const char *event, int sent);

/* A team's gauges, read by the caller without I/O for the current period. */
typedef struct metrics_team {
    const char *name;
    int capped;                    /* 0: no cap and no available sample */
    nanos_t cap;
    int known;                     /* spent and loaned known (0: no samples) */
    nanos_t spent, loaned;
    int64_t period_end_s;          /* 0: none (period "none") */
} metrics_team_t;

/* What a scrape shows besides the registry. Borrowed for the call. */
typedef struct metrics_gauges {
    const char *version;           /* pinmeter_build_info's label */
    const metrics_team_t *teams;   /* the configured teams (each also gets an
                                    * in-flight sample, 0 when never touched) */
    size_t n_teams;
    int account_on;                /* account sync configured */
    int projected_known;
    nanos_t projected;             /* projected available */
    int synced_known;              /* a sync succeeded */
    nanos_t synced;                /* available at the last sync */
    int64_t synced_ms;             /* unix ms of the last sync */
    int drift_known;               /* a sync measured the drift */
    nanos_t drift;                 /* the last hour's drift (account_drift) */
    int64_t ledger_backlog, ledger_write_errors;
    int store_redis;               /* the budget store is Redis: store_up is shown */
    int store_up;
} metrics_gauges_t;

/* The whole exposition text, malloc'd and NUL-terminated, its length in
 * *len; NULL on OOM or past the cap (64 MiB). Free with free(). */
char *metrics_format(metrics_t *m, const metrics_gauges_t *g, size_t *len);

/* The exposition's Content-Type. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
