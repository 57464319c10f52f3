/* Unit tests for rates: parsing the /v0/llm/models table (and its errors),
 * lookup, and exact cost arithmetic (128-bit sums, rounding up). */
#include "rates.h"
#include "t.h"

#include <math.h>
#include <stdlib.h>

#define SONNET "{\"model_id\": \"anthropic/claude-sonnet-4-6\", \"input_usd_per_1m_tokens\": 3.0, " \
    "\"output_usd_per_1m_tokens\": 15.0, \"cache_read_usd_per_1m_tokens\": 0.3}"

static rates_t *parse(const char *json, double cpu, char *err)
{
    return rates_parse(json, strlen(json), cpu, err, 256);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = malloc(1 << 16);
    *len = f && buf ? fread(buf, 1, 1 << 16, f) : 0;
    if (f)
        fclose(f);
    return buf;
}

static void test_rate_from_usd(void)
{
    rate_t r = { 7, 7, 7 };
    T_EQ_INT(rate_from_usd(3.0, 15.0, 0.3, 1.0, &r), 0);
    T_EQ_INT(r.input, 3000000000LL);
    T_EQ_INT(r.output, 15000000000LL);
    T_EQ_INT(r.cache_read, 300000000LL);
    T_EQ_INT(rate_from_usd(3.0, 15.0, 0.3, 2.5, &r), 0);
    T_EQ_INT(r.input, 7500000000LL);
    T_EQ_INT(r.output, 37500000000LL);
    T_EQ_INT(r.cache_read, 750000000LL);
    T_EQ_INT(rate_from_usd(0, 0, 0, 1.0, &r), 0);        /* free model */
    T_EQ_INT(r.input, 0);
    r = (rate_t){ 7, 7, 7 };
    T_EQ_INT(rate_from_usd(-0.1, 1, 1, 1.0, &r), -1);
    T_EQ_INT(rate_from_usd(1, NAN, 1, 1.0, &r), -1);
    T_EQ_INT(rate_from_usd(1, 1, INFINITY, 1.0, &r), -1);
    T_EQ_INT(rate_from_usd(1.1e6, 1, 1, 1.0, &r), -1);
    T_EQ_INT(rate_from_usd(1, 1, 1, 0, &r), -1);
    T_EQ_INT(rate_from_usd(1, 1, 1, -1, &r), -1);
    T_EQ_INT(rate_from_usd(1, 1, 1, NAN, &r), -1);
    T_EQ_INT(rate_from_usd(1e6, 1, 1, 1e4, &r), -1);     /* > 1e18 nanos */
    T_EQ_INT(r.input, 7);                                /* unchanged */
}

static void test_parse_lookup(void)
{
    char err[256] = "";
    const char *json = "[" SONNET ", {\"model_id\": \"openai/gpt-5\", \"input_usd_per_1m_tokens\": 1.25,"
        " \"output_usd_per_1m_tokens\": 10, \"cache_read_usd_per_1m_tokens\": null,"
        " \"name\": \"GPT-5\", \"context\": 400000},"
        " {\"model_id\": \"x/no-cache\", \"input_usd_per_1m_tokens\": 2, \"output_usd_per_1m_tokens\": 4}]";
    rates_t *r = parse(json, 1.0, err);
    rate_t rt = { 0, 0, 0 };
    T_CHECK(r != NULL);
    T_EQ_STR(err, "");
    T_EQ_INT(rates_count(r), 3);
    T_EQ_INT(rates_lookup(r, "anthropic/claude-sonnet-4-6", &rt), 0);
    T_EQ_INT(rt.input, 3000000000LL);
    T_EQ_INT(rt.output, 15000000000LL);
    T_EQ_INT(rt.cache_read, 300000000LL);
    T_EQ_INT(rates_lookup(r, "openai/gpt-5", &rt), 0);
    T_EQ_INT(rt.input, 1250000000LL);
    T_EQ_INT(rt.cache_read, 1250000000LL);               /* null = absent = input */
    T_EQ_INT(rates_lookup(r, "x/no-cache", &rt), 0);
    T_EQ_INT(rt.cache_read, 2000000000LL);               /* absent = input price */
    T_EQ_INT(rates_lookup(r, "openai/gpt-5-mini", &rt), -1);
    T_EQ_INT(rates_lookup(r, "anthropic/claude-sonnet-4", &rt), -1);
    T_EQ_INT(rates_lookup(r, "", &rt), -1);
    T_EQ_INT(rates_lookup(NULL, "openai/gpt-5", &rt), -1);
    rates_free(r);
    rates_free(NULL);

    r = parse("  []\n", 1.0, err);                       /* empty table is valid */
    T_CHECK(r != NULL);
    T_EQ_INT(rates_count(r), 0);
    T_EQ_INT(rates_lookup(r, "a", &rt), -1);
    rates_free(r);
}

