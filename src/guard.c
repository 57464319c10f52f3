/* guard: the top-up guard (see guard.h). State under one mutex: the
 * top-ups counted since the last reset (only the last 24 h are kept), the
 * trip they make (acctcore_guard), the episode it belongs to (a trip is
 * recorded and alerted once, when it begins), and the fleet's trip as Redis
 * last told it. The Redis connection has a mutex of its own: the account
 * thread shares after each sync, a reset job shares at once.
 * Calls: acctcore, ledger_account, alertq, alertcore (times), rconn, jobs,
 * req; only account.c, chat.c and routes.c call here. */
#include "guard.h"
#include "acctcore.h"
#include "alertcore.h"
#include "alertq.h"
#include "jobs.h"
#include "rconn.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REDIS_TIMEOUT_MS 1000
#define TRIP_KEY "pm:{account}:guard"
#define RESET_KEY "pm:{account}:guard_reset"

extern const char pm_lua_guard[];

struct guard {
    app_t *app;
    ledger_account_t *store;
    pthread_mutex_t mu;
    int64_t *times;                   /* [n] ascending: the top-ups counted */
    size_t n, cap;
    int64_t reset_ms;                 /* the latest reset known (0: none) */
    int64_t until_ms;                 /* this instance's trip (0: none) */
    int topups;                       /* within 24 h at the last evaluation */
    int64_t episode_at;               /* the running trip's top-up (0: none) */
    int64_t fleet_until;              /* the fleet's trip, as Redis last said (0: none) */
    int fleet_count;
    /* the fleet (the Redis budget store): its own connection */
    pthread_mutex_t rmu;
    rconn_site_t *site;
    rconn_t *rc;
    int redis_failing;
};

/* What an evaluation found that must be acted on outside the mutex. */
typedef struct trip { int begun; int64_t at_ms, until_ms; int topups, max; } trip_t;

static int max_of(const guard_t *g)
{
    return app_snap(g->app)->cfg->max_topups_per_day;
}

static int push_time(guard_t *g, int64_t at)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 32;
        int64_t *t = realloc(g->times, cap * sizeof *t);
        if (!t) return -1;
        g->times = t;
        g->cap = cap;
    }
    size_t i = g->n++;
    while (i > 0 && g->times[i - 1] > at) {       /* kept ascending */
        g->times[i] = g->times[i - 1];
        i--;
    }
    g->times[i] = at;
    return 0;
}

/* Forgets the top-ups at or before t. */
static void drop_until(guard_t *g, int64_t t)
{
    size_t k = 0;
    while (k < g->n && g->times[k] <= t) k++;
    if (k == 0) return;
    memmove(g->times, g->times + k, (g->n - k) * sizeof *g->times);
    g->n -= k;
}

/* The guard at now, with mu held. */
static void evaluate_locked(guard_t *g, int64_t now, trip_t *out)
{
    memset(out, 0, sizeof *out);
    drop_until(g, now - ACCTCORE_DAY_MS);         /* out of every window from now on */
    size_t k;
    int64_t until;
    int max = max_of(g);
    int tripped = acctcore_guard(g->times, g->n, max, now, &k, &until);
    g->topups = (int)k;
    g->until_ms = tripped ? until : 0;
    if (!tripped) {
        g->episode_at = 0;
        return;
    }
    if (g->episode_at) return;                    /* the same trip as before */
    g->episode_at = g->times[g->n - 1];
    *out = (trip_t){ .begun = 1, .at_ms = g->episode_at, .until_ms = until, .topups = (int)k,
                     .max = max };
}

/* A trip that began: recorded, logged, alerted. */
static void tripped(guard_t *g, const trip_t *t)
{
    if (!t->begun) return;
    char until[ALERTCORE_TIME_MAX], detail[200];
    alertcore_time(t->until_ms, until);
    snprintf(detail, sizeof detail, "%d top-ups within 24 h (max_topups_per_day %d); "
             "refusing until %s", t->topups, t->max, until);
    ledger_account_event_t ev = { .at_ms = t->at_ms, .kind = LEDGER_EV_TOPUP_LIMIT,
                               .detail = detail };
    if (ledger_account_add_event(g->store, &ev) != 0)
        base_logl(BASE_ERROR, "top-up guard: cannot record the trip in the ledger");
    base_logl(BASE_WARN, "top-up guard: %s; new requests get 402 topup_limit (lift it sooner "
              "with POST /v0/credits/topup/guard/reset)", detail);
    alertq_acct_t a = { .kind = ALERTQ_TOPUP_LIMIT, .at_ms = t->at_ms, .topups = t->topups,
                        .max = t->max, .until_ms = t->until_ms };
    if (g->app->alertq) alertq_account_event(g->app->alertq, &a);
}

typedef struct loader { guard_t *g; int64_t limit_at; } loader_t;

