/* RabbitMQ queue backend (librabbitmq): durable queue, persistent messages, publisher
 * confirms, manual cumulative acks, dead letters with a reason, reconnect with backoff. */
#ifndef METERD_QUEUE_AMQP_H
#define METERD_QUEUE_AMQP_H

#include "core/config.h"
#include "queue/queue.h"

/* Connects, declares the topology (idempotent) and starts the sides in roles
 * (QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME). NULL on error, message in err. */
queue *amqp_queue_open(const config *c, int roles, char *err, size_t errlen);

/* Publishes a transient JSON event to the worker events exchange through the publisher thread;
 * best effort (a failure is logged). 0, MD_ERR_FULL, MD_ERR_CLOSED, MD_ERR_INVALID (no publish role). */
int amqp_queue_publish_event(queue *q, const char *routing_key, const char *json, size_t len);

/* Publishes the events of one commit, one JSON per line, to <RABBITMQ_WORKER_EXCHANGE>.batched
 * (fanout): what `meterd api` subscribes to. One message per reading routed to each api cost
 * RabbitMQ more CPU than the worker's whole transaction (docs/decisions.md 24). Same return
 * values as amqp_queue_publish_event. */
int amqp_queue_publish_event_lines(queue *q, const char *lines, size_t len);

/* "<RABBITMQ_WORKER_EXCHANGE>.batched" into buf. */
void amqp_lines_exchange_name(const config *c, char *buf, size_t len);

#endif
