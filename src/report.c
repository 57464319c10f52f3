/* report: reads groups from each ledger, merges equal groups across ledgers
 * (a fleet's report is one command), and formats them. */
#include "report.h"
#include "ledger.h"
#include "money.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct row {
    char *f[4];               /* team, key, model, day (NULL if not grouped) */
    int64_t requests, prompt, completion, cached;
    nanos_t credits;
} row_t;

typedef struct rows { row_t *v; size_t n, cap; } rows_t;

static const char *FIELD_NAMES[4] = {"team", "key", "model", "day"};
static const int FIELD_FLAGS[4] = {LEDGER_BY_TEAM, LEDGER_BY_KEY, LEDGER_BY_MODEL, LEDGER_BY_DAY};

int report_parse_by(const char *s)
{
    int by = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < 4; i++)
            if (strcmp(tok, FIELD_NAMES[i]) == 0) { by |= FIELD_FLAGS[i]; found = 1; }
        if (!found) return -1;
    }
    return by;
}

int report_parse_day(const char *s, int64_t *ms)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-') return -1;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return -1;
    int y = atoi(s), m = atoi(s + 5), d = atoi(s + 8);
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1] + (m == 2 && leap)) return -1;
    /* days from civil (UTC) */
    int64_t yy = y - (m <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *ms = (era * 146097 + doe - 719468) * 86400000LL;
    return 0;
}

static int cmp_str(const char *a, const char *b)
{
    if (!a || !b) return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

static int cmp_row(const void *pa, const void *pb)
{
    const row_t *a = pa, *b = pb;
    for (int i = 0; i < 4; i++) {
        int c = cmp_str(a->f[i], b->f[i]);
        if (c) return c;
    }
    return 0;
}

static int collect(void *ud, const ledger_group_t *g)
{
    rows_t *rs = ud;
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        row_t *nv = realloc(rs->v, cap * sizeof *nv);
        if (!nv) return -1;
        rs->v = nv;
        rs->cap = cap;
    }
    row_t *r = &rs->v[rs->n++];
    const char *f[4] = {g->team, g->key, g->model, g->day};
    for (int i = 0; i < 4; i++) r->f[i] = f[i] ? strdup(f[i]) : NULL;
    r->requests = g->requests;
    r->prompt = g->prompt;
    r->completion = g->completion;
    r->cached = g->cached;
    r->credits = g->credits;
    return 0;
}

/* Sorts and sums rows with equal group fields. */
static void merge(rows_t *rs)
{
    if (rs->n == 0) return;
    qsort(rs->v, rs->n, sizeof *rs->v, cmp_row);
    size_t w = 0;
    for (size_t i = 1; i < rs->n; i++) {
        row_t *a = &rs->v[w], *b = &rs->v[i];
        if (cmp_row(a, b) == 0) {
            a->requests += b->requests;
            a->prompt += b->prompt;
            a->completion += b->completion;
            a->cached += b->cached;
            a->credits += b->credits;
            for (int k = 0; k < 4; k++) free(b->f[k]);
        } else {
            rs->v[++w] = *b;
        }
    }
    rs->n = w + 1;
}

static void add_counters(cJSON *o, const row_t *r)
{
    char buf[MONEY_FMT_MAX];
    cJSON_AddNumberToObject(o, "requests", (double)r->requests);
    cJSON_AddNumberToObject(o, "prompt_tokens", (double)r->prompt);
    cJSON_AddNumberToObject(o, "completion_tokens", (double)r->completion);
    cJSON_AddNumberToObject(o, "cached_tokens", (double)r->cached);
    cJSON_AddItemToObject(o, "credits", cJSON_CreateRaw(money_fmt(r->credits, buf)));
}

static void write_json(const rows_t *rs, const row_t *tot, int by, FILE *out)
{
    cJSON *root = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(root, "rows");
    for (size_t i = 0; i < rs->n; i++) {
        cJSON *o = cJSON_CreateObject();
        for (int k = 0; k < 4; k++)
            if (by & FIELD_FLAGS[k])
                cJSON_AddStringToObject(o, FIELD_NAMES[k], rs->v[i].f[k] ? rs->v[i].f[k] : "");
        add_counters(o, &rs->v[i]);
        cJSON_AddItemToArray(rows, o);
    }
    cJSON *t = cJSON_AddObjectToObject(root, "total");
    add_counters(t, tot);
    char *s = cJSON_Print(root);
    fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(root);
}

