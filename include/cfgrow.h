/* cfgrow: a table-driven walker for JSON objects. An object is described by
 * a table of rows (key, kind, flags, where the value goes, limits); the
 * walker type-checks every key the same way, rejects unknown and duplicate
 * keys, skips comment keys ("_..." and "//..."), reports missing required
 * keys, and stores each value into a caller's struct at the row's offset.
 * Errors are written "FILE: KEY: why", KEY being the value's JSON path
 * (e.g. teams[0].keys[1].sha256). Pure: no I/O, no globals. */
#ifndef PINMETER_CFGROW_H
#define PINMETER_CFGROW_H
#include <stddef.h>
#include <cjson/cJSON.h>

#define CFGROW_PATH_MAX 256           /* a JSON path buffer, NUL included */
#define CFGROW_MEMBER_SIZE(T, m) sizeof(((T *)0)->m)

/* One walk's context. Borrows fname and err for the walk. */
typedef struct cfgrow_ctx {
    const char *fname;                /* named first in every message */
    char *err;                        /* gets "FILE: KEY: why"; NULL or errlen 0: no message */
    size_t errlen;
    void *ud;                         /* the caller's own state, for its custom parsers */
} cfgrow_ctx_t;

/* A custom parser for one value: v is the value, path its JSON path, base
 * the struct the row's table fills. 0, or -1 after cfgrow_fail. */
typedef int (*cfgrow_fn)(cfgrow_ctx_t *x, const cJSON *v, const char *path, void *base);

/* What a row's value is and where it goes (at base + off):
 *   STR     a string into char[size], NUL included
 *   INT/I64/SIZE  an integer in [min, max] into int / int64_t / size_t
 *   POSNUM  a finite number > 0 into double
 *   USD     a price from 0 to RATES_MAX_USD (USD per 1M tokens) into double
 *   BOOL    true or false into int (1 / 0)
 *   CREDITS a number of credits from 0 to 9e9 into nanos_t (> 0 with POSITIVE)
 *   OBJ     a nested object walked with the table sub, into the same base
 *   CUSTOM  handed to fn */
typedef enum {
    CFGROW_STR, CFGROW_INT, CFGROW_I64, CFGROW_SIZE, CFGROW_POSNUM, CFGROW_USD,
    CFGROW_OBJ, CFGROW_CUSTOM, CFGROW_BOOL, CFGROW_CREDITS
} cfgrow_kind_t;

enum {
    CFGROW_REQUIRED = 1,              /* "missing" when absent */
    CFGROW_EMPTY_OK = 2,              /* STR: "" allowed */
    CFGROW_ENV = 4,                   /* STR: an environment variable name ("" only with EMPTY_OK) */
    CFGROW_NAME = 8,                  /* STR: only letters, digits, '_', '.' and '-' */
    CFGROW_POSITIVE = 16              /* CREDITS: more than 0 */
};

/* One key of an object. Tables end with a row whose key is NULL and hold
 * at most as many rows as an unsigned long has bits (64 here). */
typedef struct cfgrow_row {
    const char *key;
    cfgrow_kind_t kind;
    int flags;
    size_t off;
    size_t size;                      /* STR: buffer size, NUL included */
    double min, max;                  /* INT, I64, SIZE */
    cfgrow_fn fn;                     /* CUSTOM */
    const struct cfgrow_row *sub;     /* OBJ: the nested object's rows */
} cfgrow_row_t;

/* Applies rows to the object obj (at JSON path path, "" for the top),
 * storing into base. Stops at the first error: 0, or -1 with the message
 * in x->err (base may then be partly filled). */
int cfgrow_apply_object(cfgrow_ctx_t *x, const cJSON *obj, const char *path,
                        const cfgrow_row_t *rows, void *base);

/* Writes "FILE: PATH: " and the formatted reason into x->err (PATH ""
 * reads "top level"), truncating to x->errlen. Always returns -1. */
int cfgrow_fail(cfgrow_ctx_t *x, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes "PATH[i]" into out (CFGROW_PATH_MAX bytes), for array elements. */
void cfgrow_join_index(char *out, const char *path, size_t i);

#endif
