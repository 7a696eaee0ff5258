/* SQLite store backend: open, schema and migrations, connections, close.
 * One writer connection (used by apply(), one thread at a time) and one read-only
 * connection per querying thread; WAL mode lets the readers run while the writer commits.
 * The schema lives here and only here. apply() is in sqlite_apply.c, queries in sqlite_query.c. */
#include "store/sqlite_int.h"
#include "core/error.h"

#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Schema migrations: entry i moves the database from user_version i to i + 1.
 * Append a step to change the schema; never edit a released one. */
static const char *const schema_steps[] = {
    /* 0 -> 1 */
    "CREATE TABLE devices("
    "  id INTEGER PRIMARY KEY,"
    "  ext_id TEXT NOT NULL UNIQUE,"
    "  kind TEXT NOT NULL DEFAULT '',"
    "  site TEXT NOT NULL DEFAULT '',"
    "  first_seen_us INTEGER NOT NULL,"
    "  last_seen_us INTEGER NOT NULL);"
    /* The site query lists a site's devices in ext_id order straight from this index. */
    "CREATE INDEX devices_site ON devices(site, ext_id);"
    "CREATE TABLE metrics("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE);"
    /* One row per applied batch: provenance, and the UNIQUE id is what makes a re-delivered
     * batch a no-op. Readings point here (batch_no) instead of repeating it per row. */
    "CREATE TABLE batches("
    "  no INTEGER PRIMARY KEY,"
    "  id BLOB UNIQUE NOT NULL,"
    "  position TEXT,"
    "  source TEXT,"
    "  request_id TEXT,"
    "  client_ip TEXT,"
    "  client_user_agent TEXT,"
    "  received_at_us INTEGER,"
    "  applied_at_us INTEGER,"
    "  n_readings INTEGER);"
    /* Key order (device, ts, metric): a device's readings of all metrics come out in ts
     * order straight from the key, which is what the paged readings query walks. */
    "CREATE TABLE readings("
    "  device_id INTEGER NOT NULL,"
    "  metric_id INTEGER NOT NULL,"
    "  ts_us INTEGER NOT NULL,"
    "  value REAL,"              /* NULL when not finite (SQLite stores NaN as NULL) */
    "  status INTEGER NOT NULL," /* 1 valid, 0 invalid */
    "  reason TEXT NOT NULL DEFAULT '',"
    "  batch_no INTEGER NOT NULL REFERENCES batches(no),"
    "  PRIMARY KEY(device_id, ts_us, metric_id)) WITHOUT ROWID;"
    "CREATE INDEX readings_invalid ON readings(ts_us) WHERE status = 0;"
    "CREATE TABLE conflicts("
    "  device_id INTEGER NOT NULL,"
    "  metric_id INTEGER NOT NULL,"
    "  ts_us INTEGER NOT NULL,"
    "  stored_value REAL,"
    "  new_value REAL,"
    "  batch_id BLOB NOT NULL,"
    "  received_at_us INTEGER NOT NULL);"
    "CREATE TABLE live("
    "  device_id INTEGER NOT NULL,"
    "  metric_id INTEGER NOT NULL,"
    "  ts_us INTEGER NOT NULL,"
    "  value REAL,"
    "  status INTEGER NOT NULL,"
    "  reason TEXT NOT NULL DEFAULT '',"
    "  batch_no INTEGER NOT NULL REFERENCES batches(no),"
    "  updated_at_us INTEGER NOT NULL,"
    "  window BLOB," /* anomaly window, rules_window_encode() */
    "  PRIMARY KEY(device_id, metric_id)) WITHOUT ROWID;"
    "CREATE TABLE links("
    "  device_id INTEGER NOT NULL,"
    "  linked_device_id INTEGER NOT NULL,"
    "  relation TEXT NOT NULL,"
    "  updated_at_us INTEGER NOT NULL,"
    "  PRIMARY KEY(device_id, relation, linked_device_id)) WITHOUT ROWID;"
    /* Rollups of valid readings, written in the apply transaction (sqlite_rollup.c). */
    "CREATE TABLE rollup_hour("
    "  device_id INTEGER NOT NULL, metric_id INTEGER NOT NULL, bucket_us INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,"
    "  first_ts_us INTEGER NOT NULL, first_value REAL NOT NULL,"
    "  last_ts_us INTEGER NOT NULL, last_value REAL NOT NULL,"
    "  PRIMARY KEY(device_id, metric_id, bucket_us)) WITHOUT ROWID;"
    "CREATE TABLE rollup_day("
    "  device_id INTEGER NOT NULL, metric_id INTEGER NOT NULL, bucket_us INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, sum REAL NOT NULL, min REAL NOT NULL, max REAL NOT NULL,"
    "  first_ts_us INTEGER NOT NULL, first_value REAL NOT NULL,"
    "  last_ts_us INTEGER NOT NULL, last_value REAL NOT NULL,"
    "  PRIMARY KEY(device_id, metric_id, bucket_us)) WITHOUT ROWID;"
    /* Running totals kept in the apply transaction: count(*) over readings is O(rows). */
    "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO counters(name, value) VALUES ('devices', 0), ('readings', 0), ('invalid', 0),"
    "  ('duplicates', 0), ('conflicts', 0), ('batches', 0), ('last_applied_received_us', 0);",
};
#define SCHEMA_VERSION ((int)(sizeof(schema_steps) / sizeof(schema_steps[0])))

