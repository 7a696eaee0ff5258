/* PostgreSQL store: apply() — one transaction for all the batches of one call, with the same
 * semantics as sqlite_apply.c, and correct when several workers apply at once.
 *
 * Concurrency: the transaction locks the rows of every device it touches (INSERT ... ON
 * CONFLICT DO NOTHING, then SELECT ... ORDER BY ext_id FOR UPDATE: one global lock order)
 * before it reads anything derived from them. Readings, live rows and rollups all belong to
 * a device, so two transactions sharing any of them are serialised by the device locks, and
 * what one reads (existing keys, live rows, the anomaly window) cannot change under it. Live
 * rows are also taken FOR UPDATE in (device, metric) order. Deadlocks (e.g. two new devices
 * inserted in crossed order) and serialization failures roll back and retry the whole call.
 * Metrics and partitions are created beforehand in their own short transactions: they are
 * harmless if the apply then fails, and creating them never waits inside the transaction.
 *
 * Rows go in with multi-row INSERT ... SELECT FROM unnest($n::type[]) statements: a fixed
 * handful of round trips per call, whatever the number of readings. */
#include "core/error.h"
#include "core/timeutil.h"
#include "store/pg_apply.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define APPLY_ATTEMPTS 6
#define KEYS_LOOKUP_STREAK 64 /* calls that read the stored keys first after finding some */
#define HOUR_US (INT64_C(3600) * 1000000)
#define DAY_US (24 * HOUR_US)

/* ---- per-call state ---- */

/* ---- the walk: same decisions as sqlite_apply.c, in memory ---- */

/* Same stored value? Bitwise, but NaN == NaN and 0.0 == -0.0 (as in the sqlite backend). */
static int same_value(double a, double b)
{
    if (isnan(a) && isnan(b)) return 1;
    if (a == 0 && b == 0) return 1;
    return memcmp(&a, &b, sizeof(a)) == 0;
}

static int64_t bucket_start(int64_t ts, int64_t size)
{
    int64_t q = ts / size;
    if (ts % size < 0) q--;
    int64_t out;
    return __builtin_mul_overflow(q, size, &out) ? INT64_MIN : out;
}

static int bucket_add(pg_map3 *m, bucket **items, size_t *n, size_t *cap, int64_t dev, int64_t met,
                      int64_t start, int64_t ts, double v)
{
    int found;
    int32_t *slot = pg_map3_slot(m, dev, met, start, &found);
    if (!slot) return -1;
    if (!found) {
        if (pg_grow((void **)items, cap, *n, sizeof(bucket))) return -1;
        *slot = (int32_t)*n;
        (*items)[(*n)++] = (bucket){.dev = dev, .met = met, .start = start, .count = 1, .sum = v,
                                    .min = v, .max = v, .first = v, .last = v, .first_ts = ts,
                                    .last_ts = ts};
        return 0;
    }
    bucket *e = &(*items)[*slot];
    e->count++;
    e->sum += v;
    if (v < e->min) e->min = v;
    if (v > e->max) e->max = v;
    if (ts < e->first_ts) e->first_ts = ts, e->first = v;
    if (ts > e->last_ts) e->last_ts = ts, e->last = v;
    return 0;
}

/* Records what became of reading i of batch bi, for the observer after COMMIT (an attempt
 * that rolls back and is retried must not be reported twice). */
static int observe(apply_ctx *c, size_t bi, size_t i, int outcome, const char *reason,
                   int copy)
{
    if (!c->ps->observer) return MD_OK;
    if (pg_grow((void **)&c->obs, &c->cap_obs, c->n_obs, sizeof(observation)))
        return pg_apply_nomem(c);
    observation *o = &c->obs[c->n_obs];
    *o = (observation){.batch = bi, .index = i, .outcome = outcome, .reason = reason};
    if (copy && !(o->own = strdup(reason))) return pg_apply_nomem(c);
    if (copy) o->reason = o->own;
    c->n_obs++;
    return MD_OK;
}

