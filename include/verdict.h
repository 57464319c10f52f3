/* verdict: what a finished upstream transfer comes to — the status the
 * client gets, the ledger state, the tokens and the charge. Pure: the
 * transfer gathers the facts (how it ended, what it saw), this decides, and
 * the transfer applies the outcome (ledger row, budget settle, answer). One
 * case per row of the README's failure table; tests/unit/test_verdict.c
 * checks each with exact charges. */
#ifndef PINMETER_VERDICT_H
#define PINMETER_VERDICT_H
#include <stddef.h>
#include <stdint.h>
#include "ledger.h"
#include "rates.h"
#include "usage.h"

/* How the transfer itself ended (the transfer maps its curl code to this). */
typedef enum {
    VERDICT_NET_OK = 0,            /* a complete reply */
    VERDICT_NET_TIMEOUT,           /* no complete reply within upstream.timeout_s */
    VERDICT_NET_UNREACHABLE,       /* connection refused, name not resolved */
    VERDICT_NET_TLS,               /* TLS handshake or certificate verification failed */
    VERDICT_NET_TOO_LARGE,         /* the reply could not be taken in (over the cap) */
    VERDICT_NET_FAILED,            /* reset, closed early, cut, not started */
} verdict_net_t;

/* What the transfer saw of one chat completion. Borrowed for the call. */
typedef struct verdict_facts {
    verdict_net_t net;
    int aborted;                   /* pinmeter cut it: a stream's client left, or the
                                    * loop is stopping (every transfer is cut) */
    int client_gone;               /* the client hung up before its answer */
    /* a stream relayed as SSE (200 text/event-stream to a stream request) */
    int stream_mode;
    int saw_done;                  /* data: [DONE] arrived */
    int stream_error;              /* the SSE could not be parsed or relayed */
    int saw_usage, usage_bad;      /* an event carried usage / carried a bad one */
    usage_t usage;                 /* the last good usage seen */
    int64_t content_bytes;         /* completion content seen in events */
    int content_deltas;
    /* a buffered reply (every other case) */
    long status;                   /* the upstream's HTTP status */
    const char *body;              /* its body, body_len bytes (NULL when none) */
    size_t body_len;
    const char *upstream_id;       /* the id seen so far (x-request-id, events); "" none */
    /* admission */
    int64_t est_prompt_tokens;
    nanos_t reserved;
    const rate_t *rate;            /* the price the request was admitted at */
} verdict_facts_t;

typedef struct verdict {
    int status;                    /* to the client, when its answer is not already streaming */
    int ledger_status;             /* recorded: 499 for a client that left a buffered reply */
    const char *err_msg, *err_type; /* set: answer with this JSON error instead of the body */
    ledger_state_t state;
    usage_t usage;                 /* the tokens charged */
    nanos_t charge;
    int cut_stream;                /* end the client's stream without its terminator */
    int account_exhausted;         /* Pinata said 402: the account is out of credits */
    char upstream_id[USAGE_ID_MAX];
} verdict_t;

/* The outcome of a metered chat completion. Fills *out entirely. */
void verdict_chat(const verdict_facts_t *f, verdict_t *out);

/* The outcome of an unmetered pass-through (models list, passthrough
 * balance): the upstream's status, or 504/502 with an error when there was
 * no complete reply. Fills *out; state is LEDGER_FAILED, charge 0. */
void verdict_forward(verdict_net_t net, long status, verdict_t *out);

#endif
