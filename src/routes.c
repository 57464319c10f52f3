/* routes: the route table and the checks every request passes before its
 * handler runs (see routes.h). */
#include "routes.h"
#include "alerts.h"
#include "balance.h"
#include "chat.h"
#include "events.h"
#include "guard.h"
#include "health.h"
#include "passthru.h"
#include "reconcile_api.h"
#include "reqlog.h"
#include "scrape.h"
#include "teams.h"
#include "topup.h"
#include "usage_api.h"
#include "web.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const route_t ROUTES[] = {
    /* path                       methods     modes        auth                fwd early
     *                            metered prefix handler */
    { "/v0/llm/chat/completions", ROUTE_POST, ROUTE_ANY,   AUTH_TEAM,          1, 0,
                                  1, 0, chat_serve },
    { "/v1/chat/completions",     ROUTE_POST, ROUTE_ANY,   AUTH_TEAM,          1, 0,
                                  1, 0, chat_serve },
    { "/v0/llm/models",           ROUTE_GET,  ROUTE_ANY,   AUTH_NONE,          0, 0,
                                  0, 0, passthru_models },
    { "/v0/credits/balance",      ROUTE_GET,  ROUTE_TEAMS, AUTH_TEAM_OR_ADMIN, 0, 1,
                                  0, 0, balance_serve },
    /* passthrough: Pinata answers the caller's own key */
    { "/v0/credits/balance",      ROUTE_GET,  ROUTE_PT,    AUTH_NONE,          1, 0,
                                  0, 0, passthru_balance },
    { "/healthz",                 ROUTE_GET,  ROUTE_ANY,   AUTH_NONE,          0, 1,
                                  0, 0, health_serve },
    { "/v0/alerts",               ROUTE_GET,  ROUTE_ANY,   AUTH_ADMIN,         0, 0,
                                  0, 0, alerts_serve },
    { "/metrics",                 ROUTE_GET,  ROUTE_ANY,   AUTH_METRICS,       0, 0,
                                  0, 0, scrape_serve },
    /* usage: a team key sees its own team, the admin token every team; in
     * passthrough mode (any bearer key is a caller there) the admin only */
    { "/v0/usage",                ROUTE_GET,  ROUTE_TEAMS, AUTH_TEAM_OR_ADMIN, 0, 0,
                                  0, 0, usage_api_serve },
    { "/v0/usage",                ROUTE_GET,  ROUTE_PT,    AUTH_ADMIN,         0, 0,
                                  0, 0, usage_api_serve },
    { "/v0/usage/requests",       ROUTE_GET,  ROUTE_TEAMS, AUTH_TEAM_OR_ADMIN, 0, 0,
                                  0, 0, reqlog_serve },
    { "/v0/usage/requests",       ROUTE_GET,  ROUTE_PT,    AUTH_ADMIN,         0, 0,
                                  0, 0, reqlog_serve },
    { "/v0/usage/requests/",      ROUTE_GET,  ROUTE_TEAMS, AUTH_TEAM_OR_ADMIN, 0, 0,
                                  0, 1, reqlog_serve_one },
    { "/v0/usage/requests/",      ROUTE_GET,  ROUTE_PT,    AUTH_ADMIN,         0, 0,
                                  0, 1, reqlog_serve_one },
    /* the teams' current periods: a team key sees its own, the admin every
     * team; in passthrough mode (any bearer key is a caller) the admin only */
    { "/v0/teams",                ROUTE_GET,  ROUTE_TEAMS, AUTH_TEAM_OR_ADMIN, 0, 0,
                                  0, 0, teams_serve },
    { "/v0/teams",                ROUTE_GET,  ROUTE_PT,    AUTH_ADMIN,         0, 0,
                                  0, 0, teams_serve },
    /* the account's auto top-up settings at Pinata (with the JWT), the top-up
     * guard's reset, and the reconciliation of Pinata's spend with the
     * ledger's: the admin only */
    { "/v0/credits/topup/config", ROUTE_GET | ROUTE_PUT, ROUTE_ANY, AUTH_ADMIN, 0, 0,
                                  0, 0, topup_serve },
    { "/v0/credits/topup/guard/reset", ROUTE_POST, ROUTE_ANY, AUTH_ADMIN,    0, 0,
                                  0, 0, guard_reset_serve },
    { "/v0/account/reconcile",    ROUTE_GET,  ROUTE_ANY,   AUTH_ADMIN,         0, 0,
                                  0, 0, reconcile_api_serve },
    /* the dashboard's page and files: no data in them, so no token */
    { "/dashboard",               ROUTE_GET,  ROUTE_ANY,   AUTH_NONE,          0, 1,
                                  0, 0, web_serve },
    { "/dashboard/",              ROUTE_GET,  ROUTE_ANY,   AUTH_NONE,          0, 1,
                                  0, 1, web_serve },
};

