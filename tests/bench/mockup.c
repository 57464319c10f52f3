/* mockup: a fast mock Pinata upstream for `make bench`.
 *
 *   mockup [--port P] [--seconds S] [--threads T] [--model M]
 *
 * Prints "READY <port>" once listening on 127.0.0.1, serves until S seconds
 * have passed (default 600) or SIGTERM/SIGINT, prints its counters to stderr
 * and exits. One epoll loop per thread (default 1; each thread has its own
 * SO_REUSEPORT listener), non-blocking sockets, HTTP/1.1 keep-alive.
 *
 *   POST /v0/llm/chat/completions
 *     non-stream: a fixed chat.completion (~400 bytes) with a unique id (also
 *       in x-request-id) and usage 12/7/19, cached 0.
 *     "stream":true in the body: text/event-stream, chunked: "mock_chunks"
 *       content chunks (default 50), the first at once, then one every
 *       "mock_interval_ms" (default 2; 0 = back to back) on a timerfd deadline
 *       heap (never a sleep), the last with finish_reason "stop"; a usage-only
 *       chunk with "choices":[] when the body has "include_usage":true; then
 *       "data: [DONE]".
 *   GET /v0/llm/models   a small rates array.   GET /healthz   {"status":"ok"}
 *   GET /__wait   how long request bytes waited in a socket before the mock
 *     read them (SO_TIMESTAMPNS: kernel arrival to recvmsg), since the last
 *     GET /__wait: {"n":N,"p50_us":..,"p90_us":..,"p99_us":..}. It shows how
 *     much of a time-to-first-byte is the mock's own queueing when the core
 *     it shares with the load generator is saturated.
 *
 * The body is searched with memmem for those keys: a benchmark mock, not a
 * JSON parser. Request bodies must carry Content-Length (chunked uploads get
 * 501). Loopback only. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP   (1u << 20)          /* request head + body */
#define OUT_CAP  (8u << 20)          /* unsent reply bytes per connection */
#define HEAD_CAP (64u * 1024)
#define MAX_THREADS 16
#define ID_LEN 29                    /* "chatcmpl-" + 20 hex digits */

static volatile sig_atomic_t g_stop;
static char g_model[128] = "anthropic/claude-haiku-4-5";
static uint32_t g_id_prefix;         /* from pid and time: ids differ across runs */

static const char RATES[] =
    "[{\"model_id\":\"anthropic/claude-haiku-4-5\",\"input_usd_per_1m_tokens\":1.0,"
    "\"output_usd_per_1m_tokens\":5.0,\"cache_read_usd_per_1m_tokens\":0.1},"
    "{\"model_id\":\"anthropic/claude-sonnet-4-6\",\"input_usd_per_1m_tokens\":3.0,"
    "\"output_usd_per_1m_tokens\":15.0,\"cache_read_usd_per_1m_tokens\":0.3},"
    "{\"model_id\":\"openai/gpt-5-mini\",\"input_usd_per_1m_tokens\":0.25,"
    "\"output_usd_per_1m_tokens\":2.0,\"cache_read_usd_per_1m_tokens\":0.025}]";

typedef struct conn {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int out_armed;                   /* EPOLLOUT registered */
    int close_after;                 /* close once out is flushed */
    int dead;
    int buried;                      /* in the graveyard, freed after the batch */
    int sent_continue;
    /* a stream in progress */
    int streaming, include_usage;
    int chunks_total, chunks_sent;
    int64_t interval_ns, due_ns;
    size_t heap_idx;                 /* SIZE_MAX when not in the heap */
    char id[ID_LEN + 1];
} conn_t;

typedef struct worker {
    int idx, lfd, epfd, tfd;
    int64_t deadline_ns, armed_ns;
    conn_t **heap;
    size_t heap_n, heap_cap;
    conn_t **grave;                  /* dead connections, freed after each batch */
    size_t grave_n, grave_cap;
    uint64_t seq;
    char *reply;                     /* prebuilt non-stream reply */
    size_t reply_len, reply_id_off[2];
    /* counters */
    uint64_t n_chat, n_stream, n_chunks, n_other, n_conns, n_dropped;
    pthread_t th;
} worker_t;

static char LISTEN_TAG, TIMER_TAG;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- deadline heap (min on due_ns) ------------------------------------ */

static void heap_swap(worker_t *w, size_t a, size_t b)
{
    conn_t *t = w->heap[a];
    w->heap[a] = w->heap[b];
    w->heap[b] = t;
    w->heap[a]->heap_idx = a;
    w->heap[b]->heap_idx = b;
}

