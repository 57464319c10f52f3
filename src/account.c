/* account: reads Pinata's GET /v0/credits/balance with the account JWT at
 * start and every sync_s seconds, and hands it to the budget as the base of
 * the account projection. A failed read is logged once per outage, not per
 * request; team caps apply throughout.
 *
 * Every successful read is also recorded (account_syncs, with what this
 * process charged since the previous one, from the budget's projection) and
 * compared with the previous one: a higher total is a top-up (an
 * account_events row in the same transaction, the guard told, the alert
 * topup_detected). Each interval between two syncs is a reconciliation line
 * (acctcore_line): the lines ending in the last hour sum to the drift the
 * gauge pinmeter_account_drift_credits shows and the alert drift watches.
 * Calls: budget, ledger_account, guard, alertq, acctcore, events. */
#include "account.h"
#include "acctcore.h"
#include "alertq.h"
#include "events.h"
#include "guard.h"
#include "ledger_account.h"
#include "reconcile.h"
#include <curl/curl.h>
#include <pthread.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LINES_MAX 4096                /* the last hour's lines kept (a sync a second: 3600) */

struct account {
    app_t *app;
    char *jwt;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int failing;
    int record_failing;            /* the last sync could not be recorded */
    pthread_mutex_t last_mu;       /* the last successful sync and the drift, for metrics */
    int synced;
    nanos_t last_available;
    int64_t last_ms;
    int drift_known;
    nanos_t drift;
    /* account thread only */
    int have_prev;                 /* the previous sync (recorded, maybe by an earlier run) */
    acctcore_sync_t prev;
    int prev_here;                 /* this process made it: the budget counted since */
    acctcore_line_t *lines;        /* the lines of the last hour */
    size_t n_lines;
};

typedef struct buf { char *p; size_t n; } buf_t;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t len = size * nmemb;
    if (b->n + len > 1024 * 1024) return 0;
    char *np = realloc(b->p, b->n + len + 1);
    if (!np) return 0;
    memcpy(np + b->n, ptr, len);
    b->n += len;
    np[b->n] = '\0';
    b->p = np;
    return len;
}

static int sum_charge(void *ud, int64_t ended_ms, nanos_t charged)
{
    (void)ended_ms;
    *(nanos_t *)ud += charged;
    return 0;
}

/* What pinmeter charged since the previous sync: the budget's count when
 * this process made that sync, else (the first sync after a start) the
 * ledger's charges settled since. 0 with *out, or -1 when unknown. */
static int charged_since(struct account *a, int64_t now, nanos_t *out)
{
    book_view_t v;
    *out = 0;
    if (!a->have_prev) return -1;
    if (a->prev_here) {
        if (budget_account_view(a->app->budget, &v) != 0) return -1;
        *out = v.spent;
        return 0;
    }
    char err[256];
    if (ledger_account_read_charges(a->app->ledger, a->prev.at_ms, now,
                                 reconcile_lookback_ms(app_snap(a->app)->cfg->timeout_s),
                                 sum_charge, out, err,
                                 sizeof err) != 0) {
        base_logl(BASE_WARN, "account: cannot read the charges since the last sync: %s", err);
        return -1;
    }
    return 0;
}

/* Keeps the line, drops those older than the gauge's window, sets the
 * drift and hands it to the alerts. */
static void add_line(struct account *a, const acctcore_line_t *l, int64_t now)
{
    size_t w = 0;
    for (size_t i = 0; i < a->n_lines; i++)
        if (a->lines[i].to_ms > now - ACCTCORE_HOUR_MS) a->lines[w++] = a->lines[i];
    a->n_lines = w;
    if (l && a->n_lines < LINES_MAX) a->lines[a->n_lines++] = *l;
    nanos_t d = acctcore_window_drift(a->lines, a->n_lines, now, ACCTCORE_HOUR_MS);
    pthread_mutex_lock(&a->last_mu);
    a->drift_known = 1;
    a->drift = d;
    pthread_mutex_unlock(&a->last_mu);
    if (a->app->alertq && app_snap(a->app)->cfg->drift_alert > 0)
        alertq_drift(a->app->alertq, d, now);
}

/* What a successful read means: recorded, compared with the previous one,
 * a line of the reconciliation. */
