/* loop: the event loop (see loop.h). A request goes from client to upstream
 * and back on this one thread, with no hand-over between threads on its
 * path.
 *
 * curl's sockets are in one of two epoll sets: a socket relaying a stream
 * that has started is in the relay set (repfd, itself in the loop's set);
 * every other one (a connect, a request to send, a reply's first bytes) is
 * in the loop's set. A turn of the loop handles the latter first, then takes
 * relay events in batches for a bounded share of the turn (RELAY_TURN_US):
 * when the loop is saturated, a new stream's first byte does not wait behind
 * the chunks of every stream already running. Relay events left over stay in
 * the relay set's ready list (level-triggered), where a wait on the loop's
 * set does not poll them again.
 *
 * A socket curl stops watching while it waits for input (a kept-alive
 * connection between transfers) stays in its set, parked: the next transfer
 * on it usually watches the same, and then needs no epoll_ctl (two system
 * calls a request fewer). An event on a parked socket (the server closed it)
 * takes it out; curl's close of a socket (close_cb) clears its slot, so a new
 * socket given the same number is added. */
#include "loop.h"
#include "base.h"
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define DEFER_MIN_SUSPENDED 1000      /* below this, resumes are acted on at once */
#define DEFER_MAX_US 10000
#define RELAY_TURN_US 1000            /* relaying's share of a saturated turn */
#define RELAY_BATCH 64                /* relay events taken at a time */
/* curl's own connection limit counts connections in use too, and over it
 * curl walks every connection to pick one to close each time a transfer
 * ends: it is set far above anything reached; the transfers bound the idle
 * connections themselves (upstream.c, MAX_CACHED_CONNS). */
#define CURL_CACHE_LIMIT 1000000L

typedef struct vec { void **v; size_t n, cap; } vec_t;

enum { SET_NONE, SET_LOOP, SET_RELAY };

struct loop {
    CURLM *multi;
    const loop_ops_t *ops;
    void *ctx;
    pthread_t thread;
    int started;
    pthread_mutex_t mu;
    vec_t q[LOOP_NQUEUES];            /* [mu] queued by any thread */
    vec_t w[LOOP_NQUEUES];            /* being worked on (loop thread only) */
    int stopping;                     /* [mu] */
    int wake_pending;                 /* [mu] the eventfd was written */
    struct sockslot { unsigned char where, parked; uint32_t events; } *slots;  /* by fd */
    size_t n_slots;
    int repfd;
    int64_t relay_turn_us;
    int epfd, evfd;
    int64_t deadline;                 /* curl's timer, monotonic ms; -1 none */
    struct MHD_Daemon *mhd_new;       /* [mu] a listener to drive, from loop_attach */
    int quiesce;                      /* [mu] stop accepting (loop_quiesce) */
    int local_work;                   /* [mu] the loop queued work for itself */
    int poke;                         /* [mu] another thread resumed a connection */
    int listener_due;                 /* the listener has resumed connections (thread only) */
    struct MHD_Daemon *mhd;           /* the listener being driven (thread only) */
    int mhd_fd;                       /* its epoll fd in our set; -1 none */
    int64_t mhd_at;                   /* when the listener's own timer is due; -1 none */
    /* Resumes are costly with many connections suspended: libmicrohttpd
     * walks every suspended connection on the run after a resume. With
     * thousands of slow streams that walk was most of the CPU (a cache miss
     * per connection, about 0.1 µs), so the runs that follow resumes are then
     * spaced by 1 µs per suspended connection, at most 10 ms: one walk serves
     * every resume since the last, and walking takes at most about a tenth
     * of the core. */
    atomic_int n_susp;                /* connections suspended (about) */
    int resumes;                      /* resumes since the listener last ran (thread only) */
    int mhd_pending;                  /* the listener's run is deferred (thread only) */
    int mhd_in_set;                   /* its epoll fd is in our set (thread only) */
    int64_t walk_at_us, defer_until_us;
};

static int vec_push(vec_t *v, void *item)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        void **nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) return -1;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = item;
    return 0;
}

/* ---- curl's sockets in the two epoll sets ------------------------------ */