static void heap_up(worker_t *w, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (w->heap[p]->due_ns <= w->heap[i]->due_ns) break;
        heap_swap(w, p, i);
        i = p;
    }
}

static void heap_down(worker_t *w, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < w->heap_n && w->heap[l]->due_ns < w->heap[m]->due_ns) m = l;
        if (r < w->heap_n && w->heap[r]->due_ns < w->heap[m]->due_ns) m = r;
        if (m == i) return;
        heap_swap(w, i, m);
        i = m;
    }
}

static int heap_push(worker_t *w, conn_t *c)
{
    if (w->heap_n == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 1024;
        conn_t **nh = realloc(w->heap, cap * sizeof *nh);
        if (!nh) return -1;
        w->heap = nh;
        w->heap_cap = cap;
    }
    c->heap_idx = w->heap_n;
    w->heap[w->heap_n++] = c;
    heap_up(w, c->heap_idx);
    return 0;
}

static void heap_remove(worker_t *w, conn_t *c)
{
    size_t i = c->heap_idx;
    if (i == SIZE_MAX) return;
    c->heap_idx = SIZE_MAX;
    w->heap_n--;
    if (i == w->heap_n) return;
    w->heap[i] = w->heap[w->heap_n];
    w->heap[i]->heap_idx = i;
    heap_down(w, i);
    heap_up(w, w->heap[i]->heap_idx);
}

/* ---- connections ------------------------------------------------------- */

/* Closes the socket now; frees the struct after the current epoll batch,
 * since a later event of the batch may still name it. */
static void conn_kill(worker_t *w, conn_t *c)
{
    if (c->buried) return;
    c->buried = 1;
    c->dead = 1;
    heap_remove(w, c);
    close(c->fd);
    if (w->grave_n == w->grave_cap) {
        size_t cap = w->grave_cap ? w->grave_cap * 2 : 256;
        conn_t **ng = realloc(w->grave, cap * sizeof *ng);
        if (!ng) return;                 /* out of memory: leak it */
        w->grave = ng;
        w->grave_cap = cap;
    }
    w->grave[w->grave_n++] = c;
}

static void grave_empty(worker_t *w)
{
    for (size_t i = 0; i < w->grave_n; i++) {
        free(w->grave[i]->in);
        free(w->grave[i]->out);
        free(w->grave[i]);
    }
    w->grave_n = 0;
}

static void arm_out(worker_t *w, conn_t *c, int on)
{
    if (c->out_armed == on) return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->out_armed = on;
}

/* Sends at once what the socket takes; keeps the rest (up to OUT_CAP). */
static void conn_send(worker_t *w, conn_t *c, const char *p, size_t len)
{
    if (c->dead) return;
    if (c->out_len == c->out_off) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) { c->dead = 1; return; }
            n = 0;
        }
        p += n;
        len -= (size_t)n;
        if (len == 0) return;
        c->out_len = c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
        }
        size_t cap = c->out_cap ? c->out_cap : 16384;
        while (cap < c->out_len + len) cap *= 2;
        char *no = cap <= OUT_CAP ? realloc(c->out, cap) : NULL;
        if (!no) { c->dead = 1; w->n_dropped++; return; }
        c->out = no;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, len);
    c->out_len += len;
    arm_out(w, c, 1);
}

static void conn_flush(worker_t *w, conn_t *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            c->dead = 1;
            return;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    arm_out(w, c, 0);
}

/* ---- replies ------------------------------------------------------------- */

static void put_hex(char *dst, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--, v >>= 4) dst[i] = hex[v & 15];
}

static void new_id(worker_t *w, char *id)
{
    memcpy(id, "chatcmpl-", 9);
    put_hex(id + 9, g_id_prefix, 8);
    put_hex(id + 17, (uint64_t)w->idx, 1);
    put_hex(id + 18, w->seq++, 11);
    id[ID_LEN] = '\0';
}

