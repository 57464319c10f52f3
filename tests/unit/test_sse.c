/* Unit tests for sse: a realistic OpenAI stream fed at every two-piece split
 * and byte by byte must give the same events, and the events' raw bytes
 * (plus pending bytes) must add up to the input exactly. */
#include "sse.h"
#include "t.h"

#include <stdlib.h>

#define MAX_EV 64
#define BUF_SZ 8192

/* Everything the callback saw, copied out (pointers die after the call). */
typedef struct collect {
    int n;
    char raw[BUF_SZ];       /* all raw bytes concatenated */
    size_t raw_len;
    size_t raw_lens[MAX_EV];
    char data[MAX_EV][512];
    size_t data_lens[MAX_EV];
    int has_data[MAX_EV];
    int stop_at;            /* return 99 from the callback for this event index */
} collect_t;

static int on_event(void *ud, const sse_event_t *ev)
{
    collect_t *c = ud;
    if (c->n >= MAX_EV || c->raw_len + ev->raw_len > BUF_SZ ||
        ev->data_len >= sizeof c->data[0] || ev->data[ev->data_len] != '\0')
        return -100;
    memcpy(c->raw + c->raw_len, ev->raw, ev->raw_len);
    c->raw_len += ev->raw_len;
    c->raw_lens[c->n] = ev->raw_len;
    memcpy(c->data[c->n], ev->data, ev->data_len + 1);
    c->data_lens[c->n] = ev->data_len;
    c->has_data[c->n] = ev->has_data;
    c->n++;
    return c->n - 1 == c->stop_at ? 99 : 0;
}

/* Feeds s in pieces: split at cut (two pieces) or, with cut == (size_t)-1,
 * byte by byte; each piece is a heap copy of exactly its length so ASan sees
 * over-reads. Calls sse_finish when finish. Returns the last non-zero rc. */
static int run(const char *s, size_t len, size_t cut, size_t max_line,
               int finish, collect_t *c, size_t *pending)
{
    sse_parser_t *p = sse_new(max_line, on_event, c);
    int rc = 0;
    if (!p)
        return -1000;
    size_t step = cut == (size_t)-1 ? 1 : 0;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = step ? 1 : (off < cut ? cut - off : len - off);
        char *piece = malloc(n ? n : 1);
        memcpy(piece, s + off, n);
        rc = sse_feed(p, piece, n);
        free(piece);
        off += n;
    }
    if (rc == 0 && finish)
        rc = sse_finish(p);
    *pending = sse_pending(p);
    sse_free(p);
    return rc;
}

static int same_events(const collect_t *a, const collect_t *b)
{
    if (a->n != b->n || a->raw_len != b->raw_len ||
        memcmp(a->raw, b->raw, a->raw_len) != 0)
        return 0;
    for (int i = 0; i < a->n; i++)
        if (a->raw_lens[i] != b->raw_lens[i] || a->has_data[i] != b->has_data[i] ||
            a->data_lens[i] != b->data_lens[i] ||
            memcmp(a->data[i], b->data[i], a->data_lens[i]) != 0)
            return 0;
    return 1;
}

static const char OPENAI_STREAM[] =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n"
    ": OPENROUTER PROCESSING\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":"
    "[{\"index\":0,\"delta\":{\"content\":\" world\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"
    "data: [DONE]\n\n";

/* Rewrites every "\n" of src as eol. */
static size_t with_eol(const char *src, const char *eol, char *dst, size_t cap)
{
    size_t n = 0, el = strlen(eol);
    for (; *src; src++) {
        const char *add = *src == '\n' ? eol : src;
        size_t k = *src == '\n' ? el : 1;
        if (n + k >= cap)
            return 0;
        memcpy(dst + n, add, k);
        n += k;
    }
    dst[n] = '\0';
    return n;
}

