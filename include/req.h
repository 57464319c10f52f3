/* req: one client request's life — created by the route table when its
 * headers are in, reference-counted, suspended while it waits for the budget
 * store or the upstream and resumed when its answer is ready, answered
 * (buffered JSON, an OpenAI-style error, or a relayed stream), freed with
 * its last reference. The listener, the route handlers and the upstream
 * transfer all act on a request through this module.
 *
 * Threads: the listener's callbacks and the upstream transfers run on the
 * event loop's thread; other threads (the Redis reserver, the supervisor's
 * sweep) reach a req through the loop's queues or under req->mu. Fields
 * marked [mu] are guarded by req->mu.
 *
 * References: one for the MHD connection (dropped in the listener's
 * completion callback), one while the request is with the upstream side
 * (taken by req_hold, dropped when the transfer or job is finished; with
 * the shared store it is first the reservation's, dropped by a refusal), and
 * one per queued unpause or abort. */
#ifndef PINMETER_REQ_H
#define PINMETER_REQ_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include "admit.h"
#include "app.h"
#include "sse.h"
#include "usage.h"

/* The hand-over buffer between a stream's transfer and its client: the
 * transfer pauses at the high mark, the client's reads resume it below the
 * low one. */
#define REQ_OUT_HIGH_WATER (64 * 1024)
#define REQ_OUT_LOW_WATER (16 * 1024)

typedef enum { RESP_NONE = 0, RESP_BUFFER, RESP_STREAM } resp_kind_t;

typedef struct req req_t;

/* A route's handler: runs on the loop's thread once the request's body is
 * complete; queues an answer, or suspends the request (req_hold). */
typedef enum MHD_Result (*req_serve_fn)(req_t *r, struct MHD_Connection *c);

struct req {
    app_t *app;
    worker_t *w;                   /* the loop it lives on */
    const snap_t *snap;            /* config the request was admitted under */
    struct MHD_Connection *conn;
    pthread_mutex_t mu;
    int refs;                      /* [mu] */
    req_serve_fn serve;            /* its route's handler */
    int64_t t_start_ms;
    int64_t t_body_us;             /* monotonic: the body was complete (handler ran) */
    int64_t t_admit_us;            /* monotonic: admitted (hold taken, begin journaled) */

    /* client request */
    char *body;
    size_t body_len, body_cap;
    size_t body_hint;              /* Content-Length, to size the body buffer once */
    int too_large;
    char *client_auth;             /* passthrough only: the Authorization to forward */
    char *path_rest;               /* a prefix route: the path after the prefix */
    char **query;                  /* name, value pairs (req_take_query) */
    size_t n_query;
    int admin;                     /* the caller showed the admin token */
    unsigned method;               /* ROUTE_GET, ROUTE_POST or ROUTE_PUT (routes.h) */

    /* admission */
    int team;                      /* budget slot; -1 none */
    int key_slot;                  /* the key's budget slot; -1 none (passthrough, admin) */
    const team_conf_t *tconf;      /* NULL in passthrough */
    const key_conf_t *kconf;       /* the caller's key's settings; NULL as tconf */
    int64_t tokens;                /* prompt estimate + completion reserved (tokens per minute) */
    int64_t clamped;               /* the completion limit a clamp set; 0 none */
    int rate_known;                /* rate holds the rate-limit header figures */
    int64_t retry_after_ms;        /* a 429's exact wait (retry-after-ms) */
    ratelim_verdict_t rate_hdr;
    admit_req_t adm;
    rate_t rate;
    int priced;                    /* the model is in the rate table (rate is its price) */
    int charged_known;             /* rec.charged is final (a buffered answer's X-Pinmeter-Cost) */
    budget_hold_t hold;
    ledger_rec_t rec;

    /* what goes upstream (set by the route table and the handler) */
    int chat;                      /* a metered chat completion (else forwarded as is) */
    const char *up_path;           /* path under upstream.base_url */

    /* upstream (touched only by the loop's thread unless noted) */
    CURL *easy;
    unsigned easy_gen;             /* the CA-file generation its handle was made with */
    struct curl_slist *hdrs;
    size_t up_slot;                /* index in the transfers' active list */
    int up_no_reuse;               /* its upstream connection closes at the end */
    int up_counted;                /* in upstream's idle-connection count (HTTP/1.x) */
    int up_fd;                     /* its upstream socket + 1, 0 none */
    int aborted;                   /* the client left a stream: cut upstream */
    long status;
    char content_type[128];
    char upstream_id[128];
    int stream_mode;               /* relaying SSE as it arrives */
    sse_parser_t *sse;
    int saw_usage, saw_done, usage_bad;
    usage_t usage;
    int64_t content_bytes;
    int content_deltas;
    char *ubody;                   /* non-stream upstream body */
    size_t ubody_len, ubody_cap;

