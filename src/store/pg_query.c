/* PostgreSQL store: the read side. Every query borrows a connection from the pool
 * (pg_pool_get), runs one statement (one snapshot) and hands the rows to the callback.
 * Names are resolved in the statement itself (joins on devices.ext_id / metrics.name).
 * Readings rows are always: device, metric, ts, value, status, reason, received_at, site,
 * position (received_at and position come from the batch that brought the reading). */
#include "core/error.h"
#include "store/pg_int.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OID_INT8 20
#define OID_TEXT 25
#define OID_BOOL 16
#define HOUR_US (INT64_C(3600) * 1000000)

/* Parameters of one statement: values as text, with their types. */
typedef struct params {
    const char *v[12];
    Oid t[12];
    char num[12][24];
    int n;
} params;

static void p_i64(params *p, int64_t v)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, v);
    p->v[p->n] = p->num[p->n];
    p->t[p->n++] = OID_INT8;
}

static void p_text(params *p, const char *s) /* NULL stays NULL */
{
    p->v[p->n] = s;
    p->t[p->n++] = OID_TEXT;
}

static void p_bool(params *p, int b)
{
    p->v[p->n] = b ? "t" : "f";
    p->t[p->n++] = OID_BOOL;
}

static void p_limit(params *p, size_t limit) /* NULL: LIMIT ALL */
{
    if (limit > (size_t)INT64_MAX) {
        p->v[p->n] = NULL;
        p->t[p->n++] = OID_INT8;
    } else {
        p_i64(p, (int64_t)limit);
    }
}

typedef int (*row_fn)(const PGresult *r, int i, void *cb, void *arg);

/* Runs sql on a pooled connection and gives each row to row() until it returns non-zero.
 * A broken connection (server restart) is reset and the statement tried once more.
 * *rows (if given) gets the row count. 0 or MD_ERR_STORE. */
static int query(store *s, const char *sql, const params *p, row_fn row, void *cb, void *arg,
                 int *rows)
{
    pg_store *ps = (pg_store *)s;
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *c = pg_pool_get(ps);
        if (!c) continue;
        PGresult *r = PQexecParams(c, sql, p ? p->n : 0, p ? p->t : NULL, p ? p->v : NULL, NULL,
                                   NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            int broken = PQstatus(c) != CONNECTION_OK;
            PQclear(r);
            pg_pool_put(ps, c);
            if (broken) continue;
            return MD_ERR_STORE;
        }
        int n = PQntuples(r);
        if (rows) *rows = n;
        for (int i = 0; i < n && row; i++)
            if (row(r, i, cb, arg)) break;
        PQclear(r);
        pg_pool_put(ps, c);
        return MD_OK;
    }
    return MD_ERR_STORE;
}

static const char *text(const PGresult *r, int i, int col) { return PQgetvalue(r, i, col); }

static int64_t i64(const PGresult *r, int i, int col)
{
    return strtoll(PQgetvalue(r, i, col), NULL, 10);
}

static int device_row(const PGresult *r, int i, void *cb, void *arg)
{
    store_device d = {
        .id = text(r, i, 0),
        .kind = text(r, i, 1),
        .site = text(r, i, 2),
        .first_seen_us = i64(r, i, 3),
        .last_seen_us = i64(r, i, 4),
    };
    return ((store_device_cb)cb)(arg, &d);
}

static int reading_row(const PGresult *r, int i, void *cb, void *arg)
{
    double v = pg_f64(text(r, i, 3));
    store_reading o = {
        .device = text(r, i, 0),
        .metric = text(r, i, 1),
        .ts_us = i64(r, i, 2),
        .value = isfinite(v) ? v : NAN,
        .valid = atoi(text(r, i, 4)) != 0,
        .reason = text(r, i, 5),
        .received_at_us = i64(r, i, 6),
        .site = text(r, i, 7),
        .position = text(r, i, 8),
    };
    return ((store_reading_cb)cb)(arg, &o);
}

#define DEVICE_COLS "ext_id, kind, site, first_seen_us, last_seen_us"

