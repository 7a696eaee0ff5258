/* Unit tests for src/ingest/http_fast_parse.c: what the fast lane takes and what it leaves
 * to libmicrohttpd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ingest/http_fast_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BODY 1024

/* The parser works in place and writes buf[n]: each call gets a fresh copy with one spare byte,
 * kept until the next call so the fast_msg pointers stay valid. */
static char *copy;

static int parse_n(const char *s, size_t n, uint64_t max_body, fast_msg *m)
{
    free(copy);
    copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, s, n);
    return fast_parse(copy, n, max_body, m);
}

/* Literals may hold NUL bytes, so the length comes from sizeof. */
#define PARSE(lit, m) parse_n((lit), sizeof(lit) - 1, MAX_BODY, (m))

static int teardown(void **state)
{
    (void)state;
    free(copy);
    copy = NULL;
    return 0;
}

#define TYPICAL                                                                                    \
    "POST /api/v1/readings HTTP/1.1\r\n"                                                           \
    "Host: x\r\n"                                                                                  \
    "Content-Type: application/json\r\n"                                                           \
    "Content-Length: 5\r\n"                                                                        \
    "\r\n"                                                                                         \
    "hello"

#define SECOND                                                                                     \
    "PUT /b HTTP/1.1\r\n"                                                                          \
    "Content-Length: 3\r\n"                                                                        \
    "Host: y\r\n"                                                                                  \
    "Connection: close\r\n"                                                                        \
    "\r\n"                                                                                         \
    "xyz"

/* A minimal valid request whose extra header lines are `hdrs` (each ending in CRLF). */
#define WITH_HEADERS(hdrs) "POST /r HTTP/1.1\r\nHost: x\r\n" hdrs "Content-Length: 0\r\n\r\n"

static void test_typical_post_is_split_in_place(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(TYPICAL, &m), FAST_MINE);
    assert_string_equal(m.method, "POST");
    assert_string_equal(m.target, "/api/v1/readings");
    assert_int_equal(m.n_hdr, 3);
    assert_string_equal(m.hdr[0][0], "Host");
    assert_string_equal(m.hdr[0][1], "x");
    assert_string_equal(m.hdr[1][0], "Content-Type");
    assert_string_equal(m.hdr[1][1], "application/json");
    assert_string_equal(m.hdr[2][0], "Content-Length");
    assert_string_equal(m.hdr[2][1], "5");
    assert_int_equal(m.body_len, 5);
    assert_memory_equal(m.body, "hello", 5);
    assert_ptr_equal(m.body, copy + sizeof(TYPICAL) - 1 - 5);
    assert_int_equal(m.total, sizeof(TYPICAL) - 1);
    assert_int_equal(m.close, 0);
}

static void test_lowercase_header_names_are_recognised(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("GET /h HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab", &m),
                     FAST_MINE);
    assert_string_equal(m.method, "GET");
    assert_int_equal(m.body_len, 2);
    assert_int_equal(m.total,
                     sizeof("GET /h HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nab") - 1);
}

static void test_pipelined_requests_are_split_at_total(void **state)
{
    (void)state;
    static const char second[] = SECOND;
    static const char both[] = TYPICAL SECOND;
    fast_msg m;
    assert_int_equal(PARSE(both, &m), FAST_MINE);
    assert_int_equal(m.total, sizeof(TYPICAL) - 1);
    assert_string_equal(m.target, "/api/v1/readings");
    assert_int_equal(m.body_len, 5);
    assert_memory_equal(m.body, "hello", 5);
    assert_int_equal(m.close, 0);
    /* the second request is left as it was */
    assert_memory_equal(copy + m.total, second, sizeof(second) - 1);

    size_t rest = sizeof(both) - 1 - m.total;
    assert_int_equal(rest, sizeof(second) - 1);
    char *buf2 = malloc(rest + 1);
    assert_non_null(buf2);
    memcpy(buf2, copy + m.total, rest);
    fast_msg m2;
    assert_int_equal(fast_parse(buf2, rest, MAX_BODY, &m2), FAST_MINE);
    assert_string_equal(m2.method, "PUT");
    assert_string_equal(m2.target, "/b");
    assert_int_equal(m2.n_hdr, 3);
    assert_string_equal(m2.hdr[1][0], "Host");
    assert_string_equal(m2.hdr[1][1], "y");
    assert_int_equal(m2.body_len, 3);
    assert_memory_equal(m2.body, "xyz", 3);
    assert_int_equal(m2.total, rest);
    assert_int_equal(m2.close, 1);
    free(buf2);
}

