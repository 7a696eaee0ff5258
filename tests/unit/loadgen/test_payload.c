/* Unit tests for src/loadgen/payload.c: every generated body is accepted by meterd's own
 * decoders (the gRPC Write one included) with the right reading count, and keys do not repeat. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/base64.h"
#include "ingest/ingest.h"
#include "loadgen/options.h"
#include "loadgen/payload.h"
#include "query/grpc_decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define START INT64_C(1773829800123456) /* 2026-03-18T10:30:00.123456Z */

static const ingest_limits LIM = {.max_readings = 100000};

static lg_opts opts(lg_format f, size_t per_req, uint64_t devices)
{
    lg_opts o;
    memset(&o, 0, sizeof o);
    o.format = f;
    o.batch = per_req;
    o.devices = devices;
    o.threads = 1;
    return o;
}

/* Decodes body with the decoder of format f; fails the test on a rejection. */
static batch *decode(lg_format f, const lg_buf *body)
{
    batch *b = NULL;
    ingest_error e = {0};
    int rc;
    switch (f) {
    case LG_FMT_RAW: rc = ingest_meter_raw(body->p, body->len, &LIM, &b, &e); break;
    case LG_FMT_ENVELOPE:
        rc = ingest_envelope(body->p, body->len, &LIM, 300 * TIME_US_PER_SEC, &b, &e);
        break;
    case LG_FMT_SITE: rc = ingest_site_reading(body->p, body->len, &LIM, &b, &e); break;
    case LG_FMT_GRPC: {
        grpc_status_code code = grpcsrv_write_decode((const uint8_t *)body->p, body->len, &LIM,
                                                     &b, e.message, sizeof e.message);
        e.status = (int)code;
        rc = code == GRPC_STATUS_OK ? MD_OK : MD_ERR_INVALID;
        break;
    }
    default: rc = ingest_canonical_json(body->p, body->len, &LIM, &b, &e); break;
    }
    if (rc) fail_msg("rejected (%d %s): %.300s", e.status, e.message, body->p);
    return b;
}

typedef struct key {
    char device[64], metric[32];
    int64_t ts;
} key;

static int key_cmp(const void *a, const void *b)
{
    const key *x = a, *y = b;
    int c = strcmp(x->device, y->device);
    if (!c) c = strcmp(x->metric, y->metric);
    if (!c) c = x->ts < y->ts ? -1 : x->ts > y->ts;
    return c;
}

/* Generates requests seq 0..n-1 of format f, decodes each and returns the number of
 * duplicate keys over all of them. */
static size_t run_format(lg_format f, size_t per_req, uint64_t devices, uint64_t n, int64_t start)
{
    lg_opts o = opts(f, per_req, devices);
    lg_gen g;
    assert_int_equal(lg_gen_init(&g, &o, 0, 1, start, 0), MD_OK);
    key *keys = calloc(n * per_req, sizeof *keys);
    assert_non_null(keys);
    size_t nk = 0;
    lg_buf body = {0};
    for (uint64_t seq = 0; seq < n; seq++) {
        lg_req_info info;
        body.len = 0;
        assert_int_equal(lg_gen_body(&g, seq, &body, &info), MD_OK);
        assert_int_equal(info.readings, per_req);
        batch *b = decode(f, &body);
        assert_int_equal(b->n_readings, per_req);
        for (size_t i = 0; i < b->n_readings; i++) {
            const reading *r = &b->readings[i];
            assert_true(r->invalid_reason == NULL || !r->invalid_reason[0]);
            assert_true(r->ts_us >= start && r->ts_us < start + TIME_US_PER_SEC);
            snprintf(keys[nk].device, sizeof keys[nk].device, "%s", r->device);
            snprintf(keys[nk].metric, sizeof keys[nk].metric, "%s", r->metric);
            keys[nk++].ts = r->ts_us;
        }
        batch_free(b);
    }
    qsort(keys, nk, sizeof *keys, key_cmp);
    size_t dups = 0;
    for (size_t i = 1; i < nk; i++)
        dups += !key_cmp(&keys[i - 1], &keys[i]);
    free(keys);
    lg_buf_free(&body);
    lg_gen_free(&g);
    return dups;
}

static void test_single_is_one_canonical_reading(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_SINGLE, 1, 10, 500, START), 0);
}

static void test_batch_decodes_with_every_reading(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_BATCH, 1000, 7, 5, START), 0);
}

