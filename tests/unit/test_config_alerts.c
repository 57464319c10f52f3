/* Unit tests for the config's "alerts" object and the teams'
 * alert_thresholds: defaults, sorting to parts per million, the list that
 * applies to each team, and every error (each message must name the file
 * and the key path). */
#include "config.h"
#include "t.h"

#include <stdlib.h>

#define H1 "21a3caa6db17b9bf302b20b660909dbbe4da9c7ebf1808ca73ee35a7e68020c0"
#define H2 "fd9985ebcca7d4934333f2d7ef4392342167170c43e7d627bfe5fad5d45b930a"
#define H3 "3b9b3c9df5e1d8dbd0f1ad3b6c4e6f79c0b1a2e3f4d5c6b7a8990a1b2c3d4e5f"

static config_t *parse(const char *json, char *err)
{
    return config_parse(json, strlen(json), "mem.json", err, 512);
}

static void test_absent(void)
{
    char err[512] = "";
    config_t *c = parse("{}", err);
    T_CHECK(c != NULL);
    if (!c) return;
    T_EQ_INT(c->alerts_on, 0);
    T_EQ_INT(c->alert_account_below, -1);
    T_EQ_INT(c->alert_thresholds.n, 0);
    config_free(c);
}

static void test_issue_shape(void)
{
    char err[512] = "";
    config_t *c = parse(
        "{\"alerts\": {\"webhook_url\": \"http://127.0.0.1:9000/pinmeter\","
        " \"secret_env\": \"PINMETER_WEBHOOK_SECRET\", \"thresholds\": [1.0, 0.5, 0.8],"
        " \"account_below\": 20.0},"
        " \"teams\": [{\"name\": \"a\", \"cap\": 5, \"alert_thresholds\": [0.9, 0.25],"
        "              \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\"}]},"
        "            {\"name\": \"b\", \"alert_thresholds\": [],"
        "              \"keys\": [{\"id\": \"k\", \"sha256\": \"" H2 "\"}]},"
        "            {\"name\": \"c\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H3 "\"}]}]}", err);
    T_CHECK(c != NULL);
    if (!c) { fprintf(stderr, "  %s\n", err); return; }
    T_EQ_INT(c->alerts_on, 1);
    T_EQ_STR(c->alert_url, "http://127.0.0.1:9000/pinmeter");
    T_EQ_STR(c->alert_secret_env, "PINMETER_WEBHOOK_SECRET");
    T_EQ_INT(c->alert_thresholds.n, 3);                  /* sorted */
    T_EQ_INT(c->alert_thresholds.ppm[0], 500000);
    T_EQ_INT(c->alert_thresholds.ppm[1], 800000);
    T_EQ_INT(c->alert_thresholds.ppm[2], 1000000);
    T_EQ_INT(c->alert_account_below, 20 * NANOS_PER_CREDIT);
    const alert_thresholds_t *a = config_team_thresholds(c, &c->teams[0]);
    T_EQ_INT(a->n, 2);
    T_EQ_INT(a->ppm[0], 250000);
    T_EQ_INT(a->ppm[1], 900000);
    T_EQ_INT(config_team_thresholds(c, &c->teams[1])->n, 0);     /* [] turns them off */
    T_CHECK(config_team_thresholds(c, &c->teams[2]) == &c->alert_thresholds);
    config_free(c);
}

static void test_defaults(void)
{
    char err[512] = "";
    config_t *c = parse("{\"alerts\": {\"webhook_url\": \"https://hooks.example.com/x?t=1\"}}", err);
    T_CHECK(c != NULL);
    if (!c) { fprintf(stderr, "  %s\n", err); return; }
    T_EQ_INT(c->alerts_on, 1);
    T_EQ_STR(c->alert_secret_env, "");
    T_EQ_INT(c->alert_thresholds.n, 3);
    T_EQ_INT(c->alert_thresholds.ppm[0], 500000);
    T_EQ_INT(c->alert_thresholds.ppm[2], 1000000);
    T_EQ_INT(c->alert_account_below, -1);
    config_free(c);
    c = parse("{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [10, 0.000001],"
              " \"secret_env\": \"\", \"_note\": 1}}", err);
    T_CHECK(c != NULL);
    if (!c) { fprintf(stderr, "  %s\n", err); return; }
    T_EQ_INT(c->alert_thresholds.n, 2);
    T_EQ_INT(c->alert_thresholds.ppm[0], 1);
    T_EQ_INT(c->alert_thresholds.ppm[1], 10000000);
    config_free(c);
}

