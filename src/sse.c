/* sse: incremental Server-Sent Events parser (WHATWG "event stream" rules).
 *
 * Bytes are appended to one growing buffer holding the current event exactly
 * as received; each line is interpreted when its terminator arrives, and the
 * values of its data: lines are copied into a second buffer joined by '\n'.
 * A blank line completes the event: the callback gets both buffers and they
 * are reset (kept allocated, so the steady state does no malloc).
 *
 * Line endings may be \n, \r\n or \r. A \r may be followed by a \n in the next
 * chunk, so after a \r the parser remembers to swallow one \n into the same
 * line ending. When the blank line that ends an event is a lone \r at the end
 * of the bytes fed so far, the event is held until the next byte (or
 * sse_finish) shows whether a \n belongs to it; this is what makes the events
 * reported identical under any chunking. Pure: no I/O, no clock, no globals. */
#include "sse.h"

#include <stdlib.h>
#include <string.h>

struct sse_parser {
    size_t max_line;    /* cap on one line, terminator excluded */
    size_t raw_cap;     /* cap on one event's raw bytes */
    sse_event_fn fn;
    void *ud;
    char *raw;          /* current event as received */
    size_t raw_len, raw_alloc;
    char *data;         /* joined data values, each followed by '\n' */
    size_t data_len, data_alloc;
    size_t line_start;  /* offset in raw of the line being received */
    int has_data;
    int after_cr;       /* last line ended in \r: one following \n belongs to it */
    int held;           /* event complete but its final \r may still get a \n */
    int first_line;     /* the stream's first line: may start with a BOM */
    int stopped;        /* error or callback return that stopped the parser */
};

#define SSE_MIN_ALLOC 256

/* Makes room for need bytes in *buf (need <= cap). 0 or SSE_ERR_NOMEM;
 * SSE_ERR_LINE_TOO_LONG when need exceeds cap. */
static int grow(char **buf, size_t *alloc, size_t need, size_t cap)
{
    if (need > cap)
        return SSE_ERR_LINE_TOO_LONG;
    if (need <= *alloc)
        return 0;
    size_t n = *alloc ? *alloc : (SSE_MIN_ALLOC < cap ? SSE_MIN_ALLOC : cap);
    while (n < need)
        n = n > cap / 2 ? cap : n * 2;
    char *nb = realloc(*buf, n);
    if (!nb)
        return SSE_ERR_NOMEM;
    *buf = nb;
    *alloc = n;
    return 0;
}

static int raw_append(sse_parser_t *p, const char *b, size_t n)
{
    int rc = grow(&p->raw, &p->raw_alloc, p->raw_len + n, p->raw_cap);
    if (rc)
        return rc;
    memcpy(p->raw + p->raw_len, b, n);
    p->raw_len += n;
    return 0;
}

/* Interprets the completed line raw[start, end). Returns 1 if it is blank
 * (the event is complete), 0 if not, or a negative SSE_ERR_*. */
static int take_line(sse_parser_t *p, size_t start, size_t end)
{
    const char *l = p->raw + start;
    size_t n = end - start;

    if (p->first_line) {
        p->first_line = 0;
        if (n >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0) {
            l += 3;     /* a leading BOM is ignored, per the spec */
            n -= 3;
        }
    }
    if (n == 0)
        return 1;
    if (l[0] == ':')
        return 0;           /* comment */

    const char *colon = memchr(l, ':', n);
    size_t name_len = colon ? (size_t)(colon - l) : n;
    if (name_len != 4 || memcmp(l, "data", 4) != 0)
        return 0;           /* event:, id:, retry: and unknown fields */

    const char *v = colon ? colon + 1 : l + n;
    size_t vlen = (size_t)(l + n - v);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    /* +1 for the '\n' separator, +1 for the NUL written at dispatch */
    int rc = grow(&p->data, &p->data_alloc, p->data_len + vlen + 2,
                  p->raw_cap + 2);
    if (rc)
        return rc;
    memcpy(p->data + p->data_len, v, vlen);
    p->data_len += vlen;
    p->data[p->data_len++] = '\n';
    p->has_data = 1;
    return 0;
}

/* Hands the current event to the callback and resets for the next one. */
static int dispatch(sse_parser_t *p)
{
    sse_event_t ev;
    size_t dlen = p->has_data ? p->data_len - 1 : 0;  /* drop the last '\n' */

    if (!p->data) {
        int rc = grow(&p->data, &p->data_alloc, 1, p->raw_cap + 2);
        if (rc)
            return rc;
    }
    p->data[dlen] = '\0';
    ev.raw = p->raw;
    ev.raw_len = p->raw_len;
    ev.data = p->data;
    ev.data_len = dlen;
    ev.has_data = p->has_data;
    p->raw_len = 0;
    p->data_len = 0;
    p->line_start = 0;
    p->has_data = 0;
    p->held = 0;
    return p->fn(p->ud, &ev);
}

sse_parser_t *sse_new(size_t max_line, sse_event_fn fn, void *ud)
{
    if (max_line == 0 || !fn || max_line > (((size_t)-1) - 8) / 4)
        return NULL;
    sse_parser_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->max_line = max_line;
    p->raw_cap = 4 * max_line + 4;  /* + room for a max line's \r\n\r\n */
    p->fn = fn;
    p->ud = ud;
    p->first_line = 1;
    return p;
}

void sse_free(sse_parser_t *p)
{
    if (!p)
        return;
    free(p->raw);
    free(p->data);
    free(p);
}

static int feed(sse_parser_t *p, const char *buf, size_t len)
{
    size_t i = 0;
    int rc;

    while (i < len) {
        if (p->after_cr) {
            p->after_cr = 0;
            if (buf[i] == '\n') {
                if ((rc = raw_append(p, buf + i, 1)) != 0)
                    return rc;
                p->line_start = p->raw_len;
                i++;
            }
            if (p->held && (rc = dispatch(p)) != 0)
                return rc;
            continue;
        }

        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if ((p->raw_len - p->line_start) + (j - i) > p->max_line)
            return SSE_ERR_LINE_TOO_LONG;
        /* the terminator, if any, is appended with the line */
        size_t take = j < len ? j - i + 1 : j - i;
        if ((rc = raw_append(p, buf + i, take)) != 0)
            return rc;
        i += take;
        if (j == len)
            break;

        rc = take_line(p, p->line_start, p->raw_len - 1);
        if (rc < 0)
            return rc;
        p->line_start = p->raw_len;
        if (buf[j] == '\r') {
            p->after_cr = 1;
            p->held = rc;   /* wait for a possible \n before dispatching */
        } else if (rc == 1 && (rc = dispatch(p)) != 0) {
            return rc;
        }
    }
    return 0;
}

int sse_feed(sse_parser_t *p, const char *buf, size_t len)
{
    if (p->stopped)
        return p->stopped;
    int rc = feed(p, buf, len);
    p->stopped = rc;
    return rc;
}

int sse_finish(sse_parser_t *p)
{
    if (p->stopped)
        return p->stopped;
    p->after_cr = 0;
    int rc = p->held ? dispatch(p) : 0;
    p->stopped = rc;
    return rc;
}

size_t sse_pending(const sse_parser_t *p)
{
    return p->raw_len;
}