static int load_event(void *ud, const ledger_account_event_t *e)
{
    loader_t *ld = ud;
    guard_t *g = ld->g;
    if (strcmp(e->kind, LEDGER_EV_TOPUP) == 0) {
        if (push_time(g, e->at_ms) != 0) return 1;
    } else if (strcmp(e->kind, LEDGER_EV_GUARD_RESET) == 0) {
        g->n = 0;
        g->reset_ms = e->at_ms;
        ld->limit_at = 0;
    } else if (strcmp(e->kind, LEDGER_EV_TOPUP_LIMIT) == 0) {
        ld->limit_at = e->at_ms;
    }
    return 0;
}

static int redis_site(guard_t *g, const config_t *cfg, char *err, size_t errlen)
{
    const char *pw = NULL;
    if (cfg->store_password_env[0]) pw = getenv(cfg->store_password_env);
    const char *const texts[1] = { pm_lua_guard };
    rconn_conf_t rcf = { .host = cfg->store_host, .port = cfg->store_port, .db = cfg->store_db,
                         .password = pw && *pw ? pw : NULL, .scripts = texts, .n_scripts = 1,
                         .who = "top-up guard" };
    if (!(g->site = rconn_site_new(&rcf))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

guard_t *guard_new(app_t *app, ledger_account_t *store, char *err, size_t errlen)
{
    guard_t *g = calloc(1, sizeof *g);
    if (!g) { snprintf(err, errlen, "out of memory"); return NULL; }
    g->app = app;
    g->store = store;
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->rmu, NULL);
    const config_t *cfg = app_snap(app)->cfg;
    int64_t now = base_wall_ms();
    loader_t ld = { .g = g };
    char e[256];
    if (ledger_account_read_events(app->ledger, now - ACCTCORE_DAY_MS, INT64_MAX, NULL, load_event,
                                &ld, e, sizeof e) != 0) {
        snprintf(err, errlen, "%.400s: cannot read the account events: %s", cfg->ledger, e);
        goto fail;
    }
    if (cfg->store_url[0] && redis_site(g, cfg, err, errlen) != 0) goto fail;
    trip_t t;
    pthread_mutex_lock(&g->mu);
    g->episode_at = ld.limit_at;                   /* a trip recorded before the restart */
    evaluate_locked(g, now, &t);
    int refusing = g->until_ms > now;
    pthread_mutex_unlock(&g->mu);
    tripped(g, &t);
    if (refusing && !t.begun) {
        char until[ALERTCORE_TIME_MAX];
        base_logl(BASE_WARN, "top-up guard: still tripped from before the restart (%d top-ups "
                  "within 24 h): new requests get 402 topup_limit until %s or a reset",
                  g->topups, alertcore_time(g->until_ms, until));
    }
    return g;
fail:
    guard_free(g);
    return NULL;
}

void guard_free(guard_t *g)
{
    if (!g) return;
    rconn_close(g->rc);
    rconn_site_free(g->site);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->rmu);
    free(g->times);
    free(g);
}

/* Shares the guard with the fleet through Redis and takes in what the
 * others did: a newer reset (the top-ups before it are forgotten here
 * too), a trip. Off the loop. */
static void share(guard_t *g, int64_t now)
{
    if (!g->site) return;
    pthread_mutex_lock(&g->mu);
    int64_t until = g->until_ms, reset = g->reset_ms;
    int count = g->topups;
    pthread_mutex_unlock(&g->mu);
    char a_until[24], a_count[16], a_reset[24];
    snprintf(a_until, sizeof a_until, "%lld", (long long)(until > now ? until : 0));
    snprintf(a_count, sizeof a_count, "%d", count);
    snprintf(a_reset, sizeof a_reset, "%lld", (long long)reset);
    const char *keys[2] = { TRIP_KEY, RESET_KEY }, *args[3] = { a_until, a_count, a_reset };
    rconn_reply_t rep;
    pthread_mutex_lock(&g->rmu);
    if (!g->rc) g->rc = rconn_dial(g->site, REDIS_TIMEOUT_MS);
    int rc = g->rc ? rconn_run(g->rc, 0, 2, keys, 3, args, &rep) : RCONN_IO;
    if (rc == RCONN_IO) {
        rconn_close(g->rc);
        g->rc = NULL;
    }
    if (rc != RCONN_OK && !g->redis_failing)
        base_logl(BASE_WARN, "top-up guard: cannot reach Redis: a trip or a reset holds on "
                  "this instance only until it is back");
    else if (rc == RCONN_OK && g->redis_failing)
        base_log("top-up guard: Redis reachable again; the guard is shared with the fleet");
    g->redis_failing = rc != RCONN_OK;
    pthread_mutex_unlock(&g->rmu);
    if (rc != RCONN_OK) return;
    int64_t fleet_reset = rep.elem[2];
    trip_t t = {0};
    int adopted = 0;
    pthread_mutex_lock(&g->mu);
    if (fleet_reset > g->reset_ms) {              /* another instance was reset */
        drop_until(g, fleet_reset);
        g->reset_ms = fleet_reset;
        g->episode_at = 0;
        adopted = 1;
        evaluate_locked(g, now, &t);
    }
    g->fleet_until = rep.elem[0] > now ? rep.elem[0] : 0;
    g->fleet_count = (int)rep.elem[1];
    pthread_mutex_unlock(&g->mu);
    if (adopted) {
        ledger_account_event_t ev = { .at_ms = fleet_reset, .kind = LEDGER_EV_GUARD_RESET,
                                   .detail = "reset on another instance of the fleet" };
        if (ledger_account_add_event(g->store, &ev) != 0)
            base_logl(BASE_ERROR, "top-up guard: cannot record the fleet's reset in the ledger");
        base_log("top-up guard: reset on another instance of the fleet; the top-ups counted "
                 "before it are forgotten here too");
    }
    tripped(g, &t);
}

