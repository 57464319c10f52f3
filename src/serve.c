/* serve: the serving process, `pinmeter serve`. Start-up in order: the
 * config and its rates (checked as a whole), the ledger (recovering what a
 * crash left in flight), the budget with a slot per team (its period spend
 * rebuilt from the ledger's daily table), the ledger writer, the jobs, the
 * alert thread, the event loop and its transfers, account sync, the rates
 * sync, the listener. SIGHUP builds a new snapshot and swaps it in only when
 * all of it is valid (one swap at a time with the rates sync's: both hold
 * app->snap_mu); SIGTERM/SIGINT drain and stop in the reverse order. The two
 * signal flags are the process's only globals. */
#include "serve.h"
#include "account.h"
#include "alerts.h"
#include "app.h"
#include "guard.h"
#include "jobs.h"
#include "keys.h"
#include "ledger_account.h"
#include "loop.h"
#include "metrics.h"
#include "ratesync.h"
#include "server.h"
#include "upstream.h"
#include <curl/curl.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop, g_hup;

static void on_signal(int sig) { (void)sig; g_stop = 1; }
static void on_hup(int sig) { (void)sig; g_hup = 1; }

/* The running process: the app context, and the budget slot of every team
 * name seen since start (slots are never reused: a team dropped by a reload
 * keeps its slot should it come back). Main thread only. */
typedef struct serve {
    app_t app;
    const serve_opts_t *opts;
    char **slot_names;             /* team name of each budget slot */
    size_t n_slots;
    period_t *slot_period;         /* period each slot was last set up with */
    int *slot_period_known;
    /* the same for key slots (a key's cap follows its team's period) */
    char **key_names;              /* "team\x1fkey" */
    size_t n_keys;
    period_t *key_period;
    int *key_period_known;
    ratesync_t *rsync;             /* the rates sync's thread; NULL when off at start */
} serve_t;

static int apply_overrides(config_t *cfg, const serve_opts_t *a)
{
    if (a->listen) {
        const char *colon = strrchr(a->listen, ':');
        int port = colon ? atoi(colon + 1) : 0;
        if (!colon || port < 1 || port > 65535 || colon == a->listen) {
            fprintf(stderr, "pinmeter: --listen wants HOST:PORT, got '%s'\n", a->listen);
            return -1;
        }
        snprintf(cfg->listen_host, sizeof cfg->listen_host, "%.*s",
                 (int)(colon - a->listen), a->listen);
        cfg->listen_port = port;
    }
    if (a->upstream) {
        snprintf(cfg->upstream_base, sizeof cfg->upstream_base, "%s", a->upstream);
        size_t n = strlen(cfg->upstream_base);
        while (n > 0 && cfg->upstream_base[n - 1] == '/') cfg->upstream_base[--n] = '\0';
    }
    if (a->ledger) snprintf(cfg->ledger, sizeof cfg->ledger, "%s", a->ledger);
    return 0;
}

/* The budget slot of team name, made (uncapped, period unset) if new. */
static int slot_for(serve_t *sv, const char *name)
{
    app_t *app = &sv->app;
    for (size_t i = 0; i < sv->n_slots; i++)
        if (strcmp(sv->slot_names[i], name) == 0) return (int)i;
    char **nn = realloc(sv->slot_names, (sv->n_slots + 1) * sizeof *nn);
    if (!nn) return -1;
    sv->slot_names = nn;
    if (!(nn[sv->n_slots] = strdup(name))) return -1;
    if (budget_grow(app->budget, sv->n_slots + 1) != 0) return -1;
    budget_team_name(app->budget, (int)sv->n_slots, name);
    budget_team_set(app->budget, (int)sv->n_slots, -1, (period_t)-1);
    return (int)sv->n_slots++;
}

/* Sets a slot's cap and period; when its period is new, rebuilds its spend
 * for the current period from the ledger's daily table (no scan). */
