/* metrics_int.h: private to the metrics module (src/metrics.c, the registry
 * and its updates, and src/metrics_text.c, the exposition); nothing else
 * includes it. metrics_text.c calls metrics_copy (the one step under the
 * registry's mutex) and formats the copy; metrics.c calls nothing in
 * metrics_text.c. */
#ifndef PINMETER_METRICS_INT_H
#define PINMETER_METRICS_INT_H
#include "metrics.h"
#include <pthread.h>
#include <stdatomic.h>

/* The kinds of cell: one label set each, holding every series of it. */
enum {
    MK_TM = 0,        /* team, model[, key]: tokens (v0-2), credits by state (v3-5) */
    MK_REQ,           /* team, model[, key], code: requests answered (v0) */
    MK_REJ,           /* team, reason: rejections (v0) */
    MK_TEAM,          /* team: requests in flight (v0) */
    MK_MODEL,         /* model: the two latency histograms */
    MK_ALERT,         /* event, result: alert deliveries (v0) */
    MK_CLAMP,         /* team: requests admitted with a clamped completion limit (v0) */
    MK_N
};

/* touched bits of an MK_TM cell: its tokens, and each credits state */
#define MT_TOKENS 1u
#define MT_STATE(s) (2u << (s))
/* of an MK_MODEL cell: which histogram was observed */
#define MT_UPSTREAM 1u
#define MT_FIRST 2u

/* Histograms count microseconds; bucket i holds observations above bucket
 * i-1's bound up to its own, the last one everything above (+Inf). */
#define METRICS_HIST_MAX 20
typedef struct mhist {
    uint64_t n[METRICS_HIST_MAX + 1];
    int64_t sum_us;
    uint64_t count;
} mhist_t;

/* The bucket bounds: latencies (upstream, first token) and admission. */
enum { MB_LATENCY = 0, MB_ADMISSION, MB_N };
typedef struct mbounds {
    size_t n;
    const int64_t *us;
} mbounds_t;
extern const mbounds_t metrics_bounds[MB_N];

typedef struct mcell {
    uint64_t hash;
    char *key;                 /* kind, then each value marked and NUL-ended: the identity */
    size_t klen;
    char *lab;                 /* its label pairs as exposed, escaped, no braces */
    size_t lab_len;
    unsigned kind, touched;
    int64_t v[6];
    mhist_t *h;                /* MK_MODEL: [0] upstream, [1] first token */
} mcell_t;

/* A block of the registry's arena: cells with their key and label text,
 * allocated in creation order and freed only with the registry. */
#define METRICS_ARENA_BLOCK (256 * 1024)
struct marena {
    struct marena *next;
    size_t used, cap;
    _Alignas(16) char data[];
};

struct metrics {
    pthread_mutex_t mu;
    struct marena *arena;      /* where the cells live (newest block first) */
    mcell_t **cells;           /* every cell, in creation order */
    size_t n_cells, cap_cells;
    uint32_t *index;           /* open addressing: cell number + 1, 0 empty */
    size_t index_cap;          /* a power of two, at most half full */
    size_t n_kind[MK_N];
    mhist_t admission;
    atomic_size_t last_size;   /* the last exposition's length: the next one's buffer */
};

/* One cell as copied for formatting: the label text stays the cell's
 * (never freed while the registry lives). */
typedef struct mcopy {
    const char *lab;
    size_t lab_len;
    unsigned touched;
    int64_t v[6];
} mcopy_t;

/* A copy of the whole registry. */
typedef struct mview {
    mcopy_t *c[MK_N];          /* the cells of each kind, in creation order */
    size_t n[MK_N];
    mhist_t *hists;            /* two per MK_MODEL cell, in its order */
    mhist_t admission;
} mview_t;

/* Under the mutex: makes sure each of the n teams has its in-flight cell,
 * then copies the registry into *v. 0, or -1 on OOM (*v empty). Free with
 * metrics_view_free. */
/* Writes v escaped as a label value (\\, \", \n), at most 512 bytes of it,
 * into out (room for twice that) and returns the bytes written. */
size_t metrics_escape(char *out, const char *v);

int metrics_copy(metrics_t *m, const char *const *teams, size_t n, mview_t *v);
void metrics_view_free(mview_t *v);

#endif
