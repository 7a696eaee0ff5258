/* Unit tests for the SQLite store's apply(): dedup, conflicts, live state, anomalies,
 * validation, durability across reopen, rollback. Queries: test_sqlite_query.c. */
#include "sqlite_fixture.h"

/* ---- apply ---- */

static void test_apply_stores_readings_and_counts(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", T0 - 2 * SEC, 1.5);
    add(b, "m1", "energy", T0 - 1 * SEC, 2.5);
    add(b, "m2", "power", T0 - 1 * SEC, 7);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.skipped_batches, 0);
    assert_int_equal(st.stored, 3);
    assert_int_equal(st.invalid, 0);
    assert_int_equal(st.duplicates, 0);
    assert_int_equal(st.conflicts, 0);

    rows rs = query(f->s, "m1", NULL, INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 2);
    assert_string_equal(rs.r[0].device, "m1");
    assert_string_equal(rs.r[0].metric, "energy");
    assert_int_equal(rs.r[0].ts_us, T0 - 2 * SEC);
    assert_true(rs.r[0].value == 1.5);
    assert_int_equal(rs.r[0].valid, 1);
    assert_string_equal(rs.r[0].reason, "");
    assert_int_equal(rs.r[0].received_at_us, T0);
    assert_true(rs.r[1].value == 2.5);

    store_counts c = counts(f->s);
    assert_int_equal(c.devices, 2);
    assert_int_equal(c.readings, 3);
    assert_int_equal(c.invalid, 0);
    assert_int_equal(c.conflicts, 0);
    assert_int_equal(c.batches, 1);
    assert_int_equal(c.last_applied_received_us, T0);
    assert_int_equal(f->s->ops->ping(f->s), MD_OK);
    batch_free(b);
}

static void test_same_batch_twice_changes_nothing(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", T0 - SEC, 1);
    apply1(f->s, b);
    store_counts before = counts(f->s);

    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.batches, 0);
    assert_int_equal(st.skipped_batches, 1);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates, 0);
    store_counts after = counts(f->s);
    assert_memory_equal(&before, &after, sizeof(before));

    /* The same batch twice in one call: the second is skipped inside the transaction. */
    batch *b2 = mkbatch(T0 + SEC);
    add(b2, "m1", "energy", T0, 2);
    batch *bs[2] = {b2, b2};
    char err[128];
    assert_int_equal(f->s->ops->apply(f->s, bs, 2, &st, err, sizeof(err)), MD_OK);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.skipped_batches, 1);
    assert_int_equal(st.stored, 1);
    assert_int_equal(counts(f->s).readings, 2);
    batch_free(b);
    batch_free(b2);
}

static void test_duplicate_reading_keeps_first_and_counts(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + SEC), *n1 = mkbatch(T0), *n2 = mkbatch(T0);
    add(a, "m1", "energy", T0 - SEC, 5);
    add(b, "m1", "energy", T0 - SEC, 5);
    add(n1, "m1", "energy", T0 - 2 * SEC, NAN); /* NaN == NaN for dedup */
    add(n2, "m1", "energy", T0 - 2 * SEC, NAN);
    apply1(f->s, a);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.stored, 0);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.conflicts, 0);
    apply1(f->s, n1);
    st = apply1(f->s, n2);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.conflicts, 0);

    rows rs = query(f->s, "m1", NULL, INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 2);
    assert_true(isnan(rs.r[0].value));
    assert_int_equal(rs.r[0].valid, 0);
    assert_int_equal(rs.r[1].received_at_us, T0); /* the first one stays */
    store_counts c = counts(f->s);
    assert_int_equal(c.readings, 2);
    assert_int_equal(c.conflicts, 0);
    assert_int_equal(c.batches, 4);
    batch_free(a);
    batch_free(b);
    batch_free(n1);
    batch_free(n2);
}

static void test_conflict_is_kept_and_first_value_stays(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + SEC);
    add(a, "m1", "energy", T0 - SEC, 5);
    add(b, "m1", "energy", T0 - SEC, 6);
    apply1(f->s, a);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.conflicts, 1);
    assert_int_equal(st.duplicates, 0);
    assert_int_equal(st.stored, 0);

    rows rs = query(f->s, "m1", "energy", INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 1);
    assert_true(rs.r[0].value == 5);
    assert_int_equal(counts(f->s).conflicts, 1);

    /* The conflicts table holds both values and the batch that brought the new one. */
    char sql[512], hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02X", b->id[i]);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM conflicts WHERE ts_us = %lld AND stored_value = 5"
             " AND new_value = 6 AND length(batch_id) = 16 AND " SQL_HEX("batch_id")
             " = '%s' AND received_at_us = %lld",
             (long long)(T0 - SEC), hex, (long long)(T0 + SEC));
    assert_int_equal(sql_int(f->path, sql), 1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM conflicts"), 1);
    batch_free(a);
    batch_free(b);
}

