/* upstream: the event loop. One thread drives, with one epoll set, both
 * libmicrohttpd (the listener, run in its external-epoll mode: its epoll fd
 * sits in this set) and a curl multi handle for every transfer to Pinata
 * (curl_multi_socket_action: cost per event does not grow with the number of
 * transfers). A request therefore goes from client to upstream and back on
 * one thread, with no hand-over between threads on its path. Other threads
 * (the Redis reserver, the supervisor) hand it work through three small
 * queues (start, unpause, abort) and wake it with an eventfd; the loop's own
 * submissions skip the eventfd. Response bytes go to
 * the request's bounded buffer; when the client is slow the transfer is
 * paused (backpressure) and resumed when the client has read enough.
 * When a transfer ends, this thread settles the metering exactly once:
 * budget, ledger row, and the response prepared for the listener. */
#include "app.h"
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <openssl/crypto.h>

#define OUT_HIGH_WATER (64 * 1024)
#define UBODY_MAX (32u * 1024 * 1024)   /* non-stream reply cap */
#define SSE_LINE_MAX (1024 * 1024)
/* Easy handles kept for reuse: curl_easy_init and _cleanup cost a few dozen
 * allocations each; a reset handle keeps its buffers. */
#define EASY_POOL 256
/* Upstream connections kept for reuse: a transfer started with this many
 * already running closes its connection at the end instead of leaving it
 * idle in curl's cache, so at most about this many sit idle. curl's own
 * limit (CURLMOPT_MAXCONNECTS) counts connections in use too, and over it
 * curl walks every connection to pick one to close each time a transfer
 * ends: it is set far above anything reached, and this bound does the job. */
#define MAX_CACHED_CONNS 1024
#define CURL_CACHE_LIMIT 1000000L

typedef struct vec { req_t **v; size_t n, cap; } vec_t;

struct upstream {
    app_t *app;
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    vec_t starts, unpauses, aborts;   /* [mu] queued by other threads */
    int stopping;                     /* [mu] */
    int wake_pending;                 /* [mu] the eventfd was written */
    vec_t w_starts, w_unpauses, w_aborts;   /* being worked on (thread only) */
    vec_t active;                     /* upstream thread only */
    CURL *idle[EASY_POOL];            /* finished easy handles, reset, for reuse */
    size_t n_idle;
    /* About how many kept-alive upstream connections sit idle in curl's
     * cache: transfers that ended cleanly, less transfers started since.
     * With none idle a new transfer skips curl's search of the cache
     * (CURLOPT_FRESH_CONNECT), which walks every connection to the host:
     * with thousands of streams open that walk was most of the cost of
     * starting one. An estimate either way costs only a search or a connect. */
    long idle_conns;
    /* curl's sockets are in one of two epoll sets: a socket relaying a
     * stream that has started is in the relay set (repfd, itself in the
     * loop's set); every other one (a connect, a request to send, a reply's
     * first bytes) is in the loop's set. A turn of the loop handles the
     * latter first, then takes relay events in batches for a bounded share
     * of the turn (RELAY_TURN_US): when the loop is saturated, a new
     * stream's first byte does not wait behind the chunks of every stream
     * already running. Relay events left over stay in the relay set's ready
     * list (level-triggered), where a wait on the loop's set does not poll
     * them again. Indexed by fd.
     * A socket curl stops watching while it waits for input (a kept-alive
     * connection between transfers) stays in its set, parked: the next
     * transfer on it usually watches the same, and then needs no epoll_ctl
     * (two system calls a request fewer). An event on a parked socket (the
     * server closed it) takes it out; curl's close of a socket (close_cb)
     * clears its slot, so a new socket given the same number is added. */
    struct sockslot { unsigned char where, parked; uint32_t events; } *slots;
    size_t n_slots;
    int repfd;
    int64_t relay_turn_us;
    struct curl_slist *chat_hdrs;     /* headers of every metered chat request */
    int epfd, evfd;
    int64_t deadline;                 /* curl's timer, monotonic ms; -1 none */
    struct MHD_Daemon *mhd_new;       /* [mu] a listener to drive, from upstream_attach */
    int quiesce;                      /* [mu] stop accepting (upstream_quiesce) */
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

static int vec_push(vec_t *v, req_t *r)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        req_t **nv = realloc(v->v, cap * sizeof *nv);
        if (!nv) return -1;
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = r;
    return 0;
}

/* ---- response bytes ---------------------------------------------------- */

static int out_append_locked(req_t *r, const char *p, size_t len)
{
    if (r->out_off > 0 && r->out_len + len > r->out_cap) {
        memmove(r->out, r->out + r->out_off, r->out_len - r->out_off);
        r->out_len -= r->out_off;
        r->out_off = 0;
    }
    if (r->out_len + len > r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap : 4 * 1024;   /* SSE events are small */
        while (cap < r->out_len + len) cap *= 2;
        char *n = realloc(r->out, cap);
        if (!n) return -1;
        r->out = n;
        r->out_cap = cap;
    }
    memcpy(r->out + r->out_len, p, len);
    r->out_len += len;
    return 0;
}

