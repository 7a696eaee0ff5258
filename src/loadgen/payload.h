/* meterd loadgen: request bodies for every --format, with keys (device, metric, ts) that
 * never repeat within a run or across runs, and the --fleet replay stream. */
#ifndef METERD_LOADGEN_PAYLOAD_H
#define METERD_LOADGEN_PAYLOAD_H

#include "loadgen/options.h"

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer. */
typedef struct lg_buf {
    char *p; /* owned */
    size_t len, cap;
} lg_buf;

/* Makes room for extra more bytes. 0 or MD_ERR_NOMEM. */
int lg_buf_reserve(lg_buf *b, size_t extra);
/* Appends n bytes. 0 or MD_ERR_NOMEM. */
int lg_buf_append(lg_buf *b, const void *s, size_t n);
/* Frees the buffer. */
void lg_buf_free(lg_buf *b);

/* One generated reading. */
typedef struct lg_item {
    uint64_t device; /* device number; the name depends on the format and the run */
    int64_t ts_us;
    double value;
} lg_item;

/* What one request carries, for the final accounting. */
typedef struct lg_req_info {
    uint32_t readings;
    uint32_t resent; /* fleet: readings sent again on purpose (the store counts duplicates) */
    uint32_t late;   /* fleet: readings sent after a newer one of the same device */
} lg_req_info;

typedef struct lg_fifo_entry lg_fifo_entry;

/* Per-thread generator; fields are private to payload.c. */
typedef struct lg_gen {
    lg_format format;
    size_t batch;
    uint64_t devices;
    int64_t start_us;    /* run start: the base of every ts (non-fleet) */
    char dev_prefix[32]; /* "lg-" or "fl<run>-" */
    int64_t meter_base;  /* raw: meter_number = meter_base + device */
    /* fleet replay */
    uint64_t fleet, f_dev0, f_step, f_ndev, f_s;
    int64_t f_t0_us;
    uint64_t f_seed;
    lg_fifo_entry *fifo; /* owned ring of delayed readings */
    size_t fifo_cap, fifo_head, fifo_len;
    lg_item *items; /* owned scratch, batch entries */
    void *pb;       /* owned protobuf scratch (raw, grpc) */
    size_t pb_cap;
    lg_buf bin;     /* packed protobuf scratch */
} lg_gen;

/* Prepares g for thread tid of nthreads. start_us is the run's start; fleet_t0_us the
 * simulated time of the fleet's first round (minute-aligned). 0 or MD_ERR_NOMEM. */
int lg_gen_init(lg_gen *g, const lg_opts *o, unsigned tid, unsigned nthreads, int64_t start_us,
                int64_t fleet_t0_us);
/* Frees what g holds. */
void lg_gen_free(lg_gen *g);
/* Appends the body of request number seq (unique over all threads; ignored by the fleet
 * replay, which is per thread) to out and describes it in info; for grpc the packed
 * meterd.v1.WriteRequest. 0 or MD_ERR_NOMEM. */
int lg_gen_body(lg_gen *g, uint64_t seq, lg_buf *out, lg_req_info *info);
/* Returns the request path of the format ("/api/v1/readings", ...; the gRPC method for grpc). */
const char *lg_gen_path(lg_format f);
/* Appends the standard base64 (padded) of n bytes to out. 0 or MD_ERR_NOMEM. */
int lg_base64_encode(lg_buf *out, const uint8_t *in, size_t n);

#endif
