/* Canonical batch: arena strings, protobuf round trip, ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "batch_pb_ref.h"
#include "core/batch.h"
#include "core/error.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_encode_decode_round_trip_keeps_every_field(void **state)
{
    (void)state;
    batch *b = batch_new("test");
    assert_non_null(b);
    assert_int_equal(batch_set(b, &b->request_id, "req-1"), MD_OK);
    assert_int_equal(batch_set(b, &b->client_fingerprint, "fp"), MD_OK);
    assert_int_equal(batch_add(b, "m-1", "meter", "site-9", "energy", 1000, 1.5), MD_OK);
    assert_int_equal(batch_add(b, "m-1", "meter", "site-9", "energy", 2000, NAN), MD_OK);
    assert_int_equal(batch_mark_invalid(b, "data is not a number"), MD_OK);
    assert_int_equal(batch_add_link(b, "VEH_1", "MTR_1", "meter"), MD_OK);
    /* equal strings of consecutive readings are shared, not copied */
    assert_ptr_equal(b->readings[0].device, b->readings[1].device);

    uint8_t *buf;
    size_t len;
    assert_int_equal(batch_encode(b, &buf, &len), MD_OK);
    batch *d = NULL;
    char err[128];
    assert_int_equal(batch_decode(buf, len, &d, err, sizeof err), MD_OK);
    assert_memory_equal(d->id, b->id, 16);
    assert_int_equal(d->received_at_us, b->received_at_us);
    assert_string_equal(d->source, "test");
    assert_string_equal(d->request_id, "req-1");
    assert_string_equal(d->client_fingerprint, "fp");
    assert_int_equal(d->n_readings, 2);
    assert_string_equal(d->readings[0].site, "site-9");
    assert_string_equal(d->readings[0].device_kind, "meter");
    assert_int_equal(d->readings[1].ts_us, 2000);
    assert_true(isnan(d->readings[1].value));
    assert_string_equal(d->readings[0].invalid_reason, "");
    assert_string_equal(d->readings[1].invalid_reason, "data is not a number");
    assert_int_equal(d->n_links, 1);
    assert_string_equal(d->links[0].linked_device, "MTR_1");
    free(buf);
    batch_free(b);
    batch_free(d);
}

static void test_garbage_does_not_decode(void **state)
{
    (void)state;
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x02};
    batch *d = (batch *)1;
    char err[128] = "";
    assert_int_equal(batch_decode(junk, sizeof junk, &d, err, sizeof err), MD_ERR_CORRUPT);
    assert_null(d);
    assert_non_null(strstr(err, "not a valid protobuf"));
}

static void test_ids_are_uuidv7_and_keyed_ids_are_stable(void **state)
{
    (void)state;
    uint8_t a[16], b[16], c[16];
    char text[37];
    batch_id_new(a);
    batch_id_format(a, text);
    assert_int_equal(strlen(text), 36);
    assert_int_equal(text[14], '7'); /* version nibble */
    batch_id_from_key(a, 1700000000000, "fp\nreq-1", 9);
    batch_id_from_key(b, 1700000000000, "fp\nreq-1", 9);
    batch_id_from_key(c, 1700000000000, "fp\nreq-2", 9);
    assert_memory_equal(a, b, 16);
    assert_memory_not_equal(a, c, 16);
    batch_id_format(a, text);
    assert_memory_equal(text, "018bcfe5-6800-7", 15); /* 48-bit ms prefix, then version 7 */
}

static uint64_t rnd_state = 42;
static uint64_t rnd(void)
{
    rnd_state = rnd_state * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
    return rnd_state >> 17;
}

static void expect_encode_matches_protobuf_c(const batch *b)
{
    uint8_t *mine = NULL, *ref = NULL;
    size_t mine_len = 0, ref_len = 0;
    assert_int_equal(batch_encode(b, &mine, &mine_len), MD_OK);
    assert_int_equal(batch_pb_ref_encode(b, &ref, &ref_len), 0);
    assert_int_equal(mine_len, ref_len);
    assert_memory_equal(mine, ref, ref_len);
    free(mine);
    free(ref);
}

/* batch_encode writes the protobuf itself: same bytes as protobuf-c for every kind of field,
 * the proto3 defaults it leaves out (0, -0.0, "", no client) and multi-byte varints. */
static void test_encode_is_byte_identical_to_protobuf_c(void **state)
{
    (void)state;
    static char big[20000];
    memset(big, 'x', sizeof(big) - 1);
    const char *strs[] = {"", "a", "meter", "lg-123", "caf\xc3\xa9", big + sizeof(big) - 200,
                          big + sizeof(big) - 130, big};
    const double values[] = {0.0, -0.0, 1.0, -2.5, NAN, INFINITY, -INFINITY, 5e-324,
                             1.7976931348623157e308, 200.5};
    const int64_t times[] = {0, 1, -1, 63, 64, -65, INT64_C(1773828900000000),
                             INT64_C(-62135596800000000), INT64_C(253402300799999999),
                             INT64_MAX, INT64_MIN};
    const uint32_t qualities[] = {0, 1, 127, 128, 300, UINT32_MAX};
#define PICK(a) (a)[rnd() % (sizeof(a) / sizeof((a)[0]))]
    for (int round = 0; round < 400; round++) {
        batch *b = batch_new(round % 7 ? "api.v1.readings" : "");
        assert_non_null(b);
        b->received_at_us = PICK(times);
        if (round % 3 == 0) assert_int_equal(batch_set(b, &b->request_id, PICK(strs)), MD_OK);
        if (round % 5 == 0) assert_int_equal(batch_set(b, &b->tenant, PICK(strs)), MD_OK);
        if (round % 4 == 1) {
            assert_int_equal(batch_set(b, &b->client_ip, PICK(strs)), MD_OK);
            assert_int_equal(batch_set(b, &b->client_user_agent, PICK(strs)), MD_OK);
            assert_int_equal(batch_set(b, &b->client_fingerprint, PICK(strs)), MD_OK);
        }
        size_t n = rnd() % 40;
        for (size_t i = 0; i < n; i++) {
            /* Few distinct strings, so consecutive readings often share them. */
            const char *dev = rnd() % 2 ? "lg-1" : PICK(strs);
            assert_int_equal(batch_add(b, dev[0] ? dev : "d", PICK(strs), PICK(strs), PICK(strs),
                                       PICK(times), PICK(values)),
                             MD_OK);
            b->readings[b->n_readings - 1].quality = PICK(qualities);
            if (rnd() % 4 == 0) assert_int_equal(batch_mark_invalid(b, PICK(strs)), MD_OK);
            if (rnd() % 9 == 0) b->readings[b->n_readings - 1].invalid_reason = NULL;
        }
        for (size_t i = rnd() % 4; i > 0; i--)
            assert_int_equal(batch_add_link(b, PICK(strs), PICK(strs), PICK(strs)), MD_OK);
        expect_encode_matches_protobuf_c(b);
        batch_free(b);
    }
#undef PICK
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode_decode_round_trip_keeps_every_field),
        cmocka_unit_test(test_garbage_does_not_decode),
        cmocka_unit_test(test_ids_are_uuidv7_and_keyed_ids_are_stable),
        cmocka_unit_test(test_encode_is_byte_identical_to_protobuf_c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
