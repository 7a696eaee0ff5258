/* Unit tests for src/loadgen/http_parse.c: incremental HTTP/1.1 response parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "loadgen/http_parse.h"

#include <stdlib.h>
#include <string.h>

static const char ACCEPTED[] =
    "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\nContent-Length: 16\r\n"
    "X-Request-Id: abc\r\n\r\n{\"accepted\":1}\r\n";

static lg_http_resp *new_resp(int keep_body)
{
    lg_http_resp *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->keep_body = keep_body;
    lg_http_resp_reset(r);
    return r;
}

static void done_resp(lg_http_resp *r)
{
    lg_http_resp_free(r);
    free(r);
}

/* Feeds s whole; returns the parser's result. */
static int feed_all(lg_http_resp *r, const char *s, size_t len, size_t *used)
{
    return lg_http_resp_feed(r, s, len, used);
}

static void test_complete_response_in_one_read(void **state)
{
    (void)state;
    lg_http_resp *r = new_resp(1);
    size_t used;
    assert_int_equal(feed_all(r, ACCEPTED, strlen(ACCEPTED), &used), LG_HTTP_DONE);
    assert_int_equal(used, strlen(ACCEPTED));
    assert_int_equal(r->status, 202);
    assert_int_equal(r->content_length, 16);
    assert_int_equal(r->keep_alive, 1);
    assert_string_equal(r->body, "{\"accepted\":1}\r\n");
    done_resp(r);
}

static void test_every_split_point_gives_the_same_result(void **state)
{
    (void)state;
    size_t n = strlen(ACCEPTED);
    for (size_t cut = 0; cut <= n; cut++) {
        lg_http_resp *r = new_resp(1);
        size_t used;
        int rc = feed_all(r, ACCEPTED, cut, &used);
        if (cut < n) {
            assert_int_equal(rc, LG_HTTP_MORE);
            assert_int_equal(used, cut);
            assert_int_equal(feed_all(r, ACCEPTED + cut, n - cut, &used), LG_HTTP_DONE);
            assert_int_equal(used, n - cut);
        } else {
            assert_int_equal(rc, LG_HTTP_DONE);
        }
        assert_int_equal(r->status, 202);
        assert_string_equal(r->body, "{\"accepted\":1}\r\n");
        done_resp(r);
    }
}

static void test_byte_at_a_time(void **state)
{
    (void)state;
    lg_http_resp *r = new_resp(0);
    size_t n = strlen(ACCEPTED), used;
    for (size_t i = 0; i < n; i++)
        assert_int_equal(lg_http_resp_feed(r, ACCEPTED + i, 1, &used), i + 1 < n ? LG_HTTP_MORE : LG_HTTP_DONE);
    assert_int_equal(r->body_seen, 16);
    assert_null(r->body);
    done_resp(r);
}

static void test_keep_alive_two_responses_back_to_back(void **state)
{
    (void)state;
    const char two[] = "HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
                       "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\nno";
    lg_http_resp *r = new_resp(1);
    size_t used, len = strlen(two);
    assert_int_equal(feed_all(r, two, len, &used), LG_HTTP_DONE);
    assert_int_equal(r->status, 204);
    assert_int_equal(r->content_length, 0);
    assert_true(used < len);
    lg_http_resp_reset(r);
    size_t used2;
    assert_int_equal(feed_all(r, two + used, len - used, &used2), LG_HTTP_DONE);
    assert_int_equal(used + used2, len);
    assert_int_equal(r->status, 503);
    assert_int_equal(r->retry_after, 2);
    assert_string_equal(r->body, "no");
    done_resp(r);
}

static void test_connection_close_and_http10(void **state)
{
    (void)state;
    size_t used;
    lg_http_resp *r = new_resp(0);
    const char *a = "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(feed_all(r, a, strlen(a), &used), LG_HTTP_DONE);
    assert_int_equal(r->keep_alive, 0);
    lg_http_resp_reset(r);
    const char *b = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(feed_all(r, b, strlen(b), &used), LG_HTTP_DONE);
    assert_int_equal(r->keep_alive, 0);
    lg_http_resp_reset(r);
    const char *c = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx";
    assert_int_equal(feed_all(r, c, strlen(c), &used), LG_HTTP_DONE);
    assert_int_equal(r->keep_alive, 1);
    assert_int_equal(r->minor, 0);
    done_resp(r);
}

static void test_status_line_without_reason(void **state)
{
    (void)state;
    size_t used;
    lg_http_resp *r = new_resp(0);
    const char *a = "HTTP/1.1 413\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(feed_all(r, a, strlen(a), &used), LG_HTTP_DONE);
    assert_int_equal(r->status, 413);
    done_resp(r);
}

static void expect_malformed(const char *resp, const char *why)
{
    lg_http_resp *r = new_resp(1);
    size_t used;
    int rc = feed_all(r, resp, strlen(resp), &used);
    if (rc != MD_ERR_INVALID) fail_msg("accepted (%d): %s", rc, resp);
    if (!strstr(r->err, why)) fail_msg("'%s' does not say '%s'", r->err, why);
    done_resp(r);
}

static void test_malformed_responses_are_rejected(void **state)
{
    (void)state;
    expect_malformed("HTTP/1.1 202 Accepted\r\n\r\n", "no Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", "Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
                     "Content-Length");
    expect_malformed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                     "conflicting");
    expect_malformed("HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "status line");
    expect_malformed("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "status");
    expect_malformed("HTTP/1.1 600 OK\r\nContent-Length: 0\r\n\r\n", "status code");
    expect_malformed("HTTP/1.1 200OK\r\nContent-Length: 0\r\n\r\n", "status line");
    expect_malformed("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "CRLF");
    expect_malformed("HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "header");
    expect_malformed("HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "folding");
    expect_malformed("HTTP/1.1 100 Continue\r\n\r\n", "1xx");
    expect_malformed("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "body");
    expect_malformed("garbage\r\n\r\n", "status line");
}

static void test_oversized_head_is_an_error(void **state)
{
    (void)state;
    lg_http_resp *r = new_resp(0);
    char *big = malloc(LG_HTTP_HEAD_MAX + 100);
    assert_non_null(big);
    strcpy(big, "HTTP/1.1 200 OK\r\nX: ");
    size_t n = strlen(big);
    memset(big + n, 'a', LG_HTTP_HEAD_MAX + 100 - n - 1);
    big[LG_HTTP_HEAD_MAX + 99] = '\0';
    size_t used;
    assert_int_equal(feed_all(r, big, strlen(big), &used), MD_ERR_INVALID);
    assert_non_null(strstr(r->err, "too large"));
    free(big);
    done_resp(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_complete_response_in_one_read),
        cmocka_unit_test(test_every_split_point_gives_the_same_result),
        cmocka_unit_test(test_byte_at_a_time),
        cmocka_unit_test(test_keep_alive_two_responses_back_to_back),
        cmocka_unit_test(test_connection_close_and_http10),
        cmocka_unit_test(test_status_line_without_reason),
        cmocka_unit_test(test_malformed_responses_are_rejected),
        cmocka_unit_test(test_oversized_head_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
