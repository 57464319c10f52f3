/* upstream: the transfers to Pinata (see upstream.h). Response bytes go to
 * the request's bounded hand-over buffer; when the client is slow the
 * transfer is paused (backpressure) and resumed when the client has read
 * enough. When a transfer ends, this file settles the metering exactly once:
 * the verdict (verdict.h) on what was seen, then the ledger row, the budget
 * and the response prepared for the listener. */
#include "upstream.h"
#include "events.h"
#include "loop.h"
#include "verdict.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <openssl/crypto.h>

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
 * ends: it is set far above anything reached (loop.c), and this bound does
 * the job. */
#define MAX_CACHED_CONNS 1024
#define URL_CACHE 8                   /* distinct upstream URLs kept parsed */
#define TLS_LOG_MS 10000              /* TLS failures: a log line at most this often */

struct upstream {
    app_t *app;
    loop_t *loop;
    struct { req_t **v; size_t n, cap; } active;   /* transfers running */
    /* Finished easy handles kept for reuse with the options every transfer
     * shares still set (callbacks, timeouts, TCP, proxy, CA file): a reset
     * and twenty options again per request were a measurable share of curl's
     * cost. Each carries the generation of the CA file it was made with; a
     * reload that changes upstream.ca_file starts a new one. */
    CURL *idle[EASY_POOL];
    unsigned idle_gen[EASY_POOL];
    size_t n_idle;
    unsigned gen;
    char ca_file[1024];               /* what generation gen trusts ("" the system's) */
    int no_proxy_env;                 /* no *_proxy variable set: tell curl "none" */
    /* The upstream URLs parsed once (curl would parse the text and print it
     * back for every transfer): a few paths under one base. */
    struct { char url[1200]; CURLU *h; } urls[URL_CACHE];
    size_t n_urls;
    /* About how many kept-alive upstream connections sit idle in curl's
     * cache: transfers that ended cleanly, less transfers started since.
     * With none idle a new transfer skips curl's search of the cache
     * (CURLOPT_FRESH_CONNECT), which walks every connection to the host:
     * with thousands of streams open that walk was most of the cost of
     * starting one. An estimate either way costs only a search or a connect. */
    long idle_conns;
    /* Whether the upstream multiplexes (HTTP/2 offered by ALPN over TLS), as
     * the last answer's status line said: a multiplexed connection
     * carries many transfers at once, so the count above means nothing and
     * CURLOPT_FRESH_CONNECT would open a connection a transfer. Until an
     * https upstream has answered once it may be either: transfers then
     * leave curl to choose, and CURLOPT_PIPEWAIT has a burst wait for the
     * first connection's ALPN instead of opening one each. */
    enum { MUX_UNKNOWN, MUX_NO, MUX_YES } mux;
    /* The connection limit set on the loop's multi handle: curl (7.88) opens
     * a connection for every transfer started while its multiplexed ones are
     * full or still connecting, so a burst of 1,000 streams became ~900
     * connections of one stream each; upstream.h2_connections bounds them
     * (for the instance: each worker takes its share, at least one) and the
     * rest wait for a free stream. None for an HTTP/1.x upstream. */
    long host_conns;
    int64_t tls_logged_ms;            /* when a TLS failure was last logged */
    struct curl_slist *chat_hdrs;     /* headers of every metered chat request */
};

static int active_push(upstream_t *u, req_t *r)
{
    if (u->active.n == u->active.cap) {
        size_t cap = u->active.cap ? u->active.cap * 2 : 64;
        req_t **nv = realloc(u->active.v, cap * sizeof *nv);
        if (!nv) return -1;
        u->active.v = nv;
        u->active.cap = cap;
    }
    r->up_slot = u->active.n;
    u->active.v[u->active.n++] = r;
    return 0;
}

