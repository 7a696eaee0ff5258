/* PostgreSQL store: the first half of apply() — everything read and locked before the walk:
 * metric ids, batch rows, device rows (created, locked in ext_id order, first/last seen),
 * live rows (FOR UPDATE) and the stored values of the call's reading keys. See pg_apply.c. */
#include "core/error.h"
#include "store/pg_apply.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pg_apply_nomem(apply_ctx *c)
{
    snprintf(c->err, c->errlen, "pg store: out of memory");
    return MD_ERR_NOMEM;
}

/* Runs sql with text parameters; returns the result (caller clears) or NULL with err set. */
PGresult *pg_apply_run(apply_ctx *c, const char *what, const char *sql, int n, const char *const *p)
{
    PGresult *r = PQexecParams(c->ps->conn, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType t = PQresultStatus(r);
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK) return r;
    c->retry = pg_retryable(r);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    c->unique_violation = state && !strcmp(state, "23505");
    snprintf(c->err, c->errlen, "pg store: %s: %s", what, PQerrorMessage(c->ps->conn));
    PQclear(r);
    return NULL;
}

int pg_apply_run_ok(apply_ctx *c, const char *what, const char *sql, int n, const char *const *p)
{
    PGresult *r = pg_apply_run(c, what, sql, n, p);
    PQclear(r);
    return r ? MD_OK : MD_ERR_STORE;
}

void pg_apply_bufs_reset(pg_buf *b, int n)
{
    for (int i = 0; i < n; i++) {
        pg_buf_reset(&b[i]);
        pg_buf_open(&b[i]);
    }
}

/* Closes n array literals and runs sql with them as $1..$n. */
PGresult *pg_apply_run_arrays(apply_ctx *c, const char *what, const char *sql, pg_buf *b, int n)
{
    const char *p[10];
    for (int i = 0; i < n; i++) {
        pg_buf_close(&b[i]);
        if (b[i].oom) {
            pg_apply_nomem(c);
            return NULL;
        }
        p[i] = b[i].p;
    }
    return pg_apply_run(c, what, sql, n, p);
}

/* Makes sure every metric of the call has an id in the cache. */
int pg_apply_metrics(apply_ctx *c, batch *const *bs, size_t n)
{
    pg_buf *names = &c->a[0];
    pg_apply_bufs_reset(names, 1);
    size_t missing = 0;
    for (size_t i = 0; i < n; i++) {
        const char *last = NULL;
        for (size_t j = 0; j < bs[i]->n_readings; j++) {
            const char *m = bs[i]->readings[j].metric ? bs[i]->readings[j].metric : "";
            if (m == last) continue;
            last = m;
            int found;
            int64_t *id = pg_metric_slot(c->ps, m, &found);
            if (!id) return pg_apply_nomem(c);
            if (*id == 0) {
                *id = -1; /* listed once */
                pg_buf_text(names, m);
                missing++;
            }
        }
    }
    if (!missing) return MD_OK;
    PGresult *r = pg_apply_run_arrays(c, "create metrics",
                             "WITH ins AS (INSERT INTO metrics(name) SELECT n FROM unnest($1::text[])"
                             " AS u(n) ORDER BY n ON CONFLICT (name) DO NOTHING RETURNING id, name)"
                             " SELECT id, name FROM ins UNION ALL"
                             " SELECT id, name FROM metrics WHERE name = ANY($1::text[])",
                             names, 1);
    if (!r) return MD_ERR_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        int found;
        int64_t *id = pg_metric_slot(c->ps, PQgetvalue(r, i, 1), &found);
        if (!id) {
            PQclear(r);
            return pg_apply_nomem(c);
        }
        *id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    }
    PQclear(r);
    /* A name another worker inserted but had not committed when we looked: ask again. */
    for (size_t j = 0; j < c->ps->met_cap; j++) {
        if (c->ps->met_names[j] && c->ps->met_ids[j] <= 0) {
            c->ps->met_ids[j] = 0;
            c->retry = 1;
            snprintf(c->err, c->errlen, "pg store: metric '%s' not visible yet",
                     c->ps->met_names[j]);
            return MD_ERR_STORE;
        }
    }
    return MD_OK;
}

/* ---- batches and devices ---- */

