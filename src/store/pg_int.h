/* Internal to the PostgreSQL store (pg.c, pg_apply.c, pg_query.c).
 * Not a public contract: nothing outside src/store/pg*.c includes this. */
#ifndef METERD_STORE_PG_INT_H
#define METERD_STORE_PG_INT_H

#include "store/pg.h"

/* Via the parent directory so builds without libpq's -I (the fuzz build) still compile. */
#include <postgresql/libpq-fe.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define PG_POOL_SIZE 4

typedef struct pg_store {
    store base;
    store_rules rules;
    char *url;     /* owned */
    PGconn *conn;  /* owned: the apply connection (one apply() at a time per store) */
    int timescale; /* readings is a hypertable: no partitions to create */
    store_observer observer; /* borrowed; may be NULL */
    void *observer_arg;

    /* metric name -> id; metrics are created outside the apply transaction, never removed */
    char **met_names; /* owned array of owned strings, open addressing */
    int64_t *met_ids;
    size_t met_cap, met_n;
    int32_t *months; /* owned: months (year * 12 + month - 1) whose partition exists */
    size_t n_months, cap_months;
    /* Applies left that read the stored keys first (pg_apply.c): set after a unique
     * violation or a lookup that found stored readings, counted down otherwise. */
    int keys_lookups_left;

    pthread_mutex_t mu; /* guards the read pool */
    pthread_cond_t cv;
    PGconn *pool[PG_POOL_SIZE]; /* owned; NULL until first used */
    int busy[PG_POOL_SIZE];
} pg_store;

/* A growable text buffer for SQL array literals. */
typedef struct pg_buf {
    char *p; /* owned, NUL-terminated */
    size_t n, cap;
    int oom;
} pg_buf;

void pg_buf_reset(pg_buf *b);
void pg_buf_free(pg_buf *b);
void pg_buf_str(pg_buf *b, const char *s);
/* Array literal pieces: pg_buf_open writes '{', pg_buf_close replaces a trailing ',' by '}'. */
void pg_buf_open(pg_buf *b);
void pg_buf_close(pg_buf *b);
void pg_buf_i64(pg_buf *b, int64_t v);      /* "v," */
/* v as PostgreSQL float8 text that reads back exactly, plus ',' (NUL-terminated); length. */
int pg_fmt_f64(char out[40], double v);
void pg_buf_f64(pg_buf *b, double v);       /* "v," in float8 input syntax (NaN, Infinity) */
void pg_buf_text(pg_buf *b, const char *s); /* quoted, escaped element "s", */
void pg_buf_hex(pg_buf *b, const uint8_t *p, size_t n); /* bytea element "\\x..", */

typedef struct pg_strmap {
    const char **k; /* borrowed */
    int32_t *v;
    size_t cap, n;
} pg_strmap;

typedef struct pg_map3 {
    int64_t *k; /* 3 per slot */
    int32_t *v; /* -1 = empty */
    size_t cap, n;
} pg_map3;

/* Returns the value slot of s (*found set), adding it (borrowed) with -1 when missing;
 * NULL: no memory. */
int32_t *pg_strmap_slot(pg_strmap *m, const char *s, int *found);
/* Same for (a, b, c); a new slot holds INT32_MAX for the caller to set. */
int32_t *pg_map3_slot(pg_map3 *m, int64_t a, int64_t b, int64_t c, int *found);
uint64_t pg_hash_str(const char *s);
/* Grows *arr (*cap items of sz bytes, n used) to hold one more. 0 or -1 (no memory). */
int pg_grow(void **arr, size_t *cap, size_t n, size_t sz);
/* The cached id slot of a metric (0: unknown yet), added when missing; NULL: no memory. */
int64_t *pg_metric_slot(pg_store *ps, const char *name, int *found);
/* The cached id of a metric, 0 when unknown. */
int64_t pg_metric_id(pg_store *ps, const char *name);

/* Parses a float8 text value (NaN, Infinity, ...). */
double pg_f64(const char *s);
/* 1 when the result's SQLSTATE says "retry the transaction": 40001, 40P01, and 23505 (a
 * unique violation: the readings go in without ON CONFLICT, see pg_apply.c). */
int pg_retryable(const PGresult *r);

/* apply() (pg_apply.c). */
int pg_store_apply(store *s, batch *const *batches, size_t n, store_apply_stats *st, char *err,
                   size_t errlen);
/* Creates the monthly partitions covering ts_us..., outside any transaction. 0 or MD_ERR_STORE. */
int pg_partitions_ensure(pg_store *ps, const int64_t *ts_us, size_t n, char *err, size_t errlen);

/* Read pool (pg.c): a connection for one query, back with pg_pool_put. NULL on error. */
PGconn *pg_pool_get(pg_store *ps);
void pg_pool_put(pg_store *ps, PGconn *c);

/* Queries (pg_query.c). */
int pg_store_devices(store *s, const char *after, size_t limit, store_device_cb cb, void *arg);
int pg_store_device(store *s, const char *id, store_device_cb cb, void *arg);
int pg_store_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg);
int pg_store_live(store *s, const char *device, store_reading_cb cb, void *arg);
int pg_store_aggregates(store *s, const store_aggregates_query *q,
                        int (*cb)(void *arg, const store_aggregate *a), void *arg);
int pg_store_window_sum(store *s, const char *device, const char *metric, int64_t from_us,
                        int64_t to_us, store_window_sum *out);
int pg_store_links(store *s, const char *device, const char *relation, store_device_cb cb,
                   void *arg);
int pg_store_counts(store *s, store_counts *c);
int pg_store_ping(store *s);

#endif
