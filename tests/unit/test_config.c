/* Unit tests for config: defaults, the full example shape, comment keys,
 * every error path (each message must name the file and the key path), the
 * shipped conf files, glob matching and periods. Run from the repo root. */
#include "config.h"
#include "t.h"
#include <stdlib.h>
#include <unistd.h>

#include <stdlib.h>

#define H1 "21a3caa6db17b9bf302b20b660909dbbe4da9c7ebf1808ca73ee35a7e68020c0"
#define H2 "fd9985ebcca7d4934333f2d7ef4392342167170c43e7d627bfe5fad5d45b930a"
#define H3 "3b9b3c9df5e1d8dbd0f1ad3b6c4e6f79c0b1a2e3f4d5c6b7a8990a1b2c3d4e5f"
#define H4 "4c8a2d7e6f5b4a3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c"

static config_t *parse(const char *json, char *err)
{
    return config_parse(json, strlen(json), "mem.json", err, 512);
}

static void test_defaults(void)
{
    char err[512] = "";
    config_t *c = parse("{}", err);
    T_CHECK(c != NULL);
    if (!c)
        return;
    T_EQ_STR(c->path, "");
    T_EQ_STR(c->listen_host, "127.0.0.1");
    T_EQ_INT(c->listen_port, 8787);
    T_EQ_STR(c->upstream_base, "https://agents.pinata.cloud");
    T_EQ_STR(c->llm_key_env, "PINATA_LLM_KEY");
    T_EQ_INT(c->timeout_s, 600);
    T_EQ_STR(c->ledger, "var/pinmeter.db");
    T_EQ_STR(c->rates_file, "conf/rates.json");
    T_CHECK(c->credits_per_usd == 1.0);
    T_EQ_INT(c->default_max_tokens, 4096);
    T_EQ_INT(c->unknown_reject, 1);
    T_EQ_STR(c->admin_token_env, "PINMETER_ADMIN_TOKEN");
    T_EQ_STR(c->jwt_env, "PINATA_JWT");
    T_EQ_INT(c->sync_s, 30);
    T_EQ_INT(c->rates_sync_s, 0);
    T_EQ_INT(c->max_body, 8388608);
    T_EQ_INT(c->max_connections, 1024);
    T_EQ_INT(c->drain_s, 30);
    T_EQ_INT(c->max_topups_per_day, -1);
    T_EQ_INT(c->drift_alert, -1);
    T_EQ_INT(c->metrics_open, 0);
    T_EQ_INT(c->metrics_key_label, 0);
    T_EQ_INT(c->n_teams, 0);
    T_CHECK(c->teams == NULL);
    config_free(c);
    config_free(NULL);
}

static void test_issue_example(void)
{
    char err[512] = "";
    config_t *c = parse(
        "{\"listen\": \"127.0.0.1:8787\",\n"
        " \"upstream\": {\"base_url\": \"https://agents.pinata.cloud\", \"llm_key_env\": \"PINATA_LLM_KEY\", \"timeout_s\": 600},\n"
        " \"ledger\": \"var/pinmeter.db\", \"rates_file\": \"conf/rates.json\", \"credits_per_usd\": 1.0, \"default_max_tokens\": 4096,\n"
        " \"unknown_model\": \"reject\", \"admin_token_env\": \"PINMETER_ADMIN_TOKEN\", \"account\": {\"jwt_env\": \"PINATA_JWT\", \"sync_s\": 30},\n"
        " \"teams\": [{\"name\": \"research\", \"cap\": 25.0, \"period\": \"month\", \"models\": [\"anthropic/*\"],"
        " \"keys\": [{\"id\": \"alice\", \"sha256\": \"" H1 "\"}]}]}", err);
    T_CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    T_EQ_INT(c->n_teams, 1);
    T_EQ_STR(c->teams[0].name, "research");
    T_EQ_INT(c->teams[0].cap, 25 * NANOS_PER_CREDIT);
    T_EQ_INT(c->teams[0].period, PERIOD_MONTH);
    T_EQ_INT(c->teams[0].n_models, 1);
    T_EQ_STR(c->teams[0].models[0], "anthropic/*");
    T_EQ_INT(c->teams[0].n_keys, 1);
    T_EQ_STR(c->teams[0].keys[0].id, "alice");
    T_EQ_INT(c->teams[0].keys[0].sha256[0], 0x21);
    T_EQ_INT(c->teams[0].keys[0].sha256[31], 0xc0);
    T_CHECK(config_model_allowed(&c->teams[0], "anthropic/claude-sonnet-4-6"));
    T_CHECK(!config_model_allowed(&c->teams[0], "openai/gpt-5"));
    config_free(c);
}

