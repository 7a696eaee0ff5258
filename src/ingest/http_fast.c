/* The HTTP fast lane: accepts every connection and serves the common ingest request itself,
 * handing everything else to libmicrohttpd (docs/decisions.md, 28).
 *
 * Why: under single-reading POSTs libmicrohttpd's suspend/resume costs two epoll_ctl, an
 * eventfd write and read and a wake-up of its thread per request, on top of the recv and send.
 * Here a connection is registered once, edge-triggered; the loop thread peeks at the request,
 * and when it is a complete, plain HTTP/1.1 request for a route that takes a body, it consumes
 * it and runs the handler. An answer made on another thread (the queue's commit thread, for a
 * 202) is queued to the loop, and one eventfd write wakes it for all the answers of a commit;
 * the loop sends them. Per request: a peek, a recv, a send, no epoll_ctl.
 *
 * A request that is not complete yet is waited for while it can still become such a request
 * (the next packet is the next edge). Anything else (another route, HTTP/1.0, chunked bodies,
 * Expect, a query string, a body over the limit, a request over FAST_BUF, a server that is
 * draining) is left unread in the socket and the connection is given to libmicrohttpd with
 * MHD_add_connection, which then owns it for good. So every answer but the plain ingest one
 * comes from the same code as before, and the lane never has to speak HTTP beyond that case.
 *
 * Ownership: a connection belongs to its loop thread (events, sends, the idle sweep). Another
 * thread touches it only to answer a request it holds: it fills `out` and queues the
 * connection under the loop's lock. A connection serves one request at a time; bytes that
 * arrive meanwhile (a pipelining client) are noted and looked at once the answer is out. */
#include "ingest/http_fast_parse.h"
#include "ingest/http_internal.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FAST_BUF (16 * 1024) /* the largest request the lane serves, headers included */
#define FAST_EVENTS 64

typedef struct fast_loop fast_loop;

struct fast_conn {
    int fd;
    fast_loop *loop;
    fast_conn *prev, *next; /* loop->conns */
    int64_t last_us;  /* last activity, for the idle sweep */
    int busy;         /* a request is in progress: from its bytes until its answer is out */
    int pending_in;   /* unread bytes may be waiting (an edge came, or a peek saw more) */
    int want_out;     /* the answer did not fit in the socket: waiting for EPOLLOUT */
    int close_after;  /* Connection: close */
    size_t partial;   /* bytes of an incomplete request seen by the last peek */
    int pipelined;    /* a request has arrived behind another (see conn_readable) */
    int counted;      /* this connection holds one in srv->in_flight (see hold_request) */
    int in_again;          /* on loop->again: only that list serves it next */
    fast_conn *again_next; /* loop->again */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    fast_msg msg; /* the request in progress, pointing into buf */
    char *out;                            /* the answer, or what send() has not taken of it */
    size_t out_len, out_off;
    fast_conn *ready_next;                /* loop->ready */
    char buf[FAST_BUF + 1];
};

struct fast_loop {
    http_fast *f;
    int ep;
    pthread_t thread;
    int started;
    pthread_mutex_t mu; /* conns, ready */
    fast_conn *conns;
    fast_conn *ready, **ready_tail; /* answers produced by other threads, sent by the loop */
    fast_conn *again; /* loop thread only: answered connections with bytes waiting */
    int wake;                       /* eventfd: ready is not empty, or stop */
};

struct http_fast {
    http_server *s;
    int lfd;
    atomic_int stop;
    unsigned n;
    fast_loop loops[];
};

/* epoll data: NULL for the listen socket, the loop itself for its eventfd, else a conn */
static _Thread_local fast_loop *this_loop; /* set in the loop threads */

static void conn_unlink(fast_conn *c)
{
    fast_loop *l = c->loop;
    pthread_mutex_lock(&l->mu);
    if (c->prev) c->prev->next = c->next;
    else l->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    pthread_mutex_unlock(&l->mu);
}

/* A request whose headers are in counts as in flight, as libmicrohttpd admits a request at
 * its headers: http_quiesce then waits for a slow upload that began before SIGTERM, and the
 * upload gets its 503 instead of a reset. The count passes to the request once it begins, or
 * is dropped when its answer is out or the connection goes. */
static void hold_request(fast_conn *c)
{
    if (c->counted) return;
    atomic_fetch_add(&c->loop->f->s->in_flight, 1);
    c->counted = 1;
}

static void release_request(fast_conn *c)
{
    if (!c->counted) return;
    atomic_fetch_sub(&c->loop->f->s->in_flight, 1);
    c->counted = 0;
}

