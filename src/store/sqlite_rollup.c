/* SQLite store: hourly and daily rollups of valid readings (count/sum/min/max/first/last).
 * Write side: apply() adds each newly stored valid reading to an in-memory bucket of the
 * transaction (sqlite_rollup_map), and every touched bucket is upserted once before COMMIT,
 * merged with the stored one (first/last by ts, so arrival order does not matter).
 * Read side: the aggregates query and window_sum (whole hours from rollup_hour, only the
 * partial edge hours from raw readings). */
#include "core/error.h"
#include "store/sqlite_int.h"

#include <stdio.h>
#include <string.h>

#define HOUR_US (INT64_C(3600) * 1000000)
#define DAY_US (24 * HOUR_US)

/* Start of ts's bucket of size (floor, also for negative ts); saturates at INT64_MIN. */
static int64_t bucket_start(int64_t ts, int64_t size)
{
    int64_t q = ts / size;
    if (ts % size < 0) q--;
    int64_t out;
    return __builtin_mul_overflow(q, size, &out) ? INT64_MIN : out;
}

static int bucket_add(sqlite_rollup_map *m, int64_t dev, int64_t met, int64_t bucket, int64_t ts,
                      double value)
{
    long k = sqlite_rollup_entry(m, dev, met, bucket);
    if (k < 0) return MD_ERR_NOMEM;
    sqlite_rollup *e = &m->items[k];
    if (e->count++ == 0) {
        e->sum = e->min = e->max = e->first = e->last = value;
        e->first_ts_us = e->last_ts_us = ts;
        return MD_OK;
    }
    e->sum += value;
    if (value < e->min) e->min = value;
    if (value > e->max) e->max = value;
    /* (device, metric, ts) is unique among stored readings: no ties. */
    if (ts < e->first_ts_us) {
        e->first_ts_us = ts;
        e->first = value;
    }
    if (ts > e->last_ts_us) {
        e->last_ts_us = ts;
        e->last = value;
    }
    return MD_OK;
}

int sqlite_rollup_add(sqlite_store *ss, int64_t dev, int64_t met, int64_t ts_us, double value)
{
    int rc = bucket_add(&ss->hours, dev, met, bucket_start(ts_us, HOUR_US), ts_us, value);
    if (rc == MD_OK)
        rc = bucket_add(&ss->days, dev, met, bucket_start(ts_us, DAY_US), ts_us, value);
    return rc;
}

static int flush_map(sqlite_store *ss, const sqlite_rollup_map *m, int idx, char *err,
                     size_t errlen)
{
    sqlite3_stmt *st = ss->stmt[idx];
    for (size_t k = 0; k < m->n; k++) {
        const sqlite_rollup *e = &m->items[k];
        sqlite3_bind_int64(st, 1, e->device_id);
        sqlite3_bind_int64(st, 2, e->metric_id);
        sqlite3_bind_int64(st, 3, e->bucket_us);
        sqlite3_bind_int64(st, 4, (int64_t)e->count);
        sqlite3_bind_double(st, 5, e->sum);
        sqlite3_bind_double(st, 6, e->min);
        sqlite3_bind_double(st, 7, e->max);
        sqlite3_bind_int64(st, 8, e->first_ts_us);
        sqlite3_bind_double(st, 9, e->first);
        sqlite3_bind_int64(st, 10, e->last_ts_us);
        sqlite3_bind_double(st, 11, e->last);
        if (sqlite3_step(st) != SQLITE_DONE) {
            snprintf(err, errlen, "sqlite store: write rollups: %s", sqlite3_errmsg(ss->db));
            sqlite3_reset(st);
            return MD_ERR_STORE;
        }
        sqlite3_reset(st);
    }
    return MD_OK;
}

int sqlite_rollup_flush(sqlite_store *ss, char *err, size_t errlen)
{
    int rc = flush_map(ss, &ss->hours, SW_ROLLUP_HOUR, err, errlen);
    if (rc == MD_OK) rc = flush_map(ss, &ss->days, SW_ROLLUP_DAY, err, errlen);
    return rc;
}

/* ---- read side ---- */

