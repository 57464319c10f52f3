/* Unit tests for metrics: the registry and its text exposition — exact
 * sample lines (9-decimal credits, integer counters), label escaping
 * (quotes, backslashes, newlines), the optional key label, no sample (and
 * never +Inf) for an uncapped team's cap and available, cumulative
 * histogram buckets with _sum and _count, the in-flight gauge, families
 * grouped under their TYPE line, and exact totals under concurrent updates. */
#include "metrics.h"
#include "t.h"
#include <pthread.h>
#include <stdlib.h>

#define C NANOS_PER_CREDIT

static char *scrape(metrics_t *m, const metrics_gauges_t *g)
{
    static const metrics_gauges_t none = { .version = "9.9.9" };
    size_t len = 0;
    char *s = metrics_format(m, g ? g : &none, &len);
    T_CHECK(s != NULL);
    if (s) T_EQ_INT(strlen(s), len);       /* no NUL inside */
    return s;
}

/* 1 if text has line as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0')) return 1;
    return 0;
}

#define T_LINE(text, line) do { if (!has_line(text, line)) { \
    fprintf(stderr, "  FAIL %s:%d: no line \"%s\"\n", __FILE__, __LINE__, line); \
    t_cur_failed = 1; } } while (0)
#define T_NO_LINE(text, line) do { if (has_line(text, line)) { \
    fprintf(stderr, "  FAIL %s:%d: unexpected line \"%s\"\n", __FILE__, __LINE__, line); \
    t_cur_failed = 1; } } while (0)

static int count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    size_t l = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, prefix, l) == 0) n++;
    return n;
}

static void settle(metrics_t *m, const char *team, const char *model, const char *key,
                   int64_t prompt, int64_t completion, int64_t cached, metrics_state_t st,
                   nanos_t charge, int64_t us)
{
    metrics_settle_t s = { .team = team, .model = model, .key = key, .prompt = prompt,
                           .completion = completion, .cached = cached, .state = st,
                           .charge = charge, .upstream_us = us, .leaves_inflight = 1 };
    metrics_settled(m, &s);
}

static void test_empty(void)
{
    metrics_t *m = metrics_new();
    char *s = scrape(m, NULL);
    T_CHECK(strncmp(s, "# HELP pinmeter_build_info ", 27) == 0);
    T_LINE(s, "# TYPE pinmeter_build_info gauge");
    T_LINE(s, "pinmeter_build_info{version=\"9.9.9\"} 1");
    T_LINE(s, "# TYPE pinmeter_requests_total counter");
    T_LINE(s, "# TYPE pinmeter_credits_charged_total counter");
    T_LINE(s, "# TYPE pinmeter_upstream_duration_seconds histogram");
    T_LINE(s, "pinmeter_admission_duration_seconds_bucket{le=\"+Inf\"} 0");
    T_LINE(s, "pinmeter_admission_duration_seconds_sum 0.000000");
    T_LINE(s, "pinmeter_admission_duration_seconds_count 0");
    T_LINE(s, "pinmeter_ledger_backlog_records 0");
    T_LINE(s, "pinmeter_ledger_write_errors_total 0");
    /* no series touched, no account, no Redis */
    T_EQ_INT(count_prefix(s, "pinmeter_requests_total"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_tokens_total"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_inflight_requests"), 0);
    T_CHECK(strstr(s, "pinmeter_account_") == NULL);
    T_CHECK(strstr(s, "pinmeter_budget_store_up") == NULL);
    T_CHECK(s[strlen(s) - 1] == '\n');
    free(s);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_counters_exact(void)
{
    metrics_t *m = metrics_new();
    const char *SON = "anthropic/claude-sonnet-4-6";
    metrics_admitted(m, "research");
    settle(m, "research", SON, NULL, 1000, 500, 200, METRICS_SETTLED, 9960000, 1500);
    metrics_admitted(m, "research");
    settle(m, "research", SON, NULL, 10, 5, 0, METRICS_SETTLED, 105000, 900);
    metrics_admitted(m, "research");
    settle(m, "research", SON, NULL, 34, 7, 0, METRICS_ESTIMATED, 207000, 2000);
    metrics_admitted(m, "research");
    settle(m, "research", SON, NULL, 0, 0, 0, METRICS_NO_CHARGE, 0, 300);
    /* as ledger recovery reports one at start: never in flight here */
    metrics_settle_t intr = { .team = "ops", .model = "", .state = METRICS_INTERRUPTED,
                              .charge = 12 * C + 1, .upstream_us = -1 };
    metrics_settled(m, &intr);
    metrics_answered(m, "research", SON, NULL, 200);
    metrics_answered(m, "research", SON, NULL, 200);
    metrics_answered(m, "research", SON, NULL, 402);
    metrics_answered(m, "", "", NULL, 401);
    metrics_rejected(m, "research", "team_cap");
    metrics_rejected(m, "research", "team_cap");
    metrics_rejected(m, "", "too_many_connections");
    metrics_alert(m, "cap_reached", 1);
    metrics_alert(m, "cap_reached", 0);
    metrics_alert(m, "cap_reached", 0);
    char *s = scrape(m, NULL);
    T_LINE(s, "pinmeter_tokens_total{team=\"research\",model=\"anthropic/claude-sonnet-4-6\","
              "kind=\"prompt\"} 1044");
    T_LINE(s, "pinmeter_tokens_total{team=\"research\",model=\"anthropic/claude-sonnet-4-6\","
              "kind=\"completion\"} 512");
    T_LINE(s, "pinmeter_tokens_total{team=\"research\",model=\"anthropic/claude-sonnet-4-6\","
              "kind=\"cached\"} 200");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"research\","
              "model=\"anthropic/claude-sonnet-4-6\",state=\"settled\"} 0.010065000");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"research\","
              "model=\"anthropic/claude-sonnet-4-6\",state=\"estimated\"} 0.000207000");
    /* failed: tokens counted (0), no credits series of its own */
    T_NO_LINE(s, "pinmeter_credits_charged_total{team=\"research\","
                 "model=\"anthropic/claude-sonnet-4-6\",state=\"interrupted\"} 0.000000000");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"ops\",model=\"\",state=\"interrupted\"} "
              "12.000000001");
    T_EQ_INT(count_prefix(s, "pinmeter_credits_charged_total{"), 3);
    T_LINE(s, "pinmeter_requests_total{team=\"research\",model=\"anthropic/claude-sonnet-4-6\","
              "code=\"200\"} 2");
    T_LINE(s, "pinmeter_requests_total{team=\"research\",model=\"anthropic/claude-sonnet-4-6\","
              "code=\"402\"} 1");
    T_LINE(s, "pinmeter_requests_total{team=\"\",model=\"\",code=\"401\"} 1");
    T_LINE(s, "pinmeter_rejections_total{team=\"research\",reason=\"team_cap\"} 2");
    T_LINE(s, "pinmeter_rejections_total{team=\"\",reason=\"too_many_connections\"} 1");
    T_LINE(s, "pinmeter_alerts_total{event=\"cap_reached\",result=\"sent\"} 1");
    T_LINE(s, "pinmeter_alerts_total{event=\"cap_reached\",result=\"failed\"} 2");
    /* four admitted, four settled; the interrupted one touched no gauge */
    T_LINE(s, "pinmeter_inflight_requests{team=\"research\"} 0");
    T_EQ_INT(count_prefix(s, "pinmeter_inflight_requests{team=\"ops\"}"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_upstream_duration_seconds_count{model=\"\"}"), 0);
    free(s);
    metrics_free(m);
}

