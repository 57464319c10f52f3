/* journal: the begin journal beside the ledger's database (see journal.h).
 *
 * Owns the two segment files, which one is active, their sizes, and per
 * segment the count of begins not yet committed to the database. A begin is
 * one line "B\tID\tSTARTED_MS\tTEAM\tKEY\tMODEL\tSTREAM\tRESERVED\tPRICE_INPUT\t
 * PRICE_OUTPUT\tPRICE_CACHE_READ\n" written with a single write(), so a crash
 * leaves at most a torn last line (a line of the older form, without the
 * three prices, still replays with its prices unknown). The active segment rotates past JOURNAL_ROTATE_BYTES onto the other one, which
 * is emptied first, but only once every begin in it has its row. */
#include "journal.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define JOURNAL_ROTATE_BYTES (1 << 20)

struct journal {
    pthread_mutex_t mu;               /* guards everything below */
    int fd[2];
    int active;
    off_t size[2];
    long open[2];                     /* begins not yet committed to SQLite */
    int torn[2];                      /* a short write's bytes could not be cut off */
    char path[2][1100];
};

journal_t *journal_open(const char *db_path, char *err, size_t errlen)
{
    journal_t *j = calloc(1, sizeof *j);
    if (!j) { snprintf(err, errlen, "out of memory"); return NULL; }
    j->fd[0] = j->fd[1] = -1;
    for (int i = 0; i < 2; i++) {
        snprintf(j->path[i], sizeof j->path[i], "%s-begins.%d", db_path, i);
        j->fd[i] = open(j->path[i], O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (j->fd[i] < 0) {
            snprintf(err, errlen, "%s: cannot open the begin journal: %s", j->path[i],
                     strerror(errno));
            goto fail;
        }
        j->size[i] = lseek(j->fd[i], 0, SEEK_END);
    }
    pthread_mutex_init(&j->mu, NULL);
    return j;
fail:
    for (int i = 0; i < 2; i++)
        if (j->fd[i] >= 0) close(j->fd[i]);
    free(j);
    return NULL;
}

/* Writes s into buf with bytes < 0x20, '%', '\t' and 0x7f as %XX, so a
 * journal line has exactly its tab-separated fields. */
static void jescape(char *buf, size_t cap, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == '%' || c == 0x7f) {
            buf[o++] = '%';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
}

static void junescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '%' && r[1] && r[2]) {
            char h[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(h, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

/* w + s and a tab, at most max bytes of s; the end. */
static char *put_field(char *w, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    memcpy(w, s, n);
    w[n] = '\t';
    return w + n + 1;
}

/* w + v in decimal and sep; the end. */
static char *put_int(char *w, int64_t v, char sep)
{
    char d[24];
    int n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do d[n++] = (char)('0' + u % 10); while ((u /= 10) != 0);
    if (v < 0) *w++ = '-';
    while (n) *w++ = d[--n];
    *w = sep;
    return w + 1;
}

int journal_append(journal_t *j, const journal_begin_t *b)
{
    /* the line's fields by hand: snprintf was ~4,500 instructions a request */
    char team[200], key[200], model[800], line[1600];
    jescape(team, sizeof team, b->team);
    jescape(key, sizeof key, b->key_id);
    jescape(model, sizeof model, b->model);
    char *p = line;
    *p++ = 'B';
    *p++ = '\t';
    p = put_field(p, b->id, 128);
    p = put_int(p, b->started_ms, '\t');
    p = put_field(p, team, sizeof team);
    p = put_field(p, key, sizeof key);
    p = put_field(p, model, sizeof model);
    p = put_int(p, b->stream, '\t');
    p = put_int(p, b->reserved, '\t');
    p = put_int(p, b->price_input, '\t');
    p = put_int(p, b->price_output, '\t');
    p = put_int(p, b->price_cache_read, '\n');
    int n = (int)(p - line);
    pthread_mutex_lock(&j->mu);
    int a = j->active;
    if (j->size[a] > JOURNAL_ROTATE_BYTES && j->open[1 - a] == 0 &&
        ftruncate(j->fd[1 - a], 0) == 0) {
        j->size[1 - a] = 0;
        j->torn[1 - a] = 0;
        a = j->active = 1 - a;
    }
    /* A short write's partial line is cut off again: a later line appended
     * after it would join it into one that replays wrongly (the first begin
     * with a cut amount, the second lost). Until it can be cut, the segment
     * takes nothing (the request is refused: fail closed). */
    if (j->torn[a] && ftruncate(j->fd[a], j->size[a]) == 0) j->torn[a] = 0;
    ssize_t w = j->torn[a] ? -1 : write(j->fd[a], line, (size_t)n);
    if (w != n) {
        if (w > 0 && ftruncate(j->fd[a], j->size[a]) != 0) j->torn[a] = 1;
        pthread_mutex_unlock(&j->mu);
        return -1;
    }
    j->size[a] += n;
    j->open[a]++;
    pthread_mutex_unlock(&j->mu);
    return a;
}

void journal_done(journal_t *j, int seg)
{
    pthread_mutex_lock(&j->mu);
    j->open[seg]--;
    pthread_mutex_unlock(&j->mu);
}

int journal_probe(journal_t *j)
{
    pthread_mutex_lock(&j->mu);
    int ok = write(j->fd[j->active], "", 0) == 0;
    pthread_mutex_unlock(&j->mu);
    return ok ? 0 : -1;
}

int journal_replay(journal_t *j, journal_replay_fn fn, void *ud)
{
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(j->path[i], "r");
        if (!f) continue;
        char line[1800];
        while (fgets(line, sizeof line, f)) {
            size_t len = strlen(line);
            if (len == 0 || line[len - 1] != '\n') break;     /* torn last line */
            line[len - 1] = '\0';
            char *fld[12], *save = NULL;
            int k = 0;
            for (char *t = strtok_r(line, "\t", &save); t && k < 12; t = strtok_r(NULL, "\t", &save))
                fld[k++] = t;
            if ((k != 8 && k != 11) || strcmp(fld[0], "B") != 0) continue;
            for (int m = 3; m <= 5; m++) junescape(fld[m]);
            journal_begin_t b = {
                .id = fld[1], .started_ms = strtoll(fld[2], NULL, 10),
                .team = fld[3], .key_id = fld[4], .model = fld[5],
                .stream = atoi(fld[6]), .reserved = strtoll(fld[7], NULL, 10),
                .price_input = k == 11 ? strtoll(fld[8], NULL, 10) : -1,
                .price_output = k == 11 ? strtoll(fld[9], NULL, 10) : -1,
                .price_cache_read = k == 11 ? strtoll(fld[10], NULL, 10) : -1,
            };
            if (fn(ud, &b) != 0) { fclose(f); return -1; }
        }
        fclose(f);
    }
    return 0;
}

int journal_reset(journal_t *j)
{
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < 2 && rc == 0; i++) {
        if (ftruncate(j->fd[i], 0) != 0) { rc = -1; break; }
        j->size[i] = 0;
        j->open[i] = 0;
        j->torn[i] = 0;
    }
    pthread_mutex_unlock(&j->mu);
    return rc;
}

void journal_close(journal_t *j)
{
    if (!j) return;
    for (int i = 0; i < 2; i++) {
        if (j->open[i] == 0 && ftruncate(j->fd[i], 0) != 0) { /* replayed next start */ }
        close(j->fd[i]);
    }
    pthread_mutex_destroy(&j->mu);
    free(j);
}
