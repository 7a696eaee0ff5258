/* Private to the WAL backend (wal.c, wal_recover.c, wal_segment.c): the queue state and the
 * record/file helpers shared between those files. Not part of the queue contract. */
#ifndef METERD_QUEUE_WAL_INTERNAL_H
#define METERD_QUEUE_WAL_INTERNAL_H

#include "queue/wal.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WAL_HDR_SIZE 24u                     /* u32 len, u32 crc, u64 seq, i64 time */
#define WAL_MAX_RECORD (64u * 1024u * 1024u) /* payload limit; larger during recovery = corrupt */
#define WAL_NAME_LEN 32                      /* "%020llu.wal" + NUL, with room */
#define WAL_DEFAULT_SEGMENT_BYTES (64ull * 1024 * 1024)
#define WAL_DEFAULT_BACKLOG_BYTES (1024ull * 1024 * 1024)
#define WAL_DEAD_NAME "dead.log"
#define WAL_LOCK_NAME "LOCK" /* flock'd by the one process that has the queue open */
#define WAL_SPARE_NAME "recycled.seg" /* a retired segment kept to become the next one */

/* A buffered record reader over one file: records of up to WAL_READAHEAD bytes come from one
 * pread() of up to WAL_READAHEAD bytes instead of two each. Set fd, zero the rest; call
 * wal_reader_reset() whenever fd changes (numbers are reused), wal_reader_free() when done. */
#define WAL_READAHEAD (256u << 10)
typedef struct wal_reader {
    int fd;
    uint8_t *buf; /* owned; bytes [off, off + len) of the file */
    size_t cap, len;
    uint64_t off;
} wal_reader;

/* One segment file: records first_seq..last_seq (count == 0: empty, last_seq meaningless). */
typedef struct wal_segment {
    uint64_t first_seq;
    uint64_t last_seq;
    uint64_t count;
    uint64_t size;           /* durable bytes */
    uint64_t start_off;      /* recovery only: offset of the first record past consumer.pos */
    char name[WAL_NAME_LEN]; /* file name inside dir */
} wal_segment;

/* One publish waiting for the group commit. */
typedef struct wal_pending_cb {
    queue_publish_cb cb;
    void *arg; /* borrowed: the publisher's */
    uint64_t seq;
    int64_t enq_us;
} wal_pending_cb;

/* Framed records not yet written, plus who to tell. Two of these are swapped by the committer. */
typedef struct wal_pending {
    uint8_t *data; /* owned */
    size_t len, cap;
    wal_pending_cb *cbs; /* owned */
    size_t n, ncap;
    uint64_t bytes; /* == len, kept for accounting symmetry */
    uint64_t last_seq;
} wal_pending;

/* One consumed, not yet acked message; its buffer backs queue_msg.data. */
typedef struct wal_outstanding {
    uint64_t seq;
    int64_t enq_us;
    uint8_t *buf; /* owned */
    uint64_t cum_count, cum_bytes; /* consumer totals including this message */
} wal_outstanding;

typedef struct wal {
    queue base; /* first: a wal * is a queue * */
    char *dir;  /* owned */
    wal_config cfg;

    pthread_mutex_t mu; /* guards everything below unless noted */
    pthread_cond_t commit_cv;
    pthread_cond_t consume_cv;
    pthread_t committer;
    bool committer_started, committer_done, closing, shut_down, io_failed;

    wal_pending pend;  /* publishers append here */
    wal_pending spare; /* committer-owned while writing */
    uint64_t next_seq;    /* next seq to assign */
    uint64_t durable_seq; /* highest fdatasync'd seq */

    wal_segment *segs; /* owned; the last one is the active segment */
    size_t nsegs, segcap;
    int lock_fd;   /* flock'd LOCK file: one process per queue directory */
    int active_fd; /* committer-owned */

    /* Accounting since open: records (durable + pending) past the acked position. */
    uint64_t stream_count, stream_bytes;
    uint64_t consumed_count, consumed_bytes; /* consumer-owned, read under mu */
    uint64_t acked_count, acked_bytes;
    uint64_t published, fsyncs, dead_letters;

    /* Consumer cursor: next seq to hand out and where it sits on disk. */
    uint64_t want_seq;
    uint64_t cur_seg_first, cur_off;
    int read_fd;              /* consumer-owned */
    uint64_t read_fd_seg;     /* first_seq of the segment read_fd has open */
    wal_reader reader;        /* consumer-owned, over read_fd */
    wal_outstanding *out;     /* owned ring-ish array: out[out_head .. out_head+out_len) */
    size_t out_head, out_len, out_cap;

    uint64_t acked_seq;
    pthread_mutex_t pos_mu; /* serialises consumer.pos writers; taken before mu */
    uint64_t pos_written;
    int64_t pos_written_mono_us;
    uint64_t acks_since_pos;

    int dead_fd;        /* consumer-owned; -1 until the first nack */
    uint64_t dead_size; /* valid bytes in dead.log */
} wal;

