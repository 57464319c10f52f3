/* reconcile: the reconciliation's lines and their formats (see
 * reconcile.h). Reads the syncs of the range (with the one before it), the
 * top-ups recorded with them, and every charge settled between the first
 * and the last sync in one pass; each charge goes to its interval by a
 * binary search over the syncs' times (acctcore_interval_of). */
#include "reconcile.h"
#include "acctcore.h"
#include "ledger_account.h"
#include "utc.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct syncs {
    acctcore_sync_t *v;
    size_t n, cap;
    int failed;
} syncs_t;

typedef struct ups {                  /* the top-ups: at_ms and credits added */
    int64_t *at;
    nanos_t *added;
    size_t n, cap;
    int failed;
} ups_t;

typedef struct lines {
    acctcore_line_t *v;
    int64_t *to;                      /* [n]: v[i].to_ms, for the search */
    size_t n;
} lines_t;

int64_t reconcile_lookback_ms(int timeout_s)
{
    return ((int64_t)timeout_s + 60) * 1000;
}

static int add_sync(void *ud, const ledger_sync_t *s)
{
    syncs_t *x = ud;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        acctcore_sync_t *v = realloc(x->v, cap * sizeof *v);
        if (!v) { x->failed = 1; return 1; }
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = (acctcore_sync_t){ s->at_ms, s->total, s->loaned, s->available };
    return 0;
}

static int add_up(void *ud, const ledger_account_event_t *e)
{
    ups_t *x = ud;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        int64_t *at = realloc(x->at, cap * sizeof *at);
        if (at) x->at = at;
        nanos_t *ad = at ? realloc(x->added, cap * sizeof *ad) : NULL;
        if (ad) x->added = ad;
        if (!at || !ad) { x->failed = 1; return 1; }
        x->cap = cap;
    }
    x->at[x->n] = e->at_ms;
    x->added[x->n++] = e->credits;
    return 0;
}

static int add_charge(void *ud, int64_t ended_ms, nanos_t charged)
{
    lines_t *x = ud;
    long i = acctcore_interval_of(x->to, x->n, x->v[0].from_ms, ended_ms);
    if (i >= 0) x->v[i].pinmeter += charged;
    return 0;
}

