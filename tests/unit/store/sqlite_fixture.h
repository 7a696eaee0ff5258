/* Shared fixture and helpers of the store tests (test_sqlite*.c): a temporary directory per
 * test, batch builders and row collectors. The test bodies are backend-neutral: test_pg.c
 * defines STORE_TESTS_PG and runs the same files against PostgreSQL (pg_fixture.h provides
 * setup/teardown/open_store/sql_int/sql_exec there, with f->path holding the database URL). */
#ifndef METERD_TESTS_STORE_SQLITE_FIXTURE_H
#define METERD_TESTS_STORE_SQLITE_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/batch.h"
#include "core/error.h"
#include "store/sqlite.h"

#include <sqlite3.h>
#include <stdio.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SEC INT64_C(1000000)
#define T0 (INT64_C(1700000000) * SEC)

#ifdef STORE_TESTS_PG
#include "pg_fixture.h"
#else
typedef struct fixture {
    char dir[64];
    char path[128];
    store *s;
} fixture;

static inline store *open_store(fixture *f)
{
    char err[256] = "";
    store_rules rules = {.max_future_us = 300 * SEC};
    store *s = sqlite_store_open(f->path, &rules, err, sizeof(err));
    if (!s) fail_msg("open: %s", err);
    return s;
}

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/meterd-sqlite-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
    f->s = open_store(f);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    if (f->s) f->s->ops->close(f->s);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    free(f);
    return 0;
}

/* Runs one SQL query returning one integer on a separate connection (schema checks). */
static inline int64_t sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t v = INT64_MIN;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) fail_msg("%s", sqlite3_errmsg(db));
    if (sqlite3_step(q) == SQLITE_ROW) v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

/* Runs SQL statements on a separate connection (fault injection, tampering). */
static inline void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    char *msg = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) fail_msg("%s: %s", sql, msg);
    sqlite3_close(db);
}

/* SQL giving a blob column as upper-case hex. */
#define SQL_HEX(col) "hex(" col ")"
/* SQL that makes every UPDATE of counters fail with "injected failure", and undoes it. */
#define SQL_BOOM_ON "CREATE TRIGGER boom BEFORE UPDATE ON counters BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
#define SQL_BOOM_OFF "DROP TRIGGER boom"
#endif

/* ---- helpers ---- */

static inline batch *mkbatch(int64_t received_at_us)
{
    batch *b = batch_new("test");
    assert_non_null(b);
    b->received_at_us = received_at_us;
    return b;
}

static inline void add(batch *b, const char *device, const char *metric, int64_t ts_us,
                       double value)
{
    assert_int_equal(batch_add(b, device, "meter", "", metric, ts_us, value), MD_OK);
}

static inline store_apply_stats apply1(store *s, batch *b)
{
    store_apply_stats st;
    char err[256] = "";
    batch *bs[1] = {b};
    int rc = s->ops->apply(s, bs, 1, &st, err, sizeof(err));
    if (rc != MD_OK) fail_msg("apply: %d %s", rc, err);
    return st;
}

typedef struct row {
    char device[32], metric[32], reason[600], site[32], position[48];
    int64_t ts_us, received_at_us;
    double value;
    int valid;
} row;

typedef struct rows {
    row r[64];
    size_t n;
    size_t stop_after; /* 0: never */
} rows;

static inline int collect(void *arg, const store_reading *r)
{
    rows *rs = arg;
    assert_true(rs->n < 64);
    row *o = &rs->r[rs->n++];
    snprintf(o->device, sizeof(o->device), "%s", r->device);
    snprintf(o->metric, sizeof(o->metric), "%s", r->metric);
    snprintf(o->reason, sizeof(o->reason), "%s", r->reason);
    snprintf(o->site, sizeof(o->site), "%s", r->site);
    snprintf(o->position, sizeof(o->position), "%s", r->position);
    o->ts_us = r->ts_us;
    o->received_at_us = r->received_at_us;
    o->value = r->value;
    o->valid = r->valid;
    return rs->stop_after && rs->n >= rs->stop_after;
}

static inline rows query(store *s, const char *device, const char *metric, int64_t from, int64_t to)
{
    rows rs = {0};
    store_readings_query q = {
        .device = device, .metric = metric, .from_us = from, .to_us = to, .limit = 64};
    assert_int_equal(s->ops->readings(s, &q, collect, &rs), MD_OK);
    return rs;
}

static inline rows live(store *s, const char *device)
{
    rows rs = {0};
    assert_int_equal(s->ops->live(s, device, collect, &rs), MD_OK);
    return rs;
}

static inline store_counts counts(store *s)
{
    store_counts c;
    assert_int_equal(s->ops->counts(s, &c), MD_OK);
    return c;
}

typedef struct devs {
    store_device d[16];
    char id[16][32], kind[16][32], site[16][32]; /* copies: strings live only in the call */
    size_t n;
} devs;

static inline int collect_dev(void *arg, const store_device *d)
{
    devs *ds = arg;
    assert_true(ds->n < 16);
    snprintf(ds->id[ds->n], 32, "%s", d->id);
    snprintf(ds->kind[ds->n], 32, "%s", d->kind);
    snprintf(ds->site[ds->n], 32, "%s", d->site);
    ds->d[ds->n++] = *d;
    return 0;
}

static inline devs links(store *s, const char *device, const char *relation)
{
    devs ds = {0};
    assert_int_equal(s->ops->links(s, device, relation, collect_dev, &ds), MD_OK);
    return ds;
}

#endif
