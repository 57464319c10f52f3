/* alerts: the alert thread — detection, the once-only recording of events
 * and their delivery schedule (see alerts.h). The thread owns every field
 * below "thread only"; other threads reach it only through the inbox
 * (alertq) and the stop flag. The listing endpoint and the CLI test are in
 * alerts_api.c; the delivery schedule (attempts, retries, their records) in
 * alertsend.c, the POST itself in webhook.c, the pure parts in alertcore.c.
 * Calls: alerts -> alertq, alertcore, alertsend, ledger_alert, budget;
 * nothing calls back into this file but serve.c. */
#include "alerts.h"
#include "alertcore.h"
#include "alertq.h"
#include "alertsend.h"
#include "ledger_alert.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SWEEP_MS 15000                /* every team checked this often */
#define RETRY_MS 5000                 /* a check the budget or ledger could not do */
#define SHARED_DELAY_MS 200           /* shared store: a settle reaches Redis shortly after */
#define PACE_MS 20                    /* at most one round of hook work this often */
#define MAX_WAIT_MS 60000
#define ACCOUNT_META "alerts.account_low"   /* "<crossings> <armed 0|1>" */
#define DRIFT_META "alerts.drift"           /* likewise */

typedef struct tstate {               /* a team slot, as the thread sees it */
    char name[64];
    int64_t due;                      /* wall ms of the next check; 0 none */
    int again;                        /* marked since that check was set: one more after */
    int refused;                      /* a cap_refused to record (retried with the check) */
    int64_t refused_at_s;
    book_refusal_t why;
    /* the ids of its thresholds for one period (a SHA-256 each: computed
     * once per period and threshold list, not per check) */
    const alert_thresholds_t *ids_of;
    int64_t ids_start;
    char ids[CONFIG_THRESHOLDS_MAX][ALERTCORE_ID_LEN + 1];
} tstate_t;

struct alerts {
    app_t *app;
    alertq_t *q;
    ledger_alerts_t *store;
    alertsend_t *send;                /* the delivery schedule */
    char instance[64];
    pthread_t th;
    int started;
    atomic_int stop;
    int64_t sweep_ms;
    const char *hold;                 /* test builds: while this file exists, wait */
    /* thread only */
    char (*known)[ALERTCORE_ID_LEN + 1];   /* ids recorded or claimed elsewhere: open hash */
    size_t known_cap, known_n;
    tstate_t *ts;
    size_t n_ts;
    int64_t acct_seq;
    int acct_armed;
    int64_t drift_seq;
    int drift_armed;
    int64_t next_sweep;
};

/* ---- the known ids: an open-addressing set (ids are hex: their head is the hash) ---- */

static size_t id_hash(const char *id)
{
    size_t h = 0;
    for (int i = 0; i < 16 && id[i]; i++)
        h = h << 4 | (size_t)(id[i] <= '9' ? id[i] - '0' : (id[i] | 0x20) - 'a' + 10);
    return h;
}

static int known_has(const alerts_t *a, const char *id)
{
    if (!a->known_cap) return 0;
    for (size_t i = id_hash(id) & (a->known_cap - 1);; i = (i + 1) & (a->known_cap - 1)) {
        if (!a->known[i][0]) return 0;
        if (strcmp(a->known[i], id) == 0) return 1;
    }
}

static void known_put(alerts_t *a, const char *id)
{
    if (known_has(a, id)) return;
    if (2 * (a->known_n + 1) > a->known_cap) {        /* at most half full */
        size_t cap = a->known_cap ? 2 * a->known_cap : 256;
        char (*t)[ALERTCORE_ID_LEN + 1] = calloc(cap, sizeof *t);
        if (!t) return;                  /* only a cache: the ledger's INSERT OR IGNORE holds */
        char (*old)[ALERTCORE_ID_LEN + 1] = a->known;
        size_t old_cap = a->known_cap;
        a->known = t;
        a->known_cap = cap;
        a->known_n = 0;
        for (size_t i = 0; i < old_cap; i++)
            if (old[i][0]) known_put(a, old[i]);
        free(old);
    }
    size_t i = id_hash(id) & (a->known_cap - 1);
    while (a->known[i][0]) i = (i + 1) & (a->known_cap - 1);
    snprintf(a->known[i], sizeof a->known[i], "%s", id);
    a->known_n++;
}

