/* Baseline for the ack latency: what this machine's disk gives one writer that makes each small
 * record durable before going on, as meterd's queue does before every 202 (decision 26: a
 * preallocated segment whose blocks were written before, pwrite at the end, fdatasync).
 * Nothing else: no server, no other thread. A request that meterd acknowledges waits for at
 * least one such sync, so this loop's tail is a floor under the server's.
 *
 * Usage: fsync_baseline FILE SECONDS RATE [RECORD_BYTES]
 *   FILE: a path that does not exist yet, on the disk to measure; it is removed at the end.
 *   RATE: syncs per second to aim at (the rate meterd's queue synced at); 0: back to back.
 * Prints one JSON object: count, rate, p50/p99/p99.9/max in ms, how many took over 2 ms, and
 * over2ms_share_pct: the share of the run's time that lay more than 2 ms before the end of a
 * sync (the sum of max(0, d - 2 ms)). A request arriving then waits over 2 ms for this disk alone,
 * so with arrivals spread evenly, a server that syncs before it answers cannot have a p99 under
 * 2 ms while this share is over 1 %. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_BYTES (64L << 20)

static const char *path;
static void remove_file(void)
{
    unlink(path);
}

static long long mono_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000LL + t.tv_nsec / 1000;
}

static int cmp(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static double ms_at(const long long *v, long n, double q)
{
    long i = (long)(q * (double)n);
    return (double)v[i < n ? i : n - 1] / 1000.0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s FILE SECONDS RATE [RECORD_BYTES]\n", argv[0]);
        return 2;
    }
    double secs = atof(argv[2]), rate = atof(argv[3]);
    long rec = argc > 4 ? atol(argv[4]) : 200;
    if (secs <= 0 || rate < 0 || rec <= 0 || rec > 65536) {
        fprintf(stderr, "fsync_baseline: bad arguments\n");
        return 2;
    }
    /* a file of its own: it is overwritten and removed, so an existing one is refused */
    int fd = open(argv[1], O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        fprintf(stderr, "fsync_baseline: %s: %s%s\n", argv[1], strerror(errno),
                errno == EEXIST ? " (give a path that does not exist)" : "");
        return 1;
    }
    path = argv[1];
    atexit(remove_file);
    /* written before, as a recycled segment is: syncs then write no metadata */
    static char block[1 << 20], buf[65536];
    memset(buf, 'r', sizeof buf);
    for (long off = 0; off < FILE_BYTES; off += sizeof block)
        if (pwrite(fd, block, sizeof block, off) != (ssize_t)sizeof block) {
            perror("pwrite");
            return 1;
        }
    if (fsync(fd) != 0) {
        perror("fsync");
        return 1;
    }
    long cap = (long)(secs * (rate > 0 ? rate : 20000)) + 16, n = 0, slow = 0;
    long long over2 = 0; /* µs more than 2 ms before the end of a sync */
    long long *lat = malloc((size_t)cap * sizeof *lat);
    if (!lat) return 1;
    long long t0 = mono_us(), end = t0 + (long long)(secs * 1e6), off = 0;
    double next = (double)t0, gap = rate > 0 ? 1e6 / rate : 0;
    while (n < cap) {
        long long now = mono_us();
        if (now >= end) break;
        if (gap > 0 && next > (double)now) {
            long long d = (long long)(next - (double)now);
            struct timespec ts = {d / 1000000, (d % 1000000) * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        next += gap;
        long long a = mono_us();
        if (pwrite(fd, buf, (size_t)rec, off) != rec || fdatasync(fd) != 0) {
            perror("pwrite/fdatasync");
            return 1;
        }
        long long d = mono_us() - a;
        lat[n++] = d;
        slow += d > 2000;
        over2 += d > 2000 ? d - 2000 : 0;
        off += rec;
        if (off + rec > FILE_BYTES) off = 0;
    }
    double el = (double)(mono_us() - t0) / 1e6;
    close(fd);
    if (!n) return 1;
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("{\"count\": %ld, \"per_s\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"p99_9_ms\": %.3f, \"max_ms\": %.3f, \"over_2ms\": %ld, \"over2ms_share_pct\": %.3f}\n",
           n, (double)n / el, ms_at(lat, n, .5), ms_at(lat, n, .99), ms_at(lat, n, .999),
           (double)lat[n - 1] / 1000.0, slow, (double)over2 / (el * 1e6) * 100.0);
    free(lat);
    return 0;
}
