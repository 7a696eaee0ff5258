/* Unit tests for the embedded WAL queue (src/queue/wal*.c). Each test runs in its own temp dir. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/timeutil.h"
#include "queue/queue.h"
#include "queue/wal.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define HDR 24u /* record header size on disk */

#define TMPDIR_PREFIX "/tmp/meterd-wal"
#include "queue/tmpdir_fixture.h"
#include "queue/wal_fixture.h"

static queue *open_wal(const char *dir, uint64_t segment_bytes, uint64_t backlog)
{
    wal_config cfg = {.segment_bytes = segment_bytes, .max_backlog_bytes = backlog};
    return open_wal_with(dir, &cfg);
}

/* Fixed-size payload "m<n>" padded with '.', so offsets in files are predictable. */
static void payload(char *buf, size_t len, unsigned n)
{
    memset(buf, '.', len);
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "m%u", n);
    memcpy(buf, tmp, (size_t)k < len ? (size_t)k : len);
}

static void publish_n(queue *q, unsigned from, unsigned count, size_t len)
{
    char buf[256];
    for (unsigned i = from; i < from + count; i++) {
        payload(buf, len, i);
        assert_int_equal(queue_publish_wait(q, (const uint8_t *)buf, len), 0);
    }
}

/* Consumes one message and checks its seq and payload. */
static void expect_msg(queue *q, queue_msg *m, uint64_t seq, unsigned n, size_t len)
{
    char buf[256];
    assert_int_equal(q->ops->consume(q, m, 1000), 0);
    assert_int_equal(m->seq, seq);
    assert_int_equal(m->len, len);
    payload(buf, len, n);
    assert_memory_equal(m->data, buf, len);
}

/* Path of the (single) segment file starting at first_seq. */
static void seg_path(char *out, size_t n, const char *dir, uint64_t first_seq)
{
    snprintf(out, n, "%s/%020" PRIu64 ".wal", dir, first_seq);
}

static int count_suffix(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > sl && strcmp(e->d_name + l - sl, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

/* ---- position callback ---- */

typedef struct pos_capture {
    int calls, status;
    char pos[64];
} pos_capture;

static void capture_cb(void *arg, int status, const char *position)
{
    pos_capture *c = arg;
    c->calls++;
    c->status = status;
    snprintf(c->pos, sizeof c->pos, "%s", position);
}

static void test_publish_consume_ack_roundtrip_in_order(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    assert_string_equal(q->ops->name, "wal");
    int64_t t0 = time_now_us();
    publish_n(q, 0, 10, 40);
    int64_t t1 = time_now_us();

    queue_stats st;
    assert_int_equal(q->ops->stats(q, &st), 0);
    assert_int_equal(st.published, 10);
    assert_int_equal(st.depth, 10);
    assert_int_equal(st.depth_bytes, 10 * (HDR + 40));
    assert_true(st.oldest_unacked_us >= t0 && st.oldest_unacked_us <= t1);
    assert_int_equal(st.segments, 1);

    queue_msg m;
    for (unsigned i = 0; i < 10; i++) {
        expect_msg(q, &m, i + 1, i, 40);
        assert_int_equal(q->ops->ack(q, &m), 0);
    }
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    assert_int_equal(q->ops->consume(q, &m, 30), MD_ERR_TIMEOUT);
    assert_int_equal(q->ops->stats(q, &st), 0);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.depth_bytes, 0);
    assert_int_equal(st.oldest_unacked_us, 0);

    /* The callback gets "<enqueued ms>-<seq>". */
    pos_capture c = {0};
    int64_t before_ms = time_now_us() / 1000;
    assert_int_equal(q->ops->publish(q, (const uint8_t *)"x", 1, capture_cb, &c), 0);
    close_wal(q); /* shutdown flushes, so the callback has run */
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.status, 0);
    long long ms = 0;
    unsigned long long seq = 0;
    assert_int_equal(sscanf(c.pos, "%lld-%llu", &ms, &seq), 2);
    assert_int_equal(seq, 11);
    assert_true(ms >= before_ms && ms <= before_ms + 5000);
}

