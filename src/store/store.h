/* The store: where the worker applies batches and the read side reads.
 * One small interface, one file per backend (sqlite.c; pg.c later).
 * apply() is called by one worker thread at a time; the query functions
 * may be called concurrently from any thread. */
#ifndef METERD_STORE_STORE_H
#define METERD_STORE_STORE_H

#include "core/batch.h"

#include <stddef.h>
#include <stdint.h>

typedef struct store store;

/* Worker rules that depend on configuration (see worker/validate.h). */
typedef struct store_rules {
    int64_t max_future_us; /* ts later than received_at + this is invalid (default 5 min) */
} store_rules;

typedef struct store_apply_stats {
    uint64_t batches;         /* batches applied now */
    uint64_t skipped_batches; /* batches already applied before (re-delivery) */
    uint64_t stored;          /* new readings stored (valid or invalid) */
    uint64_t invalid;         /* of those, stored as invalid */
    uint64_t duplicates;      /* same key, same value as stored: ignored */
    uint64_t conflicts;       /* same key, other value: kept in the conflicts table */
} store_apply_stats;

typedef struct store_device {
    const char *id;   /* external id */
    const char *kind; /* meter | device | vehicle | client */
    const char *site; /* "" when none */
    int64_t first_seen_us, last_seen_us;
} store_device;

typedef struct store_reading {
    const char *device;
    const char *metric;
    int64_t ts_us;
    double value; /* NaN when the stored value was not finite */
    int valid;    /* 1 valid, 0 invalid */
    const char *reason; /* "" when valid */
    int64_t received_at_us;
    const char *site;     /* the device's site, "" when none */
    const char *position; /* queue position of the batch that brought it ("<ms>-<seq>"), "" if unknown */
} store_reading;

/* One rollup bucket of a (device, metric): valid readings only. */
typedef struct store_aggregate {
    const char *metric;
    int64_t bucket_us; /* start of the hour or day, UTC */
    uint64_t count;
    double sum, min, max;
    int64_t first_ts_us, last_ts_us;
    double first, last;
} store_aggregate;

enum { STORE_BUCKET_HOUR = 1, STORE_BUCKET_DAY = 2 };

typedef struct store_aggregates_query {
    const char *device;       /* required */
    const char *metric;       /* NULL: all metrics */
    int bucket;               /* STORE_BUCKET_* */
    int64_t from_us, to_us;   /* buckets whose start is in [from, to) */
    int64_t after_bucket_us;  /* cursor: buckets after (after_bucket_us, after_metric) */
    const char *after_metric; /* NULL: no cursor */
    size_t limit;
} store_aggregates_query;

/* Sum and count of a (device, metric)'s valid readings in [from, to). */
typedef struct store_window_sum {
    uint64_t count;
    double sum;
} store_window_sum;

typedef struct store_readings_query {
    const char *device; /* required */
    const char *metric; /* NULL: all metrics */
    int64_t from_us, to_us; /* [from, to) */
    int64_t after_ts_us;    /* cursor: rows after (after_ts_us, after_metric) */
    const char *after_metric; /* NULL: no cursor */
    int only_invalid;       /* anomalies query: device may be NULL */
    const char *site;       /* site query: readings of every device of this site (device NULL);
                             * ordered by (ts, device, metric); cursor adds after_device */
    const char *after_device;
    size_t limit;
} store_readings_query;

typedef struct store_counts {
    uint64_t devices, readings, invalid, conflicts, batches;
    int64_t last_applied_received_us; /* received_at of the newest applied batch, 0 if none */
} store_counts;

/* What apply() did with one reading, reported to the observer during the transaction. */
enum {
    STORE_OUTCOME_VALID = 1,   /* stored, valid */
    STORE_OUTCOME_INVALID = 2, /* stored, invalid (reason given) */
    STORE_OUTCOME_DUPLICATE = 3,
    STORE_OUTCOME_CONFLICT = 4,
};
/* Called inside apply() for each reading of a batch not applied before; the transaction may
 * still roll back, so observers buffer and act after apply() returns 0. */
typedef void (*store_observer)(void *arg, const batch *b, size_t index, int outcome,
                               const char *reason);

/* Row callbacks return 0 to go on, non-zero to stop. Strings are valid during the call. */
typedef int (*store_device_cb)(void *arg, const store_device *d);
typedef int (*store_reading_cb)(void *arg, const store_reading *r);

typedef struct store_ops {
    const char *name;
    /* Applies batches in one transaction: device upserts, validation, anomaly rules, dedup
     * (first wins; duplicates counted; conflicts kept), live state, batch-id bookkeeping so a
     * batch applied twice changes nothing. All or nothing. 0, MD_ERR_STORE (message in err). */
    int (*apply)(store *s, batch *const *batches, size_t n, store_apply_stats *st, char *err,
                 size_t errlen);
    /* Devices ordered by id, after the id `after` (NULL: from the start), at most limit. */
    int (*devices)(store *s, const char *after, size_t limit, store_device_cb cb, void *arg);
    /* One device: 0, MD_ERR_NOTFOUND. */
    int (*device)(store *s, const char *id, store_device_cb cb, void *arg);
    /* Readings ordered by (ts, metric). 0 or MD_ERR_STORE. */
    int (*readings)(store *s, const store_readings_query *q, store_reading_cb cb, void *arg);
    /* Live state: the newest reading per metric of a device. 0 (maybe no rows) or error. */
    int (*live)(store *s, const char *device, store_reading_cb cb, void *arg);
    /* Rollup buckets ordered by (bucket, metric). 0 or MD_ERR_STORE. */
    int (*aggregates)(store *s, const store_aggregates_query *q,
                      int (*cb)(void *arg, const store_aggregate *a), void *arg);
    /* Sum/count of valid readings of (device, metric) in [from, to): whole hours from the
     * hourly rollups, only the partial edge hours from raw readings. 0 or MD_ERR_STORE. */
    int (*window_sum)(store *s, const char *device, const char *metric, int64_t from_us,
                      int64_t to_us, store_window_sum *out);
    /* Devices linked to device by relation (e.g. a vehicle's meters). 0 or MD_ERR_STORE. */
    int (*links)(store *s, const char *device, const char *relation, store_device_cb cb,
                 void *arg);
    /* Counts for /health and /metrics. 0 or MD_ERR_STORE. */
    int (*counts)(store *s, store_counts *c);
    /* Sets the apply observer (NULL: none). Call before the first apply. */
    void (*observe)(store *s, store_observer cb, void *arg);
    /* A cheap liveness check. 0 or MD_ERR_STORE. */
    int (*ping)(store *s);
    /* Closes every connection and frees s. */
    void (*close)(store *s);
} store_ops;

struct store {
    const store_ops *ops;
};

#endif