/* Checks the OpenAI stream under one line ending at every chunking. */
static void check_stream_eol(const char *eol)
{
    static char in[BUF_SZ];
    static collect_t ref, got;
    size_t len = with_eol(OPENAI_STREAM, eol, in, sizeof in), pend;
    int need_finish = strcmp(eol, "\r") == 0;

    memset(&ref, 0, sizeof ref);
    ref.stop_at = -1;
    T_EQ_INT(run(in, len, len, 4096, 1, &ref, &pend), 0);
    T_EQ_INT(pend, 0);
    T_EQ_INT(ref.n, 6);
    T_EQ_INT(ref.raw_len, len);
    T_CHECK(memcmp(ref.raw, in, len) == 0);
    T_CHECK(ref.has_data[0] && !ref.has_data[1]);
    T_EQ_INT(ref.data_lens[1], 0);
    T_EQ_STR(ref.data[2], "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
             "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"usage\":null}");
    T_CHECK(strstr(ref.data[4], "\"choices\":[],\"usage\":{\"prompt_tokens\":9") != NULL);
    T_EQ_STR(ref.data[5], "[DONE]");
    T_EQ_INT(ref.raw_lens[5], strlen("data: [DONE]") + 2 * strlen(eol));

    for (size_t cut = 0; cut <= len; cut++) {
        memset(&got, 0, sizeof got);
        got.stop_at = -1;
        int rc = run(in, len, cut, 4096, 1, &got, &pend);
        if (rc != 0 || pend != 0 || !same_events(&ref, &got)) {
            fprintf(stderr, "  eol %d bytes, split at %zu differs\n",
                    (int)strlen(eol), cut);
            T_CHECK(0);
            return;
        }
    }
    memset(&got, 0, sizeof got);
    got.stop_at = -1;
    T_EQ_INT(run(in, len, (size_t)-1, 4096, 1, &got, &pend), 0);
    T_EQ_INT(pend, 0);
    T_CHECK(same_events(&ref, &got));

    /* Without sse_finish only a lone-\r stream keeps its last event back,
     * and then it is counted as pending, so raw + pending is still the input. */
    memset(&got, 0, sizeof got);
    got.stop_at = -1;
    T_EQ_INT(run(in, len, (size_t)-1, 4096, 0, &got, &pend), 0);
    T_EQ_INT(got.n, need_finish ? 5 : 6);
    T_EQ_INT(got.raw_len + pend, len);
}

static void test_openai_stream_lf(void) { check_stream_eol("\n"); }
static void test_openai_stream_crlf(void) { check_stream_eol("\r\n"); }
static void test_openai_stream_cr(void) { check_stream_eol("\r"); }

static void test_multiline_and_fields(void)
{
    static collect_t c;
    size_t pend;
    const char *s =
        "event: message\nid: 7\nretry: 100\ndata: a\ndata:b\ndata:  c\n: note\n\n"
        "data\n\n"
        "data:\n\n"
        "datax: nope\nDATA: nope\n\n"
        "data: x:y\r\ndata: z\rdata: w\n\n";
    memset(&c, 0, sizeof c);
    c.stop_at = -1;
    T_EQ_INT(run(s, strlen(s), 0, 64, 0, &c, &pend), 0);
    T_EQ_INT(c.n, 5);
    T_EQ_STR(c.data[0], "a\nb\n c");   /* only one leading space is stripped */
    T_CHECK(c.has_data[1] && c.data_lens[1] == 0);   /* "data" alone: empty value */
    T_CHECK(c.has_data[2] && c.data_lens[2] == 0);
    T_CHECK(!c.has_data[3]);             /* field names are case-sensitive */
    T_EQ_STR(c.data[4], "x:y\nz\nw");   /* mixed line endings in one event */
    T_EQ_INT(c.raw_len, strlen(s));
    T_EQ_INT(pend, 0);
}

static void test_comments_and_blank_lines(void)
{
    static collect_t c;
    size_t pend;
    const char *s = ": keep-alive\n\n\n:ping\ndata: x\n\n";
    memset(&c, 0, sizeof c);
    c.stop_at = -1;
    T_EQ_INT(run(s, strlen(s), (size_t)-1, 64, 0, &c, &pend), 0);
    T_EQ_INT(c.n, 3);
    T_CHECK(!c.has_data[0] && !c.has_data[1]);
    T_EQ_INT(c.raw_lens[0], strlen(": keep-alive\n\n"));
    T_EQ_INT(c.raw_lens[1], 1);          /* a stray blank line is its own event */
    T_EQ_STR(c.data[2], "x");
}

static void test_bom_and_pending(void)
{
    static collect_t c;
    size_t pend;
    const char *s = "\xEF\xBB\xBF" "data: hi\n\ndata: partial\ndata: mor";
    memset(&c, 0, sizeof c);
    c.stop_at = -1;
    T_EQ_INT(run(s, strlen(s), 2, 64, 1, &c, &pend), 0);
    T_EQ_INT(c.n, 1);
    T_EQ_STR(c.data[0], "hi");
    T_EQ_INT(c.raw_lens[0], 3 + strlen("data: hi\n\n"));
    T_EQ_INT(pend, strlen("data: partial\ndata: mor"));
}

