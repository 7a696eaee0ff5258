/* WAL file helpers: record framing, segment names, durable writes, consumer.pos and dead.log.
 * The on-disk format is documented at the top of wal.c. */
#include "queue/wal_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define DEAD_NAME WAL_DEAD_NAME
#define POS_NAME "consumer.pos"
#define POS_TMP_NAME "consumer.pos.tmp"

/* Explicit byte order so files move between machines. */
void wal_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void wal_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t wal_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

uint64_t wal_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Hashes the seq and time fields exactly as they are laid out on disk. */
static uint32_t crc_prefix(uint64_t seq, int64_t t_us)
{
    uint8_t b[16];
    wal_put_u64(b, seq);
    wal_put_u64(b + 8, (uint64_t)t_us);
    return (uint32_t)crc32(0L, b, 16);
}

/* The CRC covers seq + time + payload so a record moved to another slot is detected too. */
uint32_t wal_record_crc(uint64_t seq, int64_t t_us, const uint8_t *payload, size_t len)
{
    uLong c = crc_prefix(seq, t_us);
    if (len) c = crc32(c, payload, (uInt)len);
    return (uint32_t)c;
}

/* crc32_combine lets publishers hash their payload before taking the queue lock. */
uint32_t wal_record_crc_combine(uint64_t seq, int64_t t_us, uint32_t payload_crc, size_t len)
{
    if (len == 0) return crc_prefix(seq, t_us);
    return (uint32_t)crc32_combine(crc_prefix(seq, t_us), payload_crc, (z_off_t)len);
}

/* One place that knows the header layout. */
void wal_record_header(uint8_t *hdr, uint32_t len, uint32_t crc, uint64_t seq, int64_t t_us)
{
    wal_put_u32(hdr, len);
    wal_put_u32(hdr + 4, crc);
    wal_put_u64(hdr + 8, seq);
    wal_put_u64(hdr + 16, (uint64_t)t_us);
}

/* pread() all of len bytes; a short read means the file ends early. */
static int pread_all(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, buf + done, len - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return MD_ERR_IO;
        if (r == 0) return MD_ERR_CORRUPT;
        done += (size_t)r;
    }
    return 0;
}

void wal_reader_reset(wal_reader *r, int fd)
{
    r->fd = fd;
    r->len = 0;
    r->off = 0;
}

void wal_reader_free(wal_reader *r)
{
    free(r->buf);
    r->buf = NULL;
    r->cap = 0;
    wal_reader_reset(r, -1);
}

/* Points *out at n bytes at off (off + n <= fsize), refilling the buffer from off with up to
 * WAL_READAHEAD bytes when they are not all in it. Valid until the next call. */
static int reader_get(wal_reader *r, uint64_t off, size_t n, uint64_t fsize, const uint8_t **out)
{
    if (r->len && off >= r->off && off - r->off <= r->len && r->len - (off - r->off) >= n) {
        *out = r->buf + (off - r->off);
        return 0;
    }
    size_t want = n > WAL_READAHEAD ? n : WAL_READAHEAD;
    if (want > fsize - off) want = (size_t)(fsize - off);
    if (r->cap < want) {
        uint8_t *nb = realloc(r->buf, want);
        if (!nb) return MD_ERR_NOMEM;
        r->buf = nb;
        r->cap = want;
    }
    r->len = 0;
    int rc = pread_all(r->fd, r->buf, want, off);
    if (rc) return rc;
    r->off = off;
    r->len = want;
    *out = r->buf;
    return 0;
}

/* Validates framing and CRC; anything off is reported as corruption so recovery can cut there. */
int wal_record_read(wal_reader *r, uint64_t off, uint64_t fsize, uint64_t *seq, int64_t *t_us,
                    uint8_t **buf, size_t *cap, uint32_t *len)
{
    uint8_t hdr[WAL_HDR_SIZE];
    const uint8_t *p;
    if (off > fsize || fsize - off < WAL_HDR_SIZE) return MD_ERR_CORRUPT;
    int rc = reader_get(r, off, WAL_HDR_SIZE, fsize, &p);
    if (rc) return rc;
    memcpy(hdr, p, WAL_HDR_SIZE); /* the payload read below may refill the buffer */
    uint32_t n = wal_get_u32(hdr);
    if (n > WAL_MAX_RECORD || fsize - off - WAL_HDR_SIZE < n) return MD_ERR_CORRUPT;
    if (*cap < n || *buf == NULL) {
        size_t want = n ? n : 1;
        uint8_t *nb = realloc(*buf, want);
        if (!nb) return MD_ERR_NOMEM;
        *buf = nb;
        *cap = want;
    }
    if (n > WAL_READAHEAD) { /* big record: straight into the caller's buffer, one copy */
        rc = pread_all(r->fd, *buf, n, off + WAL_HDR_SIZE);
        if (rc) return rc;
    } else if (n) {
        rc = reader_get(r, off + WAL_HDR_SIZE, n, fsize, &p);
        if (rc) return rc;
        memcpy(*buf, p, n);
    }
    *seq = wal_get_u64(hdr + 8);
    *t_us = (int64_t)wal_get_u64(hdr + 16);
    if (wal_record_crc(*seq, *t_us, *buf, n) != wal_get_u32(hdr + 4)) return MD_ERR_CORRUPT;
    *len = n;
    return 0;
}