static int apply_team(serve_t *sv, int slot, nanos_t cap, period_t p, int64_t now_s)
{
    app_t *app = &sv->app;
    int was_new = !sv->slot_period_known[slot] || sv->slot_period[slot] != p;
    if (!was_new) {
        budget_team_set(app->budget, slot, cap, p);
        return 0;
    }
    int64_t start = book_period_start(p, now_s);
    nanos_t spent = 0;
    if (ledger_spent_since(app->ledger, sv->slot_names[slot], start / 86400, &spent) != 0)
        return -1;
    budget_team_reset(app->budget, slot, cap, p, start, spent);
    sv->slot_period[slot] = p;
    sv->slot_period_known[slot] = 1;
    return 0;
}

/* The budget key slot of team's key key_id, made (uncapped) if new. */
static int key_slot_for(serve_t *sv, int team_slot, const char *team, const char *key_id)
{
    app_t *app = &sv->app;
    char name[160];
    snprintf(name, sizeof name, "%s\x1f%s", team, key_id);
    for (size_t i = 0; i < sv->n_keys; i++)
        if (strcmp(sv->key_names[i], name) == 0) return (int)i;
    size_t n = sv->n_keys + 1;
    char **nn = realloc(sv->key_names, n * sizeof *nn);
    if (!nn) return -1;
    sv->key_names = nn;
    period_t *pp = realloc(sv->key_period, n * sizeof *pp);
    if (pp) sv->key_period = pp;
    int *pk = realloc(sv->key_period_known, n * sizeof *pk);
    if (pk) sv->key_period_known = pk;
    if (!pp || !pk || !(nn[sv->n_keys] = strdup(name))) return -1;
    pk[sv->n_keys] = 0;
    if (budget_grow_keys(app->budget, n) != 0) { free(nn[sv->n_keys]); return -1; }
    budget_key_reset(app->budget, (int)sv->n_keys, team_slot, key_id, -1, PERIOD_NONE, 0, 0);
    return (int)sv->n_keys++;
}

/* Sets a key slot's cap for its team's period and its limits; when the
 * period is new, rebuilds its spend from the ledger's hourly rollup. */
static int apply_key(serve_t *sv, int kslot, int team_slot, const char *team,
                     const key_conf_t *k, period_t p, int64_t now_s)
{
    app_t *app = &sv->app;
    budget_key_limits(app->budget, kslot, &k->lim);
    if (sv->key_period_known[kslot] && sv->key_period[kslot] == p) {
        budget_key_set(app->budget, kslot, k->cap, p);
        return 0;
    }
    int64_t start = book_period_start(p, now_s);
    nanos_t spent = 0;
    if (ledger_key_spent_since(app->ledger, team, k->id, start, &spent) != 0) return -1;
    budget_key_reset(app->budget, kslot, team_slot, k->id, k->cap, p, start, spent);
    sv->key_period[kslot] = p;
    sv->key_period_known[kslot] = 1;
    return 0;
}

static void kslot_free(int **kslot, size_t n)
{
    for (size_t i = 0; kslot && i < n; i++) free(kslot[i]);
    free(kslot);
}

/* Builds the snapshot for cfg and rates (taking ownership of both) and sets
 * the budget up for it. NULL with err on failure. */
