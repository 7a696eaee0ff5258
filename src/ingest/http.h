/* HTTP server glue over libmicrohttpd: routing, body limits, request ids, JSON errors,
 * and asynchronous responses (a handler may answer later from another thread, e.g. once
 * the queue has made a batch durable; the connection is suspended meanwhile). */
#ifndef METERD_INGEST_HTTP_H
#define METERD_INGEST_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct http_server http_server;
typedef struct http_request http_request;
typedef struct http_stream http_stream;

typedef void (*http_handler)(http_request *req, void *ctx);

enum { HTTP_BODY_NONE = 0, HTTP_BODY_JSON = 1, HTTP_BODY_ANY = 2 };

typedef struct http_route {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/api/v1/devices/{}/readings": {} matches one path segment */
    int body;            /* HTTP_BODY_*: JSON routes answer 415 for other content types */
    http_handler handler;
    void *ctx;           /* borrowed; passed to the handler */
} http_route;

typedef struct http_config {
    const char *addr; /* host:port */
    unsigned threads;
    size_t max_body_bytes;
    unsigned idle_timeout_s;
    unsigned max_connections;
    int access_log;
    int fast_lane; /* serve plain ingest requests without libmicrohttpd (http_fast.c) */
} http_config;

/* Copies the n routes of table into routes (capacity cap). Returns n, or 0 when they do not fit. */
size_t http_routes_copy(http_route *routes, size_t cap, const http_route *table, size_t n);
#define HTTP_ROUTES_COPY(routes, cap, table) \
    http_routes_copy((routes), (cap), (table), sizeof(table) / sizeof((table)[0]))

/* Starts listening. NULL on error, message in err. routes is borrowed for the server's life. */
http_server *http_start(const http_config *cfg, const http_route *routes, size_t n_routes,
                        char *err, size_t errlen);
/* Returns the bound port (useful with port 0). */
unsigned http_port(http_server *s);
/* Stops admitting requests (new ones get 503 with Retry-After and Connection: close), ends
 * streaming responses and waits up to timeout_ms for the admitted requests to finish. */
void http_quiesce(http_server *s, int timeout_ms);
/* Closes every connection and frees the server. */
void http_stop(http_server *s);

/* Request accessors (valid until the response is sent). */
const char *http_method(const http_request *r);
const char *http_path(const http_request *r);
/* The n-th {} capture of the route pattern (URL-decoded), or NULL. */
const char *http_param(const http_request *r, unsigned n);
/* A query-string argument, or NULL. */
const char *http_query(const http_request *r, const char *key);
/* A request header, or NULL. */
const char *http_header(const http_request *r, const char *name);
/* The request body and its length (not NUL-terminated). */
const char *http_body(const http_request *r, size_t *len);
const char *http_request_id(const http_request *r);

/* Responses: exactly one per request, from any thread. Each takes ownership of what it is given. */
void http_respond_json(http_request *r, int status, json_t *body /* stolen */);
/* Smallest JSON_REAL_PRECISION (15..17) at which every real in j reads back exactly. */
int http_json_real_precision(const json_t *j);
void http_respond_text(http_request *r, int status, const char *content_type,
                       char *body /* owned, malloc'd */, size_t len);
/* A body that outlives the server (e.g. an embedded asset): borrowed, never freed. */
void http_respond_static(http_request *r, int status, const char *content_type,
                         const void *body, size_t len);

/* Streaming responses (e.g. Server-Sent Events). read() fills buf with up to max bytes and
 * returns how many, 0 when it has nothing now (the connection sleeps until http_stream_wake),
 * or -1 to end the response. release(ctx) runs once when the response is done, whatever
 * ended it; after it returns nobody may call http_stream_wake on this stream. */
typedef long (*http_stream_read)(void *ctx, char *buf, size_t max);
/* Starts a chunked response with status and content type; returns the stream (borrowed,
 * valid until release runs), or NULL (release already called, a 500 sent). */
http_stream *http_respond_stream(http_request *r, int status, const char *content_type,
                                 http_stream_read read, void (*release)(void *ctx), void *ctx);
/* Says that read() has something again: wakes a sleeping stream. Any thread. */
void http_stream_wake(http_stream *st);

/* The one JSON error writer: {"statusCode","error","message","path","timestamp","request_id"}. */
void http_respond_error(http_request *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with extra members merged into the error object (extra stolen), e.g. "detail". */
void http_respond_error_with(http_request *r, int status, json_t *detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Adds a header to the coming response (copied). Call before respond. */
void http_add_header(http_request *r, const char *name, const char *value);

/* The standard reason phrase for an HTTP status. */
const char *http_reason(int status);

#endif
