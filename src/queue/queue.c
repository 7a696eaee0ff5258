/* Backend-independent queue helpers. */
#include "queue/queue.h"

#include <pthread.h>
#include <stdbool.h>

/* Rendezvous between the publisher and the backend's callback thread. */
typedef struct publish_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
} publish_waiter;

/* Runs on a queue thread; the waiter lives on the publisher's stack, so touch it only under mu. */
static void publish_wait_cb(void *arg, int status, const char *position)
{
    (void)position;
    publish_waiter *pw = arg;
    pthread_mutex_lock(&pw->mu);
    pw->status = status;
    pw->done = true;
    pthread_cond_signal(&pw->cv);
    pthread_mutex_unlock(&pw->mu);
}

/* For callers without an event loop (import, tests): publish, then block until durable. */
int queue_publish_wait(queue *q, const uint8_t *data, size_t len)
{
    publish_waiter pw = {.done = false, .status = 0};
    pthread_mutex_init(&pw.mu, NULL);
    pthread_cond_init(&pw.cv, NULL);
    int rc = q->ops->publish(q, data, len, publish_wait_cb, &pw);
    if (rc == 0) {
        pthread_mutex_lock(&pw.mu);
        while (!pw.done) pthread_cond_wait(&pw.cv, &pw.mu);
        rc = pw.status;
        pthread_mutex_unlock(&pw.mu);
    }
    pthread_cond_destroy(&pw.cv);
    pthread_mutex_destroy(&pw.mu);
    return rc;
}