/* ---- team slots ---- */

static tstate_t *tstate(alerts_t *a, int slot, const char *name)
{
    if (slot < 0) return NULL;
    if ((size_t)slot >= a->n_ts) {
        size_t n = (size_t)slot + 16;
        tstate_t *t = realloc(a->ts, n * sizeof *t);
        if (!t) return NULL;
        memset(t + a->n_ts, 0, (n - a->n_ts) * sizeof *t);
        a->ts = t;
        a->n_ts = n;
    }
    tstate_t *t = &a->ts[slot];
    if (name && strcmp(t->name, name) != 0) snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* A check of slot, settle_delay ms from now (a settle that may still be on
 * its way to the shared store), never later than one already set unless
 * that one would come too early: then one more follows it. */
static void want_check(alerts_t *a, int slot, const char *name, int64_t now, int64_t delay)
{
    tstate_t *t = tstate(a, slot, name);
    if (!t) return;
    if (!t->due) t->due = now + delay;
    else if (t->due < now + delay) t->again = 1;
}

static const team_conf_t *find_team(const config_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_teams; i++)
        if (strcmp(c->teams[i].name, name) == 0) return &c->teams[i];
    return NULL;
}

/* ---- recording an event ---- */

/* Fires e once: claimed for this instance (team events with the shared
 * store; slot < 0: no claim), recorded in the ledger (with meta_k = meta_v
 * in the same transaction when meta_k is set), logged, queued for delivery.
 * 0 when done (fired now, or already fired here or elsewhere), -1 when the
 * store or the ledger could not be reached (try again later). */
static int fire(alerts_t *a, const alertcore_event_t *e, int slot, const char *meta_k,
                const char *meta_v)
{
    if (known_has(a, e->id)) return 0;
    if (slot >= 0) {
        int c = budget_alert_claim(a->app->budget, slot, e->id, e->at_ms / 1000);
        if (c < 0) return -1;
        if (c == 0) {                   /* another instance of the fleet sends it */
            known_put(a, e->id);
            return 0;
        }
    }
    char *payload = alertcore_payload(e);
    if (!payload) return -1;
    ledger_alert_t al = { .id = e->id, .event = e->event, .team = e->team, .at_ms = e->at_ms,
                          .next_ms = e->at_ms, .payload = payload };
    int rc = ledger_alert_add(a->store, &al, meta_k, meta_v);
    if (rc < 0) {
        base_logl(BASE_ERROR, "alert %s %s: cannot record it in the ledger; trying again shortly",
                  e->event, e->id);
        free(payload);
        return -1;
    }
    known_put(a, e->id);
    if (rc == 0) {                      /* recorded before (a restart) */
        free(payload);
        return 0;
    }
    base_log("alert %s %s: %s", e->event, e->id, payload);
    alertsend_add(a->send, e->id, e->event, payload, 0, e->at_ms, e->at_ms);
    return 0;
}

/* ---- detection ---- */

static void team_event(alertcore_event_t *e, const char *event, const char *id,
                       const alerts_t *a, const team_conf_t *tc, int64_t start, int64_t now)
{
    memset(e, 0, sizeof *e);
    e->event = event;
    e->id = id;
    e->at_ms = now;
    e->instance = a->instance;
    e->team = tc->name;
    e->period_start = start;
    e->period_end = alertcore_period_end(tc->period, start);
}

/* Compares the team's spend in its current period with its thresholds.
 * -1 when it must be tried again later. */