static void test_live_state_keeps_newest_ts(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + SEC);
    add(a, "m1", "energy", T0 - 10 * SEC, 1);
    add(a, "m1", "energy", T0 - 5 * SEC, 2); /* newest */
    add(a, "m1", "power", T0 - 7 * SEC, 30);
    add(b, "m1", "energy", T0 - 8 * SEC, 3); /* late and older */
    apply1(f->s, a);
    apply1(f->s, b);

    rows rs = live(f->s, "m1");
    assert_int_equal(rs.n, 2);
    assert_string_equal(rs.r[0].metric, "energy");
    assert_int_equal(rs.r[0].ts_us, T0 - 5 * SEC);
    assert_true(rs.r[0].value == 2);
    assert_int_equal(rs.r[0].received_at_us, T0);
    assert_string_equal(rs.r[1].metric, "power");
    assert_true(rs.r[1].value == 30);
    assert_int_equal(live(f->s, "nobody").n, 0);

    batch *c = mkbatch(T0 + 2 * SEC);
    add(c, "m1", "energy", T0 - 4 * SEC, 4);
    apply1(f->s, c);
    rs = live(f->s, "m1");
    assert_int_equal(rs.r[0].ts_us, T0 - 4 * SEC);
    assert_true(rs.r[0].value == 4);
    batch_free(a);
    batch_free(b);
    batch_free(c);
}

static void test_spike_detected_across_batches(void **state)
{
    fixture *f = *state;
    /* Ten batches of one value each, then the spike in its own batch. */
    for (int i = 0; i < 10; i++) {
        batch *b = mkbatch(T0 + i);
        add(b, "m1", "energy", T0 - 100 * SEC + i * SEC, 100);
        apply1(f->s, b);
        batch_free(b);
    }
    batch *b = mkbatch(T0 + 20);
    add(b, "m1", "energy", T0 - 50 * SEC, 400);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.invalid, 1);

    rows rs = query(f->s, "m1", "energy", T0 - 50 * SEC, T0);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0].valid, 0);
    assert_true(rs.r[0].value == 400);
    assert_string_equal(rs.r[0].reason,
                        "sudden spike detected: value 400 exceeds 3.0x rolling average 100.00");
    /* The spike went into live (newest ts) but not into the window: the mean is still 100,
     * so 301 is a spike too (with 400 in the window the mean would be 130). */
    rows lv = live(f->s, "m1");
    assert_int_equal(lv.r[0].valid, 0);
    assert_string_equal(lv.r[0].reason, rs.r[0].reason);
    batch_free(b);
    b = mkbatch(T0 + 21);
    add(b, "m1", "energy", T0 - 40 * SEC, 301);
    add(b, "m1", "energy", T0 - 39 * SEC, 300);
    st = apply1(f->s, b);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(counts(f->s).invalid, 2);
    lv = live(f->s, "m1");
    assert_int_equal(lv.r[0].valid, 1);
    assert_true(lv.r[0].value == 300);
    batch_free(b);
}

static void test_spike_detected_within_one_batch(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    for (int i = 0; i < 10; i++)
        add(b, "m1", "energy", T0 - 100 * SEC + i * SEC, 100);
    add(b, "m1", "energy", T0 - 10 * SEC, 400);
    add(b, "m1", "energy", T0 - 9 * SEC, -1);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 12);
    assert_int_equal(st.invalid, 2);
    rows rs = query(f->s, "m1", NULL, T0 - 10 * SEC, T0);
    assert_int_equal(rs.n, 2);
    assert_string_equal(rs.r[0].reason,
                        "sudden spike detected: value 400 exceeds 3.0x rolling average 100.00");
    assert_string_equal(rs.r[1].reason, "negative value detected");
    batch_free(b);
}

static void test_validation_failures_stored_invalid(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", T0 + 301 * SEC, 1); /* too far in the future */
    add(b, "m1", "energy", T0 - SEC, INFINITY);
    add(b, "m1", "", T0 - SEC, 1);
    add(b, "m1", "energy", T0 + 300 * SEC, 2); /* at the limit: valid */
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 4);
    assert_int_equal(st.invalid, 3);

    rows rs = query(f->s, "m1", NULL, INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 4);
    /* (ts, metric) order: "" sorts before "energy" */
    assert_string_equal(rs.r[0].metric, "");
    assert_string_equal(rs.r[0].reason, "metric name is empty");
    assert_string_equal(rs.r[1].reason, "value is not a finite number");
    assert_true(isnan(rs.r[1].value));
    assert_int_equal(rs.r[2].valid, 1);
    assert_string_equal(rs.r[3].reason, "timestamp is more than 300 s in the future");
    /* A far-future invalid reading must not pin the live row. */
    rows lv = live(f->s, "m1");
    assert_int_equal(lv.n, 1);
    assert_int_equal(lv.r[0].ts_us, T0 + 300 * SEC);
    assert_int_equal(counts(f->s).invalid, 3);
    batch_free(b);
}

