/* Unit tests for the SQLite store's rollups: hourly/daily buckets kept by apply(), the
 * aggregates query and window_sum. */
#include "sqlite_fixture.h"

#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY0 (INT64_C(1699920000) * SEC) /* 2023-11-14 00:00:00 UTC */
#define DAY1 (DAY0 + 24 * HOUR)
#define HA (DAY0 + 1 * HOUR)
#define HB (DAY0 + 2 * HOUR)
#define RECV (DAY1 + 10 * HOUR)

typedef struct aggs {
    store_aggregate a[32];
    char metric[32][32];
    size_t n;
} aggs;

static int collect_agg(void *arg, const store_aggregate *a)
{
    aggs *as = arg;
    assert_true(as->n < 32);
    snprintf(as->metric[as->n], 32, "%s", a->metric);
    as->a[as->n] = *a;
    as->a[as->n].metric = NULL; /* only valid during the call: use as->metric */
    as->n++;
    return 0;
}

static aggs aggregates(store *s, const char *device, const char *metric, int bucket, int64_t from,
                       int64_t to)
{
    aggs as = {0};
    store_aggregates_query q = {.device = device,
                                .metric = metric,
                                .bucket = bucket,
                                .from_us = from,
                                .to_us = to,
                                .limit = 32};
    assert_int_equal(s->ops->aggregates(s, &q, collect_agg, &as), MD_OK);
    return as;
}

static void assert_agg(const aggs *as, size_t i, const char *metric, int64_t bucket, uint64_t count,
                       double sum, double min, double max, int64_t first_ts, double first,
                       int64_t last_ts, double last)
{
    const store_aggregate *a = &as->a[i];
    assert_string_equal(as->metric[i], metric);
    assert_int_equal(a->bucket_us, bucket);
    assert_int_equal(a->count, count);
    assert_true(a->sum == sum);
    assert_true(a->min == min);
    assert_true(a->max == max);
    assert_int_equal(a->first_ts_us, first_ts);
    assert_true(a->first == first);
    assert_int_equal(a->last_ts_us, last_ts);
    assert_true(a->last == last);
}

static void test_rollups_out_of_order_valid_new_readings_only(void **state)
{
    fixture *f = *state;
    batch *b1 = mkbatch(RECV), *b2 = mkbatch(RECV), *b3 = mkbatch(RECV), *b4 = mkbatch(RECV);
    add(b1, "m1", "energy", HA + 30 * MIN, 10);
    add(b1, "m1", "energy", HA + 10 * MIN, 20); /* earlier, same transaction */
    add(b1, "m1", "energy", HB + 5 * MIN, 7);
    apply1(f->s, b1);

    add(b2, "m1", "energy", HA + 50 * MIN, 5);
    add(b2, "m1", "energy", HA + 5 * MIN, 30);  /* new first of hour A */
    add(b2, "m1", "energy", HA + 10 * MIN, 20); /* duplicate */
    add(b2, "m1", "energy", HA + 30 * MIN, 11); /* conflict */
    add(b2, "m1", "energy", HA + 20 * MIN, -1); /* invalid: negative */
    add(b2, "m1", "energy", HA + 21 * MIN, NAN);
    add(b2, "m1", "energy", HA + 22 * MIN, 1000);
    assert_int_equal(batch_mark_invalid(b2, "ingest said no"), MD_OK);
    add(b3, "m1", "energy", HA + 55 * MIN, 8); /* new last of hour A */
    add(b3, "m1", "energy", DAY1 + 1 * HOUR, 3);
    add(b3, "m1", "power", HA + 1 * MIN, 2);
    batch *bs[2] = {b2, b3};
    store_apply_stats st;
    char err[256];
    assert_int_equal(f->s->ops->apply(f->s, bs, 2, &st, err, sizeof(err)), MD_OK);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.conflicts, 1);
    assert_int_equal(st.invalid, 3);

    add(b4, "m1", "energy", HA + 15 * MIN, 4); /* new min; first and last stay */
    apply1(f->s, b4);
    assert_int_equal(apply1(f->s, b2).skipped_batches, 1); /* re-delivery counts nothing */

    aggs h = aggregates(f->s, "m1", NULL, STORE_BUCKET_HOUR, INT64_MIN, INT64_MAX);
    assert_int_equal(h.n, 4);
    /* hour A energy: 30@+5 20@+10 4@+15 10@+30 5@+50 8@+55 */
    assert_agg(&h, 0, "energy", HA, 6, 77, 4, 30, HA + 5 * MIN, 30, HA + 55 * MIN, 8);
    assert_agg(&h, 1, "power", HA, 1, 2, 2, 2, HA + MIN, 2, HA + MIN, 2);
    assert_agg(&h, 2, "energy", HB, 1, 7, 7, 7, HB + 5 * MIN, 7, HB + 5 * MIN, 7);
    assert_agg(&h, 3, "energy", DAY1 + HOUR, 1, 3, 3, 3, DAY1 + HOUR, 3, DAY1 + HOUR, 3);

    aggs d = aggregates(f->s, "m1", NULL, STORE_BUCKET_DAY, INT64_MIN, INT64_MAX);
    assert_int_equal(d.n, 3);
    assert_agg(&d, 0, "energy", DAY0, 7, 84, 4, 30, HA + 5 * MIN, 30, HB + 5 * MIN, 7);
    assert_agg(&d, 1, "power", DAY0, 1, 2, 2, 2, HA + MIN, 2, HA + MIN, 2);
    assert_agg(&d, 2, "energy", DAY1, 1, 3, 3, 3, DAY1 + HOUR, 3, DAY1 + HOUR, 3);

    /* Filters: metric, [from, to) on the bucket start, unknown names. */
    aggs p = aggregates(f->s, "m1", "power", STORE_BUCKET_HOUR, INT64_MIN, INT64_MAX);
    assert_int_equal(p.n, 1);
    aggs r = aggregates(f->s, "m1", "energy", STORE_BUCKET_HOUR, HA + 1, DAY1 + HOUR);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.a[0].bucket_us, HB);
    assert_int_equal(aggregates(f->s, "m1", "nope", STORE_BUCKET_HOUR, INT64_MIN, INT64_MAX).n, 0);
    assert_int_equal(aggregates(f->s, "zz", NULL, STORE_BUCKET_DAY, INT64_MIN, INT64_MAX).n, 0);
    batch_free(b1);
    batch_free(b2);
    batch_free(b3);
    batch_free(b4);
}

