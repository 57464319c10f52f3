/* reqlog: the request log — GET /v0/usage/requests, the ledger's rows
 * newest first (by start time, then id), filtered and paged by an opaque
 * cursor, and GET /v0/usage/requests/{id}, one row by the
 * X-Pinmeter-Request-Id its client got. A team key sees only its own team's
 * rows (another team's id is 404, as unknown ones are). The queries run in
 * jobs over the ledger's read connection.
 *
 * The cursor names the position a page stopped at by (started_ms, id) of a
 * row, which a row never changes; the next page takes the rows strictly after
 * it in the order. So a walk that follows next_cursor to its end visits
 * every row that was in the ledger when it started exactly once, however
 * many rows arrive meanwhile (those sort above its start, or are met once on
 * the way). A page reads a bounded number of rows (LEDGER_LOG_SCAN_MAX), so
 * with filters that match few of them it may hold fewer than limit rows,
 * even none, and still have a next_cursor: null only at the end. */
#ifndef PINMETER_REQLOG_H
#define PINMETER_REQLOG_H
#include <stddef.h>
#include <stdint.h>
#include "req.h"

#define REQLOG_LIMIT_DEFAULT 100
#define REQLOG_LIMIT_MAX 1000
#define REQLOG_CURSOR_MAX 128         /* an encoded cursor and its NUL, at most */

/* The routes' handlers (req_serve_fn): the list, and one row ({id} is
 * r->path_rest). */
enum MHD_Result reqlog_serve(req_t *r, struct MHD_Connection *c);
enum MHD_Result reqlog_serve_one(req_t *r, struct MHD_Connection *c);

/* Encodes the position (started_ms, id) as a cursor (base64url, no padding)
 * into out (REQLOG_CURSOR_MAX bytes). 0, or -1 if id is empty or too long. */
int reqlog_cursor_encode(int64_t started_ms, const char *id, char *out);
/* Decodes a cursor made by reqlog_cursor_encode into *started_ms and id
 * (idlen bytes). 0, or -1 (outputs untouched) for anything else. */
int reqlog_cursor_decode(const char *s, int64_t *started_ms, char *id, size_t idlen);

#endif
