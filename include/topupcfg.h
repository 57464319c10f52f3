/* topupcfg: Pinata's documented rules for the auto top-up settings (GET /
 * PUT /v0/credits/topup/config), checked before anything is sent: a body
 * {"threshold": N|null, "amount": N|null} with exactly those two fields,
 * threshold a number of at least 5 or null, amount a positive integer or
 * null (both null turns auto top-up off). Pure: no I/O, no globals; the
 * endpoint (topup.c) and the `pinmeter topup` commands share it, so both
 * refuse the same bodies with the same words. */
#ifndef PINMETER_TOPUPCFG_H
#define PINMETER_TOPUPCFG_H
#include <stddef.h>
#include <stdint.h>

#define TOPUPCFG_MIN_THRESHOLD 5
#define TOPUPCFG_MAX_AMOUNT 9007199254740991LL   /* 2^53 - 1: the largest exact JSON integer */
#define TOPUPCFG_BODY_MAX 4096                   /* a longer body is not a top-up setting */

/* The settings; a field that is not set is null. */
typedef struct topupcfg {
    int has_threshold;
    double threshold;              /* credits: available below this triggers a top-up */
    int has_amount;
    int64_t amount;                /* credits bought each time */
} topupcfg_t;

/* Checks body (len bytes) against the rules. 0 with *out filled, or -1
 * with *field the offending field ("threshold", "amount", another key the
 * body has, or "" for the body as a whole; a static string or borrowed
 * from nothing: copied into fieldbuf, fieldlen bytes) and why: a sentence
 * for the client (never echoing a value). */
int topupcfg_parse(const char *body, size_t len, topupcfg_t *out, char *fieldbuf,
                   size_t fieldlen, char *why, size_t whylen);

/* The same from the command line: threshold and amount each a JSON number
 * or "null" (NULL: the flag was not given). Same rules, same messages;
 * field is "threshold" or "amount". 0 or -1. */
int topupcfg_from_args(const char *threshold, const char *amount, topupcfg_t *out,
                       char *fieldbuf, size_t fieldlen, char *why, size_t whylen);

/* The body to send: {"threshold":…,"amount":…} (malloc'd, NUL-terminated;
 * free with free()), or NULL when out of memory. */
char *topupcfg_json(const topupcfg_t *c);

#endif