static void test_aggregates_paging_by_bucket_and_metric(void **state)
{
    fixture *f = *state;
    static const char *const metrics[3] = {"c", "a", "b"};
    batch *b = mkbatch(RECV);
    for (int hour = 3; hour >= 0; hour--)
        for (int m = 0; m < 3; m++)
            add(b, "m1", metrics[m], DAY0 + hour * HOUR + m * MIN, hour * 10 + m);
    apply1(f->s, b);

    store_aggregates_query q = {.device = "m1",
                                .bucket = STORE_BUCKET_HOUR,
                                .from_us = INT64_MIN,
                                .to_us = INT64_MAX,
                                .limit = 5};
    aggs all = {0};
    char cur[32];
    for (int page = 0; page < 10; page++) {
        aggs pg = {0};
        assert_int_equal(f->s->ops->aggregates(f->s, &q, collect_agg, &pg), MD_OK);
        if (pg.n == 0) break;
        assert_true(pg.n <= 5);
        for (size_t i = 0; i < pg.n; i++) {
            snprintf(all.metric[all.n], 32, "%s", pg.metric[i]);
            all.a[all.n++] = pg.a[i];
        }
        snprintf(cur, sizeof(cur), "%s", pg.metric[pg.n - 1]);
        q.after_bucket_us = pg.a[pg.n - 1].bucket_us;
        q.after_metric = cur;
    }
    assert_int_equal(all.n, 12);
    for (size_t i = 0; i < 12; i++) {
        assert_int_equal(all.a[i].bucket_us, DAY0 + (int64_t)(i / 3) * HOUR);
        static const char *const sorted[3] = {"a", "b", "c"};
        assert_string_equal(all.metric[i], sorted[i % 3]);
        assert_int_equal(all.a[i].count, 1);
    }

    /* Cursor with a metric filter: after hour 1 of "b". */
    q = (store_aggregates_query){.device = "m1",
                                 .metric = "b",
                                 .bucket = STORE_BUCKET_HOUR,
                                 .from_us = INT64_MIN,
                                 .to_us = INT64_MAX,
                                 .after_bucket_us = DAY0 + HOUR,
                                 .after_metric = "b",
                                 .limit = 10};
    aggs pg = {0};
    assert_int_equal(f->s->ops->aggregates(f->s, &q, collect_agg, &pg), MD_OK);
    assert_int_equal(pg.n, 2);
    assert_int_equal(pg.a[0].bucket_us, DAY0 + 2 * HOUR);
    assert_true(pg.a[0].sum == 22);
    q.bucket = 0;
    assert_int_equal(f->s->ops->aggregates(f->s, &q, collect_agg, &pg), MD_ERR_INVALID);
    batch_free(b);
}

typedef struct sample {
    int64_t ts;
    double v;
    int valid;
} sample;

