/* verdict: one test per row of the README's failure table that a finished
 * transfer can land in, with exact charges. Rate used throughout: input 3,
 * output 15, cache read 0.3 credits per 1M tokens (3e9 / 15e9 / 3e8 nanos). */
#include <string.h>
#include "t.h"
#include "verdict.h"

static const rate_t RATE = { 3000000000LL, 15000000000LL, 300000000LL };
#define EST_PROMPT 40            /* admission's ceil(bytes / 3) */
#define RESERVED 61560000LL      /* 40 x 3e9 + 4096 x 15e9, / 1e6 */

static verdict_facts_t reply(long status, const char *body)
{
    verdict_facts_t f = {0};
    f.net = VERDICT_NET_OK;
    f.status = status;
    f.body = body;
    f.body_len = body ? strlen(body) : 0;
    f.upstream_id = "";
    f.est_prompt_tokens = EST_PROMPT;
    f.reserved = RESERVED;
    f.rate = &RATE;
    return f;
}

static verdict_facts_t stream(void)
{
    verdict_facts_t f = reply(200, NULL);
    f.stream_mode = 1;
    return f;
}

static verdict_facts_t no_reply(verdict_net_t net)
{
    verdict_facts_t f = reply(0, NULL);
    f.net = net;
    return f;
}

#define OK_BODY "{\"id\":\"chatcmpl-1\",\"choices\":[{\"message\":{\"content\":\"hi\"}}]," \
    "\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":50," \
    "\"prompt_tokens_details\":{\"cached_tokens\":20}}}"
/* (80 x 3e9 + 20 x 3e8 + 50 x 15e9) / 1e6 */
#define OK_CHARGE 996000LL

static void expect_failed(const verdict_t *v, int status, const char *type)
{
    T_EQ_INT(v->status, status);
    T_EQ_INT(v->ledger_status, status);
    T_EQ_STR(v->err_type, type);
    T_CHECK(v->err_msg != NULL);
    T_EQ_INT(v->state, LEDGER_FAILED);
    T_EQ_INT(v->charge, 0);
    T_EQ_INT(v->usage.prompt + v->usage.completion + v->usage.cached, 0);
}

static void test_settled_reply(void)
{
    verdict_facts_t f = reply(200, OK_BODY);
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 200);
    T_EQ_INT(v.ledger_status, 200);
    T_CHECK(v.err_msg == NULL);
    T_EQ_INT(v.state, LEDGER_SETTLED);
    T_EQ_INT(v.usage.prompt, 100);
    T_EQ_INT(v.usage.completion, 50);
    T_EQ_INT(v.usage.cached, 20);
    T_EQ_INT(v.charge, OK_CHARGE);
    T_EQ_STR(v.upstream_id, "chatcmpl-1");
    T_EQ_INT(v.account_exhausted, 0);
}

static void test_header_id_wins(void)
{
    verdict_facts_t f = reply(200, OK_BODY);
    f.upstream_id = "req-9";
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_STR(v.upstream_id, "req-9");
}

/* upstream refuses the connection / cannot be resolved: 502, nothing */
static void test_unreachable(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_UNREACHABLE);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 502, "upstream_unreachable");
}

/* the TLS handshake fails (an untrusted certificate): 502 saying so, nothing */
static void test_tls_failed(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_TLS);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 502, "upstream_unreachable");
    T_CHECK(strstr(v.err_msg, "upstream.ca_file") != NULL);
}

/* upstream resets or closes before a complete non-stream reply */
static void test_reset_before_reply(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_FAILED);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 502, "upstream_error");
}

/* a reply over the body cap */
static void test_reply_too_large(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_TOO_LARGE);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 502, "upstream_error");
    T_CHECK(strstr(v.err_msg, "larger") != NULL);
}

/* upstream silent past upstream.timeout_s: 504 */
static void test_timeout(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_TIMEOUT);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 504, "upstream_timeout");
}

/* reply is not JSON, or truncated JSON: 502 upstream_malformed, nothing */
static void test_not_json(void)
{
    const char *bodies[] = { "<html>oops</html>", "{\"id\":\"x\",\"usage\":{\"prompt_tokens\":1" };
    for (int i = 0; i < 2; i++) {
        verdict_facts_t f = reply(200, bodies[i]);
        verdict_t v;
        verdict_chat(&f, &v);
        expect_failed(&v, 502, "upstream_malformed");
    }
}

/* reply without usage: 200, estimate = prompt estimate + completion from
 * the content: "hello world!" is 12 bytes -> ceil(12 / 3) = 4 tokens */
static void test_no_usage_estimated(void)
{
    verdict_facts_t f = reply(200, "{\"id\":\"c2\",\"choices\":[{\"message\":"
                                   "{\"content\":\"hello world!\"}}]}");
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 200);
    T_CHECK(v.err_msg == NULL);
    T_EQ_INT(v.state, LEDGER_ESTIMATED);
    T_EQ_INT(v.usage.prompt, EST_PROMPT);
    T_EQ_INT(v.usage.completion, 4);
    T_EQ_INT(v.usage.cached, 0);
    T_EQ_INT(v.charge, 180000);          /* (40 x 3e9 + 4 x 15e9) / 1e6 */
}

