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

struct http_server {
    struct MHD_Daemon *d;
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
};

/* Stores the response (owned) and resumes the connection if the handler had returned. */
void http_respond_mhd(http_request *r, int status, struct MHD_Response *resp);
/* Ends every streaming response of s (they finish their current chunk and close). */
void http_streams_close(http_server *s);

#endif
