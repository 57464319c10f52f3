/* main: the pinmeter command line — serve (serve.c), report (report.c),
 * keygen, check-config, alert test (alerts.h), rates sync (ratesync.h),
 * topup (topup.h), reconcile (reconcile.h) — and its options. */
#include "alerts.h"
#include "config.h"
#include "keys.h"
#include "ledger.h"
#include "ratesync.h"
#include "reconcile.h"
#include "report.h"
#include "serve.h"
#include "topup.h"
#include "utc.h"
#include "version.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONFIG "conf/pinmeter.json"

static void usage(FILE *f)
{
    fprintf(f,
"pinmeter %s - a metering proxy for Pinata Inference\n"
"\n"
"usage:\n"
"  pinmeter serve [-c FILE] [--listen HOST:PORT] [--upstream URL] [--ledger PATH]\n"
"  pinmeter report [-c FILE] [--ledger PATH]... [--since DATE|TIME] [--until DATE|TIME]\n"
"                  [--by team|key|model|day|hour[,...]] [--team NAME] [--key ID]\n"
"                  [--model MODEL] [--format table|csv|json|html]\n"
"  pinmeter keygen --team NAME [--id ID]\n"
"  pinmeter check-config [-c FILE]\n"
"  pinmeter alert test [-c FILE]\n"
"  pinmeter rates sync [-c FILE] [--from URL] [--dry-run]\n"
"  pinmeter topup show|disable [-c FILE]\n"
"  pinmeter topup set [-c FILE] --threshold N|null --amount N|null\n"
"  pinmeter reconcile [-c FILE] [--since DATE|TIME] [--until DATE|TIME]\n"
"                     [--format table|csv|json]\n"
"  pinmeter --help | --version\n"
"\n"
"DATE is YYYY-MM-DD, a whole UTC day (--until includes it); TIME is an RFC 3339 UTC\n"
"instant like 2026-12-01T10:00:00Z; the range is [since, until).\n"
"The default config is %s. Each command takes --help.\n",
            PINMETER_VERSION, DEFAULT_CONFIG);
}

enum { OPT_LISTEN = 1000, OPT_UPSTREAM, OPT_LEDGER, OPT_SINCE, OPT_UNTIL, OPT_BY,
       OPT_FORMAT, OPT_TEAM, OPT_ID, OPT_KEY, OPT_MODEL, OPT_FROM, OPT_DRY_RUN,
       OPT_THRESHOLD, OPT_AMOUNT };

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
    {"key", required_argument, NULL, OPT_KEY},
    {"model", required_argument, NULL, OPT_MODEL},
    {"from", required_argument, NULL, OPT_FROM},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"threshold", required_argument, NULL, OPT_THRESHOLD},
    {"amount", required_argument, NULL, OPT_AMOUNT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

typedef struct args {
    const char *config, *listen, *upstream, *since, *until, *by, *format, *team, *id;
    const char *key, *model, *from, *threshold, *amount;
    int dry_run;
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
        case OPT_KEY: a->key = optarg; break;
        case OPT_MODEL: a->model = optarg; break;
        case OPT_FROM: a->from = optarg; break;
        case OPT_DRY_RUN: a->dry_run = 1; break;
        case OPT_THRESHOLD: a->threshold = optarg; break;
        case OPT_AMOUNT: a->amount = optarg; break;
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

static int cmd_serve(const args_t *a)
{
    serve_opts_t o = { .config = a->config, .listen = a->listen, .upstream = a->upstream,
                       .ledger = a->n_ledgers ? a->ledgers[0] : NULL };
    return serve_run(&o);
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
    o.team = a->team;
    o.key = a->key;
    o.model = a->model;
    int rc = 1;
    /* a date as --until is the end of that whole day */
    if (a->since && utc_parse_bound(a->since, 0, &o.since_ms) != 0) {
        fprintf(stderr, "pinmeter: --since wants YYYY-MM-DD or an RFC 3339 UTC time like "
                "2026-12-01T10:00:00Z, got '%s'\n", a->since);
        goto out;
    }
    if (a->until && utc_parse_bound(a->until, 1, &o.until_ms) != 0) {
        fprintf(stderr, "pinmeter: --until wants YYYY-MM-DD or an RFC 3339 UTC time like "
                "2026-12-01T10:00:00Z, got '%s'\n", a->until);
        goto out;
    }
    if (a->by && (o.by = report_parse_by(a->by)) < 0) {
        fprintf(stderr, "pinmeter: --by wants team, key, model, day or hour (comma-separated), "
                "got '%s'\n", a->by);
        goto out;
    }
    if (a->format) {
        if (strcmp(a->format, "table") == 0) o.format = REPORT_TABLE;
        else if (strcmp(a->format, "csv") == 0) o.format = REPORT_CSV;
        else if (strcmp(a->format, "json") == 0) o.format = REPORT_JSON;
        else if (strcmp(a->format, "html") == 0) o.format = REPORT_HTML;
        else {
            fprintf(stderr, "pinmeter: --format wants table, csv, json or html, got '%s'\n",
                    a->format);
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

/* alert test: one alert_test event to the configured receiver. */
static int cmd_alert_test(const args_t *a)
{
    char err[1024];
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }
    int rc = alerts_cli_test(cfg, stdout, stderr);
    config_free(cfg);
    return rc;
}

/* rates sync: Pinata's live prices into the rates file, once. */
static int cmd_rates_sync(const args_t *a)
{
    char err[1024];
    if (a->from && strncmp(a->from, "http://", 7) != 0 && strncmp(a->from, "https://", 8) != 0) {
        fprintf(stderr, "pinmeter: rates sync: --from wants an http:// or https:// URL\n");
        return 1;
    }
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }
    int rc = ratesync_cli(cfg, a->from, a->dry_run, stdout, stderr);
    config_free(cfg);
    return rc;
}

/* topup show|set|disable: Pinata's auto top-up settings, with the JWT. */
static int cmd_topup(const char *sub, const args_t *a)
{
    char err[1024];
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }
    int rc = topup_cli(cfg, sub, a->threshold, a->amount, stdout, stderr);
    config_free(cfg);
    return rc;
}

/* reconcile: Pinata's spend against the ledger's charges, per interval
 * between two account syncs, from the config's ledger (read-only). */
static int cmd_reconcile(const args_t *a)
{
    char err[1024];
    int rc = 1;
    ledger_t *l = NULL;
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "pinmeter: %s\n", err); return 1; }
    reconcile_opts_t o = { .since_ms = INT64_MIN, .until_ms = INT64_MAX,
                           .has_since = a->since != NULL, .has_until = a->until != NULL,
                           .lookback_ms = reconcile_lookback_ms(cfg->timeout_s) };
    if (a->since && utc_parse_bound(a->since, 0, &o.since_ms) != 0) {
        fprintf(stderr, "pinmeter: --since wants YYYY-MM-DD or an RFC 3339 UTC time like "
                "2026-12-01T10:00:00Z, got '%s'\n", a->since);
        goto out;
    }
    if (a->until && utc_parse_bound(a->until, 1, &o.until_ms) != 0) {
        fprintf(stderr, "pinmeter: --until wants YYYY-MM-DD or an RFC 3339 UTC time like "
                "2026-12-01T10:00:00Z, got '%s'\n", a->until);
        goto out;
    }
    if (a->format && strcmp(a->format, "table") == 0) o.format = RECONCILE_TABLE;
    else if (a->format && strcmp(a->format, "csv") == 0) o.format = RECONCILE_CSV;
    else if (a->format && strcmp(a->format, "json") == 0) o.format = RECONCILE_JSON;
    else if (a->format) {
        fprintf(stderr, "pinmeter: --format wants table, csv or json, got '%s'\n", a->format);
        goto out;
    }
    if (a->by || a->team || a->key || a->model || a->n_ledgers || a->threshold || a->amount ||
        a->from || a->dry_run) {
        fprintf(stderr, "pinmeter: reconcile takes -c, --since, --until and --format only\n");
        goto out;
    }
    if (!(l = ledger_open_ro(cfg->ledger, err, sizeof err))) {
        fprintf(stderr, "pinmeter: %s\n", err);
        goto out;
    }
    o.ledger = l;
    if (reconcile_write(&o, stdout, err, sizeof err) != 0) {
        fprintf(stderr, "pinmeter: %s\n", err);
        goto out;
    }
    rc = 0;
out:
    if (l) ledger_close(l, 0);
    config_free(cfg);
    return rc;
}