static int walk_batch(apply_ctx *c, size_t bi, const batch *b, int64_t batch_no)
{
    char reason[384], bid[40];
    snprintf(bid, sizeof(bid), "\\\\x"); /* array element form of a bytea */
    for (int k = 0; k < 16; k++)
        snprintf(bid + 3 + 2 * k, 3, "%02x", b->id[k]);
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        int64_t dev = pg_apply_dev_id(c, r->device), met = pg_metric_id(c->ps, r->metric);
        /* Ingest's verdict is final and verbatim; it skips our rules like any other failure. */
        const char *why = r->invalid_reason && r->invalid_reason[0] ? r->invalid_reason : NULL;
        int passed =
            !why && rules_validate(r, b->received_at_us, &c->ps->rules, reason, sizeof(reason));
        int status = passed;
        long k = -1;
        if (passed) {
            if ((k = pg_apply_live_find(c, dev, met, 1)) < 0) return pg_apply_nomem(c);
            status = rules_anomaly(&c->live[k].w, r->value, reason, sizeof(reason));
        }
        if (!why) why = status ? "" : reason;

        int found;
        long key = pg_apply_key_add(c, dev, r->ts_us, met, r->value, &found);
        if (key == -2) return pg_apply_nomem(c);
        if (found) {
            double stored = c->key_value[key];
            if (same_value(stored, r->value)) {
                c->st.duplicates++;
                if (observe(c, bi, i, STORE_OUTCOME_DUPLICATE, "", 0)) return MD_ERR_NOMEM;
                continue;
            }
            c->st.conflicts++;
            if (observe(c, bi, i, STORE_OUTCOME_CONFLICT, "", 0)) return MD_ERR_NOMEM;
            c->n_conflicts++;
            pg_buf_i64(&c->cf[0], dev);
            pg_buf_i64(&c->cf[1], met);
            pg_buf_i64(&c->cf[2], r->ts_us);
            pg_buf_f64(&c->cf[3], stored);
            pg_buf_f64(&c->cf[4], r->value);
            pg_buf_str(&c->cf[5], "\"");
            pg_buf_str(&c->cf[5], bid);
            pg_buf_str(&c->cf[5], "\",");
            pg_buf_i64(&c->cf[6], b->received_at_us);
            continue;
        }
        c->n_new++;
        pg_buf_i64(&c->a[0], dev);
        pg_buf_i64(&c->a[1], met);
        pg_buf_i64(&c->a[2], r->ts_us);
        pg_buf_f64(&c->a[3], r->value);
        pg_buf_i64(&c->a[4], status);
        pg_buf_text(&c->a[5], why);
        pg_buf_i64(&c->a[6], batch_no);
        c->st.stored++;
        if (!status) c->st.invalid++;
        if (observe(c, bi, i, status ? STORE_OUTCOME_VALID : STORE_OUTCOME_INVALID, why,
                    why == reason))
            return MD_ERR_NOMEM;
        if (!passed) continue; /* e.g. a far-future ts must not pin the live row */

        live_entry *l = &c->live[k];
        if (status) {
            rules_window_push(&l->w, r->value);
            if (bucket_add(&c->hours_map, &c->hours, &c->n_hours, &c->cap_hours, dev, met,
                           bucket_start(r->ts_us, HOUR_US), r->ts_us, r->value) ||
                bucket_add(&c->days_map, &c->days, &c->n_days, &c->cap_days, dev, met,
                           bucket_start(r->ts_us, DAY_US), r->ts_us, r->value))
                return pg_apply_nomem(c);
        }
        l->dirty = 1;
        /* Newest ts wins; a late, older reading leaves the live row as it is. */
        if (!l->has || r->ts_us > l->ts_us) {
            l->has = 1;
            l->ts_us = r->ts_us;
            l->value = r->value;
            l->status = status;
            l->batch_no = batch_no;
            l->reason = why;
            if (why == reason) { /* reason[] is reused by the next reading: keep a copy */
                free(l->own);
                if (!(l->own = strdup(reason))) return pg_apply_nomem(c);
                l->reason = l->own;
            }
        }
    }
    return MD_OK;
}

/* ---- writes ---- */