/* One SSE event from the upstream: learn usage and content, relay it unless
 * it is the usage-only chunk the client did not ask for. */
static int on_event(void *ud, const sse_event_t *ev)
{
    req_t *r = ud;
    if (ev->has_data) {
        if (strcmp(ev->data, "[DONE]") == 0) {
            r->saw_done = 1;
        } else {
            usage_info_t ui;
            int rc = usage_parse(ev->data, ev->data_len, &ui);
            if (rc == USAGE_BAD) r->usage_bad = 1;
            if (rc == USAGE_OK) {
                r->content_bytes += ui.content_bytes;
                r->content_deltas += ui.content_deltas;
                if (!r->upstream_id[0] && ui.id[0])
                    snprintf(r->upstream_id, sizeof r->upstream_id, "%s", ui.id);
                if (ui.has_usage) {
                    r->saw_usage = 1;
                    r->usage = ui.usage;
                    if (ui.choices_empty && !r->adm.client_wants_usage) return 0;
                }
            }
        }
    }
    pthread_mutex_lock(&r->mu);
    int rc = out_append_locked(r, ev->raw, ev->raw_len);
    pthread_mutex_unlock(&r->mu);
    return rc ? SSE_ERR_NOMEM : 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    req_t *r = ud;
    size_t len = size * nmemb;
    if (r->stream_mode) {
        pthread_mutex_lock(&r->mu);
        if (r->client_gone) {
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
        if (r->out_len - r->out_off >= OUT_HIGH_WATER) {
            r->paused = 1;
            pthread_mutex_unlock(&r->mu);
            return CURL_WRITEFUNC_PAUSE;
        }
        pthread_mutex_unlock(&r->mu);
        if (sse_feed(r->sse, ptr, len) != 0) {
            r->stream_error = 1;
            return 0;
        }
        pthread_mutex_lock(&r->mu);
        if (r->out_len > r->out_off) req_resume_locked(r);
        pthread_mutex_unlock(&r->mu);
        return len;
    }
    if (r->ubody_len + len > UBODY_MAX) return 0;
    if (r->ubody_len + len + 1 > r->ubody_cap) {
        size_t cap = r->ubody_cap ? r->ubody_cap : 8192;
        while (cap < r->ubody_len + len + 1) cap *= 2;
        char *n = realloc(r->ubody, cap);
        if (!n) return 0;
        r->ubody = n;
        r->ubody_cap = cap;
    }
    memcpy(r->ubody + r->ubody_len, ptr, len);
    r->ubody_len += len;
    r->ubody[r->ubody_len] = '\0';
    return len;
}

static void to_relay_set(struct upstream *u, int fd);
static int close_cb(void *userp, curl_socket_t fd);

static void copy_header_value(char *dst, size_t cap, const char *v, size_t len)
{
    while (len && (*v == ' ' || *v == '\t')) v++, len--;
    while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' ')) len--;
    if (len >= cap) len = cap - 1;
    memcpy(dst, v, len);
    dst[len] = '\0';
}

static size_t header_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    req_t *r = ud;
    size_t len = size * nitems;
    if (len >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->content_type[0] = '\0';
    } else if (len > 13 && strncasecmp(buf, "content-type:", 13) == 0) {
        copy_header_value(r->content_type, sizeof r->content_type, buf + 13, len - 13);
    } else if (len > 13 && strncasecmp(buf, "x-request-id:", 13) == 0) {
        copy_header_value(r->upstream_id, sizeof r->upstream_id, buf + 13, len - 13);
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        /* End of a header block; 1xx blocks are followed by the real one. */
        if (r->status >= 200 && r->route == ROUTE_CHAT && r->adm.stream &&
            r->status == 200 && strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
            r->sse = sse_new(SSE_LINE_MAX, on_event, r);
            if (!r->sse) return 0;
            r->stream_mode = 1;
            to_relay_set(r->app->up, r->up_fd - 1);
            /* The connection is resumed with the first event (or the end),
             * so the client's headers and first event leave in one wake-up
             * of the listener rather than two. */
            pthread_mutex_lock(&r->mu);
            r->resp_kind = RESP_STREAM;
            r->resp_status = 200;
            pthread_mutex_unlock(&r->mu);
        }
    }
    return len;
}

/* ---- settling ---------------------------------------------------------- */

typedef struct outcome {
    int status;                 /* to the client (when not already streaming) */
    const char *err_msg, *err_type;
    ledger_state_t state;
    usage_t usage;
    nanos_t charge;
} outcome_t;

static void estimate(req_t *r, outcome_t *o, int64_t completion)
{
    o->usage.prompt = r->adm.est_prompt_tokens;
    o->usage.completion = completion;
    o->usage.cached = 0;
    o->charge = cost_of(&r->rate, &o->usage);
    o->state = LEDGER_ESTIMATED;
}

