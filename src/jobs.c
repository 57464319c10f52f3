/* jobs: a few threads taking work off the event loop (see jobs.h). A FIFO
 * under one mutex; each job runs once, in submission order per thread. */
#include "jobs.h"
#include <pthread.h>
#include <stdlib.h>

#define JOBS_MAX_THREADS 8

typedef struct job { struct job *next; jobs_fn fn; void *arg; } job_t;

struct jobs {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;            /* [mu] */
    int stopping;                  /* [mu] */
    int n;
    pthread_t th[JOBS_MAX_THREADS];
};

static void *jobs_main(void *arg)
{
    jobs_t *j = arg;
    pthread_mutex_lock(&j->mu);
    for (;;) {
        while (!j->head && !j->stopping) pthread_cond_wait(&j->cv, &j->mu);
        job_t *jb = j->head;
        if (!jb) break;            /* stopping, and nothing left */
        j->head = jb->next;
        if (!j->head) j->tail = NULL;
        pthread_mutex_unlock(&j->mu);
        jb->fn(jb->arg);
        free(jb);
        pthread_mutex_lock(&j->mu);
    }
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

jobs_t *jobs_start(int n)
{
    if (n < 1) n = 1;
    if (n > JOBS_MAX_THREADS) n = JOBS_MAX_THREADS;
    jobs_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    for (; j->n < n; j->n++) {
        if (pthread_create(&j->th[j->n], NULL, jobs_main, j) != 0) break;
        pthread_setname_np(j->th[j->n], "pm-jobs");
    }
    if (j->n == 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j);
        return NULL;
    }
    return j;
}

int jobs_submit(jobs_t *j, jobs_fn fn, void *arg)
{
    job_t *jb = malloc(sizeof *jb);
    if (!jb) return -1;
    jb->next = NULL;
    jb->fn = fn;
    jb->arg = arg;
    pthread_mutex_lock(&j->mu);
    if (j->stopping) {
        pthread_mutex_unlock(&j->mu);
        free(jb);
        return -1;
    }
    if (j->tail) j->tail->next = jb; else j->head = jb;
    j->tail = jb;
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

void jobs_stop(jobs_t *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->stopping = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; i < j->n; i++) pthread_join(j->th[i], NULL);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j);
}