int guard_topup(guard_t *g, int64_t at_ms)
{
    trip_t t;
    pthread_mutex_lock(&g->mu);
    if (at_ms > g->reset_ms && push_time(g, at_ms) != 0)
        base_logl(BASE_ERROR, "top-up guard: out of memory; a top-up is not counted");
    evaluate_locked(g, at_ms, &t);
    int k = g->topups;
    pthread_mutex_unlock(&g->mu);
    tripped(g, &t);
    return k;
}

void guard_tick(guard_t *g, int64_t now_ms)
{
    trip_t t;
    pthread_mutex_lock(&g->mu);
    evaluate_locked(g, now_ms, &t);
    pthread_mutex_unlock(&g->mu);
    tripped(g, &t);
    share(g, now_ms);
}

int guard_refuses(guard_t *g, int64_t now_ms, guard_why_t *why)
{
    pthread_mutex_lock(&g->mu);
    int local = g->until_ms > now_ms, fleet = g->fleet_until > now_ms;
    if (local || fleet) {
        why->topups = local ? g->topups : g->fleet_count;
        why->until_ms = g->until_ms > g->fleet_until ? g->until_ms : g->fleet_until;
        why->fleet = !local;
    }
    pthread_mutex_unlock(&g->mu);
    why->max = max_of(g);
    return local || fleet;
}

char *guard_refusal_body(const guard_why_t *w, const char *team)
{
    char until[ALERTCORE_TIME_MAX], msg[700];
    alertcore_time(w->until_ms, until);
    snprintf(msg, sizeof msg,
             "the account's top-up guard is on: Pinata's balance was topped up %d times "
             "within 24 hours%s, more than account.max_topups_per_day (%d), so pinmeter "
             "refuses new requests to keep a runaway agent from charging the card again; it "
             "lifts at %s (when the oldest of those top-ups is 24 hours old), or an admin lifts "
             "it now with POST /v0/credits/topup/guard/reset", w->topups,
             w->fleet ? " (seen by another instance of the fleet)" : "", w->max, until);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "topup_limit");
    cJSON_AddStringToObject(e, "code", "topup_limit");
    cJSON_AddStringToObject(e, "scope", "account");
    cJSON_AddStringToObject(e, "reason", "topup_limit");
    cJSON_AddStringToObject(e, "team", team);
    cJSON_AddNumberToObject(e, "topups", w->topups);
    cJSON_AddNumberToObject(e, "max_topups_per_day", w->max);
    cJSON_AddStringToObject(e, "until", until);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* ---- the reset ---- */

static void reset_job(void *arg)
{
    req_t *r = arg;
    guard_t *g = r->app->guard;
    int64_t now = base_wall_ms();
    pthread_mutex_lock(&g->mu);
    int forgotten = (int)g->n;
    int was = g->until_ms > now || g->fleet_until > now;
    g->n = 0;
    g->reset_ms = now > g->reset_ms ? now : g->reset_ms + 1;
    int64_t at = g->reset_ms;
    g->until_ms = g->fleet_until = 0;
    g->topups = g->fleet_count = 0;
    g->episode_at = 0;
    pthread_mutex_unlock(&g->mu);
    ledger_account_event_t ev = { .at_ms = at, .kind = LEDGER_EV_GUARD_RESET,
                               .detail = "POST /v0/credits/topup/guard/reset" };
    int ok = ledger_account_add_event(g->store, &ev) == 0;
    if (!ok) base_logl(BASE_ERROR, "top-up guard: cannot record the reset in the ledger");
    base_log("top-up guard reset by an admin: %d top-up(s) forgotten%s", forgotten,
             was ? "; new requests are admitted again" : "");
    share(g, now);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "reset", 1);
    cJSON_AddNumberToObject(o, "topups_forgotten", forgotten);
    cJSON_AddBoolToObject(o, "was_refusing", was);
    cJSON_AddBoolToObject(o, "recorded", ok);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    req_answer_later_as(r, 200, s, s ? strlen(s) : 0, "application/json");
    req_unref(r);
}

enum MHD_Result guard_reset_serve(req_t *r, struct MHD_Connection *c)
{
    if (!r->app->guard)
        return req_queue_error(c, 503, "the top-up guard is off: it needs account sync (set "
                               "the variable account.jwt_env names)", "account_unavailable",
                               "account_unavailable", NULL);
    req_hold(r);
    if (jobs_submit(r->app->jobs, reset_job, r) != 0) {
        req_answer_later(r, 503, req_error_json("pinmeter is stopping", "server_error",
                                                "unavailable"), NULL);
        req_unref(r);
    }
    return MHD_YES;
}
