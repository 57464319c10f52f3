/* report: reads groups from each ledger (or from the one the server has
 * open), merges equal groups across ledgers (a fleet's report is one
 * command), and formats them. */
#include "report_int.h"
#include "base.h"
#include "utc.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef report_row_t row_t;
typedef report_rows_t rows_t;

int report_parse_by(const char *s)
{
    int by = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        int found = 0;
        for (int i = 0; i < REPORT_NF; i++)
            if (strcmp(tok, report_fields[i]) == 0) { by |= report_flags[i]; found = 1; }
        if (!found) return -1;
    }
    return by;
}

int report_parse_day(const char *s, int64_t *ms)
{
    return utc_parse_date(s, ms);
}

static int cmp_str(const char *a, const char *b)
{
    if (!a || !b) return (a != NULL) - (b != NULL);
    return strcmp(a, b);
}

static int cmp_row(const void *pa, const void *pb)
{
    const row_t *a = pa, *b = pb;
    for (int i = 0; i < REPORT_NF; i++) {
        int c = cmp_str(a->f[i], b->f[i]);
        if (c) return c;
    }
    for (int k = 0; k < 3; k++)
        if (a->price[k] != b->price[k]) return a->price[k] < b->price[k] ? -1 : 1;
    return 0;
}

static int collect(void *ud, const ledger_group_t *g)
{
    rows_t *rs = ud;
    if (rs->max && rs->n >= rs->max) {
        rs->failed = rs->too_many = 1;
        return -1;
    }
    if (rs->n == rs->cap) {
        size_t cap = rs->cap ? rs->cap * 2 : 64;
        row_t *nv = realloc(rs->v, cap * sizeof *nv);
        if (!nv) { rs->failed = 1; return -1; }
        rs->v = nv;
        rs->cap = cap;
    }
    row_t *r = &rs->v[rs->n++];
    const char *f[REPORT_NF] = {g->team, g->key, g->model, g->day, g->hour};
    for (int i = 0; i < REPORT_NF; i++) {
        r->f[i] = f[i] ? strdup(f[i]) : NULL;
        if (f[i] && !r->f[i]) rs->failed = 1;
    }
    r->requests = g->requests;
    r->prompt = g->prompt;
    r->completion = g->completion;
    r->cached = g->cached;
    r->credits = g->credits;
    r->price[0] = g->price_input;
    r->price[1] = g->price_output;
    r->price[2] = g->price_cache_read;
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
            for (int k = 0; k < REPORT_NF; k++) free(b->f[k]);
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

/* A price for a table or CSV cell: credits per 1M tokens, or "" when not
 * recorded. */
static const char *price_text(nanos_t v, char *buf)
{
    if (v < 0) { buf[0] = '\0'; return buf; }
    return money_fmt(v, buf);
}

static void write_json(const rows_t *rs, const row_t *tot, const report_opts_t *ro, FILE *out)
{
    int by = ro->by;
    char buf[MONEY_FMT_MAX];
    cJSON *root = cJSON_CreateObject(), *rows = cJSON_AddArrayToObject(root, "rows");
    for (size_t i = 0; i < rs->n; i++) {
        cJSON *o = cJSON_CreateObject();
        for (int k = 0; k < REPORT_NF; k++)
            if (by & report_flags[k])
                cJSON_AddStringToObject(o, report_fields[k], rs->v[i].f[k] ? rs->v[i].f[k] : "");
        for (int k = 0; (by & LEDGER_BY_PRICE) && k < 3; k++) {
            if (rs->v[i].price[k] >= 0)
                cJSON_AddItemToObject(o, report_price_fields[k],
                                      cJSON_CreateRaw(money_fmt(rs->v[i].price[k], buf)));
            else
                cJSON_AddNullToObject(o, report_price_fields[k]);
        }
        add_counters(o, &rs->v[i]);
        cJSON_AddItemToArray(rows, o);
    }
    cJSON *t = cJSON_AddObjectToObject(root, "total");
    add_counters(t, tot);
    if (ro->since_label) cJSON_AddStringToObject(root, "since", ro->since_label);
    if (ro->until_label) cJSON_AddStringToObject(root, "until", ro->until_label);
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
    for (int k = 0; k < REPORT_NF; k++)
        if (by & report_flags[k]) fprintf(out, "%s,", report_fields[k]);
    for (int k = 0; (by & LEDGER_BY_PRICE) && k < 3; k++)
        fprintf(out, "%s,", report_price_fields[k]);
    fprintf(out, "requests,prompt_tokens,completion_tokens,cached_tokens,credits\n");
    for (size_t i = 0; i < rs->n; i++) {
        const row_t *r = &rs->v[i];
        for (int k = 0; k < REPORT_NF; k++)
            if (by & report_flags[k]) { csv_field(out, r->f[k] ? r->f[k] : ""); fputc(',', out); }
        for (int k = 0; (by & LEDGER_BY_PRICE) && k < 3; k++)
            fprintf(out, "%s,", price_text(r->price[k], buf));
        fprintf(out, "%lld,%lld,%lld,%lld,%s\n", (long long)r->requests, (long long)r->prompt,
                (long long)r->completion, (long long)r->cached, money_fmt(r->credits, buf));
    }
}

static void write_table(const rows_t *rs, const row_t *tot, int by, FILE *out)
{
    int w[REPORT_NF] = {4, 3, 5, 10, 20};
    for (int k = 0; k < REPORT_NF; k++) {
        if ((int)strlen(report_fields[k]) > w[k]) w[k] = (int)strlen(report_fields[k]);
        for (size_t i = 0; i < rs->n; i++)
            if (rs->v[i].f[k] && (int)strlen(rs->v[i].f[k]) > w[k]) w[k] = (int)strlen(rs->v[i].f[k]);
    }
    char buf[MONEY_FMT_MAX];
    int prices = (by & LEDGER_BY_PRICE) != 0;
    for (int k = 0; k < REPORT_NF; k++)
        if (by & report_flags[k]) fprintf(out, "%-*s  ", w[k], report_fields[k]);
    for (int k = 0; prices && k < 3; k++) fprintf(out, "%16s  ", report_price_fields[k]);
    fprintf(out, "%10s %14s %17s %14s %22s\n", "requests", "prompt_tokens",
            "completion_tokens", "cached_tokens", "credits");
    for (size_t i = 0; i <= rs->n; i++) {
        const row_t *r = i < rs->n ? &rs->v[i] : tot;
        int first = 1;
        for (int k = 0; k < REPORT_NF; k++) {
            if (!(by & report_flags[k])) continue;
            const char *v = i < rs->n ? (r->f[k] ? r->f[k] : "") : (first ? "TOTAL" : "");
            fprintf(out, "%-*s  ", w[k], v);
            first = 0;
        }
        for (int k = 0; prices && k < 3; k++)
            fprintf(out, "%16s  ", i < rs->n ? (r->price[k] < 0 ? "-" : money_fmt(r->price[k], buf))
                                             : "");
        if (!by && i == rs->n && rs->n) break;
        fprintf(out, "%10lld %14lld %17lld %14lld %22s\n", (long long)r->requests,
                (long long)r->prompt, (long long)r->completion, (long long)r->cached,
                money_fmt(r->credits, buf));
    }
}

/* Adds one ledger's groups to rs. 0, or -1 with err. */
static int read_ledger(const report_opts_t *o, int by, struct ledger *l, const char *name,
                       rows_t *rs, char *err, size_t errlen)
{
    char e[512];
    ledger_query_t q = { .since_ms = o->since_ms, .until_ms = o->until_ms, .by = by,
                         .team = o->team, .key = o->key, .model = o->model };
    if (ledger_report(l, &q, collect, rs, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s: %s", name, e);
        return -1;
    }
    if (rs->failed && !rs->too_many) {
        snprintf(err, errlen, "%s: out of memory", name);
        return -1;
    }
    return rs->failed ? -1 : 0;
}

void report_rows_free(rows_t *rs)
{
    for (size_t i = 0; i < rs->n; i++)
        for (int k = 0; k < REPORT_NF; k++) free(rs->v[i].f[k]);
    free(rs->v);
    rs->v = NULL;
    rs->n = rs->cap = 0;
}

row_t report_total(const rows_t *rs)
{
    row_t tot = {0};
    for (size_t i = 0; i < rs->n; i++) {
        tot.requests += rs->v[i].requests;
        tot.prompt += rs->v[i].prompt;
        tot.completion += rs->v[i].completion;
        tot.cached += rs->v[i].cached;
        tot.credits += rs->v[i].credits;
    }
    return tot;
}

int report_collect(const report_opts_t *o, int by, rows_t *rs, char *err, size_t errlen)
{
    int rc = REPORT_ERROR;
    if (o->open && read_ledger(o, by, o->open, "ledger", rs, err, errlen) != 0) goto done;
    for (size_t i = 0; !o->open && i < o->n_ledgers; i++) {
        char e[512];
        if (strcmp(o->ledgers[i], ":memory:") != 0 && access(o->ledgers[i], R_OK) != 0) {
            snprintf(err, errlen, "%s: no ledger there (cannot read the file)", o->ledgers[i]);
            goto done;
        }
        ledger_t *l = ledger_open_ro(o->ledgers[i], e, sizeof e);
        if (!l) { snprintf(err, errlen, "%s", e); goto done; }
        int q = read_ledger(o, by, l, o->ledgers[i], rs, err, errlen);
        ledger_close(l, 0);
        if (q != 0) goto done;
    }
    merge(rs);
    rc = 0;
done:
    if (rs->too_many) {
        rc = REPORT_TOO_MANY;
        snprintf(err, errlen, "more than %zu groups: narrow the range, the grouping or the "
                 "filters", rs->max);
    }
    return rc;
}

/* The HTML report's three readings: the table's grouping, spend by day and
 * model, and by team. */
static int write_html(const report_opts_t *o, const rows_t *rs, const row_t *tot, FILE *out,
                      char *err, size_t errlen)
{
    rows_t days = { .max = o->max_groups }, teams = { .max = o->max_groups };
    int rc = report_collect(o, LEDGER_BY_DAY | LEDGER_BY_MODEL, &days, err, errlen);
    if (rc == 0) rc = report_collect(o, LEDGER_BY_TEAM, &teams, err, errlen);
    if (rc == 0) report_html_write(out, o, rs, tot, &days, &teams, base_wall_ms());
    report_rows_free(&days);
    report_rows_free(&teams);
    return rc;
}

int report_write(const report_opts_t *o, FILE *out, char *err, size_t errlen)
{
    /* a model gets one row per price set it was charged at */
    report_opts_t eo = *o;
    if (eo.by & LEDGER_BY_MODEL) eo.by |= LEDGER_BY_PRICE;
    o = &eo;
    rows_t rs = { .max = o->max_groups };
    int rc = report_collect(o, o->by, &rs, err, errlen);
    if (rc == 0) {
        row_t tot = report_total(&rs);
        if (o->format == REPORT_JSON) write_json(&rs, &tot, o, out);
        else if (o->format == REPORT_CSV) write_csv(&rs, o->by, out);
        else if (o->format == REPORT_HTML) rc = write_html(o, &rs, &tot, out, err, errlen);
        else write_table(&rs, &tot, o->by, out);
    }
    report_rows_free(&rs);
    return rc;
}