static void test_escaping(void)
{
    metrics_t *m = metrics_new();
    settle(m, "a\"b\\c\nd", "m/\"x\"", NULL, 1, 2, 0, METRICS_SETTLED, 3, 10);
    metrics_team_t t = { .name = "q\"\\\n", .capped = 1, .cap = C, .known = 1 };
    metrics_gauges_t g = { .version = "v\"1", .teams = &t, .n_teams = 1 };
    char *s = scrape(m, &g);
    T_LINE(s, "pinmeter_tokens_total{team=\"a\\\"b\\\\c\\nd\",model=\"m/\\\"x\\\"\","
              "kind=\"completion\"} 2");
    T_LINE(s, "pinmeter_team_cap_credits{team=\"q\\\"\\\\\\n\"} 1.000000000");
    T_LINE(s, "pinmeter_build_info{version=\"v\\\"1\"} 1");
    T_LINE(s, "pinmeter_upstream_duration_seconds_count{model=\"m/\\\"x\\\"\"} 1");
    /* no raw newline ever inside a sample line: every line starts with a
     * metric name or '#' */
    for (const char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        T_CHECK(*p == '#' || strncmp(p, "pinmeter_", 9) == 0);
    free(s);
    metrics_free(m);
}

static void test_key_label(void)
{
    metrics_t *m = metrics_new();
    settle(m, "t", "mm", "alice", 5, 1, 0, METRICS_SETTLED, 50, 1);
    settle(m, "t", "mm", "bob", 7, 1, 0, METRICS_SETTLED, 70, 1);
    settle(m, "t", "mm", NULL, 9, 1, 0, METRICS_SETTLED, 90, 1);
    settle(m, "t", "mm", "", 11, 1, 0, METRICS_SETTLED, 110, 1);
    metrics_answered(m, "t", "mm", "alice", 200);
    metrics_answered(m, "t", "mm", NULL, 200);
    char *s = scrape(m, NULL);
    T_LINE(s, "pinmeter_tokens_total{team=\"t\",model=\"mm\",key=\"alice\",kind=\"prompt\"} 5");
    T_LINE(s, "pinmeter_tokens_total{team=\"t\",model=\"mm\",key=\"bob\",kind=\"prompt\"} 7");
    T_LINE(s, "pinmeter_tokens_total{team=\"t\",model=\"mm\",kind=\"prompt\"} 9");
    /* "" is a key label value of its own, not the absent label */
    T_LINE(s, "pinmeter_tokens_total{team=\"t\",model=\"mm\",key=\"\",kind=\"prompt\"} 11");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"t\",model=\"mm\",key=\"bob\","
              "state=\"settled\"} 0.000000070");
    T_LINE(s, "pinmeter_requests_total{team=\"t\",model=\"mm\",key=\"alice\",code=\"200\"} 1");
    T_LINE(s, "pinmeter_requests_total{team=\"t\",model=\"mm\",code=\"200\"} 1");
    /* histograms are by model only: one series for all four */
    T_LINE(s, "pinmeter_upstream_duration_seconds_count{model=\"mm\"} 4");
    free(s);
    metrics_free(m);
}

