/* streamload: a streaming chat-completion load generator for `make bench`.
 *
 *   streamload --port P [--host 127.0.0.1] [--conns C] [--chunks N]
 *              [--interval-ms M] [--duration D] [--seconds S] [--ramp R]
 *              [--key K] [--model MODEL] [--include-usage] [--quiet]
 *
 * Opens C connections to 127.0.0.1:P (loopback only) and on each sends a
 * streaming POST /v0/llm/chat/completions whose JSON body carries
 * "mock_chunks":N and "mock_interval_ms":M for the bench mock upstream. With
 * --duration D > 0 each connection starts a new stream (keep-alive) after the
 * last one ended, until D seconds have passed; with D = 0 each connection runs
 * one stream. Nothing runs past S seconds (default 60): streams still open
 * then count as errors ("unfinished"). --ramp R opens at most R connections
 * per second (0 = all at once). Single thread, epoll, non-blocking.
 *
 * Per stream: time to first byte (t0 = connect start, or request write on a
 * reused connection, to the first SSE data event), total time (t0 to the end
 * of the response), content chunks, whether [DONE] came. Per consecutive
 * pair of content chunks: the gap between their arrivals ("coalescing": a
 * proxy that buffers shows gaps near 0 followed by long ones; a relay that
 * passes each event as it comes shows gaps near M). A stream is an error when
 * it cannot connect, gets a status other than 200, is cut, misses chunks or
 * [DONE], or is unfinished at the deadline.
 *
 * Prints a short report and one machine-readable line starting "STREAMLOAD". */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_CAP 8192
#define EV_CAP 2048
#define SAMPLE_CAP (20u * 1000 * 1000)
#define RETRY_NS (100 * 1000000LL)

typedef enum { S_IDLE, S_CONNECTING, S_SENDING, S_HEAD, S_BODY, S_WAIT, S_FINISHED } st_t;
typedef enum { B_CHUNKED, B_LENGTH, B_CLOSE } body_t;
typedef enum { C_SIZE, C_EXT, C_SIZE_LF, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER } cst_t;

typedef struct lconn {
    int fd;
    st_t st;
    size_t req_off;
    char head[HEAD_CAP];
    size_t head_len;
    body_t body;
    int keepalive;
    uint64_t left;                 /* B_LENGTH: bytes left; chunked: of this chunk */
    cst_t cst;
    int trailer_line;              /* bytes in the current trailer line */
    char ev[EV_CAP];
    size_t ev_len, line_len;
    int64_t t0, t_last, wake_at;
    int chunks, usage_chunks, got_done, first_seen;
    int in_stream;                 /* counted in G.open */
} lconn_t;

typedef struct samples { uint32_t *v; size_t n, cap; } samples_t;

static struct {
    int conns, chunks, interval_ms, port, include_usage, quiet;
    double duration, seconds, ramp;
    const char *key, *model, *host;
    char *req;
    size_t req_len;
    int ep;
    int64_t start, stop_new, deadline;
    /* results */
    samples_t ttfb, total, gap;
    uint64_t started, ok, chunks_rx, usage_rx;
    uint64_t e_connect, e_status, e_closed, e_short, e_unfinished, e_proto;
    int first_bad_status;
    int active, waiting;
    int open, peak;                /* streams begun and not yet ended; the most at once */
} G;

static volatile sig_atomic_t g_stop;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sample_add(samples_t *s, int64_t ns)
{
    if (s->n == s->cap) {
        if (s->cap >= SAMPLE_CAP) return;
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint32_t *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) return;
        s->v = nv;
        s->cap = cap;
    }
    int64_t us = ns / 1000;
    s->v[s->n++] = us < 0 ? 0 : us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples (µs); -1 when empty. */
static long pct(const samples_t *s, double p)
{
    if (s->n == 0) return -1;
    size_t i = (size_t)(p / 100.0 * (double)s->n);
    if (i >= s->n) i = s->n - 1;
    return (long)s->v[i];
}

