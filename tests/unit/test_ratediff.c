/* Unit tests for ratediff: Pinata's price list is taken only whole and
 * valid (every field present, finite and >= 0, ids unique and non-empty,
 * at least one model), and the diff of two tables lists exactly the models
 * added, removed and changed, with their prices as text. */
#include "ratediff.h"
#include "t.h"

#include <stdlib.h>

#define C NANOS_PER_CREDIT

static const char *GOOD =
    "[{\"model_id\": \"a/one\", \"input_usd_per_1m_tokens\": 3, \"output_usd_per_1m_tokens\": 15,"
    "  \"cache_read_usd_per_1m_tokens\": 0.3, \"name\": \"extra fields are fine\"},"
    " {\"model_id\": \"b/two\", \"input_usd_per_1m_tokens\": 0, \"output_usd_per_1m_tokens\": 0.4,"
    "  \"cache_read_usd_per_1m_tokens\": 0}]\n";

static void test_parse_good(void)
{
    char err[256] = "";
    rates_t *r = ratediff_parse(GOOD, strlen(GOOD), 1.0, err, sizeof err);
    T_CHECK(r != NULL);
    if (!r) { fprintf(stderr, "  %s\n", err); return; }
    T_EQ_INT(rates_count(r), 2);
    rate_t x;
    T_EQ_INT(rates_lookup(r, "a/one", &x), 0);
    T_EQ_INT(x.input, 3 * C);
    T_EQ_INT(x.output, 15 * C);
    T_EQ_INT(x.cache_read, 3 * C / 10);
    T_EQ_INT(rates_lookup(r, "b/two", &x), 0);
    T_EQ_INT(x.input, 0);                      /* free is a price */
    T_EQ_INT(x.output, 4 * C / 10);
    rates_free(r);
    /* credits_per_usd scales, as for a rates file */
    r = ratediff_parse(GOOD, strlen(GOOD), 2.0, err, sizeof err);
    T_CHECK(r && rates_lookup(r, "a/one", &x) == 0 && x.output == 30 * C);
    rates_free(r);
}

/* json is refused; err must contain want. */
static void refused(const char *json, const char *want)
{
    char err[256] = "";
    rates_t *r = ratediff_parse(json, strlen(json), 1.0, err, sizeof err);
    if (r) fprintf(stderr, "  accepted: %s\n", json);
    T_CHECK(r == NULL);
    rates_free(r);
    if (!strstr(err, want)) fprintf(stderr, "  %s\n  error \"%s\", want \"%s\"\n", json, err, want);
    T_CHECK(strstr(err, want) != NULL);
}

#define E(id, i, o, c) "{\"model_id\": " id ", \"input_usd_per_1m_tokens\": " i \
                       ", \"output_usd_per_1m_tokens\": " o \
                       ", \"cache_read_usd_per_1m_tokens\": " c "}"

static void test_parse_refused(void)
{
    refused("", "not JSON");
    refused("<html>502 Bad Gateway</html>", "invalid JSON");
    refused("[" E("\"a\"", "1", "2", "0.1"), "invalid JSON");          /* truncated */
    refused("[" E("\"a\"", "1", "2", "0.1") "] trailing", "after the JSON value");
    refused("{\"data\": []}", "must be a JSON array");
    refused("[]", "no models");
    refused("[1]", "[0]: must be an object");
    refused("[{\"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 2,"
            " \"cache_read_usd_per_1m_tokens\": 0}]", "[0].model_id: missing");
    refused("[" E("\"\"", "1", "2", "0.1") "]", "[0].model_id: must be a non-empty string");
    refused("[" E("42", "1", "2", "0.1") "]", "[0].model_id: must be a non-empty string");
    refused("[" E("\"a\"", "1", "2", "0.1") ", {\"model_id\": \"b\","
            " \"input_usd_per_1m_tokens\": 1, \"output_usd_per_1m_tokens\": 2}]",
            "[1].cache_read_usd_per_1m_tokens: missing");
    refused("[{\"model_id\": \"b\", \"output_usd_per_1m_tokens\": 2,"
            " \"cache_read_usd_per_1m_tokens\": 0}]", "[0].input_usd_per_1m_tokens: missing");
    refused("[{\"model_id\": \"b\", \"input_usd_per_1m_tokens\": 2,"
            " \"cache_read_usd_per_1m_tokens\": 0}]", "[0].output_usd_per_1m_tokens: missing");
    refused("[" E("\"a\"", "-1", "2", "0.1") "]",
            "[0].input_usd_per_1m_tokens: must be a finite number >= 0");
    refused("[" E("\"a\"", "1", "-0.000001", "0.1") "]", "[0].output_usd_per_1m_tokens");
    refused("[" E("\"a\"", "1", "2", "null") "]", "[0].cache_read_usd_per_1m_tokens: must be");
    refused("[" E("\"a\"", "\"3.0\"", "2", "0.1") "]", "[0].input_usd_per_1m_tokens: must be");
    refused("[" E("\"a\"", "1e999", "2", "0.1") "]", "[0].input_usd_per_1m_tokens: must be a finite");
    refused("[" E("\"a\"", "1", "2", "0.1") "," E("\"b\"", "1", "2", "0.1") ","
            E("\"a\"", "1", "3", "0.1") "]", "[2].model_id: duplicate of [0]");
    refused("[" E("\"a\"", "2e6", "2", "0.1") "]", "between 0 and");   /* rates.c's bound */
}