static void test_errors(void)
{
    static const struct { const char *json, *want; } cases[] = {
        { "{\"alerts\": 1}", "mem.json: alerts: must be an object" },
        { "{\"alerts\": {}}", "mem.json: alerts.webhook_url: missing" },
        { "{\"alerts\": {\"webhook_url\": 5}}", "mem.json: alerts.webhook_url: must be a string" },
        { "{\"alerts\": {\"webhook_url\": \"ftp://h/x\"}}",
          "mem.json: alerts.webhook_url: must start with http:// or https://" },
        { "{\"alerts\": {\"webhook_url\": \"127.0.0.1:9000\"}}",
          "mem.json: alerts.webhook_url: must start with http:// or https://" },
        { "{\"alerts\": {\"webhook_url\": \"http://\"}}", "mem.json: alerts.webhook_url: must name a host" },
        { "{\"alerts\": {\"webhook_url\": \"http:///x\"}}", "mem.json: alerts.webhook_url: must name a host" },
        { "{\"alerts\": {\"webhook_url\": \"http://a b\"}}",
          "mem.json: alerts.webhook_url: must not contain spaces or control characters" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"secret_env\": \"BAD-NAME\"}}",
          "mem.json: alerts.secret_env: must be an environment variable name" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"secret_env\": 3}}",
          "mem.json: alerts.secret_env: must be a string" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": 0.5}}",
          "mem.json: alerts.thresholds: must be an array" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [0.5, 0]}}",
          "mem.json: alerts.thresholds[1]: must be a number above 0 and at most 10" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [-0.5]}}",
          "mem.json: alerts.thresholds[0]: must be a number above 0" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [10.5]}}",
          "mem.json: alerts.thresholds[0]: must be a number above 0 and at most 10" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [\"0.5\"]}}",
          "mem.json: alerts.thresholds[0]: must be a number" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [0.0000001]}}",
          "mem.json: alerts.thresholds[0]: too small" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [0.8, 0.5, 0.8]}}",
          "mem.json: alerts.thresholds[2]: duplicate threshold 0.8" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [0.5, 0.5000001]}}",
          "mem.json: alerts.thresholds[1]: duplicate threshold" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"thresholds\": [0.01,0.02,0.03,0.04,0.05,"
          "0.06,0.07,0.08,0.09,0.1,0.11,0.12,0.13,0.14,0.15,0.16,0.17,0.18,0.19,0.2,0.21,0.22,0.23,"
          "0.24,0.25,0.26,0.27,0.28,0.29,0.3,0.31,0.32,0.33]}}",
          "mem.json: alerts.thresholds[32]: at most 32 thresholds" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"account_below\": 0}}",
          "mem.json: alerts.account_below: must be a number of credits above 0" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"account_below\": -3}}",
          "mem.json: alerts.account_below: must be a number of credits above 0" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"account_below\": \"20\"}}",
          "mem.json: alerts.account_below: must be a number of credits above 0" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"account_below\": 1e12}}",
          "mem.json: alerts.account_below: must be a number of credits above 0 (at most 9e9)" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"treshold\": [0.5]}}",
          "mem.json: alerts.treshold: unknown key" },
        { "{\"alerts\": {\"webhook_url\": \"http://h\", \"webhook_url\": \"http://g\"}}",
          "mem.json: alerts.webhook_url: duplicate key" },
        { "{\"teams\": [{\"name\": \"a\", \"alert_thresholds\": [0.5, 11], \"keys\": []}]}",
          "mem.json: teams[0].alert_thresholds[1]: must be a number above 0 and at most 10" },
        { "{\"teams\": [{\"name\": \"a\", \"alert_thresholds\": {}, \"keys\": []}]}",
          "mem.json: teams[0].alert_thresholds: must be an array" },
        { "{\"teams\": [{\"name\": \"a\", \"alert_thresholds\": [1, 1], \"keys\": []}]}",
          "mem.json: teams[0].alert_thresholds[1]: duplicate threshold 1" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "";
        config_t *c = parse(cases[i].json, err);
        if (c || !strstr(err, cases[i].want)) {
            fprintf(stderr, "  case %zu: %s\n    got \"%s\", want \"%s\"\n", i, cases[i].json,
                    c ? "(accepted)" : err, cases[i].want);
            t_cur_failed = 1;
        }
        config_free(c);
    }
}

static void test_url_not_echoed(void)
{
    char err[512] = "";
    config_t *c = parse("{\"alerts\": {\"webhook_url\": \"ftp://h/secret-token-123\"}}", err);
    T_CHECK(c == NULL);
    T_CHECK(strstr(err, "secret-token-123") == NULL);   /* a webhook URL may carry a token */
    config_free(c);
}

static void test_shipped_example(void)
{
    char err[512] = "";
    config_t *c = config_load("conf/pinmeter.example.json", err, sizeof err);
    T_CHECK(c != NULL);
    if (!c) { fprintf(stderr, "  %s\n", err); return; }
    T_EQ_INT(c->alerts_on, 1);
    T_EQ_STR(c->alert_url, "http://127.0.0.1:9000/pinmeter");
    T_EQ_STR(c->alert_secret_env, "PINMETER_WEBHOOK_SECRET");
    T_EQ_INT(c->alert_thresholds.n, 3);
    T_EQ_INT(c->alert_account_below, 20 * NANOS_PER_CREDIT);
    T_EQ_INT(c->teams[1].has_alert_thresholds, 1);
    T_EQ_INT(config_team_thresholds(c, &c->teams[1])->n, 1);
    T_EQ_INT(config_team_thresholds(c, &c->teams[1])->ppm[0], 900000);
    config_free(c);
}

int main(void)
{
    T_RUN(test_absent);
    T_RUN(test_issue_shape);
    T_RUN(test_defaults);
    T_RUN(test_errors);
    T_RUN(test_url_not_echoed);
    T_RUN(test_shipped_example);
    return t_summary("config_alerts");
}
