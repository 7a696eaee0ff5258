/* The backlog budget for broker backends (queue.c): depth × mean publish size, plus what was
 * published since the last sample, against --max-backlog-bytes; a fake backend reports depth. */
#include "core/error.h"
#include "queue/queue.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct fake {
    queue base;
    _Atomic uint64_t depth; /* what the "broker" holds */
    int connected;
    int closed;
} fake;

static int fake_publish(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg)
{
    (void)data;
    (void)len;
    ((fake *)q)->depth++;
    cb(arg, 0, "1-0");
    return 0;
}

static int fake_stats(queue *q, queue_stats *st)
{
    *st = (queue_stats){.depth = ((fake *)q)->depth, .connected = ((fake *)q)->connected};
    return 0;
}

static void fake_close(queue *q) { ((fake *)q)->closed = 1; }

static const queue_ops FAKE = {.name = "fake", .publish = fake_publish, .stats = fake_stats,
                               .close = fake_close};

static void sampled(void) { usleep(4 * QUEUE_BUDGET_SAMPLE_MS * 1000); }

static void test_publishes_stop_at_the_budget_and_resume_when_drained(void **state)
{
    (void)state;
    static uint8_t msg[1000];
    fake f = {.base = {.ops = &FAKE}, .connected = 1};
    queue *q = &f.base;
    assert_int_equal(queue_budget_start(q, 10 * 1000), 0);
    for (int i = 0; i < 10; i++) assert_int_equal(queue_publish_wait(q, msg, sizeof msg), 0);
    /* before any sample: counted as published-since */
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), MD_ERR_FULL);
    sampled(); /* now from the backend: 10 × 1000 bytes */
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), MD_ERR_FULL);
    queue_stats st;
    queue_get_stats(q, &st);
    assert_int_equal(st.depth_bytes, 10 * 1000);
    f.depth = 4; /* a worker took 6 */
    sampled();
    for (int i = 0; i < 6; i++) assert_int_equal(queue_publish_wait(q, msg, sizeof msg), 0);
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), MD_ERR_FULL);
    /* one message larger than the whole budget never fits */
    f.depth = 0;
    sampled();
    static uint8_t big[20 * 1000];
    assert_int_equal(queue_publish_wait(q, big, sizeof big), MD_ERR_FULL);
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), 0);
    queue_close(q);
    assert_int_equal(f.closed, 1);
    assert_null(q->budget);
}

static void test_a_disconnected_backend_keeps_the_last_sample(void **state)
{
    (void)state;
    static uint8_t msg[1000];
    fake f = {.base = {.ops = &FAKE}, .connected = 1};
    queue *q = &f.base;
    assert_int_equal(queue_budget_start(q, 5 * 1000), 0);
    for (int i = 0; i < 5; i++) assert_int_equal(queue_publish_wait(q, msg, sizeof msg), 0);
    sampled();
    f.connected = 0;
    f.depth = 0; /* not believed: the backend cannot be asked */
    sampled();
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), MD_ERR_FULL);
    f.connected = 1;
    sampled();
    assert_int_equal(queue_publish_wait(q, msg, sizeof msg), 0);
    queue_close(q);
}

static void test_without_a_budget_publish_is_the_backends(void **state)
{
    (void)state;
    static uint8_t big[1 << 20];
    fake f = {.base = {.ops = &FAKE}, .connected = 1};
    for (int i = 0; i < 3; i++) assert_int_equal(queue_publish_wait(&f.base, big, sizeof big), 0);
    queue_stats st;
    queue_get_stats(&f.base, &st);
    assert_int_equal(st.depth, 3);
    assert_int_equal(st.depth_bytes, 0);
    queue_close(&f.base);
    assert_int_equal(f.closed, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publishes_stop_at_the_budget_and_resume_when_drained),
        cmocka_unit_test(test_a_disconnected_backend_keeps_the_last_sample),
        cmocka_unit_test(test_without_a_budget_publish_is_the_backends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