#define ROLLUP_UPSERT(table)                                                                       \
    "INSERT INTO " table " AS t(device_id, metric_id, bucket_us, count, sum, min, max,"            \
    " first_ts_us, first_value, last_ts_us, last_value) SELECT * FROM unnest($1::bigint[],"        \
    " $2::bigint[], $3::bigint[], $4::bigint[], $5::float8[], $6::float8[], $7::float8[],"         \
    " $8::bigint[], $9::float8[], $10::bigint[], $11::float8[]) ORDER BY 1, 2, 3"                  \
    " ON CONFLICT (device_id, metric_id, bucket_us) DO UPDATE SET count = t.count + excluded.count," \
    " sum = t.sum + excluded.sum, min = least(t.min, excluded.min),"                               \
    " max = greatest(t.max, excluded.max), first_ts_us = least(t.first_ts_us, excluded.first_ts_us)," \
    " first_value = CASE WHEN excluded.first_ts_us < t.first_ts_us THEN excluded.first_value"      \
    " ELSE t.first_value END, last_ts_us = greatest(t.last_ts_us, excluded.last_ts_us),"           \
    " last_value = CASE WHEN excluded.last_ts_us > t.last_ts_us THEN excluded.last_value"          \
    " ELSE t.last_value END"

static int rollups_write(apply_ctx *c, const bucket *v, size_t n, const char *sql)
{
    if (!n) return MD_OK;
    pg_buf *a = c->a;
    pg_apply_bufs_reset(a, 10);
    pg_buf extra = {0}; /* the 11th array */
    pg_buf_open(&extra);
    for (size_t i = 0; i < n; i++) {
        pg_buf_i64(&a[0], v[i].dev);
        pg_buf_i64(&a[1], v[i].met);
        pg_buf_i64(&a[2], v[i].start);
        pg_buf_i64(&a[3], (int64_t)v[i].count);
        pg_buf_f64(&a[4], v[i].sum);
        pg_buf_f64(&a[5], v[i].min);
        pg_buf_f64(&a[6], v[i].max);
        pg_buf_i64(&a[7], v[i].first_ts);
        pg_buf_f64(&a[8], v[i].first);
        pg_buf_i64(&a[9], v[i].last_ts);
        pg_buf_f64(&extra, v[i].last);
    }
    const char *p[11];
    for (int i = 0; i < 10; i++) {
        pg_buf_close(&a[i]);
        p[i] = a[i].p;
    }
    pg_buf_close(&extra);
    p[10] = extra.p;
    int oom = extra.oom;
    for (int i = 0; i < 10; i++)
        oom |= a[i].oom;
    int rc = oom ? pg_apply_nomem(c) : pg_apply_run_ok(c, "write rollups", sql, 11, p);
    pg_buf_free(&extra);
    return rc;
}

static int links_write(apply_ctx *c, const batch *b)
{
    for (size_t i = 0; i < b->n_links; i++) {
        const batch_link *l = &b->links[i];
        if (!pg_apply_link_valid(l)) continue;
        char d[24], o[24], t[24];
        snprintf(d, sizeof(d), "%" PRId64, pg_apply_dev_id(c, l->device));
        snprintf(o, sizeof(o), "%" PRId64, pg_apply_dev_id(c, l->linked_device));
        snprintf(t, sizeof(t), "%" PRId64, b->received_at_us);
        const char *p[4] = {d, o, l->relation, t};
        if (pg_apply_run_ok(c, "upsert link",
                   "INSERT INTO links AS k(device_id, linked_device_id, relation, updated_at_us)"
                   " VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, relation, linked_device_id)"
                   " DO UPDATE SET updated_at_us = greatest(k.updated_at_us, excluded.updated_at_us)",
                   4, p) != MD_OK)
            return MD_ERR_STORE;
    }
    return MD_OK;
}