static void test_values(void)
{
    char err[512] = "";
    /* unknown_model comes before credits_per_usd: converted after the walk */
    config_t *c = parse(
        "{\"_comment\": [1, {\"anything\": true}], \"// also\": 1,"
        " \"listen\": \"[::1]:9000\","
        " \"upstream\": {\"_comment\": \"x\", \"base_url\": \"http://localhost:9999//\"},"
        " \"unknown_model\": {\"input_usd_per_1m_tokens\": 2, \"output_usd_per_1m_tokens\": 8},"
        " \"credits_per_usd\": 2.5, \"admin_token_env\": \"\", \"max_body_bytes\": 1024,"
        " \"max_connections\": 1, \"drain_s\": 0, \"default_max_tokens\": 1000000000,"
        " \"account\": {\"max_topups_per_day\": 3, \"drift_alert\": 1.25},"
        " \"teams\": [{\"name\": \"a.b_c-D\", \"cap\": 0, \"period\": \"none\","
        "   \"keys\": [{\"id\": \"k3\", \"sha256\": \"" H3 "\", \"cap\": 1.5, \"rpm\": 60,"
        "   \"max_inflight\": 4, \"max_spend_per_hour\": 1.0}], \"rpm\": 600, \"tpm\": 400000,"
        "   \"max_inflight\": 32, \"max_spend_per_minute\": 0.5, \"max_spend_per_hour\": 5.0,"
        "   \"on_insufficient\": \"clamp\", \"clamp_min_tokens\": 128},"
        "  {\"name\": \"b\", \"cap\": null, \"period\": \"day\","
        "   \"keys\": [{\"id\": \"k\", \"sha256\": \"" H2 "\", \"_note\": 1}], \"_c\": 0},"
        "  {\"name\": \"default\", \"keys\": [{\"id\": \"d\", \"sha256\": \"" H4 "\"}]}]}", err);
    T_CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    T_EQ_STR(c->listen_host, "::1");
    T_EQ_INT(c->listen_port, 9000);
    T_EQ_STR(c->upstream_base, "http://localhost:9999");
    T_EQ_INT(c->unknown_reject, 0);
    T_EQ_INT(c->unknown_rate.input, 5000000000LL);
    T_EQ_INT(c->unknown_rate.output, 20000000000LL);
    T_EQ_INT(c->unknown_rate.cache_read, 5000000000LL);  /* absent = input */
    T_EQ_STR(c->admin_token_env, "");
    T_EQ_INT(c->max_body, 1024);
    T_EQ_INT(c->drain_s, 0);
    T_EQ_INT(c->default_max_tokens, 1000000000LL);
    T_EQ_INT(c->max_topups_per_day, 3);
    T_EQ_INT(c->drift_alert, 1250000000LL);
    T_EQ_INT(c->n_teams, 3);
    T_EQ_INT(c->teams[0].cap, 0);
    T_EQ_INT(c->teams[0].period, PERIOD_NONE);
    T_EQ_INT(c->teams[0].n_keys, 1);
    T_EQ_INT(c->teams[0].keys[0].cap, 1500000000LL);
    T_EQ_INT(c->teams[0].keys[0].lim.rpm, 60);
    T_EQ_INT(c->teams[0].keys[0].lim.max_inflight, 4);
    T_EQ_INT(c->teams[0].keys[0].lim.spend_hour, 1000000000LL);
    T_EQ_INT(c->teams[0].keys[0].lim.tpm, 0);
    T_EQ_INT(c->teams[0].lim.rpm, 600);
    T_EQ_INT(c->teams[0].lim.tpm, 400000);
    T_EQ_INT(c->teams[0].lim.max_inflight, 32);
    T_EQ_INT(c->teams[0].lim.spend_minute, 500000000LL);
    T_EQ_INT(c->teams[0].lim.spend_hour, 5000000000LL);
    T_EQ_INT(c->teams[0].clamp, 1);
    T_EQ_INT(c->teams[0].clamp_min_tokens, 128);
    T_EQ_INT(c->teams[1].keys[0].cap, -1);               /* absent = no key cap */
    T_EQ_INT(c->teams[1].clamp, 0);                      /* default reject */
    T_EQ_INT(c->teams[1].clamp_min_tokens, 256);
    T_CHECK(c->teams[0].models == NULL);
    T_CHECK(config_model_allowed(&c->teams[0], "anything/at-all"));
    T_EQ_INT(c->teams[1].cap, -1);
    T_EQ_INT(c->teams[1].period, PERIOD_DAY);
    T_EQ_INT(c->teams[1].keys[0].sha256[0], 0xfd);
    T_EQ_INT(c->teams[2].cap, -1);                       /* absent = no cap */
    T_EQ_INT(c->teams[2].period, PERIOD_MONTH);          /* default */
    config_free(c);

    c = parse("{\"metrics_auth\": \"none\", \"metrics_key_label\": true}", err);
    T_CHECK(c != NULL);
    if (c) {
        T_EQ_INT(c->metrics_open, 1);
        T_EQ_INT(c->metrics_key_label, 1);
    }
    config_free(c);
    c = parse("{\"metrics_auth\": \"admin\", \"metrics_key_label\": false}", err);
    T_CHECK(c != NULL);
    if (c) {
        T_EQ_INT(c->metrics_open, 0);
        T_EQ_INT(c->metrics_key_label, 0);
    }
    config_free(c);

    c = parse("{\"listen\": \"localhost:65535\", \"upstream\": {\"base_url\": \"https://x.example/v1/\"}}", err);
    T_CHECK(c != NULL);
    if (c) {
        T_EQ_STR(c->listen_host, "localhost");
        T_EQ_INT(c->listen_port, 65535);
        T_EQ_STR(c->upstream_base, "https://x.example/v1");
    }
    config_free(c);
}