static void test_parse_credits_per_usd(void)
{
    char err[256];
    rate_t rt;
    rates_t *r = parse("[" SONNET "]", 2.5, err);
    T_CHECK(r != NULL);
    T_EQ_INT(rates_lookup(r, "anthropic/claude-sonnet-4-6", &rt), 0);
    T_EQ_INT(rt.input, 7500000000LL);
    T_EQ_INT(rt.output, 37500000000LL);
    T_EQ_INT(rt.cache_read, 750000000LL);
    rates_free(r);
    T_CHECK(parse("[" SONNET "]", 0, err) == NULL);
    T_CHECK(strstr(err, "credits_per_usd") != NULL);
}

/* Each bad table must fail with a message naming the entry and key. */
static void test_parse_errors(void)
{
    static const struct { const char *json, *want; } cases[] = {
        { "[", "invalid JSON" },
        { "{}", "top level: must be a JSON array" },
        { "[] x", "unexpected data" },
        { "[1]", "[0]: must be an object" },
        { "[" SONNET ", {\"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1}]",
          "[1].model_id: missing" },
        { "[{\"model_id\": \"\", \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1}]",
          "[0].model_id: must be a non-empty string" },
        { "[{\"model_id\": 5, \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1}]",
          "[0].model_id: must be a non-empty string" },
        { "[{\"model_id\": \"a\", \"output_usd_per_1m_tokens\": 1}]",
          "[0].input_usd_per_1m_tokens: missing" },
        { "[{\"model_id\": \"a\", \"input_usd_per_1m_tokens\": 1}]",
          "[0].output_usd_per_1m_tokens: missing" },
        { "[{\"model_id\": \"a\", \"input_usd_per_1m_tokens\": \"3\", \"output_usd_per_1m_tokens\": 1}]",
          "[0].input_usd_per_1m_tokens: must be a number" },
        { "[{\"model_id\": \"a\", \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": -1}]",
          "[0].output_usd_per_1m_tokens: must be between" },
        { "[{\"model_id\": \"a\", \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1,"
          " \"cache_read_usd_per_1m_tokens\": 2e6}]", "[0].cache_read_usd_per_1m_tokens: must be between" },
        { "[" SONNET ", {\"model_id\": \"b\", \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 1}, "
          SONNET "]", "[2].model_id: duplicate of [0]" },
        { "[" SONNET ", " SONNET ", " SONNET "]", "[1].model_id: duplicate of [0]" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        rates_t *r = parse(cases[i].json, 1.0, err);
        T_CHECK(r == NULL);
        if (!strstr(err, cases[i].want)) {
            fprintf(stderr, "  case %zu: got \"%s\", want \"%s\"\n", i, err, cases[i].want);
            T_CHECK(0);
        }
        rates_free(r);
    }
}

static void test_cost_exact(void)
{
    rate_t sonnet = { 3000000000LL, 15000000000LL, 300000000LL };
    usage_t u = { 1000, 500, 200 };
    /* (800*3e9 + 200*0.3e9 + 500*15e9) / 1e6 = 2400000 + 60000 + 7500000 */
    T_EQ_INT(cost_of(&sonnet, &u), 9960000);
    u = (usage_t){ 0, 0, 0 };
    T_EQ_INT(cost_of(&sonnet, &u), 0);
    u = (usage_t){ 1, 0, 0 };
    T_EQ_INT(cost_of(&sonnet, &u), 3000);
    u = (usage_t){ 1000000, 1000000, 0 };                /* 1M in + 1M out = 18 credits */
    T_EQ_INT(cost_of(&sonnet, &u), 18 * NANOS_PER_CREDIT);
}