static void judge_chat(req_t *r, CURLcode res, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    o->state = LEDGER_FAILED;
    if (r->stream_mode) {
        o->status = 200;
        if (r->saw_usage && !r->usage_bad) {
            o->usage = r->usage;
            o->charge = cost_of(&r->rate, &r->usage);
            o->state = LEDGER_SETTLED;
        } else {
            estimate(r, o, usage_estimate_completion(r->content_bytes, r->content_deltas));
        }
        if (res != CURLE_OK || r->aborted || !r->saw_done || r->stream_error)
            r->stream_error = 1;
        return;
    }
    if (r->aborted) {                    /* stream request, client left before headers */
        o->status = 499;
        estimate(r, o, 0);
        return;
    }
    if (res != CURLE_OK) {
        o->err_type = "upstream_error";
        if (res == CURLE_OPERATION_TIMEDOUT) {
            o->status = 504;
            o->err_msg = "the upstream did not answer within upstream.timeout_s";
            o->err_type = "upstream_timeout";
        } else if (res == CURLE_COULDNT_CONNECT || res == CURLE_COULDNT_RESOLVE_HOST) {
            o->status = 502;
            o->err_msg = "the upstream is unreachable";
            o->err_type = "upstream_unreachable";
        } else if (res == CURLE_WRITE_ERROR) {
            o->status = 502;
            o->err_msg = "the upstream's reply is larger than pinmeter accepts";
        } else {
            o->status = 502;
            o->err_msg = "the upstream connection failed before a complete reply";
        }
        return;
    }
    o->status = (int)r->status;
    usage_info_t ui;
    int rc = usage_parse(r->ubody ? r->ubody : "", r->ubody_len, &ui);
    if (rc == USAGE_OK && ui.id[0] && !r->upstream_id[0])
        snprintf(r->upstream_id, sizeof r->upstream_id, "%s", ui.id);
    if (r->status < 200 || r->status >= 300) {
        /* Passed through as it came; an error without usage costs nothing.
         * An empty error body becomes a JSON error the client can parse. */
        if (r->ubody_len == 0) {
            o->err_type = "upstream_error";
            o->err_msg = "the upstream answered with an error status and no body";
        }
        if (rc == USAGE_OK && ui.has_usage) {
            o->usage = ui.usage;
            o->charge = cost_of(&r->rate, &ui.usage);
            o->state = LEDGER_SETTLED;
        }
        return;
    }
    if (rc == USAGE_NOT_JSON) {
        o->status = 502;
        o->err_type = "upstream_malformed";
        o->err_msg = "the upstream sent a reply that is not valid JSON";
    } else if (rc == USAGE_BAD) {
        /* Counts cannot be trusted: hold the reservation as the charge. */
        o->status = 502;
        o->err_type = "upstream_malformed";
        o->err_msg = "the upstream reported invalid token usage";
        o->usage.prompt = r->adm.est_prompt_tokens;
        o->charge = r->rec.reserved;
        o->state = LEDGER_ESTIMATED;
    } else if (!ui.has_usage) {
        estimate(r, o, usage_estimate_completion(ui.content_bytes, 0));
    } else {
        o->usage = ui.usage;
        o->charge = cost_of(&r->rate, &ui.usage);
        o->state = LEDGER_SETTLED;
    }
}

/* A handle for a new transfer: a reset one from the pool, or a new one. */
static CURL *easy_get(struct upstream *u)
{
    return u->n_idle ? u->idle[--u->n_idle] : curl_easy_init();
}

/* Only a handle whose transfer ended cleanly goes back: one cut or paused
 * midway may hold state (held-back bytes) that must not meet a new one. */
static void easy_put(struct upstream *u, CURL *e, int clean)
{
    if (!clean || u->n_idle == EASY_POOL) {
        curl_easy_cleanup(e);
        return;
    }
    curl_easy_reset(e);
    u->idle[u->n_idle++] = e;
}

