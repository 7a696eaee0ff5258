/* Embedded write-ahead queue (the default queue backend).
 *
 * On disk, in dir/:
 *   NNNNNNNNNNNNNNNNNNNN.wal  segments, named by the seq of their first record (20 digits)
 *   consumer.pos              last acked seq, decimal + "\n", replaced atomically (tmp+rename)
 *   dead.log                  dead letters, same record framing
 *
 * Record (all little-endian):
 *   u32 len      payload length, at most WAL_MAX_RECORD (64 MiB)
 *   u32 crc      zlib crc32 over bytes 8..24 of the header (seq, time) followed by the payload
 *   u64 seq      1, 2, 3, ... with no gaps across segments
 *   i64 time_us  enqueue time (dead.log: time of the nack)
 *   u8  payload[len]   (dead.log: u32 reason_len, reason, original payload)
 *
 * Threads: any number of publishers append framed records to an in-memory pending buffer; one
 * committer thread swaps it out, write()s it and fdatasync()s once for all of them (group commit),
 * then fires their callbacks. One consumer reads durable records back with pread(), so memory
 * does not grow with the backlog. Recovery is in wal_recover.c, file helpers in wal_segment.c. */
#include "queue/wal_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define POS_PERSIST_US (200 * 1000) /* lazy consumer.pos: at most this stale ... */
#define POS_PERSIST_ACKS 1000       /* ... or this many acks behind */
#define SPARE_KEEP_BYTES (4u << 20) /* shrink the pending buffer after a burst above this */

static int wal_publish(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg);
static int wal_consume(queue *q, queue_msg *msg, int timeout_ms);
static int wal_ack(queue *q, queue_msg *msg);
static int wal_nack(queue *q, queue_msg *msg, const char *reason);
static int wal_stats(queue *q, queue_stats *st);
static void wal_shutdown(queue *q);
static void wal_close(queue *q);

static const queue_ops wal_ops = {
    .name = "wal",
    .publish = wal_publish,
    .consume = wal_consume,
    .ack = wal_ack,
    .nack = wal_nack,
    .stats = wal_stats,
    .shutdown = wal_shutdown,
    .close = wal_close,
};

/* Grows a pending buffer so that `more` bytes and one callback fit. */
static int pending_reserve(wal_pending *p, size_t more)
{
    if (p->cap - p->len < more) {
        size_t nc = p->cap ? p->cap : 64 * 1024;
        while (nc - p->len < more) nc *= 2;
        uint8_t *d = realloc(p->data, nc);
        if (!d) return MD_ERR_NOMEM;
        p->data = d;
        p->cap = nc;
    }
    if (p->n == p->ncap) {
        size_t nc = p->ncap ? p->ncap * 2 : 256;
        wal_pending_cb *c = realloc(p->cbs, nc * sizeof *c);
        if (!c) return MD_ERR_NOMEM;
        p->cbs = c;
        p->ncap = nc;
    }
    return 0;
}