static struct sockslot *slot(loop_t *l, int fd)
{
    if (fd < 0) return NULL;
    if ((size_t)fd >= l->n_slots) {
        size_t n = l->n_slots ? l->n_slots : 1024;
        while (n <= (size_t)fd) n *= 2;
        struct sockslot *ns = realloc(l->slots, n * sizeof *ns);
        if (!ns) return NULL;
        memset(ns + l->n_slots, 0, (n - l->n_slots) * sizeof *ns);
        l->slots = ns;
        l->n_slots = n;
    }
    return &l->slots[fd];
}

static int set_fd(const loop_t *l, int where)
{
    return where == SET_RELAY ? l->repfd : l->epfd;
}

/* Puts fd in set `where` watching `events`, moving it from the other set. A
 * slot can be stale (a socket closed without a REMOVE leaves both sets by
 * itself): a failed MOD falls back to ADD. */
static void place(loop_t *l, int fd, struct sockslot *sl, int where, uint32_t events)
{
    struct epoll_event ev = {.events = events};
    ev.data.fd = fd;
    sl->parked = 0;
    if (sl->where == where) {
        if (sl->events == events) return;
        if (epoll_ctl(set_fd(l, where), EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
            epoll_ctl(set_fd(l, where), EPOLL_CTL_ADD, fd, &ev);
    } else {
        if (sl->where != SET_NONE) epoll_ctl(set_fd(l, sl->where), EPOLL_CTL_DEL, fd, NULL);
        if (epoll_ctl(set_fd(l, where), EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(set_fd(l, where), EPOLL_CTL_MOD, fd, &ev);
    }
    sl->where = (unsigned char)where;
    sl->events = events;
}

/* curl tells which sockets to watch for what. The set follows the transfer
 * using the socket: a relaying stream's goes to the relay set. */
static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)sockp;
    loop_t *l = userp;
    struct sockslot *sl = slot(l, fd), none = {0};
    if (!sl) sl = &none;           /* out of memory: no priority, still watched */
    if (what == CURL_POLL_REMOVE) {
        if (sl->where == SET_LOOP && sl->events == EPOLLIN) {
            sl->parked = 1;
            return 0;
        }
        if (sl->where != SET_NONE) epoll_ctl(set_fd(l, sl->where), EPOLL_CTL_DEL, fd, NULL);
        sl->where = SET_NONE;
        sl->parked = 0;
        sl->events = 0;
        return 0;
    }
    int relay = l->ops->socket(l->ctx, e, fd);
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    place(l, fd, sl, relay ? SET_RELAY : SET_LOOP, events);
    return 0;
}

void loop_relay(loop_t *l, int fd)
{
    struct sockslot *sl = slot(l, fd);
    if (sl && sl->where == SET_LOOP) place(l, fd, sl, SET_RELAY, sl->events);
}

/* curl closes a socket: it has left every epoll set by itself, and its
 * number may come back for a new socket. */
static int close_cb(void *userp, curl_socket_t fd)
{
    loop_t *l = userp;
    if (fd >= 0 && (size_t)fd < l->n_slots) l->slots[fd] = (struct sockslot){0};
    return close(fd);
}

void loop_host_connections(loop_t *l, long n)
{
    curl_multi_setopt(l->multi, CURLMOPT_MAX_HOST_CONNECTIONS, n);
}

int loop_add(loop_t *l, CURL *e)
{
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, l);
    return curl_multi_add_handle(l->multi, e) == CURLM_OK ? 0 : -1;
}

void loop_remove(loop_t *l, CURL *e)
{
    curl_multi_remove_handle(l->multi, e);
}

static void socket_event(loop_t *l, const struct epoll_event *ev)
{
    int fd = ev->data.fd;
    if (fd >= 0 && (size_t)fd < l->n_slots && l->slots[fd].parked) {
        /* input on an idle connection: the server closed it (curl finds out
         * when it next looks); stop watching it meanwhile */
        struct sockslot *sl = &l->slots[fd];
        epoll_ctl(set_fd(l, sl->where), EPOLL_CTL_DEL, fd, NULL);
        *sl = (struct sockslot){0};
        return;
    }
    int running;
    int flags = (ev->events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                (ev->events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (ev->events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(l->multi, ev->data.fd, flags, &running);
}

/* curl asks for a timeout; -1 removes it. A 0 ms timer must fire at once,
 * not disarm. */
static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    loop_t *l = userp;
    l->deadline = timeout_ms < 0 ? -1 : base_mono_ms() + timeout_ms;
    return 0;
}

static void drain_done(loop_t *l)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(l->multi, &left)))
        if (m->msg == CURLMSG_DONE) l->ops->done(l->ctx, m->easy_handle, m->data.result);
}

