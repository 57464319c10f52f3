/* Unit tests for ledger_account: syncs and events recorded (an event with
 * its sync in one transaction), the last sync, the reads reconciliation
 * makes (the sync before the range, the range, events by kind, charges by
 * settle time with interrupted rows read whatever their start), the top-up
 * changes (through the store and from the command line's own connection),
 * and a read-only ledger without the tables reading as empty. */
#include "ledger_account.h"
#include "t.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define C NANOS_PER_CREDIT
#define T0 1795392000000LL            /* 2026-11-23T00:00:00Z */

static char tmpdir[64];

typedef struct syncs { int n; ledger_sync_t v[16]; } syncs_t;
typedef struct events { int n; int64_t at[16]; char kind[16][16]; nanos_t credits[16]; } events_t;
typedef struct charges { int n; int64_t at[16]; nanos_t sum; } charges_t;

static int on_sync(void *ud, const ledger_sync_t *s)
{
    syncs_t *x = ud;
    if (x->n < 16) x->v[x->n++] = *s;
    return 0;
}

static int on_event(void *ud, const ledger_account_event_t *e)
{
    events_t *x = ud;
    if (x->n >= 16) return 1;
    x->at[x->n] = e->at_ms;
    snprintf(x->kind[x->n], 16, "%s", e->kind);
    x->credits[x->n++] = e->credits;
    return 0;
}

static int on_charge(void *ud, int64_t ended_ms, nanos_t charged)
{
    charges_t *x = ud;
    if (x->n < 16) x->at[x->n] = ended_ms;
    x->n++;
    x->sum += charged;
    return 0;
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int done_n;

static void on_done(void *ud, int ok)
{
    (void)ud;
    pthread_mutex_lock(&mu);
    done_n += ok;
    pthread_mutex_unlock(&mu);
}

/* A request started at start and settled at end with charge (state st). */
static void request(ledger_t *l, const char *id, int64_t start, int64_t end, nanos_t charge,
                    ledger_state_t st)
{
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.id, sizeof r.id, "%s", id);
    snprintf(r.team, sizeof r.team, "t");
    snprintf(r.key_id, sizeof r.key_id, "k");
    snprintf(r.model, sizeof r.model, "m");
    r.started_ms = start;
    r.reserved = charge;
    r.state = LEDGER_INFLIGHT;
    T_EQ_INT(ledger_submit(l, &r, on_done, NULL), 0);
    r.state = st;
    r.ended_ms = end;
    r.charged = charge;
    r.status = 200;
    T_EQ_INT(ledger_submit(l, &r, on_done, NULL), 0);
}

