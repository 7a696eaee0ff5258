/* Tests for the Redis Streams queue backend (src/queue/redis*.c) against a real redis-server,
 * started once for this binary (servers.h). Each test uses its own stream. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "queue/queue.h"
#include "queue/redis.h"
#include "queue/publish_load.h"
#include "queue/servers.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static test_server rs;

static int group_setup(void **state)
{
    (void)state;
    return srv_redis_start(&rs);
}

static int group_teardown(void **state)
{
    (void)state;
    srv_redis_destroy(&rs);
    return 0;
}

static void test_config(config *c, const char *stream)
{
    config_defaults(c);
    snprintf(c->redis_host, sizeof c->redis_host, "127.0.0.1");
    c->redis_port = (unsigned)rs.port;
    snprintf(c->redis_stream, sizeof c->redis_stream, "%s", stream);
    snprintf(c->consumer_group, sizeof c->consumer_group, "g");
    snprintf(c->consumer_name, sizeof c->consumer_name, "w1");
}

static queue *open_q(const config *c, int roles)
{
    char err[512];
    queue *q = redis_queue_open(c, roles, err, sizeof err);
    if (!q) fprintf(stderr, "redis_queue_open: %s\n", err);
    assert_non_null(q);
    return q;
}

static redisContext *raw(void)
{
    redisContext *c = redisConnect("127.0.0.1", rs.port);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    return c;
}


static void test_redis_concurrent_publishes_get_ids_and_are_consumed(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s1");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    counter k = {0};
    pthread_t th[THREADS];
    pub_arg a[THREADS];
    for (int t = 0; t < THREADS; t++) {
        a[t] = (pub_arg){q, &k, t};
        pthread_create(&th[t], NULL, pub_thread, &a[t]);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    for (int w = 0; atomic_load(&k.done) < THREADS * PER_THREAD && w < 20000; w += 10)
        usleep(10 * 1000);
    assert_int_equal(atomic_load(&k.ok), THREADS * PER_THREAD);

    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.published, THREADS * PER_THREAD);
    assert_int_equal(st.depth, THREADS * PER_THREAD); /* lag: not read yet */
    assert_string_equal(st.group, "g");
    assert_int_equal(st.connected, 1);

    static char seen[THREADS][PER_THREAD];
    memset(seen, 0, sizeof seen);
    queue_msg m;
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        assert_int_equal(q->ops->consume(q, &m, 2000), 0);
        assert_string_equal(m.content_type, "");
        assert_int_equal(m.deliveries, 1);
        int t, j;
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*s", (int)m.len, (const char *)m.data);
        assert_int_equal(sscanf(tmp, "batch-%d-%d", &t, &j), 2);
        seen[t][j]++;
        if (i == 500) {
            assert_int_equal(q->ops->ack(q, &m), 0);
            usleep(300 * 1000);
            q->ops->stats(q, &st);
            assert_int_equal(st.depth, THREADS * PER_THREAD - 501);
        }
    }
    assert_int_equal(q->ops->ack(q, &m), 0);
    for (int t = 0; t < THREADS; t++)
        for (int j = 0; j < PER_THREAD; j++) assert_int_equal(seen[t][j], 1);
    assert_int_equal(q->ops->consume(q, &m, 200), MD_ERR_TIMEOUT);
    usleep(300 * 1000);
    q->ops->stats(q, &st);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.consumers, 1);
    assert_string_equal(st.last_delivered, m.position);
    q->ops->shutdown(q);
    assert_int_equal(q->ops->consume(q, &m, 100), MD_ERR_CLOSED);
    assert_int_equal(q->ops->publish(q, (const uint8_t *)"x", 1, count_cb, &k), MD_ERR_CLOSED);
    q->ops->close(q);
}