/* ---- concurrency / group commit ---- */

#define THREADS 8
#define PER_THREAD 500

typedef struct pub_arg {
    queue *q;
    int id;
    atomic_int *failures;
} pub_arg;

static void *publisher(void *p)
{
    pub_arg *a = p;
    char buf[32];
    for (int i = 0; i < PER_THREAD; i++) {
        int n = snprintf(buf, sizeof buf, "t%d-%d", a->id, i);
        if (queue_publish_wait(a->q, (const uint8_t *)buf, (size_t)n) != 0)
            atomic_fetch_add(a->failures, 1);
    }
    return NULL;
}

static void test_concurrent_publishers_share_fsyncs(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    pthread_t th[THREADS];
    pub_arg args[THREADS];
    atomic_int failures = 0;
    for (int i = 0; i < THREADS; i++) {
        args[i] = (pub_arg){.q = q, .id = i, .failures = &failures};
        assert_int_equal(pthread_create(&th[i], NULL, publisher, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&failures), 0);

    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.published, THREADS * PER_THREAD);
    assert_int_equal(st.depth, THREADS * PER_THREAD);
    print_message("%d publishes, %" PRIu64 " fsyncs\n", THREADS * PER_THREAD, st.fsyncs);
    assert_true(st.fsyncs < THREADS * PER_THREAD); /* group commit: publishes shared syncs */
    assert_true(st.fsyncs > 0);

    int next[THREADS] = {0};
    queue_msg m;
    for (uint64_t s = 1; s <= THREADS * PER_THREAD; s++) {
        assert_int_equal(q->ops->consume(q, &m, 1000), 0);
        assert_int_equal(m.seq, s);
        int t = -1, i = -1;
        char buf[32];
        assert_true(m.len < sizeof buf);
        memcpy(buf, m.data, m.len);
        buf[m.len] = '\0';
        assert_int_equal(sscanf(buf, "t%d-%d", &t, &i), 2);
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(i, next[t]); /* each publisher's messages stay in its order */
        next[t]++;
        if (s % 100 == 0) assert_int_equal(q->ops->ack(q, &m), 0); /* batches of outstanding */
    }
    for (int t = 0; t < THREADS; t++) assert_int_equal(next[t], PER_THREAD);
    q->ops->stats(q, &st);
    assert_int_equal(st.depth, 0);
    close_wal(q);
}

static void test_reopen_resumes_after_acked_position(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    publish_n(q, 0, 5, 30);
    queue_msg m1, m2, m3;
    expect_msg(q, &m1, 1, 0, 30);
    expect_msg(q, &m2, 2, 1, 30);
    expect_msg(q, &m3, 3, 2, 30);
    assert_int_equal(q->ops->ack(q, &m2), 0); /* covers 1 and 2; 3 stays unacked */
    close_wal(q);

    q = open_wal(f->dir, 0, 0);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.depth, 3);
    assert_int_equal(st.depth_bytes, 3 * (HDR + 30));
    assert_int_equal(st.published, 0);
    queue_msg m;
    expect_msg(q, &m, 3, 2, 30); /* re-delivered */
    expect_msg(q, &m, 4, 3, 30);
    expect_msg(q, &m, 5, 4, 30);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    publish_n(q, 100, 1, 30);
    expect_msg(q, &m, 6, 100, 30); /* seqs continue */
    assert_int_equal(q->ops->ack(q, &m), 0);
    close_wal(q);

    q = open_wal(f->dir, 0, 0);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    publish_n(q, 7, 1, 30);
    expect_msg(q, &m, 7, 7, 30); /* all segments gone, seq still continues after consumer.pos */
    close_wal(q);
}

