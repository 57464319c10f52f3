/* ratesync: reading Pinata's live prices and putting them in place (see
 * ratesync.h). Owns the HTTP read (libcurl easy, bounded in time and size),
 * the atomic replacement of rates_file, `pinmeter rates sync`, and in serve
 * the refresh thread with its once-per-outage log. What the list must be
 * and what changed come from ratediff.c (pure); the rows of rate_changes
 * from ledger_rates.c.
 *
 * The file is replaced, never edited: the new text goes to a temporary file
 * in the same directory, is fsynced and renamed over it (after the old text
 * went to <rates_file>.prev the same way), then the directory is fsynced. A
 * reader (a SIGHUP, a restart, a crash at any point) finds the old file or
 * the new one, whole. A symlinked rates_file is followed: its target is the
 * file replaced. The new text is Pinata's answer byte for byte. */
#include "ratesync.h"
#include "ledger_rates.h"
#include "ratediff.h"
#include "version.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BODY_MAX (8 << 20)            /* a price list beyond 8 MiB is not one */
#define CLI_TIMEOUT_S 30
#define SERVE_TIMEOUT_S 20

struct ratesync {
    app_t *app;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stop;
    int failing;                      /* the last round failed (logged once) */
};

typedef struct buf { char *p; size_t n; } buf_t;

static size_t collect(char *ptr, size_t size, size_t nmemb, void *ud)
{
    buf_t *b = ud;
    size_t len = size * nmemb;
    if (b->n + len > BODY_MAX) return 0;
    char *np = realloc(b->p, b->n + len + 1);
    if (!np) return 0;
    memcpy(np + b->n, ptr, len);
    b->n += len;
    np[b->n] = '\0';
    b->p = np;
    return len;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt; (void)dn; (void)ut; (void)un;
    const atomic_int *stop = ud;
    return stop && atomic_load(stop) ? 1 : 0;
}

/* url without any "user:password@" (a URL given on the command line may
 * carry one; it is never printed). */
static const char *url_for_log(const char *url, char *out, size_t outlen)
{
    const char *s = strstr(url, "://"), *host = s ? s + 3 : url;
    const char *end = host + strcspn(host, "/?#"), *at = memchr(host, '@', (size_t)(end - host));
    if (!at) snprintf(out, outlen, "%s", url);
    else snprintf(out, outlen, "%.*s%s", (int)(host - url), url, at + 1);
    return out;
}

/* GET url: 0 with the body (free it) on a 200, else -1 with why. ca: the
 * CAs to trust (upstream.ca_file; "" = the system's). stop (may be NULL)
 * cuts the read short. */
static int fetch(const char *url, const char *ca, long timeout_s, const atomic_int *stop,
                 buf_t *body, char *why, size_t whylen)
{
    char shown[1200];
    url_for_log(url, shown, sizeof shown);
    memset(body, 0, sizeof *body);
    CURL *e = curl_easy_init();
    if (!e) { snprintf(why, whylen, "out of memory"); return -1; }
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (ca[0]) curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "pinmeter/" PINMETER_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, (void *)stop);
    CURLcode res = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(e);
    curl_slist_free_all(h);
    if (res == CURLE_WRITE_ERROR && body->n + CURL_MAX_WRITE_SIZE > BODY_MAX)
        snprintf(why, whylen, "%s: the answer is larger than %d bytes", shown, BODY_MAX);
    else if (res != CURLE_OK)
        snprintf(why, whylen, "%s: %s", shown, curl_easy_strerror(res));
    else if (status != 200)
        snprintf(why, whylen, "%s: HTTP %ld", shown, status);
    else
        return 0;
    free(body->p);
    memset(body, 0, sizeof *body);
    return -1;
}

/* The whole file at path: 0 (body owned by the caller), 1 when there is no
 * such file, -1 with why. */