/* The non-stream reply with a placeholder id patched per request. */
static int build_reply(worker_t *w)
{
    char body[1024], id[ID_LEN + 1];
    memset(id, 'x', ID_LEN);
    id[ID_LEN] = '\0';
    int bl = snprintf(body, sizeof body,
        "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":1767225600,"
        "\"model\":\"%s\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":\"Hello! How can I help you today?\",\"refusal\":null},"
        "\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,"
        "\"completion_tokens\":7,\"total_tokens\":19,\"prompt_tokens_details\":"
        "{\"cached_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}},"
        "\"system_fingerprint\":\"fp_mockup\"}", id, g_model);
    if (bl <= 0 || (size_t)bl >= sizeof body) return -1;
    w->reply = malloc(2048);
    if (!w->reply) return -1;
    int n = snprintf(w->reply, 2048,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
        "x-request-id: %s\r\n\r\n%s", bl, id, body);
    if (n <= 0 || n >= 2048) return -1;
    w->reply_len = (size_t)n;
    char *a = strstr(w->reply, id);
    char *b = a ? strstr(a + ID_LEN, id) : NULL;
    if (!a || !b) return -1;
    w->reply_id_off[0] = (size_t)(a - w->reply);
    w->reply_id_off[1] = (size_t)(b - w->reply);
    return 0;
}

static void send_simple(worker_t *w, conn_t *c, int status, const char *reason,
                        const char *ctype, const char *body)
{
    char buf[4096];
    size_t bl = strlen(body);
    int n = snprintf(buf, sizeof buf, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s\r\n", status, reason, ctype, bl,
                     c->close_after ? "Connection: close\r\n" : "");
    conn_send(w, c, buf, (size_t)n);
    conn_send(w, c, body, bl);
}

/* One SSE event as one HTTP chunk. */
static void send_event(worker_t *w, conn_t *c, const char *data, size_t len)
{
    char buf[1024];
    int h = snprintf(buf, 16, "%zx\r\n", len);
    if ((size_t)h + len + 2 <= sizeof buf) {
        memcpy(buf + h, data, len);
        memcpy(buf + h + len, "\r\n", 2);
        conn_send(w, c, buf, (size_t)h + len + 2);
    } else {
        conn_send(w, c, buf, (size_t)h);
        conn_send(w, c, data, len);
        conn_send(w, c, "\r\n", 2);
    }
}

static void send_chunk(worker_t *w, conn_t *c)
{
    char ev[768];
    int i = c->chunks_sent, last = i + 1 == c->chunks_total;
    int n = snprintf(ev, sizeof ev,
        "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,"
        "\"model\":\"%s\",\"choices\":[{\"index\":0,\"delta\":{%s\"content\":\" w%d\"},"
        "\"finish_reason\":%s}]}\n\n", c->id, g_model,
        i == 0 ? "\"role\":\"assistant\"," : "", i, last ? "\"stop\"" : "null");
    send_event(w, c, ev, (size_t)n);
    c->chunks_sent++;
    w->n_chunks++;
}

/* Waits of request bytes in the socket, 10 µs buckets up to 1 s (all threads). */
#define WAIT_BUCKETS 100001
static _Atomic uint32_t g_wait[WAIT_BUCKETS];

static void wait_record(const struct msghdr *mh)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR((struct msghdr *)mh); cm;
         cm = CMSG_NXTHDR((struct msghdr *)mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_TIMESTAMPNS) continue;
        struct timespec at, now;
        memcpy(&at, CMSG_DATA(cm), sizeof at);
        clock_gettime(CLOCK_REALTIME, &now);
        int64_t us = (now.tv_sec - at.tv_sec) * 1000000LL + (now.tv_nsec - at.tv_nsec) / 1000;
        int64_t b = us < 0 ? 0 : us / 10;
        atomic_fetch_add_explicit(&g_wait[b < WAIT_BUCKETS - 1 ? b : WAIT_BUCKETS - 1], 1,
                                  memory_order_relaxed);
    }
}

/* {"n":..,"p50_us":..,...} of the waits since the last call, which it clears. */
static void wait_report(char *out, size_t cap)
{
    static uint32_t h[WAIT_BUCKETS];
    uint64_t n = 0;
    for (int i = 0; i < WAIT_BUCKETS; i++) {
        h[i] = atomic_exchange_explicit(&g_wait[i], 0, memory_order_relaxed);
        n += h[i];
    }
    const double qs[3] = {0.50, 0.90, 0.99};
    long long v[3] = {-1, -1, -1};
    uint64_t seen = 0;
    int q = 0;
    for (int i = 0; i < WAIT_BUCKETS && n && q < 3; i++) {
        seen += h[i];
        while (q < 3 && (double)seen >= qs[q] * (double)n) v[q++] = (long long)i * 10 + 5;
    }
    snprintf(out, cap, "{\"n\":%llu,\"p50_us\":%lld,\"p90_us\":%lld,\"p99_us\":%lld}",
             (unsigned long long)n, v[0], v[1], v[2]);
}