/* Adds one transaction's aggregate of a bucket to the stored one. SET expressions see the
 * row's old values, so first/last compare against the stored first/last ts. */
#define ROLLUP_UPSERT(table)                                                                       \
    "INSERT INTO " table "(device_id, metric_id, bucket_us, count, sum, min, max, first_ts_us,"    \
    " first_value, last_ts_us, last_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"  \
    " ON CONFLICT DO UPDATE SET count = count + excluded.count, sum = sum + excluded.sum,"         \
    " min = min(min, excluded.min), max = max(max, excluded.max),"                                 \
    " first_ts_us = min(first_ts_us, excluded.first_ts_us),"                                       \
    " first_value = CASE WHEN excluded.first_ts_us < first_ts_us THEN excluded.first_value"        \
    " ELSE first_value END,"                                                                       \
    " last_ts_us = max(last_ts_us, excluded.last_ts_us),"                                          \
    " last_value = CASE WHEN excluded.last_ts_us > last_ts_us THEN excluded.last_value"            \
    " ELSE last_value END"

/* Writer statements, indexed by the SW_* enum. */
static const char *const writer_sql[SW__COUNT] = {
    [SW_BEGIN] = "BEGIN IMMEDIATE",
    [SW_COMMIT] = "COMMIT",
    [SW_ROLLBACK] = "ROLLBACK",
    /* No row inserted (changes() == 0): the batch was applied before. */
    [SW_BATCH_ADD] = "INSERT INTO batches(id, position, source, request_id, client_ip,"
                     " client_user_agent, received_at_us, applied_at_us, n_readings)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT(id) DO NOTHING",
    [SW_DEV_GET] = "SELECT id FROM devices WHERE ext_id = ?1",
    [SW_DEV_ADD] = "INSERT INTO devices(ext_id, kind, site, first_seen_us, last_seen_us)"
                   " VALUES (?1, ?2, ?3, ?4, ?4)",
    [SW_DEV_TOUCH] = "UPDATE devices SET first_seen_us = min(first_seen_us, ?2),"
                     " last_seen_us = max(last_seen_us, ?3),"
                     " site = CASE WHEN ?4 <> '' THEN ?4 ELSE site END WHERE id = ?1",
    [SW_MET_GET] = "SELECT id FROM metrics WHERE name = ?1",
    [SW_MET_ADD] = "INSERT INTO metrics(name) VALUES (?1)",
    [SW_READING_ADD] = "INSERT INTO readings(device_id, metric_id, ts_us, value, status, reason,"
                       " batch_no) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                       " ON CONFLICT DO NOTHING",
    [SW_READING_VALUE] =
        "SELECT value FROM readings WHERE device_id = ?1 AND ts_us = ?2 AND metric_id = ?3",
    [SW_READING_FLAG] = "UPDATE readings SET status = 0, reason = ?4"
                        " WHERE device_id = ?1 AND ts_us = ?2 AND metric_id = ?3",
    [SW_CONFLICT_ADD] = "INSERT INTO conflicts(device_id, metric_id, ts_us, stored_value,"
                        " new_value, batch_id, received_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [SW_LIVE_GET] = "SELECT ts_us, value, status, reason, batch_no, window FROM live"
                    " WHERE device_id = ?1 AND metric_id = ?2",
    [SW_LIVE_PUT] = "INSERT INTO live(device_id, metric_id, ts_us, value, status, reason, batch_no,"
                    " updated_at_us, window) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
                    " ON CONFLICT(device_id, metric_id) DO UPDATE SET ts_us = excluded.ts_us,"
                    " value = excluded.value, status = excluded.status, reason = excluded.reason,"
                    " batch_no = excluded.batch_no, updated_at_us = excluded.updated_at_us,"
                    " window = excluded.window",
    [SW_COUNTER_ADD] = "UPDATE counters SET value = value + ?2 WHERE name = ?1",
    [SW_COUNTER_MAX] = "UPDATE counters SET value = max(value, ?2) WHERE name = ?1",
    [SW_LINK_PUT] = "INSERT INTO links(device_id, linked_device_id, relation, updated_at_us)"
                    " VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO UPDATE SET"
                    " updated_at_us = max(updated_at_us, excluded.updated_at_us)",
    [SW_ROLLUP_HOUR] = ROLLUP_UPSERT("rollup_hour"),
    [SW_ROLLUP_DAY] = ROLLUP_UPSERT("rollup_day"),
};

