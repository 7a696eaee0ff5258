/* Dead letters of the embedded WAL: dir/dead.log (framing in wal.c), listed and replayed.
 *
 * Listing only reads dead.log, so it works while `meterd serve` runs. Replaying appends to the
 * WAL segments and rewrites dead.log, and the WAL has one writer (docs/decisions.md 8, 15): it
 * takes the queue's LOCK by opening the WAL, and is refused while serve or import holds it.
 * Order: every replayed record is published and fdatasync'd first; only then is dead.log
 * replaced by a copy without them (tmp file, fdatasync, rename, fsync of the directory). A crash
 * in between leaves a record both in the queue and in dead.log: replaying it again is harmless
 * (the store skips a batch id it has). Records with the same seq, length and payload CRC are
 * one message dead-lettered twice (a crash before the lazy consumer.pos write): published once,
 * all copies removed. */
#include "queue/dlq.h"
#include "queue/wal_internal.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define DEAD_TMP_NAME "dead.log.tmp"

typedef struct wal_dlq {
    dlq base;  /* first */
    char *dir; /* owned */
    wal_config wc;
} wal_dlq;

int wal_dlq_list(const char *dir, int (*cb)(void *arg, const wal_dead_letter *d), void *arg)
{
    char path[4096];
    if (wal_path(path, sizeof path, dir, WAL_DEAD_NAME)) return MD_ERR_INVALID;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : MD_ERR_IO;
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : MD_ERR_IO;
    uint64_t valid, count;
    if (rc == 0) rc = wal_dead_walk(fd, (uint64_t)st.st_size, &valid, cb, arg, &count);
    close(fd);
    return rc == MD_ERR_NOMEM ? MD_ERR_IO : rc;
}

/* A wal_dead_letter as the backend-independent entry. */
static void to_entry(const wal_dead_letter *d, char id[24], dlq_entry *e)
{
    snprintf(id, 24, "%" PRIu64, d->seq);
    *e = (dlq_entry){.id = id,
                     .seq = d->seq,
                     .source_id = "",
                     .reason = d->reason,
                     .dead_at_us = d->dead_at_us,
                     .content_type = DLQ_BATCH_CT,
                     .data = d->data,
                     .len = d->len};
}

typedef struct visit {
    dlq_visit_cb cb;
    void *arg;
} visit;

static int list_one(void *arg, const wal_dead_letter *d)
{
    visit *v = arg;
    char id[24];
    dlq_entry e;
    to_entry(d, id, &e);
    return v->cb(v->arg, &e);
}

static int wal_dlq_list_op(dlq *dd, dlq_visit_cb cb, void *arg, char *err, size_t errlen)
{
    wal_dlq *d = (wal_dlq *)dd;
    visit v = {cb, arg};
    int rc = wal_dlq_list(d->dir, list_one, &v);
    if (rc) snprintf(err, errlen, "cannot read %s: %s", d->base.where, strerror(errno));
    return rc;
}

/* What a replay is about: the seqs asked for (or all), and the messages published. */
typedef struct plan {
    const uint64_t *seqs; /* borrowed; NULL: every record */
    size_t nseqs;
    bool *found; /* owned: per seqs[i] */
    struct sent {
        uint64_t seq, len;
        uint32_t crc;
    } * sent; /* owned: one per distinct message published */
    size_t nsent, capsent;
    queue *q;           /* borrowed: the open WAL while publishing, else NULL */
    uint64_t stop_off;  /* dead.log offset of the first wanted record not published */
    pthread_mutex_t mu; /* guards waiting, failed (callbacks run on the committer) */
    pthread_cond_t cv;
    size_t waiting;
    int failed;
    int fd_out; /* rewrite: the new dead.log */
    int fd_in;  /* rewrite: the old one */
    int rc;
    visit v; /* the caller's callback, for the final walk */
} plan;

static bool wanted(plan *p, uint64_t seq)
{
    if (!p->seqs) return true;
    for (size_t i = 0; i < p->nseqs; i++)
        if (p->seqs[i] == seq) {
            p->found[i] = true;
            return true;
        }
    return false;
}

