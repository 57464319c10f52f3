/* config_int.h: private to the config module (src/config.c and
 * src/config_team.c); nothing else includes it. config.c walks the top level
 * and hands the "teams" array to config_team.c, which parses teams and their
 * keys and owns the rules across them. The layering runs one way: config.c
 * calls into config_team.c, both call into cfgrow; config_team.c calls
 * nothing in config.c. */
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

#endif