int sqlite_store_aggregates(store *s, const store_aggregates_query *q,
                            int (*cb)(void *arg, const store_aggregate *a), void *arg)
{
    if (!q || !q->device || (q->bucket != STORE_BUCKET_HOUR && q->bucket != STORE_BUCKET_DAY))
        return MD_ERR_INVALID;
    int64_t dev = 0, met = 0;
    int found, rc, flags = q->bucket == STORE_BUCKET_DAY ? SA_DAY : 0;
    if ((rc = sqlite_query_name_id(s, SR_DEVICE_ID, q->device, &dev, &found)) != MD_OK) return rc;
    if (!found) return MD_OK;
    if (q->metric) {
        if ((rc = sqlite_query_name_id(s, SR_METRIC_ID, q->metric, &met, &found)) != MD_OK)
            return rc;
        if (!found) return MD_OK;
        flags |= SA_METRIC;
    }
    if (q->after_metric) flags |= SA_CURSOR;

    sqlite3_stmt *st = sqlite_query_stmt(s, SR_AGGREGATES + flags);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, dev);
    sqlite3_bind_int64(st, 2, met);
    sqlite3_bind_int64(st, 3, q->from_us);
    sqlite3_bind_int64(st, 4, q->to_us);
    sqlite3_bind_int64(st, 5, q->after_bucket_us);
    sqlite3_bind_text(st, 6, q->after_metric ? q->after_metric : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, sqlite_query_limit(q->limit));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        store_aggregate a = {
            .metric = sqlite_query_text(st, 0),
            .bucket_us = sqlite3_column_int64(st, 1),
            .count = (uint64_t)sqlite3_column_int64(st, 2),
            .sum = sqlite3_column_double(st, 3),
            .min = sqlite3_column_double(st, 4),
            .max = sqlite3_column_double(st, 5),
            .first_ts_us = sqlite3_column_int64(st, 6),
            .first = sqlite3_column_double(st, 7),
            .last_ts_us = sqlite3_column_int64(st, 8),
            .last = sqlite3_column_double(st, 9),
        };
        if (cb(arg, &a)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? MD_OK : MD_ERR_STORE;
}

/* Adds count and sum of one aggregate statement over [from, to) to out. */
static int window_part(store *s, int idx, int64_t dev, int64_t met, int64_t from, int64_t to,
                       store_window_sum *out)
{
    if (from >= to) return MD_OK;
    sqlite3_stmt *st = sqlite_query_stmt(s, idx);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, dev);
    sqlite3_bind_int64(st, 2, met);
    sqlite3_bind_int64(st, 3, from);
    sqlite3_bind_int64(st, 4, to);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->count += (uint64_t)sqlite3_column_int64(st, 0);
        out->sum += sqlite3_column_double(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? MD_OK : MD_ERR_STORE;
}

int sqlite_store_window_sum(store *s, const char *device, const char *metric, int64_t from_us,
                            int64_t to_us, store_window_sum *out)
{
    memset(out, 0, sizeof(*out));
    if (!device || !metric || from_us >= to_us) return MD_OK;
    int64_t dev, met;
    int found, rc;
    if ((rc = sqlite_query_name_id(s, SR_DEVICE_ID, device, &dev, &found)) != MD_OK) return rc;
    if (!found) return MD_OK;
    if ((rc = sqlite_query_name_id(s, SR_METRIC_ID, metric, &met, &found)) != MD_OK) return rc;
    if (!found) return MD_OK;

    /* Whole hours [h0, h1); h0 rounds from up, h1 rounds to down. */
    int64_t h0 = bucket_start(from_us, HOUR_US), h1 = bucket_start(to_us, HOUR_US);
    if (h0 < from_us && __builtin_add_overflow(h0, HOUR_US, &h0)) h0 = INT64_MAX;
    /* The three parts run in one read transaction so they see the same commit. */
    sqlite3_stmt *begin = sqlite_query_stmt(s, SR_BEGIN), *commit = sqlite_query_stmt(s, SR_COMMIT);
    if (!begin || !commit) return MD_ERR_STORE;
    rc = sqlite3_step(begin);
    sqlite3_reset(begin);
    if (rc != SQLITE_DONE) return MD_ERR_STORE;
    if (h0 >= h1) {
        rc = window_part(s, SR_WSUM_RAW, dev, met, from_us, to_us, out); /* under 2 hours */
    } else {
        rc = window_part(s, SR_WSUM_RAW, dev, met, from_us, h0, out);
        if (rc == MD_OK) rc = window_part(s, SR_WSUM_HOURS, dev, met, h0, h1, out);
        if (rc == MD_OK) rc = window_part(s, SR_WSUM_RAW, dev, met, h1, to_us, out);
    }
    if (sqlite3_step(commit) != SQLITE_DONE && rc == MD_OK) rc = MD_ERR_STORE;
    sqlite3_reset(commit);
    if (rc != MD_OK) memset(out, 0, sizeof(*out));
    return rc;
}
