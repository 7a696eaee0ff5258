/* Tests for the RabbitMQ queue backend (src/queue/amqp*.c) against a real rabbitmq-server,
 * started once for this binary (servers.h). Each test uses its own queue names. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "queue/amqp.h"
#include "queue/queue.h"
#include "queue/publish_load.h"
#include "queue/servers.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static test_server rmq;

static int group_setup(void **state)
{
    (void)state;
    return srv_rabbit_start(&rmq);
}

static int group_teardown(void **state)
{
    (void)state;
    srv_rabbit_destroy(&rmq);
    return 0;
}

static void test_config(config *c, const char *name)
{
    config_defaults(c);
    snprintf(c->rabbitmq_url, sizeof c->rabbitmq_url, "amqp://guest:guest@127.0.0.1:%d/", rmq.port);
    snprintf(c->rabbitmq_ingest_exchange, sizeof c->rabbitmq_ingest_exchange, "%s.ex", name);
    snprintf(c->rabbitmq_ingest_queue, sizeof c->rabbitmq_ingest_queue, "%s.q", name);
    snprintf(c->rabbitmq_dlq_queue, sizeof c->rabbitmq_dlq_queue, "%s.dlq", name);
    snprintf(c->rabbitmq_worker_exchange, sizeof c->rabbitmq_worker_exchange, "%s.events", name);
    c->rabbitmq_prefetch = 50;
}

static queue *open_q(const config *c, int roles)
{
    char err[512];
    queue *q = amqp_queue_open(c, roles, err, sizeof err);
    if (!q) fprintf(stderr, "amqp_queue_open: %s\n", err);
    assert_non_null(q);
    return q;
}

/* A plain client connection, like a gateway or an operator's tool would use. */
static amqp_connection_state_t raw_conn(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    assert_int_equal(amqp_socket_open(s, "127.0.0.1", rmq.port), 0);
    assert_int_equal(amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                         .reply_type,
                     AMQP_RESPONSE_NORMAL);
    amqp_channel_open(c, 1);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    return c;
}

static void raw_close(amqp_connection_state_t c)
{
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}


static void test_amqp_concurrent_publishes_are_confirmed_and_consumed(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t1");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    counter k = {0};
    pthread_t th[THREADS];
    pub_arg a[THREADS];
    for (int t = 0; t < THREADS; t++) {
        a[t] = (pub_arg){q, &k, t};
        pthread_create(&th[t], NULL, pub_thread, &a[t]);
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    wait_done(&k, THREADS * PER_THREAD, 30000);
    assert_int_equal(atomic_load(&k.ok), THREADS * PER_THREAD);

    queue_stats st;
    assert_int_equal(q->ops->stats(q, &st), 0);
    assert_int_equal(st.published, THREADS * PER_THREAD);
    assert_int_equal(st.connected, 1);
    assert_string_equal(st.group, "t1.q");

    static char seen[THREADS][PER_THREAD];
    memset(seen, 0, sizeof seen);
    queue_msg m;
    for (int i = 0; i < THREADS * PER_THREAD; i++) {
        assert_int_equal(q->ops->consume(q, &m, 5000), 0);
        assert_string_equal(m.content_type, "");
        assert_int_equal(m.deliveries, 1);
        int t, j;
        char tmp[64];
        snprintf(tmp, sizeof tmp, "%.*s", (int)m.len, (const char *)m.data);
        assert_int_equal(sscanf(tmp, "batch-%d-%d", &t, &j), 2);
        seen[t][j]++;
        if (i % 37 == 0 || i == THREADS * PER_THREAD - 1) assert_int_equal(q->ops->ack(q, &m), 0);
    }
    for (int t = 0; t < THREADS; t++)
        for (int j = 0; j < PER_THREAD; j++) assert_int_equal(seen[t][j], 1);
    assert_int_equal(q->ops->consume(q, &m, 300), MD_ERR_TIMEOUT);
    usleep(400 * 1000); /* stats are cached for 250 ms */
    assert_int_equal(q->ops->stats(q, &st), 0);
    assert_int_equal(st.depth, 0);
    assert_int_equal(st.consumers, 1);
    q->ops->shutdown(q);
    assert_int_equal(q->ops->consume(q, &m, 1000), MD_ERR_CLOSED);
    assert_int_equal(q->ops->publish(q, (const uint8_t *)"x", 1, count_cb, &k), MD_ERR_CLOSED);
    q->ops->close(q);
}

static void test_amqp_unacked_messages_are_redelivered_after_reopen(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t2");
    queue *p = open_q(&c, QUEUE_ROLE_PUBLISH);
    for (int i = 0; i < 5; i++) assert_int_equal(queue_publish_wait(p, (const uint8_t *)"abc", 3), 0);
    queue *q = open_q(&c, QUEUE_ROLE_CONSUME);
    queue_msg m;
    for (int i = 0; i < 5; i++) assert_int_equal(q->ops->consume(q, &m, 5000), 0);
    queue_stats st;
    usleep(300 * 1000);
    q->ops->stats(q, &st);
    assert_int_equal(st.depth, 5); /* 0 ready + 5 unacked here */
    q->ops->shutdown(q);
    q->ops->close(q); /* no ack: the broker puts them back */
    q = open_q(&c, QUEUE_ROLE_CONSUME);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(q->ops->consume(q, &m, 5000), 0);
        assert_int_equal(m.deliveries, 2);
        assert_memory_equal(m.data, "abc", 3);
    }
    assert_int_equal(q->ops->ack(q, &m), 0);
    assert_int_equal(q->ops->consume(q, &m, 300), MD_ERR_TIMEOUT);
    q->ops->close(q);
    p->ops->shutdown(p);
    p->ops->close(p);
}