static void test_team_gauges(void)
{
    metrics_t *m = metrics_new();
    metrics_admitted(m, "capped");
    metrics_admitted(m, "capped");
    metrics_team_t t[3] = {
        { .name = "capped", .capped = 1, .cap = 25 * C, .known = 1, .spent = 3 * C + 5,
          .loaned = 2 * C, .period_end_s = 1796083200 },
        { .name = "open", .capped = 0, .cap = -1, .known = 1, .spent = 7, .loaned = 0 },
        { .name = "unknown", .capped = 1, .cap = 5 * C, .known = 0, .period_end_s = 86400 },
    };
    metrics_gauges_t g = { .version = "x", .teams = t, .n_teams = 3 };
    char *s = scrape(m, &g);
    T_LINE(s, "pinmeter_team_cap_credits{team=\"capped\"} 25.000000000");
    T_LINE(s, "pinmeter_team_spent_credits{team=\"capped\"} 3.000000005");
    T_LINE(s, "pinmeter_team_loaned_credits{team=\"capped\"} 2.000000000");
    T_LINE(s, "pinmeter_team_available_credits{team=\"capped\"} 19.999999995");
    T_LINE(s, "pinmeter_team_period_end_timestamp_seconds{team=\"capped\"} 1796083200");
    /* uncapped: spent and loaned, no cap, no available, no period end */
    T_LINE(s, "pinmeter_team_spent_credits{team=\"open\"} 0.000000007");
    T_LINE(s, "pinmeter_team_loaned_credits{team=\"open\"} 0.000000000");
    T_EQ_INT(count_prefix(s, "pinmeter_team_cap_credits{team=\"open\"}"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_team_available_credits{team=\"open\"}"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_team_period_end_timestamp_seconds{team=\"open\"}"), 0);
    /* figures unknown (Redis has not answered): cap only */
    T_LINE(s, "pinmeter_team_cap_credits{team=\"unknown\"} 5.000000000");
    T_EQ_INT(count_prefix(s, "pinmeter_team_spent_credits{team=\"unknown\"}"), 0);
    T_EQ_INT(count_prefix(s, "pinmeter_team_available_credits{team=\"unknown\"}"), 0);
    /* never +Inf, NaN or a negative zero for a gauge */
    T_CHECK(strstr(s, " +Inf") == NULL && strstr(s, " Inf") == NULL && strstr(s, "NaN") == NULL);
    /* every configured team has an in-flight sample */
    T_LINE(s, "pinmeter_inflight_requests{team=\"capped\"} 2");
    T_LINE(s, "pinmeter_inflight_requests{team=\"open\"} 0");
    T_LINE(s, "pinmeter_inflight_requests{team=\"unknown\"} 0");
    free(s);
    metrics_free(m);
}

static void test_histograms(void)
{
    metrics_t *m = metrics_new();
    /* admission buckets (µs): 10, 25, 50, 100 ... 1000000 */
    metrics_admission(m, 5);
    metrics_admission(m, 10);          /* on a bound: counted in it (le) */
    metrics_admission(m, 11);
    metrics_admission(m, 30);
    metrics_admission(m, 2000000);     /* past the last bound: +Inf only */
    metrics_admission(m, -3);          /* a clock step: counted as 0 */
    settle(m, "t", "fast", NULL, 0, 0, 0, METRICS_SETTLED, 0, 2500);
    settle(m, "t", "fast", NULL, 0, 0, 0, METRICS_SETTLED, 0, 700000000);
    metrics_first_token(m, "fast", 1234567);
    char *s = scrape(m, NULL);
    const char *want =
        "pinmeter_admission_duration_seconds_bucket{le=\"0.00001\"} 3\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.000025\"} 4\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.00005\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.0001\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.00025\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.0005\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.001\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.0025\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.005\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.01\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.025\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.05\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.1\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"0.25\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"1\"} 5\n"
        "pinmeter_admission_duration_seconds_bucket{le=\"+Inf\"} 6\n"
        "pinmeter_admission_duration_seconds_sum 2.000056\n"
        "pinmeter_admission_duration_seconds_count 6\n";
    T_CHECK(strstr(s, want) != NULL);
    if (!strstr(s, want)) fprintf(stderr, "%s\n", s);
    T_LINE(s, "pinmeter_upstream_duration_seconds_bucket{model=\"fast\",le=\"0.001\"} 0");
    T_LINE(s, "pinmeter_upstream_duration_seconds_bucket{model=\"fast\",le=\"0.0025\"} 1");
    T_LINE(s, "pinmeter_upstream_duration_seconds_bucket{model=\"fast\",le=\"600\"} 1");
    T_LINE(s, "pinmeter_upstream_duration_seconds_bucket{model=\"fast\",le=\"+Inf\"} 2");
    T_LINE(s, "pinmeter_upstream_duration_seconds_sum{model=\"fast\"} 700.002500");
    T_LINE(s, "pinmeter_upstream_duration_seconds_count{model=\"fast\"} 2");
    T_LINE(s, "pinmeter_stream_first_token_seconds_bucket{model=\"fast\",le=\"1\"} 0");
    T_LINE(s, "pinmeter_stream_first_token_seconds_bucket{model=\"fast\",le=\"2.5\"} 1");
    T_LINE(s, "pinmeter_stream_first_token_seconds_sum{model=\"fast\"} 1.234567");
    /* buckets never decrease along a series */
    long long prev = -1;
    for (const char *p = strstr(s, "pinmeter_upstream_duration_seconds_bucket"); p;
         p = strstr(p + 1, "pinmeter_upstream_duration_seconds_bucket")) {
        long long v = atoll(strchr(p, '}') + 2);
        T_CHECK(v >= prev);
        prev = v;
    }
    free(s);
    metrics_free(m);
}

/* Every sample belongs to the family of the TYPE line above it, and no
 * family has two TYPE lines. */
static void test_families_grouped(void)
{
    metrics_t *m = metrics_new();
    settle(m, "t", "mm", NULL, 1, 1, 0, METRICS_ESTIMATED, 1, 1);
    metrics_first_token(m, "mm", 5);
    metrics_answered(m, "t", "mm", NULL, 200);
    metrics_rejected(m, "t", "account");
    metrics_alert(m, "e", 1);
    metrics_team_t t = { .name = "t", .capped = 1, .cap = 1, .known = 1, .period_end_s = 9 };
    metrics_gauges_t g = { .version = "v", .teams = &t, .n_teams = 1, .account_on = 1,
                           .projected_known = 1, .projected = -5, .synced_known = 1,
                           .synced = 7 * C, .synced_ms = 1764547200123LL, .store_redis = 1,
                           .store_up = 0, .ledger_backlog = 12, .ledger_write_errors = 3 };
    char *s = scrape(m, &g);
    T_LINE(s, "pinmeter_account_projected_available_credits -0.000000005");
    T_LINE(s, "pinmeter_account_synced_available_credits 7.000000000");
    T_LINE(s, "pinmeter_account_last_sync_timestamp_seconds 1764547200.123");
    T_LINE(s, "pinmeter_budget_store_up 0");
    T_LINE(s, "pinmeter_ledger_backlog_records 12");
    T_LINE(s, "pinmeter_ledger_write_errors_total 3");
    char fam[128] = "", seen[64][128];
    int n_seen = 0;
    for (const char *p = s; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, "# TYPE ", 7) == 0) {
            size_t l = strcspn(p + 7, " ");
            snprintf(fam, sizeof fam, "%.*s", (int)l, p + 7);
            for (int i = 0; i < n_seen; i++) T_CHECK(strcmp(seen[i], fam) != 0);
            if (n_seen < 64) snprintf(seen[n_seen++], sizeof seen[0], "%s", fam);
            continue;
        }
        if (*p == '#') continue;
        size_t l = strcspn(p, "{ ");
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)l, p);
        size_t fl = strlen(fam);
        int ok = strncmp(name, fam, fl) == 0 &&
                 (name[fl] == '\0' || strcmp(name + fl, "_bucket") == 0 ||
                  strcmp(name + fl, "_sum") == 0 || strcmp(name + fl, "_count") == 0);
        if (!ok) fprintf(stderr, "  sample %s under family %s\n", name, fam);
        T_CHECK(ok);
    }
    free(s);
    g.store_up = 1;
    s = scrape(m, &g);
    T_LINE(s, "pinmeter_budget_store_up 1");
    free(s);
    g.account_on = 1, g.projected_known = 0, g.synced_known = 0, g.store_redis = 0;
    s = scrape(m, &g);
    T_LINE(s, "# TYPE pinmeter_account_synced_available_credits gauge");
    T_EQ_INT(count_prefix(s, "pinmeter_account_"), 0);     /* no samples before a sync */
    T_CHECK(strstr(s, "pinmeter_budget_store_up") == NULL);
    free(s);
    metrics_free(m);
}

