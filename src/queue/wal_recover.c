/* WAL open-time recovery: validate every segment, cut torn tails, quarantine segments that no
 * longer continue the sequence, retire fully acknowledged ones (one may become the spare) and
 * start a fresh active segment. */
#include "queue/wal_internal.h"

#include "core/error.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Segment files are exactly 20 digits + ".wal"; everything else in dir is left alone. */
static bool parse_segment_name(const char *name, uint64_t *seq)
{
    if (strlen(name) != 24 || strcmp(name + 20, ".wal") != 0) return false;
    uint64_t v = 0;
    for (int i = 0; i < 20; i++) {
        if (name[i] < '0' || name[i] > '9') return false;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *seq = v;
    return true;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Lists segment seqs sorted; *out is owned by the caller. */
static int list_segments(const char *dir, uint64_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) return MD_ERR_IO;
    size_t cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        uint64_t seq;
        if (!parse_segment_name(e->d_name, &seq)) continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            uint64_t *p = realloc(*out, nc * sizeof *p);
            if (!p) {
                rc = MD_ERR_NOMEM;
                break;
            }
            *out = p;
            cap = nc;
        }
        (*out)[(*n)++] = seq;
    }
    closedir(d);
    if (rc == 0 && *n) qsort(*out, *n, sizeof **out, cmp_u64);
    return rc;
}

/* Moves a segment that cannot belong to the log out of the way, keeping it for inspection. */
static void quarantine(const char *dir, const char *name, const char *why)
{
    char from[4096], to[4096 + 16];
    if (wal_path(from, sizeof from, dir, name)) return;
    snprintf(to, sizeof to, "%s.corrupt", from);
    if (rename(from, to) != 0)
        log_error("wal_quarantine", "cannot rename %s: %s", from, strerror(errno));
    else
        log_warn("wal_segment_corrupt", "%s: %s; renamed to %s", from, why, to);
}

/* After the last valid record of a segment that was never closed: space preallocated for it
 * (zeros) or left from its earlier life as a recycled segment (a record of a lower seq) is
 * expected there; anything else is a torn write worth a warning. */
static bool unused_tail(int fd, uint64_t off, uint64_t fsize, uint64_t expect)
{
    uint8_t hdr[WAL_HDR_SIZE];
    size_t n = fsize - off < sizeof hdr ? (size_t)(fsize - off) : sizeof hdr;
    if (pread(fd, hdr, n, (off_t)off) != (ssize_t)n) return false;
    bool zeros = true;
    for (size_t i = 0; i < n; i++) zeros = zeros && hdr[i] == 0;
    if (zeros) return true;
    return n == sizeof hdr && wal_get_u64(hdr + 8) < expect;
}

/* Scans one segment whose first record must be seq `expect`, truncating at the first bad
 * record. Fills s (count 0 = nothing valid). `pos` is the consumer position. */
static int scan_segment(wal *w, const char *name, uint64_t expect, uint64_t pos, wal_segment *s,
                        uint8_t **buf, size_t *cap)
{
    char path[4096];
    if (wal_path(path, sizeof path, w->dir, name)) return MD_ERR_INVALID;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return MD_ERR_IO;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return MD_ERR_IO;
    }
    uint64_t fsize = (uint64_t)st.st_size, off = 0;
    bool start_set = false;
    int rc = 0;
    wal_reader rd = {0};
    wal_reader_reset(&rd, fd);
    for (;;) {
        uint64_t seq;
        int64_t t;
        uint32_t len;
        rc = wal_record_read(&rd, off, fsize, &seq, &t, buf, cap, &len);
        if (rc == 0 && seq != expect) rc = MD_ERR_CORRUPT;
        if (rc == MD_ERR_CORRUPT) rc = 0;
        else if (rc == 0) {
            if (seq > pos) {
                if (!start_set) s->start_off = off;
                start_set = true;
                w->stream_count++;
                w->stream_bytes += WAL_HDR_SIZE + len;
            }
            s->last_seq = seq;
            s->count++;
            off += WAL_HDR_SIZE + len;
            expect++;
            continue;
        }
        break;
    }
    wal_reader_free(&rd);
    if (rc == 0 && off < fsize) {
        if (!unused_tail(fd, off, fsize, expect))
            log_warn("wal_torn_tail", "%s: dropped %" PRIu64 " bytes after %" PRIu64
                     " valid records", path, fsize - off, s->count);
        if (ftruncate(fd, (off_t)off) != 0 || wal_datasync(fd) != 0) rc = MD_ERR_IO;
    }
    if (!start_set) s->start_off = off;
    s->size = off;
    close(fd);
    return rc;
}