static void finish(struct upstream *u, req_t *r, CURLcode res)
{
    app_t *app = u->app;
    if (r->easy) {
        curl_multi_remove_handle(u->multi, r->easy);
        pthread_mutex_lock(&r->mu);
        int clean = res == CURLE_OK && !r->paused && !r->aborted;
        pthread_mutex_unlock(&r->mu);
        if (clean && !r->up_no_reuse && u->idle_conns < MAX_CACHED_CONNS) u->idle_conns++;
        easy_put(u, r->easy, clean);
        r->easy = NULL;
        u->active.v[r->up_slot] = u->active.v[--u->active.n];
        u->active.v[r->up_slot]->up_slot = r->up_slot;
    }
    if (r->sse && res == CURLE_OK) sse_finish(r->sse);   /* a final event held for a '\n' */
    outcome_t o;
    char *body = NULL;
    size_t body_len = 0;
    if (r->route == ROUTE_CHAT) {
        judge_chat(r, res, &o);
        int64_t now = base_wall_ms();
        r->rec.ended_ms = now;
        r->rec.status = r->client_gone && !r->stream_mode ? 499 : o.status;
        r->rec.prompt = o.usage.prompt;
        r->rec.completion = o.usage.completion;
        r->rec.cached = o.usage.cached;
        r->rec.charged = o.charge;
        r->rec.state = o.state;
        snprintf(r->rec.upstream_id, sizeof r->rec.upstream_id, "%s", r->upstream_id);
        r->rec.latency_ms = now - r->t_start_ms;
        if (ledger_submit(app->ledger, &r->rec, NULL, NULL) != 0)
            base_log("ledger closed: completion of %s not recorded", r->rec.id);
        /* Queued for the ledger first, then settled: once loaned is back to
         * 0 and the ledger's backlog is empty, every row is in the file. */
        budget_settle(app->budget, &r->hold, o.charge, now / 1000);
        if (o.status == 402 && !r->stream_mode) budget_account_exhausted(app->budget);
        char ch[MONEY_FMT_MAX];
        if (r->snap->cfg->log_requests || o.state != LEDGER_SETTLED || r->rec.status >= 500)
            base_log("%s team=%s key=%s model=%s stream=%d status=%d state=%s charged=%s ms=%lld",
                r->rec.id, r->rec.team, r->rec.key_id, r->rec.model, r->rec.stream,
                r->rec.status, ledger_state_name(o.state), money_fmt(o.charge, ch),
                (long long)r->rec.latency_ms);
    } else {
        memset(&o, 0, sizeof o);
        o.status = (int)r->status;
        if (res != CURLE_OK) {
            o.status = res == CURLE_OPERATION_TIMEDOUT ? 504 : 502;
            o.err_type = res == CURLE_OPERATION_TIMEDOUT ? "upstream_timeout" : "upstream_unreachable";
            o.err_msg = "the upstream could not be reached";
        }
    }
    if (o.err_msg) {
        body = req_error_json(o.err_msg, o.err_type, o.err_type);
        body_len = body ? strlen(body) : 0;
    } else {
        body = r->ubody;
        body_len = r->ubody_len;
        r->ubody = NULL;
    }
    pthread_mutex_lock(&r->mu);
    r->upstream_done = 1;
    if (r->resp_kind == RESP_NONE) {
        r->resp_kind = RESP_BUFFER;
        r->resp_status = o.status;
        r->resp_body = body;
        r->resp_len = body_len;
        snprintf(r->resp_type, sizeof r->resp_type, "%s",
                 o.err_msg || !r->content_type[0] ? "application/json" : r->content_type);
        body = NULL;
    }
    req_resume_locked(r);
    pthread_mutex_unlock(&r->mu);
    free(body);
    req_unref(r);
}

/* ---- starting transfers ------------------------------------------------ */

static int start_transfer(struct upstream *u, req_t *r)
{
    app_t *app = u->app;
    const config_t *cfg = r->snap->cfg;
    char url[1200], hdr[8192];
    const char *path = r->route == ROUTE_CHAT ? "/v0/llm/chat/completions"
                     : r->route == ROUTE_MODELS ? "/v0/llm/models" : "/v0/credits/balance";
    snprintf(url, sizeof url, "%s%s", cfg->upstream_base, path);
    CURL *e = easy_get(u);
    if (!e) return -1;
    r->easy = e;
    struct curl_slist *hdrs;
    if (r->route == ROUTE_CHAT) {
        const char *b = r->adm.upstream_body ? r->adm.upstream_body : r->body;
        size_t bl = r->adm.upstream_body ? r->adm.upstream_len : r->body_len;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, b ? b : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bl);
    }
    if (r->route == ROUTE_CHAT && !r->snap->passthrough && u->chat_hdrs) {
        hdrs = u->chat_hdrs;           /* the same for every request: built once */
    } else {
        if (r->route == ROUTE_CHAT) {
            if (r->snap->passthrough) snprintf(hdr, sizeof hdr, "Authorization: %s",
                                           r->client_auth ? r->client_auth : "");
            else snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", app->llm_key);
            r->hdrs = curl_slist_append(r->hdrs, hdr);
            r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
            r->hdrs = curl_slist_append(r->hdrs, "Expect:");
        } else if (r->route == ROUTE_BALANCE_PT && r->client_auth) {
            snprintf(hdr, sizeof hdr, "Authorization: %s", r->client_auth);
            r->hdrs = curl_slist_append(r->hdrs, hdr);
        }
        r->hdrs = curl_slist_append(r->hdrs, "Accept: application/json, text/event-stream");
        hdrs = r->hdrs;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, u);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_s * 1000L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    /* also has curl decode a reply compressed anyway */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "identity");
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    r->up_no_reuse = u->active.n >= MAX_CACHED_CONNS;
    if (r->up_no_reuse) {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
    } else if (u->idle_conns > 0) {
        u->idle_conns--;
    } else {
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    }
    /* A stream's events are small and many streams are open at once: a small
     * receive buffer each (curl's default is 16 KiB). */
    if (r->route == ROUTE_CHAT && r->adm.stream)
        curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 4096L);
    if (curl_multi_add_handle(u->multi, e) != CURLM_OK || vec_push(&u->active, r) != 0) {
        curl_multi_remove_handle(u->multi, e);   /* harmless when it was not added */
        curl_easy_cleanup(e);
        r->easy = NULL;
        return -1;
    }
    r->up_slot = u->active.n - 1;
    return 0;
}

