/* fuzz_usage: usage_parse on arbitrary bytes (a response body or one stream
 * chunk's data). It must agree with usage_parse_ref, the cJSON tree walk it
 * replaced (usage_ref.c): the same return code and, on USAGE_OK, the same
 * facts. On USAGE_OK the facts must be within the documented bounds and
 * cost_of must price them without failing; on any other return *out must be
 * untouched. The parse must also be a pure function of the bytes: a second
 * call gives the same answer. Before fuzzing, a table of inputs the fuzzer
 * is unlikely to build (very long numbers, deep nesting) gets the same
 * comparison. */
#include "usage.h"
#include "usage_ref.h"
#include "rates.h"
#include "fuzz.h"

#include <string.h>

/* Aborts unless usage_parse and usage_parse_ref agree on json[0, size). */
static int same_as_ref(const char *json, size_t size, usage_info_t *info)
{
    usage_info_t ref;

    memset(info, 0xA5, sizeof *info);
    memset(&ref, 0xA5, sizeof ref);
    int rc = usage_parse(json, size, info);
    int rc_ref = usage_parse_ref(json, size, &ref);
    if (rc != rc_ref)
        fprintf(stderr, "usage_parse %d, usage_parse_ref %d\n", rc, rc_ref);
    FUZZ_CHECK(rc == rc_ref);
    if (rc == USAGE_OK) {
        FUZZ_CHECK(info->has_usage == ref.has_usage);
        FUZZ_CHECK(info->usage.prompt == ref.usage.prompt);
        FUZZ_CHECK(info->usage.completion == ref.usage.completion);
        FUZZ_CHECK(info->usage.cached == ref.usage.cached);
        FUZZ_CHECK(info->choices_empty == ref.choices_empty);
        if (info->content_bytes != ref.content_bytes || info->content_deltas != ref.content_deltas)
            fprintf(stderr, "bytes %lld/%d, ref %lld/%d\n", (long long)info->content_bytes,
                    info->content_deltas, (long long)ref.content_bytes, ref.content_deltas);
        FUZZ_CHECK(info->content_bytes == ref.content_bytes);
        FUZZ_CHECK(info->content_deltas == ref.content_deltas);
        FUZZ_CHECK(memcmp(info->id, ref.id, sizeof ref.id) == 0);
    }
    return rc;
}

/* Repeats c n times between head and tail into a heap buffer of exactly the
 * text's length, and compares on it. */
static void check_repeat(const char *head, char c, size_t n, const char *tail)
{
    size_t h = strlen(head), t = strlen(tail);
    char *b = malloc(h + n + t);
    usage_info_t info;
    if (!b)
        abort();
    memcpy(b, head, h);
    memset(b + h, c, n);
    memcpy(b + h + n, tail, t);
    same_as_ref(b, h + n + t, &info);
    free(b);
}

/* Compares {"usage":{"completion_tokens":1,"prompt_tokens":<num><zeros><tail>}}
 * for runs of zeros around the length the scanner stops keeping digits. */
static void check_halfway(const char *num, const char *tail)
{
    static const size_t zeros[] = { 0, 1, 50, 700, 760, 800, 801, 900, 3000 };
    const char *head = "{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":";
    size_t h = strlen(head), m = strlen(num), t = strlen(tail);
    for (size_t i = 0; i < sizeof zeros / sizeof *zeros; i++) {
        size_t n = h + m + zeros[i] + t + 2;
        char *b = malloc(n);
        usage_info_t info;
        if (!b)
            abort();
        memcpy(b, head, h);
        memcpy(b + h, num, m);
        memset(b + h + m, '0', zeros[i]);
        memcpy(b + h + m + zeros[i], tail, t);
        memcpy(b + n - 2, "}}", 2);
        same_as_ref(b, n, &info);
        free(b);
    }
}

/* Numbers exactly halfway between two doubles round to even; a nonzero digit
 * however far after that rounds away. Counts sit on such points at 1, at
 * USAGE_MAX_TOKENS and at 0 (2^-1075, whose 752 significant digits are the
 * most any halfway point needs). */
