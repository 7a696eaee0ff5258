/* Streaming responses over libmicrohttpd: a chunked body produced by a callback.
 *
 * MHD pulls the body through stream_reader. When the producer has nothing, the reader
 * suspends the connection and returns 0 (MHD's documented way to avoid busy-waiting);
 * http_stream_wake resumes it from any thread. `pending` closes the gap between the
 * producer's read coming back empty and the suspension: a wake in between is not lost.
 * A suspended connection never times out and MHD does not notice the peer going away
 * until the next write, so producers should write something now and then (heartbeats). */
#include "ingest/http_internal.h"

#include <stdlib.h>
#include <string.h>

#define STREAM_BLOCK 4096

struct http_stream {
    http_server *srv;             /* borrowed */
    struct MHD_Connection *conn;  /* borrowed from MHD */
    pthread_mutex_t mu;
    int suspended; /* the reader suspended the connection and nobody resumed it yet */
    int pending;   /* woken since the reader last looked */
    int closing;   /* end the response at the next read */
    http_stream_read read;
    void (*release)(void *ctx);
    void *ctx;                    /* borrowed; handed to release */
    http_stream *prev, *next;     /* srv->streams */
};

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    http_stream *st = cls;
    for (;;) {
        pthread_mutex_lock(&st->mu);
        int closing = st->closing;
        st->pending = 0;
        pthread_mutex_unlock(&st->mu);
        if (closing) return MHD_CONTENT_READER_END_OF_STREAM;
        long n = st->read(st->ctx, buf, max);
        if (n > 0) return (ssize_t)n;
        if (n < 0) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&st->mu);
        if (st->pending || st->closing) {
            pthread_mutex_unlock(&st->mu);
            continue;
        }
        st->suspended = 1;
        MHD_suspend_connection(st->conn);
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
}

/* MHD is done with the response: the producer lets go first, then the stream goes. */
static void stream_free(void *cls)
{
    http_stream *st = cls;
    st->release(st->ctx);
    http_server *s = st->srv;
    pthread_mutex_lock(&s->streams_mu);
    if (st->prev) st->prev->next = st->next;
    else s->streams = st->next;
    if (st->next) st->next->prev = st->prev;
    pthread_mutex_unlock(&s->streams_mu);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

http_stream *http_respond_stream(http_request *r, int status, const char *content_type,
                                 http_stream_read read, void (*release)(void *ctx), void *ctx)
{
    /* the fast lane only serves routes that take a body, never a stream: a 500 if it did */
    http_stream *st = r->fc ? NULL : calloc(1, sizeof *st);
    if (!st) {
        release(ctx);
        if (r->fc) http_respond_static(r, 500, NULL, "", 0);
        else http_respond_mhd(r, 500, NULL);
        return NULL;
    }
    pthread_mutex_init(&st->mu, NULL);
    st->srv = r->srv;
    st->conn = r->conn;
    st->read = read;
    st->release = release;
    st->ctx = ctx;
    struct MHD_Response *resp = MHD_create_response_from_callback(
        MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader, st, stream_free);
    if (!resp) {
        release(ctx);
        pthread_mutex_destroy(&st->mu);
        free(st);
        http_respond_mhd(r, 500, NULL);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: do not buffer */
    http_server *s = r->srv;
    pthread_mutex_lock(&s->streams_mu);
    st->closing = s->streams_closed;
    st->next = s->streams;
    if (s->streams) s->streams->prev = st;
    s->streams = st;
    pthread_mutex_unlock(&s->streams_mu);
    http_respond_mhd(r, status, resp);
    return st;
}

/* Sets the flags under the stream's lock and resumes a sleeping connection. */
static void stream_poke(http_stream *st, int close)
{
    pthread_mutex_lock(&st->mu);
    st->pending = 1;
    if (close) st->closing = 1;
    if (st->suspended) {
        st->suspended = 0;
        MHD_resume_connection(st->conn);
    }
    pthread_mutex_unlock(&st->mu);
}

void http_stream_wake(http_stream *st)
{
    stream_poke(st, 0);
}

void http_streams_close(http_server *s)
{
    pthread_mutex_lock(&s->streams_mu);
    s->streams_closed = 1;
    for (http_stream *st = s->streams; st; st = st->next) stream_poke(st, 1);
    pthread_mutex_unlock(&s->streams_mu);
}