static void test_torn_tail_keeps_complete_records(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    publish_n(q, 0, 5, 100);
    close_wal(q);
    char path[256];
    seg_path(path, sizeof path, f->dir, 1);
    assert_int_equal(file_size(path), 5 * (HDR + 100));
    assert_int_equal(truncate(path, 5 * (HDR + 100) - 10), 0); /* crash mid-record 5 */

    q = open_wal(f->dir, 0, 0);
    assert_int_equal(file_size(path), 4 * (HDR + 100)); /* the partial record was cut */
    queue_msg m;
    for (unsigned i = 0; i < 4; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    publish_n(q, 50, 1, 100);
    expect_msg(q, &m, 5, 50, 100);
    assert_int_equal(q->ops->ack(q, &m), 0);
    close_wal(q);
}

/* ---- preallocated and recycled segments ---- */

static ino_t inode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_ino;
}

/* Opens the WAL with stderr (the log) going to a file; returns whether the log mentions
 * `event`. */
static queue *open_wal_logging(const char *dir, uint64_t segment_bytes, const char *event,
                               int *mentioned)
{
    char logpath[512];
    snprintf(logpath, sizeof logpath, "%s.log", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    queue *q = open_wal(dir, segment_bytes, 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char text[8192] = "";
    FILE *f = fopen(logpath, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    unlink(logpath);
    *mentioned = strstr(text, event) != NULL;
    return q;
}

static void test_garbage_after_last_record_is_dropped(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    publish_n(q, 0, 3, 100);
    close_wal(q);
    char path[256];
    seg_path(path, sizeof path, f->dir, 1);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    const uint8_t junk[7] = {0x10, 0, 0, 0, 0xde, 0xad, 0xbe};
    assert_int_equal(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    close(fd);

    int torn = 0;
    q = open_wal_logging(f->dir, 0, "wal_torn_tail", &torn);
    assert_int_equal(torn, 1); /* unlike a preallocated or recycled tail */
    assert_int_equal(file_size(path), 3 * (HDR + 100));
    queue_msg m;
    for (unsigned i = 0; i < 3; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    close_wal(q);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

static void test_flipped_byte_drops_rest_of_segment(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    publish_n(q, 0, 5, 100);
    close_wal(q);
    char path[256];
    seg_path(path, sizeof path, f->dir, 1);
    flip_byte(path, 2 * (HDR + 100) + HDR + 50); /* payload of record 3 */

    q = open_wal(f->dir, 0, 0);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.depth, 2);
    queue_msg m;
    expect_msg(q, &m, 1, 0, 100);
    expect_msg(q, &m, 2, 1, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    assert_int_equal(file_size(path), 2 * (HDR + 100));
    close_wal(q);
}

static void test_segment_after_a_cut_is_quarantined(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 256, 0); /* 3 records of 124 bytes per segment */
    publish_n(q, 0, 9, 100);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.segments, 3); /* 1-3, 4-6, 7-9 (active; rolls on the next write) */
    close_wal(q);
    char path[256];
    seg_path(path, sizeof path, f->dir, 4);
    flip_byte(path, (HDR + 100) + 10); /* header of record 5 */
    /* and segment 10 as a crash right after a roll leaves it: preallocated, nothing written */
    char seg10[256];
    seg_path(seg10, sizeof seg10, f->dir, 10);
    int fd = open(seg10, O_WRONLY | O_CREAT, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 256), 0);
    close(fd);

    q = open_wal(f->dir, 256, 0);
    assert_int_equal(count_suffix(f->dir, ".corrupt"), 1); /* segment 7 no longer continues */
    assert_int_equal(access(seg10, F_OK), -1); /* unused: set aside as the spare, not kept */
    queue_msg m;
    for (unsigned i = 0; i < 4; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    publish_n(q, 77, 1, 100);
    expect_msg(q, &m, 5, 77, 100);
    close_wal(q);
}

static void test_segments_roll_and_are_deleted_after_ack(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 256, 0);
    publish_n(q, 0, 20, 100);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.segments, 7); /* 1,4,7,10,13,16 hold 3 each; 19 holds 19-20 */
    assert_int_equal(count_suffix(f->dir, ".wal"), 7);

    queue_msg m, m10;
    for (unsigned i = 0; i < 20; i++) {
        expect_msg(q, &m, i + 1, i, 100);
        if (i + 1 == 10) m10 = m;
    }
    assert_int_equal(q->ops->ack(q, &m10), 0);
    q->ops->stats(q, &st);
    assert_int_equal(st.segments, 4); /* 1-3, 4-6, 7-9 removed; 10-12 still has unacked 11 */
    assert_int_equal(count_suffix(f->dir, ".wal"), 4);
    assert_int_equal(st.depth, 10);

    assert_int_equal(q->ops->ack(q, &m), 0);
    q->ops->stats(q, &st);
    assert_int_equal(st.segments, 1); /* only the active segment remains */
    assert_int_equal(count_suffix(f->dir, ".wal"), 1);
    assert_int_equal(st.depth, 0);
    close_wal(q);

    q = open_wal(f->dir, 256, 0); /* fully acked segment deleted, fresh active one at 21 */
    assert_int_equal(count_suffix(f->dir, ".wal"), 1);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    publish_n(q, 21, 1, 100);
    expect_msg(q, &m, 21, 21, 100);
    close_wal(q);
}

static void count_cb(void *arg, int status, const char *position)
{
    (void)position;
    if (status == 0) atomic_fetch_add((atomic_int *)arg, 1);
    else atomic_fetch_add((atomic_int *)arg, 1000);
}

static void test_backpressure_returns_full(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 3 * (HDR + 100));
    publish_n(q, 0, 3, 100);
    char buf[100];
    payload(buf, sizeof buf, 3);
    atomic_int calls = 0;
    assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, 100, count_cb, &calls), MD_ERR_FULL);
    assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, 1, count_cb, &calls), MD_ERR_FULL);
    queue_msg m;
    expect_msg(q, &m, 1, 0, 100);
    assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, 100, count_cb, &calls), MD_ERR_FULL);
    assert_int_equal(q->ops->ack(q, &m), 0); /* frees one record's worth */
    assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, 100, count_cb, &calls), 0);
    q->ops->shutdown(q);
    assert_int_equal(atomic_load(&calls), 1); /* refused publishes never call back */
    q->ops->close(q);
}

