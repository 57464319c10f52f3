/* metrics: the registry (see metrics.h) — cells keyed by kind and label
 * values in one open-addressing hash table behind one mutex, each cell
 * holding every series of its label set, so a request's settle is one
 * lookup. Cells are never removed; the exposition (metrics_text.c) works on
 * a copy taken by metrics_copy. */
#include "metrics_int.h"
#include <stdlib.h>
#include <string.h>

/* A label value longer than this is cut (no configured name or priced model
 * id comes near it). */
#define LABEL_MAX 512             /* as metrics_escape cuts */

static const int64_t LATENCY_US[] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,
    5000000, 10000000, 30000000, 60000000, 120000000, 300000000, 600000000,
};
static const int64_t ADMISSION_US[] = {
    10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
    1000000,
};
const mbounds_t metrics_bounds[MB_N] = {
    { sizeof LATENCY_US / sizeof LATENCY_US[0], LATENCY_US },
    { sizeof ADMISSION_US / sizeof ADMISSION_US[0], ADMISSION_US },
};

/* The label names of each kind, in order; a kind's optional key label is
 * "key" after model. */
static const char *const LABELS[MK_N][4] = {
    [MK_TM] = { "team", "model", "key" },
    [MK_REQ] = { "team", "model", "key", "code" },
    [MK_REJ] = { "team", "reason" },
    [MK_TEAM] = { "team" },
    [MK_MODEL] = { "model" },
    [MK_ALERT] = { "event", "result" },
    [MK_CLAMP] = { "team" },
};

metrics_t *metrics_new(void)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->index_cap = 1024;
    if (!(m->index = calloc(m->index_cap, sizeof *m->index))) {
        free(m);
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(metrics_t *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_cells; i++) free(m->cells[i]->h);
    while (m->arena) {
        struct marena *next = m->arena->next;
        free(m->arena);
        m->arena = next;
    }
    free(m->cells);
    free(m->index);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ---- keys and label text ---------------------------------------------- */

/* A label set being looked up: values by position in LABELS[kind]; NULL
 * leaves a label out (only the optional key). Made by lset_make, which
 * leaves the identity buffer unwritten until lset_build fills what it needs
 * (an initializer would zero all of it on every update). */
typedef struct lset {
    unsigned kind;
    const char *val[4];
    char buf[4 + 4 * (LABEL_MAX + 1)];   /* the identity */
    size_t len;
    uint64_t hash;
} lset_t;

static void lset_make(lset_t *s, unsigned kind, const char *a, const char *b, const char *c,
                      const char *d)
{
    s->kind = kind;
    s->val[0] = a;
    s->val[1] = b;
    s->val[2] = c;
    s->val[3] = d;
}

/* 64-bit hash of n bytes, eight at a time (a multiply-xorshift mix). */
static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}

static void lset_build(lset_t *s)
{
    size_t n = 0;
    s->buf[n++] = (char)('A' + s->kind);
    for (int i = 0; i < 4; i++) {
        if (!LABELS[s->kind][i]) break;
        if (!s->val[i]) { s->buf[n++] = '\x01'; continue; }   /* absent, not "" */
        size_t l = strnlen(s->val[i], LABEL_MAX);
        s->buf[n++] = '\x02';
        memcpy(s->buf + n, s->val[i], l);
        n += l;
        s->buf[n++] = '\0';
    }
    s->len = n;
    s->hash = hash_bytes(s->buf, n);
}

size_t metrics_escape(char *out, const char *v)
{
    size_t n = 0, l = strnlen(v, LABEL_MAX);
    for (size_t i = 0; i < l; i++) {
        char c = v[i];
        if (c == '\\' || c == '"') { out[n++] = '\\'; out[n++] = c; }
        else if (c == '\n') { out[n++] = '\\'; out[n++] = 'n'; }
        else out[n++] = c;
    }
    return n;
}

/* n bytes (16-aligned) that live as long as the registry, from blocks
 * filled in creation order: a scrape reads the cells and their label text
 * nearly in sequence instead of from all over a heap the request path
 * shares (half of a big scrape's time went to those cache misses). NULL on
 * OOM. */
static void *arena_get(metrics_t *m, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct marena *a = m->arena;
    if (!a || a->used + n > a->cap) {
        size_t cap = n > METRICS_ARENA_BLOCK ? n : METRICS_ARENA_BLOCK;
        if (!(a = malloc(sizeof *a + cap))) return NULL;
        a->next = m->arena;
        a->used = 0;
        a->cap = cap;
        m->arena = a;
    }
    void *p = a->data + a->used;
    a->used += n;
    return p;
}

