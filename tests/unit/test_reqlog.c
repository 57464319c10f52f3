/* Unit tests for the request log: the cursor (round trips, one spelling per
 * position, everything else refused) and ledger_log's pages — newest first
 * by (started_ms, id), ties on the time broken by id, filters, and a walk by
 * cursor that visits every row present at its start exactly once while new
 * rows (newer, and older than the walk's position) keep arriving. */
#include "ledger.h"
#include "reqlog.h"
#include "t.h"

#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define C NANOS_PER_CREDIT
#define D1 1795392000000LL          /* 2026-11-23T00:00:00Z */

static char tmpdir[64];

static void test_cursor_round_trip(void)
{
    const struct { int64_t ms; const char *id; } cases[] = {
        {D1, "10e5b2e9622c277f-000000"}, {0, "a"}, {-5, "x-1"},
        {INT64_MAX, "bench-000000000001"}, {1, "id:with:colons"},
        {D1 + 123, "012345678901234567890123456789012345678901234"},   /* 45 chars */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cur[REQLOG_CURSOR_MAX], id[LEDGER_ID_MAX];
        int64_t ms = 0;
        T_EQ_INT(reqlog_cursor_encode(cases[i].ms, cases[i].id, cur), 0);
        for (const char *p = cur; *p; p++)       /* URL-safe as it is */
            T_CHECK((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_');
        T_EQ_INT(reqlog_cursor_decode(cur, &ms, id, sizeof id), 0);
        T_EQ_INT(ms, cases[i].ms);
        T_EQ_STR(id, cases[i].id);
    }
    char cur[REQLOG_CURSOR_MAX];
    T_EQ_INT(reqlog_cursor_encode(1, "", cur), -1);
    char long_id[LEDGER_ID_MAX + 1];
    memset(long_id, 'a', LEDGER_ID_MAX);
    long_id[LEDGER_ID_MAX] = '\0';
    T_EQ_INT(reqlog_cursor_encode(1, long_id, cur), -1);
}

static void expect_bad(const char *s)
{
    int64_t ms = 42;
    char id[LEDGER_ID_MAX] = "untouched";
    int rc = reqlog_cursor_decode(s, &ms, id, sizeof id);
    if (rc != -1) fprintf(stderr, "  cursor \"%s\" accepted\n", s);
    T_EQ_INT(rc, -1);
    T_EQ_INT(ms, 42);
    T_EQ_STR(id, "untouched");
}

/* base64url of raw text, for hand-made cursors */
static void b64(const char *raw, char *out)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)raw[i] << 16;
        if (i + 1 < n) v |= (unsigned char)raw[i + 1] << 8;
        if (i + 2 < n) v |= (unsigned char)raw[i + 2];
        out[o++] = A[v >> 18 & 63];
        out[o++] = A[v >> 12 & 63];
        if (i + 1 < n) out[o++] = A[v >> 6 & 63];
        if (i + 2 < n) out[o++] = A[v & 63];
    }
    out[o] = '\0';
}

static void test_cursor_refused(void)
{
    char good[REQLOG_CURSOR_MAX], s[256];
    T_EQ_INT(reqlog_cursor_encode(D1, "abc-1", good), 0);
    expect_bad("");
    expect_bad("!!!!");
    expect_bad("abc=");                   /* padding is not ours */
    expect_bad("A");                      /* a length base64 cannot have */
    snprintf(s, sizeof s, "%s=", good);
    expect_bad(s);
    const char *raws[] = {"2:1:abc", "1:abc", "1::abc", "1:12", "1:12:", "1:+12:abc",
                          "1:99999999999999999999:abc", "1:12:a b", "1:12:a\tb", "x"};
    for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
        b64(raws[i], s);
        expect_bad(s);
    }
    b64("1:12:abc", s);                   /* the hand-made spelling of a good one */
    int64_t ms = 0;
    char id[LEDGER_ID_MAX];
    T_EQ_INT(reqlog_cursor_decode(s, &ms, id, sizeof id), 0);
    T_EQ_INT(ms, 12);
    T_EQ_STR(id, "abc");
    /* "1:12:ab" is "MToxMjphYg"; flipping its last character's unused low
     * bits spells the same bytes another way: refused, one spelling only */
    b64("1:12:ab", s);
    T_EQ_INT(reqlog_cursor_decode(s, &ms, id, sizeof id), 0);
    s[strlen(s) - 1] = 'h';
    expect_bad(s);
    char big[300];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    expect_bad(big);
}