/* ---- connection life ---------------------------------------------------- */

static void set_events(lconn_t *c, uint32_t ev, int add)
{
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(G.ep, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &e);
}

static void drop_fd(lconn_t *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void begin_stream(lconn_t *c, int64_t t);

/* After a stream: next one on the same connection, a retry later, or done. */
static void next_or_finish(lconn_t *c, int64_t t, int reusable)
{
    if (!reusable) drop_fd(c);
    if (G.stop_new > 0 && t < G.stop_new && !g_stop) {
        if (reusable) { begin_stream(c, t); return; }
        c->st = S_WAIT;
        c->wake_at = t;
        G.waiting++;
        return;
    }
    drop_fd(c);
    c->st = S_FINISHED;
    G.active--;
}

static void end_stream(lconn_t *c)
{
    if (c->in_stream) { c->in_stream = 0; G.open--; }
}

static void fail(lconn_t *c, uint64_t *counter, int64_t t)
{
    (*counter)++;
    end_stream(c);
    drop_fd(c);
    if (G.stop_new > 0 && t < G.stop_new && !g_stop) {
        c->st = S_WAIT;
        c->wake_at = t + RETRY_NS;      /* do not spin on a refusing target */
        G.waiting++;
        return;
    }
    c->st = S_FINISHED;
    G.active--;
}

static void stream_done(lconn_t *c, int64_t t)
{
    sample_add(&G.total, t - c->t0);
    end_stream(c);
    if (c->chunks == G.chunks && c->got_done) G.ok++;
    else G.e_short++;
    next_or_finish(c, t, c->keepalive);
}

static void try_send(lconn_t *c, int64_t t)
{
    while (c->req_off < G.req_len) {
        ssize_t n = send(c->fd, G.req + c->req_off, G.req_len - c->req_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (c->st != S_SENDING) { c->st = S_SENDING; set_events(c, EPOLLOUT, 0); }
                return;
            }
            fail(c, &G.e_closed, t);
            return;
        }
        c->req_off += (size_t)n;
    }
    c->st = S_HEAD;
    set_events(c, EPOLLIN | EPOLLRDHUP, 0);
}

static void reset_parse(lconn_t *c)
{
    c->req_off = 0;
    c->head_len = 0;
    c->ev_len = c->line_len = 0;
    c->chunks = c->usage_chunks = c->got_done = c->first_seen = 0;
    c->cst = C_SIZE;
    c->left = 0;
    c->trailer_line = 0;
}

static void begin_stream(lconn_t *c, int64_t t)
{
    reset_parse(c);
    c->t0 = t;
    G.started++;
    c->in_stream = 1;
    if (++G.open > G.peak) G.peak = G.open;
    if (c->fd >= 0) {              /* reused keep-alive connection */
        c->st = S_SENDING;
        try_send(c, t);
        return;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { fail(c, &G.e_connect, t); return; }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)G.port)};
    inet_pton(AF_INET, G.host, &a.sin_addr);
    c->fd = fd;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS) {
        fail(c, &G.e_connect, t);
        return;
    }
    c->st = S_CONNECTING;
    set_events(c, EPOLLOUT, 1);
}

/* ---- response parsing ----------------------------------------------------- */

static void on_event(lconn_t *c, int64_t t)
{
    const char *e = c->ev;
    size_t n = c->ev_len;
    c->ev_len = 0;
    if (n < 5 || memcmp(e, "data:", 5) != 0) return;   /* comments, event:, id: */
    if (n >= 12 && memmem(e, n < 24 ? n : 24, "[DONE]", 6)) { c->got_done = 1; return; }
    if (memmem(e, n, "\"choices\":[]", 12)) { c->usage_chunks++; G.usage_rx++; return; }
    c->chunks++;
    G.chunks_rx++;
    if (!c->first_seen) {
        c->first_seen = 1;
        sample_add(&G.ttfb, t - c->t0);
    } else {
        sample_add(&G.gap, t - c->t_last);
    }
    c->t_last = t;
}