static void test_redis_unacked_entries_are_redelivered_after_reopen(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s2");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    for (int i = 0; i < 5; i++) assert_int_equal(queue_publish_wait(q, (const uint8_t *)"abc", 3), 0);
    queue_msg m;
    for (int i = 0; i < 5; i++) assert_int_equal(q->ops->consume(q, &m, 2000), 0);
    q->ops->shutdown(q);
    q->ops->close(q);
    q = open_q(&c, QUEUE_ROLE_CONSUME);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(q->ops->consume(q, &m, 2000), 0);
        assert_int_equal(m.deliveries, 2);
        assert_memory_equal(m.data, "abc", 3);
    }
    assert_int_equal(q->ops->ack(q, &m), 0);
    assert_int_equal(q->ops->consume(q, &m, 200), MD_ERR_TIMEOUT);
    q->ops->close(q);
}

static void test_redis_too_many_deliveries_go_to_dlq(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s3");
    c.max_deliveries = 2;
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"crashy", 6), 0);
    queue_msg m;
    assert_int_equal(q->ops->consume(q, &m, 2000), 0); /* delivery 1, never acked */
    q->ops->close(q);
    q = open_q(&c, QUEUE_ROLE_CONSUME);
    assert_int_equal(q->ops->consume(q, &m, 2000), 0); /* delivery 2 */
    q->ops->close(q);
    q = open_q(&c, QUEUE_ROLE_CONSUME);
    assert_int_equal(q->ops->consume(q, &m, 500), MD_ERR_TIMEOUT); /* 3rd: dead-lettered */
    queue_stats st;
    q->ops->stats(q, &st);
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(st.depth, 0);
    q->ops->close(q);
}

static void test_redis_nack_moves_entry_to_dlq_with_reason(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s4");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"poison", 6), 0);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"good", 4), 0);
    queue_msg m1, m2;
    assert_int_equal(q->ops->consume(q, &m1, 2000), 0);
    assert_int_equal(q->ops->consume(q, &m2, 2000), 0);
    char id[48];
    snprintf(id, sizeof id, "%s", m1.position);
    assert_int_equal(q->ops->nack(q, &m1, "cannot decode batch"), 0);
    assert_int_equal(q->ops->ack(q, &m2), 0);
    redisContext *r = raw();
    redisReply *x = redisCommand(r, "XRANGE s4:dlq - +");
    assert_int_equal(x->type, REDIS_REPLY_ARRAY);
    assert_int_equal(x->elements, 1);
    redisReply *f = x->element[0]->element[1];
    int reason = 0, body = 0, orig = 0;
    for (size_t i = 0; i + 1 < f->elements; i += 2) {
        if (!strcmp(f->element[i]->str, "reason"))
            reason = !strcmp(f->element[i + 1]->str, "cannot decode batch");
        if (!strcmp(f->element[i]->str, "batch")) body = !strcmp(f->element[i + 1]->str, "poison");
        if (!strcmp(f->element[i]->str, "id")) orig = !strcmp(f->element[i + 1]->str, id);
    }
    assert_true(reason && body && orig);
    freeReplyObject(x);
    redisFree(r);
    queue_stats st;
    usleep(300 * 1000);
    q->ops->stats(q, &st);
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(st.depth, 0);
    q->ops->shutdown(q);
    q->ops->close(q);
}

static long long xlen(const char *stream)
{
    redisContext *r = raw();
    redisReply *x = redisCommand(r, "XLEN %s", stream);
    assert_int_equal(x->type, REDIS_REPLY_INTEGER);
    long long n = x->integer;
    freeReplyObject(x);
    redisFree(r);
    return n;
}

/* Acked entries are deleted (the stream holds only the backlog), unless REDIS_DELETE_ACKED=0
 * because other consumer groups read the same stream. */