/* Records each batch; c->batch_no[i] = 0 when it was applied before (also earlier in this call). */
int pg_apply_batch_rows(apply_ctx *c, batch *const *bs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const batch *b = bs[i];
        char id[40], recv[24], now[24], nr[24];
        snprintf(id, sizeof(id), "\\x");
        for (int k = 0; k < 16; k++)
            snprintf(id + 2 + 2 * k, 3, "%02x", b->id[k]);
        snprintf(recv, sizeof(recv), "%" PRId64, b->received_at_us);
        snprintf(now, sizeof(now), "%" PRId64, c->now_us);
        snprintf(nr, sizeof(nr), "%zu", b->n_readings);
#define OR_NULL(s) ((s) && (s)[0] ? (s) : NULL)
        const char *p[9] = {id,
                            OR_NULL(b->position),
                            OR_NULL(b->source),
                            OR_NULL(b->request_id),
                            OR_NULL(b->client_ip),
                            OR_NULL(b->client_user_agent),
                            recv,
                            now,
                            nr};
        PGresult *r = pg_apply_run(c, "record applied batch",
                          "INSERT INTO batches(id, position, source, request_id, client_ip,"
                          " client_user_agent, received_at_us, applied_at_us, n_readings)"
                          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                          " ON CONFLICT (id) DO NOTHING RETURNING no",
                          9, p);
        if (!r) return MD_ERR_STORE;
        c->batch_no[i] = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : 0;
        PQclear(r);
    }
    return MD_OK;
}

/* Notes one occurrence of a device; seen: it reported (first/last seen move). */
static int dev_note(apply_ctx *c, const batch *b, const char *name, const char *kind,
                    const char *site, int seen)
{
    int found;
    int32_t *slot = pg_strmap_slot(&c->devmap, name, &found);
    if (!slot) return pg_apply_nomem(c);
    if (!found) {
        if (pg_grow((void **)&c->devs, &c->cap_devs, c->n_devs, sizeof(dev_entry))) return pg_apply_nomem(c);
        *slot = (int32_t)c->n_devs;
        c->devs[c->n_devs++] = (dev_entry){.name = name,
                                           .kind = kind ? kind : "",
                                           .site = site ? site : "",
                                           .create_us = b->received_at_us,
                                           .seen_min = INT64_MAX,
                                           .seen_max = INT64_MIN};
    }
    dev_entry *e = &c->devs[*slot];
    if (seen) {
        e->seen = 1;
        if (b->received_at_us < e->seen_min) e->seen_min = b->received_at_us;
        if (b->received_at_us > e->seen_max) e->seen_max = b->received_at_us;
        if (site && site[0]) e->last_site = site;
    }
    return MD_OK;
}

int pg_apply_link_valid(const batch_link *l)
{
    return l->device && l->device[0] && l->linked_device && l->linked_device[0] && l->relation &&
           l->relation[0];
}