static int writes(apply_ctx *c)
{
    int rc;
    if (c->n_new) {
        PGresult *r = pg_apply_run_arrays(c, "insert readings",
                                 "INSERT INTO readings(device_id, metric_id, ts_us, value, status,"
                                 " reason, batch_no) SELECT * FROM unnest($1::bigint[],"
                                 " $2::bigint[], $3::bigint[], $4::float8[], $5::smallint[],"
                                 " $6::text[], $7::bigint[])",
                                 c->a, 7);
        /* No ON CONFLICT: speculative insertion cost ~60 % more per row (200k rows: 663 ms
         * vs 414 ms). A stored key makes it fail with a unique violation; the call is then
         * redone with the keys read first (see pg_store_apply), under the device locks. */
        if (!r) return MD_ERR_STORE;
        size_t got = strtoull(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        if (got != c->n_new) { /* cannot happen; retry if it does */
            c->retry = 1;
            snprintf(c->err, c->errlen, "pg store: %zu of %zu readings inserted", got, c->n_new);
            return MD_ERR_STORE;
        }
    }
    if (c->n_conflicts) {
        PGresult *r = pg_apply_run_arrays(c, "insert conflicts",
                                 "INSERT INTO conflicts(device_id, metric_id, ts_us, stored_value,"
                                 " new_value, batch_id, received_at_us) SELECT * FROM"
                                 " unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[],"
                                 " $5::float8[], $6::bytea[], $7::bigint[])",
                                 c->cf, 7);
        PQclear(r);
        if (!r) return MD_ERR_STORE;
    }
    pg_buf *a = c->a;
    pg_apply_bufs_reset(a, 9);
    size_t dirty = 0;
    for (size_t i = 0; i < c->n_live; i++) {
        live_entry *l = &c->live[i];
        if (!l->dirty) continue;
        dirty++;
        uint8_t blob[RULES_WINDOW_BLOB];
        size_t blen = rules_window_encode(&l->w, blob);
        pg_buf_i64(&a[0], l->dev);
        pg_buf_i64(&a[1], l->met);
        pg_buf_i64(&a[2], l->ts_us);
        pg_buf_f64(&a[3], l->value);
        pg_buf_i64(&a[4], l->status);
        pg_buf_text(&a[5], l->reason ? l->reason : "");
        pg_buf_i64(&a[6], l->batch_no);
        pg_buf_i64(&a[7], c->now_us);
        pg_buf_hex(&a[8], blob, blen);
    }
    if (dirty) {
        PGresult *r = pg_apply_run_arrays(c, "write live state",
                                 "INSERT INTO live AS l(device_id, metric_id, ts_us, value, status,"
                                 " reason, batch_no, updated_at_us, anomaly_window) SELECT * FROM"
                                 " unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::float8[],"
                                 " $5::smallint[], $6::text[], $7::bigint[], $8::bigint[],"
                                 " $9::bytea[]) ORDER BY 1, 2 ON CONFLICT (device_id, metric_id)"
                                 " DO UPDATE SET ts_us = excluded.ts_us, value = excluded.value,"
                                 " status = excluded.status, reason = excluded.reason,"
                                 " batch_no = excluded.batch_no,"
                                 " updated_at_us = excluded.updated_at_us,"
                                 " anomaly_window = excluded.anomaly_window",
                                 a, 9);
        PQclear(r);
        if (!r) return MD_ERR_STORE;
    }
    if ((rc = rollups_write(c, c->hours, c->n_hours, ROLLUP_UPSERT("rollup_hour"))) ||
        (rc = rollups_write(c, c->days, c->n_days, ROLLUP_UPSERT("rollup_day"))))
        return rc;
    return MD_OK;
}

static int counters_write(apply_ctx *c)
{
    if (!c->st.batches && !c->new_devices) return MD_OK; /* nothing changed: take no lock */
    char v[7][24];
    uint64_t adds[6] = {c->new_devices,   c->st.stored,    c->st.invalid,
                        c->st.duplicates, c->st.conflicts, c->st.batches};
    for (int i = 0; i < 6; i++)
        snprintf(v[i], sizeof(v[i]), "%" PRIu64, adds[i]);
    snprintf(v[6], sizeof(v[6]), "%" PRId64, c->st.batches ? c->max_received_us : 0);
    const char *p[7] = {v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    /* Last statement of the transaction: the one row every worker updates is held briefly. */
    return pg_apply_run_ok(c, "update counters",
                  "UPDATE counters SET devices = devices + $1, readings = readings + $2,"
                  " invalid = invalid + $3, duplicates = duplicates + $4,"
                  " conflicts = conflicts + $5, batches = batches + $6,"
                  " last_applied_received_us = greatest(last_applied_received_us, $7)"
                  " WHERE id = 1",
                  7, p);
}

/* ---- apply ---- */

static void ctx_reset(apply_ctx *c)
{
    for (size_t i = 0; i < c->n_live; i++)
        free(c->live[i].own);
    for (size_t i = 0; i < c->n_obs; i++)
        free(c->obs[i].own);
    c->n_obs = 0;
    PQclear(c->lres);
    c->lres = NULL;
    c->retry = 0;
    c->unique_violation = 0;
    c->keys_found = 0;
    memset(&c->st, 0, sizeof(c->st));
    c->new_devices = 0;
    c->max_received_us = INT64_MIN;
    c->n_devs = c->n_live = c->n_keys = c->n_hours = c->n_days = 0;
    c->n_new = c->n_conflicts = 0;
    pg_map3 *maps[4] = {&c->livemap, &c->keys, &c->hours_map, &c->days_map};
    for (int i = 0; i < 4; i++) {
        if (maps[i]->v) memset(maps[i]->v, 0xff, maps[i]->cap * sizeof(int32_t));
        maps[i]->n = 0;
    }
    if (c->devmap.k) memset(c->devmap.k, 0, c->devmap.cap * sizeof(char *));
    c->devmap.n = 0;
}

static void ctx_free(apply_ctx *c)
{
    ctx_reset(c);
    free(c->batch_no);
    free(c->obs);
    free(c->devs);
    free(c->devmap.k);
    free(c->devmap.v);
    free(c->live);
    pg_map3 *maps[4] = {&c->livemap, &c->keys, &c->hours_map, &c->days_map};
    for (int i = 0; i < 4; i++) {
        free(maps[i]->k);
        free(maps[i]->v);
    }
    free(c->key_value);
    free(c->hours);
    free(c->days);
    for (int i = 0; i < 10; i++)
        pg_buf_free(&c->a[i]);
    for (int i = 0; i < 7; i++)
        pg_buf_free(&c->cf[i]);
}

/* One attempt: the whole call in one transaction. */
static int attempt(apply_ctx *c, batch *const *bs, size_t n)
{
    int rc;
    if ((rc = pg_apply_run_ok(c, "begin", "BEGIN", 0, NULL)) || (rc = pg_apply_batch_rows(c, bs, n)) ||
        (rc = pg_apply_devices(c, bs, n)))
        return rc;
    /* Live rows of the readings that pass validation (the only ones that touch live). */
    char reason[8];
    for (size_t i = 0; i < n; i++) {
        if (!c->batch_no[i]) continue;
        for (size_t j = 0; j < bs[i]->n_readings; j++) {
            const reading *r = &bs[i]->readings[j];
            if ((r->invalid_reason && r->invalid_reason[0]) ||
                !rules_validate(r, bs[i]->received_at_us, &c->ps->rules, reason, sizeof(reason)))
                continue;
            if (pg_apply_live_find(c, pg_apply_dev_id(c, r->device), pg_metric_id(c->ps, r->metric), 1) < 0)
                return pg_apply_nomem(c);
        }
    }
    if ((rc = pg_apply_live_load(c)) || (c->load_keys && (rc = pg_apply_keys_load(c, bs, n))))
        return rc;

    pg_apply_bufs_reset(c->a, 7);
    pg_apply_bufs_reset(c->cf, 7);
    for (size_t i = 0; i < n; i++) {
        if (!c->batch_no[i]) {
            c->st.skipped_batches++; /* re-delivery: changes nothing */
            continue;
        }
        if ((rc = walk_batch(c, i, bs[i], c->batch_no[i]))) return rc;
        c->st.batches++;
        if (bs[i]->received_at_us > c->max_received_us) c->max_received_us = bs[i]->received_at_us;
    }
    if ((rc = writes(c))) return rc;
    for (size_t i = 0; i < n; i++)
        if (c->batch_no[i] && (rc = links_write(c, bs[i]))) return rc;
    if ((rc = counters_write(c))) return rc;
    return pg_apply_run_ok(c, "commit", "COMMIT", 0, NULL);
}

int pg_store_apply(store *s, batch *const *batches, size_t n, store_apply_stats *st, char *err,
                   size_t errlen)
{
    pg_store *ps = (pg_store *)s;
    char dummy[8];
    apply_ctx c = {.ps = ps,
                   .err = err && errlen ? err : dummy,
                   .errlen = err && errlen ? errlen : sizeof(dummy)};
    if (st) memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < n; i++) {
        if (!batches[i]) {
            snprintf(c.err, c.errlen, "pg store: batch %zu is NULL", i);
            return MD_ERR_INVALID;
        }
    }
    if (n == 0) return MD_OK;
    if (PQstatus(ps->conn) != CONNECTION_OK) PQreset(ps->conn); /* e.g. the server restarted */
    if (!(c.batch_no = calloc(n, sizeof(int64_t)))) return pg_apply_nomem(&c);

    /* Partitions for every month touched (ts of all readings, cheap when known). */
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += batches[i]->n_readings;
    int64_t *ts = malloc((total ? total : 1) * sizeof(int64_t));
    if (!ts) {
        ctx_free(&c);
        return pg_apply_nomem(&c);
    }
    total = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < batches[i]->n_readings; j++)
            ts[total++] = batches[i]->readings[j].ts_us;

    /* Stored keys: a fresh stream has none, and looking them up (a join of every key of the
     * call against readings) cost as much as inserting. So the insert goes first; a stored key
     * fails it with a unique violation, and the call is redone with the lookup. A stream that
     * has stored keys (re-sent readings) keeps the lookup on for KEYS_LOOKUP_STREAK more
     * calls, so it does not pay for two inserts each time. */
    int rc = MD_ERR_STORE;
    c.load_keys = ps->keys_lookups_left > 0;
    for (int tries = 0; tries < APPLY_ATTEMPTS; tries++) {
        int load_keys = c.load_keys;
        ctx_reset(&c);
        c.load_keys = load_keys;
        c.now_us = time_now_us();
        rc = pg_partitions_ensure(ps, ts, total, c.err, c.errlen);
        if (rc == MD_OK) rc = pg_apply_metrics(&c, batches, n);
        if (rc == MD_OK) rc = attempt(&c, batches, n);
        if (rc == MD_OK) break;
        int redo_with_keys = c.unique_violation && !c.load_keys;
        if (redo_with_keys) {
            c.load_keys = 1;
            ps->keys_lookups_left = KEYS_LOOKUP_STREAK;
        }
        if (PQstatus(ps->conn) != CONNECTION_OK) {
            /* Lost the server (restart, killed backend): reconnect and redo. If a COMMIT had
             * gone through, the batch rows now make the redo a no-op. */
            PQreset(ps->conn);
            c.retry = PQstatus(ps->conn) == CONNECTION_OK;
        } else if (PQtransactionStatus(ps->conn) != PQTRANS_IDLE) {
            PQclear(PQexec(ps->conn, "ROLLBACK"));
        }
        if (!c.retry || rc == MD_ERR_NOMEM) break;
        if (redo_with_keys) continue; /* no race: redo at once */
        /* Deadlock or race with another worker: back off a little, then redo it all. */
        struct timespec pause = {0, (long)(1 + rand() % 5) * (tries + 1) * 1000000L};
        nanosleep(&pause, NULL);
    }
    free(ts);
    if (rc == MD_OK && c.load_keys) {
        if (c.keys_found) ps->keys_lookups_left = KEYS_LOOKUP_STREAK;
        else if (ps->keys_lookups_left > 0) ps->keys_lookups_left--;
    }
    if (rc == MD_OK && st) *st = c.st;
    for (size_t i = 0; rc == MD_OK && i < c.n_obs; i++) {
        const observation *o = &c.obs[i];
        ps->observer(ps->observer_arg, batches[o->batch], o->index, o->outcome, o->reason);
    }
    ctx_free(&c);
    return rc == MD_OK ? MD_OK : rc == MD_ERR_NOMEM ? MD_ERR_NOMEM : MD_ERR_STORE;
}