static void check_halfways(void)
{
    static char tiny[1200];
    unsigned char d[800];           /* 5^1075, least significant digit first */
    size_t nd = 1, k = 0;

    d[0] = 1;
    for (int i = 0; i < 1075; i++) {
        unsigned carry = 0;
        for (size_t j = 0; j < nd; j++) {
            unsigned v = d[j] * 5u + carry;
            d[j] = (unsigned char)(v % 10);
            carry = v / 10;
        }
        while (carry) {
            d[nd++] = (unsigned char)(carry % 10);
            carry /= 10;
        }
    }
    /* 2^-1075 = 5^1075 / 10^1075 */
    k += (size_t)sprintf(tiny, "0.");
    for (size_t i = nd; i < 1075; i++)
        tiny[k++] = '0';
    while (nd)
        tiny[k++] = (char)('0' + d[--nd]);
    tiny[k] = '\0';

    char neg[1201];
    snprintf(neg, sizeof neg, "-%s", tiny);
    static const char *const nums[] = {
        "1.00000000000000011102230246251565404236316680908203125",  /* 1 + 2^-53 */
        "10000000.000000000931322574615478515625",                 /* 1e7 + 2^-30 */
        "0.99999999999999994448884876874217297881841659545898437",  /* just under 1 - 2^-54 */
        "0.999999999999999944488848768742172978818416595458984375", /* 1 - 2^-54 */
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        check_halfway(nums[i], "");
        check_halfway(nums[i], "1");
        check_halfway(nums[i], "1e0");
    }
    check_halfway(tiny, "");
    check_halfway(tiny, "1");
    check_halfway(neg, "");
    check_halfway(neg, "1");
    check_halfway(neg, "e-1");
    check_halfway("-0.", "1e-1074");
}