static void test_redis_acked_entries_are_deleted_unless_disabled(void **state)
{
    (void)state;
    const char *streams[2] = {"s6", "s7"};
    for (int keep = 0; keep < 2; keep++) {
        config c;
        test_config(&c, streams[keep]);
        c.redis_delete_acked = !keep;
        queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
        for (int i = 0; i < 4; i++)
            assert_int_equal(queue_publish_wait(q, (const uint8_t *)"abc", 3), 0);
        assert_int_equal(xlen(streams[keep]), 4);
        queue_msg m;
        for (int i = 0; i < 3; i++) assert_int_equal(q->ops->consume(q, &m, 2000), 0);
        assert_int_equal(q->ops->ack(q, &m), 0); /* the first three */
        assert_int_equal(xlen(streams[keep]), keep ? 4 : 1);
        q->ops->shutdown(q);
        q->ops->close(q);
    }
}

/* A worker killed in a loop re-reads its pending entries each time (Redis counts a delivery
 * for every one read ahead); only hand-outs count toward METERD_MAX_DELIVERIES, so the entry
 * it was working on is dead-lettered and the ones it never got to are not. */
static void test_redis_read_ahead_of_a_crashing_worker_does_not_count(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s8");
    c.max_deliveries = 3;
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH);
    for (int i = 0; i < 50; i++) {
        char b[8];
        int n = snprintf(b, sizeof b, "m%d", i);
        assert_int_equal(queue_publish_wait(q, (const uint8_t *)b, (size_t)n), 0);
    }
    q->ops->shutdown(q);
    q->ops->close(q);
    queue_msg m;
    for (int run = 0; run < 4; run++) { /* takes the first, reads ahead, "crashes" */
        q = open_q(&c, QUEUE_ROLE_CONSUME);
        int rc = q->ops->consume(q, &m, 2000);
        if (run < 3) {
            assert_int_equal(rc, 0);
            assert_memory_equal(m.data, "m0", 2);
            assert_int_equal(m.deliveries, run + 1);
        } else { /* m0 was handed out 3 times: dead-lettered; the next one comes instead */
            assert_int_equal(rc, 0);
            assert_memory_equal(m.data, "m1", 2);
        }
        q->ops->close(q);
    }
    q = open_q(&c, QUEUE_ROLE_CONSUME);
    int got = 0;
    while (q->ops->consume(q, &m, 300) == 0) got++;
    assert_int_equal(got, 49); /* m1..m49: read ahead 5 times each, m1 handed out twice */
    assert_int_equal(q->ops->ack(q, &m), 0);
    redisContext *r = raw();
    redisReply *x = redisCommand(r, "XLEN s8:dlq");
    assert_int_equal(x->integer, 1);
    freeReplyObject(x);
    x = redisCommand(r, "HLEN s8:attempts"); /* counts go with the ack */
    assert_int_equal(x->integer, 0);
    freeReplyObject(x);
    redisFree(r);
    q->ops->close(q);
}

static void test_redis_gateway_entries_are_delivered_as_json(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s5");
    queue *q = open_q(&c, QUEUE_ROLE_CONSUME);
    redisContext *r = raw();
    freeReplyObject(redisCommand(r, "XADD s5 * payload %s", "{\"request_id\":\"r1\"}"));
    freeReplyObject(redisCommand(r, "XADD s5 * site_id s1 device_id d1 power_reading 5.5"));
    redisFree(r);
    queue_msg m;
    assert_int_equal(q->ops->consume(q, &m, 2000), 0);
    assert_string_equal(m.content_type, "application/json");
    assert_int_equal(m.len, strlen("{\"request_id\":\"r1\"}"));
    assert_int_equal(q->ops->consume(q, &m, 2000), 0);
    assert_string_equal(m.content_type, "application/json");
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%.*s", (int)m.len, (const char *)m.data);
    assert_non_null(strstr(tmp, "\"device_id\":\"d1\""));
    assert_int_equal(q->ops->ack(q, &m), 0);
    q->ops->close(q);
}

#define RESTART_N 3000

typedef struct restart_ctx {
    char *confirmed;
    atomic_int ok, failed, done;
} restart_ctx;