int pg_store_devices(store *s, const char *after, size_t limit, store_device_cb cb, void *arg)
{
    params p = {0};
    p_limit(&p, limit);
    p_text(&p, after);
    return query(s,
                 "SELECT " DEVICE_COLS " FROM devices WHERE ($2::text IS NULL OR ext_id > $2)"
                 " ORDER BY ext_id LIMIT $1",
                 &p, device_row, (void *)cb, arg, NULL);
}

int pg_store_device(store *s, const char *id, store_device_cb cb, void *arg)
{
    params p = {0};
    p_text(&p, id ? id : "");
    int n = 0;
    int rc = query(s, "SELECT " DEVICE_COLS " FROM devices WHERE ext_id = $1", &p, device_row,
                   (void *)cb, arg, &n);
    if (rc != MD_OK) return rc;
    return n ? MD_OK : MD_ERR_NOTFOUND;
}

/* One row per reading: the columns reading_row expects, from r (readings), d, m, b. */
#define READING_COLS                                                                               \
    "d.ext_id, m.name, r.ts_us, r.value, r.status, r.reason, b.received_at_us, d.site, b.position"

/* Site query: a site's devices (devices_site index) each give at most limit rows in
 * (ts, metric) order from their key range, merged by one ORDER BY: a page reads at most
 * limit rows per device. Parameters: $1 site, $2 metric or NULL, $3 from, $4 to, $5 cursor
 * ts, $6 cursor metric, $7 limit, $8 cursor device, $9 cursor on, $10 invalid only. */
static const char site_sql[] =
    "SELECT x.* FROM devices d CROSS JOIN LATERAL (SELECT " READING_COLS
    " FROM readings r JOIN metrics m ON m.id = r.metric_id LEFT JOIN batches b ON b.no = r.batch_no"
    " WHERE r.device_id = d.id AND r.ts_us >= $3 AND r.ts_us < $4"
    " AND ($2::text IS NULL OR m.name = $2) AND (NOT $10 OR r.status = 0)"
    " AND (NOT $9 OR r.ts_us > $5 OR (r.ts_us = $5 AND (d.ext_id > $8"
    " OR (d.ext_id = $8 AND m.name > $6))))"
    " ORDER BY r.ts_us, m.name LIMIT $7) x"
    " WHERE d.site = $1 ORDER BY x.ts_us, x.ext_id, x.name LIMIT $7";

int pg_store_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg)
{
    params p = {0};
    if (q && q->site && !q->device) {
        if (!q->site[0]) return MD_ERR_INVALID; /* "" would be every device without a site */
        if (q->limit == 0) return MD_OK;
        p_text(&p, q->site);
        p_text(&p, q->metric);
        p_i64(&p, q->from_us);
        p_i64(&p, q->to_us);
        p_i64(&p, q->after_ts_us);
        p_text(&p, q->after_metric ? q->after_metric : "");
        p_limit(&p, q->limit);
        p_text(&p, q->after_device ? q->after_device : "");
        p_bool(&p, q->after_device || q->after_metric);
        p_bool(&p, q->only_invalid);
        return query(s, site_sql, &p, reading_row, (void *)cb, arg, NULL);
    }
    if (!q || (!q->device && !q->only_invalid)) return MD_ERR_INVALID;
    char sql[1024];
    int cursor = q->after_metric != NULL;
    snprintf(sql, sizeof(sql),
             "SELECT " READING_COLS " FROM readings r JOIN devices d ON d.id = r.device_id"
             " JOIN metrics m ON m.id = r.metric_id LEFT JOIN batches b ON b.no = r.batch_no"
             " WHERE r.ts_us >= $3 AND r.ts_us < $4%s%s%s%s ORDER BY r.ts_us, %s LIMIT $7",
             q->device ? " AND d.ext_id = $1" : "", q->metric ? " AND m.name = $2" : "",
             q->only_invalid ? " AND r.status = 0" : "", /* the partial index's WHERE */
             !cursor     ? ""
             : q->device ? " AND r.ts_us >= $5 AND (r.ts_us > $5 OR m.name > $6)"
                         /* across devices the order, and so the cursor, has the device */
                         : " AND r.ts_us >= $5 AND (r.ts_us > $5 OR d.ext_id > $8 OR"
                           " (d.ext_id = $8 AND m.name > $6))",
             q->device ? "m.name" : "d.ext_id, m.name");
    p_text(&p, q->device ? q->device : "");
    p_text(&p, q->metric ? q->metric : "");
    p_i64(&p, q->from_us);
    p_i64(&p, q->to_us);
    p_i64(&p, q->after_ts_us);
    p_text(&p, q->after_metric ? q->after_metric : "");
    p_limit(&p, q->limit);
    p_text(&p, q->after_device ? q->after_device : "");
    return query(s, sql, &p, reading_row, (void *)cb, arg, NULL);
}