static int cmd_check_config(const args_t *a)
{
    char err[1024];
    config_t *cfg = config_load(a->config, err, sizeof err);
    if (!cfg) { fprintf(stderr, "%s\n", err); return 1; }
    rates_t *r = config_load_rates(cfg, err, sizeof err);
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
    if (strcmp(cmd, "alert") == 0) {           /* a command with a subcommand */
        if (argc < 3 || strcmp(argv[2], "test") != 0) {
            fprintf(stderr, "pinmeter: alert wants a subcommand: "
                    "pinmeter alert test [-c FILE]\n");
            return 2;
        }
        int pr = parse_args(argc - 2, argv + 2, &a);
        if (pr != 0) return pr > 0 ? 0 : 2;
        return cmd_alert_test(&a);
    }
    if (strcmp(cmd, "rates") == 0) {
        if (argc < 3 || strcmp(argv[2], "sync") != 0) {
            fprintf(stderr, "pinmeter: rates wants a subcommand: "
                    "pinmeter rates sync [-c FILE] [--from URL] [--dry-run]\n");
            return 2;
        }
        int pr = parse_args(argc - 2, argv + 2, &a);
        if (pr != 0) return pr > 0 ? 0 : 2;
        return cmd_rates_sync(&a);
    }
    if (strcmp(cmd, "topup") == 0) {
        const char *sub = argc >= 3 ? argv[2] : "";
        if (strcmp(sub, "show") != 0 && strcmp(sub, "set") != 0 && strcmp(sub, "disable") != 0) {
            fprintf(stderr, "pinmeter: topup wants a subcommand: pinmeter topup show|disable "
                    "[-c FILE], or pinmeter topup set [-c FILE] --threshold N --amount N\n");
            return 2;
        }
        int pr = parse_args(argc - 2, argv + 2, &a);
        if (pr != 0) return pr > 0 ? 0 : 2;
        return cmd_topup(sub, &a);
    }
    int pr = parse_args(argc - 1, argv + 1, &a);
    if (pr != 0) return pr > 0 ? 0 : 2;
    if (strcmp(cmd, "serve") == 0) return cmd_serve(&a);
    if (strcmp(cmd, "reconcile") == 0) return cmd_reconcile(&a);
    if (strcmp(cmd, "report") == 0) return cmd_report(&a);
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(&a);
    if (strcmp(cmd, "check-config") == 0) return cmd_check_config(&a);
    fprintf(stderr, "pinmeter: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