static int check_thresholds(alerts_t *a, int slot, const char *name, int64_t now)
{
    const config_t *cfg = app_snap(a->app)->cfg;
    const team_conf_t *tc = find_team(cfg, name);
    if (!cfg->alerts_on || !tc || tc->cap <= 0) return 0;
    const alert_thresholds_t *th = config_team_thresholds(cfg, tc);
    int64_t start = book_period_start(tc->period, now / 1000);
    tstate_t *t = &a->ts[slot];
    char (*ids)[ALERTCORE_ID_LEN + 1] = t->ids;
    if (t->ids_of != th || t->ids_start != start) {   /* a new period or a reload */
        for (size_t i = 0; i < th->n; i++)
            alertcore_id(ALERTCORE_THRESHOLD, name, start, th->ppm[i], ids[i]);
        t->ids_of = th;
        t->ids_start = start;
    }
    size_t open = 0;
    for (size_t i = 0; i < th->n; i++) open += !known_has(a, ids[i]);
    if (!open) return 0;                /* every threshold of this period has fired */
    book_view_t v;
    if (budget_team_view(a->app->budget, slot, now / 1000, &v) != 0) return -1;
    size_t idx[CONFIG_THRESHOLDS_MAX];
    size_t k = alertcore_reached(v.cap, v.spent, th->ppm, th->n, idx);
    for (size_t j = 0; j < k; j++) {
        alertcore_event_t e;
        team_event(&e, ALERTCORE_THRESHOLD, ids[idx[j]], a, tc, start, now);
        e.ppm = th->ppm[idx[j]];
        e.cap = v.cap;
        e.spent = v.spent;
        e.loaned = v.loaned;
        e.available = v.available;
        if (fire(a, &e, slot, NULL, NULL) != 0) return -1;
    }
    return 0;
}

static int record_refused(alerts_t *a, int slot, tstate_t *t, int64_t now)
{
    const config_t *cfg = app_snap(a->app)->cfg;
    const team_conf_t *tc = find_team(cfg, t->name);
    if (!cfg->alerts_on || !tc) return 0;
    int64_t start = book_period_start(tc->period, t->refused_at_s);
    char id[ALERTCORE_ID_LEN + 1];
    alertcore_id(ALERTCORE_CAP_REFUSED, t->name, start, 0, id);
    alertcore_event_t e;
    team_event(&e, ALERTCORE_CAP_REFUSED, id, a, tc, start, now);
    e.cap = t->why.cap;
    e.spent = t->why.spent;
    e.loaned = t->why.loaned;
    e.available = t->why.available;
    e.required = t->why.required;
    return fire(a, &e, slot, NULL, NULL);
}

/* The account: fires account_low when the projection falls below
 * account_below while armed; a sync that shows it at or above re-arms. */
static void check_account(alerts_t *a, int synced, int64_t now)
{
    const config_t *cfg = app_snap(a->app)->cfg;
    book_view_t v;
    if (!cfg->alerts_on || cfg->alert_account_below <= 0 ||
        budget_account_view(a->app->budget, &v) != 0)
        return;
    char meta[64];
    if (v.available < cfg->alert_account_below && a->acct_armed) {
        char id[ALERTCORE_ID_LEN + 1];
        int64_t seq = a->acct_seq + 1;
        alertcore_id(ALERTCORE_ACCOUNT_LOW, a->instance, seq, 0, id);
        alertcore_event_t e = { .event = ALERTCORE_ACCOUNT_LOW, .id = id, .at_ms = now,
                                .instance = a->instance, .cap = v.cap, .loaned = v.loaned,
                                .available = v.available, .below = cfg->alert_account_below };
        snprintf(meta, sizeof meta, "%lld 0", (long long)seq);
        if (fire(a, &e, -1, ACCOUNT_META, meta) == 0) {
            a->acct_seq = seq;
            a->acct_armed = 0;
        }
    } else if (v.available >= cfg->alert_account_below && !a->acct_armed && synced) {
        snprintf(meta, sizeof meta, "%lld 1", (long long)a->acct_seq);
        if (ledger_alert_meta_set(a->store, ACCOUNT_META, meta) == 0) {
            a->acct_armed = 1;
            base_log("alerts: the account's projected available is back at or above "
                     "account_below; account_low is armed again");
        }
    }
}

