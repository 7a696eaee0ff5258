/* Worker loop: group whatever the queue has ready into one store transaction (many small
 * batches share one commit, which is what keeps up with single-reading ingest), ack after
 * the commit. A failing group is retried batch by batch so one poison batch cannot hold
 * the others back; a batch failing MAX_ATTEMPTS times is dead-lettered with its reason. */
#include "worker/worker.h"
#include "core/batch.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "ingest/ingest.h"

#include <ctype.h>
#include <pthread.h>
#include <sys/resource.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GROUP_MAX_BATCHES 16384 /* messages in one store transaction, at most */
#define GROUP_MAX_READINGS 50000
#define MAX_ATTEMPTS 3
#define SUSPECT_DELIVERIES 2 /* a message delivered more often than this is applied alone */

struct worker {
    worker_config cfg;
    queue *q; /* borrowed */
    store *s; /* borrowed */
    pthread_t thread;
    atomic_int stop;
    pthread_mutex_t mu; /* guards info */
    worker_info info;
    struct pending_event {
        const batch *b; /* borrowed: alive until the group is flushed */
        size_t index;
        int outcome;
        char *reason; /* owned; NULL when empty */
    } *events;        /* owned: this transaction's events, sent after the commit */
    size_t n_events, cap_events;
    queue_msg msgs[GROUP_MAX_BATCHES];
    batch *batches[GROUP_MAX_BATCHES]; /* owned while in a group */
};

static void set_error(worker *w, const char *msg)
{
    pthread_mutex_lock(&w->mu);
    snprintf(w->info.last_error, sizeof w->info.last_error, "%s", msg);
    w->info.consecutive_failures++;
    pthread_mutex_unlock(&w->mu);
}

static void count_applied(worker *w, const store_apply_stats *st, int64_t took_us)
{
    metrics_observe_apply(took_us);
    metrics_add(MC_BATCHES_APPLIED, st->batches);
    metrics_add(MC_BATCHES_SKIPPED, st->skipped_batches);
    metrics_add(MC_READINGS_STORED, st->stored);
    metrics_add(MC_READINGS_INVALID, st->invalid);
    metrics_add(MC_READINGS_DUPLICATE, st->duplicates);
    metrics_add(MC_READINGS_CONFLICT, st->conflicts);
    pthread_mutex_lock(&w->mu);
    w->info.last_applied_us = time_now_us();
    w->info.consecutive_failures = 0;
    w->info.last_error[0] = '\0';
    pthread_mutex_unlock(&w->mu);
}

/* Store observer: keeps the outcome until the transaction is known to have committed. */
static void buffer_event(void *arg, const batch *b, size_t index, int outcome, const char *reason)
{
    worker *w = arg;
    if (w->n_events == w->cap_events) {
        size_t cap = w->cap_events ? w->cap_events * 2 : 1024;
        struct pending_event *e = realloc(w->events, cap * sizeof *e);
        if (!e) return; /* events are best effort; the data is safe in the store */
        w->events = e;
        w->cap_events = cap;
    }
    w->events[w->n_events++] = (struct pending_event){
        b, index, outcome, reason && reason[0] ? strdup(reason) : NULL};
}

/* Sends (committed) or drops (rolled back) the buffered events. */
static void flush_events(worker *w, int committed)
{
    for (size_t i = 0; i < w->n_events; i++) {
        struct pending_event *e = &w->events[i];
        if (committed && w->cfg.sink)
            w->cfg.sink(w->cfg.sink_arg, e->b, &e->b->readings[e->index], e->outcome,
                        e->reason ? e->reason : "");
        free(e->reason);
    }
    if (committed && w->n_events && w->cfg.sink_flush) w->cfg.sink_flush(w->cfg.sink_arg);
    w->n_events = 0;
}

static int apply(worker *w, batch *const *b, size_t n, char *err, size_t errlen)
{
    store_apply_stats st = {0};
    int64_t t0 = time_mono_us();
    int rc = w->s->ops->apply(w->s, b, n, &st, err, errlen);
    flush_events(w, rc == MD_OK);
    if (rc == MD_OK) {
        count_applied(w, &st, time_mono_us() - t0);
    } else {
        metrics_add(MC_STORE_ERRORS, 1);
        set_error(w, err);
    }
    return rc;
}