static int mark_found(void *arg, const wal_dead_letter *d)
{
    wanted(arg, d->seq);
    return 0;
}

static void published(void *arg, int status, const char *position)
{
    (void)position;
    plan *p = arg;
    pthread_mutex_lock(&p->mu);
    if (status && !p->failed) p->failed = status;
    p->waiting--;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

/* Walk 1, under the lock: publishes each wanted message (the committer fsyncs them). By id,
 * copies of one message are published once; `--all` publishes every record (linear, and a
 * copy costs the store a skipped batch id, nothing more). */
static int publish_one(void *arg, const wal_dead_letter *d)
{
    plan *p = arg;
    if (!wanted(p, d->seq)) return 0;
    uint32_t crc = 0;
    if (p->seqs) {
        crc = d->len ? (uint32_t)crc32(0L, d->data, (uInt)d->len) : 0;
        for (size_t i = 0; i < p->nsent; i++)
            if (p->sent[i].seq == d->seq && p->sent[i].len == d->len && p->sent[i].crc == crc)
                return 0; /* a second copy of a message already published */
    }
    if (p->seqs && p->nsent == p->capsent) {
        size_t nc = p->capsent ? p->capsent * 2 : 64;
        struct sent *s = realloc(p->sent, nc * sizeof *s);
        if (!s) {
            p->rc = MD_ERR_NOMEM;
            return 1;
        }
        p->sent = s;
        p->capsent = nc;
    }
    pthread_mutex_lock(&p->mu);
    p->waiting++;
    pthread_mutex_unlock(&p->mu);
    int rc = p->q->ops->publish(p->q, d->data, d->len, published, p);
    if (rc) {
        pthread_mutex_lock(&p->mu);
        p->waiting--;
        pthread_mutex_unlock(&p->mu);
        p->rc = rc;
        p->stop_off = d->off; /* MD_ERR_FULL: what came before is replayed, the rest stays */
        return 1;
    }
    if (p->seqs) p->sent[p->nsent++] = (struct sent){.seq = d->seq, .len = d->len, .crc = crc};
    return 0;
}

/* Replayed: wanted and published before the walk stopped (if it did). */
static bool replayed(plan *p, const wal_dead_letter *d)
{
    return wanted(p, d->seq) && d->off < p->stop_off;
}

/* Walk 2: copies every record that was not replayed, byte for byte, into the new dead.log. */
static int copy_kept(void *arg, const wal_dead_letter *d)
{
    plan *p = arg;
    if (replayed(p, d)) return 0;
    uint8_t *buf = malloc(d->size); /* owned */
    if (!buf) {
        p->rc = MD_ERR_NOMEM;
        return 1;
    }
    ssize_t n = pread(p->fd_in, buf, d->size, (off_t)d->off);
    p->rc = n == (ssize_t)d->size ? wal_write_all(p->fd_out, buf, d->size) : MD_ERR_IO;
    free(buf);
    return p->rc != 0;
}

/* Walk 3, on the old file after the rename: tells the caller what was replayed. */
static int report_one(void *arg, const wal_dead_letter *d)
{
    plan *p = arg;
    if (!replayed(p, d)) return 0;
    char id[24];
    dlq_entry e;
    to_entry(d, id, &e);
    p->v.cb(p->v.arg, &e);
    return 0;
}

/* 1 when another process holds the queue's LOCK (serve or import runs on this directory). */
static bool dir_locked(const char *dir)
{
    char path[4096];
    if (wal_path(path, sizeof path, dir, WAL_LOCK_NAME)) return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd); /* releases it: wal_open takes it for real (and refuses if someone won a race) */
    return busy;
}