static void test_cost_clamps_cached(void)
{
    rate_t sonnet = { 3000000000LL, 15000000000LL, 300000000LL };
    usage_t over = { 100, 0, 500 }, all = { 100, 0, 100 }, neg = { 100, 0, -7 },
            none = { 100, 0, 0 };
    T_EQ_INT(cost_of(&sonnet, &over), cost_of(&sonnet, &all));
    T_EQ_INT(cost_of(&sonnet, &all), 30000);             /* 100 * 0.3e9 / 1e6 */
    T_EQ_INT(cost_of(&sonnet, &neg), cost_of(&sonnet, &none));
    T_EQ_INT(cost_of(&sonnet, &none), 300000);
}

static void test_cost_rounds_up(void)
{
    rate_t r;
    usage_t u = { 1, 0, 0 };
    /* 0.075 USD at 2.5 credits/USD = 187500000 nanos per 1M: 187.5 per token */
    T_EQ_INT(rate_from_usd(0.075, 0.075, 0.075, 2.5, &r), 0);
    T_EQ_INT(r.input, 187500000LL);
    T_EQ_INT(cost_of(&r, &u), 188);
    u = (usage_t){ 2, 0, 0 };
    T_EQ_INT(cost_of(&r, &u), 375);                      /* exact, no rounding */
    u = (usage_t){ 3, 1, 0 };
    T_EQ_INT(cost_of(&r, &u), 750);
    u = (usage_t){ 1, 1, 0 };
    T_EQ_INT(cost_of(&r, &u), 375);                      /* summed first, 375 not 376 */
    /* 1e-7 USD = 100 nanos per 1M tokens: a single token still costs 1 nano */
    T_EQ_INT(rate_from_usd(1e-7, 1e-7, 1e-7, 1.0, &r), 0);
    T_EQ_INT(r.input, 100);
    u = (usage_t){ 1, 0, 0 };
    T_EQ_INT(cost_of(&r, &u), 1);
    T_EQ_INT(cost_reservation(&r, 1, 0), 1);
    T_EQ_INT(cost_reservation(&r, 10000, 0), 1);
    T_EQ_INT(cost_reservation(&r, 10001, 0), 2);
}

static void test_cost_large(void)
{
    rate_t opus = { 15000000000LL, 75000000000LL, 1500000000LL };
    usage_t u = { 1000000000LL, 1000000000LL, 0 };
    /* sum 9e19 exceeds int64 before the division: 1e9*15e9 + 1e9*75e9 */
    T_EQ_INT(cost_of(&opus, &u), 90000000000000LL);
    u.cached = 1000000000LL;
    T_EQ_INT(cost_of(&opus, &u), 76500000000000LL);
    T_EQ_INT(cost_reservation(&opus, 1000000000LL, 1000000000LL), 90000000000000LL);
    /* out-of-contract magnitudes saturate instead of wrapping */
    rate_t huge = { INT64_MAX, INT64_MAX, INT64_MAX };
    u = (usage_t){ INT64_MAX, INT64_MAX, 0 };
    T_EQ_INT(cost_of(&huge, &u), INT64_MAX);
    T_EQ_INT(cost_reservation(&huge, INT64_MAX, INT64_MAX), INT64_MAX);
    T_EQ_INT(cost_reservation(&opus, 0, INT64_MAX), INT64_MAX);
}

static void test_cost_reservation(void)
{
    rate_t sonnet = { 3000000000LL, 15000000000LL, 300000000LL };
    /* 1000*3e9 + 4096*15e9 = 3e12 + 61.44e12 -> 64440000 nanos */
    T_EQ_INT(cost_reservation(&sonnet, 1000, 4096), 64440000);
    T_EQ_INT(cost_reservation(&sonnet, 0, 0), 0);
}

