/* server: the listener (see server.h). Every callback here runs on the
 * event loop's thread, which runs libmicrohttpd; the sweep runs on the
 * supervisor's (server_run's) thread. A connection waiting on the upstream
 * is suspended (req.h); the upstream side resumes it. */
#include "server.h"
#include "events.h"
#include "loop.h"
#include "req.h"
#include "routes.h"
#include "upstream.h"
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* One client connection, for the header deadline: a connection waiting for
 * a request's headers longer than client_timeout_s is shut down, however it
 * trickles bytes (libmicrohttpd's own timeout is per idle gap only). */
typedef struct conn_rec {
    struct conn_rec *prev, *next;
    int fd;
    int in_request;                /* headers received, request not yet completed */
    int cut;                       /* already shut down */
    int64_t wait_since_ms;
    req_t *req;                    /* the request in progress, borrowed [conns_mu] */
} conn_rec_t;

/* One worker's libmicrohttpd daemon, on the address every worker shares
 * (SO_REUSEPORT: the kernel spreads new connections over them). */
typedef struct listener {
    struct server *s;
    worker_t *w;
    struct MHD_Daemon *mhd;
} listener_t;

struct server {
    app_t *app;
    listener_t *ls;                /* [n] */
    int n;
    atomic_int conns;              /* open client connections, every worker's */
    pthread_mutex_t conns_mu;
    conn_rec_t conns_list;         /* sentinel of the open connections [conns_mu] */
};

static conn_rec_t *conn_rec_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Marks the connection as inside a request (headers in) or waiting again. */
static void conn_mark(struct server *s, struct MHD_Connection *c, int in_request)
{
    conn_rec_t *cr = conn_rec_of(c);
    if (!cr) return;
    pthread_mutex_lock(&s->conns_mu);
    cr->in_request = in_request;
    cr->wait_since_ms = base_wall_ms();
    if (!in_request) cr->req = NULL;
    pthread_mutex_unlock(&s->conns_mu);
}

/* Remembers the request on its connection, so the sweep can see a client
 * leave while the connection is suspended. */
static void conn_set_req(struct server *s, struct MHD_Connection *c, req_t *r)
{
    conn_rec_t *cr = conn_rec_of(c);
    if (!cr) return;
    pthread_mutex_lock(&s->conns_mu);
    cr->req = r;
    pthread_mutex_unlock(&s->conns_mu);
}

/* Over max_connections: a cheap, clear refusal rather than a hang. */
static enum MHD_Result refuse_overload(struct MHD_Connection *c)
{
    char *s = req_error_json("too many connections: pinmeter is at max_connections; "
                             "retry shortly", "overloaded", "too_many_connections");
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        s ? strlen(s) : 0, s ? s : (char *)"", s ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    enum MHD_Result ret = MHD_queue_response(c, 503, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    listener_t *l = cls;
    struct server *s = l->s;
    req_t *r = *con_cls;
    if (!r) {
        conn_mark(s, c, 1);
        if (atomic_load(&s->conns) > app_snap(s->app)->cfg->max_connections) {
            events_refused(s->app, NULL, EVENTS_TOO_MANY_CONNECTIONS, NULL);
            return refuse_overload(c);
        }
        return routes_begin(s->app, l->w, c, url, method, con_cls);
    }
    if (*upload_size) {
        if (req_append_body(r, upload, *upload_size) != 0) return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&r->mu);
    resp_kind_t kind = r->resp_kind;
    if (kind != RESP_NONE) {
        /* Taken under the lock, queued outside it: libmicrohttpd calls
         * read_stream (which takes r->mu) under its response's lock, so
         * queuing under r->mu would take the two in the other order. */
        char *body = r->resp_body;
        r->resp_body = NULL;
        pthread_mutex_unlock(&r->mu);
        return req_queue_prepared(r, c, kind, body);
    }
    if (r->dispatched) {           /* woken early: wait for the upstream */
        req_suspend_locked(r);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    r->t_body_us = base_mono_us();
    enum MHD_Result ret = r->serve(r, c);
    /* dispatched only by this thread, just now */
    if (r->dispatched) conn_set_req(s, c, r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    struct server *s = ((listener_t *)cls)->s;
    conn_mark(s, c, 0);
    req_t *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    pthread_mutex_lock(&r->mu);
    r->client_gone = 1;
    int abort = r->dispatched && !r->upstream_done && r->adm.stream;
    pthread_mutex_unlock(&r->mu);
    if (r->chat) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_HTTP_STATUS);
        events_answered(s->app, r, ci ? (int)ci->http_status : 0);
    }
    /* A stream whose reader left is cut upstream too; a non-stream request
     * runs to its end so its usage is known and charged exactly. */
    if (abort) upstream_abort(r->w->up, r);
    req_unref(r);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode code)
{
    struct server *s = ((listener_t *)cls)->s;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        atomic_fetch_add(&s->conns, 1);
        conn_rec_t *cr = calloc(1, sizeof *cr);
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (!cr || !ci) { free(cr); return; }
        cr->fd = ci->connect_fd;
        cr->wait_since_ms = base_wall_ms();
        pthread_mutex_lock(&s->conns_mu);
        cr->next = s->conns_list.next;
        cr->prev = &s->conns_list;
        cr->next->prev = cr;
        s->conns_list.next = cr;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_ctx = cr;
        return;
    }
    atomic_fetch_sub(&s->conns, 1);
    conn_rec_t *cr = *socket_ctx;
    if (!cr) return;
    pthread_mutex_lock(&s->conns_mu);
    cr->prev->next = cr->next;
    cr->next->prev = cr->prev;
    pthread_mutex_unlock(&s->conns_mu);
    free(cr);
    *socket_ctx = NULL;
}

/* Shuts down connections that have waited for a request's headers longer
 * than the limit. shutdown(), not close(): libmicrohttpd sees the end of the
 * socket and closes it itself, so no descriptor is reused under it. */
static void sweep_connections(struct server *s, int64_t limit_ms)
{
    int64_t now = base_wall_ms();
    pthread_mutex_lock(&s->conns_mu);
    for (conn_rec_t *cr = s->conns_list.next; cr != &s->conns_list; cr = cr->next) {
        if (!cr->in_request && !cr->cut && now - cr->wait_since_ms > limit_ms) {
            shutdown(cr->fd, SHUT_RDWR);
            cr->cut = 1;
            continue;
        }
        /* libmicrohttpd does not watch a suspended connection, so a stream's
         * client that leaves before the upstream answers would hold its
         * reservation and the upstream transfer until then. Peek instead. */
        req_t *r = cr->req;
        if (!r || !r->adm.stream) continue;
        pthread_mutex_lock(&r->mu);
        /* only while waiting for the upstream's headers: a stream already
         * relaying notices its client at the next event it sends */
        int waiting = r->suspended && r->dispatched && !r->upstream_done &&
                      !r->aborted_early && r->resp_kind == RESP_NONE;
        pthread_mutex_unlock(&r->mu);
        if (!waiting) continue;
        char b;
        ssize_t n = recv(cr->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            pthread_mutex_lock(&r->mu);
            r->aborted_early = 1;
            pthread_mutex_unlock(&r->mu);
            upstream_abort(r->w->up, r);
        }
    }
    pthread_mutex_unlock(&s->conns_mu);
}

static int is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return 0;
}

