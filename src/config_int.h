/* config_int.h: private to the config module (src/config.c,
 * src/config_team.c and src/config_alerts.c); nothing else includes it.
 * config.c walks the top level and hands the "teams" array to
 * config_team.c, which parses teams and their keys and owns the rules across
 * them, and the "alerts" object to config_alerts.c, whose threshold-list
 * parser config_team.c shares. The layering runs one way: config.c calls
 * into config_team.c and config_alerts.c, config_team.c into
 * config_alerts.c, all into cfgrow; none calls back up. */
#ifndef PINMETER_CONFIG_INT_H
#define PINMETER_CONFIG_INT_H
#include "config.h"
#include "cfgrow.h"

/* The cfgrow_fn for the top-level "teams" key: base is the config_t. Fills
 * c->teams / c->n_teams (partly, on error; config_team_free frees it). */
int config_team_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base);

/* Whole-config rules over c's teams, run after the walk: unique team names,
 * key ids unique within a team, key hashes unique across all teams. 0, or -1
 * after cfgrow_fail. */
int config_team_check(cfgrow_ctx_t *x, const config_t *c);

/* Frees what config_team_parse allocated for the n teams, and teams. */
void config_team_free(team_conf_t *teams, size_t n);

/* The cfgrow_fn for the top-level "alerts" key: base is the config_t. Sets
 * alerts_on and the alert_* fields (defaults first: no secret, thresholds
 * 0.5, 0.8, 1.0, no account_below). */
int config_alerts_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base);

/* Parses a threshold list at path (alerts.thresholds, a team's
 * alert_thresholds): numbers in (0, 10], unique to 6 decimals, at most
 * CONFIG_THRESHOLDS_MAX; "[]" is an empty list. Fills *out sorted, or -1
 * after cfgrow_fail (*out unchanged). */
int config_thresholds_parse(cfgrow_ctx_t *x, const cJSON *v, const char *path,
                            alert_thresholds_t *out);

#endif
