/* metrics_text: the Prometheus text exposition (format 0.0.4) of a copy of
 * the registry and the gauges the caller read (see metrics.h). Families in a
 * fixed order, each with its HELP and TYPE lines; samples in the order their
 * label sets first appeared. Credits print exactly with 9 decimals
 * (money_fmt), durations from integer microseconds. Written by hand into
 * one capped buffer: a scrape of thousands of series costs no printf per
 * line. */
#include "metrics_int.h"
#include <stdlib.h>
#include <string.h>

#define OUT_MAX (64u * 1024 * 1024)

typedef struct obuf {
    char *p;
    size_t n, cap;
    int bad;                       /* out of memory or past OUT_MAX */
} obuf_t;

static int reserve(obuf_t *b, size_t more)
{
    if (b->bad) return -1;
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < b->n + more) cap *= 2;
    if (cap > OUT_MAX) {
        if (b->n + more > OUT_MAX) { b->bad = 1; return -1; }
        cap = OUT_MAX;
    }
    char *np = realloc(b->p, cap);
    if (!np) { b->bad = 1; return -1; }
    b->p = np;
    b->cap = cap;
    return 0;
}

static void put(obuf_t *b, const char *s, size_t n)
{
    if (n && reserve(b, n) == 0) {
        memcpy(b->p + b->n, s, n);
        b->n += n;
    }
}

static void puts_(obuf_t *b, const char *s) { put(b, s, strlen(s)); }

static void put_u64(obuf_t *b, uint64_t v)
{
    char t[24];
    int n = 0;
    do { t[sizeof t - 1 - n++] = (char)('0' + v % 10); v /= 10; } while (v);
    put(b, t + sizeof t - n, (size_t)n);
}

static void put_i64(obuf_t *b, int64_t v)
{
    if (v < 0) { put(b, "-", 1); put_u64(b, 0u - (uint64_t)v); }
    else put_u64(b, (uint64_t)v);
}

static void put_credits(obuf_t *b, nanos_t v)
{
    char t[MONEY_FMT_MAX];
    puts_(b, money_fmt(v, t));
}

/* v / 10^digits with exactly digits decimals ("12.000345"). */
static void put_fixed(obuf_t *b, int64_t v, int64_t scale, int digits)
{
    uint64_t mag = v < 0 ? 0u - (uint64_t)v : (uint64_t)v;
    if (v < 0) put(b, "-", 1);
    put_u64(b, mag / (uint64_t)scale);
    char t[24];
    uint64_t f = mag % (uint64_t)scale;
    t[0] = '.';
    for (int i = digits; i >= 1; i--) { t[i] = (char)('0' + f % 10); f /= 10; }
    put(b, t, (size_t)digits + 1);
}

/* A bucket bound in seconds, shortest form ("0.0025", "1", "600"). */
static void put_bound(obuf_t *b, int64_t us)
{
    put_u64(b, (uint64_t)(us / 1000000));
    int64_t f = us % 1000000;
    if (!f) return;
    char t[8];
    int n = 6;
    while (f % 10 == 0) { f /= 10; n--; }
    t[0] = '.';
    for (int i = n; i >= 1; i--) { t[i] = (char)('0' + f % 10); f /= 10; }
    put(b, t, (size_t)n + 1);
}

static void family(obuf_t *b, const char *name, const char *type, const char *help)
{
    puts_(b, "# HELP ");
    puts_(b, name);
    put(b, " ", 1);
    puts_(b, help);
    puts_(b, "\n# TYPE ");
    puts_(b, name);
    put(b, " ", 1);
    puts_(b, type);
    put(b, "\n", 1);
}

/* name{lab,extra} (either may be empty; no braces when both are) and the
 * space before the value. */
static void head(obuf_t *b, const char *name, const char *lab, size_t lab_len,
                 const char *extra)
{
    puts_(b, name);
    size_t el = extra ? strlen(extra) : 0;
    if (lab_len || el) {
        put(b, "{", 1);
        put(b, lab, lab_len);
        if (lab_len && el) put(b, ",", 1);
        put(b, extra, el);
        put(b, "}", 1);
    }
    put(b, " ", 1);
}

/* label="value" for one value, escaped, into t (room for 1100 bytes). */
static size_t one_label(char *t, const char *label, const char *value)
{
    size_t n = strlen(label);
    memcpy(t, label, n);
    t[n++] = '=';
    t[n++] = '"';
    n += metrics_escape(t + n, value ? value : "");
    t[n++] = '"';
    t[n] = '\0';
    return n;
}

static void counters(obuf_t *b, const char *name, const char *help, const mview_t *v, int kind)
{
    family(b, name, "counter", help);
    for (size_t i = 0; i < v->n[kind]; i++) {
        const mcopy_t *c = &v->c[kind][i];
        head(b, name, c->lab, c->lab_len, NULL);
        put_i64(b, c->v[0]);
        put(b, "\n", 1);
    }
}

static const char *const KINDS[3] = { "kind=\"prompt\"", "kind=\"completion\"",
                                      "kind=\"cached\"" };
