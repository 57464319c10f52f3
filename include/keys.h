/* keys: hashing and comparing API keys, and making new ones. Uses OpenSSL
 * (SHA-256, CRYPTO_memcmp, RAND_bytes). Keys are never stored or logged. */
#ifndef PINMETER_KEYS_H
#define PINMETER_KEYS_H
#include <stddef.h>

#define KEYS_SHA_LEN 32
#define KEYS_NEW_MAX 64

/* SHA-256 of len bytes of key into out. */
void keys_sha256(const char *key, size_t len, unsigned char out[KEYS_SHA_LEN]);
/* Lowercase hex of a 32-byte digest into hex (65 bytes incl. NUL). */
void keys_hex(const unsigned char d[KEYS_SHA_LEN], char hex[2 * KEYS_SHA_LEN + 1]);
/* Constant-time equality of two digests: 1 equal, 0 not. */
int keys_equal(const unsigned char a[KEYS_SHA_LEN], const unsigned char b[KEYS_SHA_LEN]);
/* Writes a new random key "pm-<44 base64url chars>" (264 bits from OpenSSL's
 * RNG) into out (KEYS_NEW_MAX bytes). Returns 0, or -1 if the RNG failed. */
int keys_generate(char out[KEYS_NEW_MAX]);
/* Extracts the token from an "Authorization: Bearer X" value; returns a
 * pointer into value and its length in *len, or NULL if not a Bearer token. */
const char *keys_bearer(const char *value, size_t *len);

#endif
