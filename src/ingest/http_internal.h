/* Internals shared by the HTTP glue's files (http.c, http_stream.c). Not a public contract. */
#ifndef METERD_INGEST_HTTP_INTERNAL_H
#define METERD_INGEST_HTTP_INTERNAL_H

#include "ingest/http.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define MAX_PARAMS 4
#define MAX_EXTRA_HEADERS 4

typedef struct fast_conn fast_conn;
typedef struct http_fast http_fast;

struct http_server {
    struct MHD_Daemon *d;
    http_fast *fast;         /* accepts every connection (http_fast.c) */
    int lfd;                 /* the listening socket */
    atomic_int connections;  /* open, in the fast lane or given to MHD */
    const http_route *routes; /* borrowed */
    size_t n_routes;
    http_config cfg;
    atomic_int in_flight; /* admitted requests not yet completed */
    atomic_int draining;  /* set by http_quiesce: new requests get 503 and the connection closes */
    unsigned port;
    pthread_mutex_t streams_mu;
    http_stream *streams; /* streaming responses in progress (http_stream.c) */
    int streams_closed;   /* set by http_streams_close: new streams end at once */
};

enum { PH_RECEIVING, PH_HANDLING };
enum { ST_RUNNING, ST_SUSPENDED };

struct http_request {
    http_server *srv;
    struct MHD_Connection *conn;
    const http_route *route;
    char *params[MAX_PARAMS]; /* owned */
    const char *method;       /* borrowed from MHD */
    char *path;               /* owned */
    char *body;               /* owned */
    size_t body_len, body_cap;
    uint64_t charged;         /* bytes taken from the request-memory budget (core/membudget.h) */
    int reject_status;        /* non-zero: answer this once the body is read */
    uint64_t declared_len;    /* Content-Length, or UINT64_MAX when not given */
    uint64_t discarded;       /* bytes of a rejected body read and dropped */
    char reject_msg[160];
    int phase;
    int admitted; /* counted in srv->in_flight */
    char request_id[65];
    int64_t start_us;
    pthread_mutex_t mu;
    int state;
    int status;
    struct MHD_Response *resp; /* set once by http_respond_* */
    char *extra[MAX_EXTRA_HEADERS][2]; /* owned */
    fast_conn *fc; /* non-NULL: served by the fast lane, conn is NULL */
};

/* Request life, shared by the MHD callbacks and the fast lane. begin: counted in in_flight,
 * routed, headers checked (reject_status set when the request is refused); NULL when out of
 * memory. run: answers the rejection or calls the handler. end: logs and frees. */
http_request *http_request_begin(http_server *s, const char *method, const char *url,
                                 struct MHD_Connection *conn, fast_conn *fc);
void http_request_run(http_request *r);
void http_request_end(http_request *r, int status, int completed);
/* True when a route that takes a body matches method and path (what the fast lane serves). */
int http_route_takes_body(const http_server *s, const char *method, const char *path);

/* The fast lane (http_fast.c): lfd is listening and non-blocking; threads loops. */
http_fast *http_fast_start(http_server *s, int lfd, unsigned threads, char *err, size_t errlen);
void http_fast_stop(http_fast *f);
const char *http_fast_header(const http_request *r, const char *name);
/* Sends the answer from the calling thread and re-arms (or closes) the connection; r is
 * freed. body is copied or sent before it returns. */
void http_fast_respond(http_request *r, int status, const char *content_type, const char *body,
                       size_t len);

/* Stores the response (owned) and resumes the connection if the handler had returned. */
void http_respond_mhd(http_request *r, int status, struct MHD_Response *resp);
/* Ends every streaming response of s (they finish their current chunk and close). */
void http_streams_close(http_server *s);

#endif
