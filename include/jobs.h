/* jobs: work that must not run on the event loop — a usage query over the
 * ledger, formatting a metrics scrape, reading the alert log — done by a
 * small pool of threads of its own. A route handler suspends its request
 * (req_hold), submits a job, and the job answers it (req_answer_later_as)
 * and drops the reference. */
#ifndef PINMETER_JOBS_H
#define PINMETER_JOBS_H
#include <stddef.h>

typedef struct jobs jobs_t;

typedef void (*jobs_fn)(void *arg);

/* n threads ("pm-jobs"); NULL on failure. */
jobs_t *jobs_start(int n);
/* Queues fn(arg) (any thread). 0, or -1 when stopping or out of memory:
 * fn is then not called and the caller still owns arg. */
int jobs_submit(jobs_t *j, jobs_fn fn, void *arg);
/* Runs what is queued, then joins the threads and frees; NULL is a no-op. */
void jobs_stop(jobs_t *j);

#endif