static int fail(sqlite3 *db, const char *what, char *err, size_t errlen)
{
    if (err && errlen)
        snprintf(err, errlen, "sqlite store: %s: %s", what, db ? sqlite3_errmsg(db) : "?");
    return MD_ERR_STORE;
}

static int exec(sqlite3 *db, const char *sql, const char *what, char *err, size_t errlen)
{
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) return fail(db, what, err, errlen);
    return MD_OK;
}

static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return MD_ERR_STORE;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? MD_OK : MD_ERR_STORE;
}

/* Brings the schema to SCHEMA_VERSION, one transaction per step. */
static int migrate(sqlite3 *db, char *err, size_t errlen)
{
    int version = 0;
    if (pragma_int(db, "PRAGMA user_version", &version) != MD_OK)
        return fail(db, "reading schema version", err, errlen);
    if (version > SCHEMA_VERSION) {
        snprintf(err, errlen,
                 "sqlite store: database schema version %d is newer than this meterd (%d)", version,
                 SCHEMA_VERSION);
        return MD_ERR_STORE;
    }
    for (int v = version; v < SCHEMA_VERSION; v++) {
        char what[64], setv[48];
        snprintf(what, sizeof(what), "schema migration %d -> %d", v, v + 1);
        snprintf(setv, sizeof(setv), "PRAGMA user_version = %d", v + 1);
        if (exec(db, "BEGIN IMMEDIATE", what, err, errlen) != MD_OK) return MD_ERR_STORE;
        if (exec(db, schema_steps[v], what, err, errlen) != MD_OK ||
            exec(db, setv, what, err, errlen) != MD_OK ||
            exec(db, "COMMIT", what, err, errlen) != MD_OK) {
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            return MD_ERR_STORE;
        }
    }
    return MD_OK;
}