/* ---- response bytes ---------------------------------------------------- */

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
                if (ui.content_deltas && !r->content_deltas) events_first_token(r->app, r);
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
    int rc = req_out_append_locked(r, ev->raw, ev->raw_len);
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
        if (r->out_len - r->out_off >= REQ_OUT_HIGH_WATER) {
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
    if (len >= 6 && strncmp(buf, "HTTP/", 5) == 0) {
        /* "HTTP/2 200", "HTTP/3 200": the upstream multiplexes */
        r->w->up->mux = buf[5] >= '2' ? MUX_YES : MUX_NO;
        const char *sp = memchr(buf, ' ', len);
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        r->content_type[0] = '\0';
    } else if (len > 13 && strncasecmp(buf, "content-type:", 13) == 0) {
        copy_header_value(r->content_type, sizeof r->content_type, buf + 13, len - 13);
    } else if (len > 13 && strncasecmp(buf, "x-request-id:", 13) == 0) {
        copy_header_value(r->upstream_id, sizeof r->upstream_id, buf + 13, len - 13);
    } else if ((len == 2 && buf[0] == '\r') || (len == 1 && buf[0] == '\n')) {
        /* End of a header block; 1xx blocks are followed by the real one. */
        if (r->chat && r->adm.stream && r->status == 200 &&
            strncasecmp(r->content_type, "text/event-stream", 17) == 0) {
            r->sse = sse_new(SSE_LINE_MAX, on_event, r);
            if (!r->sse) return 0;
            r->stream_mode = 1;
            loop_relay(r->w->loop, r->up_fd - 1);
            req_start_stream(r);
        }
    }
    return len;
}

/* ---- finishing --------------------------------------------------------- */

static verdict_net_t net_of(CURLcode res)
{
    switch (res) {
    case CURLE_OK: return VERDICT_NET_OK;
    case CURLE_OPERATION_TIMEDOUT: return VERDICT_NET_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST: return VERDICT_NET_UNREACHABLE;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH: return VERDICT_NET_TLS;
    /* the write callback refused bytes: over the body cap (or out of memory,
     * or a stream's parser failed, which stream_error tells) */
    case CURLE_WRITE_ERROR: return VERDICT_NET_TOO_LARGE;
    default: return VERDICT_NET_FAILED;
    }
}

/* The verdict on a metered chat completion, applied: ledger row, budget,
 * the log line. */
static void settle_chat(upstream_t *u, req_t *r, verdict_net_t net, verdict_t *v)
{
    app_t *app = u->app;
    pthread_mutex_lock(&r->mu);
    int client_gone = r->client_gone;
    pthread_mutex_unlock(&r->mu);
    verdict_facts_t f = {
        .net = net, .aborted = r->aborted, .client_gone = client_gone,
        .stream_mode = r->stream_mode, .saw_done = r->saw_done,
        .stream_error = r->stream_error, .saw_usage = r->saw_usage,
        .usage_bad = r->usage_bad, .usage = r->usage, .content_bytes = r->content_bytes,
        .content_deltas = r->content_deltas, .status = r->status, .body = r->ubody,
        .body_len = r->ubody_len, .upstream_id = r->upstream_id,
        .est_prompt_tokens = r->adm.est_prompt_tokens, .reserved = r->rec.reserved,
        .rate = &r->rate,
    };
    verdict_chat(&f, v);
    if (v->cut_stream) r->stream_error = 1;
    int64_t now = base_wall_ms();
    r->rec.ended_ms = now;
    r->rec.status = v->ledger_status;
    r->rec.prompt = v->usage.prompt;
    r->rec.completion = v->usage.completion;
    r->rec.cached = v->usage.cached;
    r->rec.charged = v->charge;
    r->rec.state = v->state;
    snprintf(r->rec.upstream_id, sizeof r->rec.upstream_id, "%s", v->upstream_id);
    r->rec.latency_ms = now - r->t_start_ms;
    r->charged_known = 1;          /* read by the listener after req_answer_upstream */
    if (ledger_submit(app->ledger, &r->rec, NULL, NULL) != 0)
        base_log("ledger closed: completion of %s not recorded", r->rec.id);
    /* Queued for the ledger first, then settled: once loaned is back to
     * 0 and the ledger's backlog is empty, every row is in the file. */
    budget_settle(app->budget, &r->hold, v->charge, v->usage.prompt + v->usage.completion, now);
    if (v->account_exhausted) budget_account_exhausted(app->budget);
    events_settled(app, r, v);
    if (r->snap->cfg->log_requests || v->state != LEDGER_SETTLED || r->rec.status >= 500)
        req_log(r, r->rec.status >= 500 ? BASE_WARN : BASE_INFO);
}