static const char *const STATES[METRICS_N_STATES] = {
    "state=\"settled\"", "state=\"estimated\"", "state=\"interrupted\"" };

static void tokens_and_credits(obuf_t *b, const mview_t *v)
{
    const char *tn = "pinmeter_tokens_total", *cn = "pinmeter_credits_charged_total";
    family(b, tn, "counter", "Tokens charged: prompt (cached included, as in the ledger), "
           "completion, and the cached part of the prompt.");
    for (size_t i = 0; i < v->n[MK_TM]; i++) {
        const mcopy_t *c = &v->c[MK_TM][i];
        if (!(c->touched & MT_TOKENS)) continue;
        for (int k = 0; k < 3; k++) {
            head(b, tn, c->lab, c->lab_len, KINDS[k]);
            put_i64(b, c->v[k]);
            put(b, "\n", 1);
        }
    }
    family(b, cn, "counter", "Credits charged, by the state of the ledger row.");
    for (size_t i = 0; i < v->n[MK_TM]; i++) {
        const mcopy_t *c = &v->c[MK_TM][i];
        for (int s = 0; s < METRICS_N_STATES; s++) {
            if (!(c->touched & MT_STATE(s))) continue;
            head(b, cn, c->lab, c->lab_len, STATES[s]);
            put_credits(b, c->v[3 + s]);
            put(b, "\n", 1);
        }
    }
}

/* One gauge family over the configured teams; which = 0 cap, 1 spent,
 * 2 loaned, 3 available, 4 period end. */
static void team_gauge(obuf_t *b, const metrics_gauges_t *g, const char *name, int which,
                       const char *help)
{
    char lab[1200];
    family(b, name, "gauge", help);
    for (size_t i = 0; i < g->n_teams; i++) {
        const metrics_team_t *t = &g->teams[i];
        int shown = which == 0 ? t->capped : which == 3 ? t->capped && t->known
                  : which == 4 ? t->period_end_s > 0 : t->known;
        if (!shown) continue;
        head(b, name, lab, one_label(lab, "team", t->name), NULL);
        switch (which) {
        case 0: put_credits(b, t->cap); break;
        case 1: put_credits(b, t->spent); break;
        case 2: put_credits(b, t->loaned); break;
        case 3: put_credits(b, t->cap - t->spent - t->loaned); break;
        default: put_i64(b, t->period_end_s); break;
        }
        put(b, "\n", 1);
    }
}

/* One histogram's series: cumulative buckets up to +Inf, _sum (seconds), _count. */
static void hist_series(obuf_t *b, const char *name, const char *lab, size_t lab_len,
                        const mhist_t *h, const mbounds_t *bd)
{
    size_t nl = strlen(name);
    char bucket[128], sum[128], count[128];
    memcpy(bucket, name, nl); memcpy(bucket + nl, "_bucket", 8);
    memcpy(sum, name, nl); memcpy(sum + nl, "_sum", 5);
    memcpy(count, name, nl); memcpy(count + nl, "_count", 7);
    uint64_t cum = 0;
    for (size_t i = 0; i <= bd->n; i++) {
        cum += h->n[i];
        puts_(b, bucket);
        put(b, "{", 1);
        put(b, lab, lab_len);
        puts_(b, lab_len ? ",le=\"" : "le=\"");
        if (i < bd->n) put_bound(b, bd->us[i]); else puts_(b, "+Inf");
        puts_(b, "\"} ");
        put_u64(b, cum);
        put(b, "\n", 1);
    }
    head(b, sum, lab, lab_len, NULL);
    put_fixed(b, h->sum_us, 1000000, 6);
    put(b, "\n", 1);
    head(b, count, lab, lab_len, NULL);
    put_u64(b, h->count);
    put(b, "\n", 1);
}

static void simple(obuf_t *b, const char *name, const char *type, const char *help,
                   int64_t v)
{
    family(b, name, type, help);
    head(b, name, "", 0, NULL);
    put_i64(b, v);
    put(b, "\n", 1);
}

