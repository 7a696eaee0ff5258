/* SQLite store: apply() — one transaction for all the batches of one call, in three passes:
 *   1. collect, in arrival order: batch rows, device and metric ids, links;
 *   2. insert the readings in key order (device, ts, metric): a group's readings of a device
 *      land next to each other in the B-tree instead of one leaf per reading, which is what
 *      made batches spread over many devices twice as slow to apply (docs/decisions.md 25);
 *      ties keep arrival order, so the first arrival of a key still wins;
 *   3. judge, in arrival order: anomaly windows, live rows, rollups and the observer see the
 *      readings exactly as they arrived; the few readings the anomaly rules flag are updated
 *      in place.
 * Device and metric ids come from in-memory caches; the live rows and rollup buckets touched
 * by the transaction are kept in memory (so later readings of the same call see earlier ones)
 * and written once before COMMIT. Any error rolls everything back and drops the caches. */
#include "core/error.h"
#include "core/timeutil.h"
#include "store/sqlite_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One reading of the apply() call, between the passes. */
typedef struct sqlite_pending {
    int64_t dev, met, ts;
    double value;
    int64_t batch_no;
    uint32_t batch, index; /* batches[batch]->readings[index] */
    uint32_t ord;          /* arrival ordinal: breaks key ties, first arrival first */
    uint8_t passed;        /* passed ingest's verdict and rules_validate() */
    uint8_t outcome;       /* STORE_OUTCOME_VALID (stored), _DUPLICATE or _CONFLICT */
} sqlite_pending;

typedef struct apply_ctx {
    sqlite_store *ss; /* borrowed */
    store_apply_stats st;
    uint64_t new_devices;
    int64_t max_received_us;
    int64_t now_us;
    int64_t batch_no; /* batches.no of the batch being applied */
    char *err;        /* borrowed; errlen bytes */
    size_t errlen;
} apply_ctx;

static int set_err(apply_ctx *c, const char *what)
{
    snprintf(c->err, c->errlen, "sqlite store: %s: %s", what, sqlite3_errmsg(c->ss->db));
    return MD_ERR_STORE;
}

static int set_nomem(apply_ctx *c)
{
    snprintf(c->err, c->errlen, "sqlite store: out of memory");
    return MD_ERR_NOMEM;
}

/* Steps a statement that returns no row and resets it. */
static int run(apply_ctx *c, int idx, const char *what)
{
    sqlite3_stmt *st = c->ss->stmt[idx];
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        set_err(c, what); /* before reset, which may replace the message */
        sqlite3_reset(st);
        return MD_ERR_STORE;
    }
    sqlite3_reset(st);
    return MD_OK;
}

/* Looks up (or creates) an id by name: get/add are the SELECT and INSERT statements. */
static int lookup_id(apply_ctx *c, int get, int add, const char *name, const char *kind,
                     const char *site, int64_t seen_us, int64_t *id, int *created)
{
    sqlite3_stmt *st = c->ss->stmt[get];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *created = 0;
        sqlite3_reset(st);
        return MD_OK;
    }
    if (rc != SQLITE_DONE) {
        set_err(c, "id lookup");
        sqlite3_reset(st);
        return MD_ERR_STORE;
    }
    sqlite3_reset(st);

    st = c->ss->stmt[add];
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (add == SW_DEV_ADD) {
        sqlite3_bind_text(st, 2, kind ? kind : "", -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, site ? site : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, seen_us);
    }
    if (run(c, add, add == SW_DEV_ADD ? "insert device" : "insert metric") != MD_OK)
        return MD_ERR_STORE;
    *id = sqlite3_last_insert_rowid(c->ss->db);
    *created = 1;
    return MD_OK;
}

/* Returns the device entry of name (created with kind and site when new). When seen is set,
 * notes the device as seen by batch b in this transaction (first/last seen, site). */