int pg_store_live(store *s, const char *device, store_reading_cb cb, void *arg)
{
    params p = {0};
    p_text(&p, device ? device : "");
    return query(s,
                 "SELECT d.ext_id, m.name, r.ts_us, r.value, r.status, r.reason, b.received_at_us,"
                 " d.site, b.position FROM devices d JOIN live r ON r.device_id = d.id"
                 " JOIN metrics m ON m.id = r.metric_id LEFT JOIN batches b ON b.no = r.batch_no"
                 " WHERE d.ext_id = $1 ORDER BY m.name",
                 &p, reading_row, (void *)cb, arg, NULL);
}

int pg_store_links(store *s, const char *device, const char *relation, store_device_cb cb,
                   void *arg)
{
    params p = {0};
    p_text(&p, device ? device : "");
    p_text(&p, relation);
    return query(s,
                 "SELECT DISTINCT o.ext_id, o.kind, o.site, o.first_seen_us, o.last_seen_us"
                 " FROM devices d JOIN links l ON l.device_id = d.id"
                 " JOIN devices o ON o.id = l.linked_device_id"
                 " WHERE d.ext_id = $1 AND ($2::text IS NULL OR l.relation = $2)"
                 " ORDER BY o.ext_id",
                 &p, device_row, (void *)cb, arg, NULL);
}

static int agg_row(const PGresult *r, int i, void *cb, void *arg)
{
    store_aggregate a = {
        .metric = text(r, i, 0),
        .bucket_us = i64(r, i, 1),
        .count = (uint64_t)i64(r, i, 2),
        .sum = pg_f64(text(r, i, 3)),
        .min = pg_f64(text(r, i, 4)),
        .max = pg_f64(text(r, i, 5)),
        .first_ts_us = i64(r, i, 6),
        .first = pg_f64(text(r, i, 7)),
        .last_ts_us = i64(r, i, 8),
        .last = pg_f64(text(r, i, 9)),
    };
    return ((int (*)(void *, const store_aggregate *))cb)(arg, &a);
}

int pg_store_aggregates(store *s, const store_aggregates_query *q,
                        int (*cb)(void *arg, const store_aggregate *a), void *arg)
{
    if (!q || !q->device || (q->bucket != STORE_BUCKET_HOUR && q->bucket != STORE_BUCKET_DAY))
        return MD_ERR_INVALID;
    char sql[768];
    snprintf(sql, sizeof(sql),
             "SELECT m.name, a.bucket_us, a.count, a.sum, a.min, a.max, a.first_ts_us,"
             " a.first_value, a.last_ts_us, a.last_value FROM %s a"
             " JOIN devices d ON d.id = a.device_id JOIN metrics m ON m.id = a.metric_id"
             " WHERE d.ext_id = $1 AND ($2::text IS NULL OR m.name = $2)"
             " AND a.bucket_us >= $3 AND a.bucket_us < $4"
             " AND (NOT $8 OR a.bucket_us > $5 OR (a.bucket_us = $5 AND m.name > $6))"
             " ORDER BY a.bucket_us, m.name LIMIT $7",
             q->bucket == STORE_BUCKET_DAY ? "rollup_day" : "rollup_hour");
    params p = {0};
    p_text(&p, q->device);
    p_text(&p, q->metric);
    p_i64(&p, q->from_us);
    p_i64(&p, q->to_us);
    p_i64(&p, q->after_bucket_us);
    p_text(&p, q->after_metric ? q->after_metric : "");
    p_limit(&p, q->limit);
    p_bool(&p, q->after_metric != NULL);
    return query(s, sql, &p, agg_row, (void *)cb, arg, NULL);
}