/* Creates new devices, locks every device of the call in ext_id order, moves first/last seen. */
int pg_apply_devices(apply_ctx *c, batch *const *bs, size_t n)
{
    int rc;
    for (size_t i = 0; i < n; i++) {
        if (!c->batch_no[i]) continue;
        const batch *b = bs[i];
        const char *last = NULL, *last_site = NULL;
        for (size_t j = 0; j < b->n_readings; j++) {
            const reading *r = &b->readings[j];
            if (r->device == last && r->site == last_site) continue;
            last = r->device, last_site = r->site;
            if ((rc = dev_note(c, b, r->device ? r->device : "", r->device_kind, r->site, 1)))
                return rc;
        }
        for (size_t j = 0; j < b->n_links; j++) {
            const batch_link *l = &b->links[j];
            if (!pg_apply_link_valid(l)) continue;
            int meter = strcmp(l->relation, "meter") == 0;
            if ((rc = dev_note(c, b, l->device, meter ? "vehicle" : "device", "", 1)) ||
                (rc = dev_note(c, b, l->linked_device, meter ? "meter" : "device", "", 0)))
                return rc;
        }
    }
    if (!c->n_devs) return MD_OK;

    pg_buf *a = c->a;
    pg_apply_bufs_reset(a, 4);
    for (size_t i = 0; i < c->n_devs; i++) {
        dev_entry *e = &c->devs[i];
        pg_buf_text(&a[0], e->name);
        pg_buf_text(&a[1], e->kind);
        pg_buf_text(&a[2], e->site);
        pg_buf_i64(&a[3], e->create_us);
    }
    PGresult *r = pg_apply_run_arrays(c, "insert devices",
                             "INSERT INTO devices(ext_id, kind, site, first_seen_us, last_seen_us)"
                             " SELECT e, k, s, f, f FROM unnest($1::text[], $2::text[],"
                             " $3::text[], $4::bigint[]) AS u(e, k, s, f) ORDER BY e COLLATE \"C\""
                             " ON CONFLICT (ext_id) DO NOTHING RETURNING id",
                             a, 4);
    if (!r) return MD_ERR_STORE;
    c->new_devices = (uint64_t)PQntuples(r);
    PQclear(r);

    /* $1 is still the names array. */
    const char *p[1] = {a[0].p};
    r = pg_apply_run(c, "lock devices",
            "SELECT id, ext_id FROM devices WHERE ext_id = ANY($1::text[])"
            " ORDER BY ext_id FOR UPDATE",
            1, p);
    if (!r) return MD_ERR_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        int found;
        int32_t *slot = pg_strmap_slot(&c->devmap, PQgetvalue(r, i, 1), &found);
        if (!slot || !found) { /* found: the name is one of ours (the map keeps borrowed keys) */
            PQclear(r);
            return slot ? MD_ERR_STORE : pg_apply_nomem(c);
        }
        c->devs[*slot].id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
    }
    int got = PQntuples(r);
    PQclear(r);
    if ((size_t)got != c->n_devs) {
        c->retry = 1;
        snprintf(c->err, c->errlen, "pg store: %zu devices, %d found", c->n_devs, got);
        return MD_ERR_STORE;
    }

    pg_apply_bufs_reset(a, 4);
    size_t seen = 0;
    for (size_t i = 0; i < c->n_devs; i++) {
        dev_entry *e = &c->devs[i];
        if (!e->seen) continue;
        seen++;
        pg_buf_i64(&a[0], e->id);
        pg_buf_i64(&a[1], e->seen_min);
        pg_buf_i64(&a[2], e->seen_max);
        pg_buf_text(&a[3], e->last_site ? e->last_site : "");
    }
    if (!seen) return MD_OK;
    r = pg_apply_run_arrays(c, "update devices",
                   "UPDATE devices d SET first_seen_us = least(d.first_seen_us, u.f),"
                   " last_seen_us = greatest(d.last_seen_us, u.l),"
                   " site = CASE WHEN u.s <> '' THEN u.s ELSE d.site END"
                   " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[])"
                   " AS u(id, f, l, s) WHERE d.id = u.id",
                   a, 4);
    PQclear(r);
    return r ? MD_OK : MD_ERR_STORE;
}

int64_t pg_apply_dev_id(apply_ctx *c, const char *name)
{
    int found;
    int32_t *slot = pg_strmap_slot(&c->devmap, name ? name : "", &found);
    return slot && found ? c->devs[*slot].id : 0;
}

/* ---- live rows and existing keys ---- */

static int hexval(char h)
{
    return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : -1;
}

static void window_from_hex(anomaly_window *w, const char *s)
{
    uint8_t blob[RULES_WINDOW_BLOB];
    size_t n = 0;
    memset(w, 0, sizeof(*w));
    if (strncmp(s, "\\x", 2) != 0) return;
    for (s += 2; s[0] && s[1] && n < sizeof(blob); s += 2) {
        int hi = hexval(s[0]), lo = hexval(s[1]);
        if (hi < 0 || lo < 0) return;
        blob[n++] = (uint8_t)(hi << 4 | lo);
    }
    rules_window_decode(w, blob, n); /* derived data: a damaged blob restarts the window */
}

long pg_apply_live_find(apply_ctx *c, int64_t dev, int64_t met, int add)
{
    int found;
    int32_t *slot = pg_map3_slot(&c->livemap, dev, met, 0, &found);
    if (!slot) return -1;
    if (found) return *slot;
    if (!add || pg_grow((void **)&c->live, &c->cap_live, c->n_live, sizeof(live_entry))) return -1;
    *slot = (int32_t)c->n_live;
    c->live[c->n_live] = (live_entry){.dev = dev, .met = met};
    return (long)c->n_live++;
}

