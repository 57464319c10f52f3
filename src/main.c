/* main: the pinmeter command line — serve, report, keygen, check-config —
 * and the serving process's start-up and orderly shutdown. */
#include "account.h"
#include "app.h"
#include "keys.h"
#include "loop.h"
#include "server.h"
#include "upstream.h"
#include <curl/curl.h>
#include "report.h"
#include <getopt.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define PINMETER_VERSION "0.1.0"
#define DEFAULT_CONFIG "conf/pinmeter.json"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(FILE *f)
{
    fprintf(f,
"pinmeter %s - a metering proxy for Pinata Inference\n"
"\n"
"usage:\n"
"  pinmeter serve [-c FILE] [--listen HOST:PORT] [--upstream URL] [--ledger PATH]\n"
"  pinmeter report [-c FILE] [--ledger PATH]... [--since YYYY-MM-DD] [--until YYYY-MM-DD]\n"
"                  [--by team|key|model|day[,...]] [--format table|csv|json]\n"
"  pinmeter keygen --team NAME [--id ID]\n"
"  pinmeter check-config [-c FILE]\n"
"  pinmeter --help | --version\n"
"\n"
"The default config is %s. Each command takes --help.\n",
            PINMETER_VERSION, DEFAULT_CONFIG);
}

enum { OPT_LISTEN = 1000, OPT_UPSTREAM, OPT_LEDGER, OPT_SINCE, OPT_UNTIL, OPT_BY,
       OPT_FORMAT, OPT_TEAM, OPT_ID };

static const struct option LONGOPTS[] = {
    {"config", required_argument, NULL, 'c'},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"upstream", required_argument, NULL, OPT_UPSTREAM},
    {"ledger", required_argument, NULL, OPT_LEDGER},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"by", required_argument, NULL, OPT_BY},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"team", required_argument, NULL, OPT_TEAM},
    {"id", required_argument, NULL, OPT_ID},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

typedef struct args {
    const char *config, *listen, *upstream, *since, *until, *by, *format, *team, *id;
    const char *ledgers[64];
    size_t n_ledgers;
} args_t;

/* Parses options shared by all commands. 0 ok, 1 printed help/version, -1 error. */
static int parse_args(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof *a);
    a->config = DEFAULT_CONFIG;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", LONGOPTS, NULL)) != -1) {
        switch (c) {
        case 'c': a->config = optarg; break;
        case OPT_LISTEN: a->listen = optarg; break;
        case OPT_UPSTREAM: a->upstream = optarg; break;
        case OPT_LEDGER:
            if (a->n_ledgers < 64) a->ledgers[a->n_ledgers++] = optarg;
            break;
        case OPT_SINCE: a->since = optarg; break;
        case OPT_UNTIL: a->until = optarg; break;
        case OPT_BY: a->by = optarg; break;
        case OPT_FORMAT: a->format = optarg; break;
        case OPT_TEAM: a->team = optarg; break;
        case OPT_ID: a->id = optarg; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("pinmeter %s\n", PINMETER_VERSION); return 1;
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pinmeter: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 65536 > cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); return NULL; }
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static rates_t *load_rates(const config_t *cfg, char *err, size_t errlen)
{
    size_t len;
    char *txt = read_file(cfg->rates_file, &len);
    if (!txt) {
        snprintf(err, errlen, "%.400s: cannot read the rates file (rates_file in %.400s)",
                 cfg->rates_file, cfg->path);
        return NULL;
    }
    char e[400];
    rates_t *r = rates_parse(txt, len, cfg->credits_per_usd, e, sizeof e);
    free(txt);
    if (!r) snprintf(err, errlen, "%.400s: %.400s", cfg->rates_file, e);
    return r;
}

static int apply_overrides(config_t *cfg, const args_t *a)
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
    if (a->n_ledgers) snprintf(cfg->ledger, sizeof cfg->ledger, "%s", a->ledgers[0]);
    return 0;
}

static volatile sig_atomic_t g_hup;
static void on_hup(int sig) { (void)sig; g_hup = 1; }

/* The budget slot of team name, made (uncapped, period unset) if new. */
static int slot_for(app_t *app, const char *name)
{
    for (size_t i = 0; i < app->n_slots; i++)
        if (strcmp(app->slot_names[i], name) == 0) return (int)i;
    char **nn = realloc(app->slot_names, (app->n_slots + 1) * sizeof *nn);
    if (!nn) return -1;
    app->slot_names = nn;
    if (!(nn[app->n_slots] = strdup(name))) return -1;
    if (budget_grow(app->budget, app->n_slots + 1) != 0) return -1;
    budget_team_name(app->budget, (int)app->n_slots, name);
    budget_team_set(app->budget, (int)app->n_slots, -1, (period_t)-1);
    return (int)app->n_slots++;
}

