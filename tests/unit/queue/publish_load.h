/* Shared by the broker backend tests: concurrent publishers and a callback counter.
 * Include after cmocka.h. */
#ifndef METERD_TEST_PUBLISH_LOAD_H
#define METERD_TEST_PUBLISH_LOAD_H

#include "core/error.h"
#include "queue/queue.h"

#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

typedef struct counter {
    atomic_int ok, failed, done;
} counter;

/* Publish callback: counts outcomes; a success must carry a "<ms>-<seq>" position. */
static inline void count_cb(void *arg, int status, const char *position)
{
    counter *k = arg;
    if (status == 0) {
        long long ms = 0, seq = -1;
        assert_non_null(position);
        assert_int_equal(sscanf(position, "%lld-%lld", &ms, &seq), 2);
        atomic_fetch_add(&k->ok, 1);
    } else {
        atomic_fetch_add(&k->failed, 1);
    }
    atomic_fetch_add(&k->done, 1);
}

/* Waits until n callbacks have fired, failing the test after timeout_ms. */
static inline void wait_done(counter *k, int n, int timeout_ms)
{
    for (int w = 0; atomic_load(&k->done) < n && w < timeout_ms; w += 10) usleep(10 * 1000);
    assert_int_equal(atomic_load(&k->done), n);
}

#define THREADS 4
#define PER_THREAD 250

typedef struct pub_arg {
    queue *q;
    counter *k;
    int t;
} pub_arg;

/* One publisher thread: PER_THREAD distinct payloads, waiting out backpressure. */
static inline void *pub_thread(void *arg)
{
    pub_arg *a = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        char buf[64];
        int n = snprintf(buf, sizeof buf, "batch-%d-%d", a->t, i);
        int rc;
        while ((rc = a->q->ops->publish(a->q, (uint8_t *)buf, (size_t)n, count_cb, a->k)) ==
               MD_ERR_FULL)
            usleep(1000);
        assert_int_equal(rc, 0);
    }
    return NULL;
}

#endif
