/* The request-memory budget: one counter, compared and swapped. */
#include "core/membudget.h"

#include <stdatomic.h>

static _Atomic uint64_t used, max;

void membudget_set(uint64_t max_bytes)
{
    atomic_store(&max, max_bytes);
}

uint64_t membudget_max(void)
{
    return atomic_load(&max);
}

int membudget_take(uint64_t n)
{
    uint64_t limit = atomic_load(&max);
    uint64_t cur = atomic_load_explicit(&used, memory_order_relaxed);
    do {
        if (limit && (n > limit || cur > limit - n)) return -1;
    } while (!atomic_compare_exchange_weak_explicit(&used, &cur, cur + n, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 0;
}

void membudget_give(uint64_t n)
{
    atomic_fetch_sub_explicit(&used, n, memory_order_relaxed);
}

uint64_t membudget_used(void)
{
    return atomic_load_explicit(&used, memory_order_relaxed);
}
