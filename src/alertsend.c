/* alertsend: the events still to be delivered and their attempts (see
 * alertsend.h). Moved out of alerts.c along the seam between detecting an
 * event and delivering it: alerts.c queues, this file POSTs, retries and
 * records. Calls webhook, ledger_alert, alertcore (the schedule) and events
 * (the metrics); nothing here calls back into alerts.c. */
#include "alertsend.h"
#include "alertcore.h"
#include "events.h"
#include "webhook.h"

#include <stdlib.h>
#include <string.h>

#define MAX_WAIT_MS 60000             /* alerts off by a reload: look again this often */

typedef struct delivery {             /* an event still to be delivered */
    char id[ALERTCORE_ID_LEN + 1];
    char event[32];
    char *payload;
    int attempts;
    int64_t first_ms, next_ms;
} delivery_t;

struct alertsend {
    app_t *app;
    ledger_alerts_t *store;
    webhook_t *wh;
    const atomic_int *stop;
    int64_t base_ms, cap_ms, giveup_ms;
    delivery_t *dl;
    size_t n_dl, cap_dl;
};

alertsend_t *alertsend_new(app_t *app, ledger_alerts_t *store, const char *secret,
                           const atomic_int *stop)
{
    alertsend_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->app = app;
    s->store = store;
    s->stop = stop;
    s->base_ms = 1000;
    s->cap_ms = 300000;
    s->giveup_ms = 24LL * 3600 * 1000;
    if (!(s->wh = webhook_new(secret, stop))) {
        free(s);
        return NULL;
    }
    return s;
}

void alertsend_free(alertsend_t *s)
{
    if (!s) return;
    webhook_free(s->wh);
    for (size_t i = 0; i < s->n_dl; i++) free(s->dl[i].payload);
    free(s->dl);
    free(s);
}

void alertsend_schedule(alertsend_t *s, int64_t base_ms, int64_t cap_ms, int64_t giveup_ms)
{
    s->base_ms = base_ms;
    s->cap_ms = cap_ms;
    s->giveup_ms = giveup_ms;
}

void alertsend_add(alertsend_t *s, const char *id, const char *event, char *payload,
                   int attempts, int64_t first_ms, int64_t next_ms)
{
    if (s->n_dl == s->cap_dl) {
        size_t cap = s->cap_dl ? 2 * s->cap_dl : 16;
        delivery_t *d = realloc(s->dl, cap * sizeof *d);
        if (!d) {
            base_logl(BASE_ERROR, "alert %s: out of memory; its delivery resumes at the next start",
                      id);
            free(payload);
            return;
        }
        s->dl = d;
        s->cap_dl = cap;
    }
    delivery_t *d = &s->dl[s->n_dl++];
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->event, sizeof d->event, "%s", event);
    d->payload = payload;
    d->attempts = attempts;
    d->first_ms = first_ms;
    d->next_ms = next_ms;
}

static void drop_delivery(alertsend_t *s, size_t i)
{
    free(s->dl[i].payload);
    s->dl[i] = s->dl[--s->n_dl];
}

/* One attempt of delivery i. Returns 1 when it left the list. */
static int attempt(alertsend_t *s, size_t i)
{
    delivery_t *d = &s->dl[i];
    const config_t *cfg = app_snap(s->app)->cfg;
    if (!cfg->alerts_on) {              /* alerts taken out by a reload: wait */
        d->next_ms = base_wall_ms() + MAX_WAIT_MS;
        return 0;
    }
    char err[256] = "";
    long st = webhook_post(s->wh, cfg->alert_url, d->event, d->payload, strlen(d->payload),
                           err, sizeof err);
    if (atomic_load(s->stop) && st == 0) return 0;   /* cut at shutdown: still pending */
    int64_t now = base_wall_ms();
    d->attempts++;
    if (st >= 200 && st < 300) {
        base_log("alert %s %s: delivered (HTTP %ld, attempt %d)", d->event, d->id, st,
                 d->attempts);
        if (ledger_alert_update(s->store, d->id, LEDGER_ALERT_DELIVERED, d->attempts, NULL,
                                now) != 0)
            base_logl(BASE_ERROR, "alert %s: cannot record its delivery in the ledger", d->id);
        events_alert(s->app, d->event, 1);
        drop_delivery(s, i);
        return 1;
    }
    if (st > 0) snprintf(err, sizeof err, "HTTP %ld", st);
    events_alert(s->app, d->event, 0);
    int64_t next;
    if (alertcore_next_attempt(d->first_ms, d->attempts, now, s->base_ms, s->cap_ms,
                               s->giveup_ms, &next) == 0) {
        base_logl(BASE_WARN, "alert %s %s: attempt %d failed (%s); next in %lld ms", d->event,
                  d->id, d->attempts, err, (long long)(next - now));
        d->next_ms = next;
        if (ledger_alert_update(s->store, d->id, LEDGER_ALERT_PENDING, d->attempts, err,
                                next) != 0)
            base_logl(BASE_ERROR, "alert %s: cannot record the attempt in the ledger", d->id);
        return 0;
    }
    base_logl(BASE_ERROR, "alert %s %s: giving up after %d attempts over %lld s (last: %s)",
              d->event, d->id, d->attempts, (long long)((now - d->first_ms) / 1000), err);
    if (ledger_alert_update(s->store, d->id, LEDGER_ALERT_FAILED, d->attempts, err, now) != 0)
        base_logl(BASE_ERROR, "alert %s: cannot record its failure in the ledger", d->id);
    drop_delivery(s, i);
    return 1;
}

void alertsend_due(alertsend_t *s)
{
    for (size_t i = 0; i < s->n_dl && !atomic_load(s->stop);) {
        if (s->dl[i].next_ms <= base_wall_ms() && attempt(s, i)) continue;
        i++;
    }
}

int64_t alertsend_next(const alertsend_t *s, int64_t before)
{
    int64_t next = before;
    for (size_t i = 0; i < s->n_dl; i++)
        if (s->dl[i].next_ms < next) next = s->dl[i].next_ms;
    return next;
}

size_t alertsend_pending(const alertsend_t *s)
{
    return s->n_dl;
}