static void curl_timer_due(loop_t *l)
{
    int running;
    if (l->deadline >= 0 && base_mono_ms() >= l->deadline) {
        l->deadline = -1;
        curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        drain_done(l);
    }
}

/* ---- the queues -------------------------------------------------------- */

/* Takes the queued work (swapping in empty vectors that keep their storage,
 * so a steady state allocates nothing) and does it. Returns stopping. */
static int run_queues(loop_t *l, int woken)
{
    uint64_t n;
    if (woken && read(l->evfd, &n, sizeof n) < 0) { /* nothing pending: fine */ }
    pthread_mutex_lock(&l->mu);
    struct MHD_Daemon *attach = l->mhd_new;
    int quiesce = l->quiesce;
    l->mhd_new = NULL;
    l->quiesce = 0;
    l->local_work = 0;
    if (l->poke) l->listener_due = l->resumes = 1;
    l->poke = 0;
    for (int q = 0; q < LOOP_NQUEUES; q++) {
        vec_t tmp = l->q[q];
        l->q[q] = l->w[q];
        l->w[q] = tmp;
    }
    l->wake_pending = 0;
    int stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);

    if (attach) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(attach, MHD_DAEMON_INFO_EPOLL_FD);
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.fd = di ? di->epoll_fd : -1;
        if (di && epoll_ctl(l->epfd, EPOLL_CTL_ADD, di->epoll_fd, &ev) == 0) {
            l->mhd = attach;
            l->mhd_fd = di->epoll_fd;
            l->mhd_in_set = 1;
        } else {
            base_log("cannot watch the listener's epoll set: %s", strerror(errno));
        }
    }
    if (quiesce && l->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(l->mhd);
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    for (int q = 0; q < LOOP_NQUEUES; q++) {
        for (size_t i = 0; i < l->w[q].n; i++) l->ops->run(l->ctx, (loop_queue_t)q, l->w[q].v[i]);
        l->w[q].n = 0;
    }
    return stopping;
}

static void wake_thread(loop_t *l)
{
    uint64_t one = 1;
    if (write(l->evfd, &one, sizeof one) < 0) { /* counter full: already awake */ }
}

int loop_post(loop_t *l, loop_queue_t q, void *item)
{
    int self = pthread_equal(pthread_self(), l->thread);
    pthread_mutex_lock(&l->mu);
    int ok = !l->stopping && vec_push(&l->q[q], item) == 0;
    int wake = ok && !l->wake_pending && !self;
    if (wake) l->wake_pending = 1;
    if (ok && self) l->local_work = 1;    /* the loop looks before it waits */
    pthread_mutex_unlock(&l->mu);
    if (wake) wake_thread(l);
    return ok ? 0 : -1;
}

/* ---- the listener ------------------------------------------------------ */

/* Runs the listener: accepts, reads requests (calling the listener's
 * handlers, which may post work for this loop), sends what is ready, and
 * resumes connections other threads (or this one) woke. */
static void run_listener(loop_t *l)
{
    if (!l->mhd) return;
    if (!l->mhd_in_set) {
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.fd = l->mhd_fd;
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->mhd_fd, &ev) == 0) l->mhd_in_set = 1;
    }
    if (l->resumes) l->walk_at_us = base_mono_us();
    l->resumes = l->mhd_pending = l->listener_due = 0;
    MHD_run(l->mhd);
    /* A run that read a request or called read_stream leaves the write for
     * the next run (its timeout is then 0): that run follows at once rather
     * than after the rest of the loop's turn. */
    MHD_UNSIGNED_LONG_LONG mt;
    if (MHD_get_timeout(l->mhd, &mt) == MHD_YES && mt == 0) MHD_run(l->mhd);
}

/* Runs the listener, or defers it when resumes are waiting, thousands of
 * connections are suspended and the last walk was under the spacing ago
 * (1 µs per suspended connection, at most 10 ms). While deferred its epoll
 * fd leaves our set (it is level-triggered: it would wake the loop at once). */