typedef struct dlq_seen {
    int n;
    uint64_t seq;
    char reason[64];
    char data[64];
} dlq_seen;

static int dlq_cb(void *arg, const wal_dead_letter *d)
{
    dlq_seen *s = arg;
    s->n++;
    s->seq = d->seq;
    snprintf(s->reason, sizeof s->reason, "%s", d->reason);
    snprintf(s->data, sizeof s->data, "%.*s", (int)d->len, (const char *)d->data);
    return 0;
}

static void test_nack_moves_record_to_dead_letters(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"good1", 5), 0);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"poison", 6), 0);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"good2", 5), 0);
    queue_msg m;
    assert_int_equal(q->ops->consume(q, &m, 1000), 0);
    assert_int_equal(q->ops->ack(q, &m), 0);
    assert_int_equal(q->ops->consume(q, &m, 1000), 0);
    assert_int_equal(m.seq, 2);
    assert_int_equal(q->ops->nack(q, &m, "cannot decode batch"), 0);
    assert_int_equal(q->ops->consume(q, &m, 1000), 0); /* the consumer moves on */
    assert_int_equal(m.seq, 3);
    assert_memory_equal(m.data, "good2", 5);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(st.depth, 1);
    close_wal(q);

    dlq_seen s = {0};
    assert_int_equal(wal_dlq_list(f->dir, dlq_cb, &s), 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seq, 2);
    assert_string_equal(s.reason, "cannot decode batch");
    assert_string_equal(s.data, "poison");

    /* A torn dead letter at the end is tolerated by the lister and cut at open. */
    char path[256];
    snprintf(path, sizeof path, "%s/dead.log", f->dir);
    off_t good = file_size(path);
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "\x30\0\0\0garbage", 11), 11);
    close(fd);
    memset(&s, 0, sizeof s);
    assert_int_equal(wal_dlq_list(f->dir, dlq_cb, &s), 0);
    assert_int_equal(s.n, 1);

    q = open_wal(f->dir, 0, 0);
    assert_int_equal(file_size(path), good);
    q->ops->stats(q, &st);
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(q->ops->consume(q, &m, 1000), 0); /* 3 was never acked */
    assert_int_equal(m.seq, 3);
    assert_int_equal(q->ops->nack(q, &m, NULL), 0);
    close_wal(q);
    memset(&s, 0, sizeof s);
    assert_int_equal(wal_dlq_list(f->dir, dlq_cb, &s), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seq, 3);
    assert_string_equal(s.reason, "");
    assert_string_equal(s.data, "good2");
}