static void process_input(worker_t *w, conn_t *c);

/* Usage chunk if asked, [DONE], the last chunk; then pipelined requests. */
static void end_stream(worker_t *w, conn_t *c)
{
    if (c->include_usage) {
        char ev[512];
        int n = snprintf(ev, sizeof ev,
            "data: {\"id\":\"%s\",\"object\":\"chat.completion.chunk\",\"created\":1767225600,"
            "\"model\":\"%s\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
            "\"completion_tokens\":%d,\"total_tokens\":%d,\"prompt_tokens_details\":"
            "{\"cached_tokens\":0}}}\n\n", c->id, g_model, c->chunks_total,
            12 + c->chunks_total);
        send_event(w, c, ev, (size_t)n);
    }
    static const char done[] = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";
    conn_send(w, c, done, sizeof done - 1);
    c->streaming = 0;
    process_input(w, c);
}

/* "key" followed by optional spaces, ':' and spaces: the value, or NULL. */
static const char *json_value(const char *b, size_t n, const char *key)
{
    char pat[64];
    int pl = snprintf(pat, sizeof pat, "\"%s\"", key);
    const char *end = b + n, *p = memmem(b, n, pat, (size_t)pl);
    if (!p) return NULL;
    p += pl;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    if (p >= end || *p != ':') return NULL;
    p++;
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p < end ? p : NULL;
}

static int json_true(const char *b, size_t n, const char *key)
{
    const char *v = json_value(b, n, key);
    return v && (size_t)(b + n - v) >= 4 && memcmp(v, "true", 4) == 0;
}

static long json_int(const char *b, size_t n, const char *key, long dflt, long lo, long hi)
{
    const char *v = json_value(b, n, key);
    if (!v) return dflt;
    long x = 0;
    const char *end = b + n;
    if (v >= end || *v < '0' || *v > '9') return dflt;
    while (v < end && *v >= '0' && *v <= '9' && x < hi) x = x * 10 + (*v++ - '0');
    return x < lo ? lo : x > hi ? hi : x;
}

static void handle_chat(worker_t *w, conn_t *c, const char *body, size_t blen)
{
    w->n_chat++;
    if (!json_true(body, blen, "stream")) {
        char *r = w->reply;
        char id[ID_LEN + 1];
        new_id(w, id);
        memcpy(r + w->reply_id_off[0], id, ID_LEN);
        memcpy(r + w->reply_id_off[1], id, ID_LEN);
        conn_send(w, c, r, w->reply_len);
        return;
    }
    w->n_stream++;
    c->chunks_total = (int)json_int(body, blen, "mock_chunks", 50, 1, 1000000);
    c->interval_ns = json_int(body, blen, "mock_interval_ms", 2, 0, 3600000) * 1000000LL;
    c->include_usage = json_true(body, blen, "include_usage");
    c->chunks_sent = 0;
    new_id(w, c->id);
    char head[256];
    int n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                     "x-request-id: %s\r\n\r\n", c->id);
    conn_send(w, c, head, (size_t)n);
    c->streaming = 1;
    send_chunk(w, c);
    if (c->chunks_sent == c->chunks_total) { end_stream(w, c); return; }
    c->due_ns = mono_ns() + c->interval_ns;
    if (heap_push(w, c) != 0) c->dead = 1;
}

static int header_is(const char *line, size_t len, const char *name, const char **val)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':') return 0;
    const char *v = line + nl + 1;
    while (v < line + len && (*v == ' ' || *v == '\t')) v++;
    *val = v;
    return 1;
}

