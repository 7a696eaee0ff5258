/* Counters and latency histograms in Prometheus text format. */
#include "core/metrics.h"
#include "core/error.h"
#include "core/membudget.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t counters[MC__COUNT];

static const struct {
    const char *name, *help;
} counter_info[MC__COUNT] = {
    [MC_HTTP_REQUESTS] = {"meterd_http_requests_total", "HTTP requests answered."},
    [MC_HTTP_4XX] = {"meterd_http_client_errors_total", "HTTP requests answered with 4xx."},
    [MC_HTTP_5XX] = {"meterd_http_server_errors_total", "HTTP requests answered with 5xx."},
    [MC_BATCHES_ACCEPTED] = {"meterd_batches_accepted_total", "Batches made durable in the queue."},
    [MC_READINGS_ACCEPTED] = {"meterd_readings_accepted_total", "Readings acknowledged to clients."},
    [MC_REJECTED_BACKPRESSURE] = {"meterd_rejected_backpressure_total",
                                  "Requests refused with 503 because the queue was over budget."},
    [MC_REJECTED_MEMORY] = {"meterd_rejected_memory_total",
                            "Requests refused with 503 because request memory was over budget "
                            "(--max-inflight-bytes)."},
    [MC_BATCHES_APPLIED] = {"meterd_batches_applied_total", "Batches applied to the store."},
    [MC_BATCHES_SKIPPED] = {"meterd_batches_redelivered_total",
                            "Batches delivered again and skipped (already applied)."},
    [MC_BATCHES_ISOLATED] = {"meterd_batches_isolated_total",
                             "Batches applied alone: delivered more than twice (suspected poison)."},
    [MC_BATCHES_DEAD] = {"meterd_batches_dead_lettered_total", "Batches sent to the dead-letter store."},
    [MC_READINGS_STORED] = {"meterd_readings_stored_total", "Readings stored (valid or invalid)."},
    [MC_READINGS_INVALID] = {"meterd_readings_invalid_total", "Readings stored as invalid."},
    [MC_READINGS_DUPLICATE] = {"meterd_readings_duplicates_total",
                               "Readings ignored: same key and value already stored."},
    [MC_READINGS_CONFLICT] = {"meterd_readings_conflicts_total",
                              "Readings with a stored key but another value (kept as conflicts)."},
    [MC_STORE_ERRORS] = {"meterd_store_errors_total", "Failed store transactions."},
    [MC_EVENTS_UNROUTED] = {"meterd_events_unrouted_total",
                            "Per-reading RabbitMQ events not sent: no queue was bound for their "
                            "routing key."},
};

/* Upper bounds in µs; the last bucket is +Inf. */
static const int64_t bounds_us[] = {50,   100,   200,   300,   500,    750,    1000,   1500,
                                    2000, 3000,  5000,  10000, 20000,  50000,  100000, 500000,
                                    1000000};
#define NB (sizeof bounds_us / sizeof bounds_us[0])

typedef struct histogram {
    _Atomic uint64_t bucket[NB + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
} histogram;

static histogram fsync_hist, apply_hist, ingest_hist;

void metrics_add(metric_counter c, uint64_t n)
{
    atomic_fetch_add_explicit(&counters[c], n, memory_order_relaxed);
}

uint64_t metrics_get(metric_counter c)
{
    return atomic_load_explicit(&counters[c], memory_order_relaxed);
}

static void observe(histogram *h, int64_t us)
{
    if (us < 0) us = 0;
    size_t i = 0;
    while (i < NB && us > bounds_us[i]) i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)us, memory_order_relaxed);
}

void metrics_observe_fsync(int64_t us)
{
    observe(&fsync_hist, us);
}

void metrics_observe_apply(int64_t us)
{
    observe(&apply_hist, us);
}

void metrics_observe_ingest(int64_t us)
{
    observe(&ingest_hist, us);
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void render_hist(sbuf *b, const char *name, const char *help, histogram *h)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i <= NB; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < NB)
            sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds_us[i] / 1e6,
                      (unsigned long long)cum);
        else
            sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    }
    sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)atomic_load(&h->sum_us) / 1e6,
              name, (unsigned long long)atomic_load(&h->count));
}

static void gauge(sbuf *b, const char *name, const char *help, double v)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name, help, name, name, v);
}

int metrics_render(const metrics_gauges *g, char **out, size_t *len)
{
    sbuf b = {.cap = 8192};
    b.p = malloc(b.cap);
    if (!b.p) return MD_ERR_NOMEM;
    for (int i = 0; i < MC__COUNT; i++)
        sb_printf(&b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_info[i].name,
                  counter_info[i].help, counter_info[i].name, counter_info[i].name,
                  (unsigned long long)metrics_get((metric_counter)i));
    gauge(&b, "meterd_queue_depth", "Batches in the queue not yet applied.", (double)g->queue_depth);
    gauge(&b, "meterd_queue_depth_bytes", "Bytes in the queue not yet applied.",
          (double)g->queue_depth_bytes);
    gauge(&b, "meterd_queue_dead_letters", "Batches in the dead-letter store.", (double)g->dead_letters);
    gauge(&b, "meterd_queue_segments", "Write-ahead log segment files.", (double)g->segments);
    gauge(&b, "meterd_worker_lag_seconds",
          "Age of the oldest batch not yet applied (0 when the queue is empty).",
          g->worker_lag_seconds);
    gauge(&b, "meterd_store_devices", "Devices in the store.", (double)g->store_devices);
    gauge(&b, "meterd_store_readings", "Readings in the store.", (double)g->store_readings);
    gauge(&b, "meterd_request_memory_bytes",
          "Bytes of request bodies and gRPC messages held by requests in progress.",
          (double)membudget_used());
    gauge(&b, "meterd_request_memory_budget_bytes",
          "The budget of meterd_request_memory_bytes (--max-inflight-bytes; 0: none).",
          (double)membudget_max());
    render_hist(&b, "meterd_queue_fsync_seconds", "Duration of one queue fsync (group commit).",
                &fsync_hist);
    render_hist(&b, "meterd_store_apply_seconds", "Duration of one store transaction.", &apply_hist);
    render_hist(&b, "meterd_http_ingest_seconds",
                "Time from an accepted ingest request's headers to its answer (body, decoding, "
                "the queue's fsync).",
                &ingest_hist);
    if (b.oom) {
        free(b.p);
        return MD_ERR_NOMEM;
    }
    *out = b.p;
    *len = b.len;
    return MD_OK;
}
