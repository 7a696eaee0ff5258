/* Unit tests for the SQLite store's read side: readings paging and filters, the anomalies
 * query, devices, and queries running on other threads while the worker writes. */
#include "sqlite_fixture.h"

#include <pthread.h>

/* ---- queries ---- */

static void test_readings_paging_and_filters(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    for (int i = 0; i < 5; i++) {
        add(b, "m1", "voltage", T0 - 10 * SEC + i * SEC, 230 + i);
        add(b, "m1", "amps", T0 - 10 * SEC + i * SEC, 1 + i);
    }
    add(b, "m2", "amps", T0 - 10 * SEC, 99);
    apply1(f->s, b);

    /* [from, to): from included, to excluded */
    rows rs = query(f->s, "m1", NULL, T0 - 9 * SEC, T0 - 7 * SEC);
    assert_int_equal(rs.n, 4);
    assert_int_equal(rs.r[0].ts_us, T0 - 9 * SEC);
    assert_string_equal(rs.r[0].metric, "amps");
    assert_string_equal(rs.r[1].metric, "voltage");
    assert_int_equal(rs.r[3].ts_us, T0 - 8 * SEC);

    rs = query(f->s, "m1", "voltage", INT64_MIN, INT64_MAX);
    assert_int_equal(rs.n, 5);
    for (size_t i = 0; i < rs.n; i++)
        assert_true(rs.r[i].value == 230 + (double)i);
    assert_int_equal(query(f->s, "m1", "nope", INT64_MIN, INT64_MAX).n, 0);
    assert_int_equal(query(f->s, "nobody", NULL, INT64_MIN, INT64_MAX).n, 0);

    /* Pages of 3 with the (ts, metric) cursor walk all 10 rows exactly once. */
    store_readings_query q = {.device = "m1", .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 3};
    rows all = {0};
    for (int page = 0; page < 10; page++) {
        rows rp = {0};
        assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rp), MD_OK);
        if (rp.n == 0) break;
        assert_true(rp.n <= 3);
        memcpy(&all.r[all.n], rp.r, rp.n * sizeof(row));
        all.n += rp.n;
        static char cursor_metric[32];
        snprintf(cursor_metric, sizeof(cursor_metric), "%s", rp.r[rp.n - 1].metric);
        q.after_ts_us = rp.r[rp.n - 1].ts_us;
        q.after_metric = cursor_metric;
    }
    assert_int_equal(all.n, 10);
    for (size_t i = 0; i < 10; i++) {
        assert_int_equal(all.r[i].ts_us, T0 - 10 * SEC + (int64_t)(i / 2) * SEC);
        assert_string_equal(all.r[i].metric, i % 2 ? "voltage" : "amps");
    }

    /* Cursor with a metric filter. */
    q = (store_readings_query){.device = "m1",
                               .metric = "amps",
                               .from_us = INT64_MIN,
                               .to_us = INT64_MAX,
                               .after_ts_us = T0 - 8 * SEC,
                               .after_metric = "amps",
                               .limit = 10};
    rs = (rows){0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 2);
    assert_int_equal(rs.r[0].ts_us, T0 - 7 * SEC);

    /* A callback returning non-zero stops the walk. */
    rs = (rows){.stop_after = 2};
    q = (store_readings_query){
        .device = "m1", .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 100};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 2);

    q = (store_readings_query){.from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 10};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_ERR_INVALID);
    batch_free(b);
}

static void test_anomalies_query_spans_devices(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", T0 - 3 * SEC, -1);
    add(b, "m1", "energy", T0 - 2 * SEC, 1);
    add(b, "m2", "energy", T0 - 2 * SEC, NAN);
    add(b, "m3", "energy", T0 - 1 * SEC, -5);
    apply1(f->s, b);

    store_readings_query q = {
        .only_invalid = 1, .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 10};
    rows rs = {0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 3);
    assert_string_equal(rs.r[0].device, "m1");
    assert_string_equal(rs.r[0].reason, "negative value detected");
    assert_string_equal(rs.r[1].device, "m2");
    assert_string_equal(rs.r[2].device, "m3");

    q.from_us = T0 - 2 * SEC;
    q.limit = 1;
    rs = (rows){0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 1);
    assert_string_equal(rs.r[0].device, "m2");

    q = (store_readings_query){
        .device = "m1", .only_invalid = 1, .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 10};
    rs = (rows){0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 1);
    assert_int_equal(rs.r[0].ts_us, T0 - 3 * SEC);
    batch_free(b);
}