static void on_synced(struct account *a, nanos_t total, nanos_t loaned, nanos_t avail,
                      int64_t now, int charged_ok, nanos_t charged)
{
    acctcore_sync_t s = { .at_ms = now, .total = total, .loaned = loaned, .available = avail };
    nanos_t added = 0;
    int up = a->have_prev && acctcore_topup(a->prev.total, total, charged, &added);
    ledger_sync_t row = { .at_ms = now, .total = total, .loaned = loaned, .available = avail,
                          .charged_known = charged_ok, .charged = charged };
    ledger_account_event_t ev = { .at_ms = now, .kind = LEDGER_EV_TOPUP, .credits = added,
                               .total = total, .prev_total = a->prev.total };
    if (a->app->acctdb) {
        int bad = ledger_account_add_sync(a->app->acctdb, &row, up ? &ev : NULL) != 0;
        if (bad && !a->record_failing)
            base_logl(BASE_ERROR, "account: cannot record the sync in the ledger (the guard and "
                      "reconciliation miss it); logged once until it works again");
        a->record_failing = bad;
    }
    if (up) {
        char add_s[MONEY_FMT_MAX], tot_s[MONEY_FMT_MAX];
        base_logl(BASE_WARN, "account: a top-up: %s credits added (the total rose to %s)",
                  money_fmt(added, add_s), money_fmt(total, tot_s));
        int k = a->app->guard ? guard_topup(a->app->guard, now) : 1;
        alertq_acct_t al = { .kind = ALERTQ_TOPUP, .at_ms = now, .added = added, .total = total,
                             .prev_total = a->prev.total, .topups = k,
                             .max = app_snap(a->app)->cfg->max_topups_per_day };
        if (a->app->alertq) alertq_account_event(a->app->alertq, &al);
    }
    if (a->app->guard) guard_tick(a->app->guard, now);
    acctcore_line_t l;
    if (a->have_prev && charged_ok) acctcore_line(&a->prev, &s, added, charged, &l);
    add_line(a, a->have_prev && charged_ok ? &l : NULL, now);
    a->prev = s;
    a->have_prev = a->prev_here = 1;
}

/* One sync. Returns 0, or -1 with a reason in why. */
static int sync_once(struct account *a, char *why, size_t whylen)
{
    char url[1200], auth[4096];
    snprintf(url, sizeof url, "%s/v0/credits/balance", app_snap(a->app)->cfg->upstream_base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", a->jwt);
    CURL *e = curl_easy_init();
    if (!e) { snprintf(why, whylen, "out of memory"); return -1; }
    struct curl_slist *h = curl_slist_append(NULL, auth);
    buf_t b = {0};
    curl_easy_setopt(e, CURLOPT_URL, url);
    const char *ca = app_snap(a->app)->cfg->ca_file;
    if (ca[0]) curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, 5L);
    CURLcode res = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    int rc = -1;
    cJSON *j = NULL;
    if (res != CURLE_OK) {
        snprintf(why, whylen, "%s", curl_easy_strerror(res));
    } else if (status != 200) {
        snprintf(why, whylen, "HTTP %ld", status);
    } else if (!(j = cJSON_ParseWithLength(b.p ? b.p : "", b.n)) ||
               !cJSON_IsNumber(cJSON_GetObjectItem(j, "available"))) {
        snprintf(why, whylen, "reply without a numeric 'available'");
    } else {
        nanos_t total = 0, avail = 0, loaned = 0;
        cJSON *t = cJSON_GetObjectItem(j, "total"), *lo = cJSON_GetObjectItem(j, "loaned");
        money_from_double(cJSON_GetObjectItem(j, "available")->valuedouble, &avail);
        if (cJSON_IsNumber(t)) money_from_double(t->valuedouble, &total);
        else total = avail;
        if (cJSON_IsNumber(lo)) money_from_double(lo->valuedouble, &loaned);
        else loaned = total - avail;
        int64_t now = base_wall_ms();
        nanos_t charged;
        /* read just before the projection restarts from this sync */
        int charged_ok = charged_since(a, now, &charged) == 0;
        budget_account_sync(a->app->budget, total, avail);
        pthread_mutex_lock(&a->last_mu);
        a->synced = 1;
        a->last_available = avail;
        a->last_ms = now;
        pthread_mutex_unlock(&a->last_mu);
        events_account_synced(a->app);
        on_synced(a, total, loaned, avail, now, charged_ok, charged);
        rc = 0;
    }
    cJSON_Delete(j);
    free(b.p);
    return rc;
}

