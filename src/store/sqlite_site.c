/* SQLite store: the site readings query, ordered by (ts, device ext id, metric).
 *
 * Why a merge in C and not one SQL ORDER BY: readings are keyed (device, ts, metric), so there
 * is no index giving a site's rows in ts order. "readings JOIN devices WHERE site = ? ORDER BY
 * ts, ext_id, metric LIMIT n" makes SQLite read every row of the site's devices in [from, to)
 * into a temp b-tree before the first row comes out, on every page; an index on readings(ts)
 * would cost every insert a second b-tree write and still visit other sites' rows. A site has
 * few devices, so we open one key-range stream per device (devices_site index, ext_id order),
 * each already in (ts, metric) order and LIMITed to the page size, and merge their heads:
 * a page reads at most limit rows per device. All streams run in one read transaction so
 * they see the same snapshot. Picking the head is a linear scan: O(devices) per row. */
#include "core/error.h"
#include "store/sqlite_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct site_stream {
    int64_t id;
    char *ext_id;     /* owned */
    sqlite3_stmt *st; /* borrowed from the reader's pool */
    int has_row;      /* st is on a row */
} site_stream;

/* Grows the reader's pool of stream statements to n. 0 or MD_ERR_STORE/NOMEM. */
static int pool_reserve(sqlite_reader *r, size_t n)
{
    if (r->n_site >= n) return MD_OK;
    sqlite3_stmt **p = realloc(r->site, n * sizeof(*p));
    if (!p) return MD_ERR_NOMEM;
    r->site = p;
    while (r->n_site < n) {
        if (sqlite3_prepare_v3(r->db, sqlite_site_stream_sql, -1, SQLITE_PREPARE_PERSISTENT,
                               &r->site[r->n_site], NULL) != SQLITE_OK)
            return MD_ERR_STORE;
        r->n_site++;
    }
    return MD_OK;
}

/* Lists the site's devices in ext_id order into *out (owned by the caller). */
static int site_devices(store *s, const char *site, site_stream **out, size_t *n)
{
    sqlite3_stmt *st = sqlite_query_stmt(s, SR_SITE_DEVICES);
    if (!st) return MD_ERR_STORE;
    sqlite3_bind_text(st, 1, site, -1, SQLITE_STATIC);
    site_stream *v = NULL;
    size_t cap = 0;
    int rc;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            site_stream *g = realloc(v, cap * sizeof(*g));
            if (!g) break;
            v = g;
        }
        site_stream *e = &v[*n];
        memset(e, 0, sizeof(*e));
        e->id = sqlite3_column_int64(st, 0);
        if (!(e->ext_id = strdup(sqlite_query_text(st, 1)))) break;
        (*n)++;
    }
    sqlite3_reset(st);
    *out = v;
    if (rc == SQLITE_DONE) return MD_OK;
    return rc == SQLITE_ROW ? MD_ERR_NOMEM : MD_ERR_STORE;
}

/* Binds and starts device i's stream; its first bound respects the (ts, device, metric)
 * cursor: devices before after_device resume after after_ts, the cursor device after
 * (after_ts, after_metric), later devices at after_ts. */
static int stream_start(site_stream *e, const store_readings_query *q, int64_t met)
{
    int64_t from = q->from_us;
    int metric_cursor = 0;
    if (q->after_device || q->after_metric) {
        int cmp = strcmp(e->ext_id, q->after_device ? q->after_device : "");
        int64_t after = q->after_ts_us;
        if (cmp < 0) {
            if (after == INT64_MAX) return MD_OK; /* nothing after it */
            after++;
        }
        if (after > from) from = after;
        metric_cursor = cmp == 0;
    }
    sqlite3_stmt *st = e->st;
    sqlite3_bind_int64(st, 1, e->id);
    sqlite3_bind_int64(st, 2, met);
    sqlite3_bind_int64(st, 3, from);
    sqlite3_bind_int64(st, 4, q->to_us);
    sqlite3_bind_int64(st, 5, q->after_ts_us);
    sqlite3_bind_text(st, 6, q->after_metric ? q->after_metric : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, sqlite_query_limit(q->limit));
    sqlite3_bind_int(st, 8, q->only_invalid != 0);
    sqlite3_bind_int(st, 9, metric_cursor);
    sqlite3_bind_text(st, 10, e->ext_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 11, q->site, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    e->has_row = rc == SQLITE_ROW;
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? MD_OK : MD_ERR_STORE;
}

/* Is stream a's head before b's? Streams are in ext_id order, so the index breaks ts ties. */
static int head_before(const site_stream *a, size_t ia, const site_stream *b, size_t ib)
{
    int64_t ta = sqlite3_column_int64(a->st, 2), tb = sqlite3_column_int64(b->st, 2);
    if (ta != tb) return ta < tb;
    if (ia != ib) return ia < ib;
    return 0;
}

static void emit(sqlite3_stmt *st, const char *site, store_reading *r)
{
    r->device = sqlite_query_text(st, 0);
    r->metric = sqlite_query_text(st, 1);
    r->ts_us = sqlite3_column_int64(st, 2);
    r->value = sqlite_query_value(st, 3);
    r->valid = sqlite3_column_int(st, 4) != 0;
    r->reason = sqlite_query_text(st, 5);
    r->received_at_us = sqlite3_column_int64(st, 6);
    r->site = site;
    r->position = sqlite_query_text(st, 8);
}

int sqlite_site_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg)
{
    if (!q->site[0]) return MD_ERR_INVALID; /* "" would be every device without a site */
    sqlite_reader *r = sqlite_reader_get((sqlite_store *)s);
    if (!r) return MD_ERR_STORE;
    int64_t met = 0;
    int found, rc;
    if (q->metric) {
        if ((rc = sqlite_query_name_id(s, SR_METRIC_ID, q->metric, &met, &found)) != MD_OK)
            return rc;
        if (!found) return MD_OK;
    }
    if (q->limit == 0) return MD_OK;

    sqlite3_stmt *begin = sqlite_query_stmt(s, SR_BEGIN), *commit = sqlite_query_stmt(s, SR_COMMIT);
    if (!begin || !commit) return MD_ERR_STORE;
    rc = sqlite3_step(begin);
    sqlite3_reset(begin);
    if (rc != SQLITE_DONE) return MD_ERR_STORE;

    site_stream *v = NULL;
    size_t n = 0;
    rc = site_devices(s, q->site, &v, &n);
    if (rc == MD_OK) rc = pool_reserve(r, n);
    for (size_t i = 0; i < n && rc == MD_OK; i++) {
        v[i].st = r->site[i];
        rc = stream_start(&v[i], q, met);
    }
    for (size_t emitted = 0; rc == MD_OK && emitted < q->limit; emitted++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++)
            if (v[i].has_row && (best == n || head_before(&v[i], i, &v[best], best))) best = i;
        if (best == n) break;
        store_reading out;
        emit(v[best].st, q->site, &out);
        if (cb(arg, &out)) break;
        int step = sqlite3_step(v[best].st);
        v[best].has_row = step == SQLITE_ROW;
        if (step != SQLITE_ROW && step != SQLITE_DONE) rc = MD_ERR_STORE;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i].st) sqlite3_reset(v[i].st);
        free(v[i].ext_id);
    }
    free(v);
    /* Ends the read transaction so the WAL can be checkpointed. */
    if (sqlite3_step(commit) != SQLITE_DONE && rc == MD_OK) rc = MD_ERR_STORE;
    sqlite3_reset(commit);
    return rc;
}