/* Closes a connection already out of loop->conns. */
static void conn_free(fast_conn *c)
{
    http_server *s = c->loop->f->s;
    release_request(c); /* a request that never completed */
    close(c->fd);
    free(c->out);
    free(c);
    atomic_fetch_sub(&s->connections, 1);
}

static void conn_close(fast_conn *c)
{
    conn_unlink(c);
    conn_free(c);
}

/* Gives the connection, with whatever it has not read yet, to libmicrohttpd. */
static void conn_handover(fast_conn *c)
{
    http_server *s = c->loop->f->s;
    release_request(c);
    epoll_ctl(c->loop->ep, EPOLL_CTL_DEL, c->fd, NULL);
    conn_unlink(c);
    /* MHD closes the socket when it cannot take it; it counts the connection down when it
     * closes one it took (on_connection in http.c) */
    if (MHD_add_connection(s->d, c->fd, (struct sockaddr *)&c->addr, c->addrlen) != MHD_YES)
        atomic_fetch_sub(&s->connections, 1);
    free(c->out);
    free(c);
}

/* The connection has something to read: serve it, or hand it over. */
static void conn_readable(fast_conn *c)
{
    http_server *s = c->loop->f->s;
    c->pending_in = 0;
    ssize_t n;
    do n = recv(c->fd, c->buf, FAST_BUF, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n == 0 || (n < 0 && errno != EAGAIN)) {
        conn_close(c);
        return;
    }
    if (n < 0) return; /* nothing yet: the next edge says when */
    fast_msg *q = &c->msg;
    /* a body that cannot fit the buffer goes to libmicrohttpd as soon as its headers are in */
    uint64_t max_body = s->cfg.max_body_bytes < FAST_BUF ? s->cfg.max_body_bytes : FAST_BUF;
    int rc = fast_parse(c->buf, (size_t)n, max_body, q);
    /* A pipelining client's partial request goes to libmicrohttpd, which reads it into its
     * own buffer: left in the socket, it can sit at the end of a large packet whose memory the
     * kernel keeps charged until all of it is read, and once that fills the receive buffer the
     * window closes and the rest of the request never comes (seen on loopback: a burst of
     * 3,000 requests stalled after ~1,000). One request per round trip fits in any buffer. */
    if (rc == FAST_MORE && (size_t)n < FAST_BUF && !c->pipelined &&
        (!q->method || http_route_takes_body(s, q->method, q->target))) {
        /* the rest is on its way (a request split over packets, or the next one of a
         * pipelining client): its arrival is the next edge. A request must be whole within
         * the idle timeout of the last progress; the sweep closes the connection otherwise. */
        if ((size_t)n > c->partial) c->last_us = time_mono_us();
        c->partial = (size_t)n;
        if (q->method) hold_request(c);
        return;
    }
    if (rc != FAST_MINE || !http_route_takes_body(s, q->method, q->target)) {
        conn_handover(c);
        return;
    }
    c->partial = 0;
    /* consume exactly that request (pipelined ones stay in the socket for the next round) */
    if (recv(c->fd, NULL, q->total, MSG_TRUNC) != (ssize_t)q->total) {
        conn_close(c);
        return;
    }
    c->close_after = q->close;
    c->busy = 1;
    c->pending_in = (size_t)n > q->total; /* a pipelined request is waiting already */
    c->pipelined |= c->pending_in;
    /* while draining, begin() makes it a 503 with Connection: close, as libmicrohttpd does */
    http_request *r = http_request_begin(s, q->method, q->target, NULL, c);
    if (!r) {
        conn_close(c);
        return;
    }
    if (r->admitted) release_request(c); /* the request counts itself now */
    if (!r->reject_status && q->body_len && !r->body) {
        r->reject_status = 503;
        snprintf(r->reject_msg, sizeof r->reject_msg, "out of memory reading the body");
    } else if (!r->reject_status && q->body_len) {
        memcpy(r->body, q->body, q->body_len);
        r->body_len = q->body_len;
        r->body[q->body_len] = '\0';
    }
    http_request_run(r);
}

/* Sends what is left of an answer. Once it is all out the connection takes the next request:
 * at once when bytes are waiting (through loop->again, not recursion: a client pipelining
 * many requests answered on the spot must not grow the stack). Loop thread. */
static void conn_flush(fast_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) {
            c->want_out = 1;
            c->last_us = time_mono_us(); /* a stalled reader is closed after the idle timeout */
            return;
        }
        if (w <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)w;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    c->want_out = 0;
    c->busy = 0;
    c->last_us = time_mono_us();
    release_request(c);
    if (c->close_after) {
        conn_close(c);
    } else if (c->pending_in) {
        fast_loop *l = c->loop;
        c->in_again = 1;
        c->again_next = l->again;
        l->again = c;
    }
}

