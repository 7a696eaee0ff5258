/* The worker: consumes batches from the queue, applies them to the store, then acks.
 * Undecodable batches and batches the store keeps refusing go to the dead letters. */
#ifndef METERD_WORKER_WORKER_H
#define METERD_WORKER_WORKER_H

#include "queue/queue.h"
#include "store/store.h"

#include <stdint.h>

typedef struct worker worker;

typedef struct worker_info {
    int running;
    int64_t last_applied_us;   /* wall time of the last successful apply, 0 if none */
    uint64_t consecutive_failures;
    char last_error[256];
    char last_position[48]; /* queue position of the last batch taken from the queue */
} worker_info;

/* Receives one event per reading of an applied batch, after the commit (outcome: STORE_OUTCOME_*). */
typedef void (*worker_event_sink)(void *arg, const batch *b, const reading *r, int outcome,
                                  const char *reason);

typedef struct worker_config {
    int64_t envelope_window_us; /* gateway envelopes taken from the queue (content type JSON) */
    worker_event_sink sink;     /* NULL: no events */
    void (*sink_flush)(void *arg); /* optional: after the events of one commit */
    void *sink_arg;             /* borrowed */
    int nice;                   /* the worker thread's nice value (0: as the process) */
    int linger_ms;              /* a group waits this long for more messages (0: takes what is
                                 * ready); only for a local queue, a broker caps unacked ones */
} worker_config;

/* Starts the worker thread. NULL on error (message in err). q and s are borrowed. */
worker *worker_start(queue *q, store *s, const worker_config *cfg, char *err, size_t errlen);
/* Copies the worker's state. */
void worker_get_info(worker *w, worker_info *info);
/* Waits up to timeout_ms for the worker to drain a shut-down queue, then stops it and frees w. */
void worker_stop(worker *w, int timeout_ms);

#endif