static int device_entry(apply_ctx *c, const batch *b, const char *name, const char *kind,
                        const char *site, int seen, sqlite_name **out)
{
    sqlite_store *ss = c->ss;
    if (!name) name = "";
    if (!site) site = "";
    sqlite_name *e = sqlite_names_get(&ss->devices, name);
    if (!e) {
        int64_t id;
        int created;
        int rc = lookup_id(c, SW_DEV_GET, SW_DEV_ADD, name, kind, site, b->received_at_us, &id,
                           &created);
        if (rc != MD_OK) return rc;
        if (created) c->new_devices++;
        e = sqlite_names_put(&ss->devices, name, id);
        if (!e) return set_nomem(c);
    }
    if (!seen) {
        *out = e;
        return MD_OK;
    }
    if (!e->touched) {
        if (ss->n_touched == ss->cap_touched) {
            size_t cap = ss->cap_touched ? ss->cap_touched * 2 : 64;
            sqlite_name **t = realloc(ss->touched, cap * sizeof(*t));
            if (!t) return set_nomem(c);
            ss->touched = t;
            ss->cap_touched = cap;
        }
        ss->touched[ss->n_touched++] = e;
        e->touched = 1;
        e->first_us = e->last_us = b->received_at_us;
        e->site = "";
    }
    if (b->received_at_us < e->first_us) e->first_us = b->received_at_us;
    if (b->received_at_us > e->last_us) e->last_us = b->received_at_us;
    if (site[0]) e->site = site;
    *out = e;
    return MD_OK;
}

static int metric_id(apply_ctx *c, const reading *r, int64_t *id)
{
    const char *name = r->metric ? r->metric : "";
    sqlite_name *e = sqlite_names_get(&c->ss->metrics, name);
    if (!e) {
        int created;
        int rc = lookup_id(c, SW_MET_GET, SW_MET_ADD, name, NULL, NULL, 0, id, &created);
        if (rc != MD_OK) return rc;
        e = sqlite_names_put(&c->ss->metrics, name, *id);
        if (!e) return set_nomem(c);
    }
    *id = e->id;
    return MD_OK;
}

static double column_value(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL ? NAN : sqlite3_column_double(st, col);
}

/* Returns the index of the in-memory live row of (dev, met), loading it on first use. */
static long live_entry(apply_ctx *c, int64_t dev, int64_t met)
{
    sqlite_live_map *m = &c->ss->live;
    long k = sqlite_live_find(m, dev, met);
    if (k >= 0) return k;
    k = sqlite_live_add(m, dev, met);
    if (k < 0) {
        set_nomem(c);
        return -1;
    }
    sqlite3_stmt *st = c->ss->stmt[SW_LIVE_GET];
    sqlite3_bind_int64(st, 1, dev);
    sqlite3_bind_int64(st, 2, met);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        sqlite_live *l = &m->items[k];
        l->has_reading = 1;
        l->ts_us = sqlite3_column_int64(st, 0);
        l->value = column_value(st, 1);
        l->status = sqlite3_column_int(st, 2);
        const char *reason = (const char *)sqlite3_column_text(st, 3);
        if (reason && reason[0] && !(l->reason = strdup(reason))) {
            sqlite3_reset(st);
            set_nomem(c);
            return -1;
        }
        l->batch_no = sqlite3_column_int64(st, 4);
        /* The window is derived data: a damaged blob restarts it rather than failing apply. */
        rules_window_decode(&l->w, sqlite3_column_blob(st, 5), (size_t)sqlite3_column_bytes(st, 5));
    } else if (rc != SQLITE_DONE) {
        set_err(c, "read live state");
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return k;
}

/* Same stored value? Bitwise, but NaN == NaN and 0.0 == -0.0 (SQLite drops the zero's sign). */
static int same_value(double a, double b)
{
    if (isnan(a) && isnan(b)) return 1;
    if (a == 0 && b == 0) return 1;
    return memcmp(&a, &b, sizeof(a)) == 0;
}

/* Tells the observer, if any, what became of reading i of b. */
static void observe(apply_ctx *c, const batch *b, size_t i, int outcome, const char *reason)
{
    if (c->ss->observer) c->ss->observer(c->ss->observer_arg, b, i, outcome, reason);
}

/* A reading whose key is already stored: a duplicate, or a conflict (kept in conflicts) when
 * the value differs. Sets *outcome. */
static int existing_reading(apply_ctx *c, const sqlite_pending *p, const batch *b,
                            uint8_t *outcome)
{
    sqlite3_stmt *st = c->ss->stmt[SW_READING_VALUE];
    sqlite3_bind_int64(st, 1, p->dev);
    sqlite3_bind_int64(st, 2, p->ts);
    sqlite3_bind_int64(st, 3, p->met);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            snprintf(c->err, c->errlen, "sqlite store: stored reading vanished");
        else
            set_err(c, "read stored reading");
        sqlite3_reset(st);
        return MD_ERR_STORE;
    }
    double stored = column_value(st, 0);
    sqlite3_reset(st);
    if (same_value(stored, p->value)) {
        *outcome = STORE_OUTCOME_DUPLICATE;
        return MD_OK;
    }
    *outcome = STORE_OUTCOME_CONFLICT;
    st = c->ss->stmt[SW_CONFLICT_ADD];
    sqlite3_bind_int64(st, 1, p->dev);
    sqlite3_bind_int64(st, 2, p->met);
    sqlite3_bind_int64(st, 3, p->ts);
    sqlite3_bind_double(st, 4, stored);
    sqlite3_bind_double(st, 5, p->value);
    sqlite3_bind_blob(st, 6, b->id, sizeof(b->id), SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, b->received_at_us);
    return run(c, SW_CONFLICT_ADD, "insert conflict");
}

