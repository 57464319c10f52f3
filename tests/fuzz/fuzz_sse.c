/* fuzz_sse: the SSE parser must report the same events whatever the chunking.
 *
 * Input layout (see tests/fuzz/README.md):
 *   [0..1]  max_line = 1 + (big-endian u16 % 4096)
 *   [2]     stop: < 224 never; else the callback returns FUZZ_STOP at event
 *           number (b - 223), i.e. 1..32
 *   [3]     n = 1 + b % 16 chunk-size bytes follow
 *   [4..]   n chunk sizes (0..255, cycled; 0 is an empty sse_feed)
 *   rest    the stream
 *
 * The stream is fed to one parser in those chunks (each chunk a heap copy of
 * exactly its size, so ASan sees over-reads) and to another in one call. Both
 * must give the same return code and the same events (raw bytes, data bytes,
 * has_data), and both must agree with a simple whole-input reference parser
 * written from the contract in sse.h: lines end in \r\n, \n or \r; a blank
 * line ends an event; "data" fields are joined with '\n'; a leading BOM on
 * the first line is ignored; a line longer than max_line or an event longer
 * than 4 * max_line + 4 raw bytes is SSE_ERR_LINE_TOO_LONG. Without an error,
 * the concatenated raw bytes are the input's prefix and raw + sse_pending()
 * covers the whole input, before and after sse_finish. */
#include "sse.h"
#include "fuzz.h"

#include <string.h>

#define FUZZ_STOP 42

/* Growable record of events: offsets into one raw and one data buffer. */
typedef struct ev_rec {
    size_t raw_off, raw_len, data_off, data_len;
    int has_data;
} ev_rec_t;

typedef struct log {
    ev_rec_t *ev;
    size_t n, ev_alloc;
    char *raw, *data;
    size_t raw_len, raw_alloc, data_len, data_alloc;
    size_t raw_cap;           /* the parser's cap on one event, for checks */
    size_t stop_at;           /* 1-based event that returns FUZZ_STOP; 0 none */
} log_t;

static void *grow(void *p, size_t *alloc, size_t need, size_t elem)
{
    if (need <= *alloc)
        return p;
    size_t n = *alloc ? *alloc : 64;
    while (n < need)
        n *= 2;
    p = realloc(p, n * elem);
    if (!p)
        abort();
    *alloc = n;
    return p;
}

static void log_add(log_t *l, const char *raw, size_t raw_len,
                    const char *data, size_t data_len, int has_data)
{
    l->ev = grow(l->ev, &l->ev_alloc, l->n + 1, sizeof *l->ev);
    l->raw = grow(l->raw, &l->raw_alloc, l->raw_len + raw_len + 1, 1);
    l->data = grow(l->data, &l->data_alloc, l->data_len + data_len + 1, 1);
    l->ev[l->n] = (ev_rec_t){ l->raw_len, raw_len, l->data_len, data_len, has_data };
    memcpy(l->raw + l->raw_len, raw, raw_len);
    memcpy(l->data + l->data_len, data, data_len);
    l->raw_len += raw_len;
    l->data_len += data_len;
    l->n++;
}

static void log_free(log_t *l)
{
    free(l->ev);
    free(l->raw);
    free(l->data);
}

