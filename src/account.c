/* account: reads Pinata's GET /v0/credits/balance with the account JWT at
 * start and every sync_s seconds, and hands it to the budget as the base of
 * the account projection. A failed read is logged once per outage, not per
 * request; team caps apply throughout. */
#include "account.h"
#include "events.h"
#include <curl/curl.h>
#include <pthread.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct account {
    app_t *app;
    char *jwt;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int failing;
    pthread_mutex_t last_mu;       /* the last successful sync, for metrics */
    int synced;
    nanos_t last_available;
    int64_t last_ms;
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
        nanos_t total = 0, avail = 0;
        cJSON *t = cJSON_GetObjectItem(j, "total");
        money_from_double(cJSON_GetObjectItem(j, "available")->valuedouble, &avail);
        if (cJSON_IsNumber(t)) money_from_double(t->valuedouble, &total);
        else total = avail;
        budget_account_sync(a->app->budget, total, avail);
        pthread_mutex_lock(&a->last_mu);
        a->synced = 1;
        a->last_available = avail;
        a->last_ms = base_wall_ms();
        pthread_mutex_unlock(&a->last_mu);
        events_account_synced(a->app);
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

struct account *account_start(app_t *app, const char *jwt)
{
    struct account *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->app = app;
    a->jwt = strdup(jwt);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->last_mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    /* The first read happens before pinmeter serves, so no request is
     * admitted against an account balance it has not seen. */
    if (a->jwt) sync_logged(a);
    if (!a->jwt || pthread_create(&a->thread, NULL, account_main, a) != 0) {
        pthread_mutex_destroy(&a->mu);
        pthread_mutex_destroy(&a->last_mu);
        pthread_cond_destroy(&a->cv);
        free(a->jwt);
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
    free(a);
}