static snap_t *snap_build(serve_t *sv, config_t *cfg, rates_t *rates, char *err, size_t errlen)
{
    snap_t *sn = calloc(1, sizeof *sn);
    int64_t now_s = base_wall_ms() / 1000;
    if (!sn || !(sn->slot = calloc(cfg->n_teams ? cfg->n_teams : 1, sizeof *sn->slot)) ||
        !(sn->kslot = calloc(cfg->n_teams ? cfg->n_teams : 1, sizeof *sn->kslot)))
        goto oom;
    sn->cfg = cfg;
    sn->rates = rates;
    sn->passthrough = cfg->n_teams == 0;
    size_t want = sv->n_slots + cfg->n_teams + 1;
    int *pk = realloc(sv->slot_period_known, want * sizeof *pk);
    if (pk) sv->slot_period_known = pk;
    period_t *pp = realloc(sv->slot_period, want * sizeof *pp);
    if (pp) sv->slot_period = pp;
    if (!pk || !pp) goto oom;
    for (size_t i = sv->n_slots; i < want; i++) pk[i] = 0;
    for (size_t i = 0; i < cfg->n_teams; i++) {
        const team_conf_t *t = &cfg->teams[i];
        if ((sn->slot[i] = slot_for(sv, t->name)) < 0) goto oom;
        if (apply_team(sv, sn->slot[i], t->cap, t->period, now_s) != 0) goto ledger;
        budget_team_limits(sv->app.budget, sn->slot[i], &t->lim);
        if (t->n_keys && !(sn->kslot[i] = calloc(t->n_keys, sizeof *sn->kslot[i]))) goto oom;
        for (size_t k = 0; k < t->n_keys; k++) {
            int ks = key_slot_for(sv, sn->slot[i], t->name, t->keys[k].id);
            if (ks < 0) goto oom;
            sn->kslot[i][k] = ks;
            if (apply_key(sv, ks, sn->slot[i], t->name, &t->keys[k], t->period, now_s) != 0)
                goto ledger;
        }
    }
    if (sn->passthrough) {
        if ((sn->default_slot = slot_for(sv, "default")) < 0) goto oom;
        if (apply_team(sv, sn->default_slot, -1, PERIOD_NONE, now_s) != 0) goto ledger;
    }
    return sn;
ledger:
    snprintf(err, errlen, "%.400s: cannot read team spend from the ledger", cfg->ledger);
    goto fail;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (sn) {
        free(sn->slot);
        kslot_free(sn->kslot, cfg->n_teams);
    }
    free(sn);
    config_free(cfg);
    rates_free(rates);
    return NULL;
}

static void snap_free_all(snap_t *sn)
{
    while (sn) {
        snap_t *older = sn->older;
        if (!sn->borrowed) {       /* else an older one's, freed with it */
            kslot_free(sn->kslot, sn->cfg->n_teams);
            config_free(sn->cfg);
            free(sn->slot);
        }
        rates_free(sn->rates);
        free(sn);
        sn = older;
    }
}