static void *blocked_consumer(void *p)
{
    queue *q = p;
    queue_msg m;
    return (void *)(intptr_t)q->ops->consume(q, &m, -1);
}

static void test_shutdown_wakes_blocked_consumer(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, blocked_consumer, q), 0);
    usleep(50 * 1000);
    q->ops->shutdown(q);
    void *ret = NULL;
    pthread_join(th, &ret);
    assert_int_equal((int)(intptr_t)ret, MD_ERR_CLOSED);
    q->ops->close(q);
}

static void test_shutdown_flushes_and_drains(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    atomic_int calls = 0;
    char buf[40];
    for (unsigned i = 0; i < 50; i++) {
        payload(buf, sizeof buf, i);
        assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, sizeof buf, count_cb, &calls),
                         0);
    }
    q->ops->shutdown(q);
    assert_int_equal(atomic_load(&calls), 50); /* every pending publish became durable */
    assert_int_equal(q->ops->publish(q, (const uint8_t *)buf, sizeof buf, count_cb, &calls),
                     MD_ERR_CLOSED);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)buf, 1), MD_ERR_CLOSED);
    queue_msg m;
    for (unsigned i = 0; i < 50; i++) expect_msg(q, &m, i + 1, i, sizeof buf);
    assert_int_equal(q->ops->consume(q, &m, 1000), MD_ERR_CLOSED);
    assert_int_equal(q->ops->ack(q, &m), 0);
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.published, 50);
    assert_int_equal(st.depth, 0);
    q->ops->close(q);

    q = open_wal(f->dir, 0, 0); /* the final ack was persisted at close */
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    close_wal(q);
}

static void test_empty_payload_and_oversized_payload(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    assert_int_equal(queue_publish_wait(q, NULL, 0), 0);
    uint8_t one = 1;
    assert_int_equal(q->ops->publish(q, &one, (size_t)64 * 1024 * 1024 + 1, NULL, NULL),
                     MD_ERR_INVALID);
    queue_msg m;
    assert_int_equal(q->ops->consume(q, &m, 1000), 0);
    assert_int_equal(m.seq, 1);
    assert_int_equal(m.len, 0);
    assert_int_equal(q->ops->ack(q, &m), 0);
    assert_int_equal(q->ops->ack(q, &m), 0); /* acking twice is harmless */
    close_wal(q);
}

/* ---- read-ahead (wal_reader) ---- */

/* Record n: size from a mix that crosses the 256 KiB read-ahead window at odd places, with two
 * records larger than the window; bytes derived from n so a record read from the wrong offset
 * shows. */
static size_t mixed_len(unsigned n)
{
    if (n == 37 || n == 38) return 300u * 1024 + n; /* larger than the read-ahead */
    return 100 + (n * 7919u) % 5000;
}

static uint8_t *mixed_payload(unsigned n)
{
    size_t len = mixed_len(n);
    uint8_t *b = malloc(len);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++) b[i] = (uint8_t)(n * 31u + i * 7u);
    return b;
}

static void publish_mixed(queue *q, unsigned from, unsigned to)
{
    for (unsigned n = from; n < to; n++) {
        uint8_t *b = mixed_payload(n);
        assert_int_equal(queue_publish_wait(q, b, mixed_len(n)), 0);
        free(b);
    }
}

static void expect_mixed(queue *q, unsigned from, unsigned to, int ack)
{
    for (unsigned n = from; n < to; n++) {
        queue_msg m;
        assert_int_equal(q->ops->consume(q, &m, 1000), 0);
        assert_int_equal(m.seq, n + 1);
        assert_int_equal(m.len, mixed_len(n));
        uint8_t *b = mixed_payload(n);
        assert_memory_equal(m.data, b, m.len);
        free(b);
        if (ack) assert_int_equal(q->ops->ack(q, &m), 0);
    }
}