typedef struct page {
    char ids[1100][LEDGER_ID_MAX];
    int64_t ms[1100];
    int n;
} page_t;

static int take(void *ud, const ledger_row_t *w)
{
    page_t *p = ud;
    if (p->n == 1100) return 1;
    snprintf(p->ids[p->n], LEDGER_ID_MAX, "%s", w->id);
    p->ms[p->n] = w->started_ms;
    p->n++;
    return 0;
}

static int wait_idle(ledger_t *l)
{
    for (int i = 0; i < 10000 && ledger_backlog(l) > 0; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return ledger_backlog(l) == 0;
}

static void add_row(ledger_t *l, const char *id, const char *team, int64_t ms, int settle)
{
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team, sizeof r.team, "%s", team);
    snprintf(r.key_id, sizeof r.key_id, "k-%s", team);
    snprintf(r.model, sizeof r.model, "m");
    r.started_ms = ms;
    r.reserved = C;
    r.state = LEDGER_INFLIGHT;
    r.price_input = 3 * C;
    r.price_output = 15 * C;
    r.price_cache_read = settle > 1 ? -1 : 3 * C / 10;   /* 2: a price not recorded */
    ledger_submit(l, &r, NULL, NULL);
    if (!settle) return;
    r.state = LEDGER_SETTLED;
    r.charged = 7;
    r.status = 200;
    r.ended_ms = ms + 3;
    ledger_submit(l, &r, NULL, NULL);
}

/* One page after (ms, id), limit n; returns the rows seen (next in *nx). */
static int page_after(ledger_t *l, const ledger_log_query_t *base, int has, int64_t ms,
                      const char *id, int n, page_t *out, ledger_log_next_t *nx)
{
    ledger_log_query_t q = *base;
    q.limit = n;
    q.has_after = has;
    q.after_ms = ms;
    q.after_id = id;
    out->n = 0;
    char err[256] = "";
    ledger_log_next_t dummy;
    if (ledger_log(l, &q, take, out, nx ? nx : &dummy, err, sizeof err) != 0) {
        fprintf(stderr, "  ledger_log: %s\n", err);
        return -1;
    }
    return out->n;
}

/* Follows the pages of q (limit n) to the end; the ids in order into seen
 * (at most cap). Returns the pages read, -1 on error. */
static int walk(ledger_t *l, const ledger_log_query_t *q, int n, char (*seen)[LEDGER_ID_MAX],
                int cap, int *n_seen)
{
    static page_t p;
    ledger_log_next_t nx = {0};
    int pages = 0;
    *n_seen = 0;
    do {
        if (page_after(l, q, pages > 0, nx.after_ms, nx.after_id, n, &p, &nx) < 0) return -1;
        for (int i = 0; i < p.n && *n_seen < cap; i++)
            snprintf(seen[(*n_seen)++], LEDGER_ID_MAX, "%s", p.ids[i]);
        pages++;
    } while (nx.more && pages < 10000);
    return pages;
}