static int set_live(apply_ctx *c, sqlite_live *l, const reading *r, int status, const char *reason,
                    int64_t batch_no)
{
    char *copy = NULL;
    if (reason[0] && !(copy = strdup(reason))) return set_nomem(c);
    free(l->reason);
    l->reason = copy;
    l->has_reading = 1;
    l->ts_us = r->ts_us;
    l->value = r->value;
    l->status = status;
    l->batch_no = batch_no;
    return MD_OK;
}

static void bind_text_or_null(sqlite3_stmt *st, int col, const char *text)
{
    if (text && text[0])
        sqlite3_bind_text(st, col, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, col);
}

/* Records b in batches and sets c->batch_no; *seen = 1 when it was applied before. */
static int batch_row(apply_ctx *c, const batch *b, int *seen)
{
    sqlite_store *ss = c->ss;
    sqlite3_stmt *st = ss->stmt[SW_BATCH_ADD];
    sqlite3_bind_blob(st, 1, b->id, sizeof(b->id), SQLITE_STATIC);
    bind_text_or_null(st, 2, b->position);
    bind_text_or_null(st, 3, b->source);
    bind_text_or_null(st, 4, b->request_id);
    bind_text_or_null(st, 5, b->client_ip);
    bind_text_or_null(st, 6, b->client_user_agent);
    sqlite3_bind_int64(st, 7, b->received_at_us);
    sqlite3_bind_int64(st, 8, c->now_us);
    sqlite3_bind_int64(st, 9, (int64_t)b->n_readings);
    int rc = run(c, SW_BATCH_ADD, "record applied batch");
    if (rc != MD_OK) return rc;
    *seen = sqlite3_changes(ss->db) == 0;
    c->batch_no = *seen ? 0 : sqlite3_last_insert_rowid(ss->db);
    return MD_OK;
}

/* Upserts b's device links. Both devices are created when new: the linked one as a "meter"
 * for relation "meter", the other as a "vehicle" for that relation; "device" otherwise.
 * Links with an empty name are ignored (ingest rejects them; a batch is never poison for it). */
static int apply_links(apply_ctx *c, const batch *b)
{
    for (size_t i = 0; i < b->n_links; i++) {
        const batch_link *l = &b->links[i];
        if (!l->device || !l->device[0] || !l->linked_device || !l->linked_device[0] ||
            !l->relation || !l->relation[0])
            continue;
        int meter = strcmp(l->relation, "meter") == 0;
        sqlite_name *dev, *linked;
        int rc = device_entry(c, b, l->device, meter ? "vehicle" : "device", "", 1, &dev);
        if (rc != MD_OK) return rc;
        /* The linked device did not report anything: created if needed, not "seen". */
        rc = device_entry(c, b, l->linked_device, meter ? "meter" : "device", "", 0, &linked);
        if (rc != MD_OK) return rc;
        sqlite3_stmt *st = c->ss->stmt[SW_LINK_PUT];
        sqlite3_bind_int64(st, 1, dev->id);
        sqlite3_bind_int64(st, 2, linked->id);
        sqlite3_bind_text(st, 3, l->relation, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, b->received_at_us);
        if ((rc = run(c, SW_LINK_PUT, "upsert link")) != MD_OK) return rc;
    }
    return MD_OK;
}

/* Room for one more pending reading. */
static int pending_reserve(apply_ctx *c)
{
    sqlite_store *ss = c->ss;
    if (ss->n_pending < ss->cap_pending) return MD_OK;
    if (ss->cap_pending >= UINT32_MAX / 2) {
        snprintf(c->err, c->errlen, "sqlite store: too many readings in one apply");
        return MD_ERR_STORE;
    }
    size_t cap = ss->cap_pending ? ss->cap_pending * 2 : 1024;
    sqlite_pending *p = realloc(ss->pending, cap * sizeof(*p));
    if (!p) return set_nomem(c);
    ss->pending = p;
    uint32_t *a = realloc(ss->arrival, cap * sizeof(*a));
    if (!a) return set_nomem(c);
    ss->arrival = a;
    ss->cap_pending = cap;
    return MD_OK;
}