/* 100 teams x 50 models, each touched: every series there, once. */
static void test_many_series(void)
{
    metrics_t *m = metrics_new();
    char team[32], model[32];
    metrics_team_t *t = calloc(100, sizeof *t);
    char (*names)[32] = calloc(100, sizeof *names);
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof names[i], "team%03d", i);
        t[i] = (metrics_team_t){ .name = names[i], .capped = 1, .cap = C, .known = 1 };
        for (int j = 0; j < 50; j++) {
            snprintf(team, sizeof team, "team%03d", i);
            snprintf(model, sizeof model, "vendor/model-%02d", j);
            metrics_admitted(m, team);
            settle(m, team, model, NULL, 10, 20, 3, METRICS_SETTLED, 1000, 1500);
            metrics_answered(m, team, model, NULL, 200);
        }
    }
    metrics_gauges_t g = { .version = "v", .teams = t, .n_teams = 100 };
    char *s = scrape(m, &g);
    T_EQ_INT(count_prefix(s, "pinmeter_tokens_total{"), 100 * 50 * 3);
    T_EQ_INT(count_prefix(s, "pinmeter_credits_charged_total{"), 100 * 50);
    T_EQ_INT(count_prefix(s, "pinmeter_requests_total{"), 100 * 50);
    T_EQ_INT(count_prefix(s, "pinmeter_inflight_requests{"), 100);
    T_EQ_INT(count_prefix(s, "pinmeter_upstream_duration_seconds_count{"), 50);
    T_LINE(s, "pinmeter_upstream_duration_seconds_count{model=\"vendor/model-07\"} 100");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"team042\",model=\"vendor/model-49\","
              "state=\"settled\"} 0.000001000");
    free(s);
    free(t);
    free(names);
    metrics_free(m);
}