/* Reads (and locks) the live rows of the readings that pass validation. */
int pg_apply_live_load(apply_ctx *c)
{
    if (!c->n_live) return MD_OK;
    pg_buf *a = c->a;
    pg_apply_bufs_reset(a, 2);
    for (size_t i = 0; i < c->n_live; i++) {
        pg_buf_i64(&a[0], c->live[i].dev);
        pg_buf_i64(&a[1], c->live[i].met);
    }
    PGresult *r = pg_apply_run_arrays(c, "read live state",
                             "SELECT l.device_id, l.metric_id, l.ts_us, l.value, l.status, l.reason,"
                             " l.batch_no, l.anomaly_window FROM live l"
                             " JOIN unnest($1::bigint[], $2::bigint[]) AS u(d, m)"
                             " ON l.device_id = u.d AND l.metric_id = u.m"
                             " ORDER BY l.device_id, l.metric_id FOR UPDATE OF l",
                             a, 2);
    if (!r) return MD_ERR_STORE;
    for (int i = 0; i < PQntuples(r); i++) {
        long k = pg_apply_live_find(c, strtoll(PQgetvalue(r, i, 0), NULL, 10),
                           strtoll(PQgetvalue(r, i, 1), NULL, 10), 0);
        if (k < 0) continue;
        live_entry *l = &c->live[k];
        l->has = 1;
        l->ts_us = strtoll(PQgetvalue(r, i, 2), NULL, 10);
        l->value = pg_f64(PQgetvalue(r, i, 3));
        l->status = atoi(PQgetvalue(r, i, 4));
        l->reason = PQgetvalue(r, i, 5);
        l->batch_no = strtoll(PQgetvalue(r, i, 6), NULL, 10);
        window_from_hex(&l->w, PQgetvalue(r, i, 7));
    }
    c->lres = r; /* the reasons point into it */
    return MD_OK;
}

/* Adds a key with its stored value; returns its index, or -1 with *found when already there. */
long pg_apply_key_add(apply_ctx *c, int64_t dev, int64_t ts, int64_t met, double v, int *found)
{
    int32_t *slot = pg_map3_slot(&c->keys, dev, ts, met, found);
    if (!slot) return -2;
    if (*found) return *slot;
    if (pg_grow((void **)&c->key_value, &c->cap_keys, c->n_keys, sizeof(double))) return -2;
    *slot = (int32_t)c->n_keys;
    c->key_value[c->n_keys] = v;
    return (long)c->n_keys++;
}

/* Loads the stored values of the call's reading keys that already exist. */
int pg_apply_keys_load(apply_ctx *c, batch *const *bs, size_t n)
{
    pg_buf *a = c->a;
    pg_apply_bufs_reset(a, 3);
    size_t total = 0;
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        if (!c->batch_no[i]) continue;
        for (size_t j = 0; j < bs[i]->n_readings; j++) {
            const reading *r = &bs[i]->readings[j];
            pg_buf_i64(&a[0], pg_apply_dev_id(c, r->device));
            pg_buf_i64(&a[1], r->ts_us);
            pg_buf_i64(&a[2], pg_metric_id(c->ps, r->metric));
            if (r->ts_us < lo) lo = r->ts_us;
            if (r->ts_us > hi) hi = r->ts_us;
            total++;
        }
    }
    if (!total) return MD_OK;
    /* The time range, as literals: the planner prunes the partitions outside it and sizes the
     * join by it. Without it every key was looked up in every partition, or the whole table
     * was scanned (50,000 keys against 200,000 rows: 165 ms; with the range: 30 ms), a cost
     * that grew with the table. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT r.device_id, r.ts_us, r.metric_id, r.value FROM readings r"
             " JOIN unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(d, t, m)"
             " ON r.device_id = u.d AND r.ts_us = u.t AND r.metric_id = u.m"
             " WHERE r.ts_us BETWEEN %" PRId64 " AND %" PRId64,
             lo, hi);
    PGresult *r = pg_apply_run_arrays(c, "read stored readings", sql, a, 3);
    if (!r) return MD_ERR_STORE;
    c->keys_found = (size_t)PQntuples(r);
    for (int i = 0; i < PQntuples(r); i++) {
        int found;
        if (pg_apply_key_add(c, strtoll(PQgetvalue(r, i, 0), NULL, 10),
                    strtoll(PQgetvalue(r, i, 1), NULL, 10), strtoll(PQgetvalue(r, i, 2), NULL, 10),
                    pg_f64(PQgetvalue(r, i, 3)), &found) == -2) {
            PQclear(r);
            return pg_apply_nomem(c);
        }
    }
    PQclear(r);
    return MD_OK;
}

