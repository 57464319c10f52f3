/* webhook: the signed POST of one alert event (see webhook.h). A libcurl
 * easy handle kept for the sender's life (its connection may be reused),
 * reset before each attempt; the answer's body is read and dropped. */
#include "webhook.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct webhook {
    CURL *easy;
    char *secret;                     /* NULL: unsigned */
    size_t secret_len;
    const atomic_int *stop;
};

webhook_t *webhook_new(const char *secret, const atomic_int *stop)
{
    webhook_t *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->stop = stop;
    if (secret && *secret) {
        w->secret_len = strlen(secret);
        if (!(w->secret = malloc(w->secret_len + 1))) goto fail;
        memcpy(w->secret, secret, w->secret_len + 1);
    }
    if (!(w->easy = curl_easy_init())) goto fail;
    return w;
fail:
    webhook_free(w);
    return NULL;
}

void webhook_free(webhook_t *w)
{
    if (!w) return;
    if (w->secret) OPENSSL_cleanse(w->secret, w->secret_len);
    free(w->secret);
    if (w->easy) curl_easy_cleanup(w->easy);
    free(w);
}

void webhook_sign(const char *secret, size_t secret_len, const char *body, size_t len,
                  char out[WEBHOOK_SIG_MAX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)body, len, md, &mdlen);
    memcpy(out, "sha256=", 7);
    for (unsigned i = 0; i < mdlen && 7 + 2 * i + 2 < WEBHOOK_SIG_MAX; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
    OPENSSL_cleanse(md, sizeof md);
}

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p; (void)ud;
    return size * n;
}

static int progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt; (void)dn; (void)ut; (void)un;
    const atomic_int *stop = ud;
    return stop && atomic_load(stop) ? 1 : 0;
}

long webhook_post(webhook_t *w, const char *url, const char *event, const char *body,
                  size_t len, char *err, size_t errlen)
{
    char hev[128], hsig[32 + WEBHOOK_SIG_MAX];
    struct curl_slist *h = NULL, *t;
    long status = 0;
    snprintf(hev, sizeof hev, "X-Pinmeter-Event: %s", event);
    if (!(t = curl_slist_append(h, "Content-Type: application/json"))) goto oom;
    h = t;
    if (!(t = curl_slist_append(h, hev))) goto oom;
    h = t;
    if (!(t = curl_slist_append(h, "Expect:"))) goto oom;   /* no 100-continue wait */
    h = t;
    if (w->secret) {
        char sig[WEBHOOK_SIG_MAX];
        webhook_sign(w->secret, w->secret_len, body, len, sig);
        snprintf(hsig, sizeof hsig, "X-Pinmeter-Signature: %s", sig);
        if (!(t = curl_slist_append(h, hsig))) goto oom;
        h = t;
    }
    CURL *e = w->easy;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "pinmeter-alerts");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)WEBHOOK_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, (void *)w->stop);
    CURLcode rc = curl_easy_perform(e);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (status <= 0) snprintf(err, errlen, "no HTTP status in the answer");
    } else {
        snprintf(err, errlen, "%s", rc == CURLE_ABORTED_BY_CALLBACK ? "cut at shutdown"
                                                                    : curl_easy_strerror(rc));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h);
    return status > 0 ? status : 0;
oom:
    curl_slist_free_all(h);
    snprintf(err, errlen, "out of memory");
    return 0;
}