/* Why reading r is invalid before any anomaly rule ("" when it passed); *passed says which. */
static const char *verdict(apply_ctx *c, const batch *b, const reading *r, char *reason,
                           size_t len, int *passed)
{
    /* Ingest's verdict is final and verbatim; it skips our rules like any other failure. */
    if (r->invalid_reason && r->invalid_reason[0]) {
        *passed = 0;
        return r->invalid_reason;
    }
    *passed = rules_validate(r, b->received_at_us, &c->ss->rules, reason, len);
    return *passed ? "" : reason;
}

/* Pass 1 for batch number bi: its batch row, device and metric ids, links. */
static int collect_batch(apply_ctx *c, const batch *b, uint32_t bi)
{
    sqlite_store *ss = c->ss;
    int seen, rc;
    if ((rc = batch_row(c, b, &seen)) != MD_OK) return rc;
    if (seen) {
        c->st.skipped_batches++; /* re-delivery: changes nothing */
        return MD_OK;
    }

    /* batch_add shares equal strings between neighbours: skip the hash lookups then. */
    const char *last_dev = NULL, *last_site = NULL, *last_met = NULL;
    sqlite_name *dev = NULL;
    int64_t met = 0;
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        if (!dev || r->device != last_dev || r->site != last_site) {
            if ((rc = device_entry(c, b, r->device, r->device_kind, r->site, 1, &dev)) != MD_OK)
                return rc;
            last_dev = r->device;
            last_site = r->site;
        }
        if (i == 0 || r->metric != last_met) {
            if ((rc = metric_id(c, r, &met)) != MD_OK) return rc;
            last_met = r->metric;
        }
        if ((rc = pending_reserve(c)) != MD_OK) return rc;
        /* What pass 2 needs is copied here, in memory order: it visits readings out of order. */
        int passed;
        verdict(c, b, r, NULL, 0, &passed);
        ss->pending[ss->n_pending] = (sqlite_pending){.dev = dev->id,
                                                      .met = met,
                                                      .ts = r->ts_us,
                                                      .value = r->value,
                                                      .batch_no = c->batch_no,
                                                      .batch = bi,
                                                      .index = (uint32_t)i,
                                                      .ord = (uint32_t)ss->n_pending,
                                                      .passed = (uint8_t)passed};
        ss->n_pending++;
    }
    if ((rc = apply_links(c, b)) != MD_OK) return rc;

    c->st.batches++;
    if (b->received_at_us > c->max_received_us) c->max_received_us = b->received_at_us;
    return MD_OK;
}

/* Key order of the readings table, then arrival. */
static int pending_cmp(const void *x, const void *y)
{
    const sqlite_pending *a = x, *b = y;
    if (a->dev != b->dev) return a->dev < b->dev ? -1 : 1;
    if (a->ts != b->ts) return a->ts < b->ts ? -1 : 1;
    if (a->met != b->met) return a->met < b->met ? -1 : 1;
    return a->ord < b->ord ? -1 : a->ord > b->ord;
}

/* Pass 2: every pending reading inserted in key order, valid unless verdict() says otherwise. */
static int insert_sorted(apply_ctx *c, batch *const *batches)
{
    sqlite_store *ss = c->ss;
    char reason[384];
    int rc;
    if (ss->n_pending > 1) qsort(ss->pending, ss->n_pending, sizeof(*ss->pending), pending_cmp);
    for (size_t k = 0; k < ss->n_pending; k++) {
        sqlite_pending *p = &ss->pending[k];
        ss->arrival[p->ord] = (uint32_t)k;
        const char *why = "";
        if (!p->passed) { /* rare: only then the reading itself is visited again */
            int passed;
            why = verdict(c, batches[p->batch], &batches[p->batch]->readings[p->index], reason,
                          sizeof(reason), &passed);
        }
        sqlite3_stmt *st = ss->stmt[SW_READING_ADD];
        sqlite3_bind_int64(st, 1, p->dev);
        sqlite3_bind_int64(st, 2, p->met);
        sqlite3_bind_int64(st, 3, p->ts);
        sqlite3_bind_double(st, 4, p->value);
        sqlite3_bind_int(st, 5, p->passed);
        sqlite3_bind_text(st, 6, why, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, p->batch_no);
        if ((rc = run(c, SW_READING_ADD, "insert reading")) != MD_OK) return rc;
        p->outcome = STORE_OUTCOME_VALID;
        if (sqlite3_changes(ss->db) == 0 &&
            (rc = existing_reading(c, p, batches[p->batch], &p->outcome)) != MD_OK)
            return rc;
    }
    return MD_OK;
}