/* ---- the event loop: epoll + curl_multi_socket_action ------------------ */

enum { SET_NONE, SET_LOOP, SET_RELAY };

static struct sockslot *slot(struct upstream *u, int fd)
{
    if (fd < 0) return NULL;
    if ((size_t)fd >= u->n_slots) {
        size_t n = u->n_slots ? u->n_slots : 1024;
        while (n <= (size_t)fd) n *= 2;
        struct sockslot *ns = realloc(u->slots, n * sizeof *ns);
        if (!ns) return NULL;
        memset(ns + u->n_slots, 0, (n - u->n_slots) * sizeof *ns);
        u->slots = ns;
        u->n_slots = n;
    }
    return &u->slots[fd];
}

static int set_fd(const struct upstream *u, int where)
{
    return where == SET_RELAY ? u->repfd : u->epfd;
}

/* Puts fd in set `where` watching `events`, moving it from the other set. A
 * slot can be stale (a socket closed without a REMOVE leaves both sets by
 * itself): a failed MOD falls back to ADD. */
static void place(struct upstream *u, int fd, struct sockslot *sl, int where, uint32_t events)
{
    struct epoll_event ev = {.events = events};
    ev.data.fd = fd;
    sl->parked = 0;
    if (sl->where == where) {
        if (sl->events == events) return;
        if (epoll_ctl(set_fd(u, where), EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
            epoll_ctl(set_fd(u, where), EPOLL_CTL_ADD, fd, &ev);
    } else {
        if (sl->where != SET_NONE) epoll_ctl(set_fd(u, sl->where), EPOLL_CTL_DEL, fd, NULL);
        if (epoll_ctl(set_fd(u, where), EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
            epoll_ctl(set_fd(u, where), EPOLL_CTL_MOD, fd, &ev);
    }
    sl->where = (unsigned char)where;
    sl->events = events;
}

/* curl tells which sockets to watch for what. The set follows the transfer
 * using the socket: a relaying stream's goes to the relay set. */
static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    (void)sockp;
    struct upstream *u = userp;
    struct sockslot *sl = slot(u, fd), none = {0};
    if (!sl) sl = &none;           /* out of memory: no priority, still watched */
    if (what == CURL_POLL_REMOVE) {
        if (sl->where == SET_LOOP && sl->events == EPOLLIN) {
            sl->parked = 1;
            return 0;
        }
        if (sl->where != SET_NONE) epoll_ctl(set_fd(u, sl->where), EPOLL_CTL_DEL, fd, NULL);
        sl->where = SET_NONE;
        sl->parked = 0;
        sl->events = 0;
        return 0;
    }
    req_t *r = NULL;
    if (curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r) == CURLE_OK && r) r->up_fd = fd + 1;
    uint32_t events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
    place(u, fd, sl, r && r->stream_mode ? SET_RELAY : SET_LOOP, events);
    return 0;
}

/* The stream on fd has started (header_cb, on this thread). */
static void to_relay_set(struct upstream *u, int fd)
{
    struct sockslot *sl = slot(u, fd);
    if (sl && sl->where == SET_LOOP) place(u, fd, sl, SET_RELAY, sl->events);
}

/* curl closes a socket: it has left every epoll set by itself, and its
 * number may come back for a new socket. */
static int close_cb(void *userp, curl_socket_t fd)
{
    struct upstream *u = userp;
    if (fd >= 0 && (size_t)fd < u->n_slots) u->slots[fd] = (struct sockslot){0};
    return close(fd);
}

static void socket_event(struct upstream *u, const struct epoll_event *ev)
{
    int fd = ev->data.fd;
    if (fd >= 0 && (size_t)fd < u->n_slots && u->slots[fd].parked) {
        /* input on an idle connection: the server closed it (curl finds out
         * when it next looks); stop watching it meanwhile */
        struct sockslot *sl = &u->slots[fd];
        epoll_ctl(set_fd(u, sl->where), EPOLL_CTL_DEL, fd, NULL);
        *sl = (struct sockslot){0};
        return;
    }
    int running;
    int flags = (ev->events & EPOLLIN ? CURL_CSELECT_IN : 0) |
                (ev->events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (ev->events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    curl_multi_socket_action(u->multi, ev->data.fd, flags, &running);
}

/* curl asks for a timeout; -1 removes it. A 0 ms timer must fire at once,
 * not disarm. */
static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    struct upstream *u = userp;
    u->deadline = timeout_ms < 0 ? -1 : base_mono_ms() + timeout_ms;
    return 0;
}

static void drain_done(struct upstream *u)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        req_t *r;
        CURLcode res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        finish(u, r, res);
    }
}

/* Takes the queued work (swapping in empty vectors that keep their storage,
 * so a steady state allocates nothing) and does it. Returns stopping. */
static int run_queues(struct upstream *u, int woken)
{
    uint64_t n;
    if (woken && read(u->evfd, &n, sizeof n) < 0) { /* nothing pending: fine */ }
    pthread_mutex_lock(&u->mu);
    struct MHD_Daemon *attach = u->mhd_new;
    int quiesce = u->quiesce;
    u->mhd_new = NULL;
    u->quiesce = 0;
    u->local_work = 0;
    if (u->poke) u->listener_due = u->resumes = 1;
    u->poke = 0;
    vec_t tmp;
    tmp = u->starts; u->starts = u->w_starts; u->w_starts = tmp;
    tmp = u->unpauses; u->unpauses = u->w_unpauses; u->w_unpauses = tmp;
    tmp = u->aborts; u->aborts = u->w_aborts; u->w_aborts = tmp;
    u->wake_pending = 0;
    int stopping = u->stopping;
    pthread_mutex_unlock(&u->mu);

    if (attach) {
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(attach, MHD_DAEMON_INFO_EPOLL_FD);
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.fd = di ? di->epoll_fd : -1;
        if (di && epoll_ctl(u->epfd, EPOLL_CTL_ADD, di->epoll_fd, &ev) == 0) {
            u->mhd = attach;
            u->mhd_fd = di->epoll_fd;
            u->mhd_in_set = 1;
        } else {
            base_log("cannot watch the listener's epoll set: %s", strerror(errno));
        }
    }
    if (quiesce && u->mhd) {
        MHD_socket ls = MHD_quiesce_daemon(u->mhd);
        if (ls != MHD_INVALID_SOCKET) close(ls);
    }
    for (size_t i = 0; i < u->w_starts.n; i++) {
        req_t *r = u->w_starts.v[i];
        pthread_mutex_lock(&r->mu);
        int gone = (r->client_gone || r->aborted_early) && r->adm.stream;
        pthread_mutex_unlock(&r->mu);
        if (gone) r->aborted = 1;
        if (gone || start_transfer(u, r) != 0) finish(u, r, CURLE_FAILED_INIT);
    }
    for (size_t i = 0; i < u->w_unpauses.n; i++) {
        req_t *r = u->w_unpauses.v[i];
        pthread_mutex_lock(&r->mu);
        r->unpause_queued = 0;
        int go = r->easy && r->paused;
        r->paused = 0;
        pthread_mutex_unlock(&r->mu);
        if (go) curl_easy_pause(r->easy, CURLPAUSE_CONT);
        req_unref(r);
    }
    for (size_t i = 0; i < u->w_aborts.n; i++) {
        req_t *r = u->w_aborts.v[i];
        if (r->easy) {
            r->aborted = 1;
            finish(u, r, CURLE_ABORTED_BY_CALLBACK);
        }
        req_unref(r);
    }
    u->w_starts.n = u->w_unpauses.n = u->w_aborts.n = 0;
    return stopping;
}

#define DEFER_MIN_SUSPENDED 1000      /* below this, resumes are acted on at once */
#define DEFER_MAX_US 10000
#define RELAY_TURN_US 1000            /* relaying's share of a saturated turn */
#define RELAY_BATCH 64                /* relay events taken at a time */

/* Runs the listener: accepts, reads requests (calling server.c's handlers,
 * which may queue work for this loop), sends what is ready, and resumes
 * connections other threads (or this one) woke. */
static void run_listener(struct upstream *u)
{
    if (!u->mhd) return;
    if (!u->mhd_in_set) {
        struct epoll_event ev = {.events = EPOLLIN};
        ev.data.fd = u->mhd_fd;
        if (epoll_ctl(u->epfd, EPOLL_CTL_ADD, u->mhd_fd, &ev) == 0) u->mhd_in_set = 1;
    }
    if (u->resumes) u->walk_at_us = base_mono_us();
    u->resumes = u->mhd_pending = u->listener_due = 0;
    MHD_run(u->mhd);
    /* A run that read a request or called read_stream leaves the write for
     * the next run (its timeout is then 0): that run follows at once rather
     * than after the rest of the loop's turn. */
    MHD_UNSIGNED_LONG_LONG mt;
    if (MHD_get_timeout(u->mhd, &mt) == MHD_YES && mt == 0) MHD_run(u->mhd);
}

/* Runs the listener, or defers it when resumes are waiting, thousands of
 * connections are suspended and the last walk was under the spacing ago
 * (1 µs per suspended connection, at most 10 ms). While deferred its epoll
 * fd leaves our set (it is level-triggered: it would wake the loop at once). */
static void listener_step(struct upstream *u)
{
    int n = atomic_load(&u->n_susp);
    if (u->resumes && n >= DEFER_MIN_SUSPENDED) {
        int64_t gap = n < DEFER_MAX_US ? n : DEFER_MAX_US;
        int64_t now = base_mono_us();
        if (now < u->walk_at_us + gap) {
            u->mhd_pending = 1;
            u->defer_until_us = u->walk_at_us + gap;
            if (u->mhd_in_set && epoll_ctl(u->epfd, EPOLL_CTL_DEL, u->mhd_fd, NULL) == 0)
                u->mhd_in_set = 0;
            return;
        }
    }
    run_listener(u);
}

/* The loop's wait: curl's timer and libmicrohttpd's (or the end of its
 * deferral), whichever is first. */
static int loop_timeout(struct upstream *u)
{
    if (u->listener_due && !u->mhd_pending) return 0;
    int64_t t = -1;
    if (u->deadline >= 0) {
        int64_t left = u->deadline - base_mono_ms();
        t = left < 0 ? 0 : left;
    }
    u->mhd_at = -1;
    if (u->mhd_pending) {
        int64_t left = (u->defer_until_us - base_mono_us() + 999) / 1000;
        if (left < 0) left = 0;
        if (t < 0 || left < t) t = left;
        return t > 1000 ? 1000 : (int)t;
    }
    MHD_UNSIGNED_LONG_LONG mt;
    if (u->mhd && MHD_get_timeout(u->mhd, &mt) == MHD_YES) {
        if (mt > 1000) mt = 1000;
        u->mhd_at = base_mono_ms() + (int64_t)mt;
        if (t < 0 || (int64_t)mt < t) t = (int64_t)mt;
    }
    return t < 0 || t > 1000 ? 1000 : (int)t;
}

static void *upstream_main(void *arg)
{
    struct upstream *u = arg;
    struct epoll_event evs[256];
    int running, stopping = 0;
    /* a test build's turn of 0 takes one relay event a turn */
    int batch = u->relay_turn_us > 0 ? RELAY_BATCH : 1;
    for (;;) {
        int n = epoll_wait(u->epfd, evs, 256, loop_timeout(u));
        /* the listener runs when its epoll set is ready or its timer is due
         * (also 0 when it has buffered work of its own) */
        int woken = 0, listener = u->mhd_at >= 0 && base_mono_ms() >= u->mhd_at;
        int relays = 0;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == u->evfd) {
                woken = 1;
                continue;
            }
            if (fd == u->mhd_fd) {
                listener = 1;
                continue;
            }
            if (fd == u->repfd) {
                relays = 1;
                continue;
            }
            socket_event(u, &evs[i]);
        }
        if (u->deadline >= 0 && base_mono_ms() >= u->deadline) {
            u->deadline = -1;
            curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        }
        drain_done(u);
        if (woken) stopping |= run_queues(u, 1);
        if (listener || woken || u->listener_due || u->mhd_pending) listener_step(u);
        /* what the listener's handlers queued just now starts at once */
        pthread_mutex_lock(&u->mu);
        int local = u->local_work;
        pthread_mutex_unlock(&u->mu);
        if (local) stopping |= run_queues(u, 0);
        if (u->deadline >= 0 && base_mono_ms() >= u->deadline) {
            u->deadline = -1;
            curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            drain_done(u);
        }
        /* Relaying last: what a new stream's first bytes resumed went out in
         * the listener's run above; what relaying resumes goes out in the
         * next turn's (which does not wait: the listener is then due). */
        if (relays) {
            int64_t from = base_mono_us();
            int m;
            do {
                m = epoll_wait(u->repfd, evs, batch, 0);
                for (int i = 0; i < m; i++) socket_event(u, &evs[i]);
            } while (m == batch && base_mono_us() - from < u->relay_turn_us);
            drain_done(u);
        }
        if (stopping) break;
    }
    while (u->active.n > 0) {
        req_t *r = u->active.v[u->active.n - 1];
        r->aborted = 1;
        finish(u, r, CURLE_ABORTED_BY_CALLBACK);
    }
    /* The aborted requests' answers still go out: keep the listener running
     * until every request has let go (or the supervisor's wait is over). */
    int64_t until = base_mono_ms() + 2000;
    while (u->mhd && atomic_load(&u->app->active) > 0 && base_mono_ms() < until) {
        int n = epoll_wait(u->epfd, evs, 256, 10);
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd == u->evfd) run_queues(u, 1);
        run_listener(u);
        run_queues(u, 0);
    }
    return NULL;
}

