/* SQLite store: the read side. Every query runs on the calling thread's own read-only
 * connection (sqlite_reader_get), with statements prepared once per connection.
 * All reader SQL lives here; the site query is in sqlite_site.c, rollups in sqlite_rollup.c.
 * Readings rows are always: device, metric, ts, value, status, reason, received_at, site,
 * position (received_at and position come from the batch that brought the reading). */
#include "core/error.h"
#include "store/sqlite_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const reader_sql[SR_READINGS] = {
    [SR_DEVICES_FIRST] = "SELECT ext_id, kind, site, first_seen_us, last_seen_us FROM devices"
                         " ORDER BY ext_id LIMIT ?1",
    [SR_DEVICES_AFTER] = "SELECT ext_id, kind, site, first_seen_us, last_seen_us FROM devices"
                         " WHERE ext_id > ?2 ORDER BY ext_id LIMIT ?1",
    [SR_DEVICE] = "SELECT ext_id, kind, site, first_seen_us, last_seen_us FROM devices"
                  " WHERE ext_id = ?1",
    [SR_DEVICE_ID] = "SELECT id FROM devices WHERE ext_id = ?1",
    [SR_METRIC_ID] = "SELECT id FROM metrics WHERE name = ?1",
    [SR_LIVE] = "SELECT d.ext_id, m.name, l.ts_us, l.value, l.status, l.reason, b.received_at_us,"
                " d.site, b.position FROM devices d JOIN live l ON l.device_id = d.id"
                " JOIN metrics m ON m.id = l.metric_id LEFT JOIN batches b ON b.no = l.batch_no"
                " WHERE d.ext_id = ?1 ORDER BY m.name",
    [SR_COUNTS] = "SELECT name, value FROM counters",
    [SR_PING] = "SELECT 1 FROM counters LIMIT 1",
    [SR_BEGIN] = "BEGIN",
    [SR_COMMIT] = "COMMIT",
    [SR_LINKS] = "SELECT o.ext_id, o.kind, o.site, o.first_seen_us, o.last_seen_us"
                 " FROM devices d JOIN links l ON l.device_id = d.id"
                 " JOIN devices o ON o.id = l.linked_device_id"
                 " WHERE d.ext_id = ?1 AND l.relation = ?2 ORDER BY o.ext_id",
    [SR_LINKS_ANY] = "SELECT DISTINCT o.ext_id, o.kind, o.site, o.first_seen_us, o.last_seen_us"
                     " FROM devices d JOIN links l ON l.device_id = d.id"
                     " JOIN devices o ON o.id = l.linked_device_id"
                     " WHERE d.ext_id = ?1 ORDER BY o.ext_id",
    [SR_SITE_DEVICES] = "SELECT id, ext_id FROM devices WHERE site = ?1 ORDER BY ext_id",
    [SR_WSUM_HOURS] = "SELECT coalesce(sum(count), 0), total(sum) FROM rollup_hour"
                      " WHERE device_id = ?1 AND metric_id = ?2 AND bucket_us >= ?3"
                      " AND bucket_us < ?4",
    /* Walks the device's key range [from, to) (<= 2 hours here), all metrics, filtering. */
    [SR_WSUM_RAW] = "SELECT count(*), total(value) FROM readings WHERE device_id = ?1"
                    " AND ts_us >= ?3 AND ts_us < ?4 AND metric_id = ?2 AND status = 1",
};

/* One device's readings in (ts, metric name) order, for the site query's merge.
 * ?1 device id, ?2 metric id (0: all), ?3 from, ?4 to, ?5/?6 cursor (ts, metric) used when
 * ?9 <> 0, ?7 limit, ?8 <> 0: invalid only, ?10 device ext id, ?11 site (echoed as columns).
 * The key (device, ts, metric) gives ts order; only rows of equal ts are sorted by name. */
const char sqlite_site_stream_sql[] =
    "SELECT ?10, m.name, r.ts_us, r.value, r.status, r.reason, b.received_at_us, ?11, b.position"
    " FROM readings r JOIN metrics m ON m.id = r.metric_id LEFT JOIN batches b ON b.no = r.batch_no"
    " WHERE r.device_id = ?1 AND r.ts_us >= ?3 AND r.ts_us < ?4 AND (?2 = 0 OR r.metric_id = ?2)"
    " AND (?8 = 0 OR r.status = 0) AND (?9 = 0 OR r.ts_us > ?5 OR m.name > ?6)"
    " ORDER BY r.ts_us, m.name LIMIT ?7";

/* Builds the readings query for a combination of SQ_* flags. Parameters:
 * ?1 device id, ?2 metric id, ?3 from, ?4 to, ?5 cursor ts, ?6 cursor metric, ?7 limit. */