/* Decoded body bytes: split into SSE events at blank lines. */
static void sse_feed(lconn_t *c, const char *p, size_t n, int64_t t)
{
    while (n > 0) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t seg = take;
        if (seg > 0 && p[seg - 1] == '\r') seg--;
        if (c->ev_len + seg < EV_CAP) {
            memcpy(c->ev + c->ev_len, p, seg);
            c->ev_len += seg;
        }
        c->line_len += seg;
        if (!nl) return;
        if (c->line_len == 0) on_event(c, t);
        else if (c->ev_len + 1 < EV_CAP) c->ev[c->ev_len++] = '\n';
        c->line_len = 0;
        p += take + 1;
        n -= take + 1;
    }
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Chunked transfer decoding; returns 1 at the end of the body, -1 on a
 * malformed stream, else 0. */
static int dechunk(lconn_t *c, const char *p, size_t n, int64_t t)
{
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        switch (c->cst) {
        case C_SIZE: {
            int h = hexval(ch);
            if (h >= 0) { c->left = c->left * 16 + (uint64_t)h; i++; break; }
            if (ch == '\r' || ch == ';' || ch == ' ') { c->cst = C_EXT; i++; break; }
            if (ch == '\n') { c->cst = C_SIZE_LF; break; }
            return -1;
        }
        case C_EXT:
            if (ch == '\n') c->cst = C_SIZE_LF;
            else i++;
            break;
        case C_SIZE_LF:
            i++;
            if (c->left == 0) { c->cst = C_TRAILER; c->trailer_line = 0; }
            else c->cst = C_DATA;
            break;
        case C_DATA: {
            size_t take = n - i < c->left ? n - i : (size_t)c->left;
            sse_feed(c, p + i, take, t);
            i += take;
            c->left -= take;
            if (c->left == 0) c->cst = C_DATA_CR;
            break;
        }
        case C_DATA_CR:
            if (ch == '\r') { i++; c->cst = C_DATA_LF; break; }
            if (ch == '\n') { c->cst = C_DATA_LF; break; }
            return -1;
        case C_DATA_LF:
            if (ch != '\n') return -1;
            i++;
            c->cst = C_SIZE;
            c->left = 0;
            break;
        case C_TRAILER:
            i++;
            if (ch == '\n') {
                if (c->trailer_line == 0) return 1;
                c->trailer_line = 0;
            } else if (ch != '\r') {
                c->trailer_line++;
            }
            break;
        }
    }
    return 0;
}

/* Parses the status line and headers; 1 when complete, 0 for more, -1 bad. */
static int parse_head(lconn_t *c, const char *p, size_t n, size_t *used)
{
    size_t room = HEAD_CAP - 1 - c->head_len, take = n < room ? n : room;
    size_t old = c->head_len;
    memcpy(c->head + c->head_len, p, take);
    c->head_len += take;
    c->head[c->head_len] = '\0';
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        *used = take;
        return c->head_len >= HEAD_CAP - 1 ? -1 : 0;
    }
    size_t hl = (size_t)(end - c->head) + 4;
    *used = hl - old;
    if (c->head_len < 12 || strncmp(c->head, "HTTP/1.", 7) != 0) return -1;
    int status = atoi(c->head + 9);
    c->keepalive = c->head[7] == '1';
    c->body = B_CLOSE;
    c->left = 0;
    for (char *line = strstr(c->head, "\r\n"); line && line + 2 < end; line = strstr(line + 2, "\r\n")) {
        const char *h = line + 2;
        if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h, "chunked") &&
            strcasestr(h, "chunked") < strstr(h, "\r\n")) c->body = B_CHUNKED;
        else if (!strncasecmp(h, "content-length:", 15) && c->body != B_CHUNKED) {
            c->body = B_LENGTH;
            c->left = strtoull(h + 15, NULL, 10);
        } else if (!strncasecmp(h, "connection:", 11)) {
            const char *v = h + 11;
            while (*v == ' ') v++;
            if (!strncasecmp(v, "close", 5)) c->keepalive = 0;
        }
    }
    if (c->body == B_CLOSE) c->keepalive = 0;
    if (c->body == B_CHUNKED) c->left = 0;
    c->cst = C_SIZE;
    return status;
}