static void listener_step(loop_t *l)
{
    int n = atomic_load(&l->n_susp);
    if (l->resumes && n >= DEFER_MIN_SUSPENDED) {
        int64_t gap = n < DEFER_MAX_US ? n : DEFER_MAX_US;
        int64_t now = base_mono_us();
        if (now < l->walk_at_us + gap) {
            l->mhd_pending = 1;
            l->defer_until_us = l->walk_at_us + gap;
            if (l->mhd_in_set && epoll_ctl(l->epfd, EPOLL_CTL_DEL, l->mhd_fd, NULL) == 0)
                l->mhd_in_set = 0;
            return;
        }
    }
    run_listener(l);
}

/* The loop's wait: curl's timer and libmicrohttpd's (or the end of its
 * deferral), whichever is first. */
static int loop_timeout(loop_t *l)
{
    if (l->listener_due && !l->mhd_pending) return 0;
    int64_t t = -1;
    if (l->deadline >= 0) {
        int64_t left = l->deadline - base_mono_ms();
        t = left < 0 ? 0 : left;
    }
    l->mhd_at = -1;
    if (l->mhd_pending) {
        int64_t left = (l->defer_until_us - base_mono_us() + 999) / 1000;
        if (left < 0) left = 0;
        if (t < 0 || left < t) t = left;
        return t > 1000 ? 1000 : (int)t;
    }
    MHD_UNSIGNED_LONG_LONG mt;
    if (l->mhd && MHD_get_timeout(l->mhd, &mt) == MHD_YES) {
        if (mt > 1000) mt = 1000;
        l->mhd_at = base_mono_ms() + (int64_t)mt;
        if (t < 0 || (int64_t)mt < t) t = (int64_t)mt;
    }
    return t < 0 || t > 1000 ? 1000 : (int)t;
}

/* ---- the thread -------------------------------------------------------- */

static void *loop_main(void *arg)
{
    loop_t *l = arg;
    struct epoll_event evs[256];
    int stopping = 0;
    /* a test build's turn of 0 takes one relay event a turn */
    int batch = l->relay_turn_us > 0 ? RELAY_BATCH : 1;
    for (;;) {
        int n = epoll_wait(l->epfd, evs, 256, loop_timeout(l));
        /* the listener runs when its epoll set is ready or its timer is due
         * (also 0 when it has buffered work of its own) */
        int woken = 0, listener = l->mhd_at >= 0 && base_mono_ms() >= l->mhd_at;
        int relays = 0;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == l->evfd) {
                woken = 1;
                continue;
            }
            if (fd == l->mhd_fd) {
                listener = 1;
                continue;
            }
            if (fd == l->repfd) {
                relays = 1;
                continue;
            }
            socket_event(l, &evs[i]);
        }
        if (l->deadline >= 0 && base_mono_ms() >= l->deadline) {
            int running;
            l->deadline = -1;
            curl_multi_socket_action(l->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        drain_done(l);
        if (woken) stopping |= run_queues(l, 1);
        if (listener || woken || l->listener_due || l->mhd_pending) listener_step(l);
        /* what the listener's handlers queued just now starts at once */
        pthread_mutex_lock(&l->mu);
        int local = l->local_work;
        pthread_mutex_unlock(&l->mu);
        if (local) stopping |= run_queues(l, 0);
        curl_timer_due(l);
        /* Relaying last: what a new stream's first bytes resumed went out in
         * the listener's run above; what relaying resumes goes out in the
         * next turn's (which does not wait: the listener is then due). */
        if (relays) {
            int64_t from = base_mono_us();
            int m;
            do {
                m = epoll_wait(l->repfd, evs, batch, 0);
                for (int i = 0; i < m; i++) socket_event(l, &evs[i]);
            } while (m == batch && base_mono_us() - from < l->relay_turn_us);
            drain_done(l);
        }
        if (stopping) break;
    }
    l->ops->stop(l->ctx);
    /* The ended requests' answers still go out: keep the listener running
     * until every request has let go (or the supervisor's wait is over). */
    int64_t until = base_mono_ms() + 2000;
    while (l->mhd && l->ops->busy(l->ctx) && base_mono_ms() < until) {
        int n = epoll_wait(l->epfd, evs, 256, 10);
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd == l->evfd) run_queues(l, 1);
        run_listener(l);
        run_queues(l, 0);
    }
    return NULL;
}

