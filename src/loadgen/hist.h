/* Latency histogram with HDR-style log buckets: 128 linear sub-buckets per power of two,
 * so every recorded value is kept within 1/64 (~1.6 %) of its true value. Values are µs. */
#ifndef METERD_LOADGEN_HIST_H
#define METERD_LOADGEN_HIST_H

#include <stdint.h>

#define LG_HIST_SUB_BITS 7
#define LG_HIST_MAX_BUCKET 40 /* values up to 2^46 µs (~2 years) */
#define LG_HIST_SLOTS ((LG_HIST_MAX_BUCKET + 2) << (LG_HIST_SUB_BITS - 1))

typedef struct lg_hist {
    uint64_t counts[LG_HIST_SLOTS];
    uint64_t total;
    uint64_t min, max; /* exact; min is UINT64_MAX while empty */
    double sum;
} lg_hist;

/* Empties h. */
void lg_hist_reset(lg_hist *h);
/* Records one value (µs). */
void lg_hist_record(lg_hist *h, uint64_t v);
/* Adds every count of src to dst. */
void lg_hist_merge(lg_hist *dst, const lg_hist *src);
/* Returns the value at percentile p (0..100]: the highest value equivalent to the bucket
 * holding the ceil(p/100 * total)-th smallest value, clamped to [min, max]; 0 when empty. */
uint64_t lg_hist_percentile(const lg_hist *h, double p);
/* Returns the mean of the recorded values, 0 when empty. */
double lg_hist_mean(const lg_hist *h);

#endif
