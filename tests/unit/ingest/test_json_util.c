/* Unit tests for src/ingest/json_util.c: error messages and shared field checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "ingest/json_util.h"

#include <string.h>

static void test_fail_sets_status_and_code(void **state)
{
    (void)state;
    ingest_error e = {0};
    assert_int_equal(ingest_fail(&e, 400, "x[%d]: %s", 3, "bad"), MD_ERR_INVALID);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.message, "x[3]: bad");
    assert_int_equal(ingest_fail(&e, 413, "big"), MD_ERR_INVALID);
    assert_int_equal(e.status, 413);
    assert_int_equal(ingest_fail(&e, 500, "out of memory"), MD_ERR_NOMEM);
    assert_int_equal(e.status, 500);
}

static void test_fail_message_is_valid_utf8_without_control_bytes(void **state)
{
    (void)state;
    ingest_error e = {0};
    ingest_fail(&e, 400,
                "a\x01"
                "b\xff"
                "c\xc3\xa9"
                "d\xed\xa0\x80"
                "e\xc0\xaf"
                "f\x7f");
    /* é stays, surrogates / overlongs / stray bytes / controls become '?' */
    assert_string_equal(e.message, "a?b?c\xc3\xa9"
                                   "d???e??f?");
}

static void test_fail_truncates_at_character_boundary(void **state)
{
    (void)state;
    ingest_error e = {0};
    char big[400];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    ingest_fail(&e, 400, "%s", big);
    assert_int_equal(strlen(e.message), sizeof(e.message) - 1);
    assert_string_equal(e.message + sizeof(e.message) - 4, "...");
    /* a 2-byte character that would straddle the limit is dropped whole */
    char u[400] = "";
    strcat(u, "y");
    for (int i = 0; i < 150; i++)
        strcat(u, "\xc3\xa9");
    ingest_fail(&e, 400, "%s", u);
    size_t n = strlen(e.message);
    assert_true(n <= sizeof(e.message) - 1);
    assert_string_equal(e.message + n - 3, "...");
    assert_int_equal((unsigned char)e.message[n - 5], 0xc3);
    assert_int_equal((unsigned char)e.message[n - 4], 0xa9);
}

static void test_quote_escapes_and_shortens(void **state)
{
    (void)state;
    char out[400];
    assert_string_equal(ingest_quote("2026-03-18T10:15:00", 19, out, sizeof(out)),
                        "\"2026-03-18T10:15:00\"");
    assert_string_equal(ingest_quote("a\"b\\c\n", 6, out, sizeof(out)), "\"a\\\"b\\\\c\\u000a\"");
    char long_key[100];
    memset(long_key, 'k', sizeof(long_key));
    ingest_quote(long_key, sizeof(long_key), out, sizeof(out));
    assert_int_equal(strlen(out), 1 + 64 + 3 + 1);
    assert_string_equal(out + 65, "...\"");
    char tiny[4];
    ingest_quote("abcdef", 6, tiny, sizeof(tiny));
    assert_true(strlen(tiny) < sizeof(tiny));
}

static void test_meter_number_forms(void **state)
{
    (void)state;
    struct {
        const char *json;
        int64_t want; /* 0: rejected */
    } cases[] = {
        {"{\"meter_number\":12345}", 12345},
        {"{\"meter_number\":\"12345\"}", 12345},
        {"{\"meter_number\":\"007\"}", 7},
        {"{\"meter_number\":9223372036854775807}", INT64_MAX},
        {"{\"meter_number\":\"9223372036854775807\"}", INT64_MAX},
        {"{\"meter_number\":\"9223372036854775808\"}", 0},
        {"{\"meter_number\":\"9999999999999999999\"}", 0},
        {"{\"meter_number\":\"00000000000000000001\"}", 0}, /* 20 digits */
        {"{\"meter_number\":0}", 0},
        {"{\"meter_number\":-5}", 0},
        {"{\"meter_number\":\"0\"}", 0},
        {"{\"meter_number\":\"\"}", 0},
        {"{\"meter_number\":\"-5\"}", 0},
        {"{\"meter_number\":\"+5\"}", 0},
        {"{\"meter_number\":\" 5\"}", 0},
        {"{\"meter_number\":\"5x\"}", 0},
        {"{\"meter_number\":12345.0}", 0},
        {"{\"meter_number\":true}", 0},
        {"{\"meter_number\":null}", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *root = json_loads(cases[i].json, 0, NULL);
        assert_non_null(root);
        ingest_error e = {0};
        int64_t n = -1;
        int rc = ingest_json_meter_number(root, &n, &e);
        if (cases[i].want) {
            assert_int_equal(rc, MD_OK);
            assert_int_equal(n, cases[i].want);
        } else {
            assert_int_equal(rc, MD_ERR_INVALID);
            assert_int_equal(e.status, 400);
            assert_string_equal(e.message, "meter_number: must be a positive integer");
        }
        json_decref(root);
    }
    json_t *root = json_object();
    ingest_error e = {0};
    int64_t n;
    assert_int_equal(ingest_json_meter_number(root, &n, &e), MD_ERR_INVALID);
    assert_string_equal(e.message, "meter_number: missing");
    json_decref(root);
}

static void test_fail_at_sets_field_and_type_and_fail_clears_them(void **state)
{
    (void)state;
    ingest_error e;
    memset(&e, 'x', sizeof e);
    assert_int_equal(ingest_fail_at(&e, 422, "site_id", "missing", "%s: missing", "site_id"),
                     MD_ERR_INVALID);
    assert_int_equal(e.status, 422);
    assert_string_equal(e.message, "site_id: missing");
    assert_string_equal(e.field, "site_id");
    assert_string_equal(e.type, "missing");
    assert_int_equal(ingest_fail(&e, 400, "other"), MD_ERR_INVALID);
    assert_string_equal(e.field, "");
    assert_string_equal(e.type, "");
}

static void test_load_object_error_types(void **state)
{
    (void)state;
    ingest_error e = {0};
    json_t *root;
    assert_int_equal(ingest_json_load_object("{", 1, &root, &e), MD_ERR_INVALID);
    assert_string_equal(e.type, "json_invalid");
    assert_int_equal(ingest_json_load_object("[]", 2, &root, &e), MD_ERR_INVALID);
    assert_string_equal(e.type, "model_attributes_type");
    assert_string_equal(e.field, "");
    assert_int_equal(e.status, 400);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_sets_status_and_code),
        cmocka_unit_test(test_fail_message_is_valid_utf8_without_control_bytes),
        cmocka_unit_test(test_fail_truncates_at_character_boundary),
        cmocka_unit_test(test_quote_escapes_and_shortens),
        cmocka_unit_test(test_meter_number_forms),
        cmocka_unit_test(test_fail_at_sets_field_and_type_and_fail_clears_them),
        cmocka_unit_test(test_load_object_error_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
