/* Unit tests for the PostgreSQL store against a real PostgreSQL 15 (pg_server.h): the same
 * behavioural tests as the SQLite store (test_sqlite*.c, compiled here with the pg fixture),
 * plus what only PostgreSQL has: concurrent appliers, partitions, views, migrations racing. */
#define STORE_TESTS_PG
#define STORE_TESTS_NO_MAIN
#include "test_sqlite.c"
#include "test_sqlite_query.c"
#include "test_sqlite_rollup.c"

#include <pthread.h>

/* ---- concurrent appliers ---- */

typedef struct applier {
    const char *url;
    int thread;
    int failures;
    char err[512];
    store_apply_stats total;
} applier;

#define CONC_CALLS 30
#define CONC_DEVS 4
#define CONC_PER_DEV 10

static void *applier_main(void *p)
{
    applier *a = p;
    char err[512] = "";
    store_rules rules = {.max_future_us = 300 * SEC};
    store *s = pg_store_open(a->url, &rules, err, sizeof(err));
    if (!s) {
        snprintf(a->err, sizeof(a->err), "open: %.400s", err);
        a->failures++;
        return NULL;
    }
    static const char *const devs[CONC_DEVS] = {"c-a", "c-b", "c-c", "c-d"};
    for (int i = 0; i < CONC_CALLS; i++) {
        batch *bs[2];
        for (int k = 0; k < 2; k++) {
            bs[k] = batch_new("test");
            bs[k]->received_at_us = T0 + i;
            for (int d = 0; d < CONC_DEVS; d++) {
                /* Opposite device orders in the two threads. */
                const char *dev = devs[a->thread ? CONC_DEVS - 1 - d : d];
                for (int j = 0; j < CONC_PER_DEV; j++) {
                    int64_t base = T0 - INT64_C(20000) * SEC + (int64_t)((i * 2 + k) * 100 + j) * SEC;
                    /* One key both threads write (same value: a duplicate), one of its own. */
                    batch_add(bs[k], dev, "meter", "", "energy", base, j + 1);
                    batch_add(bs[k], dev, "meter", "", "energy",
                              base + (a->thread + 1) * (SEC / 4), j + 1);
                }
            }
        }
        store_apply_stats st;
        if (s->ops->apply(s, bs, 2, &st, err, sizeof(err)) != MD_OK) {
            snprintf(a->err, sizeof(a->err), "apply: %.400s", err);
            a->failures++;
        } else {
            a->total.stored += st.stored;
            a->total.duplicates += st.duplicates;
            a->total.conflicts += st.conflicts;
            a->total.invalid += st.invalid;
        }
        batch_free(bs[0]);
        batch_free(bs[1]);
    }
    s->ops->close(s);
    return NULL;
}

static void test_concurrent_appliers_store_each_reading_once(void **state)
{
    fixture *f = *state;
    applier a[2] = {{.url = f->path, .thread = 0}, {.url = f->path, .thread = 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, applier_main, &a[i]), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        if (a[i].failures) fail_msg("thread %d: %d failures, last: %s", i, a[i].failures, a[i].err);

    /* Per thread and call: 2 batches x 4 devices x 10 x (1 shared + 1 own key). */
    uint64_t shared = CONC_CALLS * 2 * CONC_DEVS * CONC_PER_DEV, own = 2 * shared;
    assert_int_equal(a[0].total.stored + a[1].total.stored, shared + own);
    assert_int_equal(a[0].total.duplicates + a[1].total.duplicates, shared);
    assert_int_equal(a[0].total.conflicts + a[1].total.conflicts, 0);
    assert_int_equal(a[0].total.invalid + a[1].total.invalid, 0);
    store_counts c = counts(f->s);
    assert_int_equal(c.readings, shared + own);
    assert_int_equal(c.devices, CONC_DEVS);
    assert_int_equal(c.batches, 2 * 2 * CONC_CALLS);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings"), shared + own);
    assert_int_equal(sql_int(f->path, "SELECT sum(count) FROM rollup_hour"), shared + own);
    assert_int_equal(sql_int(f->path, "SELECT sum(count) FROM rollup_day"), shared + own);
    assert_int_equal(sql_int(f->path, "SELECT (SELECT sum(sum) FROM rollup_hour)::bigint"
                                      " - (SELECT sum(value) FROM readings)::bigint"),
                     0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM live"), CONC_DEVS);
    assert_int_equal(sql_int(f->path, "SELECT sum(min) FROM rollup_hour") > 0, 1);
}

/* ---- insert first, stored keys only on a unique violation (decision 21) ---- */

/* A call mixing a stored key with new readings: the optimistic insert fails, and the redo
 * must decide everything afresh (its first walk's windows and rollups are thrown away). */
static void test_stored_key_in_a_mixed_call_is_redone_with_the_lookup(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + SEC), *c = mkbatch(T0 + 2 * SEC);
    for (int i = 0; i < 5; i++)
        add(a, "mix", "energy", T0 - (10 - i) * SEC, 10 + i);
    add(b, "mix", "energy", T0 - 8 * SEC, 12); /* stored, same value: duplicate */
    add(b, "mix", "energy", T0 - 7 * SEC, 99); /* stored, other value: conflict */
    add(b, "mix", "energy", T0 - 2 * SEC, 15); /* new */
    add(c, "mix", "energy", T0 - 1 * SEC, 16); /* new, with the lookup still on */
    apply1(f->s, a);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.conflicts, 1);
    st = apply1(f->s, c);
    assert_int_equal(st.stored, 1);
    assert_int_equal(st.duplicates, 0);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings"), 7);
    assert_int_equal(sql_int(f->path, "SELECT sum(count) FROM rollup_hour"), 7);
    assert_int_equal(sql_int(f->path, "SELECT sum(sum)::bigint FROM rollup_day"),
                     10 + 11 + 12 + 13 + 14 + 15 + 16);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM conflicts"), 1);
    batch_free(a);
    batch_free(b);
    batch_free(c);
}

