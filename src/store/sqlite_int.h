/* Internal to the SQLite store (sqlite.c, sqlite_apply.c, sqlite_query.c, sqlite_cache.c).
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
    int has_reading; /* ts_us..received_at_us hold a reading (from the database or this apply) */
    int dirty;       /* must be written at commit */
    int64_t ts_us;
    double value;
    int status;
    char *reason; /* owned; NULL means "" */
    int64_t received_at_us;
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

/* ---- the store ---- */

/* Cached statements of the writer connection (prepared once at open). */
enum {
    SW_BEGIN,
    SW_COMMIT,
    SW_ROLLBACK,
    SW_BATCH_SEEN,
    SW_BATCH_ADD,
    SW_DEV_GET,
    SW_DEV_ADD,
    SW_DEV_TOUCH,
    SW_MET_GET,
    SW_MET_ADD,
    SW_READING_ADD,
    SW_READING_VALUE,
    SW_CONFLICT_ADD,
    SW_LIVE_GET,
    SW_LIVE_PUT,
    SW_COUNTER_ADD,
    SW_COUNTER_MAX,
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
    SR_READINGS, /* + SQ_* bits below */
    SR__COUNT = SR_READINGS + 16
};
#define SQ_DEVICE 1
#define SQ_METRIC 2
#define SQ_INVALID 4
#define SQ_CURSOR 8

typedef struct sqlite_reader {
    sqlite3 *db;                     /* owned, read-only */
    sqlite3_stmt *stmt[SR__COUNT];   /* owned, prepared on first use */
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
    sqlite_name **touched; /* owned array of borrowed entries: devices seen in this apply */
    size_t n_touched, cap_touched;

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

/* Returns this thread's reader connection (opened on first use), or NULL. */
sqlite_reader *sqlite_reader_get(sqlite_store *ss);

#endif
