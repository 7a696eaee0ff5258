/* RabbitMQ per-reading events, sent only while a queue is bound for their routing key
 * (docs/decisions.md 34). Publisher thread only.
 *
 * RabbitMQ spends several µs on every message, also on one that no queue takes; with one
 * event per stored reading that made the broker the limit of a worker. So the publisher keeps,
 * per routing key, whether the last check found a queue:
 *   - bound: every event is sent; one every AMQP_EVENT_CHECK_US is sent `mandatory`, and a
 *     basic.return for it (no queue took it) marks the key unbound;
 *   - unbound (or not known yet): the first event after AMQP_EVENT_CHECK_US is sent as a probe,
 *     `mandatory` and followed by a basic.qos on the same channel. The broker answers a channel's
 *     methods in order, so its basic.qos-ok comes after the probe's basic.return if there is
 *     one: without a return the key is bound. Until then every later event waits (ev_held),
 *     so events leave in the order the worker made them. Other events of an unbound key are
 *     dropped and counted in meterd_events_unrouted_total.
 * A queue bound while its key is unbound therefore gets the events from the next probe on: at
 * most AMQP_EVENT_CHECK_US (plus a round trip) after its binding. */
#include "queue/amqp_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"

#include <string.h>

enum { ROUTE_UNKNOWN, ROUTE_BOUND, ROUTE_UNBOUND };

/* The entry for key; NULL when the table is full (such a key is always sent). */
static amqp_route *route_of(amqp_q *q, const char *key)
{
    for (size_t i = 0; i < q->n_routes; i++)
        if (!strcmp(q->routes[i].key, key)) return &q->routes[i];
    if (q->n_routes == AMQP_EVENT_KEYS) return NULL;
    amqp_route *r = &q->routes[q->n_routes++];
    *r = (amqp_route){0};
    snprintf(r->key, sizeof r->key, "%s", key);
    return r;
}

static void set_state(amqp_q *q, amqp_route *r, int state)
{
    if (r->state != state && state == ROUTE_BOUND)
        log_info("amqp_events",
                 "per-reading events to %s/%s: a queue is bound, sending every event",
                 q->cfg.rabbitmq_worker_exchange, r->key);
    else if (r->state != state)
        log_info("amqp_events", "per-reading events to %s/%s: no queue is bound, sending only a "
                 "probe every %d ms", q->cfg.rabbitmq_worker_exchange, r->key,
                 AMQP_EVENT_CHECK_US / 1000);
    r->state = state;
}

/* Sends the probe it (mandatory) and the basic.qos behind it. 0 or a librabbitmq status. */
static int send_probe(amqp_q *q, amqp_item *it, amqp_route *r)
{
    int rc = amqp_send_item(q, it, true);
    if (rc != AMQP_STATUS_OK) return rc;
    amqp_basic_qos_t qos = {0}; /* no consumer on this channel: changes nothing */
    rc = amqp_send_method(q->pub_conn, AMQP_EVENTS_CH, AMQP_BASIC_QOS_METHOD, &qos);
    if (rc != AMQP_STATUS_OK) return rc;
    q->probe = r - q->routes + 1;
    q->probe_returned = false;
    q->probe_us = time_mono_us();
    return 0;
}

/* Sends or drops held events in order until a probe is out or none are left. */
static void resume(amqp_q *q)
{
    size_t done = 0, dropped = 0;
    while (!q->probe && q->ev_held.head) {
        amqp_item *it = q->ev_held.head;
        q->ev_held.head = it->next;
        if (!q->ev_held.head) q->ev_held.tail = NULL;
        q->ev_held.n--;
        int rc = AMQP_STATUS_SOCKET_ERROR;
        amqp_route *r = q->pub_conn && !it->lines ? route_of(q, it->routing_key) : NULL;
        int64_t now = time_mono_us();
        bool due = r && now - r->checked_us >= AMQP_EVENT_CHECK_US;
        if (!q->pub_conn) {
            /* connection lost: fails below */
        } else if (r && r->state != ROUTE_BOUND && !due) {
            rc = -1; /* dropped: no queue is bound for it */
        } else if (r && r->state != ROUTE_BOUND) {
            r->checked_us = now;
            rc = send_probe(q, it, r);
        } else {
            if (due) r->checked_us = now;
            rc = amqp_send_item(q, it, due);
        }
        if (rc == -1) {
            dropped++;
            amqp_item_finish(q, it, 0);
        } else {
            if (rc != AMQP_STATUS_OK && q->pub_conn) amqp_pub_lost(q, amqp_error_string2(rc));
            amqp_item_finish(q, it, rc == AMQP_STATUS_OK ? 0 : MD_ERR_IO);
        }
        if (++done == 1024) { /* one lock per 1,024 events, not per event */
            amqp_events_done(q, done);
            done = 0;
        }
    }
    amqp_events_done(q, done);
    if (dropped) metrics_add(MC_EVENTS_UNROUTED, dropped);
}

void amqp_events_send(amqp_q *q, amqp_list *ev)
{
    if (!ev->head) return;
    if (q->ev_held.tail) q->ev_held.tail->next = ev->head;
    else q->ev_held.head = ev->head;
    q->ev_held.tail = ev->tail;
    q->ev_held.n += ev->n;
    *ev = (amqp_list){0};
    resume(q);
}

void amqp_events_on_return(amqp_q *q, const amqp_basic_return_t *ret)
{
    char key[sizeof q->routes[0].key];
    size_t n = ret->routing_key.len < sizeof key - 1 ? ret->routing_key.len : sizeof key - 1;
    memcpy(key, ret->routing_key.bytes, n);
    key[n] = '\0';
    if (q->probe && !strcmp(q->routes[q->probe - 1].key, key)) {
        q->probe_returned = true;
        return;
    }
    for (size_t i = 0; i < q->n_routes; i++)
        if (!strcmp(q->routes[i].key, key)) set_state(q, &q->routes[i], ROUTE_UNBOUND);
}

void amqp_events_on_qos_ok(amqp_q *q)
{
    if (!q->probe) return;
    amqp_route *r = &q->routes[q->probe - 1];
    set_state(q, r, q->probe_returned ? ROUTE_UNBOUND : ROUTE_BOUND);
    q->probe = 0;
    resume(q);
}

bool amqp_events_probe_late(const amqp_q *q)
{
    return q->probe && time_mono_us() - q->probe_us > AMQP_CONFIRM_TIMEOUT_MS * 1000LL;
}

void amqp_events_reset(amqp_q *q)
{
    q->probe = 0;
    q->n_routes = 0;
    amqp_fail_list(q, &q->ev_held, MD_ERR_IO);
}
