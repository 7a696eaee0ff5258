/* HDR-style histogram: bucket b covers [2^(b+6), 2^(b+7)) split into 64 equal parts
 * (bucket 0 covers [0, 128) exactly). Index arithmetic follows HdrHistogram. */
#include "loadgen/hist.h"

#include <math.h>
#include <string.h>

#define SUB_COUNT (1u << LG_HIST_SUB_BITS)
#define SUB_HALF (SUB_COUNT >> 1)

static unsigned slot_of(uint64_t v)
{
    unsigned msb = v ? 63u - (unsigned)__builtin_clzll(v) : 0;
    unsigned b = msb >= LG_HIST_SUB_BITS ? msb - (LG_HIST_SUB_BITS - 1) : 0;
    if (b > LG_HIST_MAX_BUCKET) return LG_HIST_SLOTS - 1;
    return b * SUB_HALF + (unsigned)(v >> b);
}

/* The largest value that lands in slot i. */
static uint64_t slot_high(unsigned i)
{
    unsigned b = i < SUB_COUNT ? 0 : i / SUB_HALF - 1;
    uint64_t sub = i - b * SUB_HALF;
    return ((sub + 1) << b) - 1;
}

void lg_hist_reset(lg_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = UINT64_MAX;
}

void lg_hist_record(lg_hist *h, uint64_t v)
{
    h->counts[slot_of(v)]++;
    h->total++;
    h->sum += (double)v;
    if (v < h->min) h->min = v;
    if (v > h->max) h->max = v;
}

void lg_hist_merge(lg_hist *dst, const lg_hist *src)
{
    for (unsigned i = 0; i < LG_HIST_SLOTS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    if (src->min < dst->min) dst->min = src->min;
    if (src->max > dst->max) dst->max = src->max;
}

uint64_t lg_hist_percentile(const lg_hist *h, double p)
{
    if (!h->total) return 0;
    if (p > 100) p = 100;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->total);
    if (want < 1) want = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < LG_HIST_SLOTS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            if (i == LG_HIST_SLOTS - 1) return h->max; /* the overflow slot */
            uint64_t v = slot_high(i);
            if (v > h->max) v = h->max;
            if (v < h->min) v = h->min;
            return v;
        }
    }
    return h->max;
}

double lg_hist_mean(const lg_hist *h)
{
    return h->total ? h->sum / (double)h->total : 0;
}
