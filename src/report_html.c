/* report_html: `pinmeter report --format html` — one static, self-contained
 * HTML file to mail or archive: the totals, an SVG chart of spend by day
 * stacked by model, the top teams, and the same table `--format table`
 * prints (exact to the nano-credit). The style is inline, there is no
 * script, and nothing is loaded from anywhere: it opens from disk with no
 * network. Every name written (team, key, model) is HTML-escaped. */
#include "report_int.h"
#include "base.h"
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 7          /* models drawn apart; the rest are "other models" */
#define TOP_TEAMS 12

static void esc(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        case '\'': fputs("&#39;", out); break;
        default: fputc(*s, out);
        }
    }
}

static const char *credits(nanos_t v, char buf[MONEY_FMT_MAX])
{
    return money_fmt(v, buf);
}

/* A round step for about four gridlines up to max (credits). */
static double nice_step(double max)
{
    double raw = max / 4, p = 1;
    while (p * 10 <= raw) p *= 10;
    while (p > raw) p /= 10;
    static const double m[] = {1, 2, 2.5, 5, 10};
    for (int i = 0; i < 5; i++)
        if (m[i] * p >= raw) return m[i] * p;
    return 10 * p;
}

static const char STYLE[] =
    ":root{color-scheme:light dark;--bg:#f4f6fa;--card:#fff;--ink:#172033;--muted:#5b6578;"
    "--line:#e1e6ef;--bar:#2f62e6;--c0:#3366e6;--c1:#e8833a;--c2:#2aa58a;--c3:#c94f9a;"
    "--c4:#8a63d2;--c5:#c9a227;--c6:#4aa3d8;--c7:#7b8794}"
    "@media (prefers-color-scheme:dark){:root{--bg:#0f141c;--card:#171e29;--ink:#e6ebf3;"
    "--muted:#97a2b5;--line:#263142;--bar:#5b87ff;--c0:#6d95ff;--c1:#ff9d57;--c2:#3fc9a6;"
    "--c3:#ec74bb;--c4:#a98af0;--c5:#e2c04a;--c6:#6cc4f5;--c7:#9aa6b5}}"
    "*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);"
    "font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;"
    "font-variant-numeric:tabular-nums}main{max-width:1100px;margin:0 auto;padding:20px}"
    "h1{font-size:20px;margin:0 0 4px}h2{font-size:15px;margin:0 0 10px}"
    ".sub{color:var(--muted);margin:0 0 16px}"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;"
    "margin:0 0 16px;overflow-x:auto}"
    ".tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin:0 0 16px}"
    ".tile{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:12px 16px}"
    ".tile .k{color:var(--muted);font-size:12.5px}.tile .v{font-size:19px;font-weight:650;margin-top:2px}"
    "svg{display:block;width:100%;height:auto}svg text{fill:var(--muted);font-size:11px}"
    "svg .grid{stroke:var(--line)}svg .bar{fill:var(--bar)}svg .val{fill:var(--ink)}"
    ".s0{fill:var(--c0);background:var(--c0)}.s1{fill:var(--c1);background:var(--c1)}"
    ".s2{fill:var(--c2);background:var(--c2)}.s3{fill:var(--c3);background:var(--c3)}"
    ".s4{fill:var(--c4);background:var(--c4)}.s5{fill:var(--c5);background:var(--c5)}"
    ".s6{fill:var(--c6);background:var(--c6)}.s7{fill:var(--c7);background:var(--c7)}"
    ".legend{list-style:none;display:flex;flex-wrap:wrap;gap:6px 18px;padding:0;margin:10px 0 0;font-size:12.5px}"
    ".legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}"
    "table{border-collapse:collapse;width:100%}th,td{padding:6px 8px;border-top:1px solid var(--line);"
    "text-align:left;white-space:nowrap}th{border-top:0;color:var(--muted);font-size:12px;"
    "text-transform:uppercase;letter-spacing:.04em}td.n,th.n{text-align:right}"
    "tfoot td{font-weight:650;border-top:2px solid var(--line)}"
    ".foot{color:var(--muted);font-size:12.5px;text-align:center}";

/* Index of model m among the series (MAX_SERIES for "other models"). */
static int series_of(char *const *names, int n, const char *m)
{
    for (int i = 0; i < n; i++)
        if (strcmp(names[i], m ? m : "") == 0) return i;
    return MAX_SERIES;
}

typedef struct mtot { const char *model; nanos_t credits; } mtot_t;

