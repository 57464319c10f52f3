/* loop: the event loop. One thread drives, with one epoll set, both
 * libmicrohttpd (the listener, run in its external-epoll mode: its epoll fd
 * sits in this set) and a curl multi handle for every transfer to Pinata
 * (curl_multi_socket_action: cost per event does not grow with the number of
 * transfers). It knows nothing of requests or metering: it calls the
 * transfers' side through the loop_ops_t table it is started with, and
 * carries their work items as opaque pointers.
 *
 * Other threads (the Redis reserver, the supervisor) hand it work through
 * three small queues (start, unpause, abort) and wake it with an eventfd;
 * the loop's own posts skip the eventfd. */
#ifndef PINMETER_LOOP_H
#define PINMETER_LOOP_H
#include <curl/curl.h>
#include <microhttpd.h>

typedef struct loop loop_t;

typedef enum { LOOP_START = 0, LOOP_UNPAUSE, LOOP_ABORT, LOOP_NQUEUES } loop_queue_t;

/* What the loop asks of the transfers' side, all on the loop's thread. */
typedef struct loop_ops {
    /* A posted item, in the order start, unpause, abort of one turn. */
    void (*run)(void *ctx, loop_queue_t q, void *item);
    /* curl finished the transfer on easy with result res. */
    void (*done)(void *ctx, CURL *easy, CURLcode res);
    /* curl watches socket fd for easy's transfer: 1 when that transfer
     * relays a stream (its socket then goes to the relay set), else 0. */
    int (*socket)(void *ctx, CURL *easy, int fd);
    /* The loop is stopping: end every transfer now (their answers still go
     * out while busy() says requests are held). */
    void (*stop)(void *ctx);
    int (*busy)(void *ctx);
} loop_ops_t;

/* A loop with its epoll sets and curl multi handle, not yet running. NULL on
 * failure. */
loop_t *loop_new(void);
/* Starts the loop's thread ("pm-loop") with ops and their ctx (borrowed
 * until loop_free). 0 or -1. */
int loop_start(loop_t *l, const loop_ops_t *ops, void *ctx);
/* Queues item for ops->run (any thread). 0, or -1 when the loop is stopping
 * (or out of memory): the item was not taken. */
int loop_post(loop_t *l, loop_queue_t q, void *item);

/* Adds a transfer to the multi handle (loop thread), with the loop's
 * socket-close hook set on it. 0 or -1. */
int loop_add(loop_t *l, CURL *easy);
/* At most n connections to a host at once (0: no limit); loop thread. */
void loop_host_connections(loop_t *l, long n);
/* Removes it (harmless when it was not added). */
void loop_remove(loop_t *l, CURL *easy);
/* The stream on fd has started relaying (loop thread): its socket moves to
 * the relay set, served after everything else in a turn. */
void loop_relay(loop_t *l, int fd);

/* Has the loop drive the listener (any thread). */
void loop_attach(loop_t *l, struct MHD_Daemon *d);
/* A connection was suspended / resumed (any thread): the loop runs the
 * listener to act on a resume. */
void loop_suspended(loop_t *l);
void loop_resumed(loop_t *l);
/* Has the loop stop the listener accepting (MHD_quiesce_daemon). */
void loop_quiesce(loop_t *l);

/* Stops the thread: ops->stop ends the transfers, the listener keeps
 * running while ops->busy (up to 2 s), then the thread is joined. Later
 * posts are refused. loop_stop_begin only asks (so that several loops stop
 * at once); loop_stop asks if not yet and joins. NULL is a no-op. */
void loop_stop_begin(loop_t *l);
void loop_stop(loop_t *l);
/* Frees a stopped (or never started) loop; NULL is a no-op. */
void loop_free(loop_t *l);

#endif