/* An unused segment (created, or preallocated, then nothing written: shorter than a header or
 * zeros where the first one would be) holds nothing worth quarantining. */
static bool segment_unused(const char *dir, const char *name)
{
    char path[4096];
    if (wal_path(path, sizeof path, dir, name)) return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    uint8_t hdr[WAL_HDR_SIZE];
    ssize_t n = pread(fd, hdr, sizeof hdr, 0);
    close(fd);
    if (n < 0) return false;
    for (ssize_t i = 0; i < n && n == (ssize_t)sizeof hdr; i++)
        if (hdr[i]) return false;
    return true;
}

int wal_segs_push(wal *w, const wal_segment *s)
{
    if (w->nsegs == w->segcap) {
        size_t nc = w->segcap ? w->segcap * 2 : 8;
        wal_segment *p = realloc(w->segs, nc * sizeof *p);
        if (!p) return MD_ERR_NOMEM;
        w->segs = p;
        w->segcap = nc;
    }
    w->segs[w->nsegs++] = *s;
    return 0;
}

/* Scans all segments in seq order, keeping the longest valid prefix of the log. */
static int scan_all(wal *w, uint64_t pos, uint64_t *next, char *err, size_t errlen)
{
    uint64_t *seqs = NULL; /* owned */
    size_t n = 0;
    int rc = list_segments(w->dir, &seqs, &n);
    if (rc) {
        snprintf(err, errlen, "cannot list %s: %s", w->dir, strerror(errno));
        return rc;
    }
    uint8_t *buf = NULL; /* owned: record scratch */
    size_t cap = 0;
    uint64_t expect = 0;
    bool have_expect = false;
    for (size_t i = 0; i < n && rc == 0; i++) {
        wal_segment s = {.first_seq = seqs[i]};
        wal_segment_name(s.name, s.first_seq);
        if (have_expect && s.first_seq != expect) {
            if (segment_unused(w->dir, s.name)) wal_segment_retire(w->dir, s.name);
            else quarantine(w->dir, s.name, "does not continue the sequence");
            continue;
        }
        rc = scan_segment(w, s.name, s.first_seq, pos, &s, &buf, &cap);
        if (rc) {
            snprintf(err, errlen, "cannot recover %s/%s: %s", w->dir, s.name, strerror(errno));
            break;
        }
        expect = s.count ? s.last_seq + 1 : s.first_seq;
        have_expect = true;
        if (s.count == 0 || s.last_seq <= pos) {
            wal_segment_retire(w->dir, s.name); /* empty or fully acknowledged */
            continue;
        }
        rc = wal_segs_push(w, &s);
        if (rc) snprintf(err, errlen, "out of memory");
    }
    free(buf);
    free(seqs);
    *next = have_expect ? expect : 1;
    return rc;
}

int wal_recover(wal *w, char *err, size_t errlen)
{
    if (mkdir(w->dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", w->dir, strerror(errno));
        return MD_ERR_IO;
    }
    uint64_t pos = wal_pos_read(w->dir);
    uint64_t next = 1;
    int rc = scan_all(w, pos, &next, err, errlen);
    if (rc) return rc;
    /* Seqs never go backwards: not below the acked position either. With segments kept, their
     * last seq is above pos, so this cannot open a gap behind them. */
    if (next <= pos) next = pos + 1;
    if (next == 0) next = 1;
    w->next_seq = next;
    w->durable_seq = next - 1;
    w->acked_seq = pos;
    w->pos_written = pos;

    if (w->nsegs) {
        w->cur_seg_first = w->segs[0].first_seq;
        w->cur_off = w->segs[0].start_off;
        w->want_seq = w->segs[0].first_seq > pos ? w->segs[0].first_seq : pos + 1;
    } else {
        w->cur_seg_first = next;
        w->cur_off = 0;
        w->want_seq = next;
    }

    rc = wal_dead_recover(w->dir, &w->dead_letters, &w->dead_size);
    if (rc) {
        snprintf(err, errlen, "cannot recover %s/dead.log: %s", w->dir, strerror(errno));
        return rc;
    }

    /* Always a fresh active segment: recovered segments stay immutable. */
    wal_segment a = {.first_seq = next};
    wal_segment_name(a.name, next);
    char path[4096];
    if (wal_path(path, sizeof path, w->dir, a.name)) {
        snprintf(err, errlen, "path too long: %s", w->dir);
        return MD_ERR_INVALID;
    }
    w->active_fd = wal_segment_create(w->dir, a.name, next, w->cfg.segment_bytes);
    if (w->active_fd < 0 || wal_fsync_dir(w->dir) != 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        return MD_ERR_IO;
    }
    rc = wal_segs_push(w, &a);
    if (rc) snprintf(err, errlen, "out of memory");
    return rc;
}
