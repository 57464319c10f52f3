/* rconn: connections to Redis and the Lua scripts run on them. Dials (AUTH,
 * SELECT, timeouts), keeps the script table (each text's SHA-1, EVALSHA with
 * EVAL when Redis answers NOSCRIPT), runs one script or a pipeline of them,
 * and reads their answers into plain integers. Knows nothing of what the
 * scripts do. The only module that includes hiredis; no hiredis type or
 * object reaches its callers. */
#ifndef PINMETER_RCONN_H
#define PINMETER_RCONN_H
#include <stddef.h>

/* Where to dial and which scripts run there; shared read-only by every
 * connection dialed from it. */
typedef struct rconn_site rconn_site_t;
/* One connection; used by one thread at a time. */
typedef struct rconn rconn_t;

/* What a script call comes to. RCONN_IO: the connection failed, timed out,
 * or Redis is busy (LOADING, BUSY, TRYAGAIN, MASTERDOWN, READONLY,
 * CLUSTERDOWN): close the connection and retry later. RCONN_ERR: any other
 * error reply (logged as "<who>: script error: ..."). */
enum { RCONN_OK = 0, RCONN_IO = -1, RCONN_ERR = -2 };

typedef struct rconn_conf {
    const char *host;              /* copied */
    int port, db;                  /* db 0: no SELECT */
    const char *password;          /* NULL: no AUTH; copied, wiped at rconn_site_free */
    const char *const *scripts;    /* the Lua texts: the array is copied, the
                                    * texts are borrowed for the site's life */
    int n_scripts;                 /* a script is named by its index */
    const char *who;               /* names the user in log lines; copied */
} rconn_conf_t;

/* NULL when out of memory. Free with rconn_site_free. */
rconn_site_t *rconn_site_new(const rconn_conf_t *c);
/* Wipes the password and frees; NULL is fine. Close its connections first. */
void rconn_site_free(rconn_site_t *site);

/* Connects with timeout_ms for the connect and for every later command,
 * then AUTH and SELECT as configured. NULL when any of that fails. Borrows
 * site until rconn_close. */
rconn_t *rconn_dial(const rconn_site_t *site, int timeout_ms);
/* NULL is fine. */
void rconn_close(rconn_t *c);

/* A script's answer, read into integers. */
#define RCONN_ELEMS 16
typedef struct rconn_reply {
    int is_int;                    /* an integer reply, its value in integer */
    long long integer;
    long long elem[RCONN_ELEMS];   /* an array reply: its first elements, each an
                                    * integer or a decimal string (other types 0);
                                    * 0 past its end and for other replies */
} rconn_reply_t;

/* Runs script with nk keys and na args (EVALSHA; EVAL when Redis does not
 * have it yet). RCONN_OK with *out filled (out may be NULL), or an error as
 * above (*out untouched). */
int rconn_run(rconn_t *c, int script, int nk, const char *const *keys,
              int na, const char *const *args, rconn_reply_t *out);

/* One call of a pipeline: the caller fills script, keys, args and next;
 * rconn_pipeline fills rc and, when rc is RCONN_OK, reply. */
typedef struct rconn_call {
    struct rconn_call *next;
    int script;
    int nk, na;
    const char *const *keys;       /* borrowed until rconn_pipeline returns */
    const char *const *args;
    int rc;                        /* RCONN_*; RCONN_IO also when not answered */
    rconn_reply_t reply;
} rconn_call_t;

/* A busy reply (see RCONN_IO) ends the whole pipeline as a failed connection
 * does; without it, only that call's rc is RCONN_IO and the rest are read. */
#define RCONN_BUSY_FAILS 1

/* Runs the list of calls in one pipeline: all sent, then all replies read;
 * those Redis answered NOSCRIPT run again one by one by rconn_run. Returns
 * RCONN_IO when the connection failed (or, with RCONN_BUSY_FAILS, Redis was
 * busy): close it; calls left without an answer then have rc RCONN_IO.
 * Otherwise RCONN_OK, each call's own outcome in its rc. An empty list is
 * RCONN_OK. */
int rconn_pipeline(rconn_t *c, rconn_call_t *list, int flags);

#endif
