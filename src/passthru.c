/* passthru: forwarding unmetered requests to Pinata (see passthru.h). The
 * connection waits suspended; the upstream side answers it. */
#include "passthru.h"
#include "upstream.h"

enum MHD_Result passthru_forward(req_t *r, struct MHD_Connection *c, const char *path)
{
    (void)c;
    r->up_path = path;
    req_wait_upstream(r);
    upstream_submit(r->app->up, r);
    return MHD_YES;
}

enum MHD_Result passthru_models(req_t *r, struct MHD_Connection *c)
{
    return passthru_forward(r, c, "/v0/llm/models");
}