static int read_all(const char *path, buf_t *b, char *why, size_t whylen)
{
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return 1;
        snprintf(why, whylen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    char chunk[65536];
    size_t got;
    int rc = 0;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (collect(chunk, 1, got, b) != got) { rc = -1; break; }
    if (rc || ferror(f)) {
        snprintf(why, whylen, "%s: cannot read (larger than %d bytes, or %s)", path, BODY_MAX,
                 strerror(errno));
        free(b->p);
        memset(b, 0, sizeof *b);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* Writes data as path through a temporary file beside it (fsync, rename),
 * with mode. 0, or -1 with why (path untouched, nothing left behind). */
static int write_atomic(const char *path, const char *data, size_t len, mode_t mode,
                        char *why, size_t whylen)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(why, whylen, "%s: cannot create a temporary file beside it: %s", path,
                 strerror(errno));
        free(tmp);
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    int ok = off == len && fchmod(fd, mode) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (close(fd) != 0) ok = 0;
    if (ok && rename(tmp, path) == 0) {
        free(tmp);
        return 0;
    }
    saved = ok ? errno : saved;
    unlink(tmp);
    free(tmp);
    snprintf(why, whylen, "%s: cannot write: %s", path, strerror(saved));
    return -1;
}

/* Puts body in place of the rates file at path (its target, when it is a
 * symlink), the old text kept as <path>.prev. 0, or -1 with why (the rates
 * file untouched). */
static int replace_rates_file(const char *path, const char *body, size_t len,
                              char *why, size_t whylen)
{
    char *real = realpath(path, NULL);
    if (!real && errno != ENOENT) {
        snprintf(why, whylen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!real && !(real = strdup(path))) {        /* a first file */
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    struct stat st;
    mode_t mode = stat(real, &st) == 0 ? (st.st_mode & 07777) : 0644;
    buf_t old = {0};
    size_t rlen = strlen(real);
    char *prev = malloc(rlen + 6);
    int have = prev ? read_all(real, &old, why, whylen) : -1;
    int rc = have < 0 ? -1 : 0;
    if (!prev) snprintf(why, whylen, "out of memory");
    else snprintf(prev, rlen + 6, "%s.prev", real);
    if (have == 0) rc = write_atomic(prev, old.p ? old.p : "", old.n, mode, why, whylen);
    free(old.p);
    free(prev);
    if (rc == 0) rc = write_atomic(real, body, len, mode, why, whylen);
    if (rc == 0) {                                /* the renames themselves, durably */
        char *slash = strrchr(real, '/');
        if (slash) *slash = '\0';
        int dfd = open(slash ? (real[0] ? real : "/") : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    free(real);
    return rc;
}

/* The change as rate_changes rows; model strings borrowed from d. */
static void record(app_t *app, const ratediff_t *d, const char *source)
{
    ledger_rate_change_t *v = calloc(d->n ? d->n : 1, sizeof *v);
    char err[512];
    if (!v) {
        base_logl(BASE_ERROR, "rates: out of memory: the change is not in rate_changes");
        return;
    }
    for (size_t i = 0; i < d->n; i++) {
        const ratediff_item_t *it = &d->v[i];
        v[i] = (ledger_rate_change_t){
            .model = it->model, .has_old = it->kind != RATEDIFF_ADDED,
            .has_new = it->kind != RATEDIFF_REMOVED,
            .old_input = it->old.input, .old_output = it->old.output,
            .old_cache_read = it->old.cache_read, .new_input = it->new_.input,
            .new_output = it->new_.output, .new_cache_read = it->new_.cache_read,
        };
    }
    if (ledger_rate_changes_add(app->ledger, base_wall_ms(), source, v, d->n, err,
                                sizeof err) != 0)
        base_logl(BASE_ERROR, "rates: %s", err);
    free(v);
}

/* Logs d (a line per model) and records it. */
static void announce(app_t *app, const ratediff_t *d, const char *source, const char *what)
{
    char sum[96], line[1024];
    base_log("rates %s: %s; %s (credits per 1M tokens: input / output / cache_read)",
             source, ratediff_summary(d, sum, sizeof sum), what);
    for (size_t i = 0; i < d->n; i++)
        base_log("rates %s:   %s", source, ratediff_line(&d->v[i], 0, line, sizeof line));
    record(app, d, source);
}

void ratesync_note(app_t *app, const rates_t *old, const rates_t *new_, const char *source)
{
    ratediff_t d;
    if (ratediff_compute(old, new_, &d) != 0) {
        base_logl(BASE_ERROR, "rates %s: out of memory: the change is not logged", source);
        return;
    }
    if (d.n) announce(app, &d, source, "requests admitted from now on pay the new prices");
    ratediff_free(&d);
}

/* The models URL of cfg into out. */
static const char *models_url(const config_t *cfg, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/v0/llm/models", cfg->upstream_base);
    return out;
}

int ratesync_cli(const config_t *cfg, const char *from, int dry_run, FILE *out, FILE *errout)
{
    char url[1100], shown[1200], why[1024], e[600];
    const char *src = from ? from : models_url(cfg, url, sizeof url);
    url_for_log(src, shown, sizeof shown);
    int rc = 1;
    buf_t body = {0}, cur = {0};
    rates_t *fresh = NULL, *old = NULL;
    ratediff_t d = {0};
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(errout, "pinmeter: cannot start the HTTP client\n");
        return 1;
    }
    if (fetch(src, cfg->ca_file, CLI_TIMEOUT_S, NULL, &body, why, sizeof why) != 0) {
        fprintf(errout, "pinmeter: rates sync: %s; %s left as it was\n", why, cfg->rates_file);
        goto out;
    }
    if (!(fresh = ratediff_parse(body.p, body.n, cfg->credits_per_usd, e, sizeof e))) {
        fprintf(errout, "pinmeter: rates sync: %s: not a valid price list: %s; %s left as it "
                "was\n", shown, e, cfg->rates_file);
        goto out;
    }
    int have = read_all(cfg->rates_file, &cur, why, sizeof why);
    if (have < 0) {
        fprintf(errout, "pinmeter: rates sync: %s\n", why);
        goto out;
    }
    if (have == 0 && !(old = rates_parse(cur.p, cur.n, cfg->credits_per_usd, e, sizeof e)))
        fprintf(out, "%s: the current file is not a valid rate table (%s): every model "
                "counts as added\n", cfg->rates_file, e);
    if (ratediff_compute(old, fresh, &d) != 0) {
        fprintf(errout, "pinmeter: rates sync: out of memory\n");
        goto out;
    }
    fprintf(out, "%zu model(s) from %s against %s (credits per 1M tokens: input / output / "
            "cache_read)\n", rates_count(fresh), shown, cfg->rates_file);
    int width = 0;
    for (size_t i = 0; i < d.n; i++)
        if ((int)strlen(d.v[i].model) > width) width = (int)strlen(d.v[i].model);
    for (size_t i = 0; i < d.n; i++) {
        char line[1024];
        fprintf(out, "  %s\n", ratediff_line(&d.v[i], width, line, sizeof line));
    }
    char sum[96];
    ratediff_summary(&d, sum, sizeof sum);
    if (d.n == 0 && old) {
        fprintf(out, "no change: %s is current\n", cfg->rates_file);
    } else if (dry_run) {
        fprintf(out, "%s; dry run: %s not written\n", sum, cfg->rates_file);
    } else if (replace_rates_file(cfg->rates_file, body.p, body.n, why, sizeof why) != 0) {
        fprintf(errout, "pinmeter: rates sync: %s; %s left as it was\n", why, cfg->rates_file);
        goto out;
    } else {
        fprintf(out, "%s; %s written%s%s%s\n", sum, cfg->rates_file,
                have == 0 ? " (the previous one kept as " : "", have == 0 ? cfg->rates_file : "",
                have == 0 ? ".prev)" : "");
        fprintf(out, "a running pinmeter applies it at SIGHUP (or its next start)\n");
    }
    rc = 0;
out:
    ratediff_free(&d);
    rates_free(fresh);
    rates_free(old);
    free(body.p);
    free(cur.p);
    curl_global_cleanup();
    return rc;
}

/* One round in serve: 0 (prices current, changed or not), or -1 with why
 * (nothing changed). */
static int round_once(ratesync_t *s, char *why, size_t whylen)
{
    app_t *app = s->app;
    char url[1100], e[600];
    const config_t *now = app_snap(app)->cfg;
    models_url(now, url, sizeof url);
    buf_t body;
    if (fetch(url, now->ca_file, SERVE_TIMEOUT_S, &s->stop, &body, why, whylen) != 0) return -1;
    int rc = -1;
    ratediff_t d = {0};
    rates_t *fresh = NULL;
    pthread_mutex_lock(&app->snap_mu);           /* no reload meanwhile */
    snap_t *cur = app_snap(app);
    const config_t *cfg = cur->cfg;
    snap_t *sn = NULL;
    if (!(fresh = ratediff_parse(body.p, body.n, cfg->credits_per_usd, e, sizeof e))) {
        snprintf(why, whylen, "%.500s: not a valid price list: %.500s", url, e);
    } else if (ratediff_compute(cur->rates, fresh, &d) != 0 || !(sn = malloc(sizeof *sn))) {
        snprintf(why, whylen, "out of memory");
    } else if (d.n == 0) {
        rc = 0;                                  /* current */
    } else if (replace_rates_file(cfg->rates_file, body.p, body.n, why, whylen) == 0) {
        *sn = *cur;                              /* the same config, the new prices */
        sn->rates = fresh;
        sn->borrowed = 1;
        sn->older = cur;
        atomic_store(&app->snap, sn);
        fresh = NULL;
        sn = NULL;
        rc = 1;
    }
    pthread_mutex_unlock(&app->snap_mu);
    if (rc == 1) {
        char what[1400];
        snprintf(what, sizeof what, "%.500s rewritten, the previous one kept as %.500s.prev; "
                 "requests admitted from now on pay the new prices", cfg->rates_file,
                 cfg->rates_file);
        announce(app, &d, "sync", what);
        rc = 0;
    }
    free(sn);
    rates_free(fresh);
    ratediff_free(&d);
    free(body.p);
    return rc;
}

static void *sync_main(void *arg)
{
    ratesync_t *s = arg;
    for (;;) {
        int every = app_snap(s->app)->cfg->rates_sync_s;   /* a reload may change it */
        if (every > 0) {
            char why[1400];
            if (round_once(s, why, sizeof why) != 0) {
                if (!s->failing && !atomic_load(&s->stop))
                    base_logl(BASE_WARN, "rates sync failed: %s; keeping the current rate table "
                              "(logged once until a sync works again)", why);
                s->failing = 1;
            } else if (s->failing) {
                base_log("rates sync: Pinata's prices read again");
                s->failing = 0;
            }
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += every > 0 ? every : 1;
        pthread_mutex_lock(&s->mu);
        while (!atomic_load(&s->stop) &&
               pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT) {}
        pthread_mutex_unlock(&s->mu);
        if (atomic_load(&s->stop)) break;
    }
    return NULL;
}

ratesync_t *ratesync_start(app_t *app)
{
    int every = app_snap(app)->cfg->rates_sync_s;
    if (every <= 0) return NULL;
    ratesync_t *s = calloc(1, sizeof *s);
    if (!s) {
        base_logl(BASE_ERROR, "rates sync off: out of memory");
        return NULL;
    }
    s->app = app;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thread, NULL, sync_main, s) != 0) {
        base_logl(BASE_ERROR, "rates sync off: cannot start its thread");
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return NULL;
    }
    pthread_setname_np(s->thread, "pm-rates");
    base_log("rates sync on: Pinata's prices every %d s", every);
    return s;
}

void ratesync_stop(ratesync_t *s)
{
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->stop, 1);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
