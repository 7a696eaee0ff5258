/* Unit tests for src/loadgen/stats.c: error counting over HTTP and gRPC statuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loadgen/stats.h"

#include <string.h>

static void test_grpc_status_names_follow_the_codes(void **state)
{
    (void)state;
    assert_string_equal(lg_grpc_status_name(0), "OK");
    assert_string_equal(lg_grpc_status_name(3), "INVALID_ARGUMENT");
    assert_string_equal(lg_grpc_status_name(8), "RESOURCE_EXHAUSTED");
    assert_string_equal(lg_grpc_status_name(14), "UNAVAILABLE");
    assert_string_equal(lg_grpc_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(lg_grpc_status_name(17), "UNKNOWN");
}

/* Errors are answers other than 2xx / OK plus failures without one; sums keep gRPC codes. */
static void test_errors_count_non_ok_grpc_calls_and_failures(void **state)
{
    (void)state;
    lg_counts a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.responses = 10;
    a.ok = 7;
    a.grpc_status[0] = 7;
    a.grpc_status[8] = 3;
    a.fail[LG_FAIL_TIMEOUT] = 2;
    b.responses = 1;
    b.ok = 1;
    b.status[202] = 1;
    lg_counts_add(&b, &a);
    assert_int_equal(lg_counts_errors(&a), 5);
    assert_int_equal(lg_counts_errors(&b), 5);
    assert_int_equal(b.grpc_status[8], 3);
    assert_int_equal(b.status[202], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_status_names_follow_the_codes),
        cmocka_unit_test(test_errors_count_non_ok_grpc_calls_and_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
