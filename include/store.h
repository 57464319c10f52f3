/* store: the shared budget store on Redis. budget.c forwards to it
 * when "budget_store" is configured; see budget.h for each call's contract.
 *
 * Layout (one hash tag per team, so every key a script touches is in one
 * Redis Cluster slot): pm:{TEAM}:<k><START>:spent|loaned|holds|lease|by|keys,
 * where k is the period (d, w, m, n) and START its first second (keys: each
 * capped key's spent, loaned and instances' shares); pm:{TEAM}:lim and
 * pm:{TEAM}:limlease (the rate-limit windows and in-flight counts of the
 * team and its keys, and their requests' leases); plus
 * pm:{TEAM}:done:<request id> (settled marks, 2 days), pm:{TEAM}:alert:<id>
 * (alert claims, until their period's keys expire) and pm:instances.
 * The scripts are in src/lua, run over rconn (the only user of hiredis).
 * A synchronous reserve and the view run on the caller's thread (the loop)
 * over one connection; asynchronous reserves are pipelined by the reserver
 * thread over another; settle, release, lease renewal, re-adding this
 * instance's share and the liveness beat run on the worker thread over a
 * third, in order, each retried until Redis acknowledges it. */
#ifndef PINMETER_STORE_H
#define PINMETER_STORE_H
#include "budget.h"

typedef struct store store_t;

store_t *store_new(size_t n_teams, const budget_store_conf_t *c, char *err, size_t errlen);
int store_start(store_t *s, int wait_ms);
void store_free(store_t *s);
int store_grow(store_t *s, size_t n);
void store_team_name(store_t *s, int team, const char *name);
void store_team_set(store_t *s, int team, nanos_t cap, period_t period);
void store_team_reset(store_t *s, int team, nanos_t cap, period_t period,
                      int64_t period_start, nanos_t spent);
int store_reserve(store_t *s, const budget_req_t *q, budget_hold_t *hold, budget_why_t *why);
int store_async(store_t *s);
int store_reserve_async(store_t *s, const budget_req_t *q, budget_hold_t *hold,
                        budget_reserved_fn cb, void *arg);
void store_settle(store_t *s, budget_hold_t *hold, nanos_t charge, int64_t tokens,
                  int64_t now_ms);
void store_release(store_t *s, budget_hold_t *hold, int64_t now_ms);
/* Key caps and rate limits, fleet-wide (store.c says how). */
int store_grow_keys(store_t *s, size_t n);
void store_key_reset(store_t *s, int key, int team, const char *key_id, nanos_t cap,
                     period_t period, int64_t period_start, nanos_t spent);
void store_key_set(store_t *s, int key, nanos_t cap, period_t period);
void store_team_limits(store_t *s, int team, const ratelim_conf_t *c);
void store_key_limits(store_t *s, int key, const ratelim_conf_t *c);
int store_key_view(store_t *s, int key, int64_t now, book_view_t *out);
int store_team_view(store_t *s, int team, int64_t now, book_view_t *out);
int store_alert_claim(store_t *s, int team, const char *id, int64_t now);
int store_team_figures(store_t *s, int team, int64_t now, book_view_t *out);
const char *store_state(store_t *s);
/* The account projection stays per instance (a local book). */
void store_account_sync(store_t *s, nanos_t total, nanos_t available);
void store_account_exhausted(store_t *s);
int store_account_view(store_t *s, book_view_t *out);

#endif
