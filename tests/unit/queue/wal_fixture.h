/* Opening and closing a WAL in the queue unit tests (both helpers fail the test on error). */
#ifndef METERD_TESTS_WAL_FIXTURE_H
#define METERD_TESTS_WAL_FIXTURE_H

#include "queue/wal.h"

#include <stdio.h>

static queue *open_wal_with(const char *dir, const wal_config *cfg)
{
    char err[256];
    queue *q = wal_open(dir, cfg, err, sizeof err);
    if (!q) fprintf(stderr, "wal_open: %s\n", err);
    assert_non_null(q);
    return q;
}

static void close_wal(queue *q)
{
    q->ops->shutdown(q);
    q->ops->close(q);
}

#endif