/* memcmp that allows empty (possibly NULL) buffers. */
static int same_bytes(const char *a, const char *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

/* Events i of a and j of b are the same. */
static int same_event(const log_t *a, size_t i, const log_t *b, size_t j)
{
    const ev_rec_t *x = &a->ev[i], *y = &b->ev[j];
    return x->raw_len == y->raw_len && x->data_len == y->data_len &&
           x->has_data == y->has_data &&
           same_bytes(a->raw + x->raw_off, b->raw + y->raw_off, x->raw_len) &&
           same_bytes(a->data + x->data_off, b->data + y->data_off, x->data_len);
}

/* The first n events of a and b are the same (both have at least n). */
static int same_prefix(const log_t *a, const log_t *b, size_t n)
{
    if (a->n < n || b->n < n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!same_event(a, i, b, i))
            return 0;
    return 1;
}

static int on_event(void *ud, const sse_event_t *ev)
{
    log_t *l = ud;

    FUZZ_CHECK(ev->raw != NULL && ev->data != NULL);
    FUZZ_CHECK(ev->raw_len >= 1 && ev->raw_len <= l->raw_cap);
    FUZZ_CHECK(ev->raw[ev->raw_len - 1] == '\n' || ev->raw[ev->raw_len - 1] == '\r');
    FUZZ_CHECK(ev->data_len <= ev->raw_len);
    FUZZ_CHECK(ev->data[ev->data_len] == '\0');
    FUZZ_CHECK(ev->has_data == 0 || ev->has_data == 1);
    FUZZ_CHECK(ev->has_data || ev->data_len == 0);
    log_add(l, ev->raw, ev->raw_len, ev->data, ev->data_len, ev->has_data);
    return l->stop_at && l->n == l->stop_at ? FUZZ_STOP : 0;
}

/* What one parser did with the stream. */
typedef struct outcome {
    log_t log;
    int rc;                   /* after sse_finish if the feeds succeeded */
    size_t n_before_finish;   /* events delivered before sse_finish */
    size_t pending_before;    /* sse_pending before sse_finish */
    size_t pending_after;
} outcome_t;

static void run(const uint8_t *s, size_t len, const uint8_t *sizes, size_t n_sizes,
                size_t max_line, size_t stop_at, outcome_t *o)
{
    sse_parser_t *p;
    size_t off = 0, k = 0, zeros = 0;

    memset(o, 0, sizeof *o);
    o->log.raw_cap = 4 * max_line + 4;
    o->log.stop_at = stop_at;
    p = sse_new(max_line, on_event, &o->log);
    FUZZ_CHECK(p != NULL);
    while (o->rc == 0 && (off < len || (sizes && k == 0))) {
        size_t n = sizes ? sizes[k++ % n_sizes] : len - off;
        if (n == 0 && ++zeros >= n_sizes)
            n = 1;                    /* every size is 0: make progress */
        if (n)
            zeros = 0;
        if (n > len - off)
            n = len - off;
        char *piece = fuzz_dup(s + off, n, 0);
        o->rc = sse_feed(p, piece, n);
        free(piece);
        off += n;
        if (!sizes)
            break;
    }
    o->n_before_finish = o->log.n;
    if (o->rc == 0) {
        o->pending_before = sse_pending(p);
        o->rc = sse_finish(p);
        o->pending_after = sse_pending(p);
    }
    if (o->rc != 0) {                 /* a stopped parser stays stopped */
        FUZZ_CHECK(sse_feed(p, "data: x\n\n", 9) == o->rc);
        FUZZ_CHECK(sse_finish(p) == o->rc);
    }
    sse_free(p);
}

/* The reference: the whole input parsed line by line, caps ignored but noted. */
typedef struct ref {
    log_t log;
    size_t n_ok;              /* events that end before the first cap breach */
    int breach;               /* some line or event is over its cap */
    int held_last;            /* the last event ends in a lone \r at the very end */
    size_t tail;              /* bytes after the last complete event */
} ref_t;

static void reference(const uint8_t *in, size_t len, size_t max_line, ref_t *r)
{
    const char *s = (const char *)in;
    size_t pos = 0, ev_start = 0, raw_cap = 4 * max_line + 4;
    char *data = malloc(len + 1);
    size_t dlen = 0;
    int has_data = 0, first = 1, breach_ev = 0;

    if (!data)
        abort();
    memset(r, 0, sizeof *r);
    while (pos < len) {
        size_t j = pos;
        while (j < len && s[j] != '\n' && s[j] != '\r')
            j++;
        if (j - pos > max_line)
            breach_ev = 1;
        if (j == len)
            break;                    /* unterminated: stays pending */
        size_t te = (s[j] == '\r' && j + 1 < len && s[j + 1] == '\n') ? j + 2 : j + 1;
        const char *l = s + pos;
        size_t n = j - pos;
        if (first) {
            first = 0;
            if (n >= 3 && memcmp(l, "\xEF\xBB\xBF", 3) == 0) {
                l += 3;
                n -= 3;
            }
        }
        pos = te;
        if (n == 0) {
            if (te - ev_start > raw_cap)
                breach_ev = 1;
            if (breach_ev && !r->breach) {
                r->breach = 1;
                r->n_ok = r->log.n;
            }
            log_add(&r->log, s + ev_start, te - ev_start, data,
                    has_data ? dlen - 1 : 0, has_data);
            r->held_last = s[j] == '\r' && j + 1 == len;
            ev_start = te;
            dlen = 0;
            has_data = 0;
            breach_ev = 0;
            continue;
        }
        r->held_last = 0;
        if (l[0] == ':')
            continue;
        const char *colon = memchr(l, ':', n);
        size_t name_len = colon ? (size_t)(colon - l) : n;
        if (name_len != 4 || memcmp(l, "data", 4) != 0)
            continue;
        const char *v = colon ? colon + 1 : l + n;
        size_t vlen = (size_t)(l + n - v);
        if (vlen > 0 && v[0] == ' ') {
            v++;
            vlen--;
        }
        memcpy(data + dlen, v, vlen);
        dlen += vlen;
        data[dlen++] = '\n';
        has_data = 1;
    }
    r->tail = len - ev_start;
    if (r->tail > raw_cap)
        breach_ev = 1;
    if (r->tail)
        r->held_last = 0;
    if (breach_ev && !r->breach) {
        r->breach = 1;
        r->n_ok = r->log.n;
    }
    if (!r->breach)
        r->n_ok = r->log.n;
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    outcome_t whole, chunked;
    ref_t ref;

    if (size < 4)
        return 0;
    size_t max_line = 1 + ((size_t)data[0] << 8 | data[1]) % 4096;
    size_t stop_at = data[2] < 224 ? 0 : (size_t)data[2] - 223;
    size_t n_sizes = 1 + data[3] % 16;
    if (size < 4 + n_sizes)
        return 0;
    const uint8_t *sizes = data + 4, *s = data + 4 + n_sizes;
    size_t len = size - 4 - n_sizes;

    run(s, len, NULL, 1, max_line, stop_at, &whole);
    run(s, len, sizes, n_sizes, max_line, stop_at, &chunked);
    reference(s, len, max_line, &ref);

    /* chunking changes nothing */
    FUZZ_CHECK(whole.rc == chunked.rc);
    FUZZ_CHECK(whole.log.n == chunked.log.n);
    FUZZ_CHECK(whole.n_before_finish == chunked.n_before_finish);
    FUZZ_CHECK(same_prefix(&whole.log, &chunked.log, whole.log.n));

    const outcome_t *o = &whole;
    if (o->rc == 0) {
        FUZZ_CHECK(!ref.breach);
        FUZZ_CHECK(o->log.n == ref.log.n);
        FUZZ_CHECK(same_prefix(&o->log, &ref.log, ref.log.n));
        FUZZ_CHECK(o->n_before_finish == ref.log.n - (size_t)ref.held_last);
        /* raw bytes are the input, in order; the rest is pending */
        FUZZ_CHECK(o->log.raw_len <= len);
        FUZZ_CHECK(same_bytes(o->log.raw, (const char *)s, o->log.raw_len));
        FUZZ_CHECK(o->log.raw_len + o->pending_after == len);
        FUZZ_CHECK(o->pending_after == ref.tail);
        size_t raw_before = 0;
        for (size_t i = 0; i < o->n_before_finish; i++)
            raw_before += o->log.ev[i].raw_len;
        FUZZ_CHECK(raw_before + o->pending_before == len);
        FUZZ_CHECK(chunked.pending_before == o->pending_before);
        FUZZ_CHECK(chunked.pending_after == o->pending_after);
    } else if (o->rc == SSE_ERR_LINE_TOO_LONG) {
        FUZZ_CHECK(ref.breach);
        FUZZ_CHECK(o->log.n == ref.n_ok);
        FUZZ_CHECK(same_prefix(&o->log, &ref.log, ref.n_ok));
    } else {
        FUZZ_CHECK(o->rc == FUZZ_STOP);
        FUZZ_CHECK(stop_at && o->log.n == stop_at && stop_at <= ref.n_ok);
        FUZZ_CHECK(same_prefix(&o->log, &ref.log, stop_at));
    }

    log_free(&whole.log);
    log_free(&chunked.log);
    log_free(&ref.log);
    return 0;
}