/* ---- partitions, views, migrations, reconnects ---- */

static void test_far_months_and_default_partition(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "m1", "energy", INT64_C(-3786825600) * SEC, 1); /* 1850 */
    add(b, "m1", "energy", T0 - SEC, 2);                   /* 2023-11 */
    add(b, "m1", "energy", INT64_C(10413792000) * SEC, 3); /* 2300-01 */
    add(b, "m1", "energy", INT64_MAX, 4);
    add(b, "m1", "energy", INT64_MIN, 5);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 5);
    assert_int_equal(st.invalid, 2); /* the two in the far future */
    assert_int_equal(query(f->s, "m1", NULL, INT64_MIN, INT64_MAX).n, 4); /* to is excluded */
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings_p202311"), 1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings_p230001"), 1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM readings_default"), 3);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM store_meta WHERE key ="
                                      " 'partitioning' AND value IN ('native', 'timescaledb')"),
                     1);
    batch_free(b);
}

static int sql_fails(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, sql);
    int failed = PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK;
    PQclear(r);
    PQfinish(c);
    return failed;
}

static void test_views_for_older_systems(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(T0);
    add(b, "mtr-1", "energy", T0 - 2 * SEC, 10);
    add(b, "mtr-1", "energy", T0 - 1 * SEC, -1); /* invalid: not in meter_readings */
    add(b, "ac-1", "kwh_consumed_ac", T0 - SEC, 5);
    add(b, "ac-1", "voltage", T0 - SEC, 230);
    assert_int_equal(batch_add(b, "veh-1", "vehicle", "", "kwh_delivered_dc", T0 - SEC, 7), MD_OK);
    assert_int_equal(batch_add(b, "veh-1", "vehicle", "", "battery_temp", T0 - SEC, 31), MD_OK);
    assert_int_equal(batch_add(b, "fp-1", "client", "", "PM1", T0 - SEC, 3), MD_OK);
    assert_int_equal(batch_add_link(b, "veh-1", "ac-1", "meter"), MD_OK);
    apply1(f->s, b);

    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meters"), 2);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meters m JOIN meter_readings r"
                                      " ON r.meter_id = m.id WHERE m.meter_number = 'mtr-1'"
                                      " AND r.value = 10 AND r.value_at ="
                                      " to_timestamp(1699999998)"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meter_clients WHERE client_id = 'fp-1'"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meter_readings_raw"), 7);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meter_readings_raw WHERE"
                                      " validation_status = 'invalid' AND anomaly_reason ="
                                      " 'negative value detected' AND raw_payload->>'device'"
                                      " = 'mtr-1'"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meter_history WHERE meter_id = 'ac-1'"
                                      " AND kwh_consumed_ac = 5 AND voltage = 230"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM meter_live_state WHERE"
                                      " meter_id = 'ac-1' AND voltage = 230"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM vehicle_history WHERE"
                                      " vehicle_id = 'veh-1' AND battery_temp = 31"),
                     1);
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM vehicle_live_state WHERE"
                                      " vehicle_id = 'veh-1' AND meter_id = 'ac-1'"
                                      " AND kwh_delivered_dc = 7"),
                     1);
    /* Read-only. */
    assert_true(sql_fails(f->path, "DELETE FROM meters"));
    assert_true(sql_fails(f->path, "UPDATE meter_clients SET client_id = 'x'"));
    assert_true(sql_fails(f->path, "DELETE FROM meter_readings"));
    assert_int_equal(sql_int(f->path, "SELECT count(*) FROM devices"), 4);
    batch_free(b);
}

