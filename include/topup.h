/* topup: Pinata's auto top-up settings through pinmeter — GET and PUT
 * /v0/credits/topup/config (admin token; they need the Pinata JWT that
 * account.jwt_env names) and `pinmeter topup show|set|disable`. A PUT body
 * is checked against Pinata's documented rules first (topupcfg.h): one that
 * breaks them is answered 400 invalid_request naming the field and never
 * sent; a valid one is sent with the JWT and Pinata's answer passed back.
 * Every change Pinata accepted is recorded in the ledger's topup_changes
 * (time, the settings before as Pinata gave them, the settings sent, via
 * api or cli). The calls to Pinata run off the loop (a job; the command
 * line's own thread), bounded to TOPUP_TIMEOUT_S. The JWT is never logged
 * or printed. */
#ifndef PINMETER_TOPUP_H
#define PINMETER_TOPUP_H
#include <stddef.h>
#include <stdio.h>
#include "config.h"
#include "req.h"

#define TOPUP_TIMEOUT_S 10
#define TOPUP_REPLY_MAX (64 * 1024)    /* Pinata's answer kept, at most */

/* What Pinata answered. */
typedef struct topup_reply {
    long status;
    char *body;                        /* malloc'd, NUL-terminated (len bytes before it) */
    size_t len;
    char ctype[128];                   /* "" when Pinata sent none */
} topup_reply_t;

/* One call to {upstream.base_url}/v0/credits/topup/config of cfg (its
 * upstream.ca_file trusted) with jwt: method "GET", or "PUT" with body
 * (JSON). 0 with *out (Pinata answered; free out->body), or -1 with err
 * when there was no answer (refused, timed out, too large). */
int topup_call(const config_t *cfg, const char *jwt, const char *method, const char *body,
               topup_reply_t *out, char *err, size_t errlen);

/* GET and PUT /v0/credits/topup/config (the route's handler). */
enum MHD_Result topup_serve(req_t *r, struct MHD_Connection *c);

/* pinmeter topup SUB: "show", "set" (threshold and amount: each a number
 * or "null", NULL when the flag was not given) or "disable". Prints
 * Pinata's answer on out, errors on err. Returns the exit status: 0 when
 * Pinata answered 2xx; 1 otherwise (a check failed and nothing was sent,
 * no JWT, no answer, or another status). */
int topup_cli(const config_t *cfg, const char *sub, const char *threshold, const char *amount,
              FILE *out, FILE *err);

#endif
