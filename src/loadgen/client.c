/* meterd loadgen: the epoll HTTP/1.1 keep-alive client. A connection is CLOSED (waiting to
 * reconnect), CONNECTING, IDLE or BUSY (one request written or being read); no pipelining. */
#include "loadgen/client.h"
#include "core/error.h"
#include "core/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define HEAD_ROOM 512 /* bytes kept free before the body for the request head */
/* At a fixed rate the client wakes once per tick and sends every request due before the next one.
 * epoll_wait() sleeps in whole milliseconds; a sleep that ended at the first due request sent the
 * requests due during that millisecond up to 1 ms late (eight of them at 16,000/s on two threads),
 * and that lateness counted as latency: most of the p50 against a server that answers at once.
 * Waking for each request instead (epoll_pwait2) cost this virtual machine three times the CPU
 * (decision 36). A request sent before its time counts from its send, one sent after from its
 * scheduled time, so no wait of the client's own and every wait for a busy server is counted. */
#define TICK_US 1000
#define RETRY_US (100 * 1000)

enum { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY };

struct lg_conn {
    lg_worker *w;
    unsigned idx;
    int fd, state, want_out;
    int64_t ready_at_us; /* CLOSED: reconnect from then; IDLE: send from then */
    int64_t sched_us, deadline_us;
    lg_req_info info;
    lg_buf out; /* the request; starts at out_off */
    size_t out_off;
    lg_http_resp resp;
};

static void conn_close(lg_conn *c, int64_t retry_at)
{
    if (c->fd >= 0) {
        epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
    if (c->state == C_IDLE) { /* take it off the idle stack */
        lg_worker *w = c->w;
        for (unsigned i = 0; i < w->n_idle; i++)
            if (w->idle[i] == c->idx) {
                w->idle[i] = w->idle[--w->n_idle];
                break;
            }
    }
    c->state = C_CLOSED;
    c->ready_at_us = retry_at;
    c->w->n_closed++;
}

static void conn_set_idle(lg_conn *c, int64_t ready_at)
{
    c->state = C_IDLE;
    c->ready_at_us = ready_at;
    c->w->idle[c->w->n_idle++] = c->idx;
}

static int conn_watch(lg_conn *c, int out)
{
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    c->want_out = out;
    return epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void fail(lg_conn *c, lg_fail why, int64_t now)
{
    lg_stats *s = &c->w->stats;
    pthread_mutex_lock(&s->lock);
    s->c.fail[why]++;
    pthread_mutex_unlock(&s->lock);
    conn_close(c, now + RETRY_US);
}

static void conn_open(lg_conn *c, int64_t now)
{
    lg_shared *sh = c->w->sh;
    c->w->n_closed--;
    c->state = C_CONNECTING;
    c->fd = socket(sh->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fail(c, LG_FAIL_CONNECT, now);
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    c->want_out = 1;
    if ((connect(c->fd, (const struct sockaddr *)&sh->addr, sh->addrlen) && errno != EINPROGRESS) ||
        epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &ev))
        fail(c, LG_FAIL_CONNECT, now);
}

/* Writes what is left of the request; arms EPOLLOUT when the socket is full. */
static void conn_write(lg_conn *c, int64_t now)
{
    while (c->out_off < c->out.len) {
        ssize_t n = write(c->fd, c->out.p + c->out_off, c->out.len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out && conn_watch(c, 1)) fail(c, LG_FAIL_IO, now);
            return;
        }
        fail(c, LG_FAIL_IO, now);
        return;
    }
    if (c->want_out && conn_watch(c, 0)) fail(c, LG_FAIL_IO, now);
}

/* Builds request seq on an idle connection and starts writing it. */
static int conn_send(lg_conn *c, uint64_t seq, int64_t sched, int64_t now)
{
    lg_worker *w = c->w;
    const lg_opts *o = w->sh->o;
    c->out.len = 0;
    if (lg_buf_reserve(&c->out, HEAD_ROOM)) return MD_ERR_NOMEM;
    c->out.len = HEAD_ROOM;
    if (lg_gen_body(&w->gen, seq, &c->out, &c->info)) return MD_ERR_NOMEM;
    char head[HEAD_ROOM];
    int hl = snprintf(head, sizeof head,
                      "POST %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: meterd-loadgen\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      o->prefix, lg_gen_path(o->format), w->sh->host_header,
                      c->out.len - HEAD_ROOM);
    if (hl < 0 || hl >= HEAD_ROOM) return MD_ERR_INVALID;
    c->out_off = HEAD_ROOM - (size_t)hl;
    memcpy(c->out.p + c->out_off, head, (size_t)hl);
    c->state = C_BUSY;
    c->sched_us = sched;
    c->deadline_us = now + (int64_t)(o->timeout_s * 1e6);
    lg_http_resp_reset(&c->resp);
    pthread_mutex_lock(&w->stats.lock);
    w->stats.c.sent++;
    w->stats.c.sent_readings += c->info.readings;
    w->stats.c.bytes_out += c->out.len - c->out_off;
    pthread_mutex_unlock(&w->stats.lock);
    w->last_send_us = now;
    conn_write(c, now);
    return MD_OK;
}

static void on_response(lg_conn *c, int64_t now)
{
    lg_worker *w = c->w;
    lg_http_resp *r = &c->resp;
    uint64_t lat = now > c->sched_us ? (uint64_t)(now - c->sched_us) : 0;
    int ok = r->status >= 200 && r->status < 300;
    pthread_mutex_lock(&w->stats.lock);
    lg_counts *k = &w->stats.c;
    k->responses++;
    k->status[r->status]++;
    if (ok) {
        k->ok++;
        k->ok_readings += c->info.readings;
        k->ok_resent += c->info.resent;
        k->ok_late += c->info.late;
    } else if (!w->first_error[0]) {
        snprintf(w->first_error, sizeof w->first_error, "%d %.*s", r->status,
                 (int)(r->body_len < 160 ? r->body_len : 160), r->body ? r->body : "");
    }
    lg_hist_record(&w->stats.all, lat);
    lg_hist_record(&w->stats.interval, lat);
    pthread_mutex_unlock(&w->stats.lock);
    int64_t pause = 0;
    w->last_up_us = now;
    if (r->status == 503 || r->status == 429) /* back off as asked, at most 1 s */
        pause = r->retry_after > 0 ? (r->retry_after > 1 ? 1000000 : r->retry_after * 1000000)
                                   : RETRY_US;
    if (!r->keep_alive) conn_close(c, now + pause);
    else conn_set_idle(c, now + pause);
}

static void conn_read(lg_conn *c, int64_t now)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            /* The server may close an idle keep-alive connection; that is no failure. */
            if (c->state == C_IDLE) conn_close(c, now);
            else fail(c, LG_FAIL_IO, now);
            return;
        }
        pthread_mutex_lock(&c->w->stats.lock);
        c->w->stats.c.bytes_in += (uint64_t)n;
        pthread_mutex_unlock(&c->w->stats.lock);
        if (c->state != C_BUSY) { /* bytes nobody asked for */
            fail(c, LG_FAIL_MALFORMED, now);
            return;
        }
        size_t used;
        int rc = lg_http_resp_feed(&c->resp, buf, (size_t)n, &used);
        if (rc == LG_HTTP_MORE) continue;
        if (rc != LG_HTTP_DONE || used != (size_t)n) {
            fail(c, LG_FAIL_MALFORMED, now);
            return;
        }
        on_response(c, now);
        return;
    }
}