/* Little-endian helpers. */
void wal_put_u32(uint8_t *p, uint32_t v);
void wal_put_u64(uint8_t *p, uint64_t v);
uint32_t wal_get_u32(const uint8_t *p);
uint64_t wal_get_u64(const uint8_t *p);

/* CRC of seq + time + payload, as stored in a record header. */
uint32_t wal_record_crc(uint64_t seq, int64_t t_us, const uint8_t *payload, size_t len);
/* Same, given crc32(payload) computed earlier (so publishers hash outside the lock). */
uint32_t wal_record_crc_combine(uint64_t seq, int64_t t_us, uint32_t payload_crc, size_t len);
/* Writes the 24-byte header into hdr. */
void wal_record_header(uint8_t *hdr, uint32_t len, uint32_t crc, uint64_t seq, int64_t t_us);

void wal_reader_reset(wal_reader *r, int fd);
void wal_reader_free(wal_reader *r);

/* Reads the record at off in r's file (file size fsize: nothing past it is read). On success
 * *buf (owned by caller, realloc'd from its previous value, capacity *cap) holds the payload.
 * 0, MD_ERR_CORRUPT (bad/torn record), MD_ERR_NOMEM, MD_ERR_IO. */
int wal_record_read(wal_reader *r, uint64_t off, uint64_t fsize, uint64_t *seq, int64_t *t_us,
                    uint8_t **buf, size_t *cap, uint32_t *len);

/* "<dir>/<name>" into out; MD_ERR_INVALID if it does not fit. */
int wal_path(char *out, size_t outlen, const char *dir, const char *name);
/* Segment file name for first seq. */
void wal_segment_name(char out[WAL_NAME_LEN], uint64_t first_seq);
/* write() all of buf. 0 or MD_ERR_IO (errno set). */
int wal_write_all(int fd, const uint8_t *buf, size_t len);
/* pwrite() all of buf at off. 0 or MD_ERR_IO (errno set). */
int wal_pwrite_all(int fd, const uint8_t *buf, size_t len, uint64_t off);
/* Opens segment file `name` (first record first_seq) for writing, bytes long already: the
 * recycled spare when there is one (its blocks are written, so fdatasync has no metadata to
 * flush), else a new file with its blocks allocated. The caller fsyncs dir. Returns the fd or
 * -1 (errno set). */
int wal_segment_create(const char *dir, const char *name, uint64_t first_seq, uint64_t bytes);
/* Keeps a fully acknowledged segment as the spare when there is none yet, else removes it. */
void wal_segment_retire(const char *dir, const char *name);
/* fdatasync, reported to metrics. 0 or MD_ERR_IO. */
int wal_datasync(int fd);
/* fsync the directory so created/renamed names survive a crash. 0 or MD_ERR_IO. */
int wal_fsync_dir(const char *dir);

/* Reads consumer.pos (0 when missing or unreadable). */
uint64_t wal_pos_read(const char *dir);
/* Atomically replaces consumer.pos with seq. 0 or MD_ERR_IO. */
int wal_pos_write(const char *dir, uint64_t seq);

/* Calls cb (may be NULL) for each dead letter in the dead.log open as fd (size fsize), stopping
 * at the first bad record or when cb returns non-zero; *valid = bytes of good records read,
 * *count = how many. 0, MD_ERR_IO or MD_ERR_NOMEM. */
int wal_dead_walk(int fd, uint64_t fsize, uint64_t *valid,
                  int (*cb)(void *arg, const wal_dead_letter *d), void *arg, uint64_t *count);
/* Counts dead letters in dir/dead.log and truncates a torn tail. 0 or MD_ERR_IO. */
int wal_dead_recover(const char *dir, uint64_t *count, uint64_t *size);
/* Appends one dead letter (framed, fdatasync'd) to dir/dead.log via *fd (opened on demand). */
int wal_dead_append(const char *dir, int *fd, uint64_t *size, uint64_t seq, const char *reason,
                    const uint8_t *data, size_t len);

/* Open-time recovery: scans segments, truncates torn tails, sets next_seq, cursor, accounting
 * and creates the new active segment. 0 or a negative md_err with a message in err. */
int wal_recover(wal *w, char *err, size_t errlen);
/* Appends a segment to the in-memory index (under mu, or before threads start). */
int wal_segs_push(wal *w, const wal_segment *s);

#endif