static void dead_letter(worker *w, queue_msg *m, const char *reason)
{
    log_emit(LOG_WARN, "dead_letter", json_pack("{s:I}", "seq", (json_int_t)m->seq),
             "batch moved to the dead letters: %s", reason);
    if (w->q->ops->nack(w->q, m, reason) == MD_OK) metrics_add(MC_BATCHES_DEAD, 1);
}

/* Waits while the store is unreachable (a database restart is no reason to dead-letter
 * batches the API already acknowledged). 0 once it answers, -1 when the worker is stopping.
 * cause: the error of the apply that failed, kept in last_error (a database that is down
 * and a disk that failed both end up here). */
static int wait_for_store(worker *w, const char *cause)
{
    unsigned delay_ms = 100;
    char msg[sizeof w->info.last_error];
    int n = (int)strnlen(cause, 180);
    while (n > 0 && isspace((unsigned char)cause[n - 1])) n--; /* libpq's end in a newline */
    snprintf(msg, sizeof msg, "store unreachable (%.*s); waiting for it before retrying", n, cause);
    while (w->s->ops->ping(w->s) != MD_OK) {
        if (atomic_load(&w->stop)) return -1;
        set_error(w, msg);
        usleep(delay_ms * 1000u);
        if (delay_ms < 5000) delay_ms *= 2;
    }
    return 0;
}

/* Applies one batch; a batch the reachable store refuses MAX_ATTEMPTS times is dead-lettered.
 * Returns -1 when the worker stops while the store is down (the batch stays unacked). */
static int apply_one(worker *w, size_t i)
{
    char err[512];
    int attempts = 0;
    for (;;) {
        if (apply(w, &w->batches[i], 1, err, sizeof err) == MD_OK) {
            w->q->ops->ack(w->q, &w->msgs[i]);
            return 0;
        }
        if (w->s->ops->ping(w->s) != MD_OK) { /* the store, not the batch: not an attempt */
            if (wait_for_store(w, err)) return -1;
            continue;
        }
        if (++attempts == MAX_ATTEMPTS) break;
        usleep(100u * 1000u * (unsigned)attempts);
    }
    char reason[600];
    snprintf(reason, sizeof reason, "store refused the batch %d times: %s", MAX_ATTEMPTS, err);
    dead_letter(w, &w->msgs[i], reason);
    return 0;
}

/* Applies the group [0, n): all at once, else one by one with retries. Acks in order. */
static void flush_group(worker *w, size_t n)
{
    if (n == 0) return;
    char err[512];
    if (apply(w, w->batches, n, err, sizeof err) == MD_OK) {
        w->q->ops->ack(w->q, &w->msgs[n - 1]);
    } else {
        for (size_t i = 0; i < n; i++)
            if (apply_one(w, i)) break; /* stopping with the store down: redelivered later */
    }
    for (size_t i = 0; i < n; i++) {
        batch_free(w->batches[i]);
        w->batches[i] = NULL;
    }
}

/* A queue message is a canonical batch, or a gateway envelope that a device gateway published
 * straight to the broker (JSON): the same decoder as POST /api/v1/envelopes turns it into one. */
static int decode(worker *w, const queue_msg *m, batch **b, char *err, size_t errlen)
{
    if (strncmp(m->content_type, "application/json", 16) != 0)
        return batch_decode(m->data, m->len, b, err, errlen);
    ingest_error e = {0};
    int rc = ingest_envelope((const char *)m->data, m->len, NULL, w->cfg.envelope_window_us, b, &e);
    if (rc) snprintf(err, errlen, "envelope: %.200s", e.message[0] ? e.message : md_strerror(rc));
    return rc;
}

/* The next message for the group that started at t0: what is ready now, else whatever arrives
 * until the linger time is up, as long as messages keep coming (a gap of a tenth of the linger
 * ends the group). Small messages (single readings) then share a transaction: each one touches
 * a different device's pages, and a page written once per transaction instead of once per
 * reading is what cuts the store's writes (docs/decisions.md 23, 29). A quiet queue is applied
 * at once, a busy one in large transactions. */
static int next_in_group(worker *w, queue_msg *m, int64_t t0)
{
    int rc = w->q->ops->consume(w->q, m, 0);
    if (rc != MD_ERR_TIMEOUT || w->cfg.linger_ms <= 0 || atomic_load(&w->stop)) return rc;
    int64_t left_us = t0 + (int64_t)w->cfg.linger_ms * 1000 - time_mono_us();
    int64_t gap_us = (int64_t)w->cfg.linger_ms * 100;
    if (gap_us < 1000) gap_us = 1000;
    if (left_us > gap_us) left_us = gap_us;
    if (left_us <= 0) return rc;
    return w->q->ops->consume(w->q, m, (int)((left_us + 999) / 1000));
}

