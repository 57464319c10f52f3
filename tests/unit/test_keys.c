/* Unit tests for keys: SHA-256 against the FIPS 180-2 vectors, hex
 * formatting, digest comparison, the shape of generated keys, and Bearer
 * token extraction. */
#include "keys.h"
#include "t.h"

#include <stdlib.h>

static void sha_hex(const char *s, char hex[2 * KEYS_SHA_LEN + 1])
{
    unsigned char d[KEYS_SHA_LEN];
    /* heap copy of exactly strlen(s) bytes so ASan sees any over-read */
    size_t n = strlen(s);
    char *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    keys_sha256(b, n, d);
    free(b);
    keys_hex(d, hex);
}

static void test_sha256_vectors(void)
{
    char hex[2 * KEYS_SHA_LEN + 1];
    sha_hex("abc", hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    sha_hex("", hex);
    T_EQ_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sha_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", hex);
    T_EQ_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* only len bytes are hashed */
    unsigned char d[KEYS_SHA_LEN];
    keys_sha256("abcdef", 3, d);
    keys_hex(d, hex);
    T_EQ_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hex(void)
{
    unsigned char d[KEYS_SHA_LEN];
    char hex[2 * KEYS_SHA_LEN + 1];
    for (int i = 0; i < KEYS_SHA_LEN; i++) d[i] = (unsigned char)(i * 8 + 7);
    d[0] = 0x00;
    d[KEYS_SHA_LEN - 1] = 0xff;
    memset(hex, 'Z', sizeof hex);
    keys_hex(d, hex);
    T_EQ_INT(strlen(hex), 64);
    T_EQ_STR(hex, "000f171f272f373f474f575f676f777f878f979fa7afb7bfc7cfd7dfe7eff7ff");
}

static void test_equal(void)
{
    unsigned char a[KEYS_SHA_LEN], b[KEYS_SHA_LEN];
    keys_sha256("key-one", 7, a);
    keys_sha256("key-one", 7, b);
    T_EQ_INT(keys_equal(a, b), 1);
    keys_sha256("key-two", 7, b);
    T_EQ_INT(keys_equal(a, b), 0);
    /* a difference in the last byte only */
    memcpy(b, a, sizeof b);
    b[KEYS_SHA_LEN - 1] ^= 1;
    T_EQ_INT(keys_equal(a, b), 0);
    b[KEYS_SHA_LEN - 1] ^= 1;
    b[0] ^= 0x80;
    T_EQ_INT(keys_equal(a, b), 0);
}

static int is_b64url(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static void test_generate(void)
{
    char k1[KEYS_NEW_MAX], k2[KEYS_NEW_MAX];
    memset(k1, 'Z', sizeof k1);
    T_EQ_INT(keys_generate(k1), 0);
    T_EQ_INT(keys_generate(k2), 0);
    T_EQ_INT(strlen(k1), 47);
    T_EQ_INT(strlen(k2), 47);
    T_EQ_INT(strncmp(k1, "pm-", 3), 0);
    T_EQ_INT(strncmp(k2, "pm-", 3), 0);
    int bad = 0;
    for (int i = 3; i < 47; i++) bad += !is_b64url(k1[i]) + !is_b64url(k2[i]);
    T_EQ_INT(bad, 0);
    T_CHECK(strcmp(k1, k2) != 0);
    /* over many keys every alphabet position shows up: the 6-bit groups are
     * really spread over the 64 symbols */
    int seen[128] = {0}, distinct = 0;
    for (int n = 0; n < 64; n++) {
        T_EQ_INT(keys_generate(k1), 0);
        for (int i = 3; i < 47; i++) seen[(unsigned char)k1[i] & 127] = 1;
    }
    for (int i = 0; i < 128; i++) distinct += seen[i];
    T_EQ_INT(distinct, 64);
}

/* Expects keys_bearer(value) to give exactly want (NULL: no token). */
static void expect_bearer(const char *value, const char *want)
{
    size_t len = 999;
    const char *tok = keys_bearer(value, &len);
    if (!want) {
        if (tok) fprintf(stderr, "  keys_bearer(\"%s\") gave a token\n", value);
        T_CHECK(tok == NULL);
        return;
    }
    T_CHECK(tok != NULL);
    if (!tok) { fprintf(stderr, "  keys_bearer(\"%s\") gave NULL\n", value); return; }
    T_EQ_INT(len, strlen(want));
    T_CHECK(strncmp(tok, want, strlen(want)) == 0);
    T_CHECK(tok >= value && tok < value + strlen(value));   /* points into value */
}

static void test_bearer(void)
{
    expect_bearer("Bearer x", "x");
    expect_bearer("bearer  x ", "x");
    expect_bearer("BEARER pm-abc_DEF-123", "pm-abc_DEF-123");
    expect_bearer("Bearer   tok\t", "tok");
    expect_bearer("Bearer a b", "a b");
    expect_bearer("Basic x", NULL);
    expect_bearer("Bearer ", NULL);
    expect_bearer("Bearer    ", NULL);
    expect_bearer("Bearer", NULL);
    expect_bearer("Bearerx", NULL);
    expect_bearer("", NULL);
    expect_bearer(NULL, NULL);
}

int main(void)
{
    T_RUN(test_sha256_vectors);
    T_RUN(test_hex);
    T_RUN(test_equal);
    T_RUN(test_generate);
    T_RUN(test_bearer);
    return t_summary("keys");
}