/* name="value",... for a label set, into t (room for 4 labels). */
static size_t label_text(const lset_t *s, char *t)
{
    size_t n = 0;
    for (int i = 0; i < 4 && LABELS[s->kind][i]; i++) {
        if (!s->val[i]) continue;
        if (n) t[n++] = ',';
        size_t nl = strlen(LABELS[s->kind][i]);
        memcpy(t + n, LABELS[s->kind][i], nl);
        n += nl;
        t[n++] = '=';
        t[n++] = '"';
        n += metrics_escape(t + n, s->val[i]);
        t[n++] = '"';
    }
    t[n] = '\0';
    return n;
}

/* ---- the table (mutex held) -------------------------------------------- */

static int index_grow(metrics_t *m)
{
    size_t cap = m->index_cap * 2;
    uint32_t *ix = calloc(cap, sizeof *ix);
    if (!ix) return -1;
    for (size_t i = 0; i < m->n_cells; i++) {
        size_t j = m->cells[i]->hash & (cap - 1);
        while (ix[j]) j = (j + 1) & (cap - 1);
        ix[j] = (uint32_t)(i + 1);
    }
    free(m->index);
    m->index = ix;
    m->index_cap = cap;
    return 0;
}

/* The cell of s, made (zero) when new; NULL on OOM. */
static mcell_t *cell_get(metrics_t *m, lset_t *s)
{
    lset_build(s);
    size_t mask = m->index_cap - 1, j = s->hash & mask;
    for (; m->index[j]; j = (j + 1) & mask) {
        mcell_t *c = m->cells[m->index[j] - 1];
        if (c->hash == s->hash && c->klen == s->len && memcmp(c->key, s->buf, s->len) == 0)
            return c;
    }
    if ((m->n_cells + 1) * 2 > m->index_cap) {
        if (index_grow(m) != 0) return NULL;
        return cell_get(m, s);
    }
    if (m->n_cells == m->cap_cells) {
        size_t cap = m->cap_cells ? m->cap_cells * 2 : 256;
        mcell_t **nc = realloc(m->cells, cap * sizeof *nc);
        if (!nc) return NULL;
        m->cells = nc;
        m->cap_cells = cap;
    }
    char lab[4 * (16 + 2 * LABEL_MAX + 4) + 1];
    size_t lab_len = label_text(s, lab);
    mhist_t *h = NULL;
    if (s->kind == MK_MODEL && !(h = calloc(2, sizeof *h))) return NULL;
    mcell_t *c = arena_get(m, sizeof *c + s->len + lab_len + 1);
    if (!c) {
        free(h);
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->hash = s->hash;
    c->kind = s->kind;
    c->klen = s->len;
    c->key = (char *)(c + 1);
    memcpy(c->key, s->buf, s->len);
    c->lab = c->key + s->len;
    memcpy(c->lab, lab, lab_len + 1);
    c->lab_len = lab_len;
    c->h = h;
    m->cells[m->n_cells++] = c;
    m->index[j] = (uint32_t)m->n_cells;
    m->n_kind[s->kind]++;
    return c;
}

static void hist_add(mhist_t *h, const mbounds_t *b, int64_t us)
{
    if (us < 0) us = 0;
    size_t i = 0;
    while (i < b->n && us > b->us[i]) i++;
    h->n[i]++;
    h->sum_us += us;
    h->count++;
}

/* ---- updates ------------------------------------------------------------- */

static const char *nz(const char *s) { return s ? s : ""; }

void metrics_rejected(metrics_t *m, const char *team, const char *reason)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_REJ, nz(team), nz(reason), NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) c->v[0]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_clamped(metrics_t *m, const char *team)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_CLAMP, nz(team), NULL, NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) c->v[0]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_admitted(metrics_t *m, const char *team)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_TEAM, nz(team), NULL, NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) c->v[0]++;
    pthread_mutex_unlock(&m->mu);
}

int64_t metrics_inflight(metrics_t *m, const char *team)
{
    if (!m) return 0;
    lset_t s;
    lset_make(&s, MK_TEAM, nz(team), NULL, NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);  /* a team never admitted gets its zero cell, as a scrape shows */
    int64_t v = c ? (int64_t)c->v[0] : 0;
    pthread_mutex_unlock(&m->mu);
    return v;
}