static void test_amqp_nack_moves_message_to_dlq_with_reason(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t3");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"poison", 6), 0);
    assert_int_equal(queue_publish_wait(q, (const uint8_t *)"good", 4), 0);
    queue_msg m1, m2;
    assert_int_equal(q->ops->consume(q, &m1, 5000), 0);
    assert_int_equal(q->ops->consume(q, &m2, 5000), 0);
    assert_int_equal(q->ops->nack(q, &m1, "cannot decode batch: truncated"), 0);
    assert_int_equal(q->ops->ack(q, &m2), 0);

    amqp_connection_state_t c2 = raw_conn();
    amqp_rpc_reply_t r = amqp_basic_get(c2, 1, amqp_cstring_bytes("t3.dlq"), 0);
    assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t msg;
    assert_int_equal(amqp_read_message(c2, 1, &msg, 0).reply_type, AMQP_RESPONSE_NORMAL);
    assert_int_equal(msg.body.len, 6);
    assert_memory_equal(msg.body.bytes, "poison", 6);
    assert_true(msg.properties._flags & AMQP_BASIC_HEADERS_FLAG);
    int found = 0;
    for (int i = 0; i < msg.properties.headers.num_entries; i++) {
        amqp_table_entry_t *e = &msg.properties.headers.entries[i];
        if (e->key.len == 15 && memcmp(e->key.bytes, "x-meterd-reason", 15) == 0) {
            found = 1;
            assert_int_equal(e->value.value.bytes.len, strlen("cannot decode batch: truncated"));
            assert_memory_equal(e->value.value.bytes.bytes, "cannot decode batch: truncated",
                                e->value.value.bytes.len);
        }
    }
    assert_true(found);
    amqp_destroy_message(&msg);
    raw_close(c2); /* unacked get: back in the DLQ, so stats count it */
    queue_stats st;
    for (int w = 0; w < 50; w++) {
        q->ops->stats(q, &st);
        if (st.dead_letters == 1 && st.depth == 0) break;
        usleep(100 * 1000);
    }
    assert_int_equal(st.dead_letters, 1);
    assert_int_equal(st.depth, 0);
    q->ops->shutdown(q);
    q->ops->close(q);
}

static void test_amqp_gateway_json_is_delivered_as_json(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t4");
    queue *q = open_q(&c, QUEUE_ROLE_CONSUME);
    amqp_connection_state_t g = raw_conn();
    const char *env = "{\"request_id\":\"r1\",\"payload\":{}}";
    amqp_basic_properties_t p = {._flags = 0};
    assert_int_equal(amqp_basic_publish(g, 1, amqp_cstring_bytes("t4.ex"),
                                        amqp_cstring_bytes(c.rabbitmq_ingest_routing_key), 0, 0,
                                        &p, amqp_cstring_bytes(env)),
                     0);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json; charset=utf-8");
    assert_int_equal(amqp_basic_publish(g, 1, amqp_cstring_bytes("t4.ex"),
                                        amqp_cstring_bytes(c.rabbitmq_ingest_routing_key), 0, 0,
                                        &p, amqp_cstring_bytes("[]")),
                     0);
    queue_msg m;
    assert_int_equal(q->ops->consume(q, &m, 5000), 0);
    assert_string_equal(m.content_type, "application/json");
    assert_int_equal(m.len, strlen(env));
    assert_int_equal(q->ops->consume(q, &m, 5000), 0);
    assert_string_equal(m.content_type, "application/json");
    assert_int_equal(q->ops->ack(q, &m), 0);
    raw_close(g);
    q->ops->close(q);
}