/* A handle for a new transfer: a reset one from the pool, or a new one. */
/* url parsed, from the cache (u->urls). Entries live as long as u (a
 * transfer may still use one): once the cache is full (reloads changed the
 * base several times), or when curl cannot parse url, NULL: the transfer
 * then takes the text. Loop thread only. */
static CURLU *parsed_url(upstream_t *u, const char *url)
{
    for (size_t i = 0; i < u->n_urls; i++)
        if (strcmp(u->urls[i].url, url) == 0) return u->urls[i].h;
    if (u->n_urls == URL_CACHE) return NULL;
    CURLU *h = curl_url();
    if (!h || curl_url_set(h, CURLUPART_URL, url, 0) != CURLUE_OK) {
        curl_url_cleanup(h);
        return NULL;
    }
    snprintf(u->urls[u->n_urls].url, sizeof u->urls[u->n_urls].url, "%s", url);
    u->urls[u->n_urls].h = h;
    return u->urls[u->n_urls++].h;
}

/* A new handle with the options every transfer shares. */
static CURL *easy_new(upstream_t *u)
{
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    /* also has curl decode a reply compressed anyway */
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "identity");
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    if (u->ca_file[0]) curl_easy_setopt(e, CURLOPT_CAINFO, u->ca_file);
    /* Without a proxy in the environment, say so: curl otherwise looks the
     * proxy variables up for every transfer. With one, curl's own handling
     * (no_proxy included) stays. */
    if (u->no_proxy_env) {
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_NOPROXY, "");
    }
    return e;
}

/* A handle for a new transfer trusting ca_file: a kept one of the current
 * generation, or a new one. */
static CURL *easy_get(upstream_t *u, const char *ca_file, unsigned *gen)
{
    if (strcmp(ca_file, u->ca_file) != 0) {           /* a reload changed it */
        snprintf(u->ca_file, sizeof u->ca_file, "%s", ca_file);
        u->gen++;
    }
    while (u->n_idle) {
        CURL *e = u->idle[--u->n_idle];
        if (u->idle_gen[u->n_idle] == u->gen) {
            *gen = u->gen;
            return e;
        }
        curl_easy_cleanup(e);
    }
    *gen = u->gen;
    return easy_new(u);
}

/* Only a handle whose transfer ended cleanly goes back: one cut or paused
 * midway may hold state (held-back bytes) that must not meet a new one. */
static void easy_put(upstream_t *u, CURL *e, unsigned gen, int clean)
{
    if (!clean || u->n_idle == EASY_POOL || gen != u->gen) {
        curl_easy_cleanup(e);
        return;
    }
    u->idle_gen[u->n_idle] = gen;
    u->idle[u->n_idle++] = e;
}

/* Ends r's transfer (whatever thread runs it; the loop's but for a submit
 * refused at stop) and drops the upstream side's reference. */
