/* webhook: one POST of an alert event to the receiver, signed. Builds the
 * request (Content-Type application/json, X-Pinmeter-Event, and
 * X-Pinmeter-Signature: sha256=<hex HMAC-SHA256 of the exact body> when a
 * secret is set), sends it with libcurl on the caller's thread, bounded to
 * 5 s, and says what the receiver answered. Knows nothing of retries or the
 * ledger. The secret is never logged. */
#ifndef PINMETER_WEBHOOK_H
#define PINMETER_WEBHOOK_H
#include <stdatomic.h>
#include <stddef.h>

#define WEBHOOK_TIMEOUT_MS 5000
#define WEBHOOK_SIG_MAX 72             /* "sha256=" + 64 hex + NUL */

typedef struct webhook webhook_t;      /* opaque; one thread at a time */

/* A sender; secret (NULL or "": unsigned) is copied and wiped at
 * webhook_free. stop (may be NULL), when it becomes non-zero, cuts an
 * attempt in progress. NULL when out of memory. */
webhook_t *webhook_new(const char *secret, const atomic_int *stop);
void webhook_free(webhook_t *w);

/* POSTs len bytes of body to url as event. Returns the receiver's HTTP
 * status (> 0), or 0 when there was no answer (refused, timed out, cut),
 * with the reason in err (never the URL or the secret). */
long webhook_post(webhook_t *w, const char *url, const char *event, const char *body,
                  size_t len, char *err, size_t errlen);

/* "sha256=" + hex HMAC-SHA256 of body under secret, into out. */
void webhook_sign(const char *secret, size_t secret_len, const char *body, size_t len,
                  char out[WEBHOOK_SIG_MAX]);

#endif