struct upstream *upstream_start(app_t *app)
{
    struct upstream *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->app = app;
    u->multi = curl_multi_init();
    if (!u->multi) { free(u); return NULL; }
    u->deadline = -1;
    u->relay_turn_us = RELAY_TURN_US;
#ifdef PINMETER_TEST_HOOKS
    /* Test builds only: PINMETER_TEST_RELAY_TURN_US shrinks relaying's share
     * of a turn (0: one relay event a turn), so that tests reach the path
     * where relay events wait for the next turn. */
    const char *turn = getenv("PINMETER_TEST_RELAY_TURN_US");
    if (turn && *turn) u->relay_turn_us = strtol(turn, NULL, 10);
#endif
    u->mhd_fd = -1;
    u->epfd = epoll_create1(EPOLL_CLOEXEC);
    u->repfd = epoll_create1(EPOLL_CLOEXEC);
    u->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = u->evfd};
    struct epoll_event rev = {.events = EPOLLIN, .data.fd = u->repfd};
    if (u->epfd < 0 || u->repfd < 0 || u->evfd < 0 ||
        epoll_ctl(u->epfd, EPOLL_CTL_ADD, u->evfd, &ev) != 0 ||
        epoll_ctl(u->epfd, EPOLL_CTL_ADD, u->repfd, &rev) != 0)
        goto fail;
    if (app->llm_key) {
        char hdr[8192];
        snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", app->llm_key);
        const char *hs[] = { hdr, "Content-Type: application/json", "Expect:",
                             "Accept: application/json, text/event-stream" };
        for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) {
            struct curl_slist *n = curl_slist_append(u->chat_hdrs, hs[i]);
            if (!n) { curl_slist_free_all(u->chat_hdrs); u->chat_hdrs = NULL; break; }
            u->chat_hdrs = n;
        }
        OPENSSL_cleanse(hdr, sizeof hdr);
    }
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, CURL_CACHE_LIMIT);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    pthread_mutex_init(&u->mu, NULL);
    if (pthread_create(&u->thread, NULL, upstream_main, u) != 0) {
        pthread_mutex_destroy(&u->mu);
        goto fail;
    }
    pthread_setname_np(u->thread, "pm-loop");
    return u;