static void test_ingest_invalid_reason_stored_verbatim_without_window_or_live(void **state)
{
    fixture *f = *state;
    char longreason[501];
    memset(longreason, 'r', 500); /* longer than any internal reason buffer */
    longreason[500] = '\0';
    batch *b = mkbatch(T0);
    for (int i = 0; i < 10; i++)
        add(b, "m1", "energy", T0 - 100 * SEC + i * SEC, 100);
    /* Newer than the valid ones, and low: if they reached the window (mean 1) or live,
     * the checks below would see it. */
    for (int i = 0; i < 10; i++) {
        add(b, "m1", "energy", T0 - 50 * SEC + i * SEC, 1);
        assert_int_equal(batch_mark_invalid(b, i == 0 ? longreason : "meter said: bad frame"),
                         MD_OK);
    }
    add(b, "m1", "energy", T0 - 30 * SEC, 400); /* would be a spike: ingest's reason wins */
    assert_int_equal(batch_mark_invalid(b, "decoder: crc"), MD_OK);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 21);
    assert_int_equal(st.invalid, 11);

    rows rs = query(f->s, "m1", "energy", T0 - 50 * SEC, T0);
    assert_int_equal(rs.n, 11);
    assert_int_equal(rs.r[0].valid, 0);
    assert_string_equal(rs.r[0].reason, longreason);
    assert_true(rs.r[0].value == 1);
    assert_string_equal(rs.r[9].reason, "meter said: bad frame");
    assert_string_equal(rs.r[10].reason, "decoder: crc");
    assert_true(rs.r[10].value == 400);

    rows lv = live(f->s, "m1");
    assert_int_equal(lv.n, 1);
    assert_int_equal(lv.r[0].ts_us, T0 - 91 * SEC); /* the newest valid one */
    assert_int_equal(lv.r[0].valid, 1);

    /* Window is still ten 100s: 250 is fine (with the 1s in it, mean 1, it would be a spike). */
    batch *c = mkbatch(T0 + 1);
    add(c, "m1", "energy", T0 - 20 * SEC, 250);
    st = apply1(f->s, c);
    assert_int_equal(st.invalid, 0);
    assert_int_equal(counts(f->s).invalid, 11);
    batch_free(b);
    batch_free(c);
}

static void test_readings_carry_batch_provenance(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + 5 * SEC);
    snprintf(a->position, sizeof(a->position), "1700000000000-3");
    assert_int_equal(batch_set(a, &a->request_id, "req-1"), MD_OK);
    assert_int_equal(batch_set(a, &a->client_ip, "10.0.0.1"), MD_OK);
    assert_int_equal(batch_set(a, &a->client_user_agent, "curl/8"), MD_OK);
    assert_int_equal(batch_add(a, "m1", "meter", "depot", "energy", T0 - 2 * SEC, 1), MD_OK);
    add(b, "m1", "energy", T0 - 2 * SEC, 1); /* duplicate: keeps a's provenance */
    add(b, "m1", "energy", T0 - 1 * SEC, 2);
    apply1(f->s, a);
    apply1(f->s, b); /* no position */

    rows rs = query(f->s, "m1", NULL, INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 2);
    assert_string_equal(rs.r[0].position, "1700000000000-3");
    assert_int_equal(rs.r[0].received_at_us, T0);
    assert_string_equal(rs.r[0].site, "depot");
    assert_string_equal(rs.r[1].position, "");
    assert_int_equal(rs.r[1].received_at_us, T0 + 5 * SEC);
    rows lv = live(f->s, "m1");
    assert_int_equal(lv.r[0].received_at_us, T0 + 5 * SEC);
    assert_string_equal(lv.r[0].position, "");
    assert_string_equal(lv.r[0].site, "depot");

    /* One row per batch; readings only point at it. */
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM batches"), 2);
    assert_int_equal(counts(f->s).batches, 2);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM batches WHERE position ="
                                      " '1700000000000-3' AND source = 'test' AND request_id ="
                                      " 'req-1' AND client_ip = '10.0.0.1' AND client_user_agent"
                                      " = 'curl/8' AND received_at_us = 1700000000000000"
                                      " AND n_readings = 1 AND applied_at_us > 0"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM batches WHERE position IS NULL"
                                      " AND n_readings = 2"),
                     1);
