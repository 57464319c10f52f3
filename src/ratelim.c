/* ratelim: sliding-window rate limits and the runaway guard (see ratelim.h).
 * A window holds RATELIM_BUCKETS buckets of width_s seconds each; its sum is
 * what fell in the last RATELIM_BUCKETS × width_s seconds, the current bucket
 * included. */
#include "ratelim.h"
#include <stdio.h>
#include <string.h>

static void win_init(ratelim_win_t *w, int width_s)
{
    memset(w, 0, sizeof *w);
    w->width_s = width_s;
}

void ratelim_init(ratelim_t *s)
{
    memset(s, 0, sizeof *s);
    win_init(&s->req, 1);
    win_init(&s->tok, 1);
    win_init(&s->spend_min, 1);
    win_init(&s->spend_hour, 60);
}

static int64_t bucket_of(const ratelim_win_t *w, int64_t now_ms)
{
    return now_ms / 1000 / w->width_s;
}

/* Moves the window on to now: buckets that left it are emptied. */
static void advance(ratelim_win_t *w, int64_t now_ms)
{
    int64_t idx = bucket_of(w, now_ms);
    if (idx <= w->head) return;
    if (idx - w->head >= RATELIM_BUCKETS) {
        memset(w->b, 0, sizeof w->b);
        w->sum = 0;
    } else {
        for (int64_t i = w->head + 1; i <= idx; i++) {
            int64_t *slot = &w->b[i % RATELIM_BUCKETS];
            w->sum -= *slot;
            *slot = 0;
        }
    }
    w->head = idx;
}

/* Adds v at time at_ms (at or before now_ms), if that is still in the window. */
static void win_add(ratelim_win_t *w, int64_t now_ms, int64_t at_ms, int64_t v)
{
    advance(w, now_ms);
    int64_t idx = bucket_of(w, at_ms);
    if (idx > w->head || idx <= w->head - RATELIM_BUCKETS) return;   /* not in the window */
    w->b[idx % RATELIM_BUCKETS] += v;
    w->sum += v;
}

/* Milliseconds from now until the window's sum is at most target (the
 * oldest buckets leaving first); 0 when it already is. */
static int64_t ms_until(const ratelim_win_t *w, int64_t now_ms, int64_t target)
{
    if (w->sum <= target) return 0;
    int64_t sum = w->sum, width_ms = (int64_t)w->width_s * 1000;
    for (int64_t k = 1; k <= RATELIM_BUCKETS; k++) {
        /* bucket head - RATELIM_BUCKETS + k leaves when bucket head + k begins */
        sum -= w->b[(w->head - RATELIM_BUCKETS + k + RATELIM_BUCKETS) % RATELIM_BUCKETS];
        if (sum <= target) return (w->head + k) * width_ms - now_ms;
    }
    return (w->head + RATELIM_BUCKETS) * width_ms - now_ms;
}

static int secs_up(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s > 86400 ? 86400 : (int)s;
}

/* Sets the refusal's wait: ms exactly (at least 1), and in whole seconds. */
static void wait_for(ratelim_verdict_t *v, int64_t ms)
{
    v->retry_after_ms = ms < 1 ? 1 : ms;
    v->retry_after_s = secs_up(ms);
}