/* Marks a stored reading invalid: an anomaly rule flagged it after pass 2 stored it valid. */
static int flag_reading(apply_ctx *c, const sqlite_pending *p, const char *reason)
{
    sqlite3_stmt *st = c->ss->stmt[SW_READING_FLAG];
    sqlite3_bind_int64(st, 1, p->dev);
    sqlite3_bind_int64(st, 2, p->ts);
    sqlite3_bind_int64(st, 3, p->met);
    sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
    return run(c, SW_READING_FLAG, "flag reading");
}

/* Pass 3: the outcome of each reading in arrival order; anomaly windows, live rows, rollups. */
static int judge_in_arrival_order(apply_ctx *c, batch *const *batches)
{
    sqlite_store *ss = c->ss;
    char reason[384];
    int rc;
    for (size_t n = 0; n < ss->n_pending; n++) {
        const sqlite_pending *p = &ss->pending[ss->arrival[n]];
        const batch *b = batches[p->batch];
        const reading *r = &b->readings[p->index];
        if (p->outcome == STORE_OUTCOME_DUPLICATE) c->st.duplicates++;
        if (p->outcome == STORE_OUTCOME_CONFLICT) c->st.conflicts++;
        if (p->outcome != STORE_OUTCOME_VALID) {
            observe(c, b, p->index, p->outcome, "");
            continue;
        }
        c->st.stored++;
        if (!p->passed) { /* e.g. a far-future ts must not pin the live row */
            int passed;
            c->st.invalid++;
            observe(c, b, p->index, STORE_OUTCOME_INVALID,
                    verdict(c, b, r, reason, sizeof(reason), &passed));
            continue;
        }
        long k = live_entry(c, p->dev, p->met);
        if (k < 0) return MD_ERR_STORE;
        int status = rules_anomaly(&ss->live.items[k].w, r->value, reason, sizeof(reason));
        const char *why = status ? "" : reason;
        if (!status) {
            if ((rc = flag_reading(c, p, why)) != MD_OK) return rc;
            c->st.invalid++;
        }
        observe(c, b, p->index, status ? STORE_OUTCOME_VALID : STORE_OUTCOME_INVALID, why);

        if (status && (rc = sqlite_rollup_add(ss, p->dev, p->met, r->ts_us, r->value)) != MD_OK)
            return set_nomem(c);
        sqlite_live *l = &ss->live.items[k];
        if (status) rules_window_push(&l->w, r->value);
        l->dirty = 1;
        /* Newest ts wins; a late, older reading leaves the live row as it is. */
        if (!l->has_reading || r->ts_us > l->ts_us) {
            if ((rc = set_live(c, l, r, status, why, p->batch_no))) return rc;
        }
    }
    return MD_OK;
}

/* Writes what the transaction kept in memory: device first/last seen, live rows, rollups,
 * counters. */
