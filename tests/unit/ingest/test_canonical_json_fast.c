/* Differential tests for src/ingest/canonical_json_fast.c: the single-pass parser accepts
 * only what the jansson decoder accepts, with the same encoded batch, and
 * ingest_canonical_json answers exactly as the jansson decoder does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/batch.h"
#include "core/error.h"
#include "ingest/canonical_json_fast.h"
#include "ingest/ingest.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ingest_limits LIM = {.max_readings = 20000};

enum { FAST, FALLBACK_OK, REJECT }; /* what a body is expected to get */

/* Runs both halves and the combined decoder on body[0..len); checks every rule above and
 * returns FAST (fast path took it), FALLBACK_OK (only jansson accepted) or REJECT. */
static int compare(const char *body, size_t len, const ingest_limits *lim)
{
    /* A copy of exactly len bytes, so ASan sees any read past the body. */
    char *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len) memcpy(copy, body, len);
    batch *fb = (batch *)0x1, *jb = NULL, *cb = NULL;
    ingest_error je = {0}, ce = {0};
    int frc = ingest_canonical_json_fast(copy, len, lim, &fb);
    int jrc = ingest_canonical_json_jansson(copy, len, lim, &jb, &je);
    int crc = ingest_canonical_json(copy, len, lim, &cb, &ce);
    free(copy);

    /* The combined decoder answers as jansson does: same verdict, same error. */
    assert_int_equal(crc, jrc);
    if (jrc != MD_OK) {
        assert_int_equal(ce.status, je.status);
        assert_string_equal(ce.message, je.message);
    }
    if (frc != MD_OK) {
        assert_int_equal(frc, MD_ERR_INVALID);
        assert_null(fb);
    } else {
        if (jrc != MD_OK)
            fail_msg("fast path accepted what jansson rejects (%s): %.*s", je.message, (int)len,
                     body);
        /* Same readings, value bits included (the encoding drops -0.0 like 0.0). */
        assert_int_equal(fb->n_readings, jb->n_readings);
        for (size_t i = 0; i < jb->n_readings; i++) {
            const reading *f = &fb->readings[i], *j = &jb->readings[i];
            assert_string_equal(f->device, j->device);
            assert_string_equal(f->device_kind, j->device_kind);
            assert_string_equal(f->site, j->site);
            assert_string_equal(f->metric, j->metric);
            assert_int_equal(f->ts_us, j->ts_us);
            if (memcmp(&f->value, &j->value, sizeof(double)) != 0)
                fail_msg("value %.17g != %.17g for: %.*s", f->value, j->value, (int)len, body);
        }
        /* Same batch: ids and receive times differ by construction. */
        memcpy(fb->id, jb->id, 16);
        fb->received_at_us = jb->received_at_us;
        uint8_t *fbuf, *jbuf;
        size_t flen, jlen;
        assert_int_equal(batch_encode(fb, &fbuf, &flen), MD_OK);
        assert_int_equal(batch_encode(jb, &jbuf, &jlen), MD_OK);
        if (flen != jlen || memcmp(fbuf, jbuf, flen) != 0)
            fail_msg("fast path built another batch for: %.*s", (int)len, body);
        free(fbuf);
        free(jbuf);
    }
    int what = frc == MD_OK ? FAST : jrc == MD_OK ? FALLBACK_OK : REJECT;
    batch_free(fb);
    batch_free(jb);
    batch_free(cb);
    return what;
}

static int compare_str(const char *body)
{
    return compare(body, strlen(body), &LIM);
}

/* {"readings":[<reading>]} */
static int compare_reading(const char *reading)
{
    char body[4096];
    snprintf(body, sizeof(body), "{\"readings\":[%s]}", reading);
    return compare_str(body);
}

/* A reading whose "value" is the JSON text v. */
static int compare_value(const char *v)
{
    char r[512];
    snprintf(r, sizeof(r), "{\"device\":\"d\",\"metric\":\"m\",\"ts\":0,\"value\":%s}", v);
    return compare_reading(r);
}

/* A reading whose "device" is the JSON text v. */
static int compare_device(const char *v)
{
    char r[2048];
    snprintf(r, sizeof(r), "{\"device\":%s,\"metric\":\"m\",\"ts\":0,\"value\":1}", v);
    return compare_reading(r);
}