static void test_pages(void)
{
    char path[160], err[256];
    snprintf(path, sizeof path, "%s/log.db", tmpdir);
    ledger_t *l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    T_EQ_INT(ledger_writer_start(l), 0);
    /* 300 rows, three to a millisecond (ties broken by id), two teams */
    char id[32];
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof id, "r%03d", i);
        add_row(l, id, i % 2 ? "odd" : "even", D1 + i / 3, i % 10 != 0);
    }
    T_CHECK(wait_idle(l));
    static page_t p;
    ledger_log_query_t all = {.since_ms = INT64_MIN, .until_ms = INT64_MAX};
    ledger_log_next_t nx;
    T_EQ_INT(page_after(l, &all, 0, 0, NULL, 5, &p, &nx), 5);
    T_EQ_INT(nx.more, 1);
    T_EQ_INT(nx.after_ms, D1 + 98);               /* the page's last row, r295 */
    T_EQ_STR(nx.after_id, "r295");
    T_EQ_STR(p.ids[0], "r299");
    T_EQ_STR(p.ids[1], "r298");
    T_EQ_STR(p.ids[2], "r297");
    T_EQ_STR(p.ids[3], "r296");
    /* after (ms of r297, "r298"): r297 first, then the next millisecond down */
    T_EQ_INT(page_after(l, &all, 1, D1 + 99, "r298", 3, &p, NULL), 3);
    T_EQ_STR(p.ids[0], "r297");
    T_EQ_STR(p.ids[1], "r296");
    /* filters: team, state, and the range [since, until) */
    ledger_log_query_t odd = all;
    odd.team = "odd";
    T_EQ_INT(page_after(l, &odd, 0, 0, NULL, 1000, &p, &nx), 150);
    T_EQ_INT(nx.more, 0);                         /* all of them: the end */
    ledger_log_query_t infl = all;
    infl.state = "inflight";
    T_EQ_INT(page_after(l, &infl, 0, 0, NULL, 1000, &p, NULL), 30);
    T_EQ_STR(p.ids[0], "r290");
    ledger_log_query_t win = all;
    win.since_ms = D1 + 10;
    win.until_ms = D1 + 20;
    T_EQ_INT(page_after(l, &win, 0, 0, NULL, 1000, &p, NULL), 30);
    T_EQ_STR(p.ids[0], "r059");
    T_EQ_STR(p.ids[29], "r030");

    /* a walk by cursor, 7 rows a page, while rows keep arriving: newer ones
     * and, each page, one older than the walk's position */
    static char seen[2000][LEDGER_ID_MAX];
    int n_seen = 0, pages = 0, has = 0, extra = 0;
    nx.more = 1;
    while (nx.more) {
        int n = page_after(l, &all, has, nx.after_ms, nx.after_id, 7, &p, &nx);
        T_CHECK(n >= 0);
        if (n < 0) break;
        for (int i = 0; i < n; i++) {
            if (i > 0) T_CHECK(p.ms[i] < p.ms[i - 1] ||
                               (p.ms[i] == p.ms[i - 1] && strcmp(p.ids[i], p.ids[i - 1]) < 0));
            snprintf(seen[n_seen++], LEDGER_ID_MAX, "%s", p.ids[i]);
        }
        int64_t ms = n ? p.ms[n - 1] : 0;
        has = 1;
        snprintf(id, sizeof id, "new%03d", pages);
        add_row(l, id, "even", D1 + 1000 + pages, 1);            /* above the walk's start */
        if (ms > D1 + 1) {
            snprintf(id, sizeof id, "old%03d", pages);
            add_row(l, id, "odd", ms - 1, 1);                     /* below its position */
            extra++;
        }
        T_CHECK(wait_idle(l));
        if (++pages > 200) break;
    }
    int dups = 0, originals = 0, olds = 0, news = 0;
    for (int i = 0; i < n_seen; i++) {
        for (int k = 0; k < i; k++) dups += strcmp(seen[i], seen[k]) == 0;
        originals += seen[i][0] == 'r';
        olds += strncmp(seen[i], "old", 3) == 0;
        news += strncmp(seen[i], "new", 3) == 0;
    }
    T_EQ_INT(dups, 0);
    T_EQ_INT(originals, 300);            /* every row present at the start, once */
    T_EQ_INT(news, 0);                   /* newer rows sort above the walk's start */
    T_EQ_INT(olds, extra);               /* older arrivals are met once on the way */
    T_CHECK(pages >= 300 / 7);

    /* A page reads at most scan_max rows: filters that match few rows give
     * short (even empty) pages with a next position, and the walk still
     * returns every match once, in order. */
    static char got[2000][LEDGER_ID_MAX];
    const char *combos[][4] = {            /* team, key, model, state */
        {"odd", NULL, NULL, NULL}, {NULL, "k-odd", NULL, "inflight"},
        {"even", "k-odd", NULL, NULL}, {"odd", NULL, "m", "settled"},
        {NULL, NULL, "nope", NULL}, {"even", NULL, NULL, "inflight"},
    };
    for (size_t c = 0; c < sizeof combos / sizeof combos[0]; c++) {
        ledger_log_query_t q = all;
        q.team = combos[c][0];
        q.key = combos[c][1];
        q.model = combos[c][2];
        q.state = combos[c][3];
        int n_all = 0, n_small = 0;
        int p_all = walk(l, &q, 1000, seen, 2000, &n_all);     /* one page, no budget hit */
        q.scan_max = 11;
        int p_small = walk(l, &q, 4, got, 2000, &n_small);
        T_CHECK(p_all >= 1 && p_small >= 1);
        T_EQ_INT(n_small, n_all);
        for (int i = 0; i < n_all && i < n_small; i++) T_EQ_STR(got[i], seen[i]);
        T_EQ_INT(p_all, 1);
        T_CHECK(p_small >= (n_small + 3) / 4);
        if (c == 2) {                       /* no even row has the odd key: empty pages */
            T_EQ_INT(n_small, 0);
            T_CHECK(p_small > 10);          /* ...each reading 11 of the odd key's rows */
        }
    }
    ledger_close(l, 1000);
    char p2[200];
    const char *sfx[] = {"", "-wal", "-shm", "-begins.0", "-begins.1"};
    for (int i = 0; i < 5; i++) {
        snprintf(p2, sizeof p2, "%s%s", path, sfx[i]);
        unlink(p2);
    }
}