#ifndef STORE_TESTS_PG
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM pragma_table_info('readings')"
                                      " WHERE name = 'received_at_us'"),
                     0);
#else
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM information_schema.columns WHERE"
                                      " table_name = 'readings' AND column_name = 'received_at_us'"),
                     0);
#endif
    batch_free(a);
    batch_free(b);
}

static void test_data_survives_reopen(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    for (int i = 0; i < 10; i++)
        add(b, "m1", "energy", T0 - 100 * SEC + i * SEC, 100);
    apply1(f->s, b);
    f->s->ops->close(f->s);
    f->s = open_store(f);

    store_counts c = counts(f->s);
    assert_int_equal(c.readings, 10);
    assert_int_equal(c.devices, 1);
    assert_int_equal(c.batches, 1);
    assert_int_equal(query(f->s, "m1", NULL, INT64_MIN, INT64_MAX).n, 10);
    /* Replay after restart is still recognised, and the window came back from disk. */
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.skipped_batches, 1);
    batch *s = mkbatch(T0 + 1);
    add(s, "m1", "energy", T0 - 10 * SEC, 301);
    st = apply1(f->s, s);
    assert_int_equal(st.invalid, 1);
    batch_free(b);
    batch_free(s);
}

static void test_failed_apply_rolls_back_everything(void **state)
{
    fixture *f = *state;
    /* Inject a failure at the last step of the transaction (the counters, written after
     * readings, links, live rows and rollups) from another connection. */
    sql_exec(f->path, SQL_BOOM_ON);
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", T0 - SEC, 1);
    add(b, "m2", "power", T0 - SEC, 2);
    assert_int_equal(batch_add_link(b, "v1", "m1", "meter"), MD_OK);
    batch *bs[1] = {b};
    store_apply_stats st = {.stored = 99};
    char err[256] = "";
    assert_int_equal(f->s->ops->apply(f->s, bs, 1, &st, err, sizeof(err)), MD_ERR_STORE);
    assert_non_null(strstr(err, "injected failure"));
    assert_int_equal(st.stored, 0);
    store_counts c = counts(f->s);
    assert_int_equal(c.devices, 0);
    assert_int_equal(c.readings, 0);
    assert_int_equal(c.batches, 0);
    assert_int_equal(live(f->s, "m1").n, 0);
    devs ds = {0};
    assert_int_equal(f->s->ops->devices(f->s, NULL, 10, collect_dev, &ds), MD_OK);
    assert_int_equal(ds.n, 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM batches"), 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM links"), 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM rollup_hour"), 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM rollup_day"), 0);

    /* Once the cause is gone the same batch applies in full (id caches were dropped). */
    sql_exec(f->path, SQL_BOOM_OFF);
    batch *other = mkbatch(T0);
    add(other, "m0", "energy", T0, 1); /* takes a device id first */
    apply1(f->s, other);
    st = apply1(f->s, b);
    assert_int_equal(st.stored, 2);
    rows rs = query(f->s, "m2", "power", INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.r[0].device, "m2");
    assert_int_equal(query(f->s, "m1", NULL, INT64_MIN, INT64_MAX).n, 1);
    assert_int_equal(query(f->s, "m0", NULL, INT64_MIN, INT64_MAX).n, 1);
    assert_int_equal(counts(f->s).devices, 4); /* m0, m1, m2 and the linked v1 */
    assert_int_equal(links(f->s, "v1", "meter").n, 1);
    assert_int_equal(sql_int(f->path, "SELECT sum(count) FROM rollup_hour"), 3);
    batch_free(b);
    batch_free(other);
}

#ifndef STORE_TESTS_PG
static void test_open_in_missing_dir_fails_clearly(void **state)
{
    fixture *f = *state;
    char path[192], err[256] = "";
    snprintf(path, sizeof(path), "%s/nope/store.db", f->dir);
    assert_null(sqlite_store_open(path, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "does not exist"));
}

/* ---- one apply() of many batches: stored in key order, judged in arrival order ---- */

typedef struct seen_log {
    struct {
        const batch *b;
        size_t i;
        int outcome;
        char reason[128];
    } e[64];
    size_t n;
} seen_log;

static void log_outcome(void *arg, const batch *b, size_t i, int outcome, const char *reason)
{
    seen_log *l = arg;
    assert_true(l->n < 64);
    l->e[l->n].b = b;
    l->e[l->n].i = i;
    l->e[l->n].outcome = outcome;
    snprintf(l->e[l->n].reason, sizeof(l->e[l->n].reason), "%s", reason);
    l->n++;
}

