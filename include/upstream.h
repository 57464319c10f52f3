/* upstream: one transfer to Pinata per request — building it (URL, headers,
 * body), taking the reply in (buffered, or relayed as SSE event by event
 * through the request's hand-over buffer, paused when the client is slow),
 * and finishing it: the verdict on the facts seen, the ledger row, the
 * budget settlement and the answer for the listener, exactly once. Runs on
 * the event loop's thread (loop.h), which calls it through loop_ops_t —
 * but for a submit refused while the loop stops, which is finished on the
 * submitting thread. */
#ifndef PINMETER_UPSTREAM_H
#define PINMETER_UPSTREAM_H
#include "req.h"

typedef struct upstream upstream_t;

/* The transfers' side of loop, which it starts. NULL on failure. */
upstream_t *upstream_start(app_t *app, struct loop *loop);
/* Hands r, with the reference req_wait_upstream took, to the loop to start
 * its transfer (any thread). When the loop is stopping the request is
 * finished at once without going upstream. */
void upstream_submit(upstream_t *u, req_t *r);
/* Asks the loop to cut the transfer of r, whose client left (any thread). */
void upstream_abort(upstream_t *u, req_t *r);
/* Frees, after loop_stop (nothing in flight any more); NULL is a no-op. */
void upstream_free(upstream_t *u);

#endif