typedef struct restart_pub {
    restart_ctx *ctx;
    int id;
} restart_pub;

static void restart_cb(void *arg, int status, const char *position)
{
    (void)position;
    restart_pub *p = arg;
    if (status == 0) {
        p->ctx->confirmed[p->id] = 1;
        atomic_fetch_add(&p->ctx->ok, 1);
    } else {
        atomic_fetch_add(&p->ctx->failed, 1);
    }
    atomic_fetch_add(&p->ctx->done, 1);
}

static void test_redis_server_crash_fails_publishes_and_recovers(void **state)
{
    (void)state;
    config c;
    test_config(&c, "s6");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    restart_ctx ctx = {.confirmed = calloc(RESTART_N, 1)};
    static restart_pub pubs[RESTART_N];
    int sent = 0;
    for (int i = 0; i < RESTART_N; i++) {
        pubs[i] = (restart_pub){&ctx, i};
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%d", i);
        if (q->ops->publish(q, (uint8_t *)buf, (size_t)n, restart_cb, &pubs[i]) == 0) sent++;
        if (i == RESTART_N / 3) srv_redis_kill(&rs); /* kill -9 with publishes in flight */
        if (i == 2 * RESTART_N / 3) assert_int_equal(srv_redis_start_again(&rs), 0);
        if (i % 100 == 0) usleep(10 * 1000);
    }
    for (int w = 0; atomic_load(&ctx.done) < sent && w < 30000; w += 10) usleep(10 * 1000);
    assert_int_equal(atomic_load(&ctx.done), sent);
    assert_true(atomic_load(&ctx.failed) > 0);
    int rc = -1;
    for (int w = 0; w < 100 && rc != 0; w++) {
        rc = queue_publish_wait(q, (const uint8_t *)"after", 5);
        if (rc) usleep(100 * 1000);
    }
    assert_int_equal(rc, 0);
    char *got = calloc(RESTART_N, 1);
    int after = 0;
    queue_msg m;
    /* Until every confirmed id came back, or 30 s: the consumer may sit in its backoff. */
    int want = atomic_load(&ctx.ok) + 1, have = 0;
    for (int64_t end = time_mono_us() + 30000000; have < want && time_mono_us() < end;) {
        rc = q->ops->consume(q, &m, 500);
        if (rc == MD_ERR_TIMEOUT) continue;
        if (rc == MD_ERR_IO) continue;
        assert_int_equal(rc, 0);
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%.*s", (int)m.len, (const char *)m.data);
        if (strcmp(tmp, "after") == 0) {
            have += !after;
            after = 1;
        } else {
            int id = atoi(tmp);
            have += ctx.confirmed[id] && !got[id];
            got[id] = 1;
        }
        q->ops->ack(q, &m);
    }
    int missing = 0;
    for (int i = 0; i < RESTART_N; i++)
        if (ctx.confirmed[i] && !got[i]) missing++;
    fprintf(stderr, "crash: sent %d ok %d failed %d missing %d\n", sent, atomic_load(&ctx.ok),
            atomic_load(&ctx.failed), missing);
    assert_int_equal(missing, 0);
    assert_true(after);
    free(got);
    free(ctx.confirmed);
    q->ops->shutdown(q);
    q->ops->close(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_concurrent_publishes_get_ids_and_are_consumed),
        cmocka_unit_test(test_redis_unacked_entries_are_redelivered_after_reopen),
        cmocka_unit_test(test_redis_too_many_deliveries_go_to_dlq),
        cmocka_unit_test(test_redis_nack_moves_entry_to_dlq_with_reason),
        cmocka_unit_test(test_redis_acked_entries_are_deleted_unless_disabled),
        cmocka_unit_test(test_redis_read_ahead_of_a_crashing_worker_does_not_count),
        cmocka_unit_test(test_redis_gateway_entries_are_delivered_as_json),
        cmocka_unit_test(test_redis_server_crash_fails_publishes_and_recovers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