typedef struct opener {
    const char *url;
    int ok;
    char err[512];
} opener;

static void *opener_main(void *p)
{
    opener *o = p;
    store *s = pg_store_open(o->url, NULL, o->err, sizeof(o->err));
    o->ok = s != NULL;
    if (s) s->ops->close(s);
    return NULL;
}

static void test_processes_starting_at_once_migrate_once(void **state)
{
    fixture *f = *state;
    fixture g = {0};
    pg_new_db(&g); /* empty: the openers race on the migrations */
    opener o[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        o[i] = (opener){.url = g.path};
        assert_int_equal(pthread_create(&t[i], NULL, opener_main, &o[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++)
        if (!o[i].ok) fail_msg("open %d: %s", i, o[i].err);
    assert_int_equal(sql_int(g.path, "SELECT count(*) FROM schema_migrations"), 2);
    assert_int_equal(sql_int(g.path, "SELECT count(*) FROM counters"), 1);
    char sql[96];
    snprintf(sql, sizeof(sql), "DROP DATABASE %s WITH (FORCE)", g.db);
    pg_admin_exec("postgres", sql);
    (void)f;
}

static void test_connections_killed_are_remade(void **state)
{
    fixture *f = *state;
    batch *a = mkbatch(T0), *b = mkbatch(T0 + 1);
    add(a, "m1", "energy", T0 - 2 * SEC, 1);
    add(b, "m1", "energy", T0 - 1 * SEC, 2);
    apply1(f->s, a);
    assert_int_equal(counts(f->s).readings, 1);
    /* Kill every backend of this database (apply and pool connections). */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '%s'"
             " AND pid <> pg_backend_pid()",
             f->db);
    assert_true(sql_int(f->path, sql) >= 1);
    store_apply_stats st = apply1(f->s, b);
    assert_int_equal(st.stored, 1);
    assert_int_equal(counts(f->s).readings, 2);
    assert_int_equal(query(f->s, "m1", NULL, INT64_MIN, INT64_MAX).n, 2);
    batch_free(a);
    batch_free(b);
}

static void test_bad_url_fails_clearly(void **state)
{
    (void)state;
    char err[512] = "";
    char url[128];
    snprintf(url, sizeof(url), "postgres://postgres@127.0.0.1:%d/no_such_db", pg_srv.port);
    assert_null(pg_store_open(url, NULL, err, sizeof(err)));
    assert_non_null(strstr(err, "no_such_db"));
    assert_null(pg_store_open("", NULL, err, sizeof(err)));
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        /* test_sqlite.c */
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
        /* test_sqlite_query.c */
        T(test_readings_paging_and_filters),
        T(test_anomalies_query_spans_devices),
        T(test_devices_first_last_seen_and_paging),
        T(test_links_upsert_and_links_only_batch),
        T(test_site_readings_ordered_and_paged_across_devices),
        T(test_queries_run_while_worker_writes),
        /* test_sqlite_rollup.c */
        T(test_rollups_out_of_order_valid_new_readings_only),
        T(test_aggregates_paging_by_bucket_and_metric),
        T(test_window_sum_matches_brute_force),
        T(test_window_sum_reads_whole_hours_from_rollups),
        /* PostgreSQL only */
        T(test_concurrent_appliers_store_each_reading_once),
        T(test_stored_key_in_a_mixed_call_is_redone_with_the_lookup),
        T(test_far_months_and_default_partition),
        T(test_views_for_older_systems),
        T(test_processes_starting_at_once_migrate_once),
        T(test_connections_killed_are_remade),
        T(test_bad_url_fails_clearly),
    };
    return cmocka_run_group_tests(tests, pg_group_setup, pg_group_teardown);
}