#define EXPECT(what, call) assert_int_equal((call), (what))

static void test_loadgen_body_takes_the_fast_path(void **state)
{
    (void)state;
    EXPECT(FAST, compare_str("{\"readings\":[{\"device\":\"lg-1\",\"metric\":\"energy\",\"ts\":"
                             "\"2026-11-28T14:26:40.000001Z\",\"value\":200.5},{\"device\":"
                             "\"lg-2\",\"metric\":\"energy\",\"ts\":\"2026-11-28T14:26:40Z\","
                             "\"value\":248.00000000000003}]}"));
    EXPECT(FAST, compare_str("{\"readings\":[{\"device\":\"m-1\",\"metric\":\"power\",\"ts\":"
                             "\"2026-03-18T10:15:00Z\",\"value\":12.5,\"kind\":\"meter\","
                             "\"site\":\"berlin\"},{\"device\":\"car 7\",\"metric\":\"t\","
                             "\"ts\":1773828900001,\"value\":-3,\"kind\":\"vehicle\"},{\"device\":"
                             "\"d\",\"metric\":\"x\",\"ts\":\"2026-03-18 12:15:00.25+02:00\","
                             "\"value\":1e3,\"site\":null,\"kind\":null,\"extra\":[1,2]}]}"));
}

static void test_string_escapes_and_unicode_match_jansson(void **state)
{
    (void)state;
    const char *fast[] = {
        "\"a\\\"b\"", "\"a\\\\b\"", "\"a\\/b\"", "\"\\b\\f\\n\\r\\t\"", "\"\\u00e9\"",
        "\"\\u00E9\"", "\"\\u20ac\"", "\"\\uD83D\\uDE00\"", "\"\\ud83d\\ude00x\"",
        "\"\\uDBFF\\uDFFF\"", "\"\\u0001\"", "\"\\u007f\"", "\"\\u0800\"", "\"\\uffff\"",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "\"\xf4\x8f\xbf\xbf\"", "\"\x7f\"",
        "\"plain-but-longer-than-eight-bytes\"", "\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\\\"\"",
        "\"12345678\\u00e9\"", "\"1234567\xc3\xa9\"",
    };
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) EXPECT(FAST, compare_device(fast[i]));
    const char *reject[] = {
        "\"\\u0000\"",       "\"a\\u0000b\"",     "\"\\uD800\"",        "\"\\uDC00\"",
        "\"\\uD800\\u0041\"", "\"\\uD800\\uD800\"", "\"\\uD800x\"",       "\"\\uD83D\\uDE0\"",
        "\"\\u12\"",         "\"\\u12g4\"",       "\"\\x41\"",          "\"\\a\"",
        "\"\\'\"",           "\"\\\"",            "\"a\tb\"",           "\"a\nb\"",
        "\"\x01\"",          "\"\xc0\x80\"",      "\"\xc1\xbf\"",       "\"\xe0\x80\x80\"",
        "\"\xed\xa0\x80\"",  "\"\xf5\x80\x80\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xc3\"",
        "\"\xe2\x82\"",      "\"\x80\"",          "\"\xff\"",           "'single'",
        "\"\"",              "\"unterminated",    "\"12345678\\",       "\"1234567\xc3",
    };
    for (size_t i = 0; i < sizeof(reject) / sizeof(reject[0]); i++)
        EXPECT(REJECT, compare_device(reject[i]));
    /* A NUL byte in the body, inside and outside a string. */
    const char nul_in[] = "{\"readings\":[{\"device\":\"a\0b\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}";
    EXPECT(REJECT, compare(nul_in, sizeof(nul_in) - 1, &LIM));
    const char nul_out[] = "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}\0";
    EXPECT(REJECT, compare(nul_out, sizeof(nul_out) - 1, &LIM));
}