/* The consumer reads ahead in 256 KiB windows: records that straddle a window, records larger
 * than one, and records appended after a read that stopped at the segment's durable end all
 * come back intact and in order, live and after a reopen. */
static void test_read_ahead_returns_every_record_intact(void **state)
{
    fixture *f = *state;
    queue *q = open_wal(f->dir, 0, 0);
    publish_mixed(q, 0, 150);
    expect_mixed(q, 0, 120, 1); /* the last window ended at the durable end, mid-way */
    publish_mixed(q, 150, 400);   /* ... and the segment grew after it */
    expect_mixed(q, 120, 200, 1);
    queue_msg m;
    close_wal(q); /* 200 acked; 200 left */

    q = open_wal(f->dir, 0, 0); /* recovery walks the segment with the same reader */
    expect_mixed(q, 200, 400, 1);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    close_wal(q);
}

/* A segment is created at its full size (so fdatasync has no file size to write), a fully
 * acknowledged one becomes the spare, and the next roll renames the spare into place; its old
 * records are never read as new ones. */
static void test_segments_are_preallocated_and_recycled(void **state)
{
    fixture *f = *state;
    char seg1[256], seg35[256], seg69[256], spare[256];
    seg_path(seg1, sizeof seg1, f->dir, 1);
    seg_path(seg35, sizeof seg35, f->dir, 35);
    seg_path(seg69, sizeof seg69, f->dir, 69);
    snprintf(spare, sizeof spare, "%s/recycled.seg", f->dir);

    queue *q = open_wal(f->dir, 4096, 0); /* 34 records of 124 bytes, then a roll */
    publish_n(q, 0, 1, 100);
    assert_int_equal(file_size(seg1), 4096);
    publish_n(q, 1, 39, 100); /* 1-34 in segment 1, 35-40 in segment 35 */
    assert_int_equal(file_size(seg35), 4096);
    ino_t recycled = inode_of(seg1);

    queue_msg m;
    for (unsigned i = 0; i < 34; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->ack(q, &m), 0);
    assert_int_equal(access(seg1, F_OK), -1);
    assert_int_equal(inode_of(spare), recycled);

    publish_n(q, 40, 40, 100); /* 35-68 fill segment 35; 69-80 go to the recycled file */
    assert_int_equal(access(spare, F_OK), -1);
    assert_int_equal(inode_of(seg69), recycled);
    for (unsigned i = 34; i < 80; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
    close_wal(q);
    assert_int_equal(file_size(seg69), 12 * (HDR + 100)); /* a clean stop cuts the rest */
}

/* In a forked child that will die without closing: publishes payloads from..to-1 durably. */
static void child_publish(queue *q, unsigned from, unsigned to)
{
    char buf[100];
    for (unsigned i = from; i < to; i++) {
        payload(buf, sizeof buf, i);
        if (queue_publish_wait(q, (const uint8_t *)buf, sizeof buf) != 0) _exit(11);
    }
}

static void expect_child_ok(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* After a crash the active segment ends in preallocated zeros or in the records of its earlier
 * life: recovery keeps every record, cuts the rest, and does not report a torn write; real
 * garbage still is reported (test_garbage_after_last_record_is_dropped). */
static void test_crash_leaves_an_unused_tail_that_recovery_cuts_quietly(void **state)
{
    fixture *f = *state;
    char seg[256];
    for (int life = 0; life < 2; life++) {
        uint64_t first = life == 0 ? 1 : 69;
        seg_path(seg, sizeof seg, f->dir, first);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) { /* the crashing process: publishes durably, never closes */
            char err[256];
            wal_config cfg = {.segment_bytes = 4096};
            queue *q = wal_open(f->dir, &cfg, err, sizeof err);
            if (!q) _exit(10);
            queue_msg m;
            if (life == 0) {
                child_publish(q, 0, 3);
            } else {
                /* consume and ack 1-34 (segment 1 is recycled), then write 35-70: 69 and 70
                 * overwrite the start of the recycled file, whose old records follow */
                for (unsigned i = 0; i < 34; i++)
                    if (q->ops->consume(q, &m, 1000) != 0) _exit(12);
                if (q->ops->ack(q, &m) != 0) _exit(13);
                child_publish(q, 34, 70);
            }
            _exit(0);
        }
        expect_child_ok(pid);
        assert_int_equal(file_size(seg), 4096);

        int torn = -1;
        queue *q = open_wal_logging(f->dir, 4096, "wal_torn_tail", &torn);
        assert_int_equal(torn, 0);
        queue_msg m;
        if (life == 0) {
            assert_int_equal(file_size(seg), 3 * (HDR + 100));
            for (unsigned i = 0; i < 3; i++) expect_msg(q, &m, i + 1, i, 100);
            /* 4-34 complete segment 1 for the second life (acked there, not here) */
            publish_n(q, 3, 31, 100);
            close_wal(q);
            continue;
        }
        assert_int_equal(file_size(seg), 2 * (HDR + 100));
        /* 1-34 were acked by the crashed process; 35-70 are all here, in order */
        for (unsigned i = 34; i < 70; i++) expect_msg(q, &m, i + 1, i, 100);
        assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT);
        close_wal(q);
    }
}

