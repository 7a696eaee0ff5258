/* CSV reader for "time,<metric>" files: streaming, constant memory (one 64 KiB line buffer).
 * RFC 4180 quoting ("" escapes a quote), LF or CRLF, an optional UTF-8 BOM; times without
 * an offset are UTC. */
#ifndef METERD_INGEST_CSV_H
#define METERD_INGEST_CSV_H

#include <stdint.h>
#include <stdio.h>

/* Longest record accepted; a longer one is skipped without being held in memory. */
#define CSV_MAX_LINE 65536

typedef struct csv_reader csv_reader;

/* Reads the header of f (borrowed; the caller closes it after csv_close): exactly two
 * columns, "time" (any case) and one value column whose name (lower-cased) is the metric.
 * Returns the reader, or NULL with the reason in err (bad header, read error, no memory). */
csv_reader *csv_open(FILE *f, char *err, size_t errlen);

/* The metric name: the value column's header, lower-cased. */
const char *csv_metric(const csv_reader *r);

/* Reads the next data row. 1 with *ts_us and *value set; 0 at end of file; MD_ERR_INVALID
 * for a row to skip, with "line N: reason" in err (bad or empty time, empty, non-numeric or
 * non-finite value, wrong column count, bad quoting, over CSV_MAX_LINE bytes); MD_ERR_IO
 * once on a read error, 0 after it. Blank lines are skipped silently. */
int csv_next(csv_reader *r, int64_t *ts_us, double *value, char *err, size_t errlen);

/* The 1-based line on which the last record read (header or row) starts. */
uint64_t csv_line(const csv_reader *r);

/* Frees the reader (not the FILE). NULL is fine. */
void csv_close(csv_reader *r);

#endif
