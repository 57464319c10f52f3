/* journal: the begin journal on its own — lines replay exactly, and a short
 * write (the disk filling up mid-line, made here with RLIMIT_FSIZE) leaves
 * nothing that would join the next line into a wrong one. */
#include "t.h"
#include "journal.h"
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct seen { int n; char id[8][32]; int64_t reserved[8], price[8][3]; } seen_t;

static int collect(void *ud, const journal_begin_t *b)
{
    seen_t *s = ud;
    if (s->n < 8) {
        snprintf(s->id[s->n], sizeof s->id[s->n], "%s", b->id);
        s->reserved[s->n] = b->reserved;
        s->price[s->n][0] = b->price_input;
        s->price[s->n][1] = b->price_output;
        s->price[s->n][2] = b->price_cache_read;
    }
    s->n++;
    return 0;
}

static journal_begin_t begin(const char *id, int64_t reserved)
{
    journal_begin_t b = { id, 1764547200000LL, "team-a", "key-1", "anthropic/claude", 1,
                          reserved, 3000000000LL, 15000000000LL, 300000000LL };
    return b;
}

static journal_t *fresh(char *db, size_t cap)
{
    snprintf(db, cap, "/tmp/pm-journal-%d.db", (int)getpid());
    char seg[300];
    for (int i = 0; i < 2; i++) {
        snprintf(seg, sizeof seg, "%s-begins.%d", db, i);
        unlink(seg);
    }
    char err[256];
    journal_t *j = journal_open(db, err, sizeof err);
    if (!j) fprintf(stderr, "  journal_open: %s\n", err);
    return j;
}

static void cleanup(const char *db)
{
    char seg[300];
    for (int i = 0; i < 2; i++) {
        snprintf(seg, sizeof seg, "%s-begins.%d", db, i);
        unlink(seg);
    }
}

static void test_lines_replay_exactly(void)
{
    char db[256];
    journal_t *j = fresh(db, sizeof db);
    if (!j) { T_CHECK(0); return; }
    journal_begin_t a = begin("r-1", 123456789), b = begin("r-2", 42),
                    c = begin("r-3", 0);
    c.price_input = c.price_output = c.price_cache_read = -1;
    c.started_ms = INT64_MAX;
    T_EQ_INT(journal_append(j, &a), 0);
    T_EQ_INT(journal_append(j, &b), 0);
    T_EQ_INT(journal_append(j, &c), 0);
    seen_t s = {0};
    T_EQ_INT(journal_replay(j, collect, &s), 0);
    T_EQ_INT(s.n, 3);
    T_EQ_STR(s.id[2], "r-3");
    T_EQ_INT(s.reserved[2], 0);
    for (int k = 0; k < 3; k++) T_EQ_INT(s.price[2][k], -1);
    T_EQ_STR(s.id[0], "r-1");
    T_EQ_INT(s.reserved[0], 123456789);
    T_EQ_STR(s.id[1], "r-2");
    T_EQ_INT(s.reserved[1], 42);
    for (int i = 0; i < 2; i++) {       /* the prices it was admitted at */
        T_EQ_INT(s.price[i][0], 3000000000LL);
        T_EQ_INT(s.price[i][1], 15000000000LL);
        T_EQ_INT(s.price[i][2], 300000000LL);
    }
    journal_close(j);
    cleanup(db);
}

/* A line an older version wrote (no prices) still replays, prices unknown;
 * a line with a wrong number of fields is skipped. */
static void test_older_lines_replay(void)
{
    char db[256], seg[300];
    journal_t *j = fresh(db, sizeof db);
    if (!j) { T_CHECK(0); return; }
    snprintf(seg, sizeof seg, "%s-begins.0", db);
    FILE *f = fopen(seg, "a");
    T_CHECK(f != NULL);
    if (!f) return;
    fputs("B\told-1\t1764547200000\tteam-a\tkey-1\tm\t0\t555\n", f);
    fputs("B\tbad-1\t1764547200000\tteam-a\tkey-1\tm\t0\t555\t1\n", f);
    fclose(f);
    journal_begin_t a = begin("new-1", 9);
    T_EQ_INT(journal_append(j, &a), 0);
    seen_t s = {0};
    T_EQ_INT(journal_replay(j, collect, &s), 0);
    T_EQ_INT(s.n, 2);
    T_EQ_STR(s.id[0], "old-1");
    T_EQ_INT(s.reserved[0], 555);
    for (int k = 0; k < 3; k++) T_EQ_INT(s.price[0][k], -1);
    T_EQ_STR(s.id[1], "new-1");
    T_EQ_INT(s.price[1][1], 15000000000LL);
    journal_close(j);
    cleanup(db);
}

static void test_short_write_leaves_no_partial_line(void)
{
    char db[256], seg[300];
    journal_t *j = fresh(db, sizeof db);
    if (!j) { T_CHECK(0); return; }
    journal_begin_t a = begin("r-1", 1000), b = begin("r-2", 987654321), c = begin("r-3", 7);
    T_EQ_INT(journal_append(j, &a), 0);
    snprintf(seg, sizeof seg, "%s-begins.0", db);
    struct stat st;
    T_EQ_INT(stat(seg, &st), 0);
    /* the file may grow by 12 bytes only: r-2's line is cut inside it */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = (rlim_t)st.st_size + 12;
    signal(SIGXFSZ, SIG_IGN);
    T_EQ_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
    T_EQ_INT(journal_append(j, &b), -1);
    T_EQ_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
    T_EQ_INT(stat(seg, &st), 0);
    T_EQ_INT(journal_append(j, &c), 0);
    seen_t s = {0};
    T_EQ_INT(journal_replay(j, collect, &s), 0);
    T_EQ_INT(s.n, 2);                    /* r-1 and r-3; nothing of r-2 */
    T_EQ_STR(s.id[0], "r-1");
    T_EQ_INT(s.reserved[0], 1000);
    T_EQ_STR(s.id[1], "r-3");
    T_EQ_INT(s.reserved[1], 7);
    journal_close(j);
    cleanup(db);
}

int main(void)
{
    T_RUN(test_lines_replay_exactly);
    T_RUN(test_short_write_leaves_no_partial_line);
    T_RUN(test_older_lines_replay);
    return t_summary("journal");
}