/* Handles every complete request in c->in, unless a stream is running. */
static void process_input(worker_t *w, conn_t *c)
{
    while (!c->streaming && !c->dead && !c->close_after) {
        char *hend = c->in_len >= 4 ? memmem(c->in, c->in_len, "\r\n\r\n", 4) : NULL;
        if (!hend) {
            if (c->in_len > HEAD_CAP) c->dead = 1;
            return;
        }
        size_t head_len = (size_t)(hend - c->in) + 4;
        const char *sp1 = memchr(c->in, ' ', head_len);
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', head_len - (size_t)(sp1 + 1 - c->in)) : NULL;
        if (!sp2) { c->dead = 1; return; }
        size_t mlen = (size_t)(sp1 - c->in), plen = (size_t)(sp2 - sp1 - 1);
        const char *path = sp1 + 1, *q = memchr(path, '?', plen);
        if (q) plen = (size_t)(q - path);
        size_t clen = 0;
        int chunked = 0, expect = 0, http10 = sp2 + 9 <= hend && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;
        int keep10 = 0;
        const char *line = memchr(c->in, '\n', head_len);
        while (line && line + 1 < hend) {
            line++;
            const char *eol = memchr(line, '\r', (size_t)(hend + 2 - line));
            size_t ll = (size_t)(eol - line);
            const char *v;
            if (header_is(line, ll, "content-length", &v)) clen = strtoul(v, NULL, 10);
            else if (header_is(line, ll, "transfer-encoding", &v)) chunked = strncasecmp(v, "chunked", 7) == 0;
            else if (header_is(line, ll, "expect", &v)) expect = strncasecmp(v, "100-continue", 12) == 0;
            else if (header_is(line, ll, "connection", &v)) {
                if (strncasecmp(v, "close", 5) == 0) c->close_after = 1;
                if (strncasecmp(v, "keep-alive", 10) == 0) keep10 = 1;
            }
            line = memchr(line, '\n', (size_t)(hend + 2 - line));
        }
        if (http10 && !keep10) c->close_after = 1;
        if (chunked) {
            c->close_after = 1;
            send_simple(w, c, 501, "Not Implemented", "text/plain", "chunked uploads unsupported\n");
            return;
        }
        if (head_len + clen > IN_CAP) {
            c->close_after = 1;
            send_simple(w, c, 413, "Payload Too Large", "text/plain", "too large\n");
            return;
        }
        if (c->in_len < head_len + clen) {
            if (expect && !c->sent_continue) {
                c->sent_continue = 1;
                conn_send(w, c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            }
            return;
        }
        c->sent_continue = 0;
        const char *body = c->in + head_len;
        if (mlen == 4 && memcmp(c->in, "POST", 4) == 0 && plen == 24 &&
            memcmp(path, "/v0/llm/chat/completions", 24) == 0) {
            handle_chat(w, c, body, clen);
        } else if (mlen == 3 && memcmp(c->in, "GET", 3) == 0 && plen == 14 &&
                   memcmp(path, "/v0/llm/models", 14) == 0) {
            w->n_other++;
            send_simple(w, c, 200, "OK", "application/json", RATES);
        } else if (mlen == 3 && memcmp(c->in, "GET", 3) == 0 && plen == 8 &&
                   memcmp(path, "/healthz", 8) == 0) {
            w->n_other++;
            send_simple(w, c, 200, "OK", "application/json", "{\"status\":\"ok\"}");
        } else if (mlen == 3 && memcmp(c->in, "GET", 3) == 0 && plen == 7 &&
                   memcmp(path, "/__wait", 7) == 0) {
            char js[160];
            wait_report(js, sizeof js);
            w->n_other++;
            send_simple(w, c, 200, "OK", "application/json", js);
        } else {
            w->n_other++;
            send_simple(w, c, 404, "Not Found", "application/json",
                        "{\"error\":{\"message\":\"not found\",\"type\":\"not_found\",\"code\":404}}");
        }
        size_t used = head_len + clen;
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

static void on_readable(worker_t *w, conn_t *c)
{
    for (;;) {
        if (c->in_cap - c->in_len < 4096) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 8192;
            if (cap > IN_CAP + HEAD_CAP) { c->dead = 1; return; }
            char *ni = realloc(c->in, cap);
            if (!ni) { c->dead = 1; return; }
            c->in = ni;
            c->in_cap = cap;
        }
        size_t room = c->in_cap - c->in_len;
        char ctl[128];
        struct iovec iov = {c->in + c->in_len, room};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
                            .msg_controllen = sizeof ctl};
        ssize_t n = recvmsg(c->fd, &mh, 0);
        if (n > 0) {
            wait_record(&mh);
            c->in_len += (size_t)n;
            if ((size_t)n < room) break;     /* short read: drained for now */
            continue;
        }
        if (n == 0) { c->dead = 1; return; }
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        c->dead = 1;
        return;
    }
    process_input(w, c);
}

static void on_accept(worker_t *w)
{
    for (;;) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE) w->n_dropped++;
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        c->fd = fd;
        c->heap_idx = SIZE_MAX;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) { close(fd); free(c); continue; }
        w->n_conns++;
    }
}