static rates_t *table(const char *json)
{
    char err[256];
    rates_t *r = ratediff_parse(json, strlen(json), 1.0, err, sizeof err);
    if (!r) fprintf(stderr, "  %s\n", err);
    return r;
}

static void test_diff(void)
{
    rates_t *old = table("[" E("\"a\"", "1", "2", "0.1") "," E("\"b\"", "3", "15", "0.3") ","
                         E("\"c\"", "1", "1", "1") "]");
    rates_t *new_ = table("[" E("\"d\"", "0.5", "1", "0") "," E("\"c\"", "1", "1", "1") ","
                          E("\"b\"", "3.5", "15", "0.35") "]");
    T_CHECK(old && new_);
    ratediff_t d;
    T_EQ_INT(ratediff_compute(old, new_, &d), 0);
    T_EQ_INT(d.n, 3);
    T_EQ_INT(d.added, 1);
    T_EQ_INT(d.removed, 1);
    T_EQ_INT(d.changed, 1);
    char line[512], sum[64];
    if (d.n == 3) {
        T_EQ_STR(d.v[0].model, "a");
        T_EQ_INT(d.v[0].kind, RATEDIFF_REMOVED);
        T_EQ_INT(d.v[0].old.output, 2 * C);
        T_EQ_STR(ratediff_line(&d.v[0], 0, line, sizeof line),
                 "removed  a  1.000000000 / 2.000000000 / 0.100000000");
        T_EQ_STR(d.v[1].model, "b");
        T_EQ_INT(d.v[1].kind, RATEDIFF_CHANGED);
        T_EQ_INT(d.v[1].old.input, 3 * C);
        T_EQ_INT(d.v[1].new_.input, 35 * C / 10);
        T_EQ_STR(ratediff_line(&d.v[1], 0, line, sizeof line),
                 "changed  b  3.000000000 / 15.000000000 / 0.300000000 -> "
                 "3.500000000 / 15.000000000 / 0.350000000");
        T_EQ_STR(d.v[2].model, "d");
        T_EQ_INT(d.v[2].kind, RATEDIFF_ADDED);
        T_EQ_STR(ratediff_line(&d.v[2], 3, line, sizeof line),
                 "added    d    0.500000000 / 1.000000000 / 0.000000000");
    }
    T_EQ_STR(ratediff_summary(&d, sum, sizeof sum), "1 added, 1 removed, 1 changed");
    ratediff_free(&d);
    T_EQ_INT(d.n, 0);

    /* the same table: nothing; against nothing: every model added / removed */
    T_EQ_INT(ratediff_compute(new_, new_, &d), 0);
    T_EQ_INT(d.n, 0);
    ratediff_free(&d);
    T_EQ_INT(ratediff_compute(NULL, new_, &d), 0);
    T_EQ_INT(d.added, 3);
    T_EQ_INT(d.n, 3);
    ratediff_free(&d);
    T_EQ_INT(ratediff_compute(old, NULL, &d), 0);
    T_EQ_INT(d.removed, 3);
    ratediff_free(&d);
    /* one price a nano apart is a change */
    rates_t *near = table("[" E("\"a\"", "1", "2", "0.1") "," E("\"b\"", "3", "15", "0.300000001") ","
                          E("\"c\"", "1", "1", "1") "]");
    T_EQ_INT(ratediff_compute(old, near, &d), 0);
    T_EQ_INT(d.changed, 1);
    T_EQ_INT(d.n, 1);
    if (d.n == 1) T_EQ_INT(d.v[0].new_.cache_read - d.v[0].old.cache_read, 1);
    ratediff_free(&d);
    rates_free(near);
    rates_free(old);
    rates_free(new_);
}

int main(void)
{
    T_RUN(test_parse_good);
    T_RUN(test_parse_refused);
    T_RUN(test_diff);
    return t_summary("ratediff");
}