static void test_raw_protobuf_decodes_with_every_reading(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_RAW, 1000, 3, 7, START), 0);
    assert_int_equal(run_format(LG_FMT_RAW, 1, 3, 20, START), 0);
    assert_int_equal(run_format(LG_FMT_RAW, 2, 3, 20, START), 0);
}

static void test_envelope_decodes_with_every_entry_valid(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_ENVELOPE, 250, 4, 9, START), 0);
}

static void test_site_reading_decodes(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_SITE, 1, 1000, 300, START), 0);
}

/* The packed WriteRequest passes the server's own decode and checks (grpc_write.c). */
static void test_grpc_write_request_decodes_with_every_reading(void **state)
{
    (void)state;
    assert_int_equal(run_format(LG_FMT_GRPC, 1000, 7, 5, START), 0);
    assert_int_equal(run_format(LG_FMT_GRPC, 1, 3, 20, START), 0);
}

/* Runs one after the other (the second starts 1 s later) must not share a key. */
static void test_keys_do_not_repeat_across_runs(void **state)
{
    (void)state;
    lg_opts o = opts(LG_FMT_SINGLE, 1, 5);
    lg_gen a, b;
    assert_int_equal(lg_gen_init(&a, &o, 0, 1, START, 0), MD_OK);
    assert_int_equal(lg_gen_init(&b, &o, 0, 1, START + TIME_US_PER_SEC, 0), MD_OK);
    lg_buf body = {0};
    lg_req_info info;
    /* 5 devices, 5,000 readings each in run a: its last ts is still before run b's first */
    body.len = 0;
    assert_int_equal(lg_gen_body(&a, 24999, &body, &info), MD_OK);
    batch *last_a = decode(LG_FMT_SINGLE, &body);
    body.len = 0;
    assert_int_equal(lg_gen_body(&b, 0, &body, &info), MD_OK);
    batch *first_b = decode(LG_FMT_SINGLE, &body);
    assert_true(last_a->readings[0].ts_us < first_b->readings[0].ts_us);
    batch_free(last_a);
    batch_free(first_b);
    lg_buf_free(&body);
    lg_gen_free(&a);
    lg_gen_free(&b);
}

static void test_base64_matches_the_decoder(void **state)
{
    (void)state;
    uint8_t in[64];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 53 + 7);
    for (size_t n = 0; n <= sizeof in; n++) {
        lg_buf b = {0};
        assert_int_equal(lg_base64_encode(&b, in, n), MD_OK);
        assert_int_equal(b.len, (n + 2) / 3 * 4);
        uint8_t out[64];
        size_t out_len = 0, bad = 0;
        assert_int_equal(ingest_base64_decode(b.p ? b.p : "", b.len, out, &out_len, &bad), MD_OK);
        assert_int_equal(out_len, n);
        assert_memory_equal(out, in, n);
        lg_buf_free(&b);
    }
}

/* The fleet replay: minute-aligned ts, ~1% resent (the only repeated keys), ~1% late. */
static void test_fleet_replay_resends_and_delays_about_one_percent(void **state)
{
    (void)state;
    lg_opts o = opts(LG_FMT_BATCH, 100, 0);
    o.fleet = 500;
    const int64_t t0 = (START / (60 * TIME_US_PER_SEC) - 100) * 60 * TIME_US_PER_SEC;
    lg_gen g;
    assert_int_equal(lg_gen_init(&g, &o, 0, 1, START, t0), MD_OK);
    const uint64_t n = 200; /* 20,000 readings = 40 rounds */
    key *keys = calloc(n * 100, sizeof *keys);
    assert_non_null(keys);
    size_t nk = 0, resent = 0, late = 0;
    lg_buf body = {0};
    for (uint64_t seq = 0; seq < n; seq++) {
        lg_req_info info;
        body.len = 0;
        assert_int_equal(lg_gen_body(&g, seq, &body, &info), MD_OK);
        resent += info.resent;
        late += info.late;
        batch *b = decode(LG_FMT_BATCH, &body);
        assert_int_equal(b->n_readings, 100);
        for (size_t i = 0; i < b->n_readings; i++) {
            assert_int_equal(b->readings[i].ts_us % (60 * TIME_US_PER_SEC), 0);
            assert_true(b->readings[i].ts_us >= t0);
            snprintf(keys[nk].device, sizeof keys[nk].device, "%s", b->readings[i].device);
            snprintf(keys[nk].metric, sizeof keys[nk].metric, "%s", b->readings[i].metric);
            keys[nk++].ts = b->readings[i].ts_us;
        }
        batch_free(b);
    }
    qsort(keys, nk, sizeof *keys, key_cmp);
    size_t dups = 0;
    for (size_t i = 1; i < nk; i++)
        dups += !key_cmp(&keys[i - 1], &keys[i]);
    assert_int_equal(dups, resent);
    assert_true(resent > 100 && resent < 300);
    assert_true(late > 100 && late < 300);
    free(keys);
    lg_buf_free(&body);
    lg_gen_free(&g);
}