static int wsum_row(const PGresult *r, int i, void *cb, void *arg)
{
    (void)cb;
    store_window_sum *out = arg;
    for (int part = 0; part < 3; part++) { /* in ts order, as the sqlite backend adds them */
        out->count += (uint64_t)i64(r, i, 2 * part);
        out->sum += pg_f64(text(r, i, 2 * part + 1));
    }
    return 1;
}

/* Start of ts's hour (floor, also for negative ts); saturates at INT64_MIN. */
static int64_t hour_start(int64_t ts)
{
    int64_t q = ts / HOUR_US, out;
    if (ts % HOUR_US < 0) q--;
    return __builtin_mul_overflow(q, HOUR_US, &out) ? INT64_MIN : out;
}

int pg_store_window_sum(store *s, const char *device, const char *metric, int64_t from_us,
                        int64_t to_us, store_window_sum *out)
{
    memset(out, 0, sizeof(*out));
    if (!device || !metric || from_us >= to_us) return MD_OK;
    /* Whole hours [h0, h1) from rollup_hour; the partial edges from raw readings. */
    int64_t h0 = hour_start(from_us), h1 = hour_start(to_us);
    if (h0 < from_us && __builtin_add_overflow(h0, HOUR_US, &h0)) h0 = INT64_MAX;
    params p = {0};
    p_text(&p, device);
    p_text(&p, metric);
    if (h0 >= h1) { /* under 2 hours: all raw */
        int64_t v[6] = {from_us, to_us, 0, 0, 0, 0};
        for (int i = 0; i < 6; i++)
            p_i64(&p, v[i]);
    } else {
        int64_t v[6] = {from_us, h0, h0, h1, h1, to_us};
        for (int i = 0; i < 6; i++)
            p_i64(&p, v[i]);
    }
    /* One statement: the three parts see the same snapshot. */
    int rc = query(s,
                   "WITH k AS (SELECT d.id AS dev, m.id AS met FROM devices d, metrics m"
                   " WHERE d.ext_id = $1 AND m.name = $2),"
                   " raw1 AS (SELECT count(*) AS n, coalesce(sum(r.value), 0) AS s FROM readings r,"
                   " k WHERE r.device_id = k.dev AND r.metric_id = k.met AND r.status = 1"
                   " AND r.ts_us >= $3 AND r.ts_us < $4),"
                   " hrs AS (SELECT coalesce(sum(a.count), 0) AS n, coalesce(sum(a.sum), 0) AS s"
                   " FROM rollup_hour a, k WHERE a.device_id = k.dev AND a.metric_id = k.met"
                   " AND a.bucket_us >= $5 AND a.bucket_us < $6),"
                   " raw2 AS (SELECT count(*) AS n, coalesce(sum(r.value), 0) AS s FROM readings r,"
                   " k WHERE r.device_id = k.dev AND r.metric_id = k.met AND r.status = 1"
                   " AND r.ts_us >= $7 AND r.ts_us < $8)"
                   " SELECT raw1.n, raw1.s, hrs.n, hrs.s, raw2.n, raw2.s FROM raw1, hrs, raw2",
                   &p, wsum_row, NULL, out, NULL);
    if (rc != MD_OK) memset(out, 0, sizeof(*out));
    return rc;
}

static int counts_row(const PGresult *r, int i, void *cb, void *arg)
{
    (void)cb;
    store_counts *c = arg;
    c->devices = (uint64_t)i64(r, i, 0);
    c->readings = (uint64_t)i64(r, i, 1);
    c->invalid = (uint64_t)i64(r, i, 2);
    c->conflicts = (uint64_t)i64(r, i, 3);
    c->batches = (uint64_t)i64(r, i, 4);
    c->last_applied_received_us = i64(r, i, 5);
    return 1;
}

int pg_store_counts(store *s, store_counts *c)
{
    memset(c, 0, sizeof(*c));
    return query(s,
                 "SELECT devices, readings, invalid, conflicts, batches, last_applied_received_us"
                 " FROM counters WHERE id = 1",
                 NULL, counts_row, NULL, c, NULL);
}

int pg_store_ping(store *s)
{
    int n = 0;
    int rc = query(s, "SELECT 1", NULL, NULL, NULL, NULL, &n);
    return rc == MD_OK && n == 1 ? MD_OK : MD_ERR_STORE;
}