    /* hand-over to the client [mu] */
    char *out;
    size_t out_len, out_off, out_cap;
    int paused;                    /* curl transfer paused for backpressure */
    int unpause_queued;
    int suspended;                 /* MHD connection suspended */
    int client_gone;               /* MHD completed the connection */
    int aborted_early;             /* the sweep saw the client leave while suspended */
    int dispatched;                /* handed to the budget store or the upstream */
    int upstream_done;
    int stream_error;              /* stream ended abnormally: cut the client's */
    resp_kind_t resp_kind;
    int resp_status;
    char *resp_body;               /* owned until queued */
    size_t resp_len;
    char resp_type[128];
    char retry_after[16];
};

/* A new request on connection c of worker w's listener, with one reference
 * (the connection's), counted in app->active. NULL on OOM. */
req_t *req_new(app_t *app, worker_t *w, struct MHD_Connection *c);
void req_ref(req_t *r);
/* Drops one reference; frees the req at zero. */
void req_unref(req_t *r);

/* Suspends the MHD connection (the loop counts it). Call with r->mu held. */
void req_suspend_locked(req_t *r);
/* Resumes the MHD connection if suspended and still open (the loop then runs
 * the listener). Call with r->mu held. */
void req_resume_locked(req_t *r);
/* Takes a reference for the side that will answer r (the budget store and
 * the upstream, or a job), marks r dispatched and suspends its connection
 * until its answer is prepared. */
void req_hold(req_t *r);

/* Copies the request's query arguments (loop thread, before a job reads
 * them; a repeated name keeps its first value). 0, or -1 on OOM. */
int req_take_query(req_t *r, struct MHD_Connection *c);
/* The value of query argument name as copied by req_take_query ("" for a
 * name without a value), or NULL. Borrowed until req_unref frees r. */
const char *req_arg(const req_t *r, const char *name);

/* Appends to the request body, up to the snapshot's max_body (past it only
 * too_large is set). 0, or -1 on OOM. */
int req_append_body(req_t *r, const char *data, size_t len);

/* An OpenAI-style error body {"error":{"message","type","code"}}, malloc'd. */
char *req_error_json(const char *message, const char *type, const char *code);
/* Adds an exact 9-decimal credits number named name to obj. */
void req_add_credits(cJSON *obj, const char *name, nanos_t v);

/* Queues a buffered response, taking ownership of body (malloc'd; NULL for
 * none). ctype NULL or "" means application/json; r (may be NULL) adds its
 * X-Pinmeter-Request-Id; retry_after (may be NULL) a Retry-After. */
enum MHD_Result req_queue_body(struct MHD_Connection *c, int status, char *body, size_t len,
                               const char *ctype, const req_t *r, const char *retry_after);
enum MHD_Result req_queue_error(struct MHD_Connection *c, int status, const char *msg,
                                const char *type, const char *code, const req_t *r);

/* Prepares a buffered JSON answer for a suspended request and wakes its
 * connection, which queues it (any thread). Takes ownership of body; the
 * answer carries no request id. */
void req_answer_later(req_t *r, int status, char *body, const char *retry_after);
/* The same for any content type and no Retry-After: a job's answer. */
void req_answer_later_as(req_t *r, int status, char *body, size_t len, const char *ctype);
/* Prepares the answer the upstream gave (the transfer's thread): the buffered body
 * (owned) unless a stream is already being relayed, marks the upstream done
 * and wakes the connection. */
void req_answer_upstream(req_t *r, int status, char *body, size_t len, const char *ctype);
/* Marks r's stream as started: its answer is relayed from the hand-over
 * buffer as it fills. */
void req_start_stream(req_t *r);
/* Queues the answer prepared for r (kind, and the buffered body, owned).
 * Call without r->mu, on the loop's thread. */
enum MHD_Result req_queue_prepared(req_t *r, struct MHD_Connection *c, resp_kind_t kind,
                                   char *body);

/* Appends relayed bytes to the hand-over buffer. Call with r->mu held.
 * 0, or -1 on OOM. */
int req_out_append_locked(req_t *r, const char *p, size_t len);

/* A finished request's log line (level by its status): id, team, key,
 * model, status, state, charge and time; in JSON (log_format json) every
 * field of the request log. */
void req_log(const req_t *r, base_level_t level);

#endif
