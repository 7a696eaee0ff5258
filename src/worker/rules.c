/* Pure worker rules: validation, anomaly detection, the anomaly window and its blob form.
 * No I/O here, so the store backends and the tests share one definition of "invalid". */
#include "worker/rules.h"
#include "core/error.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Used when the caller passes no rules: DESIGN.md's 5 minutes. */
#define RULES_DEFAULT_MAX_FUTURE_US (INT64_C(300) * 1000000)

static int reject(char *reason, size_t len, const char *msg)
{
    if (reason && len) snprintf(reason, len, "%s", msg);
    return 0;
}

int rules_validate(const reading *r, int64_t received_at_us, const store_rules *rules, char *reason,
                   size_t len)
{
    int64_t max_future = rules ? rules->max_future_us : RULES_DEFAULT_MAX_FUTURE_US;

    /* Ingest already judged it (e.g. a decoder-level check): that verdict is final. */
    if (r->invalid_reason && r->invalid_reason[0]) return reject(reason, len, r->invalid_reason);
    if (!isfinite(r->value)) return reject(reason, len, "value is not a finite number");
    if (!r->metric || !r->metric[0]) return reject(reason, len, "metric name is empty");
    if (!r->device || !r->device[0]) return reject(reason, len, "device id is empty");

    /* Saturate instead of overflowing: a limit past INT64_MAX means "no limit". */
    int64_t limit;
    if (max_future < 0) max_future = 0;
    if (__builtin_add_overflow(received_at_us, max_future, &limit)) limit = INT64_MAX;
    if (r->ts_us > limit) {
        if (reason && len)
            snprintf(reason, len, "timestamp is more than %g s in the future",
                     (double)max_future / 1e6);
        return 0;
    }
    if (reason && len) reason[0] = '\0';
    return 1;
}

int rules_anomaly(const anomaly_window *w, double value, char *reason, size_t len)
{
    if (value < 0) return reject(reason, len, "negative value detected");
    if (w && w->n >= ANOMALY_WINDOW) {
        double sum = 0;
        for (int i = 0; i < ANOMALY_WINDOW; i++)
            sum += w->v[i];
        double mean = sum / ANOMALY_WINDOW;
        if (mean != 0 && value > ANOMALY_SPIKE_FACTOR * mean) {
            if (reason && len)
                snprintf(reason, len,
                         "sudden spike detected: value %g exceeds %.1fx rolling average %.2f",
                         value, ANOMALY_SPIKE_FACTOR, mean);
            return 0;
        }
    }
    if (reason && len) reason[0] = '\0';
    return 1;
}

void rules_window_push(anomaly_window *w, double value)
{
    if (w->pos >= ANOMALY_WINDOW) w->pos = 0; /* defensive: a zeroed or odd struct */
    w->v[w->pos] = value;
    w->pos = (uint8_t)((w->pos + 1) % ANOMALY_WINDOW);
    if (w->n < ANOMALY_WINDOW) w->n++;
}

/* Little-endian on every host so a database file moves between machines. */
static void put_le64(uint8_t *p, double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(u >> (8 * i));
}

static double get_le64(const uint8_t *p)
{
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

size_t rules_window_encode(const anomaly_window *w, uint8_t out[RULES_WINDOW_BLOB])
{
    uint8_t n = w->n > ANOMALY_WINDOW ? ANOMALY_WINDOW : w->n;
    unsigned pos = w->pos % ANOMALY_WINDOW;
    unsigned oldest = (pos + ANOMALY_WINDOW - n) % ANOMALY_WINDOW;
    out[0] = n;
    for (unsigned i = 0; i < n; i++)
        put_le64(out + 1 + 8 * i, w->v[(oldest + i) % ANOMALY_WINDOW]);
    return 1 + (size_t)n * 8;
}

int rules_window_decode(anomaly_window *w, const uint8_t *blob, size_t len)
{
    memset(w, 0, sizeof(*w));
    if (!blob || len < 1) return MD_ERR_CORRUPT;
    uint8_t n = blob[0];
    if (n > ANOMALY_WINDOW || len != 1 + (size_t)n * 8) return MD_ERR_CORRUPT;
    for (unsigned i = 0; i < n; i++)
        w->v[i] = get_le64(blob + 1 + 8 * i);
    w->n = n;
    w->pos = (uint8_t)(n % ANOMALY_WINDOW);
    return MD_OK;
}