static void on_bytes(lconn_t *c, const char *p, size_t n, int64_t t)
{
    while (n > 0 && (c->st == S_HEAD || c->st == S_BODY)) {
        if (c->st == S_HEAD) {
            size_t used = 0;
            int st = parse_head(c, p, n, &used);
            p += used;
            n -= used;
            if (st == 0) return;
            if (st < 0) { fail(c, &G.e_proto, t); return; }
            if (st != 200) {
                if (!G.first_bad_status) G.first_bad_status = st;
                fail(c, &G.e_status, t);
                return;
            }
            c->st = S_BODY;
            if (c->body == B_LENGTH && c->left == 0) { stream_done(c, t); return; }
            continue;
        }
        if (c->body == B_CHUNKED) {
            int r = dechunk(c, p, n, t);
            if (r < 0) { fail(c, &G.e_proto, t); return; }
            if (r > 0) { stream_done(c, t); return; }   /* pipelined extra bytes: none */
            return;
        }
        size_t take = n;
        if (c->body == B_LENGTH && take > c->left) take = (size_t)c->left;
        sse_feed(c, p, take, t);
        p += take;
        n -= take;
        if (c->body == B_LENGTH) {
            c->left -= take;
            if (c->left == 0) { stream_done(c, t); return; }
        }
    }
}

static void on_readable(lconn_t *c, int64_t t)
{
    static char buf[65536];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            on_bytes(c, buf, (size_t)n, t);
            if (c->st != S_HEAD && c->st != S_BODY) return;
            if ((size_t)n < sizeof buf) return;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        /* EOF or reset */
        if (n == 0 && c->st == S_BODY && c->body == B_CLOSE) { stream_done(c, t); return; }
        fail(c, &G.e_closed, t);
        return;
    }
}

static void on_io(lconn_t *c, uint32_t ev, int64_t t)
{
    if (c->st == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (ev & (EPOLLERR | EPOLLHUP))) { fail(c, &G.e_connect, t); return; }
        c->st = S_SENDING;
        try_send(c, t);
        return;
    }
    if (c->st == S_SENDING) {
        if (ev & (EPOLLERR | EPOLLHUP)) { fail(c, &G.e_closed, t); return; }
        try_send(c, t);
        return;
    }
    if (c->st == S_HEAD || c->st == S_BODY) on_readable(c, t);
}

/* ---- main ------------------------------------------------------------------ */

static void build_request(void)
{
    char body[1024];
    int bl = snprintf(body, sizeof body,
        "{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"Write a short poem about the sea.\"}],\"stream\":true,%s\"max_tokens\":256,"
        "\"mock_chunks\":%d,\"mock_interval_ms\":%d}", G.model,
        G.include_usage ? "\"stream_options\":{\"include_usage\":true}," : "",
        G.chunks, G.interval_ms);
    G.req = malloc(4096);
    int n = snprintf(G.req, 4096,
        "POST /v0/llm/chat/completions HTTP/1.1\r\nHost: %s:%d\r\n"
        "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nContent-Length: %d\r\n\r\n%s",
        G.host, G.port, G.key, bl, body);
    G.req_len = (size_t)n;
}

static void usage(void)
{
    fprintf(stderr,
        "usage: streamload --port P [--host 127.0.0.1] [--conns C] [--chunks N]\n"
        "       [--interval-ms M] [--duration D] [--seconds S] [--ramp R]\n"
        "       [--key K] [--model MODEL] [--include-usage] [--quiet]\n");
}

