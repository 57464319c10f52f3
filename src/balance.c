/* balance: the balance endpoint (see balance.h). A fleet balance (the Redis
 * store) is a synchronous Redis call on the loop, bounded at 300 ms when
 * Redis stalls; a key with a cap adds its own figures (a second call). */
#include "balance.h"
#include <string.h>

/* {"total": cap, "loaned", "available"}; null total/available when uncapped. */
static void add_view(cJSON *o, const book_view_t *v)
{
    if (v->cap >= 0) req_add_credits(o, "total", v->cap); else cJSON_AddNullToObject(o, "total");
    req_add_credits(o, "loaned", v->loaned);
    if (v->cap >= 0) req_add_credits(o, "available", v->available);
    else cJSON_AddNullToObject(o, "available");
}

/* The view, and the key's (kv, when not NULL) as "key". */
static enum MHD_Result queue_balance(struct MHD_Connection *c, const book_view_t *v,
                                     const book_view_t *kv)
{
    cJSON *o = cJSON_CreateObject();
    add_view(o, v);
    if (kv) add_view(cJSON_AddObjectToObject(o, "key"), kv);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return req_queue_body(c, 200, s, strlen(s), "application/json", NULL, NULL);
}

enum MHD_Result balance_serve(req_t *r, struct MHD_Connection *c)
{
    app_t *app = r->app;
    book_view_t v;
    if (r->admin) {
        if (budget_account_view(app->budget, &v) != 0)
            return req_queue_error(c, 503, "the account balance is not available: account "
                                   "sync is not configured or has not succeeded yet (see "
                                   "account.jwt_env)", "account_unavailable",
                                   "account_unavailable", NULL);
        return queue_balance(c, &v, NULL);
    }
    int64_t now = base_wall_ms() / 1000;
    book_view_t kv;
    int with_key = r->kconf && r->kconf->cap >= 0 && r->key_slot >= 0;
    if (budget_team_view(app->budget, r->team, now, &v) != 0 ||
        (with_key && budget_key_view(app->budget, r->key_slot, now, &kv) != 0))
        return req_queue_error(c, 503, "the shared budget store (Redis) cannot be reached, so "
                               "the team's fleet-wide balance is not available",
                               "budget_store_unavailable", "budget_store_unavailable", NULL);
    return queue_balance(c, &v, with_key ? &kv : NULL);
}
