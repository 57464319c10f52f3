/* Unit tests for webhook: the signature is HMAC-SHA256 (RFC 4231 test case
 * 2, and the exact body bytes), and a receiver that cannot be reached is an
 * answer of 0 with a reason that names neither the URL nor the secret. No
 * network beyond a closed loopback port. */
#include "webhook.h"
#include "t.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

static void test_sign(void)
{
    char sig[WEBHOOK_SIG_MAX];
    const char *body = "what do ya want for nothing?";
    webhook_sign("Jefe", 4, body, strlen(body), sig);
    T_EQ_STR(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    char other[WEBHOOK_SIG_MAX];
    webhook_sign("Jefe", 4, body, strlen(body) - 1, other);     /* one byte less */
    T_CHECK(strcmp(sig, other) != 0);
    T_EQ_INT(strlen(sig), 7 + 64);
}

/* A loopback port with nothing listening (bound, then closed). */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t n = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &n) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void test_unreachable(void)
{
    int port = closed_port();
    T_CHECK(port > 0);
    if (port <= 0) return;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    webhook_t *w = webhook_new("s3cret-value", NULL);
    T_CHECK(w != NULL);
    char url[128], err[256] = "";
    snprintf(url, sizeof url, "http://127.0.0.1:%d/hook-token-xyz", port);
    T_EQ_INT(webhook_post(w, url, "alert_test", "{}", 2, err, sizeof err), 0);
    T_CHECK(err[0] != '\0');
    T_CHECK(strstr(err, "hook-token-xyz") == NULL && strstr(err, "s3cret") == NULL);
    webhook_free(w);
    webhook_free(NULL);
    curl_global_cleanup();
}

int main(void)
{
    T_RUN(test_sign);
    T_RUN(test_unreachable);
    return t_summary("webhook");
}
