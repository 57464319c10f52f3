/* balance: the balance endpoint (see balance.h). A fleet balance (the Redis
 * store) is a synchronous Redis call on the loop, bounded at 300 ms when
 * Redis stalls. */
#include "balance.h"
#include <string.h>

/* Adds {"total": cap, "loaned", "available"} to o; null total/available
 * when uncapped. */
static void add_view(cJSON *o, const book_view_t *v)
{
    if (v->cap >= 0) req_add_credits(o, "total", v->cap); else cJSON_AddNullToObject(o, "total");
    req_add_credits(o, "loaned", v->loaned);
    if (v->cap >= 0) req_add_credits(o, "available", v->available);
    else cJSON_AddNullToObject(o, "available");
}

/* The balance; with a key that has a cap of its own, "key" describes it. */
static enum MHD_Result queue_balance(struct MHD_Connection *c, const book_view_t *v,
                                     const book_view_t *key)
{
    cJSON *o = cJSON_CreateObject();
    add_view(o, v);
    if (key) add_view(cJSON_AddObjectToObject(o, "key"), key);
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
    if (budget_team_view(app->budget, r->team, base_wall_ms() / 1000, &v) != 0)
        return req_queue_error(c, 503, "the shared budget store (Redis) cannot be reached, so "
                               "the team's fleet-wide balance is not available",
                               "budget_store_unavailable", "budget_store_unavailable", NULL);
    book_view_t kv;
    int key = r->kconf && r->kconf->cap >= 0 &&
              budget_key_view(app->budget, r->key_slot, base_wall_ms() / 1000, &kv) == 0;
    return queue_balance(c, &v, key ? &kv : NULL);
}