static void test_body_one_byte_short_needs_more(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(parse_n(TYPICAL, sizeof(TYPICAL) - 2, MAX_BODY, &m), FAST_MORE);
    assert_string_equal(m.method, "POST"); /* the caller checks the route before it waits */
    assert_string_equal(m.target, "/api/v1/readings");
    /* and the full length is ours, so the byte count is what decides */
    assert_int_equal(parse_n(TYPICAL, sizeof(TYPICAL) - 1, MAX_BODY, &m), FAST_MINE);
}

static void test_headers_without_blank_line_need_more(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n", &m),
                     FAST_MORE);
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r", &m),
                     FAST_MORE);
    assert_int_equal(PARSE("", &m), FAST_MORE);
    assert_null(m.method);
    /* a NUL before the blank line can never become a request of ours */
    assert_int_equal(parse_n("POST /r\0HTTP/1.1\r\n", 18, MAX_BODY, &m), FAST_NOT_MINE);
}

static void test_zero_content_length_without_body_is_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS(""), &m), FAST_MINE);
    assert_int_equal(m.body_len, 0);
    assert_int_equal(m.total, sizeof(WITH_HEADERS("")) - 1);
    assert_ptr_equal(m.body, copy + m.total);
}

static void test_nul_in_body_is_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\na\0b", &m),
                     FAST_MINE);
    assert_int_equal(m.body_len, 3);
    assert_memory_equal(m.body, "a\0b", 3);
}

static void test_http10_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.0\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

static void test_malformed_request_line_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST  /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("POST /r HTTP/1.1 \r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("POST /r HTTP/1.10\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("POST /r\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m), FAST_NOT_MINE);
    assert_int_equal(PARSE("P(ST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("\r\nPOST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

static void test_query_string_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("GET /a?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

static void test_percent_or_fragment_in_path_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("GET /a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("GET /a#f HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

static void test_target_not_starting_with_slash_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("GET a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("GET http://x/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("OPTIONS * HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

static void test_missing_content_length_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("GET /r HTTP/1.1\r\nHost: x\r\n\r\n", &m), FAST_NOT_MINE);
}

static void test_two_content_lengths_are_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    /* even when they agree */
    assert_int_equal(PARSE(WITH_HEADERS("Content-Length: 0\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("content-length: 1\r\n"), &m), FAST_NOT_MINE);
}

static void test_malformed_content_length_is_not_mine(void **state)
{
    (void)state;
    static const char *const bad[] = {"+5", "-5", "1 2", "5x", "x", "0x5", "5,5", "5.0", ""};
    char req[128];
    fast_msg m;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int n = snprintf(req, sizeof(req),
                         "POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\nhello", bad[i]);
        assert_true(n > 0 && (size_t)n < sizeof(req));
        if (parse_n(req, (size_t)n, MAX_BODY, &m) != FAST_NOT_MINE)
            fail_msg("Content-Length \"%s\" was taken", bad[i]);
    }
}

static void test_content_length_over_max_body_is_not_mine(void **state)
{
    (void)state;
    static const char req[] = "POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    fast_msg m;
    assert_int_equal(parse_n(req, sizeof(req) - 1, 4, &m), FAST_NOT_MINE);
    assert_int_equal(parse_n(req, sizeof(req) - 1, 5, &m), FAST_MINE);
    assert_int_equal(m.body_len, 5);
    /* too big is refused before waiting for the body */
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: "
                           "99999999999999999999\r\n\r\n",
                           &m),
                     FAST_NOT_MINE);
}

static void test_transfer_encoding_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "5\r\nhello\r\n0\r\n\r\n",
                           &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("transfer-encoding: chunked\r\n"), &m), FAST_NOT_MINE);
}

static void test_expect_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("Expect: 100-continue\r\n"), &m), FAST_NOT_MINE);
}