/* Marks every team of the current config for a check, now. */
static void sweep(alerts_t *a, int64_t now)
{
    const snap_t *sn = app_snap(a->app);
    for (size_t i = 0; i < sn->cfg->n_teams; i++)
        want_check(a, sn->slot[i], sn->cfg->teams[i].name, now, 0);
    a->next_sweep = now + a->sweep_ms;
}

/* A runaway episode's first refusal: its event, once per episode (the id
 * carries the subject, the window and when the episode began). */
static void record_runaway(alerts_t *a, const alertq_runaway_t *w)
{
    if (!app_snap(a->app)->cfg->alerts_on) return;
    char scope[140], id[ALERTCORE_ID_LEN + 1];
    snprintf(scope, sizeof scope, "%s/%s", w->team, w->key);
    alertcore_id(ALERTCORE_RUNAWAY, scope, w->at_ms, w->hour, id);
    alertcore_event_t e = { .event = ALERTCORE_RUNAWAY, .id = id, .at_ms = w->at_ms,
                            .instance = a->instance, .team = w->team,
                            .key = w->key[0] ? w->key : NULL, .hour = w->hour,
                            .spent_in_window = w->spent_in_window, .limit = w->limit };
    if (fire(a, &e, -1, NULL, NULL) != 0)
        base_logl(BASE_ERROR, "alert runaway %s: not recorded", id);
}

/* A top-up detected, or the top-up guard tripped (account thread): its
 * event, once (the id carries the instance and the top-up's time). */
static void record_account_event(alerts_t *a, const alertq_acct_t *ev)
{
    if (!app_snap(a->app)->cfg->alerts_on) return;
    const char *name = ev->kind == ALERTQ_TOPUP ? ALERTCORE_TOPUP : ALERTCORE_TOPUP_LIMIT;
    char id[ALERTCORE_ID_LEN + 1];
    alertcore_id(name, a->instance, ev->at_ms, 0, id);
    alertcore_event_t e = { .event = name, .id = id, .at_ms = ev->at_ms,
                            .instance = a->instance, .added = ev->added, .cap = ev->total,
                            .prev_total = ev->prev_total, .topups = ev->topups,
                            .max_topups = ev->max, .until_ms = ev->until_ms };
    if (fire(a, &e, -1, NULL, NULL) != 0)
        base_logl(BASE_ERROR, "alert %s %s: not recorded", name, id);
}

/* The drift: fires when the last hour's drift passes account.drift_alert
 * either way while armed (once per crossing, as account_low); armed again
 * when a sync shows it back within. */
static void check_drift(alerts_t *a, nanos_t drift, int64_t at)
{
    const config_t *cfg = app_snap(a->app)->cfg;
    if (!cfg->alerts_on || cfg->drift_alert <= 0) return;
    nanos_t mag = drift < 0 ? -drift : drift;
    char meta[64];
    if (mag > cfg->drift_alert && a->drift_armed) {
        char id[ALERTCORE_ID_LEN + 1];
        int64_t seq = a->drift_seq + 1;
        alertcore_id(ALERTCORE_DRIFT, a->instance, seq, 0, id);
        alertcore_event_t e = { .event = ALERTCORE_DRIFT, .id = id, .at_ms = at,
                                .instance = a->instance, .drift = drift,
                                .limit = cfg->drift_alert };
        snprintf(meta, sizeof meta, "%lld 0", (long long)seq);
        if (fire(a, &e, -1, DRIFT_META, meta) == 0) {
            a->drift_seq = seq;
            a->drift_armed = 0;
        }
    } else if (mag <= cfg->drift_alert && !a->drift_armed) {
        snprintf(meta, sizeof meta, "%lld 1", (long long)a->drift_seq);
        if (ledger_alert_meta_set(a->store, DRIFT_META, meta) == 0) {
            a->drift_armed = 1;
            base_log("alerts: the account's drift is back within drift_alert; drift is armed "
                     "again");
        }
    }
}