static void test_devices_first_last_seen_and_paging(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0 + 5 * SEC), *b = mkbatch(T0 + 9 * SEC), *c = mkbatch(T0 + 2 * SEC);
    assert_int_equal(batch_add(a, "m1", "meter", "", "energy", T0, 1), MD_OK);
    assert_int_equal(batch_add(a, "v1", "vehicle", "depot", "battery_temp", T0, 20), MD_OK);
    assert_int_equal(batch_add(b, "m1", "meter", "siteB", "energy", T0 + SEC, 1), MD_OK);
    assert_int_equal(batch_add(c, "m1", "device", "", "energy", T0 + 2 * SEC, 1), MD_OK);
    apply1(f->s, a);
    apply1(f->s, b);
    apply1(f->s, c); /* received earlier than a: first_seen moves back, site stays */

    devs ds = {0};
    assert_int_equal(f->s->ops->device(f->s, "m1", collect_dev, &ds), MD_OK);
    assert_int_equal(ds.n, 1);
    assert_string_equal(ds.id[0], "m1");
    assert_string_equal(ds.kind[0], "meter"); /* kind is set on insert only */
    assert_string_equal(ds.site[0], "siteB");
    assert_int_equal(ds.d[0].first_seen_us, T0 + 2 * SEC);
    assert_int_equal(ds.d[0].last_seen_us, T0 + 9 * SEC);
    assert_int_equal(f->s->ops->device(f->s, "zz", collect_dev, &ds), MD_ERR_NOTFOUND);

    batch *d = mkbatch(T0);
    add(d, "a0", "energy", T0, 1);
    add(d, "x9", "energy", T0, 1);
    apply1(f->s, d);
    ds = (devs){0};
    assert_int_equal(f->s->ops->devices(f->s, NULL, 2, collect_dev, &ds), MD_OK);
    assert_int_equal(ds.n, 2);
    assert_string_equal(ds.id[0], "a0");
    assert_string_equal(ds.id[1], "m1");
    ds = (devs){0};
    assert_int_equal(f->s->ops->devices(f->s, "m1", 10, collect_dev, &ds), MD_OK);
    assert_int_equal(ds.n, 2);
    assert_string_equal(ds.id[0], "v1");
    assert_string_equal(ds.site[0], "depot");
    assert_string_equal(ds.id[1], "x9");
    assert_int_equal(counts(f->s).devices, 4);
    batch_free(a);
    batch_free(b);
    batch_free(c);
    batch_free(d);
}