/* Readings are inserted in (device, ts, metric) order, but anomaly windows, live rows, first-
 * arrival-wins and the observer must still follow arrival order across the batches of a call. */
static void test_one_apply_judges_readings_in_arrival_order(void **state)
{
    fixture *f = *state;
    seen_log log = {0};
    f->s->ops->observe(f->s, log_outcome, &log);

    /* b1: ten readings of 100 for m2, newest ts; interleaved with m1 (another device). */
    batch *b1 = mkbatch(T0), *b2 = mkbatch(T0 + 1), *b3 = mkbatch(T0 + 2);
    for (int i = 0; i < 10; i++) {
        add(b1, "m2", "energy", T0 - 100 * SEC + i * SEC, 100);
        add(b1, "m1", "energy", T0 - 100 * SEC + i * SEC, 7);
    }
    /* b2: m2's spike dated before all of them (key order would judge it first, with an
     * empty window, and call it valid); m1's key again with another value (a conflict: the
     * first arrival, 7, stays). */
    add(b2, "m2", "energy", T0 - 200 * SEC, 400);
    add(b2, "m1", "energy", T0 - 100 * SEC, 8);
    /* b3: m1's same key and value once more: a duplicate of what b1 stored. */
    add(b3, "m1", "energy", T0 - 100 * SEC, 7);

    batch *bs[3] = {b1, b2, b3};
    store_apply_stats st;
    char err[256] = "";
    assert_int_equal(f->s->ops->apply(f->s, bs, 3, &st, err, sizeof(err)), MD_OK);
    assert_int_equal(st.batches, 3);
    assert_int_equal(st.stored, 21);
    assert_int_equal(st.invalid, 1);
    assert_int_equal(st.conflicts, 1);
    assert_int_equal(st.duplicates, 1);

    rows rs = query(f->s, "m2", "energy", INT64_MIN, T0 - 150 * SEC);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0].valid, 0);
    assert_string_equal(rs.r[0].reason,
                        "sudden spike detected: value 400 exceeds 3.0x rolling average 100.00");
    rs = query(f->s, "m1", "energy", T0 - 100 * SEC, T0 - 100 * SEC + 1);
    assert_int_equal(rs.n, 1);
    assert_true(rs.r[0].value == 7);
    assert_int_equal(rs.r[0].received_at_us, T0);
    /* Live rows: the newest ts of each device, not the last one applied. */
    rows lv = live(f->s, "m2");
    assert_int_equal(lv.r[0].ts_us, T0 - 91 * SEC);
    assert_int_equal(lv.r[0].valid, 1);

    /* The observer heard every reading once, batch by batch, in each batch's order. */
    assert_int_equal(log.n, 23);
    for (size_t k = 0; k < 20; k++) {
        assert_ptr_equal(log.e[k].b, b1);
        assert_int_equal(log.e[k].i, k);
        assert_int_equal(log.e[k].outcome, STORE_OUTCOME_VALID);
    }
    assert_ptr_equal(log.e[20].b, b2);
    assert_int_equal(log.e[20].outcome, STORE_OUTCOME_INVALID);
    assert_string_equal(log.e[20].reason,
                        "sudden spike detected: value 400 exceeds 3.0x rolling average 100.00");
    assert_ptr_equal(log.e[21].b, b2);
    assert_int_equal(log.e[21].outcome, STORE_OUTCOME_CONFLICT);
    assert_ptr_equal(log.e[22].b, b3);
    assert_int_equal(log.e[22].outcome, STORE_OUTCOME_DUPLICATE);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings WHERE status = 0"), 1);
    batch_free(b1);
    batch_free(b2);
    batch_free(b3);
}

#endif

#ifndef STORE_TESTS_NO_MAIN
int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_apply_stores_readings_and_counts),
        T(test_same_batch_twice_changes_nothing),
        T(test_duplicate_reading_keeps_first_and_counts),
        T(test_conflict_is_kept_and_first_value_stays),
        T(test_live_state_keeps_newest_ts),
        T(test_spike_detected_across_batches),
        T(test_spike_detected_within_one_batch),
        T(test_validation_failures_stored_invalid),
        T(test_ingest_invalid_reason_stored_verbatim_without_window_or_live),
        T(test_readings_carry_batch_provenance),
        T(test_data_survives_reopen),
        T(test_failed_apply_rolls_back_everything),
        T(test_open_in_missing_dir_fails_clearly),
        T(test_one_apply_judges_readings_in_arrival_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