/* usage negative, fractional or over 10M tokens: 502, charged the reservation */
static void test_bad_usage_charged_reservation(void)
{
    const char *bodies[] = {
        "{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":3}}",
        "{\"usage\":{\"prompt_tokens\":5.5,\"completion_tokens\":3}}",
        "{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":10000001}}",
    };
    for (int i = 0; i < 3; i++) {
        verdict_facts_t f = reply(200, bodies[i]);
        verdict_t v;
        verdict_chat(&f, &v);
        T_EQ_INT(v.status, 502);
        T_EQ_STR(v.err_type, "upstream_malformed");
        T_EQ_INT(v.state, LEDGER_ESTIMATED);
        T_EQ_INT(v.charge, RESERVED);
        T_EQ_INT(v.usage.prompt, EST_PROMPT);
        T_EQ_INT(v.usage.completion, 0);
    }
}

/* upstream 4xx/5xx: passed through, nothing charged */
static void test_error_status_passed_through(void)
{
    verdict_facts_t f = reply(500, "{\"error\":{\"message\":\"boom\"}}");
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 500);
    T_CHECK(v.err_msg == NULL);          /* the upstream's own body goes to the client */
    T_EQ_INT(v.state, LEDGER_FAILED);
    T_EQ_INT(v.charge, 0);
    T_EQ_INT(v.account_exhausted, 0);
}

/* ... with an empty body: a JSON error with the same status */
static void test_error_status_empty_body(void)
{
    verdict_facts_t f = reply(503, NULL);
    verdict_t v;
    verdict_chat(&f, &v);
    expect_failed(&v, 503, "upstream_error");
}

/* an error that reports usage is charged what it reports */
static void test_error_status_with_usage(void)
{
    verdict_facts_t f = reply(400, "{\"error\":{},\"usage\":{\"prompt_tokens\":10,"
                                   "\"completion_tokens\":0}}");
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 400);
    T_EQ_INT(v.state, LEDGER_SETTLED);
    T_EQ_INT(v.charge, 30000);           /* 10 x 3e9 / 1e6 */
}

/* upstream 402: passed through, nothing charged, the account is exhausted */
static void test_upstream_402(void)
{
    verdict_facts_t f = reply(402, "{\"error\":{\"message\":\"no credits\"}}");
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 402);
    T_EQ_INT(v.state, LEDGER_FAILED);
    T_EQ_INT(v.charge, 0);
    T_EQ_INT(v.account_exhausted, 1);
}

/* client hangs up before a non-stream reply: still charged exactly; the
 * ledger records 499 */
static void test_client_gone_before_reply(void)
{
    verdict_facts_t f = reply(200, OK_BODY);
    f.client_gone = 1;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.ledger_status, 499);
    T_EQ_INT(v.state, LEDGER_SETTLED);
    T_EQ_INT(v.charge, OK_CHARGE);
}

/* a stream request whose client left before the upstream's headers: cut,
 * charged the prompt estimate */
static void test_stream_client_gone_before_headers(void)
{
    verdict_facts_t f = no_reply(VERDICT_NET_FAILED);
    f.aborted = 1;
    f.client_gone = 1;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 499);
    T_EQ_INT(v.ledger_status, 499);
    T_EQ_INT(v.state, LEDGER_ESTIMATED);
    T_EQ_INT(v.usage.prompt, EST_PROMPT);
    T_EQ_INT(v.usage.completion, 0);
    T_EQ_INT(v.charge, 120000);          /* 40 x 3e9 / 1e6 */
}

/* a whole stream with usage and [DONE]: settled, not cut */
static void test_stream_settled(void)
{
    verdict_facts_t f = stream();
    f.saw_done = 1;
    f.saw_usage = 1;
    f.usage = (usage_t){ 100, 50, 20 };
    f.content_bytes = 200;
    f.content_deltas = 50;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.status, 200);
    T_EQ_INT(v.ledger_status, 200);
    T_EQ_INT(v.state, LEDGER_SETTLED);
    T_EQ_INT(v.charge, OK_CHARGE);
    T_EQ_INT(v.cut_stream, 0);
}

/* a stream stalls, resets or is cut mid-way: the client's stream is cut,
 * charged prompt estimate + max(deltas, ceil(bytes / 3)) = 40 + 7 */
static void test_stream_cut_midway(void)
{
    verdict_net_t nets[] = { VERDICT_NET_FAILED, VERDICT_NET_TIMEOUT };
    for (int i = 0; i < 2; i++) {
        verdict_facts_t f = stream();
        f.net = nets[i];
        f.content_bytes = 20;            /* ceil(20 / 3) = 7 */
        f.content_deltas = 5;
        verdict_t v;
        verdict_chat(&f, &v);
        T_EQ_INT(v.status, 200);
        T_EQ_INT(v.cut_stream, 1);
        T_EQ_INT(v.state, LEDGER_ESTIMATED);
        T_EQ_INT(v.usage.completion, 7);
        T_EQ_INT(v.charge, 225000);      /* (40 x 3e9 + 7 x 15e9) / 1e6 */
    }
}