static void on_timer(worker_t *w)
{
    uint64_t exp;
    if (read(w->tfd, &exp, sizeof exp) < 0) { /* spurious: fine */ }
    w->armed_ns = 0;
    int64_t now = mono_ns();
    while (w->heap_n > 0 && w->heap[0]->due_ns <= now) {
        conn_t *c = w->heap[0];
        send_chunk(w, c);
        if (c->chunks_sent == c->chunks_total) {
            heap_remove(w, c);
            end_stream(w, c);
        } else {
            c->due_ns += c->interval_ns;
            heap_down(w, 0);
        }
        if (c->dead) conn_kill(w, c);
    }
}

static void arm_timer(worker_t *w)
{
    int64_t due = w->heap_n ? w->heap[0]->due_ns : 0;
    if (due == w->armed_ns) return;
    struct itimerspec its = {0};
    if (due) {
        its.it_value.tv_sec = due / 1000000000LL;
        its.it_value.tv_nsec = due % 1000000000LL;
    }
    timerfd_settime(w->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    w->armed_ns = due;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct epoll_event evs[256];
    while (!g_stop) {
        int64_t now = mono_ns();
        if (now >= w->deadline_ns) break;
        int64_t left_ms = (w->deadline_ns - now) / 1000000 + 1;
        int n = epoll_wait(w->epfd, evs, 256, left_ms < 200 ? (int)left_ms : 200);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &LISTEN_TAG) { on_accept(w); continue; }
            if (p == &TIMER_TAG) { on_timer(w); continue; }
            conn_t *c = p;
            if (c->buried) continue;
            if (evs[i].events & EPOLLOUT) conn_flush(w, c);
            if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) on_readable(w, c);
            if (!c->dead && c->close_after && c->out_len == c->out_off && !c->streaming)
                c->dead = 1;
            if (c->dead) conn_kill(w, c);
        }
        grave_empty(w);
        arm_timer(w);
    }
    return NULL;
}

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 65535) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void usage(void)
{
    fprintf(stderr, "usage: mockup [--port P] [--seconds S] [--threads T] [--model M]\n");
}

int main(int argc, char **argv)
{
    int port = 0, threads = 1;
    double seconds = 600;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(); return 0; }
        if (!v) { usage(); return 2; }
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--seconds")) seconds = atof(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--model")) snprintf(g_model, sizeof g_model, "%s", v);
        else { usage(); return 2; }
        i++;
    }
    if (threads < 1 || threads > MAX_THREADS || seconds <= 0 || port < 0 || port > 65535) {
        usage();
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    g_id_prefix = (uint32_t)getpid() * 2654435761u ^ (uint32_t)time(NULL);

    static worker_t ws[MAX_THREADS];
    int64_t deadline = mono_ns() + (int64_t)(seconds * 1e9);
    for (int t = 0; t < threads; t++) {
        worker_t *w = &ws[t];
        w->idx = t;
        w->deadline_ns = deadline;
        w->lfd = listen_on(port);
        if (w->lfd < 0) { perror("mockup: listen"); return 1; }
        if (port == 0) {
            struct sockaddr_in a;
            socklen_t al = sizeof a;
            getsockname(w->lfd, (struct sockaddr *)&a, &al);
            port = ntohs(a.sin_port);
        }
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->epfd < 0 || w->tfd < 0 || build_reply(w) != 0) { perror("mockup: setup"); return 1; }
        struct epoll_event le = {.events = EPOLLIN, .data.ptr = &LISTEN_TAG};
        struct epoll_event te = {.events = EPOLLIN, .data.ptr = &TIMER_TAG};
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &le);
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->tfd, &te);
    }
    printf("READY %d\n", port);
    fflush(stdout);
    for (int t = 1; t < threads; t++) pthread_create(&ws[t].th, NULL, worker_main, &ws[t]);
    worker_main(&ws[0]);
    for (int t = 1; t < threads; t++) pthread_join(ws[t].th, NULL);
    uint64_t chat = 0, st = 0, ch = 0, oth = 0, co = 0, dr = 0;
    for (int t = 0; t < threads; t++) {
        chat += ws[t].n_chat; st += ws[t].n_stream; ch += ws[t].n_chunks;
        oth += ws[t].n_other; co += ws[t].n_conns; dr += ws[t].n_dropped;
    }
    fprintf(stderr, "mockup: chat=%llu streams=%llu chunks=%llu other=%llu conns=%llu dropped=%llu\n",
            (unsigned long long)chat, (unsigned long long)st, (unsigned long long)ch,
            (unsigned long long)oth, (unsigned long long)co, (unsigned long long)dr);
    return 0;
}
