/* The request-memory budget: what is taken is bounded, refused takes change nothing, and
 * concurrent takers never overshoot it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/membudget.h"

#include <pthread.h>

static int reset(void **state)
{
    (void)state;
    membudget_give(membudget_used());
    membudget_set(0);
    return 0;
}

static void takes_up_to_the_budget_and_refuses_beyond_it(void **state)
{
    (void)state;
    membudget_set(100);
    assert_int_equal(membudget_take(60), 0);
    assert_int_equal(membudget_take(40), 0);
    assert_int_equal(membudget_used(), 100);
    assert_int_equal(membudget_take(1), -1);
    assert_int_equal(membudget_used(), 100); /* a refused take leaves nothing behind */
    membudget_give(40);
    assert_int_equal(membudget_take(41), -1);
    assert_int_equal(membudget_take(40), 0);
    membudget_give(100);
    assert_int_equal(membudget_used(), 0);
}

static void a_take_larger_than_the_budget_is_refused_even_when_nothing_is_taken(void **state)
{
    (void)state;
    membudget_set(100);
    assert_int_equal(membudget_take(101), -1);
    assert_int_equal(membudget_take(UINT64_MAX), -1); /* no wrap-around */
    assert_int_equal(membudget_used(), 0);
}

static void zero_means_no_limit(void **state)
{
    (void)state;
    assert_int_equal(membudget_max(), 0);
    assert_int_equal(membudget_take(UINT64_MAX / 2), 0);
    assert_int_equal(membudget_take(UINT64_MAX / 4), 0);
    membudget_give(UINT64_MAX / 2 + UINT64_MAX / 4);
    assert_int_equal(membudget_used(), 0);
}

#define THREADS 4
#define ROUNDS 100000

static _Atomic uint64_t over; /* times a taker saw more taken than the budget */

static void *taker(void *arg)
{
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        if (membudget_take(30) == 0) {
            if (membudget_used() > 100) over++;
            membudget_give(30);
        }
    }
    return NULL;
}

static void concurrent_takers_never_exceed_the_budget(void **state)
{
    (void)state;
    membudget_set(100); /* 3 of 4 takers fit */
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&t[i], NULL, taker, NULL), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    assert_int_equal(over, 0);
    assert_int_equal(membudget_used(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(takes_up_to_the_budget_and_refuses_beyond_it, reset),
        cmocka_unit_test_setup(a_take_larger_than_the_budget_is_refused_even_when_nothing_is_taken,
                               reset),
        cmocka_unit_test_setup(zero_means_no_limit, reset),
        cmocka_unit_test_setup(concurrent_takers_never_exceed_the_budget, reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