static void readings_sql(int flags, char *out, size_t len)
{
    snprintf(out, len,
             "SELECT d.ext_id, m.name, r.ts_us, r.value, r.status, r.reason, b.received_at_us,"
             " d.site, b.position FROM readings r JOIN metrics m ON m.id = r.metric_id"
             " JOIN devices d ON d.id = r.device_id LEFT JOIN batches b ON b.no = r.batch_no"
             " WHERE r.ts_us >= ?3 AND r.ts_us < ?4%s%s%s%s"
             " ORDER BY r.ts_us, %s LIMIT ?7",
             flags & SQ_DEVICE ? " AND r.device_id = ?1" : "",
             flags & SQ_METRIC ? " AND r.metric_id = ?2" : "",
             /* must match the partial index's WHERE to use it */
             flags & SQ_INVALID ? " AND r.status = 0" : "",
             !(flags & SQ_CURSOR) ? ""
             : flags & SQ_DEVICE  ? " AND r.ts_us >= ?5 AND (r.ts_us > ?5 OR m.name > ?6)"
                                  /* across devices the order, and so the cursor, has the device */
                                  : " AND r.ts_us >= ?5 AND (r.ts_us > ?5 OR d.ext_id > ?8 OR"
                                    " (d.ext_id = ?8 AND m.name > ?6))",
             flags & SQ_DEVICE ? "m.name" : "d.ext_id, m.name");
}

/* Builds the rollup query for a combination of SA_* flags. Parameters:
 * ?1 device id, ?2 metric id, ?3 from, ?4 to, ?5 cursor bucket, ?6 cursor metric, ?7 limit.
 * With a metric the key (device, metric, bucket) gives the order; all metrics need a sort
 * of the device's buckets in range. */
static void aggregates_sql(int flags, char *out, size_t len)
{
    snprintf(out, len,
             "SELECT m.name, a.bucket_us, a.count, a.sum, a.min, a.max, a.first_ts_us,"
             " a.first_value, a.last_ts_us, a.last_value FROM %s a"
             " JOIN metrics m ON m.id = a.metric_id"
             " WHERE a.device_id = ?1%s AND a.bucket_us >= ?3 AND a.bucket_us < ?4%s"
             " ORDER BY a.bucket_us, m.name LIMIT ?7",
             flags & SA_DAY ? "rollup_day" : "rollup_hour",
             flags & SA_METRIC ? " AND a.metric_id = ?2" : "",
             flags & SA_CURSOR ? " AND a.bucket_us >= ?5 AND (a.bucket_us > ?5 OR m.name > ?6)"
                               : "");
}

/* Returns the reader's statement idx, reset and ready to bind; NULL on error. */
static sqlite3_stmt *stmt_get(sqlite_reader *r, int idx)
{
    if (!r->stmt[idx]) {
        char sql[768];
        const char *text = sql;
        if (idx >= SR_AGGREGATES)
            aggregates_sql(idx - SR_AGGREGATES, sql, sizeof(sql));
        else if (idx >= SR_READINGS)
            readings_sql(idx - SR_READINGS, sql, sizeof(sql));
        else
            text = reader_sql[idx];
        if (sqlite3_prepare_v3(r->db, text, -1, SQLITE_PREPARE_PERSISTENT, &r->stmt[idx], NULL) !=
            SQLITE_OK)
            return NULL;
    }
    return r->stmt[idx];
}

sqlite3_stmt *sqlite_query_stmt(store *s, int idx)
{
    sqlite_reader *r = sqlite_reader_get((sqlite_store *)s);
    return r ? stmt_get(r, idx) : NULL;
}

int64_t sqlite_query_limit(size_t limit)
{
    return limit > (size_t)INT64_MAX ? -1 : (int64_t)limit; /* -1: no limit in SQLite */
}

const char *sqlite_query_text(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? t : "";
}

double sqlite_query_value(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* Steps st to its end, giving each row to row(); resets st. 0, MD_ERR_STORE. */
static int each_row(sqlite3_stmt *st, int (*row)(sqlite3_stmt *, void *, void *), void *cb,
                    void *arg)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (row(st, cb, arg)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st); /* ends the read transaction so the WAL can be checkpointed */
    return rc == SQLITE_DONE ? MD_OK : MD_ERR_STORE;
}

static int device_row(sqlite3_stmt *st, void *cb, void *arg)
{
    store_device d = {
        .id = sqlite_query_text(st, 0),
        .kind = sqlite_query_text(st, 1),
        .site = sqlite_query_text(st, 2),
        .first_seen_us = sqlite3_column_int64(st, 3),
        .last_seen_us = sqlite3_column_int64(st, 4),
    };
    return ((store_device_cb)cb)(arg, &d);
}

static int reading_row(sqlite3_stmt *st, void *cb, void *arg)
{
    double v = sqlite_query_value(st, 3);
    store_reading r = {
        .device = sqlite_query_text(st, 0),
        .metric = sqlite_query_text(st, 1),
        .ts_us = sqlite3_column_int64(st, 2),
        .value = isfinite(v) ? v : NAN,
        .valid = sqlite3_column_int(st, 4) != 0,
        .reason = sqlite_query_text(st, 5),
        .received_at_us = sqlite3_column_int64(st, 6),
        .site = sqlite_query_text(st, 7),
        .position = sqlite_query_text(st, 8),
    };
    return ((store_reading_cb)cb)(arg, &r);
}

