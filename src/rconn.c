/* rconn: Redis connections and the script table (see rconn.h). Owns
 * everything that touches hiredis: dialing, EVALSHA with the EVAL fallback,
 * the pipeline with its NOSCRIPT retry, which error replies are transient,
 * and turning replies into integers (every hiredis reply is freed here). */
#include "rconn.h"
#include "base.h"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGV 80                   /* EVALSHA, sha, numkeys, keys and args */

struct rconn_site {
    char host[256], password[256], who[64];
    int port, db, has_password;
    int n;
    const char **text;                /* [n], borrowed */
    char (*sha)[41];                  /* [n], hex SHA-1 of text */
};

struct rconn {
    redisContext *ctx;
    const rconn_site_t *site;
};

rconn_site_t *rconn_site_new(const rconn_conf_t *c)
{
    rconn_site_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->text = c->n_scripts ? calloc((size_t)c->n_scripts, sizeof *s->text) : NULL;
    s->sha = c->n_scripts ? calloc((size_t)c->n_scripts, sizeof *s->sha) : NULL;
    if (c->n_scripts && (!s->text || !s->sha)) goto fail;
    snprintf(s->host, sizeof s->host, "%s", c->host);
    snprintf(s->who, sizeof s->who, "%s", c->who);
    s->port = c->port;
    s->db = c->db;
    if (c->password) {
        s->has_password = 1;
        snprintf(s->password, sizeof s->password, "%s", c->password);
    }
    s->n = c->n_scripts;
    for (int i = 0; i < s->n; i++) {
        unsigned char md[SHA_DIGEST_LENGTH];
        s->text[i] = c->scripts[i];
        SHA1((const unsigned char *)c->scripts[i], strlen(c->scripts[i]), md);
        for (int j = 0; j < SHA_DIGEST_LENGTH; j++)
            snprintf(s->sha[i] + 2 * j, 3, "%02x", md[j]);
    }
    return s;
fail:
    free(s->text);
    free(s->sha);
    free(s);
    return NULL;
}

void rconn_site_free(rconn_site_t *s)
{
    if (!s) return;
    memset(s->password, 0, sizeof s->password);
    free(s->text);
    free(s->sha);
    free(s);
}

rconn_t *rconn_dial(const rconn_site_t *s, int timeout_ms)
{
    rconn_t *rc = malloc(sizeof *rc);
    if (!rc) return NULL;
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisContext *c = redisConnectWithTimeout(s->host, s->port, tv);
    if (!c || c->err) { if (c) redisFree(c); free(rc); return NULL; }
    redisSetTimeout(c, tv);
    redisReply *r = NULL;
    if (s->has_password) {
        r = redisCommand(c, "AUTH %s", s->password);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(r);
    }
    if (s->db) {
        r = redisCommand(c, "SELECT %d", s->db);
        if (!r || r->type == REDIS_REPLY_ERROR) goto fail;
        freeReplyObject(r);
    }
    rc->ctx = c;
    rc->site = s;
    return rc;
fail:
    if (r) freeReplyObject(r);
    redisFree(c);
    free(rc);
    return NULL;
}

void rconn_close(rconn_t *c)
{
    if (!c) return;
    redisFree(c->ctx);
    free(c);
}

/* Redis errors that pass: retry later as if the connection had failed. */
static int transient(const redisReply *r)
{
    static const char *const busy[] = { "LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN",
                                        "READONLY", "CLUSTERDOWN", NULL };
    for (int i = 0; busy[i]; i++)
        if (strncmp(r->str, busy[i], strlen(busy[i])) == 0) return 1;
    return 0;
}

static int noscript(const redisReply *r)
{
    return strncmp(r->str, "NOSCRIPT", 8) == 0;
}

/* Element i of an array reply as an integer (integer or decimal string). */
static long long elem_ll(const redisReply *r, size_t i)
{
    if (r->type != REDIS_REPLY_ARRAY || i >= r->elements) return 0;
    const redisReply *e = r->element[i];
    if (e->type == REDIS_REPLY_INTEGER) return e->integer;
    if (e->type == REDIS_REPLY_STRING) return strtoll(e->str, NULL, 10);
    return 0;
}

