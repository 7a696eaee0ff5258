/* Internal to the SQLite store (sqlite.c, sqlite_apply.c, sqlite_query.c, sqlite_site.c,
 * sqlite_rollup.c, sqlite_cache.c).
 * Not a public contract: nothing outside src/store/sqlite*.c includes this. */
#ifndef METERD_STORE_SQLITE_INT_H
#define METERD_STORE_SQLITE_INT_H

#include "store/sqlite.h"
#include "worker/rules.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

/* ---- name -> id cache (devices, metrics); sqlite_cache.c ---- */

typedef struct sqlite_name {
    char *name; /* owned */
    uint64_t hash;
    int64_t id;
    /* Device bookkeeping for the current transaction (unused for metrics). */
    int touched;
    int64_t first_us, last_us;
    const char *site; /* borrowed from a batch of the current apply() call */
} sqlite_name;

typedef struct sqlite_name_map {
    sqlite_name **slots; /* owned array of owned entries; open addressing */
    size_t cap, n;
} sqlite_name_map;

/* Returns the entry for name or NULL. */
sqlite_name *sqlite_names_get(const sqlite_name_map *m, const char *name);
/* Adds name -> id (name copied). Returns the new entry or NULL (no memory). */
sqlite_name *sqlite_names_put(sqlite_name_map *m, const char *name, int64_t id);
/* Forgets every entry (keeps the slot array). */
void sqlite_names_clear(sqlite_name_map *m);
void sqlite_names_free(sqlite_name_map *m);

/* ---- live rows touched by one transaction; sqlite_cache.c ---- */

typedef struct sqlite_live {
    int64_t device_id, metric_id;
    int has_reading; /* ts_us..batch_no hold a reading (from the database or this apply) */
    int dirty;       /* must be written at commit */
    int64_t ts_us;
    double value;
    int status;
    char *reason;     /* owned; NULL means "" */
    int64_t batch_no; /* batches.no of the batch that brought the reading */
    anomaly_window w;
} sqlite_live;

typedef struct sqlite_live_map {
    sqlite_live *items; /* owned; index-addressed so growth may move them */
    size_t n, cap_items;
    int32_t *slots; /* owned; -1 = empty, else index into items */
    size_t cap;
} sqlite_live_map;

/* Returns the index of (dev, met) or -1. */
long sqlite_live_find(const sqlite_live_map *m, int64_t dev, int64_t met);
/* Adds a zeroed entry for (dev, met); returns its index or -1 (no memory). */
long sqlite_live_add(sqlite_live_map *m, int64_t dev, int64_t met);
/* Empties the map, freeing reasons (keeps the arrays for the next transaction). */
void sqlite_live_clear(sqlite_live_map *m);
void sqlite_live_free(sqlite_live_map *m);

/* ---- rollup buckets touched by one transaction; sqlite_cache.c ---- */

/* One (device, metric, bucket) aggregate of the valid readings stored by this transaction. */
typedef struct sqlite_rollup {
    int64_t device_id, metric_id, bucket_us;
    uint64_t count;
    double sum, min, max;
    int64_t first_ts_us, last_ts_us;
    double first, last;
} sqlite_rollup;

typedef struct sqlite_rollup_map {
    sqlite_rollup *items; /* owned */
    size_t n, cap_items;
    int32_t *slots; /* owned; -1 = empty, else index into items */
    size_t cap;
} sqlite_rollup_map;

/* Returns the index of (dev, met, bucket), adding a zeroed entry when missing; -1 (no memory). */
long sqlite_rollup_entry(sqlite_rollup_map *m, int64_t dev, int64_t met, int64_t bucket_us);
/* Empties the map (keeps the arrays for the next transaction). */
void sqlite_rollup_clear(sqlite_rollup_map *m);
void sqlite_rollup_free(sqlite_rollup_map *m);

/* ---- the store ---- */

/* Cached statements of the writer connection (prepared once at open). */
enum {
    SW_BEGIN,
    SW_COMMIT,
    SW_ROLLBACK,
    SW_BATCH_ADD,
    SW_DEV_GET,
    SW_DEV_ADD,
    SW_DEV_TOUCH,
    SW_MET_GET,
    SW_MET_ADD,
    SW_READING_ADD,
    SW_READING_VALUE,
    SW_READING_FLAG,
    SW_CONFLICT_ADD,
    SW_LIVE_GET,
    SW_LIVE_PUT,
    SW_COUNTER_ADD,
    SW_COUNTER_MAX,
    SW_LINK_PUT,
    SW_ROLLUP_HOUR,
    SW_ROLLUP_DAY,
    SW__COUNT
};

/* Cached statements of a reader connection; readings queries are SR_READINGS + flag bits. */
enum {
    SR_DEVICES_FIRST,
    SR_DEVICES_AFTER,
    SR_DEVICE,
    SR_DEVICE_ID,
    SR_METRIC_ID,
    SR_LIVE,
    SR_COUNTS,
    SR_PING,
    SR_BEGIN,
    SR_COMMIT,
    SR_LINKS,
    SR_LINKS_ANY,
    SR_SITE_DEVICES,
    SR_WSUM_HOURS,
    SR_WSUM_RAW,
    SR_READINGS,                      /* + SQ_* bits below */
    SR_AGGREGATES = SR_READINGS + 16, /* + SA_* bits below */
    SR__COUNT = SR_AGGREGATES + 8
};
#define SQ_DEVICE 1
#define SQ_METRIC 2
#define SQ_INVALID 4
#define SQ_CURSOR 8
#define SA_METRIC 1
#define SA_CURSOR 2
#define SA_DAY 4