static int flush(apply_ctx *c)
{
    sqlite_store *ss = c->ss;
    int rc;
    for (size_t i = 0; i < ss->n_touched; i++) {
        sqlite_name *e = ss->touched[i];
        sqlite3_stmt *st = ss->stmt[SW_DEV_TOUCH];
        sqlite3_bind_int64(st, 1, e->id);
        sqlite3_bind_int64(st, 2, e->first_us);
        sqlite3_bind_int64(st, 3, e->last_us);
        sqlite3_bind_text(st, 4, e->site ? e->site : "", -1, SQLITE_STATIC);
        if ((rc = run(c, SW_DEV_TOUCH, "update device")) != MD_OK) return rc;
    }
    for (size_t k = 0; k < ss->live.n; k++) {
        sqlite_live *l = &ss->live.items[k];
        if (!l->dirty) continue;
        uint8_t blob[RULES_WINDOW_BLOB];
        size_t blen = rules_window_encode(&l->w, blob);
        sqlite3_stmt *st = ss->stmt[SW_LIVE_PUT];
        sqlite3_bind_int64(st, 1, l->device_id);
        sqlite3_bind_int64(st, 2, l->metric_id);
        sqlite3_bind_int64(st, 3, l->ts_us);
        sqlite3_bind_double(st, 4, l->value);
        sqlite3_bind_int(st, 5, l->status);
        sqlite3_bind_text(st, 6, l->reason ? l->reason : "", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, l->batch_no);
        sqlite3_bind_int64(st, 8, c->now_us);
        sqlite3_bind_blob(st, 9, blob, (int)blen, SQLITE_STATIC);
        if ((rc = run(c, SW_LIVE_PUT, "write live state")) != MD_OK) return rc;
    }
    if ((rc = sqlite_rollup_flush(ss, c->err, c->errlen)) != MD_OK) return rc;
    const struct {
        const char *name;
        uint64_t add;
    } adds[] = {
        {"devices", c->new_devices},    {"readings", c->st.stored},
        {"invalid", c->st.invalid},     {"duplicates", c->st.duplicates},
        {"conflicts", c->st.conflicts}, {"batches", c->st.batches},
    };
    for (size_t i = 0; i < sizeof(adds) / sizeof(adds[0]); i++) {
        if (!adds[i].add) continue;
        sqlite3_stmt *st = ss->stmt[SW_COUNTER_ADD];
        sqlite3_bind_text(st, 1, adds[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)adds[i].add);
        if ((rc = run(c, SW_COUNTER_ADD, "update counters")) != MD_OK) return rc;
    }
    if (c->st.batches) {
        sqlite3_stmt *st = ss->stmt[SW_COUNTER_MAX];
        sqlite3_bind_text(st, 1, "last_applied_received_us", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, c->max_received_us);
        if ((rc = run(c, SW_COUNTER_MAX, "update counters")) != MD_OK) return rc;
    }
    return MD_OK;
}

/* Forgets the transaction's in-memory state; after a rollback also the id caches,
 * since ids handed out inside the rolled-back transaction no longer exist. */
static void end_transaction(sqlite_store *ss, int rolled_back)
{
    for (size_t i = 0; i < ss->n_touched; i++) {
        ss->touched[i]->touched = 0;
        ss->touched[i]->site = NULL;
    }
    ss->n_touched = 0;
    ss->n_pending = 0;
    sqlite_live_clear(&ss->live);
    sqlite_rollup_clear(&ss->hours);
    sqlite_rollup_clear(&ss->days);
    if (rolled_back) {
        sqlite_names_clear(&ss->devices);
        sqlite_names_clear(&ss->metrics);
    }
}

int sqlite_store_apply(store *s, batch *const *batches, size_t n, store_apply_stats *st, char *err,
                       size_t errlen)
{
    sqlite_store *ss = (sqlite_store *)s;
    char dummy[8];
    apply_ctx c = {.ss = ss,
                   .err = err && errlen ? err : dummy,
                   .errlen = err && errlen ? errlen : sizeof(dummy)};
    if (st) memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < n; i++) {
        if (!batches[i]) {
            snprintf(c.err, c.errlen, "sqlite store: batch %zu is NULL", i);
            return MD_ERR_INVALID;
        }
    }
    if (n == 0) return MD_OK;
    c.now_us = time_now_us();
    c.max_received_us = INT64_MIN;

    if (n > UINT32_MAX) {
        snprintf(c.err, c.errlen, "sqlite store: too many batches in one apply");
        return MD_ERR_INVALID;
    }

    int rc = run(&c, SW_BEGIN, "begin");
    if (rc != MD_OK) return rc;
    for (size_t i = 0; i < n && rc == MD_OK; i++)
        rc = collect_batch(&c, batches[i], (uint32_t)i);
    if (rc == MD_OK) rc = insert_sorted(&c, batches);
    if (rc == MD_OK) rc = judge_in_arrival_order(&c, batches);
    if (rc == MD_OK) rc = flush(&c);
    if (rc == MD_OK) rc = run(&c, SW_COMMIT, "commit");
    if (rc != MD_OK) {
        /* A failed COMMIT may leave the transaction open; make sure nothing of it stays. */
        if (!sqlite3_get_autocommit(ss->db)) sqlite3_step(ss->stmt[SW_ROLLBACK]);
        sqlite3_reset(ss->stmt[SW_ROLLBACK]);
        end_transaction(ss, 1);
        return rc == MD_ERR_NOMEM ? MD_ERR_NOMEM : MD_ERR_STORE;
    }
    end_transaction(ss, 0);
    if (st) *st = c.st;
    return MD_OK;
}