static void test_numbers_match_jansson_bit_for_bit(void **state)
{
    (void)state;
    const char *fast[] = {
        "0", "-0", "0.0", "-0.0", "0e0", "-0e-0", "1", "-1", "1.5", "1e3", "1E3", "1e+3", "1e-3",
        "0.1", "0.2", "0.30000000000000004", "200.5", "248.00000000000003", "123456789012345.678",
        "9007199254740992", "-9007199254740992", "9007199254740993.0", "9007199254740992e0",
        "1e22", "1e23", "1e-22", "1e-23", "8.5e-22", "1.7976931348623157e308", "2.2250738585072011e-308",
        "2.2250738585072014e-308", "4.9e-324", "5e-324", "2e-324", "1e-400", "-1e-400",
        "0.000000000000000000000000000000000001", "12345678901234567890.5",
        "1.00000000000000000000000001", "3.141592653589793238462643383", "0.1e1", "10e-1", "1e0000000000000000000000001",
        "-123456789012345678e-5", "7e-10", "0.00001", "1.1e15",
        "4503599627370497.5", "9007199254740991.5",
    };
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
        int what = compare_value(fast[i]);
        if (what != FAST) fail_msg("value %s: %d, want fast", fast[i], what);
    }
    const char *reject[] = {
        "9007199254740993", "-9007199254740993", "123456789012345678", "123456789012345678901",
        "1234567890123456789012345678901234567890", "100000000000000000000000", "99999999999999999999",
        "-99999999999999999999", "1e309", "-1e309", "1e400", "1.8e308", "01", "-01", "00", "1.",
        ".5", "-", "-.5", "+1", "1e", "1e+", "1e-", "1.e3", "0x10", "NaN", "Infinity", "-Infinity",
        "1.5.5", "1e5e5", "--1", "\"1\"", "null", "true", "[1]", "{}", "1 2", "1,", "tru",
    };
    for (size_t i = 0; i < sizeof(reject) / sizeof(reject[0]); i++) {
        int what = compare_value(reject[i]);
        if (what != REJECT) fail_msg("value %s: %d, want reject", reject[i], what);
    }
    /* Longer than the fast path's strtod buffer: jansson decides. */
    char big[400] = "17976931348623157";
    for (int i = 0; i < 292; i++) strcat(big, "0");
    EXPECT(FALLBACK_OK, compare_value(strcat(big, ".0")));
    big[strlen(big) - 2] = '\0';
    EXPECT(REJECT, compare_value(strcat(big, "0.0"))); /* 10 times that: overflow */
}

static void test_timestamps_match_jansson(void **state)
{
    (void)state;
    const char *ts[] = {
        "\"2026-03-18T10:15:00Z\"", "\"2026-03-18t10:15:00z\"", "\"2026-03-18 10:15:00+02:00\"",
        "\"2026-03-18T10:15:00.123456789-0130\"", "\"2026-03-18T10:15:00.1+23:59\"",
        "\"0001-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59.999999Z\"", "\"2024-02-29T00:00:00Z\"",
        "\"2026-03-18T10:15:00\\u005a\"", "0", "-0", "1773828900001", "-62135596800000",
        "253402300799999", "\"2026-03-18T10:15:00\"", "\"2026-02-29T00:00:00Z\"",
        "\"2026-03-18T24:00:00Z\"", "\"2026-03-18T10:15:60Z\"", "\"0000-01-01T00:00:00Z\"",
        "\"0001-01-01T00:00:00+00:01\"", "\"2026-03-18T10:15:00.1234567890Z\"", "\"\"",
        "\"2026-03-18T10:15:00Z \"", "-62135596800001", "253402300800000", "1.5", "1e3", "0.0",
        "true", "null", "[]", "{}", "99999999999999999999",
        "\"2026-03-18T10:15:00.000000000000000000000000000000000000000000000000000000000Z\"",
    };
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        char r[512];
        snprintf(r, sizeof(r), "{\"device\":\"d\",\"metric\":\"m\",\"ts\":%s,\"value\":1}", ts[i]);
        compare_reading(r);
    }
    EXPECT(FAST, compare_reading("{\"device\":\"d\",\"metric\":\"m\",\"ts\":-0,\"value\":1}"));
}

