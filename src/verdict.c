/* verdict: what a finished transfer comes to (see verdict.h). Every branch
 * here is a row of the README's failure table. */
#include "verdict.h"
#include <stdio.h>
#include <string.h>

/* No usage to trust: the prompt estimate of admission plus the completion
 * tokens counted from what was seen. */
static void estimate(const verdict_facts_t *f, verdict_t *o, int64_t completion)
{
    o->usage.prompt = f->est_prompt_tokens;
    o->usage.completion = completion;
    o->usage.cached = 0;
    o->charge = cost_of(f->rate, &o->usage);
    o->state = LEDGER_ESTIMATED;
}

static void settle(const verdict_facts_t *f, verdict_t *o, const usage_t *u)
{
    o->usage = *u;
    o->charge = cost_of(f->rate, u);
    o->state = LEDGER_SETTLED;
}

/* No complete reply: nothing was delivered, nothing is charged. */
static void net_error(verdict_net_t net, verdict_t *o)
{
    o->status = 502;
    o->err_type = "upstream_error";
    switch (net) {
    case VERDICT_NET_TIMEOUT:
        o->status = 504;
        o->err_msg = "the upstream did not answer within upstream.timeout_s";
        o->err_type = "upstream_timeout";
        break;
    case VERDICT_NET_UNREACHABLE:
        o->err_msg = "the upstream is unreachable";
        o->err_type = "upstream_unreachable";
        break;
    case VERDICT_NET_TLS:
        o->err_msg = "the upstream's TLS handshake failed: its certificate is not trusted "
                     "(see upstream.ca_file) or TLS could not be agreed";
        o->err_type = "upstream_unreachable";
        break;
    case VERDICT_NET_TOO_LARGE:
        o->err_msg = "the upstream's reply is larger than pinmeter accepts";
        break;
    default:
        o->err_msg = "the upstream connection failed before a complete reply";
        break;
    }
}

/* A buffered reply that arrived whole. */
static void judge_reply(const verdict_facts_t *f, verdict_t *o)
{
    o->status = (int)f->status;
    usage_info_t ui;
    int rc = usage_parse(f->body ? f->body : "", f->body ? f->body_len : 0, &ui);
    if (rc == USAGE_OK && ui.id[0] && !o->upstream_id[0])
        snprintf(o->upstream_id, sizeof o->upstream_id, "%s", ui.id);
    if (f->status < 200 || f->status >= 300) {
        /* Passed through as it came; an error without usage costs nothing.
         * An empty error body becomes a JSON error the client can parse. */
        if (!f->body || f->body_len == 0) {
            o->err_type = "upstream_error";
            o->err_msg = "the upstream answered with an error status and no body";
        }
        if (rc == USAGE_OK && ui.has_usage) settle(f, o, &ui.usage);
        o->account_exhausted = f->status == 402;
        return;
    }
    if (rc == USAGE_NOT_JSON) {
        o->status = 502;
        o->err_type = "upstream_malformed";
        o->err_msg = "the upstream sent a reply that is not valid JSON";
    } else if (rc == USAGE_BAD) {
        /* Counts cannot be trusted: hold the reservation as the charge. */
        o->status = 502;
        o->err_type = "upstream_malformed";
        o->err_msg = "the upstream reported invalid token usage";
        o->usage.prompt = f->est_prompt_tokens;
        o->charge = f->reserved;
        o->state = LEDGER_ESTIMATED;
    } else if (!ui.has_usage) {
        estimate(f, o, usage_estimate_completion(ui.content_bytes, 0));
    } else {
        settle(f, o, &ui.usage);
    }
}

void verdict_chat(const verdict_facts_t *f, verdict_t *o)
{
    memset(o, 0, sizeof *o);
    o->state = LEDGER_FAILED;
    snprintf(o->upstream_id, sizeof o->upstream_id, "%s", f->upstream_id ? f->upstream_id : "");
    if (f->stream_mode) {
        o->status = 200;
        if (f->saw_usage && !f->usage_bad) settle(f, o, &f->usage);
        else estimate(f, o, usage_estimate_completion(f->content_bytes, f->content_deltas));
        o->cut_stream = f->net != VERDICT_NET_OK || f->aborted || !f->saw_done ||
                        f->stream_error;
    } else if (f->aborted) {
        o->status = 499;               /* cut before its headers: the client left, or stop */
        estimate(f, o, 0);
    } else if (f->net != VERDICT_NET_OK) {
        net_error(f->net, o);
    } else {
        judge_reply(f, o);
    }
    o->ledger_status = f->client_gone && !f->stream_mode ? 499 : o->status;
}

void verdict_forward(verdict_net_t net, long status, verdict_t *o)
{
    memset(o, 0, sizeof *o);
    o->state = LEDGER_FAILED;
    o->status = (int)status;
    if (net != VERDICT_NET_OK) {
        o->status = net == VERDICT_NET_TIMEOUT ? 504 : 502;
        o->err_type = net == VERDICT_NET_TIMEOUT ? "upstream_timeout" : "upstream_unreachable";
        o->err_msg = net == VERDICT_NET_TLS ? "the upstream's TLS handshake failed (see "
                     "upstream.ca_file)" : "the upstream could not be reached";
    }
    o->ledger_status = o->status;
}