/* Sets a slot's cap and period; when its period is new, rebuilds its spend
 * for the current period from the ledger's daily table (no scan). */
static int apply_team(app_t *app, int slot, nanos_t cap, period_t p, int64_t now_s)
{
    int was_new = !app->slot_period_known[slot] || app->slot_period[slot] != p;
    if (!was_new) {
        budget_team_set(app->budget, slot, cap, p);
        return 0;
    }
    int64_t start = book_period_start(p, now_s);
    nanos_t spent = 0;
    if (ledger_spent_since(app->ledger, app->slot_names[slot], start / 86400, &spent) != 0)
        return -1;
    budget_team_reset(app->budget, slot, cap, p, start, spent);
    app->slot_period[slot] = p;
    app->slot_period_known[slot] = 1;
    return 0;
}

/* Builds the snapshot for cfg and rates (taking ownership of both) and sets
 * the budget up for it. NULL with err on failure. */
static snap_t *snap_build(app_t *app, config_t *cfg, rates_t *rates, char *err, size_t errlen)
{
    snap_t *sn = calloc(1, sizeof *sn);
    int64_t now_s = base_wall_ms() / 1000;
    if (!sn || !(sn->slot = calloc(cfg->n_teams ? cfg->n_teams : 1, sizeof *sn->slot))) goto oom;
    sn->cfg = cfg;
    sn->rates = rates;
    sn->passthrough = cfg->n_teams == 0;
    size_t want = app->n_slots + cfg->n_teams + 1;
    int *pk = realloc(app->slot_period_known, want * sizeof *pk);
    if (pk) app->slot_period_known = pk;
    period_t *pp = realloc(app->slot_period, want * sizeof *pp);
    if (pp) app->slot_period = pp;
    if (!pk || !pp) goto oom;
    for (size_t i = app->n_slots; i < want; i++) pk[i] = 0;
    for (size_t i = 0; i < cfg->n_teams; i++) {
        const team_conf_t *t = &cfg->teams[i];
        if ((sn->slot[i] = slot_for(app, t->name)) < 0) goto oom;
        if (apply_team(app, sn->slot[i], t->cap, t->period, now_s) != 0) goto ledger;
    }
    if (sn->passthrough) {
        if ((sn->default_slot = slot_for(app, "default")) < 0) goto oom;
        if (apply_team(app, sn->default_slot, -1, PERIOD_NONE, now_s) != 0) goto ledger;
    }
    return sn;
ledger:
    snprintf(err, errlen, "%.400s: cannot read team spend from the ledger", cfg->ledger);
    goto fail;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    if (sn) free(sn->slot);
    free(sn);
    config_free(cfg);
    rates_free(rates);
    return NULL;
}

static void snap_free_all(snap_t *sn)
{
    while (sn) {
        snap_t *older = sn->older;
        config_free(sn->cfg);
        rates_free(sn->rates);
        free(sn->slot);
        free(sn);
        sn = older;
    }
}

static const args_t *g_args;       /* the serve command's arguments, for reloads */

/* Loads and checks the config file and its rates. NULL with err on failure. */
static config_t *load_checked(const args_t *a, const app_t *app, rates_t **rates,
                              char *err, size_t errlen)
{
    config_t *cfg = config_load(a->config, err, errlen);
    if (!cfg) return NULL;
    if (apply_overrides(cfg, a) != 0) {
        snprintf(err, errlen, "bad command-line override");
        goto fail;
    }
    if (!(*rates = load_rates(cfg, err, errlen))) goto fail;
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
static void reload(app_t *app)
{
    char err[1024];
    rates_t *rates = NULL;
    config_t *cfg = load_checked(g_args, app, &rates, err, sizeof err);
    if (!cfg) {
        base_log("reload refused: %s; keeping the running config", err);
        return;
    }
    const config_t *old = app_snap(app)->cfg;
    if (strcmp(cfg->listen_host, old->listen_host) != 0 || cfg->listen_port != old->listen_port ||
        strcmp(cfg->ledger, old->ledger) != 0 || cfg->max_connections != old->max_connections ||
        cfg->client_timeout_s != old->client_timeout_s ||
        strcmp(cfg->store_url, old->store_url) != 0 || cfg->lease_s != old->lease_s ||
        cfg->store_down_local != old->store_down_local ||
        strcmp(cfg->instance_id, old->instance_id) != 0)
        base_log("reload: listen, ledger, max_connections, client_timeout_s and budget store "
                "changes take effect only at the next start");
    size_t n_teams = cfg->n_teams, n_rates = rates_count(rates);
    snap_t *sn = snap_build(app, cfg, rates, err, sizeof err);
    if (!sn) {
        base_log("reload refused: %s; keeping the running config", err);
        return;
    }
    sn->older = app_snap(app);
    atomic_store(&app->snap, sn);
    base_log("reloaded %s: %zu team(s), %zu priced model(s)", g_args->config, n_teams, n_rates);
}

/* The in-process book, or the shared store on Redis when budget_store is
 * set (its instance id is the ledger's, so a restart keeps its share). */
static int make_budget(app_t *app, const config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->store_url[0]) {
        app->budget = budget_local_new(0);
        if (!app->budget) snprintf(err, errlen, "out of memory");
        return app->budget ? 0 : -1;
    }
    char id[64];
    if (cfg->instance_id[0]) {
        snprintf(id, sizeof id, "%s", cfg->instance_id);
    } else if (ledger_instance_id(app->ledger, app->instance, id, sizeof id) != 0) {
        snprintf(err, errlen, "%.400s: cannot read or store the instance id", cfg->ledger);
        return -1;
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
        .lease_ms = (cfg->lease_s ? cfg->lease_s : cfg->timeout_s + 30) * 1000,
        .down_local = cfg->store_down_local,
    };
    app->budget = budget_redis_new(0, &sc, err, errlen);
    return app->budget ? 0 : -1;
}

