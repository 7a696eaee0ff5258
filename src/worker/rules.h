/* Pure worker rules: validation and anomaly detection (DESIGN.md, "Worker semantics"). */
#ifndef METERD_WORKER_RULES_H
#define METERD_WORKER_RULES_H

#include "core/batch.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

#define ANOMALY_WINDOW 10
#define ANOMALY_SPIKE_FACTOR 3.0

/* The last ANOMALY_WINDOW valid values of one (device, metric), oldest first when unrolled. */
typedef struct anomaly_window {
    double v[ANOMALY_WINDOW];
    uint8_t n;   /* how many values are held (<= ANOMALY_WINDOW) */
    uint8_t pos; /* where the next value goes */
} anomaly_window;

/* Returns 1 when r is valid; else 0 with the reason in reason: r->invalid_reason when ingest
 * set one (truncated to len; stores keep the full string), else non-finite value, empty metric,
 * ts too far in the future of received_at. */
int rules_validate(const reading *r, int64_t received_at_us, const store_rules *rules,
                   char *reason, size_t len);

/* Returns 1 when value is normal for window w; else 0 with the reason in reason:
 * "negative value detected", or "sudden spike detected: value X exceeds 3.0x rolling average Y"
 * (spike check skipped with fewer than 10 values or a zero mean). */
int rules_anomaly(const anomaly_window *w, double value, char *reason, size_t len);

/* Adds a stored valid value to the window, dropping the oldest beyond ANOMALY_WINDOW. */
void rules_window_push(anomaly_window *w, double value);

/* Serialises the window to/from a compact blob (for the live-state row).
 * rules_window_encode returns the number of bytes written (<= RULES_WINDOW_BLOB). */
#define RULES_WINDOW_BLOB (1 + ANOMALY_WINDOW * 8)
size_t rules_window_encode(const anomaly_window *w, uint8_t out[RULES_WINDOW_BLOB]);
/* Returns 0, or MD_ERR_CORRUPT when the blob is malformed (w is then empty). */
int rules_window_decode(anomaly_window *w, const uint8_t *blob, size_t len);

#endif