static void test_line_cap(void)
{
    static collect_t c;
    size_t pend;
    char s[64];

    /* exactly max_line bytes of line is fine, one more is not */
    memset(&c, 0, sizeof c);
    c.stop_at = -1;
    snprintf(s, sizeof s, "data: %010d\n\n", 1);  /* 16-byte line */
    T_EQ_INT(run(s, strlen(s), (size_t)-1, 16, 0, &c, &pend), 0);
    T_EQ_INT(c.n, 1);
    snprintf(s, sizeof s, "data: %011d\n\n", 1);  /* 17-byte line */
    T_EQ_INT(run(s, strlen(s), 0, 16, 0, &c, &pend), SSE_ERR_LINE_TOO_LONG);
    T_EQ_INT(run(s, strlen(s), (size_t)-1, 16, 0, &c, &pend), SSE_ERR_LINE_TOO_LONG);
    /* no terminator ever: still refused once the cap is passed */
    memset(s, 'a', sizeof s);
    T_EQ_INT(run(s, sizeof s, (size_t)-1, 16, 0, &c, &pend), SSE_ERR_LINE_TOO_LONG);
    T_EQ_INT(pend, 16);

    /* many short lines: the event cap (4x + 4) applies */
    char big[256];
    size_t n = 0;
    while (n + 8 < sizeof big) {
        memcpy(big + n, "data: x\n", 8);
        n += 8;
    }
    T_EQ_INT(run(big, n, 0, 16, 0, &c, &pend), SSE_ERR_LINE_TOO_LONG);
    T_CHECK(pend <= 4 * 16 + 4);

    /* after an error the parser keeps refusing */
    sse_parser_t *p = sse_new(4, on_event, &c);
    T_CHECK(p != NULL);
    T_EQ_INT(sse_feed(p, "data: long\n\n", 12), SSE_ERR_LINE_TOO_LONG);
    T_EQ_INT(sse_feed(p, "\n", 1), SSE_ERR_LINE_TOO_LONG);
    sse_free(p);
    T_CHECK(sse_new(0, on_event, &c) == NULL);
    T_CHECK(sse_new(16, NULL, &c) == NULL);
}

static void test_callback_stops(void)
{
    static collect_t c;
    const char *s = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    memset(&c, 0, sizeof c);
    c.stop_at = 1;
    sse_parser_t *p = sse_new(64, on_event, &c);
    T_EQ_INT(sse_feed(p, s, strlen(s)), 99);
    T_EQ_INT(c.n, 2);
    T_EQ_INT(sse_feed(p, s, strlen(s)), 99);
    T_EQ_INT(c.n, 2);
    sse_free(p);
}

/* A \r\n split across feeds in a data line must not end the event early. */
static void test_crlf_split_mid_event(void)
{
    static collect_t c;
    memset(&c, 0, sizeof c);
    c.stop_at = -1;
    sse_parser_t *p = sse_new(64, on_event, &c);
    T_EQ_INT(sse_feed(p, "data: a\r", 8), 0);
    T_EQ_INT(sse_feed(p, "\n", 1), 0);
    T_EQ_INT(sse_feed(p, "data: b\r\n\r", 10), 0);
    T_EQ_INT(c.n, 0);                    /* held: a \n may still follow */
    T_EQ_INT(sse_pending(p), 19);
    T_EQ_INT(sse_feed(p, "\n", 1), 0);
    T_EQ_INT(c.n, 1);
    T_EQ_STR(c.data[0], "a\nb");
    T_EQ_INT(c.raw_lens[0], 20);
    T_EQ_INT(sse_pending(p), 0);
    sse_free(p);
}

int main(void)
{
    T_RUN(test_openai_stream_lf);
    T_RUN(test_openai_stream_crlf);
    T_RUN(test_openai_stream_cr);
    T_RUN(test_multiline_and_fields);
    T_RUN(test_comments_and_blank_lines);
    T_RUN(test_bom_and_pending);
    T_RUN(test_line_cap);
    T_RUN(test_callback_stops);
    T_RUN(test_crlf_split_mid_event);
    return t_summary("sse");
}