static void test_window_sum_matches_brute_force(void **state)
{
    fixture *f = *state;
    /* Every 7 min 13 s over ~6 hours in 4 batches, some invalid, plus another metric. */
    sample sm[60];
    size_t n = 0;
    batch *bs[4];
    for (int k = 0; k < 4; k++)
        bs[k] = mkbatch(RECV);
    for (int i = 0; i < 50; i++) {
        sample *x = &sm[n++];
        x->ts = HA + i * (7 * MIN + 13 * SEC);
        x->v = (double)(i % 13 + 1);
        x->valid = i % 9 != 4;
        batch *b = bs[(i * 7) % 4]; /* out of order across batches */
        add(b, "m1", "energy", x->ts, x->valid ? x->v : -x->v);
        add(b, "m1", "power", x->ts, 1000);
    }
    batch *first[2] = {bs[2], bs[0]}, *second[2] = {bs[3], bs[1]};
    store_apply_stats st;
    char err[256];
    assert_int_equal(f->s->ops->apply(f->s, first, 2, &st, err, sizeof(err)), MD_OK);
    assert_int_equal(f->s->ops->apply(f->s, second, 2, &st, err, sizeof(err)), MD_OK);

    uint32_t seed = 12345;
    for (int t = 0; t < 200; t++) {
        seed = seed * 1103515245u + 12345u;
        int64_t a = HA - 30 * MIN + (int64_t)(seed % 420) * MIN + (int64_t)(seed % 977) * 1000;
        seed = seed * 1103515245u + 12345u;
        int64_t b = a + (int64_t)(seed % 300) * MIN + (int64_t)(seed % 61) * SEC;
        if (t == 0) a = HA, b = HA + 3 * HOUR;       /* whole hours only */
        if (t == 1) a = HA + MIN, b = HA + 10 * MIN; /* inside one hour */
        if (t == 2) a = HA + 59 * MIN, b = HB + MIN; /* two partial hours */
        uint64_t count = 0;
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            if (sm[i].valid && sm[i].ts >= a && sm[i].ts < b) count++, sum += sm[i].v;
        store_window_sum ws = {.count = 99};
        assert_int_equal(f->s->ops->window_sum(f->s, "m1", "energy", a, b, &ws), MD_OK);
        if (ws.count != count || ws.sum != sum)
            fail_msg("window [%lld, %lld): got %llu/%g, want %llu/%g", (long long)a, (long long)b,
                     (unsigned long long)ws.count, ws.sum, (unsigned long long)count, sum);
    }

    store_window_sum ws = {.count = 99, .sum = 1};
    assert_int_equal(f->s->ops->window_sum(f->s, "zz", "energy", INT64_MIN, INT64_MAX, &ws), MD_OK);
    assert_int_equal(ws.count, 0);
    assert_true(ws.sum == 0);
    assert_int_equal(f->s->ops->window_sum(f->s, "m1", "nope", INT64_MIN, INT64_MAX, &ws), MD_OK);
    assert_int_equal(ws.count, 0);
    assert_int_equal(f->s->ops->window_sum(f->s, "m1", "energy", HB, HA, &ws), MD_OK);
    assert_int_equal(ws.count, 0);
    for (int k = 0; k < 4; k++)
        batch_free(bs[k]);
}

static void test_window_sum_reads_whole_hours_from_rollups(void **state)
{
    fixture *f = *state;
    batch *b = mkbatch(RECV);
    add(b, "m1", "energy", HA + 10 * MIN, 1);
    add(b, "m1", "energy", HA + 40 * MIN, 2);
    add(b, "m1", "energy", HB + 10 * MIN, 4);
    apply1(f->s, b);
    /* Tamper with hour A's rollup: a whole-hour window must see it, a partial one must not. */
    sql_exec(f->path, "UPDATE rollup_hour SET sum = sum + 100, count = count + 10"
                      " WHERE bucket_us = 1699923600000000");
    store_window_sum ws;
    assert_int_equal(f->s->ops->window_sum(f->s, "m1", "energy", HA, HB + 30 * MIN, &ws), MD_OK);
    assert_int_equal(ws.count, 13);
    assert_true(ws.sum == 107);
    assert_int_equal(f->s->ops->window_sum(f->s, "m1", "energy", HA + MIN, HB + 30 * MIN, &ws),
                     MD_OK);
    assert_int_equal(ws.count, 3);
    assert_true(ws.sum == 7);
    batch_free(b);
}

#ifndef STORE_TESTS_NO_MAIN
int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_rollups_out_of_order_valid_new_readings_only),
        T(test_aggregates_paging_by_bucket_and_metric),
        T(test_window_sum_matches_brute_force),
        T(test_window_sum_reads_whole_hours_from_rollups),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