/* Loads and checks the config file and its rates. NULL with err on failure. */
static config_t *load_checked(const serve_opts_t *a, const app_t *app, rates_t **rates,
                              char *err, size_t errlen)
{
    config_t *cfg = config_load(a->config, err, errlen);
    if (!cfg) return NULL;
    if (apply_overrides(cfg, a) != 0) {
        snprintf(err, errlen, "bad command-line override");
        goto fail;
    }
    if (!(*rates = config_load_rates(cfg, err, errlen))) goto fail;
    if (cfg->n_teams > 0 && !app->llm_key) {
        snprintf(err, errlen, "%.400s: teams are configured, so the upstream key must be in the "
                 "environment variable %.100s (upstream.llm_key_env), which is not set",
                 cfg->path, cfg->llm_key_env);
        rates_free(*rates);
        goto fail;
    }
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

/* SIGHUP: parse the file again; swap in the new config and rates only if
 * all of it is valid. Requests in flight keep the snapshot they had. */
static void reload_locked(serve_t *sv)
{
    app_t *app = &sv->app;
    char err[1024];
    rates_t *rates = NULL;
    config_t *cfg = load_checked(sv->opts, app, &rates, err, sizeof err);
    if (!cfg) {
        base_log("reload refused: %s; keeping the running config", err);
        return;
    }
    const config_t *old = app_snap(app)->cfg;
    if (strcmp(cfg->listen_host, old->listen_host) != 0 || cfg->listen_port != old->listen_port ||
        strcmp(cfg->ledger, old->ledger) != 0 || cfg->max_connections != old->max_connections ||
        cfg->client_timeout_s != old->client_timeout_s || cfg->workers != old->workers ||
        strcmp(cfg->store_url, old->store_url) != 0 || cfg->lease_s != old->lease_s ||
        cfg->store_down_local != old->store_down_local ||
        strcmp(cfg->instance_id, old->instance_id) != 0)
        base_log("reload: listen, ledger, max_connections, client_timeout_s, workers and budget "
                 "store changes take effect only at the next start");
    if (!sv->rsync && cfg->rates_sync_s > 0)
        base_log("reload: rates_sync_s was 0 at start; the rates sync starts at the next start");
    size_t n_teams = cfg->n_teams, n_rates = rates_count(rates);
    snap_t *sn = snap_build(sv, cfg, rates, err, sizeof err);
    if (!sn) {
        base_log("reload refused: %s; keeping the running config", err);
        return;
    }
    sn->older = app_snap(app);
    atomic_store(&app->snap, sn);
    base_log_json(sn->cfg->log_json);
    base_log("reloaded %s: %zu team(s), %zu priced model(s)", sv->opts->config, n_teams, n_rates);
    ratesync_note(app, sn->older->rates, sn->rates, "reload");
}

static void reload(void *ctx)
{
    serve_t *sv = ctx;
    pthread_mutex_lock(&sv->app.snap_mu);
    reload_locked(sv);
    pthread_mutex_unlock(&sv->app.snap_mu);
}

/* This instance's stable id: instance_id, else the one kept in the ledger
 * (stored at the first start), so a restart keeps its share of the shared
 * store and the name its alerts carry. 0 or -1. */
static int instance_of(app_t *app, const config_t *cfg, char id[64], char *err, size_t errlen)
{
    if (cfg->instance_id[0]) {
        snprintf(id, 64, "%s", cfg->instance_id);
    } else if (ledger_instance_id(app->ledger, app->instance, id, 64) != 0) {
        snprintf(err, errlen, "%.400s: cannot read or store the instance id", cfg->ledger);
        return -1;
    }
    return 0;
}

/* One group of what ledger recovery charged as interrupted (requests in
 * flight when pinmeter last stopped): counted in the metrics with the label
 * values the current config and rate table allow. */
static void count_interrupted(void *ud, const char *team, const char *key_id,
                              const char *model, int64_t rows, nanos_t nanos)
{
    (void)rows;
    app_t *app = ud;
    const snap_t *sn = app_snap(app);
    const char *t = "";
    if (sn->passthrough && strcmp(team, "default") == 0) t = team;
    for (size_t i = 0; !sn->passthrough && i < sn->cfg->n_teams; i++)
        if (strcmp(sn->cfg->teams[i].name, team) == 0) t = team;
    rate_t rate;
    metrics_settle_t s = {
        .team = t, .model = rates_lookup(sn->rates, model, &rate) == 0 ? model : "",
        .key = sn->cfg->metrics_key_label ? key_id : NULL,
        .state = METRICS_INTERRUPTED, .charge = nanos, .upstream_us = -1,
    };
    metrics_settled(app->metrics, &s);
}

/* The event loops: n of them (0: the cores, at most 8), each with its
 * transfers. 0 or -1 (what started is stopped by stop_workers). */
static int start_workers(app_t *app, int n)
{
    if (n <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        n = cores < 1 ? 1 : cores > 8 ? 8 : (int)cores;
    }
    if (!(app->workers = calloc((size_t)n, sizeof *app->workers))) return -1;
    for (int i = 0; i < n; i++, app->n_workers++) {
        worker_t *w = &app->workers[i];
        if (!(w->loop = loop_new())) return -1;
        if (!(w->up = upstream_start(app, w->loop))) {
            loop_free(w->loop);
            w->loop = NULL;
            return -1;
        }
    }
    return 0;
}

/* Stops every loop at once (each ends its transfers and lets their answers
 * out), then waits for them. */
static void stop_workers(app_t *app)
{
    for (int i = 0; i < app->n_workers; i++) loop_stop_begin(app->workers[i].loop);
    for (int i = 0; i < app->n_workers; i++) loop_stop(app->workers[i].loop);
}

static void free_workers(app_t *app)
{
    for (int i = 0; i < app->n_workers; i++) {
        loop_free(app->workers[i].loop);
        upstream_free(app->workers[i].up);
    }
    free(app->workers);
    app->workers = NULL;
    app->n_workers = 0;
}

/* The in-process book, or the shared store on Redis when budget_store is
 * set (under this instance's id). */
static int make_budget(app_t *app, const config_t *cfg, const char *id, char *err, size_t errlen)
{
    if (!cfg->store_url[0]) {
        app->budget = budget_local_new(0);
        if (!app->budget) snprintf(err, errlen, "out of memory");
        return app->budget ? 0 : -1;
    }
    const char *pw = NULL;
    if (cfg->store_password_env[0]) {
        pw = getenv(cfg->store_password_env);
        if (!pw || !*pw) {
            snprintf(err, errlen, "%.400s: budget_store_password_env names %.100s, which is "
                     "not set", cfg->path, cfg->store_password_env);
            return -1;
        }
    }
    budget_store_conf_t sc = {
        .host = cfg->store_host, .port = cfg->store_port, .db = cfg->store_db,
        .password = pw, .instance = id,
        .lease_ms = (cfg->lease_s ? cfg->lease_s : 30) * 1000,
        .down_local = cfg->store_down_local,
    };
    app->budget = budget_redis_new(0, &sc, err, errlen);
    return app->budget ? 0 : -1;
}

int serve_run(const serve_opts_t *a)
{
    char err[1024], instance[64];
    int rc = 1;
    alerts_t *alerts = NULL;
    serve_t sv;
    memset(&sv, 0, sizeof sv);
    sv.opts = a;
    app_t *app = &sv.app;
    pthread_mutex_init(&app->snap_mu, NULL);
    config_t *probe = config_load(a->config, err, sizeof err);
    if (!probe) { fprintf(stderr, "pinmeter: %s\n", err); return 1; }
    const char *k = getenv(probe->llm_key_env);
    if (k && *k) app->llm_key = strdup(k);
    const char *admin = probe->admin_token_env[0] ? getenv(probe->admin_token_env) : NULL;
    if (admin && *admin) {
        app->admin_on = 1;
        keys_sha256(admin, strlen(admin), app->admin_sha);
    }
    const char *jwt = probe->jwt_env[0] ? getenv(probe->jwt_env) : NULL;
    char *jwt_copy = jwt && *jwt ? strdup(jwt) : NULL;
    app->jwt = jwt_copy;           /* the top-up settings' calls (topup.c) */
    char jwt_env[128];
    snprintf(jwt_env, sizeof jwt_env, "%s", probe->jwt_env);
    config_free(probe);

    rates_t *rates = NULL;
    config_t *cfg = load_checked(a, app, &rates, err, sizeof err);
    if (!cfg) { fprintf(stderr, "pinmeter: %s\n", err); goto out; }
    base_log_json(cfg->log_json);
    unsigned char rnd[8];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 8; i++) snprintf(app->instance + 2 * i, 3, "%02x", rnd[i]);

    if (!(app->metrics = metrics_new())) {
        fprintf(stderr, "pinmeter: out of memory\n");
        config_free(cfg);
        rates_free(rates);
        goto out;
    }
    app->ledger = ledger_open(cfg->ledger, err, sizeof err);
    if (!app->ledger || instance_of(app, cfg, instance, err, sizeof err) != 0 ||
        make_budget(app, cfg, instance, err, sizeof err) != 0) {
        fprintf(stderr, "pinmeter: %s\n", err);
        config_free(cfg);
        rates_free(rates);
        goto out;
    }
    int64_t interrupted = ledger_recover(app->ledger, base_wall_ms());
    if (interrupted < 0) {
        fprintf(stderr, "pinmeter: %s: cannot recover the ledger\n", cfg->ledger);
        config_free(cfg);
        rates_free(rates);
        goto out;
    }
    if (interrupted > 0)
        base_log("%lld request(s) were in flight when pinmeter last stopped: marked interrupted "
                "and charged at their reservation", (long long)interrupted);
    snap_t *sn = snap_build(&sv, cfg, rates, err, sizeof err);
    if (!sn) { fprintf(stderr, "pinmeter: %s\n", err); goto out; }
    atomic_store(&app->snap, sn);
    ledger_recovered(app->ledger, count_interrupted, app);
    budget_start(app->budget, 3000);    /* the shared store: first sync, or say why not */
    if (ledger_writer_start(app->ledger) != 0) {
        fprintf(stderr, "pinmeter: cannot start the ledger writer\n");
        goto out;
    }
    if (!(app->jobs = jobs_start(2))) {
        fprintf(stderr, "pinmeter: cannot start the job threads\n");
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "pinmeter: cannot start the upstream client\n");
        goto out;
    }
    if (alerts_start(app, instance, &alerts, err, sizeof err) != 0) {
        fprintf(stderr, "pinmeter: %s\n", err);
        goto out;
    }
    if (start_workers(app, cfg->workers) != 0) {
        fprintf(stderr, "pinmeter: cannot start the event loops\n");
        goto out;
    }
    if (jwt_copy) {
        /* the account's tables and the top-up guard before the first sync */
        if (!(app->acctdb = ledger_account_open(app->ledger, err, sizeof err)) ||
            !(app->guard = guard_new(app, app->acctdb, err, sizeof err))) {
            fprintf(stderr, "pinmeter: %s\n", err);
            goto out;
        }
        app->acct = account_start(app, jwt_copy);
    } else if (!sn->passthrough)
        base_log("account sync off (%s not set): only team caps limit spend", jwt_env);
    sv.rsync = ratesync_start(app);   /* off the loop; a failed read never stops serving */

    /* Each stream holds a client and an upstream socket: allow as many
     * descriptors as the hard limit does. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_hup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (server_run(app, &g_stop, &g_hup, reload, &sv) == 0) rc = 0;
    stop_workers(app);
    /* Requests still waiting on the ledger are finished by now or shortly. */
    for (int i = 0; i < 200 && atomic_load(&app->active) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    jobs_stop(app->jobs);          /* a job still running finishes (its answer is dropped) */
    app->jobs = NULL;
    server_free(app->srv);
    app->srv = NULL;
    ratesync_stop(sv.rsync);       /* before the ledger it records changes in */
    sv.rsync = NULL;
    account_stop(app->acct);
    app->acct = NULL;
    guard_free(app->guard);        /* no job or sync can reach it any more */
    app->guard = NULL;
    ledger_account_close(app->acctdb);
    app->acctdb = NULL;
    alerts_stop(alerts);           /* pending deliveries resume at the next start */
    ledger_close(app->ledger, 5000);
    app->ledger = NULL;
    free_workers(app);
    base_log("stopped");
out:
    jobs_stop(app->jobs);
    ratesync_stop(sv.rsync);
    account_stop(app->acct);
    guard_free(app->guard);
    ledger_account_close(app->acctdb);
    alerts_stop(alerts);
    stop_workers(app);
    server_free(app->srv);
    free_workers(app);
    if (app->ledger) ledger_close(app->ledger, 0);
    budget_free(app->budget);
    alerts_free(alerts);           /* no hook can run any more */
    metrics_free(app->metrics);
    snap_free_all(app_snap(app));
    for (size_t i = 0; i < sv.n_slots; i++) free(sv.slot_names[i]);
    free(sv.slot_names);
    free(sv.slot_period);
    free(sv.slot_period_known);
    for (size_t i = 0; i < sv.n_keys; i++) free(sv.key_names[i]);
    free(sv.key_names);
    free(sv.key_period);
    free(sv.key_period_known);
    free(app->llm_key);
    free(jwt_copy);
    pthread_mutex_destroy(&app->snap_mu);
    return rc;
}