static void test_options_reject_bad_values_with_a_message(void **state)
{
    (void)state;
    lg_opts o;
    char err[256];
    char *bad1[] = {"meterd", "loadgen", "--format", "xml"};
    assert_int_equal(lg_opts_parse(&o, 4, bad1, 2, err, sizeof err), MD_ERR_INVALID);
    assert_non_null(strstr(err, "--format"));
    char *bad2[] = {"meterd", "loadgen", "--duration", "5", "--count", "10"};
    assert_int_equal(lg_opts_parse(&o, 6, bad2, 2, err, sizeof err), MD_ERR_INVALID);
    char *bad3[] = {"meterd", "loadgen", "--url", "https://x"};
    assert_int_equal(lg_opts_parse(&o, 4, bad3, 2, err, sizeof err), MD_ERR_INVALID);
    char *bad4[] = {"meterd", "loadgen", "--connections"};
    assert_int_equal(lg_opts_parse(&o, 3, bad4, 2, err, sizeof err), MD_ERR_INVALID);
    assert_non_null(strstr(err, "needs a value"));
    char *ok[] = {"meterd", "loadgen", "--url=http://[::1]:9000/base/", "--format", "raw",
                  "--rate", "100"};
    assert_int_equal(lg_opts_parse(&o, 7, ok, 2, err, sizeof err), MD_OK);
    assert_string_equal(o.host, "::1");
    assert_string_equal(o.port, "9000");
    assert_string_equal(o.prefix, "/base");
    assert_int_equal(o.batch, 1000);
    assert_true(o.duration_s == 10);
    assert_string_equal(o.grpc_addr, "");
}

static void test_options_grpc_target_defaults_to_the_url_host(void **state)
{
    (void)state;
    lg_opts o;
    char err[256];
    char *dflt[] = {"meterd", "loadgen", "--format", "grpc", "--url", "http://[::1]:9000"};
    assert_int_equal(lg_opts_parse(&o, 6, dflt, 2, err, sizeof err), MD_OK);
    assert_string_equal(o.grpc_addr, "[::1]:50051");
    assert_int_equal(o.batch, 1000);
    char *given[] = {"meterd", "loadgen", "--grpc-addr=127.0.0.1:7000", "--format", "grpc",
                     "--batch", "10", "--fleet", "50"};
    assert_int_equal(lg_opts_parse(&o, 9, given, 2, err, sizeof err), MD_OK);
    assert_string_equal(o.grpc_addr, "127.0.0.1:7000");
    assert_int_equal(o.batch, 10);
    assert_int_equal(o.fleet, 50);
    char *wrong[] = {"meterd", "loadgen", "--grpc-addr", "127.0.0.1:7000", "--format", "raw"};
    assert_int_equal(lg_opts_parse(&o, 6, wrong, 2, err, sizeof err), MD_ERR_INVALID);
    assert_non_null(strstr(err, "--grpc-addr"));
    char *empty[] = {"meterd", "loadgen", "--format", "grpc", "--grpc-addr", ""};
    assert_int_equal(lg_opts_parse(&o, 6, empty, 2, err, sizeof err), MD_ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_is_one_canonical_reading),
        cmocka_unit_test(test_batch_decodes_with_every_reading),
        cmocka_unit_test(test_raw_protobuf_decodes_with_every_reading),
        cmocka_unit_test(test_envelope_decodes_with_every_entry_valid),
        cmocka_unit_test(test_site_reading_decodes),
        cmocka_unit_test(test_grpc_write_request_decodes_with_every_reading),
        cmocka_unit_test(test_keys_do_not_repeat_across_runs),
        cmocka_unit_test(test_base64_matches_the_decoder),
        cmocka_unit_test(test_fleet_replay_resends_and_delays_about_one_percent),
        cmocka_unit_test(test_options_reject_bad_values_with_a_message),
        cmocka_unit_test(test_options_grpc_target_defaults_to_the_url_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