/* One sync, logging a failure once per outage. */
static void sync_logged(struct account *a)
{
    char why[256];
    if (sync_once(a, why, sizeof why) != 0) {
        if (!a->failing)
            base_log("cannot read the account balance (%s): team caps still apply, "
                    "the account projection does not until a read succeeds", why);
        a->failing = 1;
    } else if (a->failing) {
        base_log("account balance readable again");
        a->failing = 0;
    }
}

static void *account_main(void *arg)
{
    struct account *a = arg;
    pthread_mutex_lock(&a->mu);
    while (!a->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += app_snap(a->app)->cfg->sync_s;
        while (!a->stop && pthread_cond_timedwait(&a->cv, &a->mu, &ts) != ETIMEDOUT) {}
        if (a->stop) break;
        pthread_mutex_unlock(&a->mu);
        sync_logged(a);
        pthread_mutex_lock(&a->mu);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* ---- the last hour, rebuilt at start from the recorded syncs ---- */

typedef struct rebuild {
    struct account *a;
    int have;
    acctcore_sync_t last;
} rebuild_t;

static int rebuild_sync(void *ud, const ledger_sync_t *s)
{
    rebuild_t *rb = ud;
    acctcore_sync_t cur = { s->at_ms, s->total, s->loaned, s->available };
    if (rb->have && s->charged_known && rb->a->n_lines < LINES_MAX) {
        nanos_t added = 0;            /* as detected then: the rise plus the charges */
        acctcore_topup(rb->last.total, cur.total, s->charged, &added);
        acctcore_line(&rb->last, &cur, added, s->charged, &rb->a->lines[rb->a->n_lines++]);
    }
    rb->last = cur;
    rb->have = 1;
    return 0;
}

/* The previous sync (the last one recorded) and the lines of the last hour
 * from the ledger, so the drift gauge and the top-up comparison carry on
 * across a restart. */
static void load_history(struct account *a)
{
    char err[256];
    int64_t now = base_wall_ms();
    rebuild_t rb = { .a = a };
    if (ledger_account_read_syncs(a->app->ledger, now - ACCTCORE_HOUR_MS, INT64_MAX, rebuild_sync,
                               &rb, err, sizeof err) != 0) {
        base_logl(BASE_WARN, "account: cannot read the recorded syncs: %s", err);
        a->n_lines = 0;
        return;
    }
    if (rb.have) {
        a->prev = rb.last;
        a->have_prev = 1;
    }
}

struct account *account_start(app_t *app, const char *jwt)
{
    struct account *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->app = app;
    a->jwt = strdup(jwt);
    a->lines = calloc(LINES_MAX, sizeof *a->lines);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->last_mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    if (a->jwt && a->lines) load_history(a);
    /* The first read happens before pinmeter serves, so no request is
     * admitted against an account balance it has not seen. */
    if (a->jwt && a->lines) sync_logged(a);
    if (!a->jwt || !a->lines || pthread_create(&a->thread, NULL, account_main, a) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_mutex_destroy(&a->last_mu);
        pthread_cond_destroy(&a->cv);
        free(a->jwt);
        free(a->lines);
        free(a);
        return NULL;
    }
    pthread_setname_np(a->thread, "pm-account");
    return a;
}

int account_last_sync(struct account *a, nanos_t *available, int64_t *at_ms)
{
    pthread_mutex_lock(&a->last_mu);
    int ok = a->synced;
    *available = a->last_available;
    *at_ms = a->last_ms;
    pthread_mutex_unlock(&a->last_mu);
    return ok ? 0 : -1;
}

int account_drift(struct account *a, nanos_t *drift)
{
    pthread_mutex_lock(&a->last_mu);
    int ok = a->drift_known;
    *drift = a->drift;
    pthread_mutex_unlock(&a->last_mu);
    return ok ? 0 : -1;
}

void account_stop(struct account *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->last_mu);
    pthread_cond_destroy(&a->cv);
    free(a->jwt);
    free(a->lines);
    free(a);
}