/* What the hooks marked: checks to schedule, refusals, the account. */
static void absorb(alerts_t *a, const alertq_take_t *t, int64_t now)
{
    for (size_t i = 0; i < t->n_runaway; i++) record_runaway(a, &t->runaway[i]);
    for (size_t i = 0; i < t->n_acct; i++) record_account_event(a, &t->acct[i]);
    if (t->drift_known) check_drift(a, t->drift, t->drift_at_ms);
    int64_t delay = strcmp(budget_store_state(a->app->budget), "local") == 0 ? 0
                                                                              : SHARED_DELAY_MS;
    for (size_t i = 0; i < t->n; i++) {
        const alertq_team_t *m = &t->teams[i];
        tstate_t *ts = tstate(a, t->slots[i], m->name);
        if (!ts) continue;
        if (m->check) want_check(a, t->slots[i], m->name, now, delay);
        if (m->refused && !ts->refused) {
            ts->refused = 1;
            ts->refused_at_s = m->refused_at_s;
            ts->why = m->why;
        }
    }
    if (t->account || t->account_synced) check_account(a, t->account_synced, now);
}

static void run_checks(alerts_t *a, int64_t now)
{
    for (size_t s = 0; s < a->n_ts; s++) {
        tstate_t *t = &a->ts[s];
        if (t->refused && record_refused(a, (int)s, t, now) == 0) t->refused = 0;
        if (t->refused && !t->due) t->due = now + RETRY_MS;
        if (!t->due || t->due > now) continue;
        t->due = 0;
        if (check_thresholds(a, (int)s, t->name, now) != 0) {
            t->due = now + RETRY_MS;
        } else if (t->again) {
            t->again = 0;
            want_check(a, (int)s, t->name, now,
                       strcmp(budget_store_state(a->app->budget), "local") ? SHARED_DELAY_MS : 0);
        }
    }
}

/* ---- the thread ---- */

static int64_t next_due(const alerts_t *a)
{
    int64_t next = alertsend_next(a->send, a->next_sweep);
    for (size_t s = 0; s < a->n_ts; s++)
        if (a->ts[s].due && a->ts[s].due < next) next = a->ts[s].due;
    return next;
}

static void nap_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

static void *alerts_main(void *arg)
{
    alerts_t *a = arg;
    sweep(a, base_wall_ms());         /* a crossing a crash left undetected */
    for (;;) {
        int64_t now = base_wall_ms(), wait = next_due(a) - now;
        if (wait < 0) wait = 0;
        if (wait > MAX_WAIT_MS) wait = MAX_WAIT_MS;
        alertq_take_t t;
        if (alertq_take(a->q, base_mono_ms() + wait, &t) != 0) {
            nap_ms(100);
            continue;
        }
        if (t.stop) {
            alertq_take_free(&t);
            break;
        }
        while (a->hold && access(a->hold, F_OK) == 0 && !atomic_load(&a->stop)) nap_ms(20);
        now = base_wall_ms();
        absorb(a, &t, now);
        int hooked = t.n || t.account || t.account_synced || t.n_acct || t.drift_known;
        alertq_take_free(&t);
        if (now >= a->next_sweep) sweep(a, now);
        run_checks(a, now);
        alertsend_due(a->send);
        /* marks made meanwhile wait for the next round (no wake-up per request) */
        if (hooked && !atomic_load(&a->stop)) nap_ms(PACE_MS);
    }
    return NULL;
}

/* ---- start and stop ---- */

static int load_one(void *ud, const ledger_alert_t *al)
{
    alerts_t *a = ud;
    known_put(a, al->id);
    if (al->state == LEDGER_ALERT_PENDING) {
        char *p = strdup(al->payload);
        if (p) alertsend_add(a->send, al->id, al->event, p, al->attempts, al->at_ms,
                          al->next_ms);
    }
    return 0;
}

