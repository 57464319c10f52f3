/* ledger_bench: settled requests per second through the ledger's writer
 * thread (group commit, WAL, synchronous=NORMAL — the serving configuration).
 * Each request is two records, as in the proxy: the inflight row before the
 * upstream call and its completion after. Submitters run on T threads.
 *   build/perf/ledger_bench [N requests] [T threads]   (prints one line) */
#include "ledger.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long n_per_thread;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct { ledger_t *l; int t; } arg_t;

static void *submit(void *p)
{
    arg_t *a = p;
    ledger_rec_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.team, sizeof r.team, "bench");
    snprintf(r.key_id, sizeof r.key_id, "k%d", a->t);
    snprintf(r.model, sizeof r.model, "anthropic/claude-haiku-4-5");
    for (long i = 0; i < n_per_thread; i++) {
        snprintf(r.id, sizeof r.id, "b%d-%ld", a->t, i);
        r.started_ms = 1795400000000LL + i;
        r.reserved = 400000;
        r.state = LEDGER_INFLIGHT;
        r.upstream_id[0] = '\0';
        ledger_submit(a->l, &r, NULL, NULL);
        r.ended_ms = r.started_ms + 1;
        r.status = 200;
        r.prompt = 40;
        r.completion = 7;
        r.charged = 75000;
        r.state = LEDGER_SETTLED;
        snprintf(r.upstream_id, sizeof r.upstream_id, "up-%d-%ld", a->t, i);
        ledger_submit(a->l, &r, NULL, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int threads = argc > 2 ? atoi(argv[2]) : 4;
    if (threads < 1 || threads > 64 || n < threads) return 2;
    n_per_thread = n / threads;
    char dir[] = "/tmp/pinmeter-ledger-bench-XXXXXX", path[128], err[256];
    if (!mkdtemp(dir)) return 1;
    snprintf(path, sizeof path, "%s/ledger.db", dir);
    ledger_t *l = ledger_open(path, err, sizeof err);
    if (!l || ledger_writer_start(l) != 0) { fprintf(stderr, "%s\n", err); return 1; }
    pthread_t th[64];
    arg_t args[64];
    double t0 = now_s();
    for (int t = 0; t < threads; t++) {
        args[t] = (arg_t){l, t};
        pthread_create(&th[t], NULL, submit, &args[t]);
    }
    for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
    while (ledger_backlog(l) > 0) usleep(1000);
    double secs = now_s() - t0;
    nanos_t spent = 0;
    ledger_spent_since(l, "bench", 0, &spent);
    ledger_close(l, 1000);
    long done = n_per_thread * threads;
    printf("LEDGER requests=%ld threads=%d seconds=%.3f settled_per_s=%.0f spent_ok=%d "
           "(WAL, synchronous=NORMAL: no fsync per commit)\n",
           done, threads, secs, done / secs, spent == (nanos_t)done * 75000);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    return spent == (nanos_t)done * 75000 ? 0 : 1;
}