/* If the numbering restarts (consumer.pos lost with every segment), the spare's old records
 * carry the very seqs the new ones get: an old record right after the new ones would pass for
 * the next one after a crash. Such a spare is emptied before use. */
static void test_a_spare_from_before_a_restarted_numbering_is_emptied(void **state)
{
    fixture *f = *state;
    char seg35[256], pos[256], spare[256];
    seg_path(seg35, sizeof seg35, f->dir, 35);
    snprintf(pos, sizeof pos, "%s/consumer.pos", f->dir);
    snprintf(spare, sizeof spare, "%s/recycled.seg", f->dir);
    queue *q = open_wal(f->dir, 4096, 0);
    publish_n(q, 0, 40, 100); /* 1-34 in segment 1, 35-40 in segment 35 */
    queue_msg m;
    for (unsigned i = 0; i < 40; i++) expect_msg(q, &m, i + 1, i, 100);
    assert_int_equal(q->ops->ack(q, &m), 0);
    close_wal(q);
    assert_int_equal(access(spare, F_OK), 0); /* segment 1, records 1-34 of 124 bytes */
    assert_int_equal(unlink(pos), 0);
    assert_int_equal(unlink(seg35), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* numbering starts at 1 again; same record size; dies without closing */
        char err[256];
        wal_config cfg = {.segment_bytes = 4096};
        queue *c = wal_open(f->dir, &cfg, err, sizeof err);
        if (!c) _exit(10);
        child_publish(c, 100, 103);
        _exit(0);
    }
    expect_child_ok(pid);

    q = open_wal(f->dir, 4096, 0);
    for (unsigned i = 0; i < 3; i++) expect_msg(q, &m, i + 1, 100 + i, 100);
    assert_int_equal(q->ops->consume(q, &m, 0), MD_ERR_TIMEOUT); /* not old record 4 */
    close_wal(q);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_publish_consume_ack_roundtrip_in_order),
        T(test_concurrent_publishers_share_fsyncs),
        T(test_reopen_resumes_after_acked_position),
        T(test_torn_tail_keeps_complete_records),
        T(test_garbage_after_last_record_is_dropped),
        T(test_flipped_byte_drops_rest_of_segment),
        T(test_segment_after_a_cut_is_quarantined),
        T(test_segments_roll_and_are_deleted_after_ack),
        T(test_backpressure_returns_full),
        T(test_nack_moves_record_to_dead_letters),
        T(test_shutdown_flushes_and_drains),
        T(test_shutdown_wakes_blocked_consumer),
        T(test_empty_payload_and_oversized_payload),
        T(test_read_ahead_returns_every_record_intact),
        T(test_segments_are_preallocated_and_recycled),
        T(test_crash_leaves_an_unused_tail_that_recovery_cuts_quietly),
        T(test_a_spare_from_before_a_restarted_numbering_is_emptied),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
