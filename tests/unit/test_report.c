/* Unit tests for report: parsing --by and --since/--until days, and
 * report_write merging two ledgers (written with the ledger API) into JSON,
 * CSV and table output with credits exact to 9 decimals; --by hour, the
 * team/key/model filters, the echoed range, the group cap, and a report from
 * an open ledger equal to one from its path. */
#include "report.h"
#include "ledger.h"
#include "t.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <unistd.h>

#define C NANOS_PER_CREDIT
#define DAY_MS 86400000LL
#define HOUR_MS 3600000LL
#define D1 1795392000000LL          /* 2026-11-23T00:00:00Z, ms */
#define D2 (D1 + DAY_MS)

static char tmpdir[64], path_a[128], path_b[128];

static void test_parse_by(void)
{
    T_EQ_INT(report_parse_by("team,model"), LEDGER_BY_TEAM | LEDGER_BY_MODEL);
    T_EQ_INT(report_parse_by("team"), LEDGER_BY_TEAM);
    T_EQ_INT(report_parse_by("key"), LEDGER_BY_KEY);
    T_EQ_INT(report_parse_by("model"), LEDGER_BY_MODEL);
    T_EQ_INT(report_parse_by("day"), LEDGER_BY_DAY);
    T_EQ_INT(report_parse_by("day,team"), LEDGER_BY_TEAM | LEDGER_BY_DAY);
    T_EQ_INT(report_parse_by("team,key,model,day"), 15);
    T_EQ_INT(report_parse_by("team,team"), LEDGER_BY_TEAM);
    T_EQ_INT(report_parse_by("foo"), -1);
    T_EQ_INT(report_parse_by("team,foo"), -1);
    T_EQ_INT(report_parse_by("Team"), -1);
    T_EQ_INT(report_parse_by("team model"), -1);
    T_EQ_INT(report_parse_by("teams"), -1);
}

static void expect_day(const char *s, int64_t want)
{
    int64_t ms = 42;
    int rc = report_parse_day(s, &ms);
    if (want == -1) {
        if (rc != -1) fprintf(stderr, "  \"%s\" accepted as %lld\n", s, (long long)ms);
        T_EQ_INT(rc, -1);
        if (rc == -1) T_EQ_INT(ms, 42);   /* untouched on failure */
    } else {
        if (rc != 0) fprintf(stderr, "  \"%s\" refused\n", s);
        T_EQ_INT(rc, 0);
        T_EQ_INT(ms, want);
    }
}

static void test_parse_day(void)
{
    expect_day("2026-11-23", 1795392000000LL);
    expect_day("1970-01-01", 0);
    expect_day("2024-02-29", 1709164800000LL);
    expect_day("2026-03-01", 1772323200000LL);
    expect_day("2026-12-31", 1798675200000LL);
    expect_day("1969-12-31", -86400000LL);
    expect_day("2026-13-01", -1);
    expect_day("2026-00-10", -1);
    expect_day("2026-11-00", -1);
    expect_day("2026-11-32", -1);
    expect_day("2026/11/23", -1);
    expect_day("20261123", -1);
    expect_day("26-11-23", -1);
    expect_day("2026-11-2", -1);
    expect_day("2026-11-230", -1);
    expect_day("2026-11-23T00:00:00Z", -1);
    expect_day("2026-1-023", -1);
    expect_day("abcd-ef-gh", -1);
    expect_day("", -1);
}

/* "-1 if malformed": dates that do not exist, and fields that are not all
 * digits (sscanf's %d takes leading blanks and a sign). */
static void test_parse_day_strict(void)
{
    expect_day("2026-02-30", -1);
    expect_day("2026-04-31", -1);
    expect_day("2025-02-29", -1);
    expect_day("2026-11- 3", -1);
    expect_day(" 026-11-23", -1);
    expect_day("+026-11-23", -1);
    expect_day("-026-11-23", -1);
    expect_day("2026-+1-23", -1);
}