static int check_parent_dir(const char *path, char *err, size_t errlen)
{
    char *copy = strdup(path);
    if (!copy) {
        snprintf(err, errlen, "sqlite store: out of memory");
        return MD_ERR_NOMEM;
    }
    const char *dir = dirname(copy);
    struct stat sb;
    int rc = MD_OK;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "sqlite store: cannot open %s: directory %s %s", path, dir,
                 errno == ENOENT ? "does not exist" : "is not usable");
        rc = MD_ERR_IO;
    }
    free(copy);
    return rc;
}

static int open_writer(sqlite_store *ss, char *err, size_t errlen)
{
    /* the WAL buffer shim needs synchronous=FULL, set below before the first write */
    ss->wb_failures = sqlite_wal_buffer_failures();
    int rc = sqlite3_open_v2(ss->path, &ss->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             sqlite_wal_buffer_vfs());
    if (rc != SQLITE_OK) return fail(ss->db, "open", err, errlen);
    sqlite3_extended_result_codes(ss->db, 1);
    sqlite3_busy_timeout(ss->db, 5000);

    char mode[16] = "";
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(ss->db, "PRAGMA journal_mode = WAL", -1, &st, NULL) != SQLITE_OK)
        return fail(ss->db, "journal_mode", err, errlen);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (strcmp(mode, "wal") != 0) {
        snprintf(err, errlen, "sqlite store: cannot switch %s to WAL mode (got '%s')", ss->path,
                 mode);
        return MD_ERR_STORE;
    }
    /* FULL: the queue position moves on once apply() returns, so a commit must be on disk.
     * wal_autocheckpoint 8192 pages (32 MiB, SQLite's default is 1,000): a transaction of the
     * worker rewrites the same hot pages (each device's newest page, live row, rollups), and a
     * checkpoint copies each page once however many transactions wrote it (docs/decisions.md
     * 31: +15 % readings/s applied, -29 % bytes written). */
    if (exec(ss->db,
             "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;"
             " PRAGMA cache_size = -32768; PRAGMA temp_store = MEMORY;"
             " PRAGMA wal_autocheckpoint = 8192;",
             "pragmas", err, errlen) != MD_OK)
        return MD_ERR_STORE;
    /* FULL (2) or EXTRA (3): the WAL buffer shim relies on the sync at every commit */
    int sync = 0;
    if (pragma_int(ss->db, "PRAGMA synchronous", &sync) != MD_OK || sync < 2) {
        snprintf(err, errlen, "sqlite store: %s: synchronous=FULL did not take", ss->path);
        return MD_ERR_STORE;
    }
    if (migrate(ss->db, err, errlen) != MD_OK) return MD_ERR_STORE;

    for (int i = 0; i < SW__COUNT; i++) {
        if (sqlite3_prepare_v3(ss->db, writer_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &ss->stmt[i],
                               NULL) != SQLITE_OK)
            return fail(ss->db, writer_sql[i], err, errlen);
    }
    return MD_OK;
}

static void reader_close(sqlite_reader *r)
{
    for (int i = 0; i < SR__COUNT; i++)
        sqlite3_finalize(r->stmt[i]);
    for (size_t i = 0; i < r->n_site; i++)
        sqlite3_finalize(r->site[i]);
    free(r->site);
    sqlite3_close(r->db);
    free(r);
}

/* Thread exit: hand the connection to the next thread that queries instead of closing it. */
static void reader_release(void *p)
{
    sqlite_reader *r = p;
    sqlite_store *ss = r->owner;
    pthread_mutex_lock(&ss->mu);
    r->next_free = ss->free_readers;
    ss->free_readers = r;
    pthread_mutex_unlock(&ss->mu);
}

sqlite_reader *sqlite_reader_get(sqlite_store *ss)
{
    sqlite_reader *r = pthread_getspecific(ss->key);
    if (r) return r;

    pthread_mutex_lock(&ss->mu);
    r = ss->free_readers;
    if (r) ss->free_readers = r->next_free;
    pthread_mutex_unlock(&ss->mu);

    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r) return NULL;
        r->owner = ss;
        if (sqlite3_open_v2(ss->path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
            sqlite3_close(r->db);
            free(r);
            return NULL;
        }
        sqlite3_busy_timeout(r->db, 5000);
        pthread_mutex_lock(&ss->mu);
        r->next = ss->readers;
        ss->readers = r;
        pthread_mutex_unlock(&ss->mu);
    }
    r->next_free = NULL;
    if (pthread_setspecific(ss->key, r) != 0) {
        reader_release(r);
        return NULL;
    }
    return r;
}