static void test_upgrade_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("Connection: Upgrade\r\nUpgrade: websocket\r\n"), &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("upgrade: h2c\r\n"), &m), FAST_NOT_MINE);
}

static void test_missing_host_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &m), FAST_NOT_MINE);
}

static void test_two_hosts_are_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("Host: x\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("HOST: y\r\n"), &m), FAST_NOT_MINE);
}

static void test_header_line_without_colon_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-Thing value\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS(": novalue\r\n"), &m), FAST_NOT_MINE);
}

static void test_space_before_colon_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost : x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("X-A\t: b\r\n"), &m), FAST_NOT_MINE);
}

static void test_obs_fold_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-A: b\r\n c\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("X-A: b\r\n\tc: d\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS(" X-A: b\r\n"), &m), FAST_NOT_MINE);
}

static void test_control_byte_in_value_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\x01"
                                        "b\r\n"),
                           &m),
                     FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\x7f\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\nb\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\rb\r\n"), &m), FAST_NOT_MINE);
    /* a tab and obs-text are allowed */
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\tb\xc3\xa9\r\n"), &m), FAST_MINE);
    assert_string_equal(m.hdr[1][1], "a\tb\xc3\xa9");
}

static void test_nul_in_headers_is_not_mine(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-A: a\0b\r\n"), &m), FAST_NOT_MINE);
    assert_int_equal(PARSE("POST /r\0 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &m),
                     FAST_NOT_MINE);
}

/* A request with Host, Content-Length and `extra` more headers. */
static size_t many_headers(char *req, size_t cap, int extra)
{
    size_t n = (size_t)snprintf(req, cap, "POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n");
    for (int i = 0; i < extra; i++)
        n += (size_t)snprintf(req + n, cap - n, "X-H%d: %d\r\n", i, i);
    n += (size_t)snprintf(req + n, cap - n, "\r\n");
    assert_true(n < cap);
    return n;
}

static void test_max_headers_is_mine_one_more_is_not(void **state)
{
    (void)state;
    char req[2048];
    fast_msg m;
    size_t n = many_headers(req, sizeof(req), FAST_MAX_HEADERS - 2);
    assert_int_equal(parse_n(req, n, MAX_BODY, &m), FAST_MINE);
    assert_int_equal(m.n_hdr, FAST_MAX_HEADERS);
    char last[16];
    snprintf(last, sizeof(last), "X-H%d", FAST_MAX_HEADERS - 3);
    assert_string_equal(m.hdr[FAST_MAX_HEADERS - 1][0], last);
    assert_string_equal(m.hdr[FAST_MAX_HEADERS - 1][1], last + 3);
    n = many_headers(req, sizeof(req), FAST_MAX_HEADERS - 1);
    assert_int_equal(parse_n(req, n, MAX_BODY, &m), FAST_NOT_MINE);
}

static void test_connection_close_token_sets_close(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("Connection: keep-alive, Close\r\n"), &m), FAST_MINE);
    assert_int_equal(m.close, 1);
    assert_int_equal(PARSE(WITH_HEADERS("connection: close\r\n"), &m), FAST_MINE);
    assert_int_equal(m.close, 1);
}

static void test_connection_closed_does_not_set_close(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("Connection: closed\r\n"), &m), FAST_MINE);
    assert_int_equal(m.close, 0);
    assert_int_equal(PARSE(WITH_HEADERS("Connection: keep-alive\r\n"), &m), FAST_MINE);
    assert_int_equal(m.close, 0);
    /* close in another header is not Connection: close */
    assert_int_equal(PARSE(WITH_HEADERS("X-Connection: close\r\n"), &m), FAST_MINE);
    assert_int_equal(m.close, 0);
}

