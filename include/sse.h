/* sse: incremental Server-Sent Events parser. Pure: fed bytes in any chunking,
 * it calls back once per complete event with the event's raw bytes (so the
 * proxy can relay it unchanged) and its joined data field. Handles \n, \r\n
 * and \r line endings, comments, multi-line data, and a per-line cap. */
#ifndef PINMETER_SSE_H
#define PINMETER_SSE_H
#include <stddef.h>

typedef struct sse_event {
    const char *raw;      /* the event's bytes as received, incl. terminating blank line */
    size_t raw_len;
    const char *data;     /* data lines joined by '\n' (no trailing '\n'); NUL-terminated */
    size_t data_len;
    int has_data;         /* at least one data: line */
} sse_event_t;

/* Called per complete event; pointers valid only during the call.
 * Return 0 to go on, non-zero to stop (sse_feed then returns that value). */
typedef int (*sse_event_fn)(void *ud, const sse_event_t *ev);

typedef struct sse_parser sse_parser_t;  /* opaque */

#define SSE_ERR_LINE_TOO_LONG (-2)
#define SSE_ERR_NOMEM         (-3)

/* New parser; max_line caps one line (and one event's raw size at 4x);
 * past either cap sse_feed returns SSE_ERR_LINE_TOO_LONG. NULL on allocation
 * failure, max_line 0 or fn NULL. Free with sse_free. */
sse_parser_t *sse_new(size_t max_line, sse_event_fn fn, void *ud);
void sse_free(sse_parser_t *p);

/* Feeds len bytes. Returns 0, a negative SSE_ERR_*, or the callback's
 * non-zero return. After an error the parser must not be fed again. */
int sse_feed(sse_parser_t *p, const char *buf, size_t len);

/* At end of stream: delivers an event whose closing blank line was a lone
 * \r at the very end of the input (held until then in case a \n followed).
 * Returns like sse_feed. Call once; do not feed afterwards. */
int sse_finish(sse_parser_t *p);

/* Bytes of a started but unfinished event held (for end-of-stream checks). */
size_t sse_pending(const sse_parser_t *p);

#endif