static void test_cost_rejects_bad_input(void)
{
    rate_t sonnet = { 3000000000LL, 15000000000LL, 300000000LL }, neg = { -1, 1, 1 };
    usage_t np = { -1, 5, 0 }, nc = { 5, -1, 0 }, ok = { 5, 5, 0 };
    T_EQ_INT(cost_of(&sonnet, &np), -1);
    T_EQ_INT(cost_of(&sonnet, &nc), -1);
    T_EQ_INT(cost_of(&neg, &ok), -1);
    T_EQ_INT(cost_of(NULL, &ok), -1);
    T_EQ_INT(cost_of(&sonnet, NULL), -1);
    T_EQ_INT(cost_reservation(&sonnet, -1, 0), -1);
    T_EQ_INT(cost_reservation(&sonnet, 0, -1), -1);
    T_EQ_INT(cost_reservation(NULL, 0, 0), -1);
}

static void test_shipped_rates(void)
{
    char err[256] = "";
    size_t len;
    char *json = read_all("conf/rates.json", &len);
    rates_t *r = json ? rates_parse(json, len, 1.0, err, sizeof err) : NULL;
    rate_t rt;
    T_CHECK(r != NULL);
    if (!r)
        fprintf(stderr, "  conf/rates.json: %s\n", err);
    T_CHECK(rates_count(r) >= 8);
    T_EQ_INT(rates_lookup(r, "anthropic/claude-sonnet-4-6", &rt), 0);
    T_EQ_INT(rt.input, 3000000000LL);
    T_EQ_INT(rt.output, 15000000000LL);
    T_EQ_INT(rt.cache_read, 300000000LL);
    T_EQ_INT(rates_lookup(r, "anthropic/claude-opus-4-1", &rt), 0);
    T_EQ_INT(rt.output, 75000000000LL);
    T_EQ_INT(rates_lookup(r, "openai/gpt-5-mini", &rt), 0);
    T_EQ_INT(rt.cache_read, 25000000LL);
    T_EQ_INT(rates_lookup(r, "google/gemini-2.5-pro", &rt), 0);
    T_EQ_INT(rt.cache_read, 310000000LL);
    rates_free(r);
    free(json);
}

static void test_max_completion(void)
{
    rate_t r = { 3000000000LL, 15000000000LL, 300000000LL };   /* 3 / 15 / 0.3 per 1M */
    /* 1000 prompt tokens = 3,000,000 nanos; each completion token 15,000 */
    nanos_t avail = 3000000 + 256 * 15000 + 14999;
    int64_t c = cost_max_completion(&r, 1000, 1, avail);
    T_EQ_INT(c, 256);
    T_CHECK(cost_reservation(&r, 1000, c) <= avail);
    T_CHECK(cost_reservation(&r, 1000, c + 1) > avail);
    T_EQ_INT(cost_max_completion(&r, 1000, 2, avail), 128);
    T_EQ_INT(cost_max_completion(&r, 1000, 1, 2999999), -1);   /* not even the prompt */
    T_EQ_INT(cost_max_completion(&r, 1000, 1, 3000000), 0);
    rate_t free_out = { 3000000000LL, 0, 0 };
    T_EQ_INT(cost_max_completion(&free_out, 1000, 1, 3000000), INT64_MAX);
    /* rounding up: 7 tokens at 1 nano per 1M each cost ceil(7e-6) = 1 nano */
    rate_t tiny = { 0, 1, 0 };
    T_EQ_INT(cost_max_completion(&tiny, 0, 1, 1), 1000000);
    T_EQ_INT(cost_reservation(&tiny, 0, 1000000), 1);
    T_EQ_INT(cost_reservation(&tiny, 0, 1000001), 2);
}

int main(void)
{
    T_RUN(test_rate_from_usd);
    T_RUN(test_parse_lookup);
    T_RUN(test_parse_credits_per_usd);
    T_RUN(test_parse_errors);
    T_RUN(test_cost_exact);
    T_RUN(test_cost_clamps_cached);
    T_RUN(test_cost_rounds_up);
    T_RUN(test_cost_large);
    T_RUN(test_cost_reservation);
    T_RUN(test_cost_rejects_bad_input);
    T_RUN(test_shipped_rates);
    T_RUN(test_max_completion);
    return t_summary("rates");
}