fail:
    if (u->epfd >= 0) close(u->epfd);
    if (u->repfd >= 0) close(u->repfd);
    if (u->evfd >= 0) close(u->evfd);
    curl_multi_cleanup(u->multi);
    free(u);
    return NULL;
}

static void wake_thread(struct upstream *u)
{
    uint64_t one = 1;
    if (write(u->evfd, &one, sizeof one) < 0) { /* counter full: already awake */ }
}

static void enqueue(struct upstream *u, vec_t *q, req_t *r, int take_ref)
{
    if (take_ref) {
        pthread_mutex_lock(&r->mu);
        r->refs++;
        pthread_mutex_unlock(&r->mu);
    }
    int self = pthread_equal(pthread_self(), u->thread);
    pthread_mutex_lock(&u->mu);
    int ok = !u->stopping && vec_push(q, r) == 0;
    int wake = ok && !u->wake_pending && !self;
    if (wake) u->wake_pending = 1;
    if (ok && self) u->local_work = 1;    /* the loop looks before it waits */
    pthread_mutex_unlock(&u->mu);
    if (wake) wake_thread(u);
    if (ok) return;
    if (q == &u->starts) {
        /* Shutting down: the request never goes upstream. */
        r->aborted = 0;
        finish(u, r, CURLE_COULDNT_CONNECT);
    } else {
        req_unref(r);
    }
}

