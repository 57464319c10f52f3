/* web: the dashboard's compiled-in files, served with their security
 * headers (see web.h). The bytes are static: a response points at them
 * (MHD_RESPMEM_PERSISTENT), nothing is copied or read from disk. */
#include "web.h"
#include <string.h>

const web_asset_t *web_find(const char *name)
{
    for (size_t i = 0; i < web_n_assets; i++)
        if (strcmp(web_assets[i].name, name) == 0) return &web_assets[i];
    return NULL;
}

/* The headers of every dashboard answer, 304s included. */
static void add_headers(struct MHD_Response *resp, const web_asset_t *a)
{
    MHD_add_response_header(resp, "Content-Security-Policy", WEB_CSP);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    /* revalidated on every load: a new binary's page is seen at once */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    if (a) MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, a->etag);
}

enum MHD_Result web_serve(req_t *r, struct MHD_Connection *c)
{
    const char *name = r->path_rest && *r->path_rest ? r->path_rest : "index.html";
    const web_asset_t *a = web_find(name);
    if (!a) return req_queue_error(c, 404, "no such file in the dashboard",
                                   "invalid_request_error", "not_found", NULL);
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                  MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = inm && strstr(inm, a->etag) != NULL;
    struct MHD_Response *resp =
        fresh ? MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT)
              : MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, a->type);
    add_headers(resp, a);
    enum MHD_Result ret = MHD_queue_response(c, fresh ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ret;
}
