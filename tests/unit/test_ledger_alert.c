/* Unit tests for ledger_alert: an event is recorded once (INSERT OR IGNORE
 * by id), attempts update it, pending ones come back oldest first, the
 * listing is newest first with since and limit, meta rides in the same
 * transaction, and all of it survives closing and reopening the file (the
 * listing also through the read connection while the writer runs). */
#include "ledger_alert.h"
#include "t.h"

#include <stdlib.h>
#include <unistd.h>

static char tmpdir[64];

typedef struct seen { int n; char ids[16][32]; char states[16][16]; int attempts[16];
                      char errs[16][64]; char payloads[16][128]; int64_t next[16]; } seen_t;

static int collect(void *ud, const ledger_alert_t *al)
{
    seen_t *s = ud;
    if (s->n >= 16) return 1;
    snprintf(s->ids[s->n], 32, "%s", al->id);
    snprintf(s->states[s->n], 16, "%s", ledger_alert_state_name(al->state));
    s->attempts[s->n] = al->attempts;
    snprintf(s->errs[s->n], 64, "%s", al->last_error ? al->last_error : "(null)");
    snprintf(s->payloads[s->n], 128, "%s", al->payload);
    s->next[s->n] = al->next_ms;
    s->n++;
    return 0;
}

static ledger_alert_t ev(const char *id, int64_t at, const char *team, const char *payload)
{
    return (ledger_alert_t){ .id = id, .event = "budget_threshold", .team = team, .at_ms = at,
                             .next_ms = at, .payload = payload };
}

static void exercise(ledger_t *l, ledger_alerts_t *a)
{
    ledger_alert_t e1 = ev("aaa", 1000, "t1", "{\"n\":1}");
    ledger_alert_t e2 = ev("bbb", 2000, NULL, "{\"n\":2}");
    ledger_alert_t e3 = ev("ccc", 3000, "t1", "{\"n\":3}");
    T_EQ_INT(ledger_alert_add(a, &e1, NULL, NULL), 1);
    T_EQ_INT(ledger_alert_add(a, &e1, NULL, NULL), 0);          /* once */
    ledger_alert_t dup = ev("aaa", 9999, "t2", "{\"other\":1}");
    T_EQ_INT(ledger_alert_add(a, &dup, NULL, NULL), 0);         /* the first one stays */
    T_EQ_INT(ledger_alert_add(a, &e2, "alerts.x", "1 0"), 1);
    T_EQ_INT(ledger_alert_add(a, &e3, NULL, NULL), 1);
    char meta[32];
    T_EQ_INT(ledger_alert_meta_get(a, "alerts.x", meta, sizeof meta), 0);
    T_EQ_STR(meta, "1 0");
    T_EQ_INT(ledger_alert_meta_get(a, "alerts.none", meta, sizeof meta), 0);
    T_EQ_STR(meta, "");
    T_EQ_INT(ledger_alert_meta_set(a, "alerts.x", "1 1"), 0);
    T_EQ_INT(ledger_alert_meta_get(a, "alerts.x", meta, sizeof meta), 0);
    T_EQ_STR(meta, "1 1");
    T_EQ_INT(ledger_alert_update(a, "aaa", LEDGER_ALERT_PENDING, 1, "HTTP 500", 5000), 0);
    T_EQ_INT(ledger_alert_update(a, "aaa", LEDGER_ALERT_DELIVERED, 2, NULL, 6000), 0);
    T_EQ_INT(ledger_alert_update(a, "ccc", LEDGER_ALERT_FAILED, 9, "timed out", 7000), 0);
    seen_t s = {0};
    T_EQ_INT(ledger_alert_each(a, 1, collect, &s), 0);          /* pending only */
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.ids[0], "bbb");
    memset(&s, 0, sizeof s);
    char err[256];
    T_EQ_INT(ledger_alert_list(l, 0, 100, collect, &s, err, sizeof err), 0);
    T_EQ_INT(s.n, 3);                                            /* newest first */
    T_EQ_STR(s.ids[0], "ccc");
    T_EQ_STR(s.states[0], "failed");
    T_EQ_INT(s.attempts[0], 9);
    T_EQ_STR(s.errs[0], "timed out");
    T_EQ_STR(s.ids[1], "bbb");
    T_EQ_STR(s.states[1], "pending");
    T_EQ_STR(s.errs[1], "(null)");
    T_EQ_STR(s.ids[2], "aaa");
    T_EQ_STR(s.states[2], "delivered");
    T_EQ_INT(s.attempts[2], 2);
    T_EQ_STR(s.errs[2], "HTTP 500");                             /* the last failure stays */
    T_EQ_STR(s.payloads[2], "{\"n\":1}");
    memset(&s, 0, sizeof s);
    T_EQ_INT(ledger_alert_list(l, 2000, 100, collect, &s, err, sizeof err), 0);
    T_EQ_INT(s.n, 2);
    memset(&s, 0, sizeof s);
    T_EQ_INT(ledger_alert_list(l, 0, 1, collect, &s, err, sizeof err), 0);
    T_EQ_INT(s.n, 1);
    T_EQ_STR(s.ids[0], "ccc");
}

static void test_memory(void)
{
    char err[256];
    ledger_t *l = ledger_open(":memory:", err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    ledger_alerts_t *a = ledger_alerts_open(l, err, sizeof err);
    T_CHECK(a != NULL);
    if (a) exercise(l, a);
    ledger_alerts_close(a);
    ledger_close(l, 0);
}

static void test_file_survives(void)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/a.db", tmpdir);
    ledger_t *l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    T_CHECK(ledger_recover(l, 0) >= 0);
    T_EQ_INT(ledger_writer_start(l), 0);
    ledger_alerts_t *a = ledger_alerts_open(l, err, sizeof err);
    T_CHECK(a != NULL);
    if (a) exercise(l, a);                 /* the listing goes through the read connection */
    ledger_alerts_close(a);
    ledger_close(l, 1000);
    l = ledger_open(path, err, sizeof err);
    T_CHECK(l != NULL);
    if (!l) return;
    a = ledger_alerts_open(l, err, sizeof err);
    T_CHECK(a != NULL);
    if (a) {
        ledger_alert_t e1 = ev("aaa", 1000, "t1", "{\"n\":1}");
        T_EQ_INT(ledger_alert_add(a, &e1, NULL, NULL), 0);     /* once across restarts */
        seen_t s = {0};
        T_EQ_INT(ledger_alert_each(a, 1, collect, &s), 0);
        T_EQ_INT(s.n, 1);
        T_EQ_STR(s.ids[0], "bbb");
    }
    ledger_alerts_close(a);
    char inst[64];
    T_EQ_INT(ledger_instance_id(l, "abc123", inst, sizeof inst), 0);
    ledger_close(l, 0);
    T_EQ_INT(ledger_alert_peek_instance(path, inst, sizeof inst), 0);
    T_EQ_STR(inst, "abc123");
    snprintf(path, sizeof path, "%s/none.db", tmpdir);
    T_EQ_INT(ledger_alert_peek_instance(path, inst, sizeof inst), -1);
    T_CHECK(access(path, F_OK) != 0);                  /* peeking creates nothing */
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pm-ledger-alert-XXXXXX");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    T_RUN(test_memory);
    T_RUN(test_file_survives);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return t_summary("ledger_alert");
}
