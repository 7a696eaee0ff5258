/* Backend-independent queue helpers. */
#include "queue/queue.h"

#include "core/error.h"
#include "core/timeutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

struct queue_budget {
    queue *q;
    uint64_t max_bytes;
    _Atomic uint64_t sampled;   /* the backend's depth × mean message size, at the last sample */
    _Atomic uint64_t since;     /* bytes published since that sample was taken */
    _Atomic uint64_t pub_bytes; /* this process's publishes: for the mean message size */
    _Atomic uint64_t pub_msgs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    pthread_t thread;
};

static uint64_t budget_estimate(queue_budget *b)
{
    return atomic_load(&b->sampled) + atomic_load(&b->since);
}

int queue_publish(queue *q, const uint8_t *data, size_t len, queue_publish_cb cb, void *arg)
{
    queue_budget *b = q->budget;
    if (b && budget_estimate(b) + len > b->max_bytes) return MD_ERR_FULL;
    int rc = q->ops->publish(q, data, len, cb, arg);
    if (rc == 0 && b) {
        atomic_fetch_add(&b->since, len);
        atomic_fetch_add(&b->pub_bytes, len);
        atomic_fetch_add(&b->pub_msgs, 1);
    }
    return rc;
}

int queue_get_stats(queue *q, queue_stats *st)
{
    int rc = q->ops->stats(q, st);
    if (q->budget && st->depth_bytes == 0 && st->depth) st->depth_bytes = budget_estimate(q->budget);
    return rc;
}

static void *budget_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-budget");
    queue_budget *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += QUEUE_BUDGET_SAMPLE_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&b->cv, &b->mu, &until);
        if (b->stop) break;
        pthread_mutex_unlock(&b->mu);
        /* Publishes before this point count in the sample (give or take the unconfirmed ones,
         * which the backends bound by their in-flight window); later ones stay in since. */
        uint64_t before = atomic_load(&b->since);
        queue_stats st = {0};
        b->q->ops->stats(b->q, &st);
        if (st.connected) {
            uint64_t n = atomic_load(&b->pub_msgs);
            uint64_t mean = n ? atomic_load(&b->pub_bytes) / n : 0;
            uint64_t est = st.depth_bytes ? st.depth_bytes : st.depth * mean;
            atomic_store(&b->sampled, est);
            atomic_fetch_sub(&b->since, before);
        }
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

int queue_budget_start(queue *q, uint64_t max_bytes)
{
    queue_budget *b = calloc(1, sizeof *b);
    if (!b) return MD_ERR_NOMEM;
    b->q = q;
    b->max_bytes = max_bytes;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&b->thread, NULL, budget_main, b)) {
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        free(b);
        return MD_ERR_NOMEM;
    }
    q->budget = b;
    return MD_OK;
}

void queue_close(queue *q)
{
    queue_budget *b = q->budget;
    if (b) {
        pthread_mutex_lock(&b->mu);
        b->stop = true;
        pthread_cond_signal(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
        pthread_cond_destroy(&b->cv);
        pthread_mutex_destroy(&b->mu);
        free(b);
        q->budget = NULL;
    }
    q->ops->close(q);
}

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
    int rc = queue_publish(q, data, len, publish_wait_cb, &pw);
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