static int lookup_one(void *ud, const ledger_row_t *w)
{
    ledger_row_t *out = ud;
    *out = *w;
    out->id = out->team = out->key_id = out->model = out->state = out->upstream_id = NULL;
    return 0;
}

static void test_lookup(void)
{
    char err[256];
    ledger_t *l = ledger_open(":memory:", err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    add_row(l, "x1", "t", D1, 0);
    add_row(l, "x2", "t", D1 + 1, 1);
    add_row(l, "x4", "t", D1 + 2, 2);
    T_EQ_INT(ledger_writer_start(l), 0);
    T_CHECK(wait_idle(l));
    ledger_row_t w;
    T_EQ_INT(ledger_lookup(l, "x1", lookup_one, &w, err, sizeof err), 1);
    T_EQ_INT(w.ended_ms, -1);            /* in flight: no end, status or latency */
    T_EQ_INT(w.status, -1);
    T_EQ_INT(w.latency_ms, -1);
    T_EQ_INT(w.reserved, C);
    T_EQ_INT(w.price_input, 3 * C);      /* the prices, from the begin */
    T_EQ_INT(w.price_output, 15 * C);
    T_EQ_INT(w.price_cache_read, 3 * C / 10);
    T_EQ_INT(ledger_lookup(l, "x2", lookup_one, &w, err, sizeof err), 1);
    T_EQ_INT(w.ended_ms, D1 + 4);
    T_EQ_INT(w.status, 200);
    T_EQ_INT(w.charged, 7);
    T_EQ_INT(w.price_output, 15 * C);
    T_EQ_INT(ledger_lookup(l, "x4", lookup_one, &w, err, sizeof err), 1);
    T_EQ_INT(w.price_input, 3 * C);
    T_EQ_INT(w.price_cache_read, -1);
    T_EQ_INT(ledger_lookup(l, "x3", lookup_one, &w, err, sizeof err), 0);
    T_EQ_INT(ledger_state_parse("settled"), LEDGER_SETTLED);
    T_EQ_INT(ledger_state_parse("interrupted"), LEDGER_INTERRUPTED);
    T_EQ_INT(ledger_state_parse("Settled"), -1);
    T_EQ_INT(ledger_state_parse(""), -1);
    ledger_close(l, 1000);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pinmeter-reqlog-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    T_RUN(test_cursor_round_trip);
    T_RUN(test_cursor_refused);
    T_RUN(test_pages);
    T_RUN(test_lookup);
    rmdir(tmpdir);
    return t_summary("reqlog");
}