static ledger_rec_t rec(const char *id, const char *team, const char *model,
                        int64_t started_ms, ledger_state_t state, nanos_t charged,
                        int64_t prompt, int64_t completion, int64_t cached)
{
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team, sizeof r.team, "%s", team);
    snprintf(r.key_id, sizeof r.key_id, "k-%s", team);
    snprintf(r.model, sizeof r.model, "%s", model);
    r.started_ms = started_ms;
    r.reserved = 10 * C;
    r.state = state;
    r.charged = charged;
    r.prompt = prompt;
    r.completion = completion;
    r.cached = cached;
    r.ended_ms = started_ms + 100;
    r.status = 200;
    r.price_input = 3 * C;                /* one price set, unless a test says otherwise */
    r.price_output = 15 * C;
    r.price_cache_read = 3 * C / 10;
    return r;
}

/* Writes begin + completion for each record and closes the ledger. */
static int write_ledger(const char *path, const ledger_rec_t *rs, int n)
{
    char err[512];
    ledger_t *l = ledger_open(path, err, sizeof err);
    if (!l) { fprintf(stderr, "  %s\n", err); return -1; }
    if (ledger_writer_start(l) != 0) { ledger_close(l, 0); return -1; }
    for (int i = 0; i < n; i++) {
        ledger_rec_t b = rs[i];
        b.state = LEDGER_INFLIGHT;
        if (ledger_submit(l, &b, NULL, NULL) != 0 ||
            ledger_submit(l, &rs[i], NULL, NULL) != 0) {
            ledger_close(l, 0);
            return -1;
        }
    }
    ledger_close(l, 5000);                /* flushes the queue */
    return 0;
}

static int write_fixtures(void)
{
    const ledger_rec_t a[] = {
        rec("a1", "a", "m1", D1 + 1 * HOUR_MS, LEDGER_SETTLED, 1000000001LL, 10, 5, 1),
        rec("a2", "b", "m2", D1 + 2 * HOUR_MS, LEDGER_SETTLED, 2 * C, 20, 10, 0),
    };
    const ledger_rec_t b[] = {
        rec("b1", "a", "m1", D1 + 3 * HOUR_MS, LEDGER_ESTIMATED, 2500000000LL, 30, 15, 2),
        rec("b2", "a", "m1", D2 + 1 * HOUR_MS, LEDGER_SETTLED, 7, 1, 1, 0),
        rec("b3", "c", "m,\"q\"", D2 + 2 * HOUR_MS, LEDGER_FAILED, 0, 0, 0, 0),
    };
    return write_ledger(path_a, a, 2) == 0 && write_ledger(path_b, b, 3) == 0 ? 0 : -1;
}

/* Runs report_write into a string (free it). NULL on error, reason in err. */
static char *run_report(int by, report_format_t fmt, int64_t since, int64_t until,
                        char *err, size_t errlen)
{
    const char *paths[] = {path_a, path_b};
    report_opts_t o = {.ledgers = paths, .n_ledgers = 2, .since_ms = since, .until_ms = until,
                       .by = by, .format = fmt};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    err[0] = '\0';
    int rc = report_write(&o, f, err, errlen);
    fclose(f);
    if (rc != 0) { free(buf); return NULL; }
    return buf;
}

/* Counts "credits" values in raw JSON text; each must be digits, a point and
 * exactly 9 digits. Returns the count, or -1 on a malformed one. */
static int count_credits(const char *s)
{
    int n = 0;
    for (const char *p = strstr(s, "\"credits\":"); p; p = strstr(p, "\"credits\":")) {
        p += strlen("\"credits\":");
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '-') p++;
        if (!isdigit((unsigned char)*p)) return -1;
        while (isdigit((unsigned char)*p)) p++;
        if (*p++ != '.') return -1;
        int frac = 0;
        while (isdigit((unsigned char)p[frac])) frac++;
        if (frac != 9) return -1;
        n++;
    }
    return n;
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long jint(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : -999;
}