void metrics_admission(metrics_t *m, int64_t us)
{
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    hist_add(&m->admission, &metrics_bounds[MB_ADMISSION], us);
    pthread_mutex_unlock(&m->mu);
}

void metrics_first_token(metrics_t *m, const char *model, int64_t us)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_MODEL, nz(model), NULL, NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) {
        hist_add(&c->h[1], &metrics_bounds[MB_LATENCY], us);
        c->touched |= MT_FIRST;
    }
    pthread_mutex_unlock(&m->mu);
}

void metrics_settled(metrics_t *m, const metrics_settle_t *st)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_TM, nz(st->team), nz(st->model), st->key, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) {
        c->v[0] += st->prompt;
        c->v[1] += st->completion;
        c->v[2] += st->cached;
        c->touched |= MT_TOKENS;
        if (st->state >= 0 && st->state < METRICS_N_STATES) {
            c->v[3 + st->state] += st->charge;
            c->touched |= MT_STATE(st->state);
        }
    }
    lset_make(&s, MK_MODEL, nz(st->model), NULL, NULL, NULL);
    if (st->upstream_us >= 0 && (c = cell_get(m, &s))) {
        hist_add(&c->h[0], &metrics_bounds[MB_LATENCY], st->upstream_us);
        c->touched |= MT_UPSTREAM;
    }
    lset_make(&s, MK_TEAM, nz(st->team), NULL, NULL, NULL);
    if (st->leaves_inflight && (c = cell_get(m, &s))) c->v[0]--;
    pthread_mutex_unlock(&m->mu);
}

void metrics_answered(metrics_t *m, const char *team, const char *model, const char *key,
                      int code)
{
    if (!m) return;
    char cs[12], *p = cs + sizeof cs - 1;          /* the status as text, no printf */
    unsigned u = code > 0 ? (unsigned)code : 0;
    *p = '\0';
    do { *--p = (char)('0' + u % 10); u /= 10; } while (u);
    lset_t s;
    lset_make(&s, MK_REQ, nz(team), nz(model), key, p);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) c->v[0]++;
    pthread_mutex_unlock(&m->mu);
}

void metrics_alert(metrics_t *m, const char *event, int sent)
{
    if (!m) return;
    lset_t s;
    lset_make(&s, MK_ALERT, nz(event), sent ? "sent" : "failed", NULL, NULL);
    pthread_mutex_lock(&m->mu);
    mcell_t *c = cell_get(m, &s);
    if (c) c->v[0]++;
    pthread_mutex_unlock(&m->mu);
}

/* ---- the copy ------------------------------------------------------------- */

void metrics_view_free(mview_t *v)
{
    for (int k = 0; k < MK_N; k++) free(v->c[k]);
    free(v->hists);
    memset(v, 0, sizeof *v);
}

int metrics_copy(metrics_t *m, const char *const *teams, size_t n, mview_t *v)
{
    memset(v, 0, sizeof *v);
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        lset_t s;
        lset_make(&s, MK_TEAM, nz(teams[i]), NULL, NULL, NULL);
        cell_get(m, &s);          /* on OOM the team simply has no sample */
    }
    int ok = 1;
    for (int k = 0; k < MK_N && ok; k++)
        ok = !m->n_kind[k] || (v->c[k] = malloc(m->n_kind[k] * sizeof *v->c[k]));
    if (ok && m->n_kind[MK_MODEL])
        ok = (v->hists = malloc(2 * m->n_kind[MK_MODEL] * sizeof *v->hists)) != NULL;
    if (ok) {
        for (size_t i = 0; i < m->n_cells; i++) {
            const mcell_t *c = m->cells[i];
            if (c->kind == MK_MODEL)
                memcpy(&v->hists[2 * v->n[MK_MODEL]], c->h, 2 * sizeof *c->h);
            mcopy_t *o = &v->c[c->kind][v->n[c->kind]++];
            o->lab = c->lab;
            o->lab_len = c->lab_len;
            o->touched = c->touched;
            memcpy(o->v, c->v, sizeof o->v);
        }
        v->admission = m->admission;
    }
    pthread_mutex_unlock(&m->mu);
    if (!ok) metrics_view_free(v);
    return ok ? 0 : -1;
}
