/* admit: reading a chat completion request body at admission. Pure: finds the
 * few fields metering needs, estimates prompt tokens, and when the request
 * streams, produces the upstream body with stream_options.include_usage set. */
#ifndef PINMETER_ADMIT_H
#define PINMETER_ADMIT_H
#include <stddef.h>
#include <stdint.h>

#define ADMIT_MODEL_MAX 256
#define ADMIT_MAX_DEPTH 64          /* deeper JSON nesting is refused */
#define ADMIT_MAX_CHOICES 128       /* largest "n" accepted */

typedef struct admit_req {
    char model[ADMIT_MODEL_MAX];
    int stream;                     /* "stream": true */
    int client_wants_usage;         /* stream_options.include_usage true in the client's body */
    int64_t max_tokens;             /* the larger of max_tokens and max_completion_tokens, else -1 */
    int64_t n;                      /* choices asked for ("n"), default 1 */
    int64_t est_prompt_tokens;      /* ceil(body bytes / 3): conservative */
    char *upstream_body;            /* body to send upstream when it differs (owned), else NULL */
    size_t upstream_len;
} admit_req_t;

/* Parses body[0, len), borrowed for the call only. Returns 0 and fills *out
 * (free with admit_free; allocates only when it makes an upstream body), or -1
 * with *out untouched and a client-facing reason in err: not UTF-8, a control
 * byte or \u0000 escape in a string, nesting too deep, not JSON, not an
 * object, a repeated key among those read here, missing/empty/non-string or
 * too long model, messages missing or not an array,
 * max_tokens/max_completion_tokens/n not a positive integer (n at most
 * ADMIT_MAX_CHOICES), stream not a boolean, stream_options not an object. */
int admit_parse(const char *body, size_t len, admit_req_t *out,
                char *err, size_t errlen);
void admit_free(admit_req_t *r);

/* Lowers the request's completion limit to tokens (>= 1) in the body sent
 * upstream: whichever of max_tokens and max_completion_tokens it set (both
 * when both; a null one counts as set), or "max_tokens" added first in the
 * object when it set neither. Every other byte of the upstream body (body,
 * or r->upstream_body when admit_parse made one) stays as it was. 0, or -1
 * (out of memory, or tokens < 1): r unchanged. */
int admit_clamp(admit_req_t *r, const char *body, size_t len, int64_t tokens);

#endif
