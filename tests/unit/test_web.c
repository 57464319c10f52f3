/* Unit tests for web: the compiled-in dashboard files are the sources in
 * src/web/ byte for byte, each with its content type and a quoted ETag,
 * and only they can be found. (make unit runs in the repository's root.) */
#include "t.h"
#include "web.h"
#include <stdlib.h>

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = malloc(1 << 20);
    *len = buf ? fread(buf, 1, 1 << 20, f) : 0;
    fclose(f);
    return buf;
}

static void test_every_source_is_compiled_in(void)
{
    static const char *const names[] = {"index.html", "app.css", "api.js", "fmt.js", "charts.js",
                                        "views.js", "main.js", "icon.svg"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const web_asset_t *a = web_find(names[i]);
        T_CHECK(a != NULL);
        if (!a) continue;
        char path[256];
        snprintf(path, sizeof path, "src/web/%s", names[i]);
        size_t len = 0;
        unsigned char *src = slurp(path, &len);
        T_CHECK(src != NULL);
        T_EQ_INT(a->len, len);
        T_CHECK(src && a->len == len && memcmp(a->data, src, len) == 0);
        T_CHECK(a->etag[0] == '"' && a->etag[strlen(a->etag) - 1] == '"' && strlen(a->etag) == 18);
        free(src);
    }
    T_EQ_INT(web_n_assets, sizeof names / sizeof names[0]);
}

static void test_types(void)
{
    T_EQ_STR(web_find("index.html")->type, "text/html; charset=utf-8");
    T_EQ_STR(web_find("app.css")->type, "text/css; charset=utf-8");
    T_EQ_STR(web_find("main.js")->type, "text/javascript; charset=utf-8");
    T_EQ_STR(web_find("icon.svg")->type, "image/svg+xml");
}

static void test_only_those(void)
{
    T_CHECK(web_find("") == NULL);
    T_CHECK(web_find("../web.c") == NULL);
    T_CHECK(web_find("index.html/") == NULL);
    T_CHECK(web_find("INDEX.HTML") == NULL);
    T_CHECK(strstr(WEB_CSP, "default-src 'self'") && !strstr(WEB_CSP, "unsafe-inline"));
}

int main(void)
{
    T_RUN(test_every_source_is_compiled_in);
    T_RUN(test_types);
    T_RUN(test_only_those);
    return t_summary("web");
}