static void finish(upstream_t *u, req_t *r, CURLcode res)
{
    if (r->easy) {
        loop_remove(u->loop, r->easy);
        pthread_mutex_lock(&r->mu);
        int clean = res == CURLE_OK && !r->paused && !r->aborted;
        pthread_mutex_unlock(&r->mu);
        if (clean && r->up_counted && !r->up_no_reuse && u->idle_conns < MAX_CACHED_CONNS)
            u->idle_conns++;
        easy_put(u, r->easy, r->easy_gen, clean);
        r->easy = NULL;
        u->active.v[r->up_slot] = u->active.v[--u->active.n];
        u->active.v[r->up_slot]->up_slot = r->up_slot;
    }
    if (r->sse && res == CURLE_OK) sse_finish(r->sse);   /* a final event held for a '\n' */
    if (net_of(res) == VERDICT_NET_TLS &&
        (!u->tls_logged_ms || base_mono_ms() - u->tls_logged_ms >= TLS_LOG_MS)) {
        u->tls_logged_ms = base_mono_ms();      /* at most one line per TLS_LOG_MS */
        base_logl(BASE_WARN, "upstream %s: TLS failed: %s (upstream.ca_file: %s)",
                  r->snap->cfg->upstream_base, curl_easy_strerror(res),
                  r->snap->cfg->ca_file[0] ? r->snap->cfg->ca_file : "none, the system's CAs");
    }
    verdict_t v;
    if (r->chat) settle_chat(u, r, net_of(res), &v);
    else verdict_forward(net_of(res), r->status, &v);
    char *body;
    size_t body_len;
    if (v.err_msg) {
        body = req_error_json(v.err_msg, v.err_type, v.err_type);
        body_len = body ? strlen(body) : 0;
    } else {
        body = r->ubody;
        body_len = r->ubody_len;
        r->ubody = NULL;
    }
    req_answer_upstream(r, v.status, body, body_len,
                        v.err_msg || !r->content_type[0] ? "application/json" : r->content_type);
    req_unref(r);
}

/* ---- starting transfers ------------------------------------------------ */

static int start_transfer(upstream_t *u, req_t *r)
{
    app_t *app = u->app;
    const config_t *cfg = r->snap->cfg;
    char url[1200], hdr[8192];
    snprintf(url, sizeof url, "%s%s", cfg->upstream_base, r->up_path);
    CURL *e = easy_get(u, cfg->ca_file, &r->easy_gen);
    if (!e) return -1;
    r->easy = e;
    struct curl_slist *hdrs;
    if (r->chat) {
        const char *b = r->adm.upstream_body ? r->adm.upstream_body : r->body;
        size_t bl = r->adm.upstream_body ? r->adm.upstream_len : r->body_len;
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, b ? b : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bl);
    } else {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);     /* a kept handle may have posted */
    }
    if (r->chat && !r->snap->passthrough && u->chat_hdrs) {
        hdrs = u->chat_hdrs;           /* the same for every request: built once */
    } else {
        if (r->chat) {
            if (r->snap->passthrough) snprintf(hdr, sizeof hdr, "Authorization: %s",
                                           r->client_auth ? r->client_auth : "");
            else snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", app->llm_key);
            r->hdrs = curl_slist_append(r->hdrs, hdr);
            r->hdrs = curl_slist_append(r->hdrs, "Content-Type: application/json");
            r->hdrs = curl_slist_append(r->hdrs, "Expect:");
        } else if (r->client_auth) {
            snprintf(hdr, sizeof hdr, "Authorization: %s", r->client_auth);
            r->hdrs = curl_slist_append(r->hdrs, hdr);
        }
        r->hdrs = curl_slist_append(r->hdrs, "Accept: application/json, text/event-stream");
        hdrs = r->hdrs;
    }
    CURLU *pu = parsed_url(u, url);
    if (pu) curl_easy_setopt(e, CURLOPT_CURLU, pu);
    else {
        curl_easy_setopt(e, CURLOPT_CURLU, NULL);
        curl_easy_setopt(e, CURLOPT_URL, url);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cfg->timeout_s * 1000L);
    /* a kept handle keeps what it was last set to: set both either way */
    r->up_counted = u->mux == MUX_NO ||
                    (u->mux == MUX_UNKNOWN && strncmp(url, "https:", 6) != 0);
    /* the instance's limit, shared among its workers (a multi handle each) */
    int nw = app->n_workers > 0 ? app->n_workers : 1;
    long host_conns = r->up_counted || !cfg->h2_connections ? 0
                    : cfg->h2_connections / nw > 0 ? cfg->h2_connections / nw : 1;
    if (host_conns != u->host_conns) {
        loop_host_connections(u->loop, host_conns);
        u->host_conns = host_conns;
    }
    r->up_no_reuse = r->up_counted && u->active.n >= MAX_CACHED_CONNS;
    long fresh = r->up_counted;
    if (r->up_counted && !r->up_no_reuse && u->idle_conns > 0) {
        u->idle_conns--;
        fresh = 0;
    }
    curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, fresh);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, (long)r->up_no_reuse);
    /* A stream's events are small and many streams are open at once: a small
     * receive buffer each (curl's default, 16 KiB, otherwise). */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, r->chat && r->adm.stream ? 4096L : 16384L);
    if (loop_add(u->loop, e) != 0 || active_push(u, r) != 0) {
        loop_remove(u->loop, e);   /* harmless when it was not added */
        curl_easy_cleanup(e);
        r->easy = NULL;
        return -1;
    }
    if (r->chat) events_upstream_started(app, r);
    return 0;
}

