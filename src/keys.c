/* keys: SHA-256 digests compared in constant time, random key generation. */
#include "keys.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

/* SHA-256 fetched from the provider once: EVP_sha256() makes every digest
 * look the algorithm up again (about half of its cost per request). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void keys_sha256(const char *key, size_t len, unsigned char out[KEYS_SHA_LEN])
{
    unsigned int n = 0;
    pthread_once(&sha256_once, sha256_fetch);
    EVP_Digest(key, len, out, &n, sha256_md ? sha256_md : EVP_sha256(), NULL);
}

void keys_hex(const unsigned char d[KEYS_SHA_LEN], char hex[2 * KEYS_SHA_LEN + 1])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < KEYS_SHA_LEN; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * KEYS_SHA_LEN] = '\0';
}

int keys_equal(const unsigned char a[KEYS_SHA_LEN], const unsigned char b[KEYS_SHA_LEN])
{
    return CRYPTO_memcmp(a, b, KEYS_SHA_LEN) == 0;
}

int keys_generate(char out[KEYS_NEW_MAX])
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char raw[33];
    if (RAND_bytes(raw, sizeof raw) != 1) return -1;
    char *p = out;
    memcpy(p, "pm-", 3);
    p += 3;
    /* 33 bytes = 264 bits -> 44 chars of 6 bits */
    for (size_t i = 0; i < sizeof raw; i += 3) {
        unsigned v = (unsigned)raw[i] << 16 | (unsigned)raw[i + 1] << 8 | raw[i + 2];
        *p++ = b64[(v >> 18) & 63];
        *p++ = b64[(v >> 12) & 63];
        *p++ = b64[(v >> 6) & 63];
        *p++ = b64[v & 63];
    }
    *p = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

const char *keys_bearer(const char *value, size_t *len)
{
    if (!value || strncasecmp(value, "Bearer ", 7) != 0) return NULL;
    value += 7;
    while (*value == ' ') value++;
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t')) n--;
    if (n == 0) return NULL;
    *len = n;
    return value;
}