typedef struct worker { metrics_t *m; int id; } worker_t;

static void *hammer(void *arg)
{
    worker_t *w = arg;
    char team[16];
    snprintf(team, sizeof team, "w%d", w->id % 2);
    for (int i = 0; i < 20000; i++) {
        metrics_admitted(w->m, team);
        settle(w->m, team, "mm", NULL, 3, 2, 1, METRICS_SETTLED, 7, i % 5000);
        metrics_answered(w->m, team, "mm", NULL, 200);
        if (i % 100 == 0) {
            size_t len;
            metrics_gauges_t g = { .version = "v" };
            free(metrics_format(w->m, &g, &len));
        }
    }
    return NULL;
}

static void test_threads(void)
{
    metrics_t *m = metrics_new();
    pthread_t th[4];
    worker_t w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker_t){ m, i };
        pthread_create(&th[i], NULL, hammer, &w[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    char *s = scrape(m, NULL);
    T_LINE(s, "pinmeter_tokens_total{team=\"w0\",model=\"mm\",kind=\"prompt\"} 120000");
    T_LINE(s, "pinmeter_tokens_total{team=\"w1\",model=\"mm\",kind=\"cached\"} 40000");
    T_LINE(s, "pinmeter_credits_charged_total{team=\"w1\",model=\"mm\",state=\"settled\"} "
              "0.000280000");
    T_LINE(s, "pinmeter_requests_total{team=\"w0\",model=\"mm\",code=\"200\"} 40000");
    T_LINE(s, "pinmeter_inflight_requests{team=\"w0\"} 0");
    T_LINE(s, "pinmeter_upstream_duration_seconds_count{model=\"mm\"} 80000");
    free(s);
    metrics_free(m);
}

static void test_null_registry(void)
{
    metrics_settle_t st = { .team = "t", .model = "m", .state = METRICS_SETTLED };
    metrics_rejected(NULL, "t", "r");
    metrics_admitted(NULL, "t");
    metrics_admission(NULL, 1);
    metrics_first_token(NULL, "m", 1);
    metrics_settled(NULL, &st);
    metrics_answered(NULL, "t", "m", NULL, 200);
    metrics_alert(NULL, "e", 1);
    /* NULL label values are "" */
    metrics_t *m = metrics_new();
    metrics_rejected(m, NULL, NULL);
    char *s = scrape(m, NULL);
    T_LINE(s, "pinmeter_rejections_total{team=\"\",reason=\"\"} 1");
    free(s);
    metrics_free(m);
}

int main(void)
{
    T_RUN(test_empty);
    T_RUN(test_counters_exact);
    T_RUN(test_escaping);
    T_RUN(test_key_label);
    T_RUN(test_team_gauges);
    T_RUN(test_histograms);
    T_RUN(test_families_grouped);
    T_RUN(test_many_series);
    T_RUN(test_threads);
    T_RUN(test_null_registry);
    return t_summary("metrics");
}
