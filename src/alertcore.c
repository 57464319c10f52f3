/* alertcore: ids, thresholds, bodies, the retry schedule and RFC 3339 times
 * of budget alerts (see alertcore.h). Pure: calendar arithmetic is done
 * here on days since 1970 (no gmtime, no TZ), the id hash by keys. */
#include "alertcore.h"
#include "keys.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void alertcore_id(const char *event, const char *scope, int64_t period_start, int32_t ppm,
                  char out[ALERTCORE_ID_LEN + 1])
{
    char buf[512], hex[2 * KEYS_SHA_LEN + 1];
    unsigned char sha[KEYS_SHA_LEN];
    int n = snprintf(buf, sizeof buf, "pinmeter-alert:%s:%s:%lld:%ld", event, scope ? scope : "",
                     (long long)period_start, (long)ppm);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof buf) n = (int)sizeof buf - 1;
    keys_sha256(buf, (size_t)n, sha);
    keys_hex(sha, hex);
    memcpy(out, hex, ALERTCORE_ID_LEN);
    out[ALERTCORE_ID_LEN] = '\0';
}

nanos_t alertcore_limit(nanos_t cap, int32_t ppm)
{
    if (cap <= 0 || ppm <= 0) return 0;
    __int128 p = ((__int128)cap * ppm + CONFIG_PPM - 1) / CONFIG_PPM;
    return p > INT64_MAX ? INT64_MAX : (nanos_t)p;     /* 10 x a 9e9-credit cap */
}

