/* config: loading and validating pinmeter's JSON config. The whole file is
 * parsed into a fresh struct and validated as a whole; errors name the file,
 * the key (as a JSON path, e.g. teams[0].keys[1].sha256) and why. */
#ifndef PINMETER_CONFIG_H
#define PINMETER_CONFIG_H
#include <stddef.h>
#include <stdint.h>
#include "ratelim.h"
#include "money.h"
#include "rates.h"

typedef enum { PERIOD_NONE = 0, PERIOD_DAY, PERIOD_WEEK, PERIOD_MONTH } period_t;

/* Budget alert thresholds (alerts.thresholds, a team's alert_thresholds):
 * fractions of the cap in parts per million, sorted, unique, each in
 * (0, 10 * CONFIG_PPM]. */
#define CONFIG_PPM 1000000
#define CONFIG_THRESHOLDS_MAX 32
typedef struct alert_thresholds {
    int32_t ppm[CONFIG_THRESHOLDS_MAX];
    size_t n;
} alert_thresholds_t;

typedef struct key_conf {
    char id[64];
    unsigned char sha256[32];      /* SHA-256 of the key text */
    nanos_t cap;                   /* credits per the team's period; -1 = no cap */
    ratelim_conf_t lim;             /* rpm, tpm, max_inflight, max_spend_per_*; 0 = none */
} key_conf_t;

typedef struct team_conf {
    char name[64];
    nanos_t cap;                   /* -1 = no cap */
    period_t period;
    char **models;                 /* allow-list globs with '*'; NULL = all priced */
    size_t n_models;
    key_conf_t *keys;
    size_t n_keys;
    int has_alert_thresholds;      /* alert_thresholds given: replaces alerts.thresholds */
    alert_thresholds_t alert_thresholds;
    ratelim_conf_t lim;             /* rpm, tpm, max_inflight, max_spend_per_*; 0 = none */
    int clamp;                     /* on_insufficient: 0 "reject" (default), 1 "clamp" */
    int64_t clamp_min_tokens;      /* the fewest completion tokens a clamp leaves (256) */
} team_conf_t;

typedef struct config {
    char path[1024];               /* the file it came from ("" if parsed from memory) */
    char listen_host[256];         /* default 127.0.0.1 */
    int listen_port;               /* default 8787 */
    char upstream_base[1024];      /* default https://agents.pinata.cloud, no trailing '/' */
    char llm_key_env[128];         /* default PINATA_LLM_KEY */
    char ca_file[1024];            /* upstream.ca_file: PEM CAs to trust upstream; "" = the system's */
    int timeout_s;                 /* default 600 */
    int h2_connections;            /* upstream.h2_connections: at most this many to a
                                    * multiplexing (HTTP/2) upstream; 0 = no limit; 10 */
    char ledger[1024];             /* default var/pinmeter.db */
    char rates_file[1024];         /* default conf/rates.json */
    int rates_sync_s;              /* serve: refresh rates_file from Pinata every this
                                    * many seconds; 0 = off (default) */
    double credits_per_usd;        /* default 1.0, > 0 */
    int64_t default_max_tokens;    /* default 4096, > 0 */
    int unknown_reject;            /* 1 = "reject" (default); 0 = use unknown_rate */
    rate_t unknown_rate;           /* fallback prices when !unknown_reject */
    char admin_token_env[128];     /* default PINMETER_ADMIN_TOKEN; "" = admin disabled */
    char jwt_env[128];             /* account.jwt_env, default PINATA_JWT */
    int sync_s;                    /* account.sync_s, default 30 */
    int max_topups_per_day;        /* account.max_topups_per_day: the top-up guard trips
                                    * past this many within 24 h; -1 = no guard */
    nanos_t drift_alert;           /* account.drift_alert: the drift alert fires when the
                                    * last hour's drift passes it either way; -1 = none */
    size_t max_body;               /* max_body_bytes, default 8 MiB */
    int max_connections;           /* default 1024 */
    int drain_s;                   /* default 30 */
    int workers;                   /* event loops; 0 (default) = the cores, at most 8 */
    int client_timeout_s;          /* idle client connection cut after this, default 30 */
    int log_requests;              /* a log line per request (default false: only
                                    * requests not settled normally are logged) */
    int log_json;                  /* log_format: 0 "text" (default), 1 "json" lines */
    int metrics_open;              /* metrics_auth: 0 "admin" (default), 1 "none" */
    int metrics_key_label;         /* a key label on the requests, tokens and credits
                                    * counters (default false) */
    /* Shared budget store (issue 5). store_url "" = the in-process book. */
    char store_url[512];           /* budget_store: redis://HOST[:PORT][/DB] */
    char store_host[256];
    int store_port;                /* default 6379 */
    int store_db;                  /* default 0 */
    char store_password_env[128];  /* budget_store_password_env; "" = no AUTH */
    int store_down_local;          /* on_store_down: 0 "closed" (default), 1 "local" */
    int lease_s;                   /* budget_lease_s; 0 = 30 s */
    char instance_id[64];          /* instance_id; "" = the one kept in the ledger */
    /* Budget alerts (issue 13); alerts_on: the "alerts" object is present. */
    int alerts_on;
    char alert_url[1024];          /* alerts.webhook_url (http:// or https://) */
    char alert_secret_env[128];    /* alerts.secret_env; "" = events are not signed */
    alert_thresholds_t alert_thresholds;   /* alerts.thresholds, default 0.5, 0.8, 1.0 */
    nanos_t alert_account_below;   /* alerts.account_below; -1 = no account_low */
    team_conf_t *teams;            /* empty = passthrough mode */
    size_t n_teams;
} config_t;

/* Parses JSON text; fname is used in messages only. NULL on error with
 * "FILE: KEY: why" in err. Free with config_free. */
config_t *config_parse(const char *json, size_t len, const char *fname,
                       char *err, size_t errlen);
/* Reads and parses a file (NULL + message if it cannot be read). */
config_t *config_load(const char *path, char *err, size_t errlen);
void config_free(config_t *c);
/* Reads and parses the rates file c->rates_file names, at c->credits_per_usd.
 * NULL with "FILE: why" in err. Free with rates_free. */
rates_t *config_load_rates(const config_t *c, char *err, size_t errlen);

/* 1 if model matches one of the team's globs (or the team has no list). */
int config_model_allowed(const team_conf_t *t, const char *model);
/* Glob match where '*' matches any run of characters (including '/'). */
int config_glob_match(const char *pattern, const char *s);

/* The thresholds that apply to team t: its alert_thresholds when given,
 * else c->alert_thresholds. Borrowed from c. */
const alert_thresholds_t *config_team_thresholds(const config_t *c, const team_conf_t *t);

/* Parses "day|week|month|none"; -1 if unknown. */
int config_period_parse(const char *s, period_t *out);
const char *config_period_name(period_t p);

#endif
