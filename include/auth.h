/* auth: who is calling. Reads the Authorization header's bearer token and
 * finds it among the admin token and the snapshot's team keys (SHA-256,
 * compared in constant time; nothing is stored or logged). */
#ifndef PINMETER_AUTH_H
#define PINMETER_AUTH_H
#include "app.h"

/* Who may call a route. */
typedef enum {
    AUTH_NONE = 0,                 /* anyone: nothing is checked */
    AUTH_TEAM,                     /* a team key (in passthrough mode: any bearer key) */
    AUTH_ADMIN,                    /* the admin token */
    AUTH_TEAM_OR_ADMIN,
    AUTH_METRICS,                  /* as the config's "metrics_auth" says: the route
                                    * table resolves it to AUTH_ADMIN or AUTH_NONE
                                    * (auth_identify refuses it unresolved) */
} auth_need_t;

enum { AUTH_OK = 0, AUTH_MISSING = -1, AUTH_INVALID = -2 };

typedef struct auth_caller {
    int admin;                     /* showed the admin token */
    int team;                      /* index into sn->cfg->teams; -1 none */
    int key;                       /* index into that team's keys; -1 none */
    int passthrough;               /* passthrough mode's caller: team "default" */
    char key_id[64];               /* the key's id; passthrough: "pt-" + 12 hex of its hash */
} auth_caller_t;

/* Checks authorization (the header's value, NULL when absent) against need.
 * AUTH_OK with *out filled; AUTH_MISSING when there is no bearer token;
 * AUTH_INVALID when it is not one need accepts. */
int auth_identify(const app_t *app, const snap_t *sn, const char *authorization,
                  auth_need_t need, auth_caller_t *out);

#endif