/* Who may call rt under snapshot sn. */
static auth_need_t need_of(const route_t *rt, const snap_t *sn)
{
    if (rt->auth == AUTH_METRICS) return sn->cfg->metrics_open ? AUTH_NONE : AUTH_ADMIN;
    return rt->auth;
}

const route_t *routes_find(const char *path, int passthrough)
{
    unsigned mode = passthrough ? ROUTE_PT : ROUTE_TEAMS;
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++)
        if ((ROUTES[i].modes & mode) &&
            (ROUTES[i].prefix ? strncmp(ROUTES[i].path, path, strlen(ROUTES[i].path)) == 0
                              : strcmp(ROUTES[i].path, path) == 0))
            return &ROUTES[i];
    return NULL;
}

static unsigned method_of(const char *m)
{
    if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0) return ROUTE_GET;
    if (strcmp(m, "POST") == 0) return ROUTE_POST;
    if (strcmp(m, "PUT") == 0) return ROUTE_PUT;
    return 0;
}

/* Sets who r's caller is: its budget slot, team, key id. */
static void take_caller(req_t *r, const snap_t *sn, const auth_caller_t *who)
{
    r->admin = who->admin;
    if (who->passthrough) {
        r->team = sn->default_slot;
        snprintf(r->rec.team, sizeof r->rec.team, "default");
    } else if (who->team >= 0) {
        r->tconf = &sn->cfg->teams[who->team];
        r->team = sn->slot[who->team];
        if (who->key >= 0) {
            r->kconf = &r->tconf->keys[who->key];
            r->key_slot = sn->kslot[who->team][who->key];
        }
        snprintf(r->rec.team, sizeof r->rec.team, "%s", r->tconf->name);
    }
    snprintf(r->rec.key_id, sizeof r->rec.key_id, "%s", who->key_id);
}

enum MHD_Result routes_begin(app_t *app, worker_t *w, struct MHD_Connection *c,
                             const char *url, const char *method, void **con_cls)
{
    const snap_t *sn = app_snap(app);
    const route_t *rt = routes_find(url, sn->passthrough);
    if (!rt)
        return req_queue_error(c, 404, "no such endpoint", "invalid_request_error",
                               "not_found", NULL);
    if (!(method_of(method) & rt->methods))
        return req_queue_error(c, 405, rt->methods == ROUTE_POST ? "use POST"
                                       : rt->methods == ROUTE_GET ? "use GET" : "use GET or PUT",
                               "invalid_request_error", "method_not_allowed", NULL);
    req_t *r = req_new(app, w, c);
    if (!r) return MHD_NO;
    *con_cls = r;
    r->serve = rt->serve;
    r->method = method_of(method);
    r->snap = sn;
    r->chat = rt->metered;
    if (rt->prefix && !(r->path_rest = strdup(url + strlen(rt->path)))) return MHD_NO;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                   MHD_HTTP_HEADER_AUTHORIZATION);
    auth_caller_t who;
    int rc = auth_identify(app, sn, auth, need_of(rt, sn), &who);
    if (rc != AUTH_OK && r->chat) events_refused(app, r, EVENTS_UNAUTHORIZED, NULL);
    if (rc == AUTH_MISSING)
        return req_queue_error(c, 401, "missing API key: send 'Authorization: Bearer <key>'",
                               "authentication_error", "missing_api_key", NULL);
    if (rc != AUTH_OK)
        return req_queue_error(c, 401, "invalid API key", "authentication_error",
                               "invalid_api_key", NULL);
    take_caller(r, sn, &who);
    if (sn->passthrough && rt->forward_auth && auth && !(r->client_auth = strdup(auth)))
        return MHD_NO;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    if (declared > sn->cfg->max_body) r->too_large = 1;
    else r->body_hint = (size_t)declared;
    return rt->early ? r->serve(r, c) : MHD_YES;
}
