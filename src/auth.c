/* auth: identifying the caller (see auth.h). */
#include "auth.h"
#include "keys.h"
#include <stdio.h>
#include <string.h>

/* Finds the team whose key hashes to sha; -1 if none. Every key is compared
 * (constant time each) so the time taken does not depend on which matched. */
static int find_team(const snap_t *sn, const unsigned char sha[32], int *key)
{
    int found = -1;
    for (size_t t = 0; t < sn->cfg->n_teams; t++) {
        const team_conf_t *tc = &sn->cfg->teams[t];
        for (size_t k = 0; k < tc->n_keys; k++) {
            if (keys_equal(sha, tc->keys[k].sha256) && found < 0) {
                found = (int)t;
                *key = (int)k;
            }
        }
    }
    return found;
}

int auth_identify(const app_t *app, const snap_t *sn, const char *authorization,
                  auth_need_t need, auth_caller_t *out)
{
    memset(out, 0, sizeof *out);
    out->team = -1;
    out->key = -1;
    if (need == AUTH_NONE) return AUTH_OK;
    size_t klen;
    const char *key = keys_bearer(authorization, &klen);
    if (!key) return AUTH_MISSING;
    unsigned char sha[32];
    keys_sha256(key, klen, sha);
    int team_ok = need == AUTH_TEAM || need == AUTH_TEAM_OR_ADMIN;
    int admin_ok = need == AUTH_ADMIN || need == AUTH_TEAM_OR_ADMIN;
    if (sn->passthrough && team_ok) {
        char hex[65];
        keys_hex(sha, hex);
        out->passthrough = 1;
        snprintf(out->key_id, sizeof out->key_id, "pt-%.12s", hex);
        return AUTH_OK;
    }
    if (admin_ok && app->admin_on && keys_equal(sha, app->admin_sha)) {
        out->admin = 1;
        return AUTH_OK;
    }
    int kidx = -1;
    int team = team_ok ? find_team(sn, sha, &kidx) : -1;
    if (team < 0) return AUTH_INVALID;
    out->team = team;
    out->key = kidx;
    snprintf(out->key_id, sizeof out->key_id, "%s", sn->cfg->teams[team].keys[kidx].id);
    return AUTH_OK;
}