static int cmd_serve(const args_t *a)
{
    char err[1024];
    int rc = 1;
    app_t app;
    memset(&app, 0, sizeof app);
    g_args = a;
    config_t *probe = config_load(a->config, err, sizeof err);
    if (!probe) { fprintf(stderr, "pinmeter: %s\n", err); return 1; }
    const char *k = getenv(probe->llm_key_env);
    if (k && *k) app.llm_key = strdup(k);
    const char *admin = probe->admin_token_env[0] ? getenv(probe->admin_token_env) : NULL;
    if (admin && *admin) {
        app.admin_on = 1;
        keys_sha256(admin, strlen(admin), app.admin_sha);
    }
    const char *jwt = probe->jwt_env[0] ? getenv(probe->jwt_env) : NULL;
    char *jwt_copy = jwt && *jwt ? strdup(jwt) : NULL;
    char jwt_env[128];
    snprintf(jwt_env, sizeof jwt_env, "%s", probe->jwt_env);
    config_free(probe);

    rates_t *rates = NULL;
    config_t *cfg = load_checked(a, &app, &rates, err, sizeof err);
    if (!cfg) { fprintf(stderr, "pinmeter: %s\n", err); goto out; }
    unsigned char rnd[8];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 8; i++) snprintf(app.instance + 2 * i, 3, "%02x", rnd[i]);

    app.ledger = ledger_open(cfg->ledger, err, sizeof err);
    if (!app.ledger || make_budget(&app, cfg, err, sizeof err) != 0) {
        fprintf(stderr, "pinmeter: %s\n", err);
        config_free(cfg);
        rates_free(rates);
        goto out;
    }
    int64_t interrupted = ledger_recover(app.ledger, base_wall_ms());
    if (interrupted < 0) {
        fprintf(stderr, "pinmeter: %s: cannot recover the ledger\n", cfg->ledger);
        config_free(cfg);
        rates_free(rates);
        goto out;
    }
    if (interrupted > 0)
        base_log("%lld request(s) were in flight when pinmeter last stopped: marked interrupted "
                "and charged at their reservation", (long long)interrupted);
    snap_t *sn = snap_build(&app, cfg, rates, err, sizeof err);
    if (!sn) { fprintf(stderr, "pinmeter: %s\n", err); goto out; }
    atomic_store(&app.snap, sn);
    budget_start(app.budget, 3000);    /* the shared store: first sync, or say why not */
    if (ledger_writer_start(app.ledger) != 0) {
        fprintf(stderr, "pinmeter: cannot start the ledger writer\n");
        goto out;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(app.loop = loop_new()) ||
        !(app.up = upstream_start(&app))) {
        fprintf(stderr, "pinmeter: cannot start the upstream client\n");
        goto out;
    }
    if (jwt_copy) app.acct = account_start(&app, jwt_copy);
    else if (!sn->passthrough)
        base_log("account sync off (%s not set): only team caps limit spend", jwt_env);

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

    if (server_run(&app, &g_stop, &g_hup, reload) == 0) rc = 0;
    loop_stop(app.loop);
    /* Requests still waiting on the ledger are finished by now or shortly. */
    for (int i = 0; i < 200 && atomic_load(&app.active) > 0; i++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    server_free(app.srv);
    app.srv = NULL;
    account_stop(app.acct);
    app.acct = NULL;
    ledger_close(app.ledger, 5000);
    app.ledger = NULL;
    loop_free(app.loop);
    app.loop = NULL;
    upstream_free(app.up);
    app.up = NULL;
    base_log("stopped");
out:
    account_stop(app.acct);
    loop_stop(app.loop);
    server_free(app.srv);
    loop_free(app.loop);
    upstream_free(app.up);
    if (app.ledger) ledger_close(app.ledger, 0);
    budget_free(app.budget);
    snap_free_all(app_snap(&app));
    for (size_t i = 0; i < app.n_slots; i++) free(app.slot_names[i]);
    free(app.slot_names);
    free(app.slot_period);
    free(app.slot_period_known);
    free(app.llm_key);
    free(jwt_copy);
    return rc;
}