/* ---- what the loop calls ----------------------------------------------- */

static void op_run(void *ctx, loop_queue_t q, void *item)
{
    upstream_t *u = ctx;
    req_t *r = item;
    if (q == LOOP_START) {
        pthread_mutex_lock(&r->mu);
        int gone = (r->client_gone || r->aborted_early) && r->adm.stream;
        pthread_mutex_unlock(&r->mu);
        if (gone) r->aborted = 1;
        if (gone || start_transfer(u, r) != 0) finish(u, r, CURLE_FAILED_INIT);
        return;
    }
    if (q == LOOP_UNPAUSE) {
        pthread_mutex_lock(&r->mu);
        r->unpause_queued = 0;
        int go = r->easy && r->paused;
        r->paused = 0;
        pthread_mutex_unlock(&r->mu);
        if (go) curl_easy_pause(r->easy, CURLPAUSE_CONT);
    } else if (r->easy) {          /* LOOP_ABORT */
        r->aborted = 1;
        finish(u, r, CURLE_ABORTED_BY_CALLBACK);
    }
    req_unref(r);                  /* the queued item's reference */
}

static void op_done(void *ctx, CURL *easy, CURLcode res)
{
    req_t *r;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r);
    finish(ctx, r, res);
}

static int op_socket(void *ctx, CURL *easy, int fd)
{
    (void)ctx;
    req_t *r = NULL;
    if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&r) != CURLE_OK || !r) return 0;
    r->up_fd = fd + 1;
    return r->stream_mode;
}

static void op_stop(void *ctx)
{
    upstream_t *u = ctx;
    while (u->active.n > 0) {
        req_t *r = u->active.v[u->active.n - 1];
        r->aborted = 1;
        finish(u, r, CURLE_ABORTED_BY_CALLBACK);
    }
}

static int op_busy(void *ctx)
{
    upstream_t *u = ctx;
    return atomic_load(&u->app->active) > 0;
}

static const loop_ops_t OPS = { op_run, op_done, op_socket, op_stop, op_busy };

/* ---- the interface ----------------------------------------------------- */

upstream_t *upstream_start(app_t *app, loop_t *loop)
{
    upstream_t *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->app = app;
    u->loop = loop;
    static const char *const proxy_env[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
        "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY" };
    u->no_proxy_env = 1;
    for (size_t i = 0; i < sizeof proxy_env / sizeof proxy_env[0]; i++)
        if (getenv(proxy_env[i])) u->no_proxy_env = 0;
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
    if (loop_start(u->loop, &OPS, u) != 0) {
        curl_slist_free_all(u->chat_hdrs);
        free(u);
        return NULL;
    }
    return u;
}

void upstream_submit(upstream_t *u, req_t *r)
{
    if (loop_post(u->loop, LOOP_START, r) == 0) return;
    /* Shutting down: the request never goes upstream. */
    r->aborted = 0;
    finish(u, r, CURLE_COULDNT_CONNECT);
}

void upstream_abort(upstream_t *u, req_t *r)
{
    req_ref(r);                    /* the queued item's */
    if (loop_post(u->loop, LOOP_ABORT, r) != 0) req_unref(r);
}

void upstream_free(upstream_t *u)
{
    if (!u) return;
    for (size_t i = 0; i < u->n_idle; i++) curl_easy_cleanup(u->idle[i]);
    for (size_t i = 0; i < u->n_urls; i++) curl_url_cleanup(u->urls[i].h);
    curl_slist_free_all(u->chat_hdrs);
    free(u->active.v);
    free(u);
}
