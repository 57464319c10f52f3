/* Unit tests for topupcfg: Pinata's rules for the auto top-up settings,
 * from a PUT body and from the command line's flags, and the body sent. */
#include "topupcfg.h"
#include "t.h"

#include <stdlib.h>

typedef struct { const char *body, *field, *why; } bad_t;

static void test_valid(void)
{
    char f[64], why[256];
    topupcfg_t c;
    const char *b = "{\"threshold\": 5, \"amount\": 20}";
    T_EQ_INT(topupcfg_parse(b, strlen(b), &c, f, sizeof f, why, sizeof why), 0);
    T_EQ_INT(c.has_threshold, 1);
    T_CHECK(c.threshold == 5.0);
    T_EQ_INT(c.has_amount, 1);
    T_EQ_INT(c.amount, 20);
    char *s = topupcfg_json(&c);
    T_EQ_STR(s, "{\"threshold\":5,\"amount\":20}");
    free(s);
    b = "{\"amount\": null, \"threshold\": 12.75}";
    T_EQ_INT(topupcfg_parse(b, strlen(b), &c, f, sizeof f, why, sizeof why), 0);
    T_EQ_INT(c.has_amount, 0);
    s = topupcfg_json(&c);
    T_EQ_STR(s, "{\"threshold\":12.75,\"amount\":null}");
    free(s);
    /* both null: auto top-up off */
    b = "{\"threshold\": null, \"amount\": null}";
    T_EQ_INT(topupcfg_parse(b, strlen(b), &c, f, sizeof f, why, sizeof why), 0);
    T_EQ_INT(c.has_threshold + c.has_amount, 0);
    s = topupcfg_json(&c);
    T_EQ_STR(s, "{\"threshold\":null,\"amount\":null}");
    free(s);
    /* an integer written with an exponent is an integer */
    b = "{\"threshold\": 5.0000001, \"amount\": 1e3}";
    T_EQ_INT(topupcfg_parse(b, strlen(b), &c, f, sizeof f, why, sizeof why), 0);
    T_EQ_INT(c.amount, 1000);
    s = topupcfg_json(&c);
    T_EQ_STR(s, "{\"threshold\":5.0000001,\"amount\":1000}");
    free(s);
}

static void test_invalid(void)
{
    static const bad_t bad[] = {
        { "{\"threshold\": 4, \"amount\": 20}", "threshold", "at least 5" },
        { "{\"threshold\": 4.999, \"amount\": 20}", "threshold", "at least 5" },
        { "{\"threshold\": -10, \"amount\": 20}", "threshold", "at least 5" },
        { "{\"threshold\": \"10\", \"amount\": 20}", "threshold", "must be a number" },
        { "{\"threshold\": true, \"amount\": 20}", "threshold", "must be a number" },
        { "{\"threshold\": 10, \"amount\": 2.5}", "amount", "positive integer" },
        { "{\"threshold\": 10, \"amount\": 0}", "amount", "positive integer" },
        { "{\"threshold\": 10, \"amount\": -3}", "amount", "positive integer" },
        { "{\"threshold\": 10, \"amount\": 1e300}", "amount", "positive integer" },
        { "{\"threshold\": 10, \"amount\": [1]}", "amount", "positive integer" },
        { "{\"threshold\": 10, \"amount\": 20, \"enabled\": true}", "enabled", "unknown field" },
        { "{\"threshold\": 10}", "amount", "missing" },
        { "{\"amount\": 10}", "threshold", "missing" },
        { "{}", "threshold", "missing" },
        { "{\"threshold\": 10, \"threshold\": 11, \"amount\": 1}", "threshold", "twice" },
        { "[1, 2]", "", "JSON object" },
        { "not json", "", "JSON object" },
        { "", "", "JSON object" },
        { "{\"threshold\": 10, \"amount\": 1", "", "JSON object" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char f[64] = "?", why[256] = "";
        topupcfg_t c;
        int rc = topupcfg_parse(bad[i].body, strlen(bad[i].body), &c, f, sizeof f, why,
                                sizeof why);
        T_EQ_INT(rc, -1);
        T_EQ_STR(f, bad[i].field);
        if (!strstr(why, bad[i].why)) {
            fprintf(stderr, "  FAIL body %s: why \"%s\" lacks \"%s\"\n", bad[i].body, why,
                    bad[i].why);
            t_cur_failed = 1;
        }
        T_EQ_INT(c.has_threshold + c.has_amount, 0);
    }
    /* a body past the size cap is refused before it is parsed */
    char big[TOPUPCFG_BODY_MAX + 2];
    memset(big, ' ', sizeof big);
    char f[64], why[256];
    topupcfg_t c;
    T_EQ_INT(topupcfg_parse(big, sizeof big, &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "");
}

static void test_args(void)
{
    char f[64], why[256];
    topupcfg_t c;
    T_EQ_INT(topupcfg_from_args("10", "25", &c, f, sizeof f, why, sizeof why), 0);
    T_CHECK(c.threshold == 10.0);
    T_EQ_INT(c.amount, 25);
    T_EQ_INT(topupcfg_from_args("null", "null", &c, f, sizeof f, why, sizeof why), 0);
    T_EQ_INT(c.has_threshold + c.has_amount, 0);
    /* the same rules as the body */
    T_EQ_INT(topupcfg_from_args("4", "25", &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "threshold");
    T_CHECK(strstr(why, "at least 5") != NULL);
    T_EQ_INT(topupcfg_from_args("10", "2.5", &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "amount");
    T_EQ_INT(topupcfg_from_args("10", "0", &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "amount");
    /* not a JSON number: no way to smuggle another field in */
    T_EQ_INT(topupcfg_from_args("10, \"x\": 1", "5", &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "threshold");
    T_EQ_INT(topupcfg_from_args("ten", "5", &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "threshold");
    T_EQ_INT(topupcfg_from_args("10", NULL, &c, f, sizeof f, why, sizeof why), -1);
    T_EQ_STR(f, "amount");
    T_CHECK(strstr(why, "missing") != NULL);
}

int main(void)
{
    T_RUN(test_valid);
    T_RUN(test_invalid);
    T_RUN(test_args);
    return t_summary("topupcfg");
}