/* libmicrohttpd's own messages, as log lines of ours (text or JSON). */
static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    base_logl(BASE_WARN, "listener: %s", msg);
}

/* With SO_REUSEPORT a second pinmeter started on the same address would
 * share it silently: before the workers bind with it, a plain bind (as one
 * worker would do) must succeed. 0, or -1 when the address is taken. */
static int address_free(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);   /* TIME_WAIT is fine */
    int rc = bind(fd, ai->ai_addr, ai->ai_addrlen);
    close(fd);
    return rc == 0 ? 0 : -1;
}

/* Starts listener l's libmicrohttpd on the config's address, driven by its
 * worker's loop; with several workers each binds it with SO_REUSEPORT.
 * 0 or -1. */
static int listen_on(listener_t *l, const config_t *cfg)
{
    struct addrinfo hints = {0}, *ai = NULL;
    char port[16], host[256];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    snprintf(host, sizeof host, "%s", cfg->listen_host);
    size_t hl = strlen(host);
    if (hl > 1 && host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        base_log("cannot resolve listen address %s: %s", cfg->listen_host, gai_strerror(gai));
        return -1;
    }
    if (l == &l->s->ls[0] && l->s->n > 1 && address_free(ai) != 0) {
        freeaddrinfo(ai);
        base_log("cannot listen on %s:%d (address in use or not permitted)",
                 cfg->listen_host, cfg->listen_port);
        return -1;
    }
    if (!is_loopback(ai->ai_addr) && l == &l->s->ls[0])
        base_log("WARNING: listening on %s, which is not loopback: anyone who can reach it "
                 "and holds a key can spend credits", cfg->listen_host);
    /* No thread of its own: the loop runs it (one thread per request path,
     * no hand-over). */
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
    l->mhd = MHD_start_daemon(flags, (uint16_t)cfg->listen_port, NULL, NULL,
                              on_request, l,
                              /* first, so that it logs the other options' errors */
                              MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
                              MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                              MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
                              MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
                              /* hard limit above the soft one, so that extra
                               * clients get a 503 instead of a refused socket */
                              MHD_OPTION_CONNECTION_LIMIT,
                              (unsigned)cfg->max_connections + 256,
                              MHD_OPTION_CONNECTION_TIMEOUT,
                              (unsigned)cfg->client_timeout_s,
                              /* per-connection pool: request headers (up to
                               * ~11 KiB; more gets 431) and the send buffer.
                               * libmicrohttpd zeroes it between requests, so
                               * its size is paid on every request (the 32 KiB
                               * default was an eighth of pinmeter's
                               * instructions) and it is resident for every
                               * open stream (12 KiB: 10,000 streams fit in
                               * 400 MiB). */
                              MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(12 * 1024),
                              /* several workers share the address (SO_REUSEPORT);
                               * one keeps libmicrohttpd's default (SO_REUSEADDR
                               * only: its value 0 would turn even that off) */
                              l->s->n > 1 ? MHD_OPTION_LISTENING_ADDRESS_REUSE
                                          : MHD_OPTION_END, (unsigned)1,
                              MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!l->mhd) {
        base_log("cannot listen on %s:%d (address in use or not permitted)",
                 cfg->listen_host, cfg->listen_port);
        return -1;
    }
    return 0;
}

