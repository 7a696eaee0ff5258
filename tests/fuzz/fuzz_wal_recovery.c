/* libFuzzer target: the input is the WAL's only segment file. Recovery must cut whatever is not
 * a valid record, never crash or leak, and the queue must keep working afterwards. */
#include "core/error.h"
#include "core/log.h"
#include "queue/queue.h"
#include "queue/wal.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Consumes (and acks) everything recovered; returns how many messages there were. */
static size_t drain(queue *q)
{
    size_t n = 0;
    queue_msg m;
    while (q->ops->consume(q, &m, 0) == 0) {
        volatile uint8_t sink = 0;
        for (size_t i = 0; i < m.len; i++) sink ^= m.data[i]; /* touch every byte for ASan */
        (void)sink;
        if (q->ops->ack(q, &m) != 0) abort();
        n++;
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    log_set_level(LOG_ERROR); /* torn tails are expected here; keep the fuzzer output readable */
    char dir[] = "/tmp/meterd-fuzz-wal-XXXXXX";
    if (!mkdtemp(dir)) return 0;
    char path[128];
    snprintf(path, sizeof path, "%s/00000000000000000001.wal", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        if (size && write(fd, data, size) != (ssize_t)size) abort();
        close(fd);
    }
    char err[256];
    wal_config cfg = {.segment_bytes = 4096, .max_backlog_bytes = 1 << 20};
    queue *q = wal_open(dir, &cfg, err, sizeof err);
    if (q) {
        drain(q);
        /* A publish after recovery must come back durable and be the next message. */
        if (queue_publish_wait(q, (const uint8_t *)"after", 5) != 0) abort();
        if (drain(q) != 1) abort();
        q->ops->shutdown(q);
        q->ops->close(q);
    }
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}