static void test_duplicate_keys_are_rejected_everywhere(void **state)
{
    (void)state;
    const char *reject[] = {
        "{\"readings\":[{\"device\":\"a\",\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}",
        "{\"readings\":[{\"device\":\"a\",\"d\\u0065vice\":\"b\",\"metric\":\"m\",\"ts\":0,"
        "\"value\":1}]}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":null,"
        "\"kind\":null}]}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"x\":1,\"x\":1}]}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"x\":1,"
        "\"\\u0078\":1}]}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}],\"readings\":[]}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}],"
        "\"readin\\u0067s\":1}",
        "{\"x\":1,\"x\":2,\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}",
        "{\"x\":{\"a\":1,\"a\":2},\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,"
        "\"value\":1}]}",
        "{\"x\":[{\"a\":1,\"b\":{\"c\":1,\"c\":1}}],\"readings\":[{\"device\":\"a\",\"metric\":"
        "\"m\",\"ts\":0,\"value\":1}]}",
    };
    for (size_t i = 0; i < sizeof(reject) / sizeof(reject[0]); i++) EXPECT(REJECT, compare_str(reject[i]));
    /* The same key in different objects is no duplicate. */
    EXPECT(FAST, compare_str("{\"x\":{\"a\":1,\"b\":{\"a\":1}},\"readings\":[{\"device\":\"a\","
                             "\"metric\":\"m\",\"ts\":0,\"value\":1,\"x\":{\"x\":1}},{\"device\":"
                             "\"a\",\"metric\":\"m\",\"ts\":1,\"value\":1,\"x\":2}]}"));
    /* Escaped known keys are known keys. */
    EXPECT(FAST, compare_str("{\"readin\\u0067s\":[{\"d\\u0065vice\":\"a\",\"metric\":\"m\","
                             "\"ts\":0,\"value\":1,\"kin\\u0064\":\"met\\u0065r\"}]}"));
}

static void test_unknown_values_are_checked_and_skipped(void **state)
{
    (void)state;
    const char *ok = "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}";
    const char *fast[] = {
        "1", "-0.5e-3", "\"s\\u00e9\\n\"", "true", "false", "null", "[]", "{}", "[1,[2,[3]]]",
        "{\"a\":{\"b\":{\"c\":[null,true,false,\"x\",1.5,{}]}}}", "[ 1 , 2 ]", "{ \"a\" : 1 }",
        "1e-400", "\"readings\"",
    };
    const char *reject[] = {
        "tru", "truex", "nul", "nulls", "falsey", "True", "NULL", "[1,]", "[,1]", "{\"a\"}",
        "{\"a\":}", "{\"a\":1,}", "{,}", "{1:1}", "[1 2]", "{\"a\":1 \"b\":2}", "1e309",
        "-1e400", "99999999999999999999", "\"\\u0000\"", "{\"\\u0000\":1}", "\"\\uDC00\"",
        "[\"\xff\"]", "01", "[", "{", "\"", "]", "}", "-", "'a'", "undefined",
    };
    for (size_t i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
        char body[1024];
        snprintf(body, sizeof(body), "{\"x\":%s,\"readings\":[%s],\"y\":%s}", fast[i], ok, fast[i]);
        EXPECT(FAST, compare_str(body));
        snprintf(body, sizeof(body),
                 "{\"readings\":[{\"z\":%s,\"device\":\"a\",\"metric\":\"m\",\"ts\":0,"
                 "\"value\":1,\"y\":%s}]}",
                 fast[i], fast[i]);
        EXPECT(FAST, compare_str(body));
    }
    for (size_t i = 0; i < sizeof(reject) / sizeof(reject[0]); i++) {
        char body[1024];
        snprintf(body, sizeof(body), "{\"x\":%s,\"readings\":[%s]}", reject[i], ok);
        EXPECT(REJECT, compare_str(body));
        snprintf(body, sizeof(body),
                 "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,"
                 "\"y\":%s}]}",
                 reject[i]);
        EXPECT(REJECT, compare_str(body));
    }
}

