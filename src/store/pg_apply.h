/* Internal to apply() of the PostgreSQL store (pg_apply.c, pg_apply_read.c). */
#ifndef METERD_STORE_PG_APPLY_H
#define METERD_STORE_PG_APPLY_H

#include "store/pg_int.h"
#include "worker/rules.h"

typedef struct dev_entry {
    const char *name, *kind, *site; /* borrowed from the batches; site: insert value */
    const char *last_site;          /* last non-empty site of a reading; NULL: none */
    int64_t create_us, seen_min, seen_max;
    int seen;
    int64_t id;
} dev_entry;

typedef struct live_entry {
    int64_t dev, met;
    int has, dirty, loaded;
    int64_t ts_us, batch_no;
    double value;
    int status;
    const char *reason; /* borrowed from a batch, from lres, or own */
    char *own;          /* owned copy of a reason built here */
    anomaly_window w;
} live_entry;

typedef struct bucket {
    int64_t dev, met, start;
    uint64_t count;
    double sum, min, max, first, last;
    int64_t first_ts, last_ts;
} bucket;

/* What became of one reading, told to the observer once the transaction committed. */
typedef struct observation {
    size_t batch, index;
    int outcome;        /* STORE_OUTCOME_* */
    const char *reason; /* borrowed from the batch, or own */
    char *own;          /* owned */
} observation;

typedef struct apply_ctx {
    pg_store *ps;
    char *err;
    size_t errlen;
    int retry; /* the failure is worth retrying (deadlock, serialization, race) */
    int unique_violation; /* the last failed statement was a unique violation (23505) */
    int load_keys;        /* this attempt reads the stored keys before the walk */
    size_t keys_found;    /* stored readings the lookup returned */
    store_apply_stats st;
    uint64_t new_devices;
    int64_t max_received_us, now_us;

    int64_t *batch_no; /* per batch of the call; 0: skipped */
    dev_entry *devs;
    size_t n_devs, cap_devs;
    pg_strmap devmap;
    live_entry *live;
    size_t n_live, cap_live;
    pg_map3 livemap, keys, hours_map, days_map;
    double *key_value; /* value stored under keys[i] */
    size_t n_keys, cap_keys;
    bucket *hours, *days;
    size_t n_hours, cap_hours, n_days, cap_days;
    PGresult *lres; /* live rows read; owns their reason strings */

    pg_buf a[10];     /* array literals of the statement being built */
    pg_buf cf[7];     /* conflict rows */
    size_t n_new, n_conflicts;
    observation *obs; /* only with an observer */
    size_t n_obs, cap_obs;
} apply_ctx;


/* Helpers (pg_apply_read.c). Errors: message in c->err, c->retry set when worth retrying. */
int pg_apply_nomem(apply_ctx *c);
/* Runs sql with text parameters: the result (caller clears) or NULL. */
PGresult *pg_apply_run(apply_ctx *c, const char *what, const char *sql, int n,
                       const char *const *p);
int pg_apply_run_ok(apply_ctx *c, const char *what, const char *sql, int n, const char *const *p);
/* Empties n buffers and opens an array literal in each. */
void pg_apply_bufs_reset(pg_buf *b, int n);
/* Closes n array literals and runs sql with them as $1..$n. */
PGresult *pg_apply_run_arrays(apply_ctx *c, const char *what, const char *sql, pg_buf *b, int n);
int pg_apply_link_valid(const batch_link *l);

/* The read-and-lock phase (pg_apply_read.c), in this order. 0 or an md_err. */
int pg_apply_metrics(apply_ctx *c, batch *const *bs, size_t n); /* own transaction */
int pg_apply_batch_rows(apply_ctx *c, batch *const *bs, size_t n);
int pg_apply_devices(apply_ctx *c, batch *const *bs, size_t n);
/* Index of the live entry of (dev, met), added when add; -1 (missing or no memory). */
long pg_apply_live_find(apply_ctx *c, int64_t dev, int64_t met, int add);
int pg_apply_live_load(apply_ctx *c);
int pg_apply_keys_load(apply_ctx *c, batch *const *bs, size_t n);
/* Device id of a name of the call (0: unknown). */
int64_t pg_apply_dev_id(apply_ctx *c, const char *name);
/* Adds a key with its stored value: its index (*found when it was there), -2: no memory. */
long pg_apply_key_add(apply_ctx *c, int64_t dev, int64_t ts, int64_t met, double v, int *found);

#endif
