/* meterd loadgen: counters. */
#include "loadgen/stats.h"
#include "core/error.h"

#include <string.h>

int lg_stats_init(lg_stats *s)
{
    memset(&s->c, 0, sizeof s->c);
    lg_hist_reset(&s->all);
    lg_hist_reset(&s->interval);
    return pthread_mutex_init(&s->lock, NULL) ? MD_ERR_NOMEM : MD_OK;
}

void lg_stats_destroy(lg_stats *s)
{
    pthread_mutex_destroy(&s->lock);
}

void lg_counts_add(lg_counts *dst, const lg_counts *src)
{
    const uint64_t *a = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    for (size_t i = 0; i < sizeof *src / sizeof(uint64_t); i++)
        d[i] += a[i];
}

uint64_t lg_counts_errors(const lg_counts *c)
{
    uint64_t n = c->responses - c->ok;
    for (int f = 0; f < LG_FAIL_N; f++)
        n += c->fail[f];
    return n;
}

const char *lg_fail_name(lg_fail f)
{
    static const char *const names[LG_FAIL_N] = {"connect", "io", "timeout", "malformed"};
    return names[f];
}

const char *lg_grpc_status_name(unsigned code)
{
    static const char *const names[LG_GRPC_CODES] = {"OK",
                                                     "CANCELLED",
                                                     "UNKNOWN",
                                                     "INVALID_ARGUMENT",
                                                     "DEADLINE_EXCEEDED",
                                                     "NOT_FOUND",
                                                     "ALREADY_EXISTS",
                                                     "PERMISSION_DENIED",
                                                     "RESOURCE_EXHAUSTED",
                                                     "FAILED_PRECONDITION",
                                                     "ABORTED",
                                                     "OUT_OF_RANGE",
                                                     "UNIMPLEMENTED",
                                                     "INTERNAL",
                                                     "UNAVAILABLE",
                                                     "DATA_LOSS",
                                                     "UNAUTHENTICATED"};
    return code < LG_GRPC_CODES ? names[code] : "UNKNOWN";
}