static void test_hooks(alerts_t *a)
{
#ifdef PINMETER_TEST_HOOKS
    /* Test builds only: a shorter schedule, and a hold on the thread so a
     * test can kill the process between a crossing and its detection. */
    const char *s;
    int64_t base = 1000, cap = 300000, giveup = 24LL * 3600 * 1000;
    if ((s = getenv("PINMETER_TEST_ALERT_BACKOFF_MS")) && atoll(s) > 0) {
        base = atoll(s);
        cap = base * 300;
    }
    if ((s = getenv("PINMETER_TEST_ALERT_GIVEUP_MS")) && atoll(s) > 0) giveup = atoll(s);
    alertsend_schedule(a->send, base, cap, giveup);
    if ((s = getenv("PINMETER_TEST_ALERT_SWEEP_MS")) && atoll(s) > 0) a->sweep_ms = atoll(s);
    if ((s = getenv("PINMETER_TEST_ALERT_HOLD")) && *s) a->hold = s;
#else
    (void)a;
#endif
}

int alerts_start(app_t *app, const char *instance, alerts_t **out, char *err, size_t errlen)
{
    const config_t *cfg = app_snap(app)->cfg;
    *out = NULL;
    if (!cfg->alerts_on) return 0;
    alerts_t *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->app = app;
    snprintf(a->instance, sizeof a->instance, "%s", instance);
    a->sweep_ms = SWEEP_MS;
    a->acct_armed = 1;
    a->drift_armed = 1;
    const char *secret = cfg->alert_secret_env[0] ? getenv(cfg->alert_secret_env) : NULL;
    if (cfg->alert_secret_env[0] && (!secret || !*secret))
        base_logl(BASE_WARN, "alerts: %s (alerts.secret_env) is not set: events are sent "
                  "unsigned", cfg->alert_secret_env);
    if (!(a->q = alertq_new())) goto oom;
    if (!(a->store = ledger_alerts_open(app->ledger, err, errlen))) goto fail;
    if (!(a->send = alertsend_new(app, a->store, secret, &a->stop))) goto oom;
    test_hooks(a);
    char meta[64];
    long long seq = 0;
    int armed = 1;
    if (ledger_alert_meta_get(a->store, ACCOUNT_META, meta, sizeof meta) != 0 ||
        ledger_alert_each(a->store, 0, load_one, a) != 0) {
        snprintf(err, errlen, "%.400s: cannot read the alerts from the ledger", cfg->ledger);
        goto fail;
    }
    if (sscanf(meta, "%lld %d", &seq, &armed) == 2) {
        a->acct_seq = seq;
        a->acct_armed = armed != 0;
    }
    if (ledger_alert_meta_get(a->store, DRIFT_META, meta, sizeof meta) != 0) {
        snprintf(err, errlen, "%.400s: cannot read the alerts from the ledger", cfg->ledger);
        goto fail;
    }
    if (sscanf(meta, "%lld %d", &seq, &armed) == 2) {
        a->drift_seq = seq;
        a->drift_armed = armed != 0;
    }
    app->alertq = a->q;
    if (pthread_create(&a->th, NULL, alerts_main, a) != 0) {
        app->alertq = NULL;
        snprintf(err, errlen, "cannot start the alert thread");
        goto fail;
    }
    pthread_setname_np(a->th, "pm-alerts");
    a->started = 1;
    if (alertsend_pending(a->send))
        base_log("alerts: %zu event(s) still to be delivered from before",
                 alertsend_pending(a->send));
    *out = a;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    alerts_stop(a);
    alerts_free(a);
    return -1;
}

void alerts_stop(alerts_t *a)
{
    if (!a) return;
    if (a->started) {
        atomic_store(&a->stop, 1);
        alertq_stop(a->q);
        pthread_join(a->th, NULL);
        a->started = 0;
    }
    ledger_alerts_close(a->store);
    a->store = NULL;
}

void alerts_free(alerts_t *a)
{
    if (!a) return;
    alerts_stop(a);
    if (a->app->alertq == a->q) a->app->alertq = NULL;
    alertq_free(a->q);
    alertsend_free(a->send);
    free(a->ts);
    free(a->known);
    free(a);
}