/* The lines of o's range into *ls. 0, or an error code with err. */
static int collect(const reconcile_opts_t *o, lines_t *ls, char *err, size_t errlen)
{
    syncs_t sy = {0};
    ups_t up = {0};
    int rc = RECONCILE_ERROR;
    char e[400];
    memset(ls, 0, sizeof *ls);
    if (ledger_account_read_syncs(o->ledger, o->since_ms, o->until_ms, add_sync, &sy, e,
                               sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        goto out;
    }
    if (sy.failed) { snprintf(err, errlen, "out of memory"); goto out; }
    if (sy.n < 2) { rc = 0; goto out; }        /* no interval */
    if (o->max_lines && sy.n - 1 > o->max_lines) {
        snprintf(err, errlen, "more than %zu intervals: narrow the range", o->max_lines);
        rc = RECONCILE_TOO_MANY;
        goto out;
    }
    if (ledger_account_read_events(o->ledger, sy.v[0].at_ms + 1, sy.v[sy.n - 1].at_ms + 1,
                                LEDGER_EV_TOPUP, add_up, &up, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        goto out;
    }
    ls->n = sy.n - 1;
    ls->v = calloc(ls->n, sizeof *ls->v);
    ls->to = calloc(ls->n, sizeof *ls->to);
    if (up.failed || !ls->v || !ls->to) { snprintf(err, errlen, "out of memory"); goto out; }
    size_t u = 0;
    for (size_t i = 0; i < ls->n; i++) {
        nanos_t added = 0;            /* a top-up is recorded with the sync that saw it */
        while (u < up.n && up.at[u] < sy.v[i + 1].at_ms) u++;
        while (u < up.n && up.at[u] == sy.v[i + 1].at_ms) added += up.added[u++];
        acctcore_line(&sy.v[i], &sy.v[i + 1], added, 0, &ls->v[i]);
        ls->to[i] = ls->v[i].to_ms;
    }
    if (ledger_account_read_charges(o->ledger, sy.v[0].at_ms, sy.v[sy.n - 1].at_ms, o->lookback_ms,
                                 add_charge, ls, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        goto out;
    }
    for (size_t i = 0; i < ls->n; i++) ls->v[i].drift = ls->v[i].pinata - ls->v[i].pinmeter;
    rc = 0;
out:
    if (rc != 0) {
        free(ls->v);
        free(ls->to);
        memset(ls, 0, sizeof *ls);
    }
    free(sy.v);
    free(up.at);
    free(up.added);
    return rc;
}

typedef struct totals { nanos_t pinata, pinmeter, drift, added; size_t topups; } totals_t;

static totals_t sum(const lines_t *ls)
{
    totals_t t = {0};
    for (size_t i = 0; i < ls->n; i++) {
        t.pinata += ls->v[i].pinata;
        t.pinmeter += ls->v[i].pinmeter;
        t.drift += ls->v[i].drift;
        t.added += ls->v[i].added;
        t.topups += ls->v[i].added != 0;
    }
    return t;
}

static void add_credits(cJSON *o, const char *name, nanos_t v)
{
    char b[MONEY_FMT_MAX];
    cJSON_AddItemToObject(o, name, cJSON_CreateRaw(money_fmt(v, b)));
}

static void add_time(cJSON *o, const char *name, int has, int64_t ms)
{
    char b[UTC_FMT_MAX];
    if (has) cJSON_AddStringToObject(o, name, utc_format(ms, b));
    else cJSON_AddNullToObject(o, name);
}

static void write_json(const reconcile_opts_t *o, const lines_t *ls, FILE *out)
{
    cJSON *root = cJSON_CreateObject();
    add_time(root, "since", o->has_since, o->since_ms);
    add_time(root, "until", o->has_until, o->until_ms);
    cJSON *arr = cJSON_AddArrayToObject(root, "intervals");
    for (size_t i = 0; i < ls->n; i++) {
        const acctcore_line_t *l = &ls->v[i];
        cJSON *x = cJSON_CreateObject();
        add_time(x, "from", 1, l->from_ms);
        add_time(x, "to", 1, l->to_ms);
        add_credits(x, "total_from", l->total_from);
        add_credits(x, "total_to", l->total_to);
        cJSON_AddBoolToObject(x, "topup", l->added != 0);
        add_credits(x, "credits_added", l->added);
        add_credits(x, "pinata", l->pinata);
        add_credits(x, "pinmeter", l->pinmeter);
        add_credits(x, "drift", l->drift);
        cJSON_AddItemToArray(arr, x);
    }
    totals_t t = sum(ls);
    cJSON *tot = cJSON_AddObjectToObject(root, "total");
    cJSON_AddNumberToObject(tot, "intervals", (double)ls->n);
    cJSON_AddNumberToObject(tot, "topups", (double)t.topups);
    add_credits(tot, "credits_added", t.added);
    add_credits(tot, "pinata", t.pinata);
    add_credits(tot, "pinmeter", t.pinmeter);
    add_credits(tot, "drift", t.drift);
    char *s = cJSON_Print(root);
    if (s) fprintf(out, "%s\n", s);
    free(s);
    cJSON_Delete(root);
}

static void write_csv(const lines_t *ls, FILE *out)
{
    char a[MONEY_FMT_MAX], b[MONEY_FMT_MAX], c[MONEY_FMT_MAX], d[MONEY_FMT_MAX],
         e[MONEY_FMT_MAX], f[MONEY_FMT_MAX], t1[UTC_FMT_MAX], t2[UTC_FMT_MAX];
    fprintf(out, "from,to,total_from,total_to,credits_added,pinata,pinmeter,drift\n");
    for (size_t i = 0; i < ls->n; i++) {
        const acctcore_line_t *l = &ls->v[i];
        fprintf(out, "%s,%s,%s,%s,%s,%s,%s,%s\n", utc_format(l->from_ms, t1),
                utc_format(l->to_ms, t2), money_fmt(l->total_from, a), money_fmt(l->total_to, b),
                money_fmt(l->added, c), money_fmt(l->pinata, d), money_fmt(l->pinmeter, e),
                money_fmt(l->drift, f));
    }
}

static void write_table(const lines_t *ls, FILE *out)
{
    char a[MONEY_FMT_MAX], b[MONEY_FMT_MAX], c[MONEY_FMT_MAX], d[MONEY_FMT_MAX],
         t1[UTC_FMT_MAX], t2[UTC_FMT_MAX];
    fprintf(out, "%-24s  %-24s %18s %18s %18s %18s\n", "from", "to", "pinata",
            "credits_added", "pinmeter", "drift");
    for (size_t i = 0; i < ls->n; i++) {
        const acctcore_line_t *l = &ls->v[i];
        fprintf(out, "%-24s  %-24s %18s %18s %18s %18s\n", utc_format(l->from_ms, t1),
                utc_format(l->to_ms, t2), money_fmt(l->pinata, a), money_fmt(l->added, b),
                money_fmt(l->pinmeter, c), money_fmt(l->drift, d));
    }
    totals_t t = sum(ls);
    char label[64];
    snprintf(label, sizeof label, "TOTAL (%zu interval%s)", ls->n, ls->n == 1 ? "" : "s");
    fprintf(out, "%-50s %18s %18s %18s %18s\n", label, money_fmt(t.pinata, a),
            money_fmt(t.added, b), money_fmt(t.pinmeter, c), money_fmt(t.drift, d));
}

int reconcile_write(const reconcile_opts_t *o, FILE *out, char *err, size_t errlen)
{
    lines_t ls;
    int rc = collect(o, &ls, err, errlen);
    if (rc != 0) return rc;
    if (o->format == RECONCILE_JSON) write_json(o, &ls, out);
    else if (o->format == RECONCILE_CSV) write_csv(&ls, out);
    else write_table(&ls, out);
    free(ls.v);
    free(ls.to);
    return 0;
}
