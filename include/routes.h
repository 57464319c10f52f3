/* routes: the table of every endpoint — its path, the methods it takes,
 * who may call it (in team mode and in passthrough mode), and its handler —
 * and the first step of every request: find its route, answer 404, 405 or
 * 401 from the table, or create the request and record its caller. Adding
 * an endpoint is one row here and a handler in the module of its concern. */
#ifndef PINMETER_ROUTES_H
#define PINMETER_ROUTES_H
#include "auth.h"
#include "req.h"

enum { ROUTE_GET = 1, ROUTE_POST = 2, ROUTE_PUT = 4 };   /* a route's methods; HEAD goes with GET */
enum { ROUTE_TEAMS = 1, ROUTE_PT = 2, ROUTE_ANY = 3 };   /* the modes a row serves */

typedef struct route {
    const char *path;
    unsigned methods;
    unsigned modes;                /* with teams configured, in passthrough mode, or both */
    auth_need_t auth;              /* who may call it (passthrough: AUTH_TEAM = any bearer key) */
    int forward_auth;              /* passthrough: the caller's Authorization goes upstream */
    int early;                     /* answered from the headers alone, body not awaited */
    int metered;                   /* a chat completion: metered, counted, alerted on */
    int prefix;                    /* path is a prefix ("/x/"); the rest is r->path_rest */
    req_serve_fn serve;
} route_t;

/* The row for path in the mode passthrough says, or NULL. */
const route_t *routes_find(const char *path, int passthrough);

/* The first call of a request (its headers are in): answers 404, 405 or 401
 * from the table; otherwise creates the request in *con_cls with its caller
 * (team slot, key id, admin) and its route's handler, to be run once its
 * body is complete (an early route's runs at once). A 401 is answered with
 * the request created (the listener's completion callback frees it). */
enum MHD_Result routes_begin(app_t *app, worker_t *w, struct MHD_Connection *c,
                             const char *url, const char *method, void **con_cls);

#endif
