/* SQLite store: the read side. Every query runs on the calling thread's own read-only
 * connection (sqlite_reader_get), with statements prepared once per connection. */
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
    [SR_LIVE] = "SELECT d.ext_id, m.name, l.ts_us, l.value, l.status, l.reason, l.received_at_us"
                " FROM devices d JOIN live l ON l.device_id = d.id"
                " JOIN metrics m ON m.id = l.metric_id WHERE d.ext_id = ?1 ORDER BY m.name",
    [SR_COUNTS] = "SELECT name, value FROM counters",
    [SR_PING] = "SELECT 1 FROM counters LIMIT 1",
};

/* Builds the readings query for a combination of SQ_* flags. Parameters:
 * ?1 device id, ?2 metric id, ?3 from, ?4 to, ?5 cursor ts, ?6 cursor metric, ?7 limit. */
static void readings_sql(int flags, char *out, size_t len)
{
    snprintf(out, len,
             "SELECT d.ext_id, m.name, r.ts_us, r.value, r.status, r.reason, r.received_at_us"
             " FROM readings r JOIN metrics m ON m.id = r.metric_id"
             " JOIN devices d ON d.id = r.device_id"
             " WHERE r.ts_us >= ?3 AND r.ts_us < ?4%s%s%s%s"
             " ORDER BY r.ts_us, m.name LIMIT ?7",
             flags & SQ_DEVICE ? " AND r.device_id = ?1" : "",
             flags & SQ_METRIC ? " AND r.metric_id = ?2" : "",
             /* must match the partial index's WHERE to use it */
             flags & SQ_INVALID ? " AND r.status = 0" : "",
             flags & SQ_CURSOR ? " AND r.ts_us >= ?5 AND (r.ts_us > ?5 OR m.name > ?6)" : "");
}

/* Returns the reader's statement idx, reset and ready to bind; NULL on error. */
static sqlite3_stmt *stmt_get(sqlite_reader *r, int idx)
{
    if (!r->stmt[idx]) {
        char sql[640];
        const char *text = sql;
        if (idx >= SR_READINGS)
            readings_sql(idx - SR_READINGS, sql, sizeof(sql));
        else
            text = reader_sql[idx];
        if (sqlite3_prepare_v3(r->db, text, -1, SQLITE_PREPARE_PERSISTENT, &r->stmt[idx], NULL) !=
            SQLITE_OK)
            return NULL;
    }
    return r->stmt[idx];
}

static sqlite3_stmt *prepare(store *s, int idx)
{
    sqlite_reader *r = sqlite_reader_get((sqlite_store *)s);
    return r ? stmt_get(r, idx) : NULL;
}

static int64_t sql_limit(size_t limit)
{
    return limit > (size_t)INT64_MAX ? -1 : (int64_t)limit; /* -1: no limit in SQLite */
}

static const char *col_text(sqlite3_stmt *st, int col)
{
    const char *t = (const char *)sqlite3_column_text(st, col);
    return t ? t : "";
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
        .id = col_text(st, 0),
        .kind = col_text(st, 1),
        .site = col_text(st, 2),
        .first_seen_us = sqlite3_column_int64(st, 3),
        .last_seen_us = sqlite3_column_int64(st, 4),
    };
    return ((store_device_cb)cb)(arg, &d);
}

static int reading_row(sqlite3_stmt *st, void *cb, void *arg)
{
    double v = sqlite3_column_type(st, 3) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 3);
    store_reading r = {
        .device = col_text(st, 0),
        .metric = col_text(st, 1),
        .ts_us = sqlite3_column_int64(st, 2),
        .value = isfinite(v) ? v : NAN,
        .valid = sqlite3_column_int(st, 4) != 0,
        .reason = col_text(st, 5),
        .received_at_us = sqlite3_column_int64(st, 6),
    };
    return ((store_reading_cb)cb)(arg, &r);
}

int sqlite_store_devices(store *s, const char *after, size_t limit, store_device_cb cb, void *arg)
{
    sqlite3_stmt *st = prepare(s, after ? SR_DEVICES_AFTER : SR_DEVICES_FIRST);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, sql_limit(limit));
    if (after) sqlite3_bind_text(st, 2, after, -1, SQLITE_STATIC);
    return each_row(st, device_row, (void *)cb, arg);
}

int sqlite_store_device(store *s, const char *id, store_device_cb cb, void *arg)
{
    sqlite3_stmt *st = prepare(s, SR_DEVICE);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, id ? id : "", -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) device_row(st, (void *)cb, arg);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return MD_OK;
    return rc == SQLITE_DONE ? MD_ERR_NOTFOUND : MD_ERR_STORE;
}

/* Resolves a name to its id: 0 with *found set, or MD_ERR_STORE. */
static int name_id(store *s, int idx, const char *name, int64_t *id, int *found)
{
    sqlite3_stmt *st = prepare(s, idx);
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
    if (!q || (!q->device && !q->only_invalid)) return MD_ERR_INVALID;
    int flags = 0, found, rc;
    int64_t dev = 0, met = 0;
    /* Ids first, so the main query walks the primary key instead of joining on names. */
    if (q->device) {
        if ((rc = name_id(s, SR_DEVICE_ID, q->device, &dev, &found)) != MD_OK) return rc;
        if (!found) return MD_OK;
        flags |= SQ_DEVICE;
    }
    if (q->metric) {
        if ((rc = name_id(s, SR_METRIC_ID, q->metric, &met, &found)) != MD_OK) return rc;
        if (!found) return MD_OK;
        flags |= SQ_METRIC;
    }
    if (q->only_invalid) flags |= SQ_INVALID;
    if (q->after_metric) flags |= SQ_CURSOR;

    sqlite3_stmt *st = prepare(s, SR_READINGS + flags);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_int64(st, 1, dev);
    sqlite3_bind_int64(st, 2, met);
    sqlite3_bind_int64(st, 3, q->from_us);
    sqlite3_bind_int64(st, 4, q->to_us);
    sqlite3_bind_int64(st, 5, q->after_ts_us);
    sqlite3_bind_text(st, 6, q->after_metric ? q->after_metric : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, sql_limit(q->limit));
    return each_row(st, reading_row, (void *)cb, arg);
}

int sqlite_store_live(store *s, const char *device, store_reading_cb cb, void *arg)
{
    sqlite3_stmt *st = prepare(s, SR_LIVE);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, device ? device : "", -1, SQLITE_STATIC);
    return each_row(st, reading_row, (void *)cb, arg);
}

int sqlite_store_counts(store *s, store_counts *c)
{
    memset(c, 0, sizeof(*c));
    sqlite3_stmt *st = prepare(s, SR_COUNTS);
    if (!st) return MD_ERR_STORE;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = col_text(st, 0);
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
    sqlite3_stmt *st = prepare(s, SR_PING);
    if (!st) return MD_ERR_STORE;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? MD_OK : MD_ERR_STORE;
}