typedef struct sqlite_reader {
    sqlite3 *db;                   /* owned, read-only */
    sqlite3_stmt *stmt[SR__COUNT]; /* owned, prepared on first use */
    sqlite3_stmt **site;           /* owned: one per-device stream per device of a site query */
    size_t n_site;
    struct sqlite_reader *next;      /* every reader of the store */
    struct sqlite_reader *next_free; /* readers of exited threads, for reuse */
    struct sqlite_store *owner;      /* borrowed */
} sqlite_reader;

typedef struct sqlite_store {
    store base;
    store_rules rules;
    char *path;                    /* owned */
    sqlite3 *db;                   /* owned: the one writer connection */
    sqlite3_stmt *stmt[SW__COUNT]; /* owned */
    sqlite_name_map devices, metrics;
    sqlite_live_map live;
    sqlite_rollup_map hours, days; /* rollups of this transaction, written once at commit */
    store_observer observer; /* borrowed; may be NULL */
    void *observer_arg;
    sqlite_name **touched;         /* owned array of borrowed entries: devices seen in this apply */
    size_t n_touched, cap_touched;
    struct sqlite_pending *pending; /* owned: the readings of this apply (sqlite_apply.c) */
    uint32_t *arrival;              /* owned: arrival ordinal -> index into pending */
    size_t n_pending, cap_pending;

    unsigned wb_failures; /* sqlite_wal_buffer_failures() at open: more, and ping fails */

    pthread_key_t key;  /* this thread's sqlite_reader */
    pthread_mutex_t mu; /* guards readers and free_readers */
    sqlite_reader *readers, *free_readers;
} sqlite_store;

/* apply() implementation (sqlite_apply.c). */
int sqlite_store_apply(store *s, batch *const *batches, size_t n, store_apply_stats *st, char *err,
                       size_t errlen);

/* Query implementations (sqlite_query.c). */
int sqlite_store_devices(store *s, const char *after, size_t limit, store_device_cb cb, void *arg);
int sqlite_store_device(store *s, const char *id, store_device_cb cb, void *arg);
int sqlite_store_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg);
int sqlite_store_live(store *s, const char *device, store_reading_cb cb, void *arg);
int sqlite_store_counts(store *s, store_counts *c);
int sqlite_store_ping(store *s);
int sqlite_store_links(store *s, const char *device, const char *relation, store_device_cb cb,
                       void *arg);

/* Site readings query (sqlite_site.c): merges the per-device streams of q->site's devices. */
int sqlite_site_readings(store *s, const store_readings_query *q, store_reading_cb cb, void *arg);

/* Rollups (sqlite_rollup.c): accumulate one valid stored reading; write them all before COMMIT. */
int sqlite_rollup_add(sqlite_store *ss, int64_t dev, int64_t met, int64_t ts_us, double value);
int sqlite_rollup_flush(sqlite_store *ss, char *err, size_t errlen);
int sqlite_store_aggregates(store *s, const store_aggregates_query *q,
                            int (*cb)(void *arg, const store_aggregate *a), void *arg);
int sqlite_store_window_sum(store *s, const char *device, const char *metric, int64_t from_us,
                            int64_t to_us, store_window_sum *out);

/* Returns this thread's reader connection (opened on first use), or NULL. */
sqlite_reader *sqlite_reader_get(sqlite_store *ss);

/* Reader helpers shared by the query files (sqlite_query.c). */
/* Returns this thread's statement idx (SR_*), ready to bind; NULL on error. */
sqlite3_stmt *sqlite_query_stmt(store *s, int idx);
/* Resolves a name with SR_DEVICE_ID or SR_METRIC_ID: 0 with *found set, or MD_ERR_STORE. */
int sqlite_query_name_id(store *s, int idx, const char *name, int64_t *id, int *found);
/* LIMIT value for SQLite (-1 = none). */
int64_t sqlite_query_limit(size_t limit);
/* Column text, "" for NULL. */
const char *sqlite_query_text(sqlite3_stmt *st, int col);
/* Column value, NaN for NULL. */
double sqlite_query_value(sqlite3_stmt *st, int col);
/* SQL of the per-device reading stream used by the site query; parameters documented there. */
extern const char sqlite_site_stream_sql[];

/* sqlite_vfs.c: the VFS shim that gathers the WAL's writes (synchronous=FULL connections only).
 * Registers it once; returns its name, or NULL when it could not (then use the default). */
#define SQLITE_WAL_BUFFER_VFS "meterd-wal-buffer"
const char *sqlite_wal_buffer_vfs(void);
/* Files of this process whose write-back failed under the shim: each then fails every sync. */
unsigned sqlite_wal_buffer_failures(void);

#endif