const char *http_fast_header(const http_request *r, const char *name)
{
    const fast_msg *m = &r->fc->msg;
    for (size_t i = 0; i < m->n_hdr; i++)
        if (!strcasecmp(m->hdr[i][0], name)) return m->hdr[i][1];
    return NULL;
}

/* "Sun, 29 Nov 2026 14:00:00 GMT", as libmicrohttpd writes it; formatted once a second per
 * thread. */
static const char *http_date(void)
{
    static _Thread_local time_t last = -1;
    static _Thread_local char text[64];
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return text;
}

/* Appends one formatted header line to head[0..cap); once it does not fit, *h stays past
 * cap, so the caller can tell and no later call writes anything. */
__attribute__((format(printf, 4, 5))) static void head_add(char *head, size_t cap, size_t *h,
                                                           const char *fmt, ...)
{
    if (*h >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(head + *h, cap - *h, fmt, ap);
    va_end(ap);
    *h = n < 0 ? cap : *h + (size_t)n;
}

void http_fast_respond(http_request *r, int status, const char *content_type, const char *body,
                       size_t len)
{
    fast_conn *c = r->fc;
    char head[2048];
    size_t h = 0;
    head_add(head, sizeof head, &h, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Length: %zu\r\n",
             status, http_reason(status), http_date(), len);
    if (content_type) head_add(head, sizeof head, &h, "Content-Type: %s\r\n", content_type);
    head_add(head, sizeof head, &h, "X-Request-Id: %s\r\n", r->request_id);
    for (int i = 0; i < MAX_EXTRA_HEADERS; i++) {
        if (!r->extra[i][0]) continue;
        if (!strcasecmp(r->extra[i][0], "Connection") && fast_has_token(r->extra[i][1], "close"))
            c->close_after = 1;
        head_add(head, sizeof head, &h, "%s: %s\r\n", r->extra[i][0], r->extra[i][1]);
    }
    if (c->close_after) head_add(head, sizeof head, &h, "Connection: close\r\n");
    /* a cut header block cannot happen with our headers, and is never sent: nor is anything
     * when out of memory; the loop closes the connection (only it may free c) */
    c->out = h + 2 < sizeof head ? malloc(h + 2 + len) : NULL;
    c->out_off = c->out_len = 0;
    if (c->out) {
        memcpy(c->out, head, h);
        memcpy(c->out + h, "\r\n", 2);
        if (len) memcpy(c->out + h + 2, body, len);
        c->out_len = h + 2 + len;
    } else {
        c->close_after = 1;
    }
    http_request_end(r, status, c->out != NULL);
    fast_loop *l = c->loop;
    if (this_loop == l) {
        conn_flush(c);
        return;
    }
    /* Another thread (the queue's commit thread) answers: the loop sends, so that thread
     * goes back to its next fsync at once; one wake-up carries every answer of a commit. */
    pthread_mutex_lock(&l->mu);
    int was_empty = l->ready == NULL;
    c->ready_next = NULL;
    *l->ready_tail = c;
    l->ready_tail = &c->ready_next;
    pthread_mutex_unlock(&l->mu);
    if (was_empty && eventfd_write(l->wake, 1)) { /* a counter this small cannot overflow */ }
}

/* Sends the answers other threads queued. Loop thread. */
static void send_ready(fast_loop *l)
{
    /* the eventfd is edge-triggered: every write is an event, and it is never read (its
     * counter would need 2^64 writes to fill), which saves a syscall per wake-up */
    pthread_mutex_lock(&l->mu);
    fast_conn *c = l->ready;
    l->ready = NULL;
    l->ready_tail = &l->ready;
    pthread_mutex_unlock(&l->mu);
    for (fast_conn *next; c; c = next) {
        next = c->ready_next;
        conn_flush(c);
    }
}

static void conn_accept(fast_loop *l)
{
    http_fast *f = l->f;
    http_server *s = f->s;
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept4(f->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN) { /* out of descriptors: do not spin on the listen socket */
                log_warn("http_accept", "accept: %s", strerror(errno));
                usleep(10 * 1000);
            }
            return;
        }
        if ((unsigned)atomic_fetch_add(&s->connections, 1) >= s->cfg.max_connections) {
            atomic_fetch_sub(&s->connections, 1);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        fast_conn *c = calloc(1, sizeof *c);
        if (!c) {
            atomic_fetch_sub(&s->connections, 1);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->loop = l;
        if (sl > sizeof ss) sl = sizeof ss; /* cannot happen for IPv4 and IPv6 */
        memcpy(&c->addr, &ss, sl);
        c->addrlen = sl;
        c->last_us = time_mono_us();
        pthread_mutex_lock(&l->mu);
        c->next = l->conns;
        if (c->next) c->next->prev = c;
        l->conns = c;
        pthread_mutex_unlock(&l->mu);
        if (!s->cfg.fast_lane) {
            conn_handover(c);
            continue;
        }
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        if (epoll_ctl(l->ep, EPOLL_CTL_ADD, fd, &ev)) conn_close(c);
    }
}

/* Closes connections that have waited for a request longer than the idle timeout. */
static void sweep(fast_loop *l)
{
    unsigned t = l->f->s->cfg.idle_timeout_s;
    if (!t) return;
    int64_t limit = time_mono_us() - (int64_t)t * 1000000;
    pthread_mutex_lock(&l->mu);
    fast_conn *old = NULL;
    for (fast_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        /* busy: waiting for the queue (never cut) or for a reader that stopped reading */
        if ((c->busy && !c->want_out) || c->last_us > limit) continue;
        if (c->prev) c->prev->next = c->next;
        else l->conns = c->next;
        if (c->next) c->next->prev = c->prev;
        c->next = old; /* closed below, outside the lock */
        old = c;
    }
    pthread_mutex_unlock(&l->mu);
    for (fast_conn *c = old, *next; c; c = next) {
        next = c->next;
        conn_free(c);
    }
}

static void *loop_main(void *arg)
{
    fast_loop *l = arg;
    this_loop = l;
    struct epoll_event ev[FAST_EVENTS];
    int64_t next_sweep = time_mono_us() + 1000000;
    while (!atomic_load(&l->f->stop)) {
        int n = epoll_wait(l->ep, ev, FAST_EVENTS, 1000);
        for (int i = 0; i < n; i++) {
            void *p = ev[i].data.ptr;
            if (p == l) {
                send_ready(l);
                continue;
            }
            if (!p) {
                conn_accept(l);
                continue;
            }
            fast_conn *c = p;
            if (ev[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) c->pending_in = 1;
            if (c->want_out && (ev[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) conn_flush(c);
            else if (!c->busy && c->pending_in && !c->in_again) conn_readable(c);
        }
        /* connections answered this round with a request waiting; those answered while
         * serving these wait for the next round */
        fast_conn *again = l->again;
        l->again = NULL;
        for (fast_conn *c = again, *next; c; c = next) {
            next = c->again_next;
            c->in_again = 0;
            conn_readable(c);
        }
        if (time_mono_us() >= next_sweep) {
            sweep(l);
            next_sweep = time_mono_us() + 1000000;
        }
    }
    return NULL;
}

http_fast *http_fast_start(http_server *s, int lfd, unsigned threads, char *err, size_t errlen)
{
    http_fast *f = calloc(1, sizeof *f + threads * sizeof(fast_loop));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    f->s = s;
    f->lfd = lfd;
    f->n = threads;
    for (unsigned i = 0; i < threads; i++) {
        fast_loop *l = &f->loops[i];
        l->f = f;
        l->ep = -1;
        l->ready_tail = &l->ready;
        l->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        pthread_mutex_init(&l->mu, NULL);
    }
    for (unsigned i = 0; i < threads; i++) {
        fast_loop *l = &f->loops[i];
        l->ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event le = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = NULL};
        struct epoll_event we = {.events = EPOLLIN | EPOLLET, .data.ptr = l};
        if (l->wake < 0 || l->ep < 0 || epoll_ctl(l->ep, EPOLL_CTL_ADD, lfd, &le) ||
            epoll_ctl(l->ep, EPOLL_CTL_ADD, l->wake, &we) ||
            pthread_create(&l->thread, NULL, loop_main, l)) {
            snprintf(err, errlen, "http: cannot start its threads: %s", strerror(errno));
            http_fast_stop(f);
            return NULL;
        }
        l->started = 1;
        pthread_setname_np(l->thread, "md-http");
    }
    return f;
}

void http_fast_stop(http_fast *f)
{
    if (!f) return;
    atomic_store(&f->stop, 1);
    for (unsigned i = 0; i < f->n; i++)
        if (f->loops[i].wake >= 0 && eventfd_write(f->loops[i].wake, 1)) { /* cannot fail */ }
    for (unsigned i = 0; i < f->n; i++) {
        fast_loop *l = &f->loops[i];
        if (l->started) pthread_join(l->thread, NULL);
        /* the queue has answered every request by now (pipeline_close runs first) */
        while (l->conns) conn_close(l->conns);
        if (l->ep >= 0) close(l->ep);
        if (l->wake >= 0) close(l->wake);
        pthread_mutex_destroy(&l->mu);
    }
    free(f);
}