ratelim_which_t ratelim_check(const ratelim_conf_t *c, ratelim_t *s, int64_t now_ms,
                            int64_t tokens, nanos_t reserve, ratelim_verdict_t *out)
{
    memset(out, 0, sizeof *out);
    advance(&s->req, now_ms);
    advance(&s->tok, now_ms);
    advance(&s->spend_min, now_ms);
    advance(&s->spend_hour, now_ms);
    if (c->max_inflight > 0 && s->inflight + 1 > c->max_inflight) {
        out->which = RATELIM_INFLIGHT;
        wait_for(out, 1000);             /* a request in flight ends when it ends */
    } else if (c->rpm > 0 && s->req.sum + 1 > c->rpm) {
        out->which = RATELIM_RPM;
        wait_for(out, ms_until(&s->req, now_ms, c->rpm - 1));
    } else if (c->tpm > 0 && s->tok.sum + tokens > c->tpm) {
        out->which = RATELIM_TPM;
        /* a request larger than the whole limit never fits: the window's length */
        wait_for(out, tokens > c->tpm ? 60000 : ms_until(&s->tok, now_ms, c->tpm - tokens));
    } else if (c->spend_minute > 0 && s->spend_min.sum + s->loaned + reserve > c->spend_minute) {
        out->which = RATELIM_SPEND_MINUTE;
        out->spent_in_window = s->spend_min.sum + s->loaned;
        out->limit = c->spend_minute;
        int64_t room = c->spend_minute - s->loaned - reserve;
        wait_for(out, room < 0 ? 60000 : ms_until(&s->spend_min, now_ms, room));
    } else if (c->spend_hour > 0 && s->spend_hour.sum + s->loaned + reserve > c->spend_hour) {
        out->which = RATELIM_SPEND_HOUR;
        out->spent_in_window = s->spend_hour.sum + s->loaned;
        out->limit = c->spend_hour;
        int64_t room = c->spend_hour - s->loaned - reserve;
        wait_for(out, room < 0 ? 3600000 : ms_until(&s->spend_hour, now_ms, room));
    }
    /* The headers count this request as taken when it fits; reset is the
     * time until there is room for one more such request. */
    int64_t took_req = out->which ? 0 : 1, took_tok = out->which ? 0 : tokens;
    if (c->rpm > 0) {
        out->limit_requests = c->rpm;
        out->remaining_requests = c->rpm - s->req.sum - took_req;
        if (out->remaining_requests < 0) out->remaining_requests = 0;
        out->reset_requests_ms = ms_until(&s->req, now_ms, c->rpm - 1 - took_req);
    }
    if (c->tpm > 0) {
        out->limit_tokens = c->tpm;
        out->remaining_tokens = c->tpm - s->tok.sum - took_tok;
        if (out->remaining_tokens < 0) out->remaining_tokens = 0;
        out->reset_tokens_ms = ms_until(&s->tok, now_ms, c->tpm - tokens - took_tok);
    }
    return out->which;
}

void ratelim_take(ratelim_t *s, int64_t now_ms, int64_t tokens, nanos_t reserve)
{
    win_add(&s->req, now_ms, now_ms, 1);
    win_add(&s->tok, now_ms, now_ms, tokens);
    s->inflight++;
    s->loaned += reserve;
}

void ratelim_settle(ratelim_t *s, int64_t admitted_ms, int64_t now_ms, int64_t tokens_taken,
                   int64_t tokens_actual, nanos_t reserve, nanos_t charge)
{
    win_add(&s->tok, now_ms, admitted_ms, tokens_actual - tokens_taken);
    if (s->inflight > 0) s->inflight--;
    s->loaned -= reserve;
    if (s->loaned < 0) s->loaned = 0;
    win_add(&s->spend_min, now_ms, now_ms, charge);
    win_add(&s->spend_hour, now_ms, now_ms, charge);
}

void ratelim_untake(ratelim_t *s, int64_t taken_ms, int64_t now_ms, int64_t tokens,
                   nanos_t reserve)
{
    win_add(&s->req, now_ms, taken_ms, -1);
    win_add(&s->tok, now_ms, taken_ms, -tokens);
    if (s->inflight > 0) s->inflight--;
    s->loaned -= reserve;
    if (s->loaned < 0) s->loaned = 0;
}

ratelim_verdict_t ratelim_tighter(const ratelim_verdict_t *a, const ratelim_verdict_t *b)
{
    ratelim_verdict_t o = *a;
    if (b->limit_requests && (!a->limit_requests || b->remaining_requests < a->remaining_requests)) {
        o.limit_requests = b->limit_requests;
        o.remaining_requests = b->remaining_requests;
        o.reset_requests_ms = b->reset_requests_ms;
    }
    if (b->limit_tokens && (!a->limit_tokens || b->remaining_tokens < a->remaining_tokens)) {
        o.limit_tokens = b->limit_tokens;
        o.remaining_tokens = b->remaining_tokens;
        o.reset_tokens_ms = b->reset_tokens_ms;
    }
    return o;
}

char *ratelim_reset_fmt(int64_t ms, char *out)
{
    int64_t s = (ms + 999) / 1000;
    if (s < 0) s = 0;
    int64_t h = s / 3600, m = s % 3600 / 60, sec = s % 60;
    if (h) snprintf(out, 24, "%lldh%lldm%llds", (long long)h, (long long)m, (long long)sec);
    else if (m) snprintf(out, 24, "%lldm%llds", (long long)m, (long long)sec);
    else snprintf(out, 24, "%llds", (long long)sec);
    return out;
}