static int cmp_mtot(const void *a, const void *b)
{
    const mtot_t *x = a, *y = b;
    if (x->credits != y->credits) return x->credits < y->credits ? 1 : -1;
    return strcmp(x->model, y->model);
}

static const char *day_of(const report_row_t *r) { return r->f[3] ? r->f[3] : ""; }

static int cmp_day(const void *a, const void *b)
{
    const report_row_t *x = *(report_row_t *const *)a, *y = *(report_row_t *const *)b;
    int c = strcmp(day_of(x), day_of(y));
    return c ? c : strcmp(x->f[2] ? x->f[2] : "", y->f[2] ? y->f[2] : "");
}

/* The stacked bars of spend by day (rows grouped by day and model). */
static void chart_days(FILE *out, const report_rows_t *rows)
{
    char buf[MONEY_FMT_MAX];
    mtot_t *mt = calloc(rows->n + 1, sizeof *mt);
    const char **days = calloc(rows->n + 1, sizeof *days);
    nanos_t *day_tot = calloc(rows->n + 1, sizeof *day_tot);
    const report_row_t **v = calloc(rows->n + 1, sizeof *v);
    size_t nm = 0, nd = 0, n = rows->n;
    if (!mt || !days || !day_tot || !v) goto done;
    for (size_t i = 0; i < n; i++) v[i] = &rows->v[i];
    qsort(v, n, sizeof *v, cmp_day);
    for (size_t i = 0; i < n; i++) {
        const report_row_t *r = v[i];
        const char *m = r->f[2] ? r->f[2] : "";
        size_t k = 0;
        while (k < nm && strcmp(mt[k].model, m) != 0) k++;
        if (k == nm) mt[nm++] = (mtot_t){ m, 0 };
        mt[k].credits += r->credits;
        const char *d = r->f[3] ? r->f[3] : "";
        if (nd == 0 || strcmp(days[nd - 1], d) != 0) days[nd++] = d;
        day_tot[nd - 1] += r->credits;
    }
    qsort(mt, nm, sizeof *mt, cmp_mtot);
    char *names[MAX_SERIES];
    int ns = nm < MAX_SERIES ? (int)nm : MAX_SERIES;
    for (int i = 0; i < ns; i++) names[i] = (char *)mt[i].model;
    nanos_t max = 0;
    for (size_t d = 0; d < nd; d++) if (day_tot[d] > max) max = day_tot[d];
    const int W = 1000, H = 260, L = 60, R = 8, T = 10, B = 26;
    const double pw = W - L - R, ph = H - T - B;
    double top = max > 0 ? money_to_double(max) : 1, step = nice_step(top);
    top = step * (double)(long long)(top / step + 0.999999);
    fprintf(out, "<svg viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Spend by day, stacked by model\">", W, H);
    for (double v = 0; v <= top + step / 2; v += step) {
        double y = T + ph - v / top * ph;
        fprintf(out, "<line class=\"grid\" x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\"/>"
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>", L, W - R, y, y, L - 6, y + 4, v);
    }
    if (nd == 0)
        fprintf(out, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">No spend in this range.</text>",
                L + pw / 2, T + ph / 2);
    double band = nd ? pw / (double)nd : pw, bw = band > 8 ? band * 0.74 : band * 0.9;
    if (bw > 56) bw = 56;             /* a few days are bars, not blocks */
    size_t every = 1;
    while (nd / every > 14) every++;
    size_t i = 0;
    for (size_t d = 0; d < nd; d++) {
        double x = L + (double)d * band + (band - bw) / 2, acc = 0;
        for (; i < n && strcmp(day_of(v[i]), days[d]) == 0; i++) {
            const report_row_t *r = v[i];
            double hgt = money_to_double(r->credits) / top * ph;
            int s = series_of(names, ns, r->f[2]);
            fprintf(out, "<rect class=\"s%d\" x=\"%.2f\" width=\"%.2f\" y=\"%.2f\" height=\"%.2f\"><title>",
                    s, x, bw, T + ph - acc - hgt, hgt > 0.5 ? hgt : 0.5);
            esc(out, days[d]);
            fputs(" · ", out);
            esc(out, r->f[2]);
            fprintf(out, ": %s credits</title></rect>", credits(r->credits, buf));
            acc += hgt;
        }
        if (d % every == 0) {
            fprintf(out, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", L + (double)d * band + band / 2, H - 8);
            esc(out, strlen(days[d]) == 10 ? days[d] + 5 : days[d]);
            fputs("</text>", out);
        }
    }
    fputs("</svg><ul class=\"legend\">", out);
    nanos_t other = 0;
    for (size_t k = (size_t)ns; k < nm; k++) other += mt[k].credits;
    for (int k = 0; k < ns; k++) {
        fprintf(out, "<li><i class=\"s%d\"></i>", k);
        esc(out, names[k][0] ? names[k] : "(unpriced)");
        fprintf(out, "&nbsp; %s</li>", credits(mt[k].credits, buf));
    }
    if (nm > MAX_SERIES)
        fprintf(out, "<li><i class=\"s7\"></i>other models&nbsp; %s</li>", credits(other, buf));
    fputs("</ul>", out);
done:
    free(mt);
    free(days);
    free(day_tot);
    free(v);
}

static int cmp_credits(const void *a, const void *b)
{
    const report_row_t *x = *(report_row_t *const *)a, *y = *(report_row_t *const *)b;
    if (x->credits != y->credits) return x->credits < y->credits ? 1 : -1;
    return strcmp(x->f[0] ? x->f[0] : "", y->f[0] ? y->f[0] : "");
}

/* Horizontal bars: the teams that spent most. */
static void chart_teams(FILE *out, const report_rows_t *rs)
{
    char buf[MONEY_FMT_MAX];
    const report_row_t **v = calloc(rs->n + 1, sizeof *v);
    if (!v) return;
    for (size_t i = 0; i < rs->n; i++) v[i] = &rs->v[i];
    qsort(v, rs->n, sizeof *v, cmp_credits);
    size_t n = rs->n < TOP_TEAMS ? rs->n : TOP_TEAMS;
    const int W = 1000, row = 28, L = 180, R = 150;
    int H = (int)(n ? n : 1) * row + 8;
    double max = n ? money_to_double(v[0]->credits) : 0;
    fprintf(out, "<svg viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Top teams by credits\">", W, H);
    if (!n) fputs("<text x=\"10\" y=\"20\">No spend in this range.</text>", out);
    for (size_t i = 0; i < n; i++) {
        double y = 4 + (double)i * row, w = max > 0 ? money_to_double(v[i]->credits) / max * (W - L - R) : 0;
        fprintf(out, "<text x=\"%d\" y=\"%.0f\" text-anchor=\"end\" class=\"val\">", L - 10, y + 18);
        esc(out, v[i]->f[0]);
        fprintf(out, "</text><rect class=\"bar\" x=\"%d\" y=\"%.0f\" width=\"%.2f\" height=\"18\" rx=\"3\">"
                "<title>", L, y + 5, w > 1 ? w : 1);
        esc(out, v[i]->f[0]);
        fprintf(out, ": %s credits, %lld requests</title></rect>"
                "<text x=\"%.2f\" y=\"%.0f\">%s</text>", credits(v[i]->credits, buf),
                (long long)v[i]->requests, L + (w > 1 ? w : 1) + 8, y + 18, credits(v[i]->credits, buf));
    }
    fputs("</svg>", out);
    free(v);
}

static void table(FILE *out, const report_opts_t *o, const report_rows_t *rs, const report_row_t *tot)
{
    char buf[MONEY_FMT_MAX];
    fputs("<table><thead><tr>", out);
    int nf = 0, prices = (o->by & LEDGER_BY_PRICE) != 0;
    for (int k = 0; k < REPORT_NF; k++)
        if (o->by & report_flags[k]) { fprintf(out, "<th>%s</th>", report_fields[k]); nf++; }
    for (int k = 0; prices && k < 3; k++, nf++)
        fprintf(out, "<th class=\"n\">%s</th>", report_price_fields[k]);
    fputs("<th class=\"n\">requests</th><th class=\"n\">prompt_tokens</th>"
          "<th class=\"n\">completion_tokens</th><th class=\"n\">cached_tokens</th>"
          "<th class=\"n\">credits</th></tr></thead><tbody>", out);
    for (size_t i = 0; i < rs->n; i++) {
        const report_row_t *r = &rs->v[i];
        fputs("<tr>", out);
        for (int k = 0; k < REPORT_NF; k++)
            if (o->by & report_flags[k]) { fputs("<td>", out); esc(out, r->f[k]); fputs("</td>", out); }
        for (int k = 0; prices && k < 3; k++)
            fprintf(out, "<td class=\"n\">%s</td>", r->price[k] < 0 ? "—" : money_fmt(r->price[k], buf));
        fprintf(out, "<td class=\"n\">%lld</td><td class=\"n\">%lld</td><td class=\"n\">%lld</td>"
                "<td class=\"n\">%lld</td><td class=\"n\">%s</td></tr>", (long long)r->requests,
                (long long)r->prompt, (long long)r->completion, (long long)r->cached,
                credits(r->credits, buf));
    }
    fputs("</tbody><tfoot><tr>", out);
    if (nf) fprintf(out, "<td colspan=\"%d\">TOTAL</td>", nf);
    fprintf(out, "<td class=\"n\" data-total=\"requests\">%lld</td>"
            "<td class=\"n\" data-total=\"prompt_tokens\">%lld</td>"
            "<td class=\"n\" data-total=\"completion_tokens\">%lld</td>"
            "<td class=\"n\" data-total=\"cached_tokens\">%lld</td>"
            "<td class=\"n\" data-total=\"credits\">%s</td></tr></tfoot></table>",
            (long long)tot->requests, (long long)tot->prompt, (long long)tot->completion,
            (long long)tot->cached, credits(tot->credits, buf));
}

/* A range end as the report reads it: a label given, the start or end of
 * time, or the instant. */
static void range_end(FILE *out, const char *label, int64_t ms, const char *open)
{
    char buf[BASE_TIME_MAX];
    if (label) esc(out, label);
    else if (ms <= 0 || ms == INT64_MAX) fputs(open, out);
    else fputs(base_time_fmt(ms, buf), out);
}

void report_html_write(FILE *out, const report_opts_t *o, const report_rows_t *rows,
                       const report_row_t *total, const report_rows_t *by_day_model,
                       const report_rows_t *by_team, int64_t now_ms)
{
    char buf[MONEY_FMT_MAX], when[BASE_TIME_MAX];
    fputs("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
          "<meta name=\"color-scheme\" content=\"light dark\">"
          "<link rel=\"icon\" href=\"data:,\"><title>pinmeter spend report</title><style>", out);
    fputs(STYLE, out);
    fputs("</style></head><body><main><h1>pinmeter spend report</h1><p class=\"sub\">From ", out);
    range_end(out, o->since_label, o->since_ms, "the first request");
    fputs(" to ", out);
    range_end(out, o->until_label, o->until_ms, "the last");
    fputs(" (UTC) · grouped by ", out);
    int first = 1;
    for (int k = 0; k < REPORT_NF; k++)
        if (o->by & report_flags[k]) { fprintf(out, "%s%s", first ? "" : ", ", report_fields[k]); first = 0; }
    if (first) fputs("nothing (totals)", out);
    if (o->by & LEDGER_BY_PRICE) fputs(" and the price set charged", out);
    if (o->team || o->key || o->model) {
        fputs(" · only", out);
        if (o->team) { fputs(" team ", out); esc(out, o->team); }
        if (o->key) { fputs(" key ", out); esc(out, o->key); }
        if (o->model) { fputs(" model ", out); esc(out, o->model); }
    }
    fprintf(out, " · written %s</p>", base_time_fmt(now_ms, when));
    fprintf(out, "<section class=\"tiles\"><div class=\"tile\"><div class=\"k\">credits</div>"
            "<div class=\"v\">%s</div></div><div class=\"tile\"><div class=\"k\">requests</div>"
            "<div class=\"v\">%lld</div></div><div class=\"tile\"><div class=\"k\">prompt tokens</div>"
            "<div class=\"v\">%lld</div></div><div class=\"tile\"><div class=\"k\">completion tokens</div>"
            "<div class=\"v\">%lld</div></div><div class=\"tile\"><div class=\"k\">cached tokens</div>"
            "<div class=\"v\">%lld</div></div></section>", credits(total->credits, buf),
            (long long)total->requests, (long long)total->prompt, (long long)total->completion,
            (long long)total->cached);
    fputs("<section class=\"card\"><h2>Spend by day and model</h2>", out);
    chart_days(out, by_day_model);
    fputs("</section><section class=\"card\"><h2>Top teams</h2>", out);
    chart_teams(out, by_team);
    fputs("</section><section class=\"card\"><h2>The figures</h2>", out);
    table(out, o, rows, total);
    fputs("</section><p class=\"foot\">Credits are exact to the nano-credit; estimated and "
          "interrupted requests are included, as in <code>pinmeter report</code>.</p>"
          "</main></body></html>\n", out);
}