static void on_event(lg_conn *c, uint32_t ev, int64_t now)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if ((ev & (EPOLLERR | EPOLLHUP)) || getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) ||
            err) {
            fail(c, LG_FAIL_CONNECT, now);
            return;
        }
        if (conn_watch(c, 0)) {
            fail(c, LG_FAIL_CONNECT, now);
            return;
        }
        c->w->last_up_us = now;
        conn_set_idle(c, now);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) conn_read(c, now);
    if (c->state == C_BUSY && (ev & EPOLLOUT)) conn_write(c, now);
}

/* Fills idle connections with requests: as soon as possible, or on the fixed schedule. */
static int issue(lg_worker *w, int64_t now, int *done_issuing)
{
    lg_shared *sh = w->sh;
    const lg_opts *o = sh->o;
    if (atomic_load(&sh->stop) || (sh->end_mono_us && now >= sh->end_mono_us)) {
        *done_issuing = 1;
        return MD_OK;
    }
    unsigned skipped = 0;
    while (w->n_idle > skipped) {
        lg_conn *c = &w->conns[w->idle[w->n_idle - 1 - skipped]];
        if (c->ready_at_us > now) { /* paused after a 503: try the next one */
            skipped++;
            continue;
        }
        int64_t sched = now;
        if (o->rate > 0) {
            if (w->next_sched_us > (double)(now + TICK_US)) return MD_OK;
            if (sh->end_mono_us && w->next_sched_us >= (double)sh->end_mono_us) { /* due after the end */
                *done_issuing = 1;
                return MD_OK;
            }
            if (w->next_sched_us < (double)now) sched = (int64_t)w->next_sched_us;
        }
        uint64_t seq = atomic_fetch_add(&sh->next_seq, 1);
        if (o->count && seq >= o->count) {
            *done_issuing = 1;
            return MD_OK;
        }
        if (o->rate > 0) w->next_sched_us += w->interval_us;
        /* pop it: swap the chosen one with the top */
        unsigned pos = w->n_idle - 1 - skipped;
        w->idle[pos] = w->idle[w->n_idle - 1];
        w->n_idle--;
        int rc = conn_send(c, seq, sched, now);
        if (rc) return rc;
    }
    return MD_OK;
}