/* Reads r into *out (when out is not NULL) and frees r. */
static void take(redisReply *r, rconn_reply_t *out)
{
    if (out) {
        out->is_int = r->type == REDIS_REPLY_INTEGER;
        out->integer = out->is_int ? r->integer : 0;
        for (size_t i = 0; i < RCONN_ELEMS; i++) out->elem[i] = elem_ll(r, i);
    }
    freeReplyObject(r);
}

/* "EVALSHA <sha> <nk> keys... args..." into argv[MAX_ARGV]; nkeys holds the
 * count's text. The argument count, or -1 when there are too many. */
static int argv_of(const rconn_t *c, int script, int nk, const char *const *keys,
                   int na, const char *const *args, const char **argv, char nkeys[16])
{
    int argc = 0;
    if (script < 0 || script >= c->site->n || 3 + nk + na > MAX_ARGV) return -1;
    snprintf(nkeys, 16, "%d", nk);
    argv[argc++] = "EVALSHA";
    argv[argc++] = c->site->sha[script];
    argv[argc++] = nkeys;
    for (int i = 0; i < nk; i++) argv[argc++] = keys[i];
    for (int i = 0; i < na; i++) argv[argc++] = args[i];
    return argc;
}

int rconn_run(rconn_t *c, int script, int nk, const char *const *keys,
              int na, const char *const *args, rconn_reply_t *out)
{
    const char *argv[MAX_ARGV];
    char nkeys[16];
    int argc = argv_of(c, script, nk, keys, na, args, argv, nkeys);
    if (argc < 0) return RCONN_ERR;
    redisReply *r = redisCommandArgv(c->ctx, argc, argv, NULL);
    if (r && r->type == REDIS_REPLY_ERROR && noscript(r)) {
        freeReplyObject(r);
        argv[0] = "EVAL";
        argv[1] = c->site->text[script];
        r = redisCommandArgv(c->ctx, argc, argv, NULL);
    }
    if (!r) return RCONN_IO;
    if (r->type == REDIS_REPLY_ERROR) {
        int io = transient(r);
        if (!io) base_log("%s: script error: %.300s", c->site->who, r->str);
        freeReplyObject(r);
        return io ? RCONN_IO : RCONN_ERR;
    }
    take(r, out);
    return RCONN_OK;
}

enum { AGAIN = RCONN_ERR - 1 };       /* answered NOSCRIPT: run again by rconn_run */

int rconn_pipeline(rconn_t *c, rconn_call_t *list, int flags)
{
    int io = 0;
    for (rconn_call_t *k = list; k; k = k->next) k->rc = RCONN_IO;
    for (rconn_call_t *k = list; k && !io; k = k->next) {
        const char *argv[MAX_ARGV];
        char nkeys[16];
        int argc = argv_of(c, k->script, k->nk, k->keys, k->na, k->args, argv, nkeys);
        if (argc < 0) k->rc = RCONN_ERR;             /* not sent */
        else if (redisAppendCommandArgv(c->ctx, argc, argv, NULL) != REDIS_OK) io = 1;
    }
    for (rconn_call_t *k = list; k && !io; k = k->next) {
        if (k->rc == RCONN_ERR) continue;
        redisReply *r = NULL;
        if (redisGetReply(c->ctx, (void **)&r) != REDIS_OK || !r) { io = 1; break; }
        if (r->type != REDIS_REPLY_ERROR) {
            k->rc = RCONN_OK;
            take(r, &k->reply);
            continue;
        }
        if (noscript(r)) k->rc = AGAIN;
        else if (transient(r)) {
            k->rc = RCONN_IO;
            if (flags & RCONN_BUSY_FAILS) io = 1;
        } else {
            base_log("%s: script error: %.300s", c->site->who, r->str);
            k->rc = RCONN_ERR;
        }
        freeReplyObject(r);
    }
    for (rconn_call_t *k = list; k && !io; k = k->next) {
        if (k->rc != AGAIN) continue;
        k->rc = rconn_run(c, k->script, k->nk, k->keys, k->na, k->args, &k->reply);
        if (k->rc == RCONN_IO) io = 1;
    }
    for (rconn_call_t *k = list; k; k = k->next)
        if (k->rc == AGAIN) k->rc = RCONN_IO;
    return io ? RCONN_IO : RCONN_OK;
}