static void *run(void *arg)
{
    pthread_setname_np(pthread_self(), "md-worker");
    worker *w = arg;
    /* Lower than the ingest threads: the acknowledgement path is what clients wait for, and the
     * worker catches up when they are idle (docs/decisions.md 22). Linux applies a tid's nice
     * value to that thread only. Raising it needs no privilege; failing is harmless. */
    if (w->cfg.nice && setpriority(PRIO_PROCESS, (id_t)gettid(), w->cfg.nice) != 0)
        log_warn("worker_nice", "cannot set the worker thread's nice value to %d", w->cfg.nice);
    while (!atomic_load(&w->stop)) {
        size_t n = 0, readings = 0;
        int rc = w->q->ops->consume(w->q, &w->msgs[0], 200);
        if (rc == MD_ERR_CLOSED) break;
        if (rc == MD_ERR_TIMEOUT) continue;
        if (rc) {
            set_error(w, md_strerror(rc));
            usleep(100 * 1000);
            continue;
        }
        int64_t t0 = time_mono_us();
        pthread_mutex_lock(&w->mu);
        memcpy(w->info.last_position, w->msgs[0].position, sizeof w->info.last_position);
        pthread_mutex_unlock(&w->mu);
        /* Take what else is ready now, without waiting, into the same transaction. A suspect
         * (handed out twice before without an ack: its group never committed, e.g. the worker
         * died) goes alone, after the batches before it, so that only poison that really
         * kills the worker reaches the queue's delivery limit, not its whole group. */
        for (;;) {
            char err[256];
            batch *b = NULL;
            queue_msg *m = &w->msgs[n];
            bool suspect = m->deliveries > SUSPECT_DELIVERIES;
            if (suspect && n > 0) {
                flush_group(w, n);
                w->msgs[0] = *m;
                m = &w->msgs[0];
                n = readings = 0;
            }
            if (suspect) metrics_add(MC_BATCHES_ISOLATED, 1);
            if (decode(w, m, &b, err, sizeof err) == MD_OK) {
                memcpy(b->position, m->position, sizeof b->position);
                w->batches[n++] = b;
                readings += b->n_readings;
            } else {
                flush_group(w, n); /* earlier batches first: ack order is queue order */
                n = 0;
                dead_letter(w, m, err);
            }
            if (suspect || n == GROUP_MAX_BATCHES || readings >= GROUP_MAX_READINGS) break;
            if (next_in_group(w, &w->msgs[n], t0) != MD_OK) break;
        }
        flush_group(w, n);
    }
    pthread_mutex_lock(&w->mu);
    w->info.running = 0;
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

worker *worker_start(queue *q, store *s, const worker_config *cfg, char *err, size_t errlen)
{
    worker *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (cfg) w->cfg = *cfg;
    if (w->cfg.sink && s->ops->observe) s->ops->observe(s, buffer_event, w);
    w->q = q;
    w->s = s;
    pthread_mutex_init(&w->mu, NULL);
    w->info.running = 1; /* before the thread exists, so worker_stop never sees a false 0 */
    if (pthread_create(&w->thread, NULL, run, w)) {
        snprintf(err, errlen, "cannot start the worker thread");
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void worker_get_info(worker *w, worker_info *info)
{
    pthread_mutex_lock(&w->mu);
    *info = w->info;
    pthread_mutex_unlock(&w->mu);
}

void worker_stop(worker *w, int timeout_ms)
{
    if (!w) return;
    /* The queue is shut down: the worker drains it and exits on MD_ERR_CLOSED. */
    int64_t deadline = time_mono_us() + (int64_t)timeout_ms * 1000;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        int running = w->info.running;
        pthread_mutex_unlock(&w->mu);
        queue_stats st = {0};
        w->q->ops->stats(w->q, &st);
        if (!running || st.depth == 0 || time_mono_us() > deadline) break;
        usleep(20 * 1000);
    }
    atomic_store(&w->stop, 1);
    pthread_join(w->thread, NULL);
    if (w->cfg.sink && w->s->ops->observe) w->s->ops->observe(w->s, NULL, NULL);
    free(w->events);
    pthread_mutex_destroy(&w->mu);
    free(w);
}