static void test_links_upsert_and_links_only_batch(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0); /* links only, no readings */
    assert_int_equal(batch_add_link(a, "v1", "m2", "meter"), MD_OK);
    assert_int_equal(batch_add_link(a, "v1", "m1", "meter"), MD_OK);
    assert_int_equal(batch_add_link(a, "v1", "d9", "parked_at"), MD_OK);
    store_apply_stats st = apply1(f->s, a);
    assert_int_equal(st.batches, 1);
    assert_int_equal(st.stored, 0);
    store_counts c = counts(f->s);
    assert_int_equal(c.batches, 1);
    assert_int_equal(c.devices, 4);
    assert_int_equal(c.readings, 0);

    devs ds = links(f->s, "v1", "meter");
    assert_int_equal(ds.n, 2);
    assert_string_equal(ds.id[0], "m1");
    assert_string_equal(ds.kind[0], "meter");
    assert_string_equal(ds.id[1], "m2");
    assert_int_equal(ds.d[1].first_seen_us, T0);
    ds = links(f->s, "v1", "parked_at");
    assert_int_equal(ds.n, 1);
    assert_string_equal(ds.id[0], "d9");
    assert_string_equal(ds.kind[0], "device");
    ds = links(f->s, "v1", NULL); /* any relation */
    assert_int_equal(ds.n, 3);
    assert_string_equal(ds.id[0], "d9");
    assert_int_equal(links(f->s, "m1", "meter").n, 0); /* links have a direction */
    assert_int_equal(links(f->s, "nobody", "meter").n, 0);
    ds = (devs){0};
    assert_int_equal(f->s->ops->device(f->s, "v1", collect_dev, &ds), MD_OK);
    assert_string_equal(ds.kind[0], "vehicle");

    /* Again later with readings: upserted (one row, newer updated_at), kinds stay. */
    batch *b = mkbatch(T0 + 60 * SEC);
    assert_int_equal(batch_add(b, "m3", "meter", "", "energy", T0, 5), MD_OK);
    assert_int_equal(batch_add_link(b, "v1", "m1", "meter"), MD_OK);
    assert_int_equal(batch_add_link(b, "m3", "v1", "meter"), MD_OK); /* both exist already */
    assert_int_equal(batch_add_link(b, "", "v1", "meter"), MD_OK);   /* ignored */
    st = apply1(f->s, b);
    assert_int_equal(st.stored, 1);
    assert_int_equal(links(f->s, "v1", "meter").n, 2);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM links"), 4);
    assert_int_equal(sql_int(f->path, "SELECT max(updated_at_us) FROM links l JOIN devices o"
                                      " ON o.id = l.linked_device_id WHERE o.ext_id = 'm1'"),
                     T0 + 60 * SEC);
    ds = links(f->s, "m3", "meter");
    assert_int_equal(ds.n, 1);
    assert_string_equal(ds.kind[0], "vehicle");
    ds = (devs){0};
    assert_int_equal(f->s->ops->device(f->s, "m3", collect_dev, &ds), MD_OK);
    assert_string_equal(ds.kind[0], "meter");
    assert_int_equal(counts(f->s).devices, 5);

    /* Replaying the links-only batch changes nothing. */
    st = apply1(f->s, a);
    assert_int_equal(st.skipped_batches, 1);
    assert_int_equal(counts(f->s).batches, 2);
    batch_free(a);
    batch_free(b);
}

