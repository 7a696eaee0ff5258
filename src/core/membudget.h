/* The request-memory budget (--max-inflight-bytes): bytes of request bodies and gRPC messages
 * held by requests still in progress, across every connection of the process. A request that
 * would take it over the budget is refused (503 / RESOURCE_EXHAUSTED, retry later) instead of
 * growing memory. Process-wide, like the metrics; thread-safe (atomics). */
#ifndef METERD_CORE_MEMBUDGET_H
#define METERD_CORE_MEMBUDGET_H

#include <stdint.h>

/* Sets the budget in bytes (0: no limit, the default). What is taken stays taken. */
void membudget_set(uint64_t max_bytes);
uint64_t membudget_max(void);
/* Takes n bytes: 0, or -1 when that would exceed the budget (then nothing is taken). */
int membudget_take(uint64_t n);
/* Gives back n bytes taken before. */
void membudget_give(uint64_t n);
/* Bytes taken now. */
uint64_t membudget_used(void);

#endif
