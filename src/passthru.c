/* passthru: forwarding unmetered requests to Pinata (see passthru.h). The
 * connection waits suspended; the upstream side answers it. */
#include "passthru.h"
#include "upstream.h"

/* Forwards r to path under upstream.base_url, with r->client_auth as its
 * Authorization when set; the upstream side answers it. */
static enum MHD_Result passthru_forward(req_t *r, struct MHD_Connection *c, const char *path)
{
    (void)c;
    r->up_path = path;
    req_hold(r);
    upstream_submit(r->w->up, r);
    return MHD_YES;
}

enum MHD_Result passthru_models(req_t *r, struct MHD_Connection *c)
{
    return passthru_forward(r, c, "/v0/llm/models");
}

enum MHD_Result passthru_balance(req_t *r, struct MHD_Connection *c)
{
    return passthru_forward(r, c, "/v0/credits/balance");
}