loop_t *loop_new(void)
{
    loop_t *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->multi = curl_multi_init();
    if (!l->multi) { free(l); return NULL; }
    l->deadline = -1;
    l->relay_turn_us = RELAY_TURN_US;
#ifdef PINMETER_TEST_HOOKS
    /* Test builds only: PINMETER_TEST_RELAY_TURN_US shrinks relaying's share
     * of a turn (0: one relay event a turn), so that tests reach the path
     * where relay events wait for the next turn. */
    const char *turn = getenv("PINMETER_TEST_RELAY_TURN_US");
    if (turn && *turn) l->relay_turn_us = strtol(turn, NULL, 10);
#endif
    l->mhd_fd = -1;
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->repfd = epoll_create1(EPOLL_CLOEXEC);
    l->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = l->evfd};
    struct epoll_event rev = {.events = EPOLLIN, .data.fd = l->repfd};
    if (l->epfd < 0 || l->repfd < 0 || l->evfd < 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->evfd, &ev) != 0 ||
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->repfd, &rev) != 0)
        goto fail;
    curl_multi_setopt(l->multi, CURLMOPT_MAXCONNECTS, CURL_CACHE_LIMIT);
    /* HTTP/2: as many streams a connection as the server's SETTINGS allow
     * (curl's own default stops at 100) */
    curl_multi_setopt(l->multi, CURLMOPT_MAX_CONCURRENT_STREAMS, 1000L);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(l->multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(l->multi, CURLMOPT_TIMERDATA, l);
    pthread_mutex_init(&l->mu, NULL);
    return l;
fail:
    if (l->epfd >= 0) close(l->epfd);
    if (l->repfd >= 0) close(l->repfd);
    if (l->evfd >= 0) close(l->evfd);
    curl_multi_cleanup(l->multi);
    free(l);
    return NULL;
}

int loop_start(loop_t *l, const loop_ops_t *ops, void *ctx)
{
    l->ops = ops;
    l->ctx = ctx;
    if (pthread_create(&l->thread, NULL, loop_main, l) != 0) return -1;
    pthread_setname_np(l->thread, "pm-loop");
    l->started = 1;
    return 0;
}

/* Sets a flag for the loop under mu and wakes it. */
static void poke(loop_t *l, int *flag, struct MHD_Daemon *attach)
{
    pthread_mutex_lock(&l->mu);
    if (flag) *flag = 1;
    if (attach) l->mhd_new = attach;
    pthread_mutex_unlock(&l->mu);
    wake_thread(l);
}

void loop_attach(loop_t *l, struct MHD_Daemon *d) { poke(l, NULL, d); }
void loop_quiesce(loop_t *l) { poke(l, &l->quiesce, NULL); }

void loop_resumed(loop_t *l)
{
    atomic_fetch_sub(&l->n_susp, 1);     /* every resume follows a counted suspend */
    if (pthread_equal(pthread_self(), l->thread)) {
        l->listener_due = 1;
        l->resumes++;
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->poke = 1;
    int wake = !l->wake_pending;
    l->wake_pending = 1;
    pthread_mutex_unlock(&l->mu);
    if (wake) wake_thread(l);
}

void loop_suspended(loop_t *l)
{
    atomic_fetch_add(&l->n_susp, 1);
}

void loop_stop_begin(loop_t *l)
{
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->stopping = 1;
    pthread_mutex_unlock(&l->mu);
    wake_thread(l);
}

void loop_stop(loop_t *l)
{
    if (!l) return;
    loop_stop_begin(l);
    if (l->started) pthread_join(l->thread, NULL);
    l->started = 0;
}

void loop_free(loop_t *l)
{
    if (!l) return;
    curl_multi_cleanup(l->multi);
    close(l->epfd);
    close(l->repfd);
    close(l->evfd);
    free(l->slots);
    for (int q = 0; q < LOOP_NQUEUES; q++) {
        free(l->q[q].v);
        free(l->w[q].v);
    }
    pthread_mutex_destroy(&l->mu);
    free(l);
}