int sqlite_store_devices(store *s, const char *after, size_t limit, store_device_cb cb, void *arg)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, after ? SR_DEVICES_AFTER : SR_DEVICES_FIRST);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, sqlite_query_limit(limit));
    if (after) sqlite3_bind_text(st, 2, after, -1, SQLITE_STATIC);
    return each_row(st, device_row, (void *)cb, arg);
}

int sqlite_store_device(store *s, const char *id, store_device_cb cb, void *arg)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, SR_DEVICE);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, id ? id : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) device_row(st, (void *)cb, arg);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return MD_OK;
    return rc == SQLITE_DONE ? MD_ERR_NOTFOUND : MD_ERR_STORE;
}

int sqlite_query_name_id(store *s, int idx, const char *name, int64_t *id, int *found)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, idx);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (*found) *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MD_OK : MD_ERR_STORE;
}

int sqlite_store_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg)
{
    if (q && q->site && !q->device) return sqlite_site_readings(s, q, cb, arg);
    if (!q || (!q->device && !q->only_invalid)) return MD_ERR_INVALID;
    int flags = 0, found, rc;
    int64_t dev = 0, met = 0;
    /* Ids first, so the main query walks the primary key instead of joining on names. */
    if (q->device) {
        if ((rc = sqlite_query_name_id(s, SR_DEVICE_ID, q->device, &dev, &found)) != MD_OK)
            return rc;
        if (!found) return MD_OK;
        flags |= SQ_DEVICE;
    }
    if (q->metric) {
        if ((rc = sqlite_query_name_id(s, SR_METRIC_ID, q->metric, &met, &found)) != MD_OK)
            return rc;
        if (!found) return MD_OK;
        flags |= SQ_METRIC;
    }
    if (q->only_invalid) flags |= SQ_INVALID;
    if (q->after_metric) flags |= SQ_CURSOR;

    sqlite3_stmt *st = sqlite_query_stmt(s, SR_READINGS + flags);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, dev);
    sqlite3_bind_int64(st, 2, met);
    sqlite3_bind_int64(st, 3, q->from_us);
    sqlite3_bind_int64(st, 4, q->to_us);
    sqlite3_bind_int64(st, 5, q->after_ts_us);
    sqlite3_bind_text(st, 6, q->after_metric ? q->after_metric : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, sqlite_query_limit(q->limit));
    if ((flags & SQ_CURSOR) && !(flags & SQ_DEVICE))
        sqlite3_bind_text(st, 8, q->after_device ? q->after_device : "", -1, SQLITE_STATIC);
    return each_row(st, reading_row, (void *)cb, arg);
}

int sqlite_store_live(store *s, const char *device, store_reading_cb cb, void *arg)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, SR_LIVE);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, device ? device : "", -1, SQLITE_STATIC);
    return each_row(st, reading_row, (void *)cb, arg);
}

int sqlite_store_links(store *s, const char *device, const char *relation, store_device_cb cb,
                       void *arg)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, relation ? SR_LINKS : SR_LINKS_ANY);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, device ? device : "", -1, SQLITE_STATIC);
    if (relation) sqlite3_bind_text(st, 2, relation, -1, SQLITE_STATIC);
    return each_row(st, device_row, (void *)cb, arg);
}

int sqlite_store_counts(store *s, store_counts *c)
{
    memset(c, 0, sizeof(*c));
    sqlite3_stmt *st = sqlite_query_stmt(s, SR_COUNTS);
    if (!st) return MD_ERR_STORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = sqlite_query_text(st, 0);
        int64_t v = sqlite3_column_int64(st, 1);
        if (strcmp(name, "devices") == 0)
            c->devices = (uint64_t)v;
        else if (strcmp(name, "readings") == 0)
            c->readings = (uint64_t)v;
        else if (strcmp(name, "invalid") == 0)
            c->invalid = (uint64_t)v;
        else if (strcmp(name, "conflicts") == 0)
            c->conflicts = (uint64_t)v;
        else if (strcmp(name, "batches") == 0)
            c->batches = (uint64_t)v;
        else if (strcmp(name, "last_applied_received_us") == 0)
            c->last_applied_received_us = v;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? MD_OK : MD_ERR_STORE;
}

int sqlite_store_ping(store *s)
{
    /* a failed write-back of the writer's files fails every commit until a restart */
    if (sqlite_wal_buffer_failures() != ((sqlite_store *)s)->wb_failures) return MD_ERR_STORE;
    sqlite3_stmt *st = sqlite_query_stmt(s, SR_PING);
    if (!st) return MD_ERR_STORE;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? MD_OK : MD_ERR_STORE;
}