/* Inputs out of the fuzzer's easy reach, each compared with the reference. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *const texts[] = {
        ("{\"usage\":{\"prompt_tokens\":1.0000000000000000000000000000000000001,"
         "\"completion_tokens\":9999999.99999999999999999999}}"),
        "{\"usage\":{\"prompt_tokens\":-0.0,\"completion_tokens\":-1e-400}}",
        "{\"usage\":{\"prompt_tokens\":-1e-300,\"completion_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":0e99999999999999999999,\"completion_tokens\":1E+0}}",
        "{\"usage\":{\"prompt_tokens\":10000000.000000001,\"completion_tokens\":.5}}",
        "{\"usage\":{\"prompt_tokens\":01,\"completion_tokens\":1.}}",
        "{\"usage\":{\"prompt_tokens\":-.5e1,\"completion_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":5,\"prompt_tokens\":\"x\",\"completion_tokens\":1}}",
        "{\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1},\"usage\":7}",
        "{\"id\":\"a\\u0000b\",\"choices\":[{\"delta\":{\"content\":\"x\\uZZZZyz\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\uABC\\\\\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\":\"\\u1\\\"xx\"}}]}",
        "{\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"ab\",\"content\":\"abc\"}}]}",
        "{\"choices\":[{\"delta\":{\"content\\u0000x\":\"ab\"}}]}",
        "\xef\xbb\xbf{}",
        "\xef\xbb\xbf{",
        "\x01{\x1f\"a\"\x00:\x7f}",
        "{}\x0b",
    };
    static const char *const numbers[] = { "1", "0", "5", "-0", "0.", ".5" };
    usage_info_t info;
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        same_as_ref(texts[i], strlen(texts[i]), &info);
    /* "\x01{\x1f..." and the NUL inside it: compare with the real length */
    same_as_ref("\x01{\x1f\"a\"\x00:1}", 10, &info);
    /* numbers longer than cJSON's old 63-byte buffer and than SIG_MAX */
    for (size_t i = 0; i < sizeof numbers / sizeof *numbers; i++) {
        for (size_t n = 60; n < 2000; n += n < 70 ? 1 : 97) {
            char head[128];
            snprintf(head, sizeof head, "{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":%s", numbers[i]);
            check_repeat(head, '0', n, "}}");
            check_repeat(head, '0', n, "1}}");
            check_repeat(head, '0', n, "1e800}}");
            check_repeat("{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":0.", '0', n, "1e2000}}");
            check_repeat("{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":1e-", '0', n, "1}}");
            check_repeat("{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":9999999.", '9', n, "}}");
            check_repeat("{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":4.", '9', n, "}}");
            check_repeat("{\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":4.", '0', n, "01}}");
        }
    }
    check_halfways();
    /* cJSON allows 1000 containers open at once, no more */
    for (size_t d = 995; d <= 1002; d++) {
        check_repeat("{\"a\":", '[', d - 1, "");
        char *b = malloc(d * 2 + 8);
        if (!b)
            abort();
        size_t n = 0;
        b[n++] = '{';
        memcpy(b + n, "\"a\":", 4);
        n += 4;
        memset(b + n, '[', d - 1);
        n += d - 1;
        memset(b + n, ']', d - 1);
        n += d - 1;
        b[n++] = '}';
        same_as_ref(b, n, &info);
        free(b);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exactly size bytes, no NUL after: the parser is given a length */
    char *json = fuzz_dup(data, size, 0);
    usage_info_t info, again, untouched;

    memset(&untouched, 0xA5, sizeof untouched);
    int rc = same_as_ref(json, size, &info);
    FUZZ_CHECK(rc == USAGE_OK || rc == USAGE_NOT_JSON || rc == USAGE_BAD);

    memset(&again, 0x5A, sizeof again);
    FUZZ_CHECK(usage_parse(json, size, &again) == rc);

    if (rc != USAGE_OK) {
        FUZZ_CHECK(memcmp(&info, &untouched, sizeof info) == 0);
        free(json);
        return 0;
    }
    FUZZ_CHECK(memcmp(&info, &again, sizeof info) == 0);

    FUZZ_CHECK(info.has_usage == 0 || info.has_usage == 1);
    FUZZ_CHECK(info.choices_empty == 0 || info.choices_empty == 1);
    if (info.has_usage) {
        FUZZ_CHECK(info.usage.prompt >= 0 && info.usage.prompt <= USAGE_MAX_TOKENS);
        FUZZ_CHECK(info.usage.completion >= 0 &&
                   info.usage.completion <= USAGE_MAX_TOKENS);
        FUZZ_CHECK(info.usage.cached >= 0 && info.usage.cached <= info.usage.prompt);
    } else {
        FUZZ_CHECK(info.usage.prompt == 0 && info.usage.completion == 0 &&
                   info.usage.cached == 0);
    }
    FUZZ_CHECK(info.content_bytes >= 0 && (size_t)info.content_bytes <= size);
    FUZZ_CHECK(info.content_deltas >= 0 && (size_t)info.content_deltas <= size);
    FUZZ_CHECK(memchr(info.id, '\0', sizeof info.id) != NULL);

    int64_t est = usage_estimate_completion(info.content_bytes, info.content_deltas);
    FUZZ_CHECK(est >= info.content_deltas);
    FUZZ_CHECK(est >= info.content_bytes / 3);

    /* a dear model (claude-opus-4-1 prices, 1 credit per USD) */
    rate_t rate;
    FUZZ_CHECK(rate_from_usd(15.0, 75.0, 1.5, 1.0, &rate) == 0);
    nanos_t cost = cost_of(&rate, &info.usage);
    FUZZ_CHECK(cost >= 0);
    if (info.has_usage) {
        /* never less than the exact cost rounded down, never wildly more */
        usage_t none = { 0, 0, 0 };
        FUZZ_CHECK(cost_of(&rate, &none) == 0);
        usage_t more = info.usage;
        more.completion += 1;
        FUZZ_CHECK(cost_of(&rate, &more) >= cost);
    }
    free(json);
    return 0;
}
