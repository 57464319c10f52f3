/* app: the serving process's context and the request record shared by the
 * listener (server.c's libmicrohttpd handlers), the upstream side
 * (upstream.c, a curl multi handle) and the sweep in server_run.
 *
 * The listener's callbacks and the upstream transfers run on one thread (the
 * event loop in upstream.c); other threads (Redis reserver, supervisor) reach
 * a req through the loop's queues or req->mu.
 *
 * Ownership: a req is created by the listener and reference-counted: one
 * reference for the MHD connection (dropped in the completion callback), one
 * while the request is with the upstream thread (dropped when the transfer is
 * finished), and one per queued unpause/abort. Fields marked [mu] are guarded by req->mu. */
#ifndef PINMETER_APP_H
#define PINMETER_APP_H
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <microhttpd.h>
#include <curl/curl.h>
#include "admit.h"
#include "base.h"
#include "book.h"
#include "budget.h"
#include "config.h"
#include "ledger.h"
#include "rates.h"
#include "sse.h"
#include "usage.h"

struct upstream;
struct account;

/* What one config file says, with its rates, as served at one time. SIGHUP
 * builds a new snapshot and swaps it in only when the whole of it is valid;
 * a request keeps the snapshot it was admitted under. Old snapshots are freed
 * at exit (reloads are rare; no reader ever sees a freed one). */
typedef struct snap {
    config_t *cfg;
    rates_t *rates;
    int *slot;                     /* budget slot of cfg->teams[i] */
    int passthrough;               /* no teams configured */
    int default_slot;              /* passthrough's team "default" */
    struct snap *older;
} snap_t;

/* One client connection, for the header deadline: a connection waiting for
 * a request's headers longer than client_timeout_s is shut down, however it
 * trickles bytes (libmicrohttpd's own timeout is per idle gap only). */
typedef struct conn_rec {
    struct conn_rec *prev, *next;
    int fd;
    int in_request;                /* headers received, request not yet completed */
    int cut;                       /* already shut down */
    int64_t wait_since_ms;
    struct req *req;               /* the request in progress, borrowed [conns_mu] */
} conn_rec_t;

typedef struct app {
    snap_t *_Atomic snap;          /* current config; load once per use */
    char **slot_names;             /* team name of each budget slot (main thread) */
    size_t n_slots;
    period_t *slot_period;         /* period each slot was last set up with */
    int *slot_period_known;
    budget_t *budget;
    ledger_t *ledger;
    struct upstream *up;
    struct account *acct;
    struct MHD_Daemon *mhd;
    char *llm_key;                 /* upstream key from the environment; NULL in passthrough */
    int admin_on;
    unsigned char admin_sha[32];
    char instance[17];             /* random hex, prefixes request ids */
    atomic_uint_fast64_t seq;
    atomic_int active;             /* requests holding a reference */
    atomic_int conns;              /* open client connections */
    pthread_mutex_t conns_mu;
    conn_rec_t conns_list;         /* sentinel of the open connections [conns_mu] */
} app_t;

typedef enum { ROUTE_CHAT = 1, ROUTE_MODELS, ROUTE_BALANCE_PT } route_t;
typedef enum { RESP_NONE = 0, RESP_BUFFER, RESP_STREAM } resp_kind_t;

typedef struct req {
    app_t *app;
    const snap_t *snap;            /* config the request was admitted under */
    struct MHD_Connection *conn;
    pthread_mutex_t mu;
    int refs;                      /* [mu] */
    route_t route;
    int64_t t_start_ms;

    /* client request */
    char *body;
    size_t body_len, body_cap;
    size_t body_hint;              /* Content-Length, to size the body buffer once */
    int too_large;
    char *client_auth;             /* passthrough only: forwarded Authorization value */

    /* admission */
    int team;                      /* budget slot */
    const team_conf_t *tconf;      /* NULL in passthrough */
    admit_req_t adm;
    rate_t rate;
    budget_hold_t hold;
    ledger_rec_t rec;

    /* upstream (touched only by the upstream thread unless noted) */
    CURL *easy;
    struct curl_slist *hdrs;
    size_t up_slot;                /* index in the upstream thread's active list */
    int up_no_reuse;               /* its upstream connection closes at the end */
    int up_fd;                     /* its upstream socket + 1, 0 none (upstream thread) */
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
    int dispatched;                /* handed to the ledger/upstream */
    int upstream_done;
    int stream_error;              /* stream ended abnormally: cut the client's */
    resp_kind_t resp_kind;
    int resp_status;
    char *resp_body;               /* owned until queued */
    size_t resp_len;
    char resp_type[128];
    char retry_after[16];
} req_t;

/* Drops one reference; frees the req at zero. */
void req_unref(req_t *r);
/* Resumes the MHD connection if suspended and still open. Call with r->mu held. */
void req_resume_locked(req_t *r);
/* Builds an OpenAI-style error body {"error":{"message","type","code"}} as a
 * malloc'd string. */
char *req_error_json(const char *message, const char *type, const char *code);

/* upstream.c: the curl multi thread. */
struct upstream *upstream_start(app_t *app);
/* Hands r (with a reference) to the upstream thread to start its transfer. */
void upstream_submit(struct upstream *u, req_t *r);
/* Asks the thread to resume a paused transfer / abort one whose client left. */
void upstream_unpause(struct upstream *u, req_t *r);
void upstream_abort(struct upstream *u, req_t *r);
/* Has the loop drive the listener (libmicrohttpd in external-epoll mode). */
void upstream_attach(struct upstream *u, struct MHD_Daemon *d);
/* Tells the loop a connection was resumed (from any thread): the listener
 * must run to act on it. */
void upstream_resumed(struct upstream *u);
/* Counts a suspended connection (from the listener's handlers). */
void upstream_suspended(struct upstream *u);
/* Has the loop stop the listener accepting (MHD_quiesce_daemon). */
void upstream_quiesce(struct upstream *u);
/* Aborts everything in flight, lets their answers go out (up to 2 s), and
 * joins the thread; later submits are finished at once without going
 * upstream. */
void upstream_stop(struct upstream *u);
/* Frees the stopped upstream (after nothing can submit any more). */
void upstream_free(struct upstream *u);

/* account.c: periodic sync of Pinata's balance into the budget. */
struct account *account_start(app_t *app, const char *jwt);
void account_stop(struct account *a);

/* server.c: serves until *stop; calls reload(app) whenever *hup is set. */
int server_run(app_t *app, volatile sig_atomic_t *stop, volatile sig_atomic_t *hup,
               void (*reload)(app_t *app));
static inline snap_t *app_snap(app_t *app) { return atomic_load(&app->snap); }

#endif