/* Writes dir/dead.log anew without the replayed records; the old file stays open as p->fd_in. */
static int rewrite_dead(wal_dlq *d, plan *p, char *err, size_t errlen)
{
    char path[4096], tmp[4096];
    if (wal_path(path, sizeof path, d->dir, WAL_DEAD_NAME) ||
        wal_path(tmp, sizeof tmp, d->dir, DEAD_TMP_NAME))
        return MD_ERR_INVALID;
    struct stat st;
    if (fstat(p->fd_in, &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
        return MD_ERR_IO;
    }
    p->fd_out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (p->fd_out < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return MD_ERR_IO;
    }
    uint64_t valid, count;
    p->rc = 0;
    int rc = wal_dead_walk(p->fd_in, (uint64_t)st.st_size, &valid, copy_kept, p, &count);
    if (rc == 0) rc = p->rc;
    if (rc == 0) rc = wal_datasync(p->fd_out);
    close(p->fd_out);
    p->fd_out = -1;
    if (rc == 0 && rename(tmp, path) != 0) rc = MD_ERR_IO;
    if (rc == 0) rc = wal_fsync_dir(d->dir);
    if (rc) {
        snprintf(err, errlen,
                 "the dead letters were republished, but %s could not be rewritten "
                 "without them (%s): they are still listed, and replaying them again is harmless",
                 path, strerror(errno));
        unlink(tmp);
    }
    return rc;
}

/* Publishes under the lock, waits until durable, rewrites dead.log, reports. */
static int replay_locked(wal_dlq *d, plan *p, char *err, size_t errlen)
{
    char path[4096];
    if (wal_path(path, sizeof path, d->dir, WAL_DEAD_NAME)) return MD_ERR_INVALID;
    p->fd_in = open(path, O_RDONLY | O_CLOEXEC);
    if (p->fd_in < 0 && errno == ENOENT) {
        snprintf(err, errlen, "%s is gone (replayed by someone else?)", path);
        return MD_ERR_NOTFOUND;
    }
    struct stat st;
    if (p->fd_in < 0 || fstat(p->fd_in, &st) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return MD_ERR_IO;
    }
    uint64_t valid, count;
    /* Under the lock dead.log cannot change: check the ids again, then publish. */
    if (p->seqs) memset(p->found, 0, p->nseqs * sizeof *p->found);
    int rc = wal_dead_walk(p->fd_in, (uint64_t)st.st_size, &valid, mark_found, p, &count);
    for (size_t i = 0; rc == 0 && p->seqs && i < p->nseqs; i++)
        if (!p->found[i]) {
            snprintf(err, errlen, "no dead letter with id %" PRIu64 " in %s", p->seqs[i], path);
            rc = MD_ERR_NOTFOUND;
        }
    if (rc == 0) {
        p->rc = 0;
        p->stop_off = UINT64_MAX;
        rc = wal_dead_walk(p->fd_in, (uint64_t)st.st_size, &valid, publish_one, p, &count);
        if (rc == 0) rc = p->rc;
    }
    pthread_mutex_lock(&p->mu); /* whatever was handed to the committer: wait for its verdict */
    while (p->waiting)
        pthread_cond_wait(&p->cv, &p->mu);
    int failed = p->failed;
    pthread_mutex_unlock(&p->mu);
    if (failed) rc = failed;
    if (rc && rc != MD_ERR_FULL && rc != MD_ERR_NOTFOUND) {
        snprintf(err, errlen,
                 "republishing to the queue in %s failed: %s; nothing was removed "
                 "from %s",
                 d->dir, md_strerror(rc), path);
        return rc;
    }
    if (rc == MD_ERR_NOTFOUND) return rc;
    /* All published (0), or those before the backlog budget ran out (MD_ERR_FULL): remove them. */
    int wrc = rewrite_dead(d, p, err, errlen);
    if (wrc) return wrc;
    wal_dead_walk(p->fd_in, (uint64_t)st.st_size, &valid, report_one, p, &count);
    if (rc == MD_ERR_FULL)
        snprintf(err, errlen,
                 "the queue in %s is over its backlog budget (--max-backlog-bytes); "
                 "the rest is still in %s: start meterd serve to drain the queue, then replay "
                 "again",
                 d->dir, path);
    return rc;
}

static int wal_dlq_replay(dlq *dd, const char *const *ids, size_t n, dlq_visit_cb cb, void *arg,
                          char *err, size_t errlen)
{
    wal_dlq *d = (wal_dlq *)dd;
    err[0] = '\0';
    plan p = {.fd_in = -1, .fd_out = -1, .v = {cb, arg}};
    uint64_t *seqs = NULL; /* owned */
    int rc = 0;
    if (n) {
        seqs = calloc(n, sizeof *seqs);
        p.found = calloc(n, sizeof *p.found);
        if (!seqs || !p.found) rc = MD_ERR_NOMEM;
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char *end;
            errno = 0;
            seqs[i] = strtoull(ids[i], &end, 10);
            if (errno || end == ids[i] || *end || ids[i][0] == '-') {
                snprintf(err, errlen,
                         "no dead letter with id '%s' in %s (ids are the numbers "
                         "'meterd dlq list' prints)",
                         ids[i], d->base.where);
                rc = MD_ERR_NOTFOUND;
            }
        }
        p.seqs = seqs;
        p.nseqs = n;
    }
    /* Without the lock first: an unknown id, or nothing to do, never touches the queue. */
    p.rc = 0;
    if (rc == 0 && wal_dlq_list(d->dir, mark_found, &p) != 0) {
        snprintf(err, errlen, "cannot read %s: %s", d->base.where, strerror(errno));
        rc = MD_ERR_IO;
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (!p.found[i]) {
            snprintf(err, errlen, "no dead letter with id %s in %s", ids[i], d->base.where);
            rc = MD_ERR_NOTFOUND;
        }
    bool any = false;
    if (rc == 0 && !n) {
        char path[4096];
        struct stat st;
        any = wal_path(path, sizeof path, d->dir, WAL_DEAD_NAME) == 0 && stat(path, &st) == 0 &&
              st.st_size > 0;
    }
    if (rc == 0 && (n || any)) {
        if (dir_locked(d->dir)) {
            snprintf(err, errlen,
                     "the queue in %s is in use by a running meterd (serve or "
                     "import): stop it, run the replay, then start it again (list and show "
                     "work while it runs)",
                     d->dir);
            rc = MD_ERR_CLOSED;
        } else {
            char werr[512];
            p.q = wal_open(d->dir, &d->wc, werr, sizeof werr);
            if (!p.q) {
                snprintf(err, errlen, "%s", werr);
                rc = MD_ERR_IO;
            } else {
                pthread_mutex_init(&p.mu, NULL);
                pthread_cond_init(&p.cv, NULL);
                rc = replay_locked(d, &p, err, errlen);
                p.q->ops->shutdown(p.q);
                p.q->ops->close(p.q); /* releases the lock */
                pthread_cond_destroy(&p.cv);
                pthread_mutex_destroy(&p.mu);
            }
        }
    }
    if (p.fd_in >= 0) close(p.fd_in);
    free(p.sent);
    free(p.found);
    free(seqs);
    if (rc == MD_ERR_NOMEM && !err[0]) snprintf(err, errlen, "out of memory");
    return rc;
}

static void wal_dlq_close(dlq *dd)
{
    wal_dlq *d = (wal_dlq *)dd;
    if (!d) return;
    free(d->dir);
    free(d);
}

static const dlq_ops wal_dlq_ops = {
    .name = "wal",
    .list = wal_dlq_list_op,
    .replay = wal_dlq_replay,
    .close = wal_dlq_close,
};

dlq *wal_dlq_open(const char *qdir, const config *c, char *err, size_t errlen)
{
    wal_dlq *d = calloc(1, sizeof *d);
    if (!d || !(d->dir = strdup(qdir))) {
        free(d);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    d->base.ops = &wal_dlq_ops;
    snprintf(d->base.where, sizeof d->base.where, "%s/" WAL_DEAD_NAME, qdir);
    snprintf(d->base.target, sizeof d->base.target, "the queue in %s", qdir);
    d->wc =
        (wal_config){.segment_bytes = c->segment_bytes, .max_backlog_bytes = c->max_backlog_bytes};
    return &d->base;
}
