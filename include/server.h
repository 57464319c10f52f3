/* server: the listener. libmicrohttpd runs in external-epoll mode, driven by
 * the event loop (loop.h); this module starts it, takes each request through
 * the route table (routes.h) to its handler, collects request bodies, keeps
 * the header deadline of every client connection, notices a stream's client
 * leaving while it waits for the upstream, and drains on shutdown. */
#ifndef PINMETER_SERVER_H
#define PINMETER_SERVER_H
#include <signal.h>
#include "app.h"

/* Listens on the config's address (app->srv) and serves until *stop; calls
 * reload(ctx) whenever *hup is set. On stop: stops accepting and waits up to
 * drain_s for requests in flight. 0, or -1 when it cannot listen. */
int server_run(app_t *app, volatile sig_atomic_t *stop, volatile sig_atomic_t *hup,
               void (*reload)(void *ctx), void *ctx);
/* Stops the listener and frees it, after loop_stop; NULL is a no-op. */
void server_free(struct server *s);

#endif