/* Every thread must have stopped using s before this runs. */
static void sqlite_store_close(store *s)
{
    if (!s) return;
    sqlite_store *ss = (sqlite_store *)s;
    /* Deleting the key first means no thread-exit destructor runs on freed readers. */
    pthread_key_delete(ss->key);
    for (sqlite_reader *r = ss->readers, *next; r; r = next) {
        next = r->next;
        reader_close(r);
    }
    for (int i = 0; i < SW__COUNT; i++)
        sqlite3_finalize(ss->stmt[i]);
    if (ss->db && sqlite3_close(ss->db) != SQLITE_OK) sqlite3_close_v2(ss->db);
    pthread_mutex_destroy(&ss->mu);
    sqlite_names_free(&ss->devices);
    sqlite_names_free(&ss->metrics);
    sqlite_live_free(&ss->live);
    sqlite_rollup_free(&ss->hours);
    sqlite_rollup_free(&ss->days);
    free(ss->touched);
    free(ss->pending);
    free(ss->arrival);
    free(ss->path);
    free(ss);
}

static void sqlite_store_observe(store *s, store_observer cb, void *arg)
{
    sqlite_store *ss = (sqlite_store *)s;
    ss->observer = cb;
    ss->observer_arg = arg;
}

static const store_ops sqlite_ops = {
    .name = "sqlite",
    .apply = sqlite_store_apply,
    .devices = sqlite_store_devices,
    .device = sqlite_store_device,
    .readings = sqlite_store_readings,
    .live = sqlite_store_live,
    .aggregates = sqlite_store_aggregates,
    .window_sum = sqlite_store_window_sum,
    .links = sqlite_store_links,
    .counts = sqlite_store_counts,
    .ping = sqlite_store_ping,
    .observe = sqlite_store_observe,
    .close = sqlite_store_close,
};

/* Before SQLite's first use: without memory statistics sqlite3_malloc() takes no global mutex
 * (the worker's mutex lock/unlock was ~5 % of its profile). Fails harmlessly (SQLITE_MISUSE)
 * if something in the process used SQLite first. */
static void configure_sqlite(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

store *sqlite_store_open(const char *path, const store_rules *rules, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, configure_sqlite);
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!path || !path[0]) {
        snprintf(err, errlen, "sqlite store: empty database path");
        return NULL;
    }
    if (check_parent_dir(path, err, errlen) != MD_OK) return NULL;

    sqlite_store *ss = calloc(1, sizeof(*ss));
    if (!ss) {
        snprintf(err, errlen, "sqlite store: out of memory");
        return NULL;
    }
    ss->base.ops = &sqlite_ops;
    ss->rules.max_future_us = rules ? rules->max_future_us : INT64_C(300) * 1000000;
    ss->path = strdup(path);
    if (!ss->path) {
        free(ss);
        snprintf(err, errlen, "sqlite store: out of memory");
        return NULL;
    }
    if (pthread_mutex_init(&ss->mu, NULL) != 0) {
        free(ss->path);
        free(ss);
        snprintf(err, errlen, "sqlite store: cannot create mutex");
        return NULL;
    }
    if (pthread_key_create(&ss->key, reader_release) != 0) {
        pthread_mutex_destroy(&ss->mu);
        free(ss->path);
        free(ss);
        snprintf(err, errlen, "sqlite store: cannot create thread key");
        return NULL;
    }
    if (open_writer(ss, err, errlen) != MD_OK) {
        sqlite_store_close(&ss->base);
        return NULL;
    }
    return &ss->base;
}