int server_run(app_t *app, volatile sig_atomic_t *stop, volatile sig_atomic_t *hup,
               void (*reload)(void *ctx), void *ctx)
{
    const config_t *cfg = app_snap(app)->cfg;
    struct server *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->app = app;
    pthread_mutex_init(&s->conns_mu, NULL);
    s->conns_list.next = s->conns_list.prev = &s->conns_list;
    app->srv = s;
    if (!(s->ls = calloc((size_t)app->n_workers, sizeof *s->ls))) return -1;
    s->n = app->n_workers;
    for (int i = 0; i < s->n; i++) {
        s->ls[i].s = s;
        s->ls[i].w = &app->workers[i];
        if (listen_on(&s->ls[i], cfg) != 0) return -1;
    }
    for (int i = 0; i < s->n; i++) loop_attach(app->workers[i].loop, s->ls[i].mhd);
    base_log("listening on %s:%d, upstream %s, ledger %s, %s mode, %d worker(s)",
             cfg->listen_host, cfg->listen_port, cfg->upstream_base, cfg->ledger,
             app_snap(app)->passthrough ? "passthrough" : "team", s->n);
    unsigned ticks = 0;
    while (!*stop) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (++ticks % 4 == 0)      /* every 200 ms */
            sweep_connections(s, (int64_t)cfg->client_timeout_s * 1000);
        if (*hup) {
            *hup = 0;
            reload(ctx);
        }
    }
    /* Drain: stop accepting, let requests in flight finish up to drain_s. */
    base_log("stopping: draining %d request(s) in flight (up to %d s)",
             (int)atomic_load(&app->active), cfg->drain_s);
    for (int i = 0; i < app->n_workers; i++)
        loop_quiesce(app->workers[i].loop);   /* on each loop's thread, which runs its listener */
    int64_t deadline = base_wall_ms() + (int64_t)cfg->drain_s * 1000;
    while (atomic_load(&app->active) > 0 && base_wall_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

void server_free(struct server *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++)
        if (s->ls[i].mhd) MHD_stop_daemon(s->ls[i].mhd);
    free(s->ls);
    pthread_mutex_destroy(&s->conns_mu);
    free(s);
}
