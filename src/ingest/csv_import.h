/* CSV import: streams a time,<metric> file into the queue in batches (constant memory). */
#ifndef METERD_INGEST_CSV_IMPORT_H
#define METERD_INGEST_CSV_IMPORT_H

#include "queue/queue.h"

#include <stdint.h>

typedef struct csv_import_stats {
    uint64_t rows;      /* data rows read (blank lines not counted) */
    uint64_t published; /* readings made durable in the queue */
    uint64_t skipped;   /* rows skipped: NaN, empty, non-numeric, bad time */
    uint64_t batches;
} csv_import_stats;

typedef void (*csv_import_progress)(const csv_import_stats *st, void *arg);

/* Imports path as readings of device (kind meter), metric = the value column's header.
 * progress (may be NULL) is called every 100,000 rows. Waits out backpressure.
 * Returns 0, MD_ERR_IO / MD_ERR_INVALID (bad file or header) with a message in err. */
int csv_import(queue *q, const char *path, const char *device, csv_import_stats *st,
               csv_import_progress progress, void *arg, char *err, size_t errlen);

#endif