/* Bodies jansson accepts that the fast path leaves to it: correct, only slower. */
static void test_unusual_valid_bodies_fall_back(void **state)
{
    (void)state;
    const char *ok = "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}";
    char body[8192];
    /* an escaped unknown key */
    snprintf(body, sizeof(body), "{\"\\u0078\":1,\"readings\":[%s]}", ok);
    EXPECT(FALLBACK_OK, compare_str(body));
    /* a 19-digit integer (fits int64) in an unknown field */
    snprintf(body, sizeof(body), "{\"x\":1234567890123456789,\"readings\":[%s]}", ok);
    EXPECT(FALLBACK_OK, compare_str(body));
    /* nesting deeper than the fast path goes, far below jansson's 2048 */
    char deep[256] = "", deep_end[256] = "";
    for (int i = 0; i < 40; i++) strcat(deep, "["), strcat(deep_end, "]");
    snprintf(body, sizeof(body), "{\"x\":%s%s,\"readings\":[%s]}", deep, deep_end, ok);
    EXPECT(FALLBACK_OK, compare_str(body));
    /* more unknown keys in one object than the fast path compares */
    char *p = body;
    p += sprintf(p, "{");
    for (int i = 0; i < 20; i++) p += sprintf(p, "\"k%d\":%d,", i, i);
    sprintf(p, "\"readings\":[%s]}", ok);
    EXPECT(FALLBACK_OK, compare_str(body));
    /* a number longer than the fast path's strtod buffer */
    p = body;
    p += sprintf(p, "{\"x\":0.");
    for (int i = 0; i < 200; i++) *p++ = '0';
    sprintf(p, "1,\"readings\":[%s]}", ok);
    EXPECT(FALLBACK_OK, compare_str(body));
    /* nesting past jansson's limit: both say no */
    char *deeper = malloc(3000 * 2 + 256);
    assert_non_null(deeper);
    p = deeper + sprintf(deeper, "{\"x\":");
    for (int i = 0; i < 3000; i++) *p++ = '[';
    for (int i = 0; i < 3000; i++) *p++ = ']';
    sprintf(p, ",\"readings\":[%s]}", ok);
    EXPECT(REJECT, compare_str(deeper));
    free(deeper);
}

static void test_fields_and_structure_match_jansson(void **state)
{
    (void)state;
    char dev[600], body[2048];
    memset(dev, 'd', sizeof(dev));
    /* lengths at and past the limits, raw and escaped */
    snprintf(body, sizeof(body), "\"%.256s\"", dev);
    EXPECT(FAST, compare_device(body));
    snprintf(body, sizeof(body), "\"%.257s\"", dev);
    EXPECT(REJECT, compare_device(body));
    char esc[2048] = "\"";
    for (int i = 0; i < 128; i++) strcat(esc, "\\u00e9"); /* 256 bytes of UTF-8 */
    EXPECT(FAST, compare_device(strcat(esc, "\"")));
    esc[strlen(esc) - 1] = '\0';
    EXPECT(REJECT, compare_device(strcat(esc, "x\"")));
    esc[0] = '\0';
    strcat(esc, "\"");
    for (int i = 0; i < 255; i++) strcat(esc, "\\n");
    EXPECT(FAST, compare_device(strcat(esc, "x\"")));

    const char *readings[] = {
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"meter\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"client\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"Meter\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"meters\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"mete\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":\"vehicle\\u0000\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":1}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"kind\":nul}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"site\":\"\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"site\":\"s/1\"}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"site\":false}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1,\"site\":[]}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0}",
        "{\"device\":\"a\",\"metric\":\"m\",\"value\":1}",
        "{\"device\":\"a\",\"ts\":0,\"value\":1}",
        "{\"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"device\":\"\",\"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"device\":\"a\",\"metric\":\"\",\"ts\":0,\"value\":1}",
        "{\"device\":1,\"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"device\":null,\"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"value\":1,\"ts\":0,\"metric\":\"m\",\"device\":\"a\"}",
        "{}", "[]", "1", "null", "\"x\"",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1},",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1},{}",
        "{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1} {\"device\":\"a\"}",
        "{\"device\":\"a\" \"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"device\" \"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}",
        "{\"device\":\"a\",,\"metric\":\"m\",\"ts\":0,\"value\":1}",
    };
    for (size_t i = 0; i < sizeof(readings) / sizeof(readings[0]); i++) compare_reading(readings[i]);

    const char *bodies[] = {
        "", " ", "{", "}", "[]", "{}", "null", "{\"readings\":[]}", "{\"readings\":{}}",
        "{\"readings\":null}", "{\"readings\":[1]}", "{\"readings\":[[]]}", "{\"readings\":\"x\"}",
        "\xef\xbb\xbf{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}",
        " \t\r\n{ \"readings\" :\n[ { \"device\" : \"a\" , \"metric\" : \"m\" , \"ts\" : 0 , "
        "\"value\" : 1 } ]\r\n}\t \n",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}x",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]} {}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}],}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]\f}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]\v}",
        "{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]\xc2\xa0}",
        "[{\"readings\":[{\"device\":\"a\",\"metric\":\"m\",\"ts\":0,\"value\":1}]}]",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) compare_str(bodies[i]);
}