static void test_header_values_are_trimmed_of_ows(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-A: \t a b \t \r\n"
                                        "X-B:\tv\r\n"
                                        "X-C:v\r\n"),
                           &m),
                     FAST_MINE);
    assert_int_equal(m.n_hdr, 5);
    assert_string_equal(m.hdr[1][0], "X-A");
    assert_string_equal(m.hdr[1][1], "a b");
    assert_string_equal(m.hdr[2][0], "X-B");
    assert_string_equal(m.hdr[2][1], "v");
    assert_string_equal(m.hdr[3][0], "X-C");
    assert_string_equal(m.hdr[3][1], "v");
    /* Content-Length is trimmed too before being read */
    assert_int_equal(PARSE("POST /r HTTP/1.1\r\nHost:x\r\nContent-Length:\t 2 \t\r\n\r\nab", &m),
                     FAST_MINE);
    assert_string_equal(m.hdr[0][1], "x");
    assert_string_equal(m.hdr[1][1], "2");
    assert_int_equal(m.body_len, 2);
}

static void test_empty_header_value_is_allowed(void **state)
{
    (void)state;
    fast_msg m;
    assert_int_equal(PARSE(WITH_HEADERS("X-E:\r\nX-F: \t \r\n"), &m), FAST_MINE);
    assert_int_equal(m.n_hdr, 4);
    assert_string_equal(m.hdr[1][0], "X-E");
    assert_string_equal(m.hdr[1][1], "");
    assert_string_equal(m.hdr[2][0], "X-F");
    assert_string_equal(m.hdr[2][1], "");
}

static void test_has_token_finds_trimmed_list_members(void **state)
{
    (void)state;
    assert_true(fast_has_token("a, b ,c", "a"));
    assert_true(fast_has_token("a, b ,c", "b"));
    assert_true(fast_has_token("a, b ,c", "c"));
    assert_true(fast_has_token("keep-alive, Close", "close"));
    assert_true(fast_has_token("\tCLOSE\t", "close"));
    assert_true(fast_has_token(",,close,,", "close"));
    assert_false(fast_has_token("a, b ,c", "d"));
    assert_false(fast_has_token("a, b ,c", "b ,c"));
}

static void test_has_token_does_not_match_parts_of_words(void **state)
{
    (void)state;
    assert_false(fast_has_token("closed", "close"));
    assert_false(fast_has_token("xclose", "close"));
    assert_false(fast_has_token("clos", "close"));
    assert_false(fast_has_token("close d", "close"));
    assert_false(fast_has_token("", "close"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_typical_post_is_split_in_place, teardown),
        cmocka_unit_test_teardown(test_lowercase_header_names_are_recognised, teardown),
        cmocka_unit_test_teardown(test_pipelined_requests_are_split_at_total, teardown),
        cmocka_unit_test_teardown(test_body_one_byte_short_needs_more, teardown),
        cmocka_unit_test_teardown(test_headers_without_blank_line_need_more, teardown),
        cmocka_unit_test_teardown(test_zero_content_length_without_body_is_mine, teardown),
        cmocka_unit_test_teardown(test_nul_in_body_is_mine, teardown),
        cmocka_unit_test_teardown(test_http10_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_malformed_request_line_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_query_string_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_percent_or_fragment_in_path_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_target_not_starting_with_slash_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_missing_content_length_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_two_content_lengths_are_not_mine, teardown),
        cmocka_unit_test_teardown(test_malformed_content_length_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_content_length_over_max_body_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_transfer_encoding_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_expect_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_upgrade_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_missing_host_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_two_hosts_are_not_mine, teardown),
        cmocka_unit_test_teardown(test_header_line_without_colon_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_space_before_colon_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_obs_fold_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_control_byte_in_value_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_nul_in_headers_is_not_mine, teardown),
        cmocka_unit_test_teardown(test_max_headers_is_mine_one_more_is_not, teardown),
        cmocka_unit_test_teardown(test_connection_close_token_sets_close, teardown),
        cmocka_unit_test_teardown(test_connection_closed_does_not_set_close, teardown),
        cmocka_unit_test_teardown(test_header_values_are_trimmed_of_ows, teardown),
        cmocka_unit_test_teardown(test_empty_header_value_is_allowed, teardown),
        cmocka_unit_test(test_has_token_finds_trimmed_list_members),
        cmocka_unit_test(test_has_token_does_not_match_parts_of_words),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