/* Paths are built in fixed buffers; refusing overlong ones beats truncating silently. */
int wal_path(char *out, size_t outlen, const char *dir, const char *name)
{
    int n = snprintf(out, outlen, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= outlen) ? MD_ERR_INVALID : 0;
}

/* 20 digits sort lexically in seq order. */
void wal_segment_name(char out[WAL_NAME_LEN], uint64_t first_seq)
{
    snprintf(out, WAL_NAME_LEN, "%020" PRIu64 ".wal", first_seq);
}

/* write() may be partial; loop until everything is in the page cache. */
int wal_write_all(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return MD_ERR_IO;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

int wal_pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t w = pwrite(fd, buf, len, (off_t)off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return MD_ERR_IO;
        buf += w;
        len -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* Appending to a file makes every fdatasync write the inode too (its size changed): measured
 * here, 240 us per fdatasync appending, 181 us into fallocate()d blocks and 158 us into blocks
 * written before (docs/decisions.md 26). So segments are created at full size, and a retired
 * one is renamed into the next segment's name instead of a new file being allocated. */
/* Whether fd, a recycled segment, may serve as segment first_seq: its old records must all have
 * lower seqs, or recovery could take one that follows the new records for the next of them.
 * Seqs only grow, so they do unless the numbering restarted (consumer.pos lost with every
 * segment); its first record, the lowest, tells. */
static bool spare_fits(int fd, uint64_t first_seq)
{
    uint8_t hdr[WAL_HDR_SIZE];
    if (pread(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr) return true; /* nothing in it */
    return wal_get_u64(hdr + 8) < first_seq;
}

int wal_segment_create(const char *dir, const char *name, uint64_t first_seq, uint64_t bytes)
{
    char path[4096], spare[4096];
    if (wal_path(path, sizeof path, dir, name) || wal_path(spare, sizeof spare, dir, WAL_SPARE_NAME)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = -1;
    if (rename(spare, path) == 0) {
        fd = open(path, O_RDWR | O_CLOEXEC);
        struct stat st;
        /* a spare from a run with a larger --segment-bytes is cut (a smaller one grown below);
         * one whose records could pass for new ones is emptied */
        uint64_t keep = fd >= 0 && spare_fits(fd, first_seq) ? bytes : 0;
        if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size > keep &&
            ftruncate(fd, (off_t)keep) != 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    /* Best effort: where fallocate() is not supported the file grows as it is written
     * (not posix_fallocate(), which would write the zeros itself). */
    if (fallocate(fd, 0, 0, (off_t)bytes) != 0) {
    }
    return fd;
}

void wal_segment_retire(const char *dir, const char *name)
{
    char path[4096], spare[4096];
    if (wal_path(path, sizeof path, dir, name) || wal_path(spare, sizeof spare, dir, WAL_SPARE_NAME))
        return;
    struct stat st;
    if (stat(spare, &st) != 0 && errno == ENOENT && rename(path, spare) == 0) return;
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("wal_unlink", "cannot remove %s: %s", path, strerror(errno));
}

/* Every data sync goes through here so the fsync latency histogram sees all of them. */
int wal_datasync(int fd)
{
    int64_t t0 = time_mono_us();
    int r = fdatasync(fd);
    metrics_observe_fsync(time_mono_us() - t0);
    return r == 0 ? 0 : MD_ERR_IO;
}

/* A new or renamed file is only crash-safe once its directory entry is synced. */
int wal_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return MD_ERR_IO;
    int r = fsync(fd);
    close(fd);
    return r == 0 ? 0 : MD_ERR_IO;
}

/* A missing or garbled position only means re-delivery, which the store tolerates. */
uint64_t wal_pos_read(const char *dir)
{
    char path[4096], buf[32];
    if (wal_path(path, sizeof path, dir, POS_TMP_NAME) == 0) unlink(path);
    if (wal_path(path, sizeof path, dir, POS_NAME)) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf || (*end != '\n' && *end != '\0')) {
        log_warn("wal_pos_invalid", "ignoring unreadable %s (messages may be re-delivered)", path);
        return 0;
    }
    return (uint64_t)v;
}

/* tmp + fdatasync + rename + dir fsync: after a crash the file is the old or the new value. */
int wal_pos_write(const char *dir, uint64_t seq)
{
    char tmp[4096], path[4096], buf[32];
    if (wal_path(tmp, sizeof tmp, dir, POS_TMP_NAME) || wal_path(path, sizeof path, dir, POS_NAME))
        return MD_ERR_INVALID;
    int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", seq);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return MD_ERR_IO;
    int rc = wal_write_all(fd, (const uint8_t *)buf, (size_t)n);
    if (rc == 0) rc = wal_datasync(fd);
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) rc = MD_ERR_IO;
    if (rc == 0) rc = wal_fsync_dir(dir);
    if (rc) log_error("wal_pos_write", "cannot write %s: %s", path, strerror(errno));
    return rc;
}

/* Walks dead.log record by record; stops at the first bad one (a torn tail). *valid = good bytes. */
int wal_dead_walk(int fd, uint64_t fsize, uint64_t *valid,
                     int (*cb)(void *arg, const wal_dead_letter *d), void *arg, uint64_t *count)
{
    uint8_t *buf = NULL; /* owned */
    size_t cap = 0;
    char *reason = NULL; /* owned */
    wal_reader rd = {0};
    wal_reader_reset(&rd, fd);
    uint64_t off = 0;
    int rc = 0;
    *count = 0;
    for (;;) {
        uint64_t seq;
        int64_t t;
        uint32_t len;
        rc = wal_record_read(&rd, off, fsize, &seq, &t, &buf, &cap, &len);
        if (rc == MD_ERR_CORRUPT) {
            rc = 0;
            break;
        }
        if (rc) break;
        if (len < 4 || wal_get_u32(buf) > len - 4) break; /* malformed body: the end */
        uint32_t rlen = wal_get_u32(buf);
        off += WAL_HDR_SIZE + len;
        (*count)++;
        if (!cb) continue;
        char *r = realloc(reason, (size_t)rlen + 1);
        if (!r) {
            rc = MD_ERR_NOMEM;
            break;
        }
        reason = r;
        memcpy(reason, buf + 4, rlen);
        reason[rlen] = '\0';
        wal_dead_letter d = {.seq = seq, .dead_at_us = t, .reason = reason,
                             .data = buf + 4 + rlen, .len = len - 4 - rlen,
                             .off = off - WAL_HDR_SIZE - len, .size = WAL_HDR_SIZE + len};
        if (cb(arg, &d)) break;
    }
    *valid = off;
    free(buf);
    free(reason);
    wal_reader_free(&rd);
    return rc;
}

/* Appending after a torn record would hide every later dead letter, so cut it at open. */
int wal_dead_recover(const char *dir, uint64_t *count, uint64_t *size)
{
    char path[4096];
    *count = 0;
    *size = 0;
    if (wal_path(path, sizeof path, dir, DEAD_NAME)) return MD_ERR_INVALID;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : MD_ERR_IO;
    struct stat st;
    int rc = fstat(fd, &st) == 0 ? 0 : MD_ERR_IO;
    uint64_t valid = 0;
    if (rc == 0) rc = wal_dead_walk(fd, (uint64_t)st.st_size, &valid, NULL, NULL, count);
    if (rc == 0 && valid < (uint64_t)st.st_size) {
        log_warn("wal_dead_truncated", "%s: dropped %" PRIu64 " bytes of a torn dead letter", path,
                 (uint64_t)st.st_size - valid);
        if (ftruncate(fd, (off_t)valid) != 0 || wal_datasync(fd) != 0) rc = MD_ERR_IO;
    }
    close(fd);
    *size = valid;
    return rc;
}

/* Same framing as segments; the payload is u32 reason length, reason, original data. */
int wal_dead_append(const char *dir, int *fd, uint64_t *size, uint64_t seq, const char *reason,
                    const uint8_t *data, size_t len)
{
    if (!reason) reason = "";
    size_t rlen = strlen(reason);
    if (rlen > 4096) rlen = 4096; /* a reason is a sentence, not a payload */
    size_t body = 4 + rlen + len;
    if (body > WAL_MAX_RECORD) return MD_ERR_INVALID;
    if (*fd < 0) {
        char path[4096];
        if (wal_path(path, sizeof path, dir, DEAD_NAME)) return MD_ERR_INVALID;
        bool created = access(path, F_OK) != 0;
        *fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (*fd < 0) return MD_ERR_IO;
        if (created && wal_fsync_dir(dir)) return MD_ERR_IO;
    }
    uint8_t *rec = malloc(WAL_HDR_SIZE + body); /* owned */
    if (!rec) return MD_ERR_NOMEM;
    int64_t now = time_now_us();
    uint8_t *p = rec + WAL_HDR_SIZE;
    wal_put_u32(p, (uint32_t)rlen);
    memcpy(p + 4, reason, rlen);
    if (len) memcpy(p + 4 + rlen, data, len);
    wal_record_header(rec, (uint32_t)body, wal_record_crc(seq, now, p, body), seq, now);
    int rc = wal_write_all(*fd, rec, WAL_HDR_SIZE + body);
    if (rc == 0) rc = wal_datasync(*fd);
    free(rec);
    if (rc) {
        log_error("wal_dead_append", "cannot append to %s/" DEAD_NAME ": %s", dir,
                  strerror(errno));
        if (ftruncate(*fd, (off_t)*size) != 0) { /* best effort: keep the log parseable */
        }
        return MD_ERR_IO;
    }
    *size += WAL_HDR_SIZE + body;
    return 0;
}