/* Every bad config fails with "mem.json: KEY: why"; want is "KEY: why". */
static void test_errors(void)
{
    static const struct { const char *json, *want; } cases[] = {
        { "{", "line 1, column 1: invalid JSON" },
        { "{\n  \"listen\": tru\n}", "line 2, column 13: invalid JSON" },
        { "{} x", "line 1, column 4: unexpected data after the JSON value" },
        { "[]", "top level: must be a JSON object" },
        { "{\"listn\": \"x\"}", "listn: unknown key" },
        { "{\"drain_s\": 1, \"drain_s\": 2}", "drain_s: duplicate key" },
        { "{\"listen\": 8787}", "listen: must be a string" },
        { "{\"listen\": \"127.0.0.1\"}", "listen: must be \"HOST:PORT\"" },
        { "{\"listen\": \"127.0.0.1:0\"}", "listen: port must be" },
        { "{\"listen\": \"127.0.0.1:65536\"}", "listen: port must be" },
        { "{\"listen\": \"127.0.0.1:99999999999999999999\"}", "listen: port must be" },
        { "{\"listen\": \"h:8a\"}", "listen: port must be" },
        { "{\"listen\": \"h:\"}", "listen: port must be" },
        { "{\"listen\": \":80\"}", "listen: host is empty" },
        { "{\"listen\": \"[]:80\"}", "listen: host is empty" },
        { "{\"listen\": \"::1:80\"}", "listen: bad host" },
        { "{\"listen\": \"[::1]\"}", "listen: an IPv6 host" },
        { "{\"upstream\": []}", "upstream: must be an object" },
        { "{\"upstream\": {\"base_url\": \"ftp://x\"}}", "upstream.base_url: must start with http:// or https://" },
        { "{\"upstream\": {\"base_url\": \"agents.pinata.cloud\"}}", "upstream.base_url: must start with" },
        { "{\"upstream\": {\"base_url\": \"https:///\"}}", "upstream.base_url: must be a URL with a host" },
        { "{\"upstream\": {\"base_url\": \"https://a b\"}}", "upstream.base_url: must not contain spaces" },
        { "{\"upstream\": {\"base_url\": 1}}", "upstream.base_url: must be a string" },
        { "{\"upstream\": {\"timeout_s\": 0}}", "upstream.timeout_s: must be an integer from 1 to 86400" },
        { "{\"upstream\": {\"timeout_s\": 86401}}", "upstream.timeout_s: must be an integer" },
        { "{\"upstream\": {\"timeout_s\": 1.5}}", "upstream.timeout_s: must be an integer" },
        { "{\"upstream\": {\"timeout_s\": \"600\"}}", "upstream.timeout_s: must be an integer" },
        { "{\"upstream\": {\"llm_key_env\": \"\"}}", "upstream.llm_key_env: must not be empty" },
        { "{\"upstream\": {\"llm_key_env\": \"BAD-NAME\"}}", "upstream.llm_key_env: must be an environment variable name" },
        { "{\"upstream\": {\"llm_key\": \"X\"}}", "upstream.llm_key: unknown key" },
        { "{\"ledger\": \"\"}", "ledger: must not be empty" },
        { "{\"ledger\": 1}", "ledger: must be a string" },
        { "{\"rates_file\": null}", "rates_file: must be a string" },
        { "{\"rates_sync_s\": -1}", "rates_sync_s: must be an integer from 0" },
        { "{\"rates_sync_s\": 1.5}", "rates_sync_s: must be an integer" },
        { "{\"rates_sync_s\": 604801}", "rates_sync_s: must be an integer from 0 to 604800" },
        { "{\"rates_sync_s\": \"3600\"}", "rates_sync_s: must be an integer" },
        { "{\"credits_per_usd\": 0}", "credits_per_usd: must be a number > 0" },
        { "{\"credits_per_usd\": -2}", "credits_per_usd: must be a number > 0" },
        { "{\"credits_per_usd\": \"1\"}", "credits_per_usd: must be a number > 0" },
        { "{\"credits_per_usd\": 1e999}", "credits_per_usd: must be a number > 0" },
        { "{\"default_max_tokens\": 0}", "default_max_tokens: must be an integer from 1" },
        { "{\"default_max_tokens\": 1e10}", "default_max_tokens: must be an integer" },
        { "{\"unknown_model\": \"allow\"}", "unknown_model: must be \"reject\" or an object" },
        { "{\"unknown_model\": {\"input_usd_per_1m_tokens\": 1}}", "unknown_model.output_usd_per_1m_tokens: missing" },
        { "{\"unknown_model\": {\"input_usd_per_1m_tokens\": -1, \"output_usd_per_1m_tokens\": 1}}",
          "unknown_model.input_usd_per_1m_tokens: must be a number from 0" },
        { "{\"unknown_model\": {\"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1, \"cache_read_usd_per_1m_tokens\": \"0.1\"}}",
          "unknown_model.cache_read_usd_per_1m_tokens: must be a number" },
        { "{\"unknown_model\": {\"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1, \"extra\": 1}}",
          "unknown_model.extra: unknown key" },
        { "{\"credits_per_usd\": 1e4, \"unknown_model\": {\"input_usd_per_1m_tokens\": 1e6, \"output_usd_per_1m_tokens\": 1}}",
          "unknown_model: price too large" },
        { "{\"admin_token_env\": 5}", "admin_token_env: must be a string" },
        { "{\"admin_token_env\": \"1X\"}", "admin_token_env: must be an environment variable name" },
        { "{\"account\": 1}", "account: must be an object" },
        { "{\"account\": {\"sync_s\": 0}}", "account.sync_s: must be an integer from 1" },
        { "{\"account\": {\"jwt_env\": \"\"}}", "account.jwt_env: must not be empty" },
        { "{\"account\": {\"jwt\": \"X\"}}", "account.jwt: unknown key" },
        { "{\"account\": {\"max_topups_per_day\": -1}}",
          "account.max_topups_per_day: must be an integer from 0" },
        { "{\"account\": {\"max_topups_per_day\": 2.5}}",
          "account.max_topups_per_day: must be an integer" },
        { "{\"account\": {\"drift_alert\": 0}}",
          "account.drift_alert: must be a number of credits from more than 0" },
        { "{\"account\": {\"drift_alert\": \"1\"}}", "account.drift_alert: must be a number" },
        { "{\"max_body_bytes\": 10}", "max_body_bytes: must be an integer from 1024" },
        { "{\"max_connections\": 0}", "max_connections: must be an integer from 1" },
        { "{\"drain_s\": -1}", "drain_s: must be an integer from 0" },
        { "{\"metrics_auth\": \"token\"}", "metrics_auth: must be \"admin\" (the admin token) or \"none\"" },
        { "{\"metrics_auth\": true}", "metrics_auth: must be \"admin\"" },
        { "{\"metrics_key_label\": \"yes\"}", "metrics_key_label: must be" },
        { "{\"metrics_keys\": true}", "metrics_keys: unknown key" },
        { "{\"teams\": {}}", "teams: must be an array" },
        { "{\"teams\": [5]}", "teams[0]: must be an object" },
        { "{\"teams\": [{}]}", "teams[0].name: missing" },
        { "{\"teams\": [{\"name\": \"\"}]}", "teams[0].name: must not be empty" },
        { "{\"teams\": [{\"name\": \"a b\"}]}", "teams[0].name: may contain only" },
        { "{\"teams\": [{\"name\": \"a/b\"}]}", "teams[0].name: may contain only" },
        { "{\"teams\": [{\"name\": \"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\"}]}",
          "teams[0].name: too long (max 63 bytes)" },
        { "{\"teams\": [{\"name\": \"a\"}, {\"name\": \"b\"}, {\"name\": \"a\"}]}",
          "teams[2].name: duplicate of teams[0].name" },
        { "{\"teams\": [{\"name\": \"a\", \"limit\": 5}]}", "teams[0].limit: unknown key" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": []}]}",
          "teams[0].keys: team \"a\" has no keys, so nobody can use it" },
        { "{\"teams\": [{\"name\": \"a\"}]}", "teams[0].keys: team \"a\" has no keys" },
        { "{\"teams\": [{\"name\": \"a\", \"rpm\": 0}]}", "teams[0].rpm: must be an integer from 1" },
        { "{\"teams\": [{\"name\": \"a\", \"max_spend_per_minute\": 0}]}",
          "teams[0].max_spend_per_minute: must be a number of credits from more than 0" },
        { "{\"teams\": [{\"name\": \"a\", \"on_insufficient\": \"wait\"}]}",
          "teams[0].on_insufficient: must be \"reject\" or \"clamp\"" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\","
          " \"cap\": -2}]}]}", "teams[0].keys[0].cap: must be a number of credits" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\","
          " \"tpm\": 1.5}]}]}", "teams[0].keys[0].tpm: must be an integer" },
        { "{\"teams\": [{\"name\": \"a\", \"cap\": -1}]}", "teams[0].cap: must be a number of credits" },
        { "{\"teams\": [{\"name\": \"a\", \"cap\": \"5\"}]}", "teams[0].cap: must be a number" },
        { "{\"teams\": [{\"name\": \"a\", \"cap\": 1e10}]}", "teams[0].cap: must be a number" },
        { "{\"teams\": [{\"name\": \"a\", \"period\": \"year\"}]}", "teams[0].period: must be \"day\"" },
        { "{\"teams\": [{\"name\": \"a\", \"period\": 30}]}", "teams[0].period: must be" },
        { "{\"teams\": [{\"name\": \"a\", \"models\": []}]}", "teams[0].models: must not be empty" },
        { "{\"teams\": [{\"name\": \"a\", \"models\": \"x/*\"}]}", "teams[0].models: must be an array" },
        { "{\"teams\": [{\"name\": \"a\", \"models\": [\"x\", \"\"]}]}", "teams[0].models[1]: must be a non-empty string" },
        { "{\"teams\": [{\"name\": \"a\", \"models\": [\"x\", 1]}]}", "teams[0].models[1]: must be a non-empty string" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": {}}]}", "teams[0].keys: must be an array" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [\"" H1 "\"]}]}", "teams[0].keys[0]: must be an object" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"sha256\": \"" H1 "\"}]}]}", "teams[0].keys[0].id: missing" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\"}]}]}", "teams[0].keys[0].sha256: missing" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"\", \"sha256\": \"" H1 "\"}]}]}",
          "teams[0].keys[0].id: must not be empty" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"abc\"}]}]}",
          "teams[0].keys[0].sha256: must be 64 hex characters" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "0\"}]}]}",
          "teams[0].keys[0].sha256: must be 64 hex characters" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": "
          "\"g1a3caa6db17b9bf302b20b660909dbbe4da9c7ebf1808ca73ee35a7e68020c0\"}]}]}",
          "teams[0].keys[0].sha256: must be 64 hex characters" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": 5}]}]}",
          "teams[0].keys[0].sha256: must be 64 hex characters" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\", \"key\": \"x\"}]}]}",
          "teams[0].keys[0].key: unknown key" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\"},"
          " {\"id\": \"k\", \"sha256\": \"" H2 "\"}]}]}", "teams[0].keys[1].id: duplicate of teams[0].keys[0].id" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H1 "\"},"
          " {\"id\": \"j\", \"sha256\": \"" H1 "\"}]}]}", "teams[0].keys[1].sha256: same key as teams[0].keys[0]" },
        { "{\"teams\": [{\"name\": \"a\", \"keys\": [{\"id\": \"k\", \"sha256\": \"" H2 "\"}]},"
          " {\"name\": \"b\", \"keys\": [{\"id\": \"x\", \"sha256\": \"" H1 "\"},"
          " {\"id\": \"k\", \"sha256\": \"FD9985EBCCA7D4934333F2D7EF4392342167170C43E7D627BFE5FAD5D45B930A\"}]}]}",
          "teams[1].keys[1].sha256: same key as teams[0].keys[0]" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[512] = "", want[512];
        config_t *c = parse(cases[i].json, err);
        snprintf(want, sizeof want, "mem.json: %s", cases[i].want);
        T_CHECK(c == NULL);
        if (strncmp(err, want, strlen(want)) != 0) {
            fprintf(stderr, "  case %zu: got \"%s\"\n           want \"%s...\"\n", i, err, want);
            T_CHECK(0);
        }
        config_free(c);
    }
}

static void test_load(void)
{
    char err[512] = "";
    config_t *c = config_load("tests/unit/no-such-config.json", err, sizeof err);
    T_CHECK(c == NULL);
    T_EQ_STR(err, "tests/unit/no-such-config.json: cannot read: No such file or directory");
    c = config_load("tests/unit", err, sizeof err);     /* a directory */
    T_CHECK(c == NULL);
    T_CHECK(strncmp(err, "tests/unit: cannot read: ", 25) == 0);
}

static void test_shipped_default(void)
{
    char err[512] = "";
    config_t *c = config_load("conf/pinmeter.json", err, sizeof err);
    T_CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    T_EQ_STR(c->path, "conf/pinmeter.json");
    T_EQ_INT(c->n_teams, 0);                             /* passthrough */
    T_EQ_STR(c->listen_host, "127.0.0.1");
    T_EQ_INT(c->listen_port, 8787);
    T_EQ_STR(c->upstream_base, "https://agents.pinata.cloud");
    T_EQ_STR(c->ledger, "var/pinmeter.db");
    T_EQ_STR(c->rates_file, "conf/rates.json");
    T_EQ_INT(c->rates_sync_s, 3600);                     /* prices from Pinata, hourly */
    T_EQ_INT(c->unknown_reject, 1);
    config_free(c);
}

static void test_shipped_example(void)
{
    char err[512] = "";
    config_t *c = config_load("conf/pinmeter.example.json", err, sizeof err);
    T_CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    T_EQ_INT(c->n_teams, 2);
    T_EQ_INT(c->rates_sync_s, 3600);
    T_EQ_STR(c->teams[0].name, "research");
    T_EQ_INT(c->teams[0].cap, 25 * NANOS_PER_CREDIT);
    T_EQ_INT(c->teams[0].n_keys, 2);
    T_EQ_STR(c->teams[1].name, "support");
    T_EQ_INT(c->teams[1].period, PERIOD_DAY);
    T_EQ_INT(c->teams[1].cap, 2 * NANOS_PER_CREDIT);
    T_CHECK(config_model_allowed(&c->teams[1], "anthropic/claude-haiku-4-5"));
    T_CHECK(config_model_allowed(&c->teams[1], "openai/gpt-5-mini"));
    T_CHECK(!config_model_allowed(&c->teams[1], "openai/gpt-5"));
    config_free(c);
}

static void test_glob(void)
{
    static const struct { const char *p, *s; int want; } cases[] = {
        { "anthropic/*", "anthropic/claude-sonnet-4-6", 1 },
        { "anthropic/*", "anthropic/", 1 },
        { "anthropic/*", "anthropic", 0 },
        { "anthropic/*", "openai/gpt-5", 0 },
        { "*", "", 1 },
        { "*", "a/b/c", 1 },
        { "", "", 1 },
        { "", "a", 0 },
        { "openai/gpt-5", "openai/gpt-5", 1 },
        { "openai/gpt-5", "openai/gpt-5-mini", 0 },
        { "openai/gpt-5*", "openai/gpt-5-mini", 1 },
        { "*/gpt-*-mini", "openai/gpt-5-mini", 1 },
        { "*/gpt-*-mini", "openai/gpt-5-mini-x", 0 },
        { "*sonnet*", "anthropic/claude-sonnet-4-6", 1 },
        { "a*b*c", "aXbYbZc", 1 },
        { "a*b*c", "aXbYbZ", 0 },
        { "**", "x", 1 },
        { "a*", "A", 0 },                                /* case-sensitive */
    };
    char big[4097];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (config_glob_match(cases[i].p, cases[i].s) != cases[i].want) {
            fprintf(stderr, "  glob(\"%s\", \"%s\") != %d\n", cases[i].p, cases[i].s, cases[i].want);
            T_CHECK(0);
        }
    /* pathological for a backtracking matcher; linear-ish here */
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    T_EQ_INT(config_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", big), 0);
    T_EQ_INT(config_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*", big), 1);
    T_EQ_INT(config_glob_match(NULL, "a"), 0);
}

static void test_period(void)
{
    period_t p = PERIOD_DAY;
    T_EQ_INT(config_period_parse("month", &p), 0);
    T_EQ_INT(p, PERIOD_MONTH);
    T_EQ_INT(config_period_parse("week", &p), 0);
    T_EQ_INT(p, PERIOD_WEEK);
    T_EQ_INT(config_period_parse("none", &p), 0);
    T_EQ_INT(p, PERIOD_NONE);
    T_EQ_INT(config_period_parse("day", &p), 0);
    T_EQ_INT(p, PERIOD_DAY);
    T_EQ_INT(config_period_parse("Month", &p), -1);
    T_EQ_INT(config_period_parse("", &p), -1);
    T_EQ_INT(p, PERIOD_DAY);
    T_EQ_STR(config_period_name(PERIOD_MONTH), "month");
    T_EQ_STR(config_period_name(PERIOD_NONE), "none");
    T_EQ_STR(config_period_name(PERIOD_WEEK), "week");
    T_EQ_STR(config_period_name(PERIOD_DAY), "day");
}

static void test_ca_file(void)
{
    char path[] = "/tmp/pm-cfg-ca-XXXXXX", err[512] = "";
    int fd = mkstemp(path);
    T_CHECK(fd >= 0);
    if (fd < 0) return;
    const char *txt = "{\"upstream\": {\"ca_file\": \"/nonexistent/ca.pem\"}}";
    T_EQ_INT(write(fd, txt, strlen(txt)), (long long)strlen(txt));
    close(fd);
    config_t *c = config_load(path, err, sizeof err);
    T_CHECK(c == NULL);
    T_CHECK(strstr(err, "upstream.ca_file: cannot read /nonexistent/ca.pem") != NULL);
    config_free(c);
    c = parse("{\"upstream\": {\"ca_file\": \"conf/x.pem\"}}", err);   /* parse alone reads no file */
    T_CHECK(c != NULL);
    if (c) T_EQ_STR(c->ca_file, "conf/x.pem");
    config_free(c);
    unlink(path);
}

int main(void)
{
    T_RUN(test_defaults);
    T_RUN(test_issue_example);
    T_RUN(test_values);
    T_RUN(test_errors);
    T_RUN(test_load);
    T_RUN(test_shipped_default);
    T_RUN(test_shipped_example);
    T_RUN(test_glob);
    T_RUN(test_period);
    T_RUN(test_ca_file);
    return t_summary("config");
}
