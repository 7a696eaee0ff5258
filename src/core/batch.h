/* The canonical reading and batch: what every ingest front-end produces and
 * every queue backend carries (encoded with protobuf-c, proto/meterd/v1/batch.proto). */
#ifndef METERD_CORE_BATCH_H
#define METERD_CORE_BATCH_H

#include <stddef.h>
#include <stdint.h>

typedef struct reading {
    const char *device;      /* borrowed from the batch arena */
    const char *device_kind; /* borrowed; "meter", "device", "vehicle", "client" */
    const char *site;        /* borrowed; "" when none */
    const char *metric;      /* borrowed */
    int64_t ts_us;           /* microseconds since the epoch, UTC */
    double value;
    uint32_t quality;
    const char *invalid_reason; /* borrowed; "" unless ingest already found it invalid */
} reading;

/* A relation between two devices (e.g. vehicle → the meter that charges it). */
typedef struct batch_link {
    const char *device, *linked_device, *relation; /* borrowed from the arena */
} batch_link;

typedef struct batch_arena_block batch_arena_block;

typedef struct batch {
    uint8_t id[16]; /* UUIDv7: time-ordered */
    int64_t received_at_us;
    const char *source;     /* borrowed from the arena; never NULL */
    const char *request_id; /* borrowed; "" when none */
    const char *tenant;     /* borrowed; "" when none */
    const char *client_ip, *client_user_agent, *client_fingerprint; /* borrowed; "" */
    reading *readings;      /* owned array */
    size_t n_readings, cap_readings;
    batch_link *links;      /* owned array */
    size_t n_links;
    char position[48];      /* queue position ("<ms>-<seq>"), set by the worker; not encoded */
    batch_arena_block *arena; /* owned: every string above lives here */
} batch;

/* Returns a new empty batch with a fresh id and received_at = now, or NULL (no memory). */
batch *batch_new(const char *source);
/* Frees the batch and every string it holds. NULL is fine. */
void batch_free(batch *b);
/* Copies len bytes of s into the batch arena, NUL-terminated; NULL when out of memory. */
const char *batch_strndup(batch *b, const char *s, size_t len);
/* Sets a string field of the batch (copy). Returns 0 or MD_ERR_NOMEM. */
int batch_set(batch *b, const char **field, const char *value);
/* Appends one reading; strings are copied (a string equal to the previous
 * reading's is shared). Returns 0 or MD_ERR_NOMEM. */
int batch_add(batch *b, const char *device, const char *kind, const char *site,
              const char *metric, int64_t ts_us, double value);
/* batch_add for strings given as (pointer, length): they need not be NUL-terminated and
 * must not contain NUL (a decoder can pass slices of the request body). Same returns. */
int batch_addn(batch *b, const char *device, size_t device_len, const char *kind, size_t kind_len,
               const char *site, size_t site_len, const char *metric, size_t metric_len,
               int64_t ts_us, double value);

/* Marks the last added reading invalid with reason (copied). 0 or MD_ERR_NOMEM. */
int batch_mark_invalid(batch *b, const char *reason);
/* Appends a device link (strings copied). 0 or MD_ERR_NOMEM. */
int batch_add_link(batch *b, const char *device, const char *linked_device, const char *relation);

/* Encodes to protobuf into a malloc'd buffer (*out owned by the caller). 0 or MD_ERR_NOMEM. */
int batch_encode(const batch *b, uint8_t **out, size_t *out_len);
/* Decodes a protobuf batch. 0, MD_ERR_CORRUPT (with a message in err) or MD_ERR_NOMEM. */
int batch_decode(const uint8_t *buf, size_t len, batch **out, char *err, size_t errlen);

/* Writes the 36-character UUID text form of id plus NUL into out. */
void batch_id_format(const uint8_t id[16], char out[37]);
/* Fills id with a new UUIDv7 (48-bit ms time, random rest). */
void batch_id_new(uint8_t id[16]);
/* Fills id with a UUIDv7-shaped id derived from (ms, key): the same message delivered twice
 * (e.g. a gateway envelope redelivered by the broker) gets the same id, so it is applied once. */
void batch_id_from_key(uint8_t id[16], int64_t ms, const char *key, size_t len);

#endif