static int cmd_report(args_t *a)
{
    report_opts_t o = {0};
    char err[1024];
    config_t *cfg = NULL;
    if (a->n_ledgers == 0) {
        cfg = config_load(a->config, err, sizeof err);
        if (!cfg) { fprintf(stderr, "pinmeter: %s\n", err); return 1; }
        a->ledgers[a->n_ledgers++] = cfg->ledger;
    }
    o.ledgers = a->ledgers;
    o.n_ledgers = a->n_ledgers;
    o.since_ms = 0;
    o.until_ms = INT64_MAX;
    o.by = LEDGER_BY_TEAM | LEDGER_BY_MODEL;
    int rc = 1;
    if (a->since && report_parse_day(a->since, &o.since_ms) != 0) {
        fprintf(stderr, "pinmeter: --since wants YYYY-MM-DD, got '%s'\n", a->since);
        goto out;
    }
    if (a->until) {
        if (report_parse_day(a->until, &o.until_ms) != 0) {
            fprintf(stderr, "pinmeter: --until wants YYYY-MM-DD, got '%s'\n", a->until);
            goto out;
        }
        o.until_ms += 86400000LL;   /* inclusive of the whole day */
    }
    if (a->by && (o.by = report_parse_by(a->by)) < 0) {
        fprintf(stderr, "pinmeter: --by wants team, key, model or day (comma-separated), "
                "got '%s'\n", a->by);
        goto out;
    }
    if (a->format) {
        if (strcmp(a->format, "table") == 0) o.format = REPORT_TABLE;
        else if (strcmp(a->format, "csv") == 0) o.format = REPORT_CSV;
        else if (strcmp(a->format, "json") == 0) o.format = REPORT_JSON;
        else {
            fprintf(stderr, "pinmeter: --format wants table, csv or json, got '%s'\n", a->format);
            goto out;
        }
    }
    if (report_write(&o, stdout, err, sizeof err) != 0) {
        fprintf(stderr, "pinmeter: %s\n", err);
        goto out;
    }
    rc = 0;
out:
    config_free(cfg);
    return rc;
}

static int cmd_keygen(const args_t *a)
{
    if (!a->team || !*a->team) {
        fprintf(stderr, "pinmeter: keygen needs --team NAME\n");
        return 1;
    }
    char key[KEYS_NEW_MAX], hex[65];
    unsigned char sha[32];
    if (keys_generate(key) != 0) {
        fprintf(stderr, "pinmeter: the random number generator failed\n");
        return 1;
    }
    keys_sha256(key, strlen(key), sha);
    keys_hex(sha, hex);
    printf("team:   %s\nkey:    %s\nsha256: %s\n\n"
           "Give the key to its holder; it is shown only this once. Add this to the\n"
           "\"keys\" of team \"%s\" in the config (pinmeter stores only the hash):\n"
           "  {\"id\": \"%s\", \"sha256\": \"%s\"}\n",
           a->team, key, hex, a->team, a->id ? a->id : "CHOOSE-AN-ID", hex);
    return 0;
}

static int cmd_check_config(const args_t *a)
{
    char err[1024];
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }
    rates_t *r = load_rates(cfg, err, sizeof err);
    if (!r) { fprintf(stderr, "%s\n", err); config_free(cfg); return 1; }
    size_t keys = 0;
    for (size_t i = 0; i < cfg->n_teams; i++) keys += cfg->teams[i].n_keys;
    printf("%s: ok (%zu team(s), %zu key(s), %zu priced model(s)%s)\n", a->config,
           cfg->n_teams, keys, rates_count(r), cfg->n_teams ? "" : ", passthrough mode");
    rates_free(r);
    config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("pinmeter %s\n", PINMETER_VERSION);
        return 0;
    }
    args_t a;
    int pr = parse_args(argc - 1, argv + 1, &a);
    if (pr != 0) return pr > 0 ? 0 : 2;
    if (strcmp(cmd, "serve") == 0) return cmd_serve(&a);
    if (strcmp(cmd, "report") == 0) return cmd_report(&a);
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(&a);
    if (strcmp(cmd, "check-config") == 0) return cmd_check_config(&a);
    fprintf(stderr, "pinmeter: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