static void test_json_merged(void)
{
    char err[512];
    char *s = run_report(LEDGER_BY_TEAM | LEDGER_BY_MODEL, REPORT_JSON, 0, INT64_MAX,
                         err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) { fprintf(stderr, "  report_write: %s\n", err); return; }
    /* exact credits text */
    T_EQ_INT(count_credits(s), 4);
    T_CHECK(strstr(s, "3.500000008") != NULL);
    T_CHECK(strstr(s, "2.000000000") != NULL);
    T_CHECK(strstr(s, "0.000000000") != NULL);
    T_CHECK(strstr(s, "5.500000008") != NULL);
    T_CHECK(strstr(s, "3.500000008e") == NULL && strstr(s, "E+") == NULL);

    cJSON *root = cJSON_Parse(s);
    T_CHECK(root != NULL);
    if (!root) { fprintf(stderr, "%s\n", s); free(s); return; }
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    T_EQ_INT(cJSON_GetArraySize(rows), 3);
    const cJSON *r0 = cJSON_GetArrayItem(rows, 0);
    const cJSON *r1 = cJSON_GetArrayItem(rows, 1);
    const cJSON *r2 = cJSON_GetArrayItem(rows, 2);
    /* a/m1 merged: a1 from the first ledger, b1 and b2 from the second */
    T_EQ_STR(jstr(r0, "team"), "a");
    T_EQ_STR(jstr(r0, "model"), "m1");
    T_CHECK(cJSON_GetObjectItemCaseSensitive(r0, "key") == NULL);
    T_CHECK(cJSON_GetObjectItemCaseSensitive(r0, "day") == NULL);
    T_EQ_INT(jint(r0, "requests"), 3);
    T_EQ_INT(jint(r0, "prompt_tokens"), 41);
    T_EQ_INT(jint(r0, "completion_tokens"), 21);
    T_EQ_INT(jint(r0, "cached_tokens"), 3);
    T_EQ_STR(jstr(r1, "team"), "b");
    T_EQ_STR(jstr(r1, "model"), "m2");
    T_EQ_INT(jint(r1, "requests"), 1);
    T_EQ_INT(jint(r1, "prompt_tokens"), 20);
    T_EQ_STR(jstr(r2, "team"), "c");
    T_EQ_STR(jstr(r2, "model"), "m,\"q\"");
    T_EQ_INT(jint(r2, "requests"), 1);
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(root, "total");
    T_EQ_INT(jint(tot, "requests"), 5);
    T_EQ_INT(jint(tot, "prompt_tokens"), 61);
    T_EQ_INT(jint(tot, "completion_tokens"), 31);
    T_EQ_INT(jint(tot, "cached_tokens"), 3);
    /* credits in row order: 3.500000008, 2.000000000, 0.000000000, total */
    const char *p1 = strstr(s, "3.500000008"), *p2 = strstr(s, "2.000000000");
    const char *p3 = strstr(s, "0.000000000"), *p4 = strstr(s, "5.500000008");
    T_CHECK(p1 && p2 && p3 && p4 && p1 < p2 && p2 < p3 && p3 < p4);
    cJSON_Delete(root);
    free(s);
}

static void test_json_ungrouped_and_window(void)
{
    char err[512];
    /* no grouping: the two ledgers' totals merge into one row */
    char *s = run_report(0, REPORT_JSON, 0, INT64_MAX, err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    cJSON *root = cJSON_Parse(s);
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    T_EQ_INT(cJSON_GetArraySize(rows), 1);
    const cJSON *r0 = cJSON_GetArrayItem(rows, 0);
    T_EQ_INT(jint(r0, "requests"), 5);
    T_CHECK(cJSON_GetObjectItemCaseSensitive(r0, "team") == NULL);
    T_EQ_INT(count_credits(s), 2);
    T_CHECK(strstr(s, "5.500000008") != NULL);
    cJSON_Delete(root);
    free(s);

    /* [D2, D2 + 1 day) by team and day: b2 and b3 only */
    s = run_report(LEDGER_BY_TEAM | LEDGER_BY_DAY, REPORT_JSON, D2, D2 + DAY_MS,
                   err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    root = cJSON_Parse(s);
    rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    T_EQ_INT(cJSON_GetArraySize(rows), 2);
    r0 = cJSON_GetArrayItem(rows, 0);
    const cJSON *r1 = cJSON_GetArrayItem(rows, 1);
    T_EQ_STR(jstr(r0, "team"), "a");
    T_EQ_STR(jstr(r0, "day"), "2026-11-24");
    T_EQ_INT(jint(r0, "requests"), 1);
    T_EQ_STR(jstr(r1, "team"), "c");
    T_EQ_STR(jstr(r1, "day"), "2026-11-24");
    T_EQ_INT(jint(cJSON_GetObjectItemCaseSensitive(root, "total"), "requests"), 2);
    T_EQ_INT(count_credits(s), 3);
    T_CHECK(strstr(s, "0.000000007") != NULL);
    T_CHECK(strstr(s, "3.500000008") == NULL);
    cJSON_Delete(root);
    free(s);

    /* an empty window: no rows, zero total */
    s = run_report(LEDGER_BY_TEAM, REPORT_JSON, D1 - DAY_MS, D1, err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    root = cJSON_Parse(s);
    T_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "rows")), 0);
    T_EQ_INT(jint(cJSON_GetObjectItemCaseSensitive(root, "total"), "requests"), 0);
    T_EQ_INT(count_credits(s), 1);
    T_CHECK(strstr(s, "0.000000000") != NULL);
    cJSON_Delete(root);
    free(s);
}

