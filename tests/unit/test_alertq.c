/* Unit tests for alertq, the alert thread's inbox: repeats coalesce, a
 * refusal keeps its first figures, a take empties the inbox, the deadline
 * is kept, marks from another thread wake a waiting take, stop is seen. */
#include "alertq.h"
#include "t.h"

#include <pthread.h>
#include <time.h>

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_coalesce(void)
{
    alertq_t *q = alertq_new();
    book_refusal_t w1 = { .scope = BOOK_SCOPE_TEAM, .cap = 10, .spent = 9, .required = 5 };
    book_refusal_t w2 = { .scope = BOOK_SCOPE_TEAM, .cap = 10, .spent = 10, .required = 7 };
    for (int i = 0; i < 1000; i++) alertq_settled(q, 3, "t3");
    alertq_settled(q, 40, "t40");                       /* grows the table */
    alertq_refused(q, 3, "t3", 111, &w1);
    alertq_refused(q, 3, "t3", 222, &w2);               /* the first one is kept */
    alertq_refused(q, -1, "none", 1, &w1);              /* no slot: ignored */
    alertq_take_t t;
    T_EQ_INT(alertq_take(q, mono_ms(), &t), 0);
    T_EQ_INT(t.n, 2);
    T_EQ_INT(t.slots[0], 3);
    T_EQ_STR(t.teams[0].name, "t3");
    T_EQ_INT(t.teams[0].check, 1);
    T_EQ_INT(t.teams[0].refused, 1);
    T_EQ_INT(t.teams[0].refused_at_s, 111);
    T_EQ_INT(t.teams[0].why.required, 5);
    T_EQ_INT(t.slots[1], 40);
    T_EQ_INT(t.teams[1].refused, 0);
    T_EQ_INT(t.account, 1);                             /* a settle moves the account too */
    T_EQ_INT(t.account_synced, 0);
    T_EQ_INT(t.stop, 0);
    alertq_take_free(&t);
    int64_t t0 = mono_ms();
    T_EQ_INT(alertq_take(q, t0 + 50, &t), 0);           /* nothing left: waits it out */
    T_CHECK(mono_ms() - t0 >= 49);
    T_EQ_INT(t.n + t.account + t.account_synced, 0);
    alertq_take_free(&t);
    int slots[] = { 1, 2 };
    const char *names[] = { "a", "b" };
    alertq_check_all(q, slots, names, 2);
    alertq_account_synced(q);
    T_EQ_INT(alertq_take(q, -1, &t), 0);
    T_EQ_INT(t.n, 2);
    T_EQ_INT(t.account_synced, 1);
    alertq_take_free(&t);
    alertq_free(q);
}

static void *marker(void *arg)
{
    struct timespec ts = { 0, 30 * 1000000 };
    nanosleep(&ts, NULL);
    alertq_settled(arg, 7, "seven");
    nanosleep(&ts, NULL);
    alertq_stop(arg);
    return NULL;
}

static void test_wake_and_stop(void)
{
    alertq_t *q = alertq_new();
    pthread_t th;
    pthread_create(&th, NULL, marker, q);
    alertq_take_t t;
    int64_t t0 = mono_ms();
    T_EQ_INT(alertq_take(q, -1, &t), 0);                /* no deadline: the mark wakes it */
    T_CHECK(mono_ms() - t0 < 5000);
    T_EQ_INT(t.n, 1);
    T_EQ_INT(t.slots[0], 7);
    alertq_take_free(&t);
    T_EQ_INT(alertq_take(q, -1, &t), 0);
    T_EQ_INT(t.stop, 1);
    alertq_take_free(&t);
    T_EQ_INT(alertq_take(q, -1, &t), 0);                /* every take after stop */
    T_EQ_INT(t.stop, 1);
    alertq_take_free(&t);
    pthread_join(th, NULL);
    alertq_free(q);
}

int main(void)
{
    T_RUN(test_coalesce);
    T_RUN(test_wake_and_stop);
    return t_summary("alertq");
}