void upstream_submit(struct upstream *u, req_t *r) { enqueue(u, &u->starts, r, 0); }
void upstream_unpause(struct upstream *u, req_t *r) { enqueue(u, &u->unpauses, r, 1); }
void upstream_abort(struct upstream *u, req_t *r) { enqueue(u, &u->aborts, r, 1); }

void upstream_attach(struct upstream *u, struct MHD_Daemon *d)
{
    pthread_mutex_lock(&u->mu);
    u->mhd_new = d;
    pthread_mutex_unlock(&u->mu);
    wake_thread(u);
}

void upstream_resumed(struct upstream *u)
{
    atomic_fetch_sub(&u->n_susp, 1);     /* every resume follows a counted suspend */
    if (pthread_equal(pthread_self(), u->thread)) {
        u->listener_due = 1;
        u->resumes++;
        return;
    }
    pthread_mutex_lock(&u->mu);
    u->poke = 1;
    int wake = !u->wake_pending;
    u->wake_pending = 1;
    pthread_mutex_unlock(&u->mu);
    if (wake) wake_thread(u);
}

void upstream_suspended(struct upstream *u)
{
    atomic_fetch_add(&u->n_susp, 1);
}

void upstream_quiesce(struct upstream *u)
{
    pthread_mutex_lock(&u->mu);
    u->quiesce = 1;
    pthread_mutex_unlock(&u->mu);
    wake_thread(u);
}

void upstream_stop(struct upstream *u)
{
    if (!u) return;
    pthread_mutex_lock(&u->mu);
    u->stopping = 1;
    pthread_mutex_unlock(&u->mu);
    wake_thread(u);
    pthread_join(u->thread, NULL);
}

void upstream_free(struct upstream *u)
{
    if (!u) return;
    curl_multi_cleanup(u->multi);
    close(u->epfd);
    close(u->repfd);
    close(u->evfd);
    free(u->slots);
    for (size_t i = 0; i < u->n_idle; i++) curl_easy_cleanup(u->idle[i]);
    curl_slist_free_all(u->chat_hdrs);
    free(u->active.v);
    vec_t *vs[] = {&u->starts, &u->unpauses, &u->aborts, &u->w_starts, &u->w_unpauses,
                   &u->w_aborts};
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) free(vs[i]->v);
    pthread_mutex_destroy(&u->mu);
    free(u);
}