static void test_csv(void)
{
    char err[512];
    char *s = run_report(LEDGER_BY_TEAM | LEDGER_BY_MODEL, REPORT_CSV, 0, INT64_MAX,
                         err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    T_EQ_STR(s,
        "team,model,price_input,price_output,price_cache_read,requests,prompt_tokens,"
        "completion_tokens,cached_tokens,credits\n"
        "a,m1,3.000000000,15.000000000,0.300000000,3,41,21,3,3.500000008\n"
        "b,m2,3.000000000,15.000000000,0.300000000,1,20,10,0,2.000000000\n"
        "c,\"m,\"\"q\"\"\",3.000000000,15.000000000,0.300000000,1,0,0,0,0.000000000\n");
    free(s);

    s = run_report(LEDGER_BY_DAY, REPORT_CSV, 0, INT64_MAX, err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    T_EQ_STR(s,
        "day,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n"
        "2026-11-23,3,60,30,3,5.500000001\n"
        "2026-11-24,2,1,1,0,0.000000007\n");
    free(s);
}

static void test_table(void)
{
    char err[512];
    char *s = run_report(LEDGER_BY_TEAM, REPORT_TABLE, 0, INT64_MAX, err, sizeof err);
    T_CHECK(s != NULL);
    if (!s) return;
    T_CHECK(strncmp(s, "team  ", 6) == 0);
    const char *tot = strstr(s, "\nTOTAL");
    T_CHECK(tot != NULL);
    T_CHECK(tot && strstr(tot, "5.500000008\n") != NULL);
    T_CHECK(strstr(s, "3.500000008\n") != NULL);
    free(s);
}

static void test_missing_ledger(void)
{
    char missing[160], err[512];
    snprintf(missing, sizeof missing, "%s/nope.db", tmpdir);
    const char *paths[] = {path_a, missing};
    report_opts_t o = {.ledgers = paths, .n_ledgers = 2, .since_ms = 0, .until_ms = INT64_MAX,
                       .by = LEDGER_BY_TEAM, .format = REPORT_JSON};
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    err[0] = '\0';
    T_EQ_INT(report_write(&o, f, err, sizeof err), -1);
    fclose(f);
    T_CHECK(strstr(err, missing) != NULL);
    T_EQ_INT(len, 0);                     /* nothing written on failure */
    T_EQ_INT(access(missing, F_OK), -1);  /* and no file created */
    free(buf);
}

/* --by hour, the filters, the echoed range, the group cap, and a report
 * from a ledger already open (the server's) equal to one from its path. */
static char *report_with(report_opts_t o, char *err, size_t errlen, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    err[0] = '\0';
    *rc = report_write(&o, f, err, errlen);
    fclose(f);
    return buf;
}

static void test_hour_and_filters(void)
{
    const char *paths[] = {path_a, path_b};
    char err[512];
    int rc;
    report_opts_t o = {.ledgers = paths, .n_ledgers = 2, .since_ms = 0, .until_ms = INT64_MAX,
                       .by = LEDGER_BY_TEAM | LEDGER_BY_HOUR, .format = REPORT_CSV};
    T_EQ_INT(report_parse_by("team,hour"), LEDGER_BY_TEAM | LEDGER_BY_HOUR);
    T_EQ_INT(report_parse_by("hour"), LEDGER_BY_HOUR);
    char *s = report_with(o, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    T_EQ_STR(s,
        "team,hour,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n"
        "a,2026-11-23T01:00:00Z,1,10,5,1,1.000000001\n"
        "a,2026-11-23T03:00:00Z,1,30,15,2,2.500000000\n"
        "a,2026-11-24T01:00:00Z,1,1,1,0,0.000000007\n"
        "b,2026-11-23T02:00:00Z,1,20,10,0,2.000000000\n"
        "c,2026-11-24T02:00:00Z,1,0,0,0,0.000000000\n");
    free(s);
    /* filters: team a, then model m1 from 02:00 on the 23rd, then a key */
    o.team = "a";
    o.by = LEDGER_BY_MODEL;
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_STR(s, "model,price_input,price_output,price_cache_read,requests,prompt_tokens,"
                "completion_tokens,cached_tokens,credits\n"
                "m1,3.000000000,15.000000000,0.300000000,3,41,21,3,3.500000008\n");
    free(s);
    o.team = NULL;
    o.model = "m1";
    o.since_ms = D1 + 2 * HOUR_MS;
    o.by = LEDGER_BY_DAY;
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_STR(s, "day,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n"
                "2026-11-23,1,30,15,2,2.500000000\n2026-11-24,1,1,1,0,0.000000007\n");
    free(s);
    o.model = NULL;
    o.since_ms = 0;
    o.key = "k-b";
    o.by = LEDGER_BY_KEY;
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_STR(s, "key,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n"
                "k-b,1,20,10,0,2.000000000\n");
    free(s);
    o.key = "nobody";
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_STR(s, "key,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n");
    free(s);
}

static void test_labels_cap_and_open(void)
{
    const char *paths[] = {path_b};
    char err[512];
    int rc;
    report_opts_t o = {.ledgers = paths, .n_ledgers = 1, .since_ms = 0, .until_ms = INT64_MAX,
                       .by = LEDGER_BY_TEAM, .format = REPORT_JSON};
    char *plain = report_with(o, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    T_CHECK(plain && !strstr(plain, "\"since\"") && !strstr(plain, "\"until\""));
    o.since_label = "2026-11-01T00:00:00.000Z";
    o.until_label = "2026-12-01T00:00:00.000Z";
    char *lab = report_with(o, err, sizeof err, &rc);
    cJSON *a = cJSON_Parse(plain), *b = cJSON_Parse(lab);
    T_CHECK(a && b);
    T_EQ_STR(jstr(b, "since"), "2026-11-01T00:00:00.000Z");
    T_EQ_STR(jstr(b, "until"), "2026-12-01T00:00:00.000Z");
    cJSON_DeleteItemFromObject(b, "since");
    cJSON_DeleteItemFromObject(b, "until");
    T_CHECK(cJSON_Compare(a, b, 1));      /* otherwise the same answer */
    cJSON_Delete(a);
    cJSON_Delete(b);
    free(lab);

    /* the same report from the ledger already open */
    char e[256];
    ledger_t *l = ledger_open(path_b, e, sizeof e);
    T_CHECK(l != NULL);
    if (!l) { free(plain); return; }
    T_EQ_INT(ledger_writer_start(l), 0);
    report_opts_t oo = o;
    oo.ledgers = NULL;
    oo.n_ledgers = 0;
    oo.open = l;
    oo.since_label = oo.until_label = NULL;
    char *opened = report_with(oo, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    T_EQ_STR(opened, plain);
    free(opened);
    /* more groups than the cap: refused, nothing written */
    oo.max_groups = 1;
    opened = report_with(oo, err, sizeof err, &rc);
    T_EQ_INT(rc, REPORT_TOO_MANY);
    T_EQ_STR(opened, "");
    T_CHECK(strstr(err, "more than 1 groups") != NULL);
    free(opened);
    oo.max_groups = 2;                    /* exactly at the cap: fine */
    opened = report_with(oo, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    free(opened);
    ledger_close(l, 1000);
    free(plain);
}

static void remove_ledger(const char *path)
{
    char p[200];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

/* A model charged at several price sets gets a row for each (and rows from
 * before prices were recorded one with null prices), from the rollup's
 * whole hours and the requests' partial ones alike; a grouping without the
 * model sums them. */
static void test_price_sets(void)
{
    char path[160], err[512];
    snprintf(path, sizeof path, "%s/prices.db", tmpdir);
    ledger_rec_t v[] = {
        rec("p1", "a", "m1", D1 + HOUR_MS + 10 * 60000, LEDGER_SETTLED, 100, 10, 1, 0),
        rec("p2", "a", "m1", D1 + HOUR_MS + 20 * 60000, LEDGER_SETTLED, 200, 20, 2, 0),
        rec("p3", "a", "m1", D1 + 5 * HOUR_MS, LEDGER_SETTLED, 300, 30, 3, 0),
        rec("p4", "a", "m1", D1 + 6 * HOUR_MS, LEDGER_SETTLED, 400, 40, 4, 0),
    };
    for (int i = 1; i <= 2; i++) {        /* p2, p3: the new prices */
        v[i].price_input = 3500000000LL;
        v[i].price_cache_read = 350000000LL;
    }
    v[3].price_input = v[3].price_output = v[3].price_cache_read = -1;   /* not recorded */
    T_EQ_INT(write_ledger(path, v, 4), 0);
    const char *paths[] = {path};
    report_opts_t o = {.ledgers = paths, .n_ledgers = 1, .since_ms = 0, .until_ms = INT64_MAX,
                       .by = LEDGER_BY_MODEL, .format = REPORT_CSV};
    int rc;
    char *s = report_with(o, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    T_EQ_STR(s,
        "model,price_input,price_output,price_cache_read,requests,prompt_tokens,"
        "completion_tokens,cached_tokens,credits\n"
        "m1,,,,1,40,4,0,0.000000400\n"
        "m1,3.000000000,15.000000000,0.300000000,1,10,1,0,0.000000100\n"
        "m1,3.500000000,15.000000000,0.350000000,2,50,5,0,0.000000500\n");
    free(s);
    /* from 01:15: 01:00-02:00 is a partial hour read from the requests */
    o.since_ms = D1 + HOUR_MS + 15 * 60000;
    o.format = REPORT_JSON;
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_INT(rc, 0);
    cJSON *root = s ? cJSON_Parse(s) : NULL;
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
    T_EQ_INT(cJSON_GetArraySize(rows), 2);
    const cJSON *r0 = cJSON_GetArrayItem(rows, 0), *r1 = cJSON_GetArrayItem(rows, 1);
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r0, "price_input")));
    T_CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r0, "price_cache_read")));
    T_EQ_INT(jint(r1, "requests"), 2);
    T_CHECK(s && strstr(s, "\"price_input\":\t3.500000000") != NULL);
    T_CHECK(s && strstr(s, "\"price_cache_read\":\t0.350000000") != NULL);
    cJSON_Delete(root);
    free(s);
    /* by team: one row, no price columns */
    o.since_ms = 0;
    o.by = LEDGER_BY_TEAM;
    o.format = REPORT_CSV;
    s = report_with(o, err, sizeof err, &rc);
    T_EQ_STR(s, "team,requests,prompt_tokens,completion_tokens,cached_tokens,credits\n"
                "a,4,100,10,0,0.000001000\n");
    free(s);
    /* the table: a column per price, "-" when not recorded */
    o.by = LEDGER_BY_MODEL;
    o.format = REPORT_TABLE;
    s = report_with(o, err, sizeof err, &rc);
    T_CHECK(s && strstr(s, "price_input") && strstr(s, "3.500000000") && strstr(s, " - "));
    free(s);
    remove_ledger(path);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pinmeter-report-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    snprintf(path_a, sizeof path_a, "%s/a.db", tmpdir);
    snprintf(path_b, sizeof path_b, "%s/b.db", tmpdir);
    T_RUN(test_parse_by);
    T_RUN(test_parse_day);
    T_RUN(test_parse_day_strict);
    if (write_fixtures() != 0) {
        fprintf(stderr, "cannot write the fixture ledgers\n");
        t_fail++;
    } else {
        T_RUN(test_json_merged);
        T_RUN(test_json_ungrouped_and_window);
        T_RUN(test_csv);
        T_RUN(test_table);
        T_RUN(test_missing_ledger);
        T_RUN(test_hour_and_filters);
        T_RUN(test_labels_cap_and_open);
        T_RUN(test_price_sets);
    }
    remove_ledger(path_a);
    remove_ledger(path_b);
    rmdir(tmpdir);
    return t_summary("report");
}