static int wal_publish(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg)
{
    wal *w = (wal *)q;
    if (len > WAL_MAX_RECORD || (len && !data)) return MD_ERR_INVALID;
    /* Hash and timestamp outside the lock; only the seq-dependent part is done under it. */
    uint32_t pcrc = len ? (uint32_t)crc32(0L, data, (uInt)len) : 0;
    int64_t now = time_now_us();
    uint64_t rec = WAL_HDR_SIZE + len;

    pthread_mutex_lock(&w->mu);
    int rc = 0;
    if (w->closing) rc = MD_ERR_CLOSED;
    else if (w->stream_bytes - w->acked_bytes + rec > w->cfg.max_backlog_bytes) rc = MD_ERR_FULL;
    else rc = pending_reserve(&w->pend, rec);
    if (rc == 0) {
        wal_pending *p = &w->pend;
        uint64_t seq = w->next_seq++;
        uint8_t *h = p->data + p->len;
        wal_record_header(h, (uint32_t)len, wal_record_crc_combine(seq, now, pcrc, len), seq, now);
        if (len) memcpy(h + WAL_HDR_SIZE, data, len);
        p->len += rec;
        p->bytes += rec;
        p->last_seq = seq;
        p->cbs[p->n++] = (wal_pending_cb){.cb = cb, .arg = arg, .seq = seq, .enq_us = now};
        w->stream_count++;
        w->stream_bytes += rec;
        pthread_cond_signal(&w->commit_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

/* Starts a new segment named after the next seq once the active one is full. Committer only. */
static int roll_segment(wal *w, uint64_t first_seq)
{
    wal_segment s = {.first_seq = first_seq};
    wal_segment_name(s.name, first_seq);
    char path[4096];
    if (wal_path(path, sizeof path, w->dir, s.name)) return MD_ERR_INVALID;
    int fd = wal_segment_create(w->dir, s.name, first_seq, w->cfg.segment_bytes);
    if (fd < 0) return MD_ERR_IO;
    if (wal_fsync_dir(w->dir) != 0) {
        close(fd);
        unlink(path);
        return MD_ERR_IO;
    }
    pthread_mutex_lock(&w->mu);
    int rc = wal_segs_push(w, &s);
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        close(fd);
        unlink(path);
        return rc;
    }
    close(w->active_fd);
    w->active_fd = fd;
    return 0;
}

/* Writes one swapped-out batch and makes it durable with a single fdatasync. Committer only. */
static int commit_batch(wal *w, wal_pending *b)
{
    pthread_mutex_lock(&w->mu);
    wal_segment *a = &w->segs[w->nsegs - 1];
    uint64_t size = a->size, limit = w->cfg.segment_bytes;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    if (size > 0 && size >= limit) {
        rc = roll_segment(w, b->cbs[0].seq);
        size = 0;
    }
    if (rc == 0) rc = wal_pwrite_all(w->active_fd, b->data, b->len, size);
    if (rc == 0) rc = wal_datasync(w->active_fd);
    if (rc) {
        log_error("wal_commit", "%s: cannot make %zu records durable: %s; queue now fails "
                  "every publish", w->dir, b->n, strerror(errno));
        if (ftruncate(w->active_fd, (off_t)size) != 0) { /* best effort; recovery cuts it too */
        }
        return MD_ERR_IO;
    }
    pthread_mutex_lock(&w->mu);
    a = &w->segs[w->nsegs - 1];
    a->size += b->len;
    a->count += b->n;
    a->last_seq = b->last_seq;
    w->durable_seq = b->last_seq;
    w->published += b->n;
    w->fsyncs++;
    pthread_cond_broadcast(&w->consume_cv);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* The group-commit loop: whatever accumulated during the previous fsync goes in the next one. */
static void *committer_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-wal-commit");
    wal *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (w->pend.len == 0 && !w->closing) pthread_cond_wait(&w->commit_cv, &w->mu);
        if (w->pend.len == 0) {
            w->committer_done = true;
            pthread_cond_broadcast(&w->consume_cv);
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        wal_pending b = w->pend;
        w->pend = w->spare;
        w->spare = b;
        bool failed = w->io_failed;
        pthread_mutex_unlock(&w->mu);

        wal_pending *batch = &w->spare;
        int rc = failed ? MD_ERR_IO : commit_batch(w, batch);
        if (rc) {
            pthread_mutex_lock(&w->mu);
            /* After a failed fdatasync the page cache state is unknown: fail-stop, never retry. */
            w->io_failed = true;
            w->stream_count -= batch->n;
            w->stream_bytes -= batch->bytes;
            pthread_mutex_unlock(&w->mu);
        }
        for (size_t i = 0; i < batch->n; i++) {
            wal_pending_cb *c = &batch->cbs[i];
            char pos[48];
            snprintf(pos, sizeof pos, "%" PRId64 "-%" PRIu64, c->enq_us / 1000, c->seq);
            if (c->cb) c->cb(c->arg, rc, pos);
        }
        pthread_mutex_lock(&w->mu); /* stats() peeks at spare */
        batch->len = batch->n = 0;
        batch->bytes = 0;
        if (batch->cap > SPARE_KEEP_BYTES) {
            free(batch->data);
            batch->data = NULL;
            batch->cap = 0;
        }
        pthread_mutex_unlock(&w->mu);
    }
}

/* Finds where want_seq lives (under mu). Returns the segment index or -1 when not durable. */
static long locate(wal *w, uint64_t *off)
{
    if (w->want_seq > w->durable_seq) return -1;
    for (size_t i = 0; i < w->nsegs; i++) {
        wal_segment *s = &w->segs[i];
        if (s->count == 0 || w->want_seq < s->first_seq || w->want_seq > s->last_seq) continue;
        *off = s->first_seq == w->cur_seg_first ? w->cur_off : 0;
        return (long)i;
    }
    return -1;
}

/* Absolute deadline on the monotonic clock used by consume_cv. */
static struct timespec deadline_in(int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Writes consumer.pos when it is stale enough (or force). Never beyond the acked seq. */
static int persist_pos(wal *w, bool force)
{
    pthread_mutex_lock(&w->pos_mu);
    pthread_mutex_lock(&w->mu);
    uint64_t acked = w->acked_seq;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    int64_t now = time_mono_us();
    bool due = force || w->acks_since_pos >= POS_PERSIST_ACKS ||
               now - w->pos_written_mono_us >= POS_PERSIST_US;
    if (acked != w->pos_written && due) {
        rc = wal_pos_write(w->dir, acked);
        if (rc == 0) {
            w->pos_written = acked;
            w->pos_written_mono_us = now;
            w->acks_since_pos = 0;
        }
    }
    pthread_mutex_unlock(&w->pos_mu);
    return rc;
}

/* Keeps the outstanding array able to take one more entry. */
static int out_reserve(wal *w)
{
    if (w->out_head + w->out_len < w->out_cap) return 0;
    if (w->out_head > 0) {
        memmove(w->out, w->out + w->out_head, w->out_len * sizeof *w->out);
        w->out_head = 0;
        return 0;
    }
    size_t nc = w->out_cap ? w->out_cap * 2 : 64;
    wal_outstanding *p = realloc(w->out, nc * sizeof *p);
    if (!p) return MD_ERR_NOMEM;
    w->out = p;
    w->out_cap = nc;
    return 0;
}

/* Reads the record for want_seq at (seg, off) through the consumer's own fd. */
static int read_record(wal *w, const wal_segment *seg, uint64_t off, wal_outstanding *o,
                       uint32_t *len)
{
    if (w->read_fd < 0 || w->read_fd_seg != seg->first_seq) {
        char path[4096];
        if (w->read_fd >= 0) close(w->read_fd);
        w->read_fd = -1;
        if (wal_path(path, sizeof path, w->dir, seg->name)) return MD_ERR_INVALID;
        w->read_fd = open(path, O_RDONLY | O_CLOEXEC);
        wal_reader_reset(&w->reader, w->read_fd);
        if (w->read_fd < 0) return MD_ERR_IO;
        w->read_fd_seg = seg->first_seq;
    }
    size_t cap = 0;
    uint64_t seq;
    int rc = wal_record_read(&w->reader, off, seg->size, &seq, &o->enq_us, &o->buf, &cap, len);
    if (rc == 0 && seq != o->seq) rc = MD_ERR_CORRUPT;
    if (rc) {
        log_error("wal_read", "%s/%s: cannot read record %" PRIu64 " at offset %" PRIu64 ": %s",
                  w->dir, seg->name, o->seq, off, md_strerror(rc));
        free(o->buf);
        o->buf = NULL;
    }
    return rc;
}

static int wal_consume(queue *q, queue_msg *msg, int timeout_ms)
{
    wal *w = (wal *)q;
    if (timeout_ms != 0) persist_pos(w, false); /* idle moments flush the lazy position */
    struct timespec dl = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&w->mu);
    uint64_t off = 0;
    long idx;
    while ((idx = locate(w, &off)) < 0) {
        int rc = 0;
        if (w->committer_done) rc = MD_ERR_CLOSED;
        else if (timeout_ms == 0) rc = MD_ERR_TIMEOUT;
        else if (timeout_ms < 0) pthread_cond_wait(&w->consume_cv, &w->mu);
        else if (pthread_cond_timedwait(&w->consume_cv, &w->mu, &dl) == ETIMEDOUT)
            rc = locate(w, &off) < 0 ? MD_ERR_TIMEOUT : 0;
        if (rc) {
            pthread_mutex_unlock(&w->mu);
            return rc;
        }
    }
    wal_segment seg = w->segs[idx]; /* copy: the array may move once we unlock */
    wal_outstanding o = {.seq = w->want_seq};
    int rc = out_reserve(w);
    pthread_mutex_unlock(&w->mu);
    if (rc) return rc;

    uint32_t len = 0;
    rc = read_record(w, &seg, off, &o, &len);
    if (rc) return rc;

    pthread_mutex_lock(&w->mu);
    w->consumed_count++;
    w->consumed_bytes += WAL_HDR_SIZE + len;
    o.cum_count = w->consumed_count;
    o.cum_bytes = w->consumed_bytes;
    w->out[w->out_head + w->out_len++] = o;
    w->want_seq++;
    w->cur_seg_first = seg.first_seq;
    w->cur_off = off + WAL_HDR_SIZE + len;
    pthread_mutex_unlock(&w->mu);

    msg->seq = o.seq;
    msg->data = o.buf;
    msg->len = len;
    msg->ref = w;
    msg->enqueued_us = o.enq_us;
    snprintf(msg->position, sizeof msg->position, "%" PRId64 "-%" PRIu64, o.enq_us / 1000, o.seq);
    return 0;
}

/* Drops every acked segment except the active one; returns how many names went into del. */
static size_t take_acked_segments(wal *w, wal_segment **del)
{
    size_t k = 0;
    while (k + 1 < w->nsegs && w->segs[k].count > 0 && w->segs[k].last_seq <= w->acked_seq) k++;
    *del = NULL;
    if (k == 0) return 0;
    *del = malloc(k * sizeof **del);
    if (!*del) return 0; /* retried on the next ack */
    memcpy(*del, w->segs, k * sizeof **del);
    memmove(w->segs, w->segs + k, (w->nsegs - k) * sizeof *w->segs);
    w->nsegs -= k;
    return k;
}

static int wal_ack(queue *q, queue_msg *msg)
{
    wal *w = (wal *)q;
    pthread_mutex_lock(&w->mu);
    if (msg->seq <= w->acked_seq) { /* already covered by a later ack */
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    if (w->out_len == 0 || msg->seq < w->out[w->out_head].seq ||
        msg->seq - w->out[w->out_head].seq >= w->out_len) {
        pthread_mutex_unlock(&w->mu);
        return MD_ERR_INVALID; /* not a message this queue handed out */
    }
    size_t k = (size_t)(msg->seq - w->out[w->out_head].seq) + 1;
    wal_outstanding *last = &w->out[w->out_head + k - 1];
    w->acked_seq = last->seq;
    w->acked_count = last->cum_count;
    w->acked_bytes = last->cum_bytes;
    /* Freed after unlocking: a group's thousands of buffers would hold up every publisher.
     * Only this (the consumer's) thread writes out[], and stats() reads live entries only. */
    wal_outstanding *done = &w->out[w->out_head];
    w->out_head += k;
    w->out_len -= k;
    if (w->out_len == 0) w->out_head = 0;
    wal_segment *del = NULL; /* owned */
    size_t ndel = take_acked_segments(w, &del);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < k; i++) free(done[i].buf);

    msg->data = NULL;
    for (size_t i = 0; i < ndel; i++) {
        if (w->read_fd >= 0 && w->read_fd_seg == del[i].first_seq) {
            close(w->read_fd);
            w->read_fd = -1;
            wal_reader_reset(&w->reader, -1);
        }
        wal_segment_retire(w->dir, del[i].name);
    }
    free(del);
    w->acks_since_pos++;
    return persist_pos(w, false) ? MD_ERR_IO : 0;
}

static int wal_nack(queue *q, queue_msg *msg, const char *reason)
{
    wal *w = (wal *)q;
    int rc = wal_dead_append(w->dir, &w->dead_fd, &w->dead_size, msg->seq, reason, msg->data,
                             msg->len);
    if (rc) return rc == MD_ERR_NOMEM ? rc : MD_ERR_IO;
    pthread_mutex_lock(&w->mu);
    w->dead_letters++;
    w->fsyncs++;
    pthread_mutex_unlock(&w->mu);
    return wal_ack(q, msg);
}

/* Enqueue time of the oldest unacked record: outstanding, on disk, or still pending (under mu). */
static int64_t oldest_unacked(wal *w)
{
    if (w->out_len) return w->out[w->out_head].enq_us;
    uint64_t off = 0;
    long idx = locate(w, &off);
    if (idx >= 0) {
        char path[4096];
        uint8_t hdr[WAL_HDR_SIZE];
        int64_t t = 0;
        if (wal_path(path, sizeof path, w->dir, w->segs[idx].name)) return 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 0;
        if (pread(fd, hdr, sizeof hdr, (off_t)off) == (ssize_t)sizeof hdr)
            t = (int64_t)wal_get_u64(hdr + 16);
        close(fd);
        return t;
    }
    if (w->spare.n) return w->spare.cbs[0].enq_us; /* being committed right now */
    if (w->pend.n) return w->pend.cbs[0].enq_us;
    return 0;
}

static int wal_stats(queue *q, queue_stats *st)
{
    wal *w = (wal *)q;
    pthread_mutex_lock(&w->mu);
    *st = (queue_stats){
        .published = w->published,
        .depth = w->stream_count - w->acked_count,
        .depth_bytes = w->stream_bytes - w->acked_bytes,
        .dead_letters = w->dead_letters,
        .segments = w->nsegs,
        .oldest_unacked_us = w->stream_count > w->acked_count ? oldest_unacked(w) : 0,
        .fsyncs = w->fsyncs,
        .connected = 1,
        .group = "embedded",
        .consumers = 1,
    };
    if (w->want_seq > 1) /* the last record handed to the consumer */
        snprintf(st->last_delivered, sizeof st->last_delivered, "%" PRIu64, w->want_seq - 1);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

static void wal_shutdown(queue *q)
{
    wal *w = (wal *)q;
    pthread_mutex_lock(&w->mu);
    w->closing = true;
    bool join = w->committer_started && !w->shut_down;
    w->shut_down = true;
    pthread_cond_signal(&w->commit_cv);
    pthread_cond_broadcast(&w->consume_cv);
    pthread_mutex_unlock(&w->mu);
    if (join) pthread_join(w->committer, NULL); /* flushes pending publishes first */
    pthread_mutex_lock(&w->mu);
    w->committer_done = true;
    pthread_cond_broadcast(&w->consume_cv);
    uint64_t used = w->nsegs ? w->segs[w->nsegs - 1].size : 0;
    bool failed = w->io_failed;
    pthread_mutex_unlock(&w->mu);
    /* A clean stop leaves the active segment exactly as long as its records (the next open
     * starts a new one anyway); after a crash recovery cuts the preallocated rest. */
    if (join && w->active_fd >= 0 && !failed && ftruncate(w->active_fd, (off_t)used) != 0)
        log_warn("wal_truncate", "%s: cannot cut the active segment to %" PRIu64 " bytes: %s",
                 w->dir, used, strerror(errno));
    persist_pos(w, true);
}

/* Frees everything; safe on a partially opened wal. */
static void wal_free(wal *w)
{
    if (w->lock_fd >= 0) close(w->lock_fd); /* releases the flock */
    if (w->active_fd >= 0) close(w->active_fd);
    if (w->read_fd >= 0) close(w->read_fd);
    wal_reader_free(&w->reader);
    if (w->dead_fd >= 0) close(w->dead_fd);
    for (size_t i = 0; i < w->out_len; i++) free(w->out[w->out_head + i].buf);
    free(w->out);
    free(w->pend.data);
    free(w->pend.cbs);
    free(w->spare.data);
    free(w->spare.cbs);
    free(w->segs);
    free(w->dir);
    pthread_cond_destroy(&w->commit_cv);
    pthread_cond_destroy(&w->consume_cv);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->pos_mu);
    free(w);
}

static void wal_close(queue *q)
{
    if (!q) return;
    wal *w = (wal *)q;
    wal_shutdown(q); /* idempotent; unacked outstanding messages are re-delivered next open */
    wal_free(w);
}

/* Two processes appending to one WAL would interleave records: the second one is refused. */
static int lock_dir(wal *w, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" WAL_LOCK_NAME, w->dir);
    w->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (w->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return MD_ERR_IO;
    }
    if (flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen,
                 "queue directory %s is in use by another meterd process (%s)", w->dir,
                 strerror(errno));
        return MD_ERR_IO;
    }
    return MD_OK;
}

queue *wal_open(const char *dir, const wal_config *cfg, char *err, size_t errlen)
{
    if (errlen) err[0] = '\0';
    wal *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->base.ops = &wal_ops;
    w->lock_fd = w->active_fd = w->read_fd = w->dead_fd = -1;
    w->cfg.segment_bytes = cfg && cfg->segment_bytes ? cfg->segment_bytes
                                                     : WAL_DEFAULT_SEGMENT_BYTES;
    w->cfg.max_backlog_bytes = cfg && cfg->max_backlog_bytes ? cfg->max_backlog_bytes
                                                             : WAL_DEFAULT_BACKLOG_BYTES;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->pos_mu, NULL);
    pthread_cond_init(&w->commit_cv, NULL);
    pthread_cond_init(&w->consume_cv, &ca);
    pthread_condattr_destroy(&ca);
    w->pos_written_mono_us = time_mono_us();

    w->dir = strdup(dir ? dir : "");
    if (!w->dir) {
        snprintf(err, errlen, "out of memory");
        wal_free(w);
        return NULL;
    }
    if (!dir || !dir[0] || lock_dir(w, err, errlen) != 0 || wal_recover(w, err, errlen) != 0) {
        if (!dir || !dir[0]) snprintf(err, errlen, "no WAL directory given");
        wal_free(w);
        return NULL;
    }
    int rc = pthread_create(&w->committer, NULL, committer_main, w);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the WAL committer: %s", strerror(rc));
        wal_free(w);
        return NULL;
    }
    w->committer_started = true;
    return &w->base;
}
