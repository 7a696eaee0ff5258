/* RabbitMQ connections and topology for the amqp backend.
 *
 * Topology (declared at every open; idempotent as long as the arguments match):
 *   exchange  <RABBITMQ_INGEST_EXCHANGE>      topic, durable
 *   queue     <RABBITMQ_INGEST_QUEUE>         durable, arguments exactly:
 *               x-dead-letter-exchange    = "<RABBITMQ_INGEST_EXCHANGE>.dlx"
 *               x-dead-letter-routing-key = "<RABBITMQ_DLQ_QUEUE>"
 *             bound to the ingest exchange with <RABBITMQ_INGEST_ROUTING_KEY>
 *   exchange  <RABBITMQ_INGEST_EXCHANGE>.dlx  direct, durable
 *   queue     <RABBITMQ_DLQ_QUEUE>            durable, no arguments; bound to the DLX with its own name
 *   exchange  <RABBITMQ_WORKER_EXCHANGE>      topic, durable (per-reading events)
 *   exchange  <RABBITMQ_WORKER_EXCHANGE>.batched  fanout, durable (the same events, one message
 *             per commit with one JSON per line: what `meterd api` subscribes to)
 * A queue or exchange that already exists with other arguments or type makes the broker answer
 * 406 PRECONDITION_FAILED; open then fails with a message naming the object and what we asked for. */
#include "queue/amqp_internal.h"

#include "core/error.h"

#include <amqp_tcp_socket.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#define CONNECT_TIMEOUT_S 5

const char *amqp_reply_text(amqp_rpc_reply_t r, char *buf, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, len, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, len, "missing RPC reply");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, len, "channel closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, len, "connection closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            snprintf(buf, len, "unexpected broker method 0x%08X", r.reply.id);
        }
        break;
    }
    return buf;
}

int amqp_reply_is_precondition(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION) return 0;
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ((amqp_channel_close_t *)r.reply.decoded)->reply_code == 406;
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        return ((amqp_connection_close_t *)r.reply.decoded)->reply_code == 406;
    return 0;
}

void amqp_conn_close(amqp_connection_state_t c)
{
    if (!c) return;
    /* Best effort: the socket may already be gone. */
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

amqp_connection_state_t amqp_conn_open(amqp_q *q, char *err, size_t errlen)
{
    amqp_connection_state_t c = amqp_new_connection();
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};
    if (!s) {
        snprintf(err, errlen, "cannot create a socket");
        amqp_destroy_connection(c);
        return NULL;
    }
    int rc = amqp_socket_open_noblock(s, q->host, q->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot connect to RabbitMQ at %s:%d: %s", q->host, q->port,
                 amqp_error_string2(rc));
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_set_handshake_timeout(c, &tv);
    amqp_set_rpc_timeout(c, &tv);
    char why[300];
    /* heartbeat 0: loss is noticed by the socket, plus AMQP_CONFIRM_TIMEOUT_MS for confirms. */
    amqp_rpc_reply_t r = amqp_login(c, q->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, q->user,
                                    q->pass);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "RabbitMQ login at %s:%d as %s failed: %s", q->host, q->port,
                 q->user, amqp_reply_text(r, why, sizeof why));
        amqp_destroy_connection(c);
        return NULL;
    }
    amqp_channel_open(c, AMQP_CH);
    r = amqp_get_rpc_reply(c);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "cannot open a RabbitMQ channel: %s",
                 amqp_reply_text(r, why, sizeof why));
        amqp_conn_close(c);
        return NULL;
    }
    return c;
}

/* Runs after one declare RPC; explains a failure. */
static int check(amqp_connection_state_t c, const char *what, const char *asked, char *err,
                 size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    if (r.reply_type == AMQP_RESPONSE_NORMAL) return 0;
    char why[300];
    amqp_reply_text(r, why, sizeof why);
    if (amqp_reply_is_precondition(r))
        snprintf(err, errlen, "%s exists on the broker with different settings (%s); meterd "
                 "declares it as %s: delete it or make the settings match", what, why, asked);
    else
        snprintf(err, errlen, "declaring %s failed: %s", what, why);
    return MD_ERR_IO;
}