static void on_signal(int s) { (void)s; g_stop = 1; }

int main(int argc, char **argv)
{
    G.conns = 64; G.chunks = 50; G.interval_ms = 2; G.seconds = 60;
    G.key = "pm-bench-key"; G.model = "anthropic/claude-haiku-4-5"; G.host = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--include-usage")) { G.include_usage = 1; continue; }
        if (!strcmp(a, "--quiet")) { G.quiet = 1; continue; }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        if (i + 1 >= argc) { usage(); return 2; }
        const char *v = argv[++i];
        if (!strcmp(a, "--port")) G.port = atoi(v);
        else if (!strcmp(a, "--host")) G.host = v;
        else if (!strcmp(a, "--conns")) G.conns = atoi(v);
        else if (!strcmp(a, "--chunks")) G.chunks = atoi(v);
        else if (!strcmp(a, "--interval-ms")) G.interval_ms = atoi(v);
        else if (!strcmp(a, "--duration")) G.duration = atof(v);
        else if (!strcmp(a, "--seconds")) G.seconds = atof(v);
        else if (!strcmp(a, "--ramp")) G.ramp = atof(v);
        else if (!strcmp(a, "--key")) G.key = v;
        else if (!strcmp(a, "--model")) G.model = v;
        else { usage(); return 2; }
    }
    struct in_addr ia;
    if (inet_pton(AF_INET, G.host, &ia) != 1 || (ntohl(ia.s_addr) >> 24) != 127) {
        fprintf(stderr, "streamload: --host must be a 127.x.x.x address (loopback only)\n");
        return 2;
    }
    if (G.port <= 0 || G.port > 65535 || G.conns <= 0 || G.chunks <= 0 || G.interval_ms < 0 ||
        G.seconds <= 0 || G.duration < 0 || G.ramp < 0 || strlen(G.key) > 512 ||
        strlen(G.model) > 200) {
        usage();
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < (rlim_t)G.conns + 16) {
            fprintf(stderr, "streamload: RLIMIT_NOFILE %llu is too low for %d connections\n",
                    (unsigned long long)rl.rlim_cur, G.conns);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    build_request();

    lconn_t *cs = calloc((size_t)G.conns, sizeof *cs);
    G.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!cs || G.ep < 0) { perror("streamload"); return 1; }
    for (int i = 0; i < G.conns; i++) { cs[i].fd = -1; cs[i].st = S_IDLE; }

    G.start = now_ns();
    G.deadline = G.start + (int64_t)(G.seconds * 1e9);
    G.stop_new = G.duration > 0 ? G.start + (int64_t)(G.duration * 1e9) : 0;
    int opened = 0;
    int64_t last_scan = 0;
    static struct epoll_event evs[1024];
    for (;;) {
        int64_t t = now_ns();
        if (t >= G.deadline || g_stop) break;
        int want = G.ramp > 0 ? (int)((double)(t - G.start) / 1e9 * G.ramp) + 1 : G.conns;
        if (want > G.conns) want = G.conns;
        while (opened < want) {
            G.active++;
            begin_stream(&cs[opened++], t);
        }
        if (G.waiting > 0 && t - last_scan >= 2 * 1000000LL) {
            last_scan = t;
            for (int i = 0; i < opened; i++)
                if (cs[i].st == S_WAIT && t >= cs[i].wake_at) {
                    G.waiting--;
                    if (G.stop_new > 0 && t < G.stop_new) begin_stream(&cs[i], t);
                    else { cs[i].st = S_FINISHED; G.active--; }
                }
        }
        if (opened == G.conns && G.active == 0) break;
        int n = epoll_wait(G.ep, evs, 1024, 5);
        t = now_ns();
        for (int i = 0; i < n; i++) on_io(evs[i].data.ptr, evs[i].events, t);
    }
    int64_t end = now_ns();
    for (int i = 0; i < G.conns; i++) {
        if (cs[i].st == S_CONNECTING || cs[i].st == S_SENDING || cs[i].st == S_HEAD ||
            cs[i].st == S_BODY) G.e_unfinished++;
        if (cs[i].fd >= 0) close(cs[i].fd);
    }
    qsort(G.ttfb.v, G.ttfb.n, sizeof *G.ttfb.v, cmp_u32);
    qsort(G.total.v, G.total.n, sizeof *G.total.v, cmp_u32);
    qsort(G.gap.v, G.gap.n, sizeof *G.gap.v, cmp_u32);
    uint64_t errors = G.e_connect + G.e_status + G.e_closed + G.e_short + G.e_unfinished + G.e_proto;
    size_t coalesced = 0;
    if (G.interval_ms > 0) {
        uint32_t lim = (uint32_t)G.interval_ms * 250;    /* a quarter of the interval, µs */
        for (size_t i = 0; i < G.gap.n && G.gap.v[i] < lim; i++) coalesced++;
    }
    double elapsed = (double)(end - G.start) / 1e9;
    double coal_pct = G.gap.n ? 100.0 * (double)coalesced / (double)G.gap.n : 0;
    if (!G.quiet) {
        printf("streamload: %d conns, %d chunks every %d ms, %.2f s: %llu streams started, %llu ok, "
               "%llu errors\n", G.conns, G.chunks, G.interval_ms, elapsed,
               (unsigned long long)G.started, (unsigned long long)G.ok, (unsigned long long)errors);
        printf("  peak concurrent streams %d\n", G.peak);
        printf("  ttfb  p50 %.3f ms  p99 %.3f ms\n", pct(&G.ttfb, 50) / 1e3, pct(&G.ttfb, 99) / 1e3);
        printf("  total p50 %.3f ms  p99 %.3f ms\n", pct(&G.total, 50) / 1e3, pct(&G.total, 99) / 1e3);
        printf("  gap   p1 %.3f ms  p50 %.3f ms  p99 %.3f ms  coalesced(<%d%%) %.2f%%\n",
               pct(&G.gap, 1) / 1e3, pct(&G.gap, 50) / 1e3, pct(&G.gap, 99) / 1e3, 25, coal_pct);
        printf("  errors: connect %llu status %llu (first %d) closed %llu short %llu unfinished %llu "
               "protocol %llu\n", (unsigned long long)G.e_connect, (unsigned long long)G.e_status,
               G.first_bad_status, (unsigned long long)G.e_closed, (unsigned long long)G.e_short,
               (unsigned long long)G.e_unfinished, (unsigned long long)G.e_proto);
    }
    printf("STREAMLOAD conns=%d peak=%d started=%llu ok=%llu errors=%llu e_connect=%llu e_status=%llu "
           "first_status=%d e_closed=%llu e_short=%llu e_unfinished=%llu e_proto=%llu "
           "chunks=%llu usage_chunks=%llu elapsed_us=%lld ttfb_p50_us=%ld ttfb_p99_us=%ld "
           "total_p50_us=%ld total_p99_us=%ld gap_p1_us=%ld gap_p50_us=%ld gap_p99_us=%ld "
           "gaps=%zu coalesced_pct=%.3f\n",
           G.conns, G.peak, (unsigned long long)G.started, (unsigned long long)G.ok,
           (unsigned long long)errors, (unsigned long long)G.e_connect,
           (unsigned long long)G.e_status, G.first_bad_status, (unsigned long long)G.e_closed,
           (unsigned long long)G.e_short, (unsigned long long)G.e_unfinished,
           (unsigned long long)G.e_proto, (unsigned long long)G.chunks_rx,
           (unsigned long long)G.usage_rx, (long long)((end - G.start) / 1000),
           pct(&G.ttfb, 50), pct(&G.ttfb, 99), pct(&G.total, 50), pct(&G.total, 99),
           pct(&G.gap, 1), pct(&G.gap, 50), pct(&G.gap, 99), G.gap.n, coal_pct);
    return 0;
}