static void *worker_main(void *arg)
{
    lg_worker *w = arg;
    lg_shared *sh = w->sh;
    struct epoll_event evs[256];
    int done_issuing = 0;
    int64_t last_sweep = 0;
    w->next_sched_us = (double)sh->start_mono_us;
    w->last_up_us = sh->start_mono_us;
    for (;;) {
        int64_t now = time_mono_us();
        if (!done_issuing && w->n_closed)
            for (unsigned i = 0; i < w->nconn; i++)
                if (w->conns[i].state == C_CLOSED && w->conns[i].ready_at_us <= now)
                    conn_open(&w->conns[i], now);
        if (!done_issuing && (w->rc = issue(w, now, &done_issuing))) {
            snprintf(w->err, sizeof w->err, "cannot build a request: %s", md_strerror(w->rc));
            break;
        }
        unsigned busy = 0;
        for (unsigned i = 0; i < w->nconn; i++)
            busy += w->conns[i].state == C_BUSY;
        if (done_issuing && !busy) break;
        if (!busy && !w->n_idle && now - w->last_up_us > (int64_t)(sh->o->timeout_s * 1e6)) {
            /* every connection keeps failing: the server is not there */
            w->rc = MD_ERR_IO;
            snprintf(w->err, sizeof w->err, "no connection to %.100s for %.0f s", sh->host_header,
                     sh->o->timeout_s);
            break;
        }
        if (now - last_sweep >= 50000) { /* responses that never come */
            last_sweep = now;
            for (unsigned i = 0; i < w->nconn; i++)
                if (w->conns[i].state == C_BUSY && w->conns[i].deadline_us <= now)
                    fail(&w->conns[i], LG_FAIL_TIMEOUT, now);
        }
        int timeout = 50;
        if (!done_issuing && sh->o->rate > 0 && w->n_idle) {
            double d = (w->next_sched_us - (double)(now + TICK_US)) / 1000.0;
            timeout = d <= 0 ? 0 : d < 50 ? (int)ceil(d) : 50; /* wakes a tick ahead at most */
        }
        int n = epoll_wait(w->ep, evs, 256, timeout);
        now = time_mono_us();
        for (int i = 0; i < n; i++)
            on_event(evs[i].data.ptr, evs[i].events, now);
    }
    for (unsigned i = 0; i < w->nconn; i++)
        if (w->conns[i].fd >= 0) close(w->conns[i].fd);
    atomic_store(&w->finished, 1);
    return NULL;
}

int lg_worker_init(lg_worker *w, lg_shared *sh, unsigned tid, unsigned nconn)
{
    memset(w, 0, sizeof *w);
    w->sh = sh;
    w->tid = tid;
    w->nconn = nconn;
    w->ep = -1;
    int rc = lg_stats_init(&w->stats);
    if (rc) return rc;
    return lg_gen_init(&w->gen, sh->o, tid, sh->o->threads, sh->start_wall_us, sh->fleet_t0_us);
}

int lg_worker_start(lg_worker *w, lg_shared *sh, unsigned tid, unsigned nconn)
{
    int rc = lg_worker_init(w, sh, tid, nconn);
    if (rc) return rc;
    if (!(w->conns = calloc(nconn, sizeof *w->conns)) || !(w->idle = calloc(nconn, sizeof *w->idle)))
        return MD_ERR_NOMEM;
    if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0) {
        snprintf(w->err, sizeof w->err, "epoll_create1: %s", strerror(errno));
        return MD_ERR_IO;
    }
    if (sh->o->rate > 0) w->interval_us = 1e6 * sh->o->threads / sh->o->rate;
    for (unsigned i = 0; i < nconn; i++) {
        lg_conn *c = &w->conns[i];
        c->w = w;
        c->idx = i;
        c->fd = -1;
        c->state = C_CLOSED;
        c->resp.keep_body = 1; /* error bodies are quoted in the report */
        w->n_closed++;
    }
    if (pthread_create(&w->thread, NULL, worker_main, w)) {
        snprintf(w->err, sizeof w->err, "cannot start a thread");
        return MD_ERR_NOMEM;
    }
    return MD_OK;
}

void lg_worker_join(lg_worker *w)
{
    pthread_join(w->thread, NULL);
}

void lg_worker_free(lg_worker *w)
{
    if (w->conns)
        for (unsigned i = 0; i < w->nconn; i++) {
            lg_buf_free(&w->conns[i].out);
            lg_http_resp_free(&w->conns[i].resp);
        }
    free(w->conns);
    free(w->idle);
    if (w->ep >= 0) close(w->ep);
    lg_gen_free(&w->gen);
    lg_stats_destroy(&w->stats);
}