char *metrics_format(metrics_t *m, const metrics_gauges_t *g, size_t *len)
{
    const char **names = malloc((g->n_teams + 1) * sizeof *names);
    if (!names) return NULL;
    for (size_t i = 0; i < g->n_teams; i++) names[i] = g->teams[i].name;
    mview_t v;
    int rc = metrics_copy(m, names, g->n_teams, &v);
    free(names);
    if (rc != 0) return NULL;

    /* one allocation of about the right size, not a dozen doublings */
    obuf_t b = {0};
    size_t hint = atomic_load(&m->last_size);
    hint += hint / 8;
    reserve(&b, hint < OUT_MAX ? hint : OUT_MAX);
    char lab[1200];
    family(&b, "pinmeter_build_info", "gauge", "Always 1; the version of the running pinmeter.");
    head(&b, "pinmeter_build_info", lab, one_label(lab, "version", g->version), NULL);
    puts_(&b, "1\n");
    counters(&b, "pinmeter_requests_total", "Metered requests answered, by the HTTP status "
             "the client got.", &v, MK_REQ);
    counters(&b, "pinmeter_rejections_total", "Metered requests refused before anything "
             "went upstream, by reason.", &v, MK_REJ);
    counters(&b, "pinmeter_clamped_total", "Requests admitted with their completion limit "
             "lowered to what the team's cap had left (on_insufficient clamp).", &v, MK_CLAMP);
    tokens_and_credits(&b, &v);
    team_gauge(&b, g, "pinmeter_team_cap_credits", 0, "The team's cap for the current "
               "period (no sample when uncapped).");
    team_gauge(&b, g, "pinmeter_team_spent_credits", 1, "Credits the team spent in the "
               "current period (fleet-wide with the Redis budget store).");
    team_gauge(&b, g, "pinmeter_team_loaned_credits", 2, "Credits held by the team's "
               "requests in flight (fleet-wide with the Redis budget store).");
    team_gauge(&b, g, "pinmeter_team_available_credits", 3, "Cap minus spent minus loaned "
               "(no sample when uncapped).");
    team_gauge(&b, g, "pinmeter_team_period_end_timestamp_seconds", 4, "When the team's "
               "current period ends (no sample for period none).");
    family(&b, "pinmeter_inflight_requests", "gauge", "Requests holding a reservation.");
    for (size_t i = 0; i < v.n[MK_TEAM]; i++) {
        const mcopy_t *c = &v.c[MK_TEAM][i];
        head(&b, "pinmeter_inflight_requests", c->lab, c->lab_len, NULL);
        put_i64(&b, c->v[0]);
        put(&b, "\n", 1);
    }
    if (g->account_on) {
        const char *pn = "pinmeter_account_projected_available_credits",
                   *sn = "pinmeter_account_synced_available_credits",
                   *tn = "pinmeter_account_last_sync_timestamp_seconds";
        family(&b, pn, "gauge", "The account's available credits as pinmeter projects them.");
        if (g->projected_known) {
            head(&b, pn, "", 0, NULL);
            put_credits(&b, g->projected);
            put(&b, "\n", 1);
        }
        family(&b, sn, "gauge", "The account's available credits at the last sync.");
        if (g->synced_known) {
            head(&b, sn, "", 0, NULL);
            put_credits(&b, g->synced);
            put(&b, "\n", 1);
        }
        family(&b, tn, "gauge", "When the account balance was last read.");
        if (g->synced_known) {
            head(&b, tn, "", 0, NULL);
            put_fixed(&b, g->synced_ms, 1000, 3);
            put(&b, "\n", 1);
        }
        const char *dn = "pinmeter_account_drift_credits";
        family(&b, dn, "gauge", "Pinata's spend minus pinmeter's charges over the sync "
               "intervals that ended in the last hour (usage that did not pass through this "
               "pinmeter, or prices out of date).");
        if (g->drift_known) {
            head(&b, dn, "", 0, NULL);
            put_credits(&b, g->drift);
            put(&b, "\n", 1);
        }
    }
    static const struct { const char *name, *help; unsigned bit; } H[2] = {
        { "pinmeter_upstream_duration_seconds", "Admission to the last upstream byte.",
          MT_UPSTREAM },
        { "pinmeter_stream_first_token_seconds", "Admission to the first content event "
          "relayed.", MT_FIRST },
    };
    for (int k = 0; k < 2; k++) {
        family(&b, H[k].name, "histogram", H[k].help);
        for (size_t i = 0; i < v.n[MK_MODEL]; i++) {
            const mcopy_t *c = &v.c[MK_MODEL][i];
            if (c->touched & H[k].bit)
                hist_series(&b, H[k].name, c->lab, c->lab_len, &v.hists[2 * i + k],
                            &metrics_bounds[MB_LATENCY]);
        }
    }
    family(&b, "pinmeter_admission_duration_seconds", "histogram", "Complete client request "
           "to the upstream request handed to libcurl.");
    hist_series(&b, "pinmeter_admission_duration_seconds", "", 0, &v.admission,
                &metrics_bounds[MB_ADMISSION]);
    simple(&b, "pinmeter_ledger_backlog_records", "gauge", "Ledger records waiting for the "
           "writer.", g->ledger_backlog);
    simple(&b, "pinmeter_ledger_write_errors_total", "counter", "Ledger commits that failed.",
           g->ledger_write_errors);
    if (g->store_redis)
        simple(&b, "pinmeter_budget_store_up", "gauge", "1 when the Redis budget store is "
               "reachable and synced, else 0.", g->store_up ? 1 : 0);
    counters(&b, "pinmeter_alerts_total", "Alert deliveries, by event and result.", &v,
             MK_ALERT);
    metrics_view_free(&v);
    put(&b, "", 1);                               /* a NUL after the text */
    if (b.bad) {
        free(b.p);
        return NULL;
    }
    *len = b.n - 1;
    atomic_store(&m->last_size, b.n);
    return b.p;
}
