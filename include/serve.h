/* serve: the serving process (`pinmeter serve`): start-up, SIGHUP reload and
 * orderly shutdown of everything the proxy runs. */
#ifndef PINMETER_SERVE_H
#define PINMETER_SERVE_H

/* The command line's say over the config file (NULL: the file's value). */
typedef struct serve_opts {
    const char *config;            /* the config file */
    const char *listen;            /* --listen HOST:PORT */
    const char *upstream;          /* --upstream URL */
    const char *ledger;            /* --ledger PATH */
} serve_opts_t;

/* Serves until SIGTERM or SIGINT; the process's exit code (0 after a clean
 * stop, 1 when it could not start). */
int serve_run(const serve_opts_t *o);

#endif
