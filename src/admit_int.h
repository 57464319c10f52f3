/* admit_int: what admit.c and admit_scan.c share (not a public header):
 * the members metering reads, the kinds of value, and what the scan found. */
#ifndef PINMETER_ADMIT_INT_H
#define PINMETER_ADMIT_INT_H
#include <stddef.h>
#include <stdio.h>

/* The top-level members metering reads, by length (all differ). */
enum { F_MODEL, F_MESSAGES, F_MAX_TOKENS, F_MAX_COMPLETION, F_STREAM, F_OPTS, F_N,
       F_COUNT };
extern const char *const admit_scan_field_name[F_COUNT];


/* Kinds of value; K_ABSENT for a member not met. */
enum { K_ABSENT, K_NULL, K_FALSE, K_TRUE, K_NUMBER, K_STRING, K_ARRAY, K_OBJECT };

/* What the scan found; it counts only if the whole body is valid. */
typedef struct facts {
    unsigned char kind[F_COUNT];    /* each field's first value */
    signed char dup;                /* the field whose key is first met twice, or -1 */
    unsigned char root_kind;
    unsigned char usage_kind;       /* include_usage in the first stream_options */
    unsigned char usage_twice;      /* ... met twice there */
    const unsigned char *num[F_COUNT], *num_end[F_COUNT];   /* a number's text */
    const unsigned char *model;     /* the model's bytes if it has no escape */
    size_t model_len;               /* its decoded length, up to the first NUL */
    const unsigned char *root;      /* the root value's first byte */
} facts_t;

/* Validates body[p, end) as one JSON value the way cJSON (and the byte
 * scan before it) did, filling *f (which comes zeroed, dup -1); a model with escapes is
 * decoded into model (ADMIT_MODEL_MAX bytes, zeroed). 0, or -1 if the body
 * is refused. */
int admit_scan_body(const unsigned char *p, const unsigned char *end, facts_t *f, char *model);

/* The reason a body the scan refused is refused (into err), in the old
 * order; always -1. */
int admit_scan_refuse(const char *body, size_t len, char *err, size_t errlen);

/* err = msg; -1. */
static inline int admit_fail(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

#endif
