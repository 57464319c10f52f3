/* web: the dashboard's files — GET /dashboard (the page) and GET
 * /dashboard/NAME (its stylesheet, scripts and icon) — served from the
 * copies compiled into the binary (src/web/, turned into web_assets[] by
 * scripts/web2c.sh at build time). The page holds no data: it asks its
 * user for a token and reads the JSON APIs with it. Every answer carries a
 * Content-Security-Policy that lets the page load nothing but this origin's
 * own files (no inline script or style, no other host), nosniff, and an
 * ETag (If-None-Match answers 304). No file is read from disk. */
#ifndef PINMETER_WEB_H
#define PINMETER_WEB_H
#include <stddef.h>
#include "req.h"

/* One compiled-in file. */
typedef struct web_asset {
    const char *name;              /* "index.html", "app.css", ... */
    const char *type;              /* its Content-Type */
    const unsigned char *data;
    size_t len;
    const char *etag;              /* quoted, e.g. "\"3f2a...\"" */
} web_asset_t;

extern const web_asset_t web_assets[];
extern const size_t web_n_assets;

/* The policy every dashboard answer carries. */
#define WEB_CSP "default-src 'self'; img-src 'self' data:; style-src 'self'; " \
                "script-src 'self'; connect-src 'self'; base-uri 'none'; "    \
                "form-action 'none'; frame-ancestors 'none'"

/* The compiled-in file called name ("index.html" for the page), or NULL. */
const web_asset_t *web_find(const char *name);

/* The routes' handler (req_serve_fn): "/dashboard" serves the page,
 * "/dashboard/NAME" the file NAME (404 when there is none). */
enum MHD_Result web_serve(req_t *r, struct MHD_Connection *c);

#endif