static void test_readings_limit_matches_jansson(void **state)
{
    (void)state;
    const char *one = "{\"device\":\"d\",\"metric\":\"m\",\"ts\":0,\"value\":1}";
    char body[4096];
    char *p = body + sprintf(body, "{\"readings\":[");
    for (int i = 0; i < 5; i++) p += sprintf(p, "%s%s", i ? "," : "", one);
    strcpy(p, "]}");
    const ingest_limits five = {.max_readings = 5}, four = {.max_readings = 4}, none = {0};
    EXPECT(FAST, compare(body, strlen(body), &five));
    EXPECT(REJECT, compare(body, strlen(body), &four));
    EXPECT(FAST, compare(body, strlen(body), &none));
    EXPECT(FAST, compare(body, strlen(body), NULL));
}

/* Every prefix of a body with every feature, and single-byte changes at every position:
 * whatever the fast path takes, jansson takes with the same batch. */
static void test_truncations_and_byte_changes_never_diverge(void **state)
{
    (void)state;
    const char *body =
        "{ \"x\": {\"a\": [1, -2.5e-3, true, false, null, \"\\u00e9\"], \"b\": {}},\n"
        "  \"readings\": [\n"
        "    {\"device\": \"m\\u00e9ter-\\uD83D\\uDE00\", \"metric\": \"energy\", \"ts\": "
        "\"2026-03-18T10:15:00.25+02:00\", \"value\": 12.5, \"kind\": \"meter\", \"site\": "
        "\"berlin\\/1\"},\n"
        "    {\"device\": \"caf\xc3\xa9\", \"metric\": \"m\", \"ts\": 1773828900001, \"value\": "
        "-0, \"kind\": null, \"site\": null, \"z\": [[], {\"q\": 1e-400}]},\n"
        "    {\"ts\": \"2026-03-18T10:15:00Z\", \"value\": 9007199254740992, \"metric\": \"m\", "
        "\"device\": \"d\"}\n"
        "  ], \"y\": \"tail\"\n}\n";
    size_t len = strlen(body);
    EXPECT(FAST, compare(body, len, &LIM));
    for (size_t n = 0; n < len; n++) compare(body, n, &LIM);
    static const char subst[] = {'"', '\\', ',', ':', '{', '}', '[', ']', '0', '9', 'e', '-', '.',
                                 ' ', 'u', 'n', 'x', '\n', '\x01', '\x80', '\xc3', '\0'};
    char *copy = malloc(len);
    assert_non_null(copy);
    for (size_t i = 0; i < len; i++) {
        for (size_t k = 0; k < sizeof(subst); k++) {
            memcpy(copy, body, len);
            copy[i] = subst[k];
            compare(copy, len, &LIM);
        }
        /* and with the byte removed */
        memcpy(copy, body, i);
        memcpy(copy + i, body + i + 1, len - i - 1);
        compare(copy, len - 1, &LIM);
    }
    free(copy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loadgen_body_takes_the_fast_path),
        cmocka_unit_test(test_string_escapes_and_unicode_match_jansson),
        cmocka_unit_test(test_numbers_match_jansson_bit_for_bit),
        cmocka_unit_test(test_timestamps_match_jansson),
        cmocka_unit_test(test_duplicate_keys_are_rejected_everywhere),
        cmocka_unit_test(test_unknown_values_are_checked_and_skipped),
        cmocka_unit_test(test_unusual_valid_bodies_fall_back),
        cmocka_unit_test(test_fields_and_structure_match_jansson),
        cmocka_unit_test(test_readings_limit_matches_jansson),
        cmocka_unit_test(test_truncations_and_byte_changes_never_diverge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
