/* meterd loadgen: the live progress line and the final summary (text or JSON). */
#ifndef METERD_LOADGEN_REPORT_H
#define METERD_LOADGEN_REPORT_H

#include "loadgen/hist.h"
#include "loadgen/options.h"
#include "loadgen/stats.h"

#include <stdio.h>

typedef struct lg_verify_result {
    int done;                /* --verify ran */
    int drained;             /* the queue reached depth 0 in time */
    double drain_s;          /* from the last response to queue depth 0 */
    double stored, expected; /* readings_stored_total delta vs 2xx readings minus resends */
    double duplicates, invalid;
    double max_lag_s, max_depth; /* sampled once a second during the run */
    int ok;
    char err[200];
} lg_verify_result;

typedef struct lg_summary {
    const lg_opts *o;       /* borrowed */
    const char *url;        /* borrowed */
    double elapsed_s;
    const lg_counts *c;     /* borrowed */
    const lg_hist *lat;     /* borrowed */
    const char *first_error;
    lg_verify_result v;
} lg_summary;

/* Writes one progress line (\r-terminated, for a TTY) for the last interval_s seconds. */
void lg_report_progress(FILE *f, double elapsed_s, double interval_s, const lg_counts *delta,
                        const lg_counts *total, const lg_hist *interval);
/* Writes the final summary: human-readable text, or one JSON object when json. */
void lg_report_final(FILE *f, const lg_summary *s, int json);

#endif