static void csv_field(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) { fputs(s, out); return; }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"') fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

static void write_csv(const rows_t *rs, int by, FILE *out)
{
    char buf[MONEY_FMT_MAX];
    for (int k = 0; k < 4; k++)
        if (by & FIELD_FLAGS[k]) fprintf(out, "%s,", FIELD_NAMES[k]);
    fprintf(out, "requests,prompt_tokens,completion_tokens,cached_tokens,credits\n");
    for (size_t i = 0; i < rs->n; i++) {
        const row_t *r = &rs->v[i];
        for (int k = 0; k < 4; k++)
            if (by & FIELD_FLAGS[k]) { csv_field(out, r->f[k] ? r->f[k] : ""); fputc(',', out); }
        fprintf(out, "%lld,%lld,%lld,%lld,%s\n", (long long)r->requests, (long long)r->prompt,
                (long long)r->completion, (long long)r->cached, money_fmt(r->credits, buf));
    }
}

static void write_table(const rows_t *rs, const row_t *tot, int by, FILE *out)
{
    int w[4] = {4, 3, 5, 10};
    for (int k = 0; k < 4; k++) {
        if ((int)strlen(FIELD_NAMES[k]) > w[k]) w[k] = (int)strlen(FIELD_NAMES[k]);
        for (size_t i = 0; i < rs->n; i++)
            if (rs->v[i].f[k] && (int)strlen(rs->v[i].f[k]) > w[k]) w[k] = (int)strlen(rs->v[i].f[k]);
    }
    char buf[MONEY_FMT_MAX];
    for (int k = 0; k < 4; k++)
        if (by & FIELD_FLAGS[k]) fprintf(out, "%-*s  ", w[k], FIELD_NAMES[k]);
    fprintf(out, "%10s %14s %17s %14s %22s\n", "requests", "prompt_tokens",
            "completion_tokens", "cached_tokens", "credits");
    for (size_t i = 0; i <= rs->n; i++) {
        const row_t *r = i < rs->n ? &rs->v[i] : tot;
        int first = 1;
        for (int k = 0; k < 4; k++) {
            if (!(by & FIELD_FLAGS[k])) continue;
            const char *v = i < rs->n ? (r->f[k] ? r->f[k] : "") : (first ? "TOTAL" : "");
            fprintf(out, "%-*s  ", w[k], v);
            first = 0;
        }
        if (!by && i == rs->n && rs->n) break;
        fprintf(out, "%10lld %14lld %17lld %14lld %22s\n", (long long)r->requests,
                (long long)r->prompt, (long long)r->completion, (long long)r->cached,
                money_fmt(r->credits, buf));
    }
}

int report_write(const report_opts_t *o, FILE *out, char *err, size_t errlen)
{
    rows_t rs = {0};
    int rc = -1;
    for (size_t i = 0; i < o->n_ledgers; i++) {
        char e[512];
        if (strcmp(o->ledgers[i], ":memory:") != 0 && access(o->ledgers[i], R_OK) != 0) {
            snprintf(err, errlen, "%s: no ledger there (cannot read the file)", o->ledgers[i]);
            goto done;
        }
        ledger_t *l = ledger_open(o->ledgers[i], e, sizeof e);
        if (!l) { snprintf(err, errlen, "%s", e); goto done; }
        int q = ledger_report(l, o->since_ms, o->until_ms, o->by, collect, &rs, e, sizeof e);
        ledger_close(l, 0);
        if (q != 0) { snprintf(err, errlen, "%s: %s", o->ledgers[i], e); goto done; }
    }
    merge(&rs);
    row_t tot = {0};
    for (size_t i = 0; i < rs.n; i++) {
        tot.requests += rs.v[i].requests;
        tot.prompt += rs.v[i].prompt;
        tot.completion += rs.v[i].completion;
        tot.cached += rs.v[i].cached;
        tot.credits += rs.v[i].credits;
    }
    if (o->format == REPORT_JSON) write_json(&rs, &tot, o->by, out);
    else if (o->format == REPORT_CSV) write_csv(&rs, o->by, out);
    else write_table(&rs, &tot, o->by, out);
    rc = 0;
done:
    for (size_t i = 0; i < rs.n; i++)
        for (int k = 0; k < 4; k++) free(rs.v[i].f[k]);
    free(rs.v);
    return rc;
}