static void test_site_readings_ordered_and_paged_across_devices(void **state)
{
    fixture *f = *state;
    /* Three devices of "depot" with equal timestamps, written in shuffled order across
     * batches, and one device of another site that must never show up. */
    const char *order[3] = {"d-c", "d-a", "d-b"};
    for (int k = 0; k < 3; k++) {
        batch *b = mkbatch(T0 + k);
        for (int t = 2; t >= 0; t--) {
            assert_int_equal(
                batch_add(b, order[k], "meter", "depot", "power", T0 - (3 - t) * SEC, k * 10 + t),
                MD_OK);
            assert_int_equal(
                batch_add(b, order[k], "meter", "depot", "energy", T0 - (3 - t) * SEC, 1), MD_OK);
            assert_int_equal(
                batch_add(b, "x-other", "meter", "yard", "energy", T0 - (3 - t) * SEC, 2), MD_OK);
        }
        apply1(f->s, b);
        batch_free(b);
    }

    /* Pages of 4: 18 rows in (ts, device, metric) order, each once. */
    static const char *const devnames[3] = {"d-a", "d-b", "d-c"};
    store_readings_query q = {
        .site = "depot", .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 4};
    rows all = {0};
    char cur_dev[32], cur_met[32];
    for (int page = 0; page < 10; page++) {
        rows rp = {0};
        assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rp), MD_OK);
        if (rp.n == 0) break;
        assert_true(rp.n <= 4);
        memcpy(&all.r[all.n], rp.r, rp.n * sizeof(row));
        all.n += rp.n;
        snprintf(cur_dev, sizeof(cur_dev), "%s", rp.r[rp.n - 1].device);
        snprintf(cur_met, sizeof(cur_met), "%s", rp.r[rp.n - 1].metric);
        q.after_ts_us = rp.r[rp.n - 1].ts_us;
        q.after_device = cur_dev;
        q.after_metric = cur_met;
    }
    assert_int_equal(all.n, 18);
    for (size_t i = 0; i < 18; i++) {
        assert_int_equal(all.r[i].ts_us, T0 - 3 * SEC + (int64_t)(i / 6) * SEC);
        assert_string_equal(all.r[i].device, devnames[(i / 2) % 3]);
        assert_string_equal(all.r[i].metric, i % 2 ? "power" : "energy");
        assert_string_equal(all.r[i].site, "depot");
    }
    assert_true(all.r[3].value == 20); /* d-b (written by batch 2), power, t = 0 */

    /* Metric filter and [from, to). */
    q = (store_readings_query){
        .site = "depot", .metric = "power", .from_us = T0 - 2 * SEC, .to_us = T0, .limit = 100};
    rows rs = {0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 6);
    assert_string_equal(rs.r[0].device, "d-a");
    assert_int_equal(rs.r[0].ts_us, T0 - 2 * SEC);
    assert_string_equal(rs.r[5].device, "d-c");
    assert_int_equal(rs.r[5].ts_us, T0 - 1 * SEC);

    /* Cursor in the middle of a timestamp: after (T0-2s, d-b, energy). */
    q = (store_readings_query){.site = "depot",
                               .from_us = INT64_MIN,
                               .to_us = INT64_MAX,
                               .after_ts_us = T0 - 2 * SEC,
                               .after_device = "d-b",
                               .after_metric = "energy",
                               .limit = 3};
    rs = (rows){0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 3);
    assert_string_equal(rs.r[0].device, "d-b");
    assert_string_equal(rs.r[0].metric, "power");
    assert_string_equal(rs.r[1].device, "d-c");
    assert_string_equal(rs.r[2].device, "d-c");
    assert_string_equal(rs.r[2].metric, "power");
    assert_int_equal(rs.r[2].ts_us, T0 - 2 * SEC);

    q = (store_readings_query){
        .site = "nowhere", .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 10};
    rs = (rows){0};
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_OK);
    assert_int_equal(rs.n, 0);
    q.site = "";
    assert_int_equal(f->s->ops->readings(f->s, &q, collect, &rs), MD_ERR_INVALID);
}

typedef struct reader_arg {
    store *s;
    int failures, done;
} reader_arg;

static void *reader_main(void *p)
{
    reader_arg *a = p;
    while (!__atomic_load_n(&a->done, __ATOMIC_ACQUIRE)) {
        store_counts c;
        rows rs = {0};
        store_readings_query q = {
            .device = "m1", .from_us = INT64_MIN, .to_us = INT64_MAX, .limit = 5};
        if (a->s->ops->counts(a->s, &c) != MD_OK) a->failures++;
        if (a->s->ops->readings(a->s, &q, collect, &rs) != MD_OK) a->failures++;
    }
    return NULL;
}

static void test_queries_run_while_worker_writes(void **state)
{
    fixture *f = *state;
    reader_arg a = {.s = f->s};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, reader_main, &a), 0);
    for (int i = 0; i < 20; i++) {
        batch *b = mkbatch(T0 + i);
        for (int j = 0; j < 50; j++)
            add(b, "m1", "energy", T0 - SEC * (i * 50 + j), j);
        apply1(f->s, b);
        batch_free(b);
    }
    __atomic_store_n(&a.done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(a.failures, 0);
    /* A new thread reuses a released connection; close() then frees them all. */
    a.done = 1;
    assert_int_equal(pthread_create(&t[0], NULL, reader_main, &a), 0);
    pthread_join(t[0], NULL);
    assert_int_equal(counts(f->s).readings, 1000);
}

#ifndef STORE_TESTS_NO_MAIN
int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_readings_paging_and_filters),
        T(test_anomalies_query_spans_devices),
        T(test_devices_first_last_seen_and_paging),
        T(test_links_upsert_and_links_only_batch),
        T(test_site_readings_ordered_and_paged_across_devices),
        T(test_queries_run_while_worker_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