static void test_amqp_events_reach_the_worker_exchange(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t5");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH);
    amqp_connection_state_t s = raw_conn();
    amqp_queue_declare(s, 1, amqp_cstring_bytes("t5.sub"), 0, 0, 0, 1, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_queue_bind(s, 1, amqp_cstring_bytes("t5.sub"), amqp_cstring_bytes("t5.events"),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
    const char *ev = "{\"client_id\":\"c\",\"metric_value\":1.5}";
    assert_int_equal(amqp_queue_publish_event(q, "reading.valid", ev, strlen(ev)), 0);
    int got = 0;
    for (int w = 0; w < 50 && !got; w++) {
        amqp_rpc_reply_t r = amqp_basic_get(s, 1, amqp_cstring_bytes("t5.sub"), 1);
        assert_int_equal(r.reply_type, AMQP_RESPONSE_NORMAL);
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            amqp_message_t m;
            assert_int_equal(amqp_read_message(s, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
            assert_int_equal(m.body.len, strlen(ev));
            amqp_destroy_message(&m);
            got = 1;
        } else {
            usleep(100 * 1000);
        }
    }
    assert_true(got);
    /* One commit of a large group: more events than the batches' window of confirms
     * (AMQP_MAX_INFLIGHT), all taken, and all on the exchange once the queue has shut down. */
    enum { N = 25000 };
    for (int i = 0; i < N; i++)
        assert_int_equal(amqp_queue_publish_event(q, "reading.valid", ev, strlen(ev)), 0);
    q->ops->shutdown(q);
    uint32_t count = 0;
    for (int w = 0; w < 50 && count < N; w++) { /* routing into the queue is asynchronous */
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(s, 1, amqp_cstring_bytes("t5.sub"), 1, 0, 0, 1, amqp_empty_table);
        assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
        count = ok->message_count;
        if (count < N) usleep(100 * 1000);
    }
    assert_int_equal(count, N);
    raw_close(s);
    q->ops->close(q);
}

/* Messages waiting in the named queue (routing into it is asynchronous: waits up to 5 s). */
static uint32_t queue_count(amqp_connection_state_t s, const char *name, uint32_t want)
{
    uint32_t count = 0;
    for (int w = 0; w < 50; w++) {
        amqp_queue_declare_ok_t *ok =
            amqp_queue_declare(s, 1, amqp_cstring_bytes(name), 1, 0, 0, 1, amqp_empty_table);
        assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
        count = ok->message_count;
        if (count >= want) break;
        usleep(100 * 1000);
    }
    return count;
}

/* A commit's events as one message of lines: on <worker exchange>.batched (for meterd api),
 * not on the per-reading exchange, whose consumers expect one JSON event per message. */
static void test_amqp_event_lines_go_to_the_batched_exchange_only(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t7");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH); /* declares t7.events and t7.events.batched */
    amqp_connection_state_t s = raw_conn();
    const char *subs[][2] = {{"t7.all", "t7.events"}, {"t7.lines", "t7.events.batched"}};
    for (int i = 0; i < 2; i++) {
        amqp_queue_declare(s, 1, amqp_cstring_bytes(subs[i][0]), 0, 0, 0, 1, amqp_empty_table);
        assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
        amqp_queue_bind(s, 1, amqp_cstring_bytes(subs[i][0]), amqp_cstring_bytes(subs[i][1]),
                        amqp_cstring_bytes("#"), amqp_empty_table);
        assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
    }
    const char *lines = "{\"device\":\"a\"}\n{\"device\":\"b\"}";
    assert_int_equal(amqp_queue_publish_event_lines(q, lines, strlen(lines)), 0);
    const char *ev = "{\"device\":\"c\"}";
    assert_int_equal(amqp_queue_publish_event(q, "reading.valid", ev, strlen(ev)), 0);
    q->ops->shutdown(q); /* sends what is pending */
    assert_int_equal(queue_count(s, "t7.lines", 1), 1);
    assert_int_equal(queue_count(s, "t7.all", 1), 1); /* the per-reading event only */
    amqp_rpc_reply_t r = amqp_basic_get(s, 1, amqp_cstring_bytes("t7.lines"), 1);
    assert_int_equal(r.reply.id, AMQP_BASIC_GET_OK_METHOD);
    amqp_message_t m;
    assert_int_equal(amqp_read_message(s, 1, &m, 0).reply_type, AMQP_RESPONSE_NORMAL);
    assert_int_equal(m.body.len, strlen(lines));
    assert_memory_equal(m.body.bytes, lines, strlen(lines));
    assert_int_equal(m.properties.content_type.len, strlen("application/x-ndjson"));
    assert_memory_equal(m.properties.content_type.bytes, "application/x-ndjson",
                        strlen("application/x-ndjson"));
    amqp_destroy_message(&m);
    raw_close(s);
    q->ops->close(q);
}

static void test_amqp_queue_with_other_arguments_is_a_clear_error(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t6");
    amqp_connection_state_t s = raw_conn();
    amqp_queue_declare(s, 1, amqp_cstring_bytes("t6.q"), 0, 1, 0, 0, amqp_empty_table);
    assert_int_equal(amqp_get_rpc_reply(s).reply_type, AMQP_RESPONSE_NORMAL);
    raw_close(s);
    char err[512];
    queue *q = amqp_queue_open(&c, QUEUE_ROLE_PUBLISH, err, sizeof err);
    assert_null(q);
    assert_non_null(strstr(err, "queue 't6.q' exists on the broker with different settings"));
    assert_non_null(strstr(err, "x-dead-letter-exchange"));
}

/* Confirmed ids, recorded by the callback. */
typedef struct restart_ctx {
    pthread_mutex_t mu;
    char *confirmed; /* [n] */
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

#define RESTART_N 4000

static void test_amqp_broker_restart_fails_publishes_and_recovers(void **state)
{
    (void)state;
    config c;
    test_config(&c, "t7");
    queue *q = open_q(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME);
    restart_ctx ctx = {.confirmed = calloc(RESTART_N, 1)};
    static restart_pub pubs[RESTART_N];
    int sent = 0, rejected = 0, stopped = 0;
    for (int i = 0; i < RESTART_N; i++) {
        pubs[i] = (restart_pub){&ctx, i};
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%d", i);
        int rc = q->ops->publish(q, (uint8_t *)buf, (size_t)n, restart_cb, &pubs[i]);
        if (rc == 0) sent++;
        else rejected++;
        if (i == RESTART_N / 4) {
            srv_rabbit_stop(&rmq); /* while publishes are in flight */
            stopped = 1;
        }
        if (stopped && i == RESTART_N / 2) assert_int_equal(srv_rabbit_start_again(&rmq), 0);
        if (i % 100 == 0) usleep(20 * 1000);
    }
    for (int w = 0; atomic_load(&ctx.done) < sent && w < 60000; w += 10) usleep(10 * 1000);
    assert_int_equal(atomic_load(&ctx.done), sent);
    assert_true(atomic_load(&ctx.failed) > 0); /* the outage was noticed */
    /* Recovers: a publish after the broker is back succeeds (within the reconnect backoff). */
    int rc = -1;
    for (int w = 0; w < 100 && rc != 0; w++) {
        rc = queue_publish_wait(q, (const uint8_t *)"after", 5);
        if (rc) usleep(100 * 1000);
    }
    assert_int_equal(rc, 0);
    /* Every confirmed message is in the queue (the consumer reconnects by itself). */
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
    fprintf(stderr, "restart: sent %d rejected %d ok %d failed %d missing %d\n", sent, rejected,
            atomic_load(&ctx.ok), atomic_load(&ctx.failed), missing);
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
        cmocka_unit_test(test_amqp_concurrent_publishes_are_confirmed_and_consumed),
        cmocka_unit_test(test_amqp_unacked_messages_are_redelivered_after_reopen),
        cmocka_unit_test(test_amqp_nack_moves_message_to_dlq_with_reason),
        cmocka_unit_test(test_amqp_gateway_json_is_delivered_as_json),
        cmocka_unit_test(test_amqp_events_reach_the_worker_exchange),
        cmocka_unit_test(test_amqp_event_lines_go_to_the_batched_exchange_only),
        cmocka_unit_test(test_amqp_queue_with_other_arguments_is_a_clear_error),
        cmocka_unit_test(test_amqp_broker_restart_fails_publishes_and_recovers),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