int amqp_declare_topology(amqp_q *q, amqp_connection_state_t c, char *err, size_t errlen)
{
    const config *g = &q->cfg;
    char what[400], asked[700];
    amqp_table_entry_t qa[2];
    qa[0].key = amqp_cstring_bytes("x-dead-letter-exchange");
    qa[0].value.kind = AMQP_FIELD_KIND_UTF8;
    qa[0].value.value.bytes = amqp_cstring_bytes(q->dlx);
    qa[1].key = amqp_cstring_bytes("x-dead-letter-routing-key");
    qa[1].value.kind = AMQP_FIELD_KIND_UTF8;
    qa[1].value.value.bytes = amqp_cstring_bytes(g->rabbitmq_dlq_queue);
    amqp_table_t qargs = {.num_entries = 2, .entries = qa};

    snprintf(what, sizeof what, "exchange '%s'", g->rabbitmq_ingest_exchange);
    amqp_exchange_declare(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_ingest_exchange),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    if (check(c, what, "a durable topic exchange", err, errlen)) return MD_ERR_IO;

    snprintf(what, sizeof what, "exchange '%s'", q->dlx);
    amqp_exchange_declare(c, AMQP_CH, amqp_cstring_bytes(q->dlx), amqp_cstring_bytes("direct"), 0,
                          1, 0, 0, amqp_empty_table);
    if (check(c, what, "a durable direct exchange", err, errlen)) return MD_ERR_IO;

    snprintf(what, sizeof what, "queue '%s'", g->rabbitmq_dlq_queue);
    amqp_queue_declare(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_dlq_queue), 0, 1, 0, 0,
                       amqp_empty_table);
    if (check(c, what, "durable, without arguments", err, errlen)) return MD_ERR_IO;
    amqp_queue_bind(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_dlq_queue),
                    amqp_cstring_bytes(q->dlx), amqp_cstring_bytes(g->rabbitmq_dlq_queue),
                    amqp_empty_table);
    if (check(c, "the dead-letter binding", "", err, errlen)) return MD_ERR_IO;

    snprintf(what, sizeof what, "queue '%s'", g->rabbitmq_ingest_queue);
    snprintf(asked, sizeof asked,
             "durable with x-dead-letter-exchange=\"%s\", x-dead-letter-routing-key=\"%s\"",
             q->dlx, g->rabbitmq_dlq_queue);
    amqp_queue_declare(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_ingest_queue), 0, 1, 0, 0,
                       qargs);
    if (check(c, what, asked, err, errlen)) return MD_ERR_IO;
    amqp_queue_bind(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_ingest_queue),
                    amqp_cstring_bytes(g->rabbitmq_ingest_exchange),
                    amqp_cstring_bytes(g->rabbitmq_ingest_routing_key), amqp_empty_table);
    if (check(c, "the ingest binding", "", err, errlen)) return MD_ERR_IO;

    snprintf(what, sizeof what, "exchange '%s'", g->rabbitmq_worker_exchange);
    amqp_exchange_declare(c, AMQP_CH, amqp_cstring_bytes(g->rabbitmq_worker_exchange),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    if (check(c, what, "a durable topic exchange", err, errlen)) return MD_ERR_IO;
    char lines_ex[300];
    amqp_lines_exchange_name(g, lines_ex, sizeof lines_ex);
    return amqp_declare_lines_exchange(c, lines_ex, err, errlen);
}

int amqp_declare_lines_exchange(amqp_connection_state_t c, const char *name, char *err,
                                size_t errlen)
{
    char what[400];
    snprintf(what, sizeof what, "exchange '%s'", name);
    amqp_exchange_declare(c, AMQP_CH, amqp_cstring_bytes(name), amqp_cstring_bytes("fanout"), 0,
                          1, 0, 0, amqp_empty_table);
    return check(c, what, "a durable fanout exchange", err, errlen) ? MD_ERR_IO : 0;
}