size_t alertcore_reached(nanos_t cap, nanos_t spent, const int32_t *ppm, size_t n, size_t *out)
{
    size_t k = 0;
    if (cap <= 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (spent >= alertcore_limit(cap, ppm[i])) out[k++] = i;
    return k;
}

/* ---- the calendar (proleptic Gregorian, UTC) ---- */

/* Days since 1970-01-01 of y-m-d (m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

int64_t alertcore_period_end(period_t p, int64_t start)
{
    int64_t y;
    int m, d;
    switch (p) {
    case PERIOD_DAY: return start + 86400;
    case PERIOD_WEEK: return start + 7 * 86400;
    case PERIOD_MONTH:
        civil_from_days(floor_div(start, 86400), &y, &m, &d);
        if (++m > 12) { m = 1; y++; }
        return days_from_civil(y, m, 1) * 86400;
    default: return 0;
    }
}

char *alertcore_time(int64_t ms, char out[ALERTCORE_TIME_MAX])
{
    int64_t days = floor_div(ms, 86400000), rem = ms - days * 86400000, y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    snprintf(out, ALERTCORE_TIME_MAX, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", (long long)y, m, d,
             (int)(rem / 3600000), (int)(rem / 60000 % 60), (int)(rem / 1000 % 60),
             (int)(rem % 1000));
    return out;
}

/* n decimal digits at *p into *v, advancing *p; -1 unless all are digits. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (!isdigit((unsigned char)**p)) return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

static int days_in_month(int64_t y, int m)
{
    static const int len[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : len[m - 1];
}

int alertcore_parse_time(const char *s, int64_t *ms)
{
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, se = 0, frac = 0, off = 0;
    if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return -1;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ') return -1;
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
            digits(&p, 2, &se) || h > 23 || mi > 59 || se > 60)
            return -1;
        if (*p == '.') {
            int scale = 100, any = 0;
            for (p++; isdigit((unsigned char)*p); p++, any = 1) {
                frac += (*p - '0') * scale;
                scale /= 10;
            }
            if (!any) return -1;
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om;
            if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
                return -1;
            off = sign * (oh * 60 + om);
        } else {
            return -1;
        }
        if (*p) return -1;
    }
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - off * 60;
    *ms = secs * 1000 + frac;
    return 0;
}

/* ---- the retry schedule ---- */

int alertcore_next_attempt(int64_t first_ms, int attempts, int64_t now_ms, int64_t base_ms,
                           int64_t cap_ms, int64_t giveup_ms, int64_t *next_ms)
{
    int64_t delay = base_ms;
    for (int i = 1; i < attempts && delay < cap_ms; i++) delay *= 2;
    if (delay > cap_ms) delay = cap_ms;
    if (now_ms + delay - first_ms > giveup_ms) return -1;
    *next_ms = now_ms + delay;
    return 0;
}

/* ---- the body ---- */

static void add_raw(cJSON *o, const char *name, const char *text)
{
    cJSON_AddItemToObject(o, name, cJSON_CreateRaw(text));
}

static void add_credits(cJSON *o, const char *name, nanos_t v)
{
    char buf[MONEY_FMT_MAX];
    add_raw(o, name, money_fmt(v, buf));
}

static void add_time(cJSON *o, const char *name, int64_t ms)
{
    char buf[ALERTCORE_TIME_MAX];
    cJSON_AddStringToObject(o, name, alertcore_time(ms, buf));
}

/* ppm as a short decimal: 800000 -> "0.8", 1000000 -> "1". */
static void fmt_ppm(int32_t ppm, char out[24])
{
    int n = snprintf(out, 24, "%ld.%06ld", (long)(ppm / CONFIG_PPM), (long)(ppm % CONFIG_PPM));
    while (n > 0 && out[n - 1] == '0') out[--n] = '\0';
    if (n > 0 && out[n - 1] == '.') out[--n] = '\0';
}

char *alertcore_payload(const alertcore_event_t *e)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int thr = strcmp(e->event, ALERTCORE_THRESHOLD) == 0;
    int refused = strcmp(e->event, ALERTCORE_CAP_REFUSED) == 0;
    int account = strcmp(e->event, ALERTCORE_ACCOUNT_LOW) == 0;
    int runaway = strcmp(e->event, ALERTCORE_RUNAWAY) == 0;
    int topup = strcmp(e->event, ALERTCORE_TOPUP) == 0;
    int limit = strcmp(e->event, ALERTCORE_TOPUP_LIMIT) == 0;
    int drift = strcmp(e->event, ALERTCORE_DRIFT) == 0;
    cJSON_AddStringToObject(o, "event", e->event);
    cJSON_AddStringToObject(o, "id", e->id);
    add_time(o, "at", e->at_ms);
    cJSON_AddStringToObject(o, "instance", e->instance ? e->instance : "");
    if (e->team) cJSON_AddStringToObject(o, "team", e->team);
    else cJSON_AddNullToObject(o, "team");
    if (thr || refused) {
        add_time(o, "period_start", e->period_start * 1000);
        if (e->period_end) add_time(o, "period_end", e->period_end * 1000);
        else cJSON_AddNullToObject(o, "period_end");
        if (thr) {
            char t[24];
            fmt_ppm(e->ppm, t);
            add_raw(o, "threshold", t);
        }
        add_credits(o, "cap", e->cap);
        add_credits(o, "spent", e->spent);
        add_credits(o, "loaned", e->loaned);
        add_credits(o, "available", e->available);
        if (refused) add_credits(o, "required", e->required);
    } else if (runaway) {
        if (e->key) cJSON_AddStringToObject(o, "key", e->key);
        else cJSON_AddNullToObject(o, "key");
        cJSON_AddStringToObject(o, "window", e->hour ? "hour" : "minute");
        add_credits(o, "spent_in_window", e->spent_in_window);
        add_credits(o, "limit", e->limit);
    } else if (topup || limit) {
        if (topup) {
            add_credits(o, "credits_added", e->added);
            add_credits(o, "total", e->cap);
            add_credits(o, "previous_total", e->prev_total);
        }
        cJSON_AddNumberToObject(o, "topups_24h", e->topups);
        if (e->max_topups >= 0) cJSON_AddNumberToObject(o, "max_topups_per_day", e->max_topups);
        else cJSON_AddNullToObject(o, "max_topups_per_day");
        if (limit) {
            add_time(o, "until", e->until_ms);
            cJSON_AddStringToObject(o, "message", "new requests get 402 topup_limit until "
                                    "then, or until POST /v0/credits/topup/guard/reset");
        }
    } else if (drift) {
        add_credits(o, "drift", e->drift);
        add_credits(o, "drift_alert", e->limit);
        cJSON_AddNumberToObject(o, "window_s", 3600);
    } else if (account) {
        add_credits(o, "account_below", e->below);
        add_credits(o, "total", e->cap);
        add_credits(o, "loaned", e->loaned);
        add_credits(o, "available", e->available);
    } else {
        cJSON_AddStringToObject(o, "message", "a test event from pinmeter alert test");
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}