/* a stream that ended cleanly at the socket but without [DONE] is cut too */
static void test_stream_without_done(void)
{
    verdict_facts_t f = stream();
    f.content_deltas = 9;                /* more deltas than bytes / 3 */
    f.content_bytes = 9;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.cut_stream, 1);
    T_EQ_INT(v.usage.completion, 9);
    T_EQ_INT(v.charge, 255000);          /* (40 x 3e9 + 9 x 15e9) / 1e6 */
}

/* an SSE line longer than 1 MiB: the parser fails, the stream is cut */
static void test_stream_line_too_long(void)
{
    verdict_facts_t f = stream();
    f.net = VERDICT_NET_TOO_LARGE;       /* the write callback refused the bytes */
    f.stream_error = 1;
    f.content_bytes = 3;
    f.content_deltas = 1;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.cut_stream, 1);
    T_EQ_INT(v.state, LEDGER_ESTIMATED);
    T_EQ_INT(v.charge, 135000);          /* (40 x 3e9 + 1 x 15e9) / 1e6 */
}

/* client hangs up mid-stream: usage if it had arrived, else the estimate */
static void test_stream_client_gone(void)
{
    verdict_facts_t f = stream();
    f.aborted = f.client_gone = 1;
    f.net = VERDICT_NET_FAILED;
    f.saw_usage = 1;
    f.usage = (usage_t){ 100, 50, 20 };
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.state, LEDGER_SETTLED);
    T_EQ_INT(v.charge, OK_CHARGE);
    T_EQ_INT(v.ledger_status, 200);      /* the stream had started: 200 */
    T_EQ_INT(v.cut_stream, 1);

    f.saw_usage = 0;
    f.content_bytes = 30;
    f.content_deltas = 4;
    verdict_chat(&f, &v);
    T_EQ_INT(v.state, LEDGER_ESTIMATED);
    T_EQ_INT(v.usage.completion, 10);
    T_EQ_INT(v.charge, 270000);          /* (40 x 3e9 + 10 x 15e9) / 1e6 */
}

/* an event with impossible usage: the stream's counts are not trusted */
static void test_stream_bad_usage(void)
{
    verdict_facts_t f = stream();
    f.saw_done = 1;
    f.saw_usage = 1;
    f.usage_bad = 1;
    f.usage = (usage_t){ 100, 50, 0 };
    f.content_bytes = 6;
    verdict_t v;
    verdict_chat(&f, &v);
    T_EQ_INT(v.cut_stream, 0);
    T_EQ_INT(v.state, LEDGER_ESTIMATED);
    T_EQ_INT(v.usage.completion, 2);
    T_EQ_INT(v.charge, 150000);          /* (40 x 3e9 + 2 x 15e9) / 1e6 */
}

/* the models list and passthrough balance: the upstream's status, or 504/502 */
static void test_forward(void)
{
    verdict_t v;
    verdict_forward(VERDICT_NET_OK, 200, &v);
    T_EQ_INT(v.status, 200);
    T_CHECK(v.err_msg == NULL);
    verdict_forward(VERDICT_NET_OK, 401, &v);
    T_EQ_INT(v.status, 401);
    T_CHECK(v.err_msg == NULL);
    verdict_forward(VERDICT_NET_TIMEOUT, 0, &v);
    T_EQ_INT(v.status, 504);
    T_EQ_STR(v.err_type, "upstream_timeout");
    verdict_net_t others[] = { VERDICT_NET_UNREACHABLE, VERDICT_NET_FAILED, VERDICT_NET_TOO_LARGE,
                               VERDICT_NET_TLS };
    for (int i = 0; i < 4; i++) {
        verdict_forward(others[i], 0, &v);
        T_EQ_INT(v.status, 502);
        T_EQ_STR(v.err_type, "upstream_unreachable");
        T_EQ_INT(v.charge, 0);
    }
}

int main(void)
{
    T_RUN(test_settled_reply);
    T_RUN(test_header_id_wins);
    T_RUN(test_unreachable);
    T_RUN(test_tls_failed);
    T_RUN(test_reset_before_reply);
    T_RUN(test_reply_too_large);
    T_RUN(test_timeout);
    T_RUN(test_not_json);
    T_RUN(test_no_usage_estimated);
    T_RUN(test_bad_usage_charged_reservation);
    T_RUN(test_error_status_passed_through);
    T_RUN(test_error_status_empty_body);
    T_RUN(test_error_status_with_usage);
    T_RUN(test_upstream_402);
    T_RUN(test_client_gone_before_reply);
    T_RUN(test_stream_client_gone_before_headers);
    T_RUN(test_stream_settled);
    T_RUN(test_stream_cut_midway);
    T_RUN(test_stream_without_done);
    T_RUN(test_stream_line_too_long);
    T_RUN(test_stream_client_gone);
    T_RUN(test_stream_bad_usage);
    T_RUN(test_forward);
    return t_summary("verdict");
}