static void wait_done(int n)
{
    for (int i = 0; i < 500; i++) {
        pthread_mutex_lock(&mu);
        int d = done_n;
        pthread_mutex_unlock(&mu);
        if (d >= n) return;
        struct timespec ts = { 0, 10 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

static void test_store_and_reads(void)
{
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/acct.db", tmpdir);
    ledger_t *l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    T_CHECK(ledger_recover(l, T0) >= 0);
    ledger_account_t *a = ledger_account_open(l, err, sizeof err);
    T_CHECK(a != NULL);
    if (!a) { ledger_close(l, 0); return; }
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_sync_t last;
    T_EQ_INT(ledger_account_last_sync(a, &last), 0);
    ledger_sync_t s1 = { .at_ms = T0 + 1000, .total = 100 * C, .available = 100 * C };
    ledger_sync_t s2 = { .at_ms = T0 + 31000, .total = 99 * C, .loaned = C / 2,
                         .available = 99 * C - C / 2, .charged_known = 1, .charged = C };
    ledger_sync_t s3 = { .at_ms = T0 + 61000, .total = 109 * C, .available = 109 * C,
                         .charged_known = 1, .charged = 2 * C };
    ledger_account_event_t up = { .at_ms = s3.at_ms, .kind = LEDGER_EV_TOPUP, .credits = 12 * C,
                               .total = s3.total, .prev_total = s2.total };
    T_EQ_INT(ledger_account_add_sync(a, &s1, NULL), 0);
    T_EQ_INT(ledger_account_add_sync(a, &s2, NULL), 0);
    T_EQ_INT(ledger_account_add_sync(a, &s3, &up), 0);
    ledger_account_event_t rs = { .at_ms = T0 + 70000, .kind = LEDGER_EV_GUARD_RESET };
    T_EQ_INT(ledger_account_add_event(a, &rs), 0);
    T_EQ_INT(ledger_account_last_sync(a, &last), 1);
    T_EQ_INT(last.at_ms, s3.at_ms);
    T_EQ_INT(last.total, 109 * C);
    T_EQ_INT(last.charged_known, 1);
    T_EQ_INT(last.charged, 2 * C);

    /* the range [s2, s3]: the sync before it first */
    syncs_t sy = {0};
    T_EQ_INT(ledger_account_read_syncs(l, s2.at_ms, s3.at_ms + 1, on_sync, &sy, err, sizeof err), 0);
    T_EQ_INT(sy.n, 3);
    T_EQ_INT(sy.v[0].at_ms, s1.at_ms);
    T_EQ_INT(sy.v[0].charged_known, 0);
    T_EQ_INT(sy.v[1].loaned, C / 2);
    T_EQ_INT(sy.v[2].total, 109 * C);
    sy.n = 0;
    T_EQ_INT(ledger_account_read_syncs(l, 0, s1.at_ms, on_sync, &sy, err, sizeof err), 0);
    T_EQ_INT(sy.n, 0);
    events_t ev = {0};
    T_EQ_INT(ledger_account_read_events(l, 0, INT64_MAX, NULL, on_event, &ev, err, sizeof err), 0);
    T_EQ_INT(ev.n, 2);
    T_EQ_STR(ev.kind[0], "topup");
    T_EQ_INT(ev.credits[0], 12 * C);
    T_EQ_STR(ev.kind[1], "guard_reset");
    ev.n = 0;
    T_EQ_INT(ledger_account_read_events(l, 0, INT64_MAX, LEDGER_EV_TOPUP, on_event, &ev, err,
                                     sizeof err), 0);
    T_EQ_INT(ev.n, 1);

    /* charges by settle time */
    request(l, "r1", T0 + 500, T0 + 1000, 7, LEDGER_SETTLED);       /* at s1: before */
    request(l, "r2", T0 + 900, T0 + 1001, 11, LEDGER_SETTLED);      /* just after s1 */
    request(l, "r3", T0 + 20000, T0 + 31000, 13, LEDGER_ESTIMATED); /* at s2: in (s1, s2] */
    request(l, "r4", T0 + 30000, T0 + 40000, 0, LEDGER_FAILED);     /* charged nothing */
    request(l, "r5", T0 - 3600000 * 5, T0 + 50000, 17, LEDGER_INTERRUPTED);   /* long ago */
    request(l, "r6", T0 - 3600000 * 5, T0 + 50000, 19, LEDGER_SETTLED);       /* past lookback */
    wait_done(12);
    charges_t ch = {0};
    T_EQ_INT(ledger_account_read_charges(l, s1.at_ms, s3.at_ms, 3600000, on_charge, &ch, err,
                                      sizeof err), 0);
    T_EQ_INT(ch.n, 3);
    T_EQ_INT(ch.sum, 11 + 13 + 17);
    memset(&ch, 0, sizeof ch);
    T_EQ_INT(ledger_account_read_charges(l, s1.at_ms, s2.at_ms, 3600000, on_charge, &ch, err,
                                      sizeof err), 0);
    T_EQ_INT(ch.sum, 11 + 13);

    T_EQ_INT(ledger_account_topup_change(a, T0 + 80000, NULL, "{\"threshold\":5,\"amount\":10}",
                                      "api"), 0);
    ledger_account_close(a);
    ledger_close(l, 1000);
    /* the command line's own connection, beside nothing */
    T_EQ_INT(ledger_account_topup_change_at(path, T0 + 90000, "{\"threshold\":5,\"amount\":10}",
                                         "{\"threshold\":null,\"amount\":null}", "cli", err,
                                         sizeof err), 0);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.db", tmpdir);
    T_EQ_INT(ledger_account_topup_change_at(missing, 1, NULL, "{}", "cli", err, sizeof err), -1);
    T_CHECK(access(missing, F_OK) != 0);            /* not created */

    /* read-only, after a restart: everything is still there */
    l = ledger_open_ro(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    sy.n = 0;
    T_EQ_INT(ledger_account_read_syncs(l, 0, INT64_MAX, on_sync, &sy, err, sizeof err), 0);
    T_EQ_INT(sy.n, 3);
    ledger_close(l, 0);
}

static void test_without_tables(void)
{
    char path[128], err[512];
    snprintf(path, sizeof path, "%s/plain.db", tmpdir);
    ledger_t *l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    ledger_close(l, 0);
    l = ledger_open_ro(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    syncs_t sy = {0};
    events_t ev = {0};
    T_EQ_INT(ledger_account_read_syncs(l, 0, INT64_MAX, on_sync, &sy, err, sizeof err), 0);
    T_EQ_INT(ledger_account_read_events(l, 0, INT64_MAX, NULL, on_event, &ev, err, sizeof err), 0);
    T_EQ_INT(sy.n + ev.n, 0);
    ledger_close(l, 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pm-unit-acct-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    T_RUN(test_store_and_reads);
    T_RUN(test_without_tables);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_summary("ledger_account");
}
