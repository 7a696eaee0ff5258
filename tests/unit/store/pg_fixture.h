/* The PostgreSQL side of the store test fixture (included by sqlite_fixture.h when
 * STORE_TESTS_PG is defined): one fresh database per test on the server of pg_server.h;
 * f->path holds its URL, so the shared bodies' sql_int(f->path, ...) work unchanged. */
#ifndef METERD_TESTS_STORE_PG_FIXTURE_H
#define METERD_TESTS_STORE_PG_FIXTURE_H

#include "pg_server.h"
#include "store/pg.h"

#include <postgresql/libpq-fe.h>

typedef struct fixture {
    char db[32];
    char path[160]; /* the database URL */
    store *s;
} fixture;

static int pg_db_counter;

static inline store *open_store(fixture *f)
{
    char err[512] = "";
    store_rules rules = {.max_future_us = 300 * SEC};
    store *s = pg_store_open(f->path, &rules, err, sizeof(err));
    if (!s) fail_msg("open: %s", err);
    return s;
}

static inline PGconn *pg_admin(const char *db)
{
    char url[160];
    snprintf(url, sizeof(url), "postgres://postgres@127.0.0.1:%d/%s", pg_srv.port, db);
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect %s: %s", url, PQerrorMessage(c));
    return c;
}

static inline void pg_admin_exec(const char *db, const char *sql)
{
    PGconn *c = pg_admin(db);
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        fail_msg("%s: %s", sql, msg);
    }
    PQclear(r);
    PQfinish(c);
}

/* A new empty database; f->path gets its URL. */
static inline void pg_new_db(fixture *f)
{
    snprintf(f->db, sizeof(f->db), "t%d_%d", (int)getpid(), ++pg_db_counter);
    char sql[96];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", f->db);
    pg_admin_exec("postgres", sql);
    snprintf(f->path, sizeof(f->path), "postgres://postgres@127.0.0.1:%d/%s", pg_srv.port, f->db);
}

static inline int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    pg_new_db(f);
    f->s = open_store(f);
    *state = f;
    return 0;
}

static inline int teardown(void **state)
{
    fixture *f = *state;
    if (f->s) f->s->ops->close(f->s);
    char sql[96];
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", f->db);
    pg_admin_exec("postgres", sql);
    free(f);
    return 0;
}

static inline int pg_group_setup(void **state)
{
    (void)state;
    return pg_server_start() == 0 ? 0 : -1;
}

static inline int pg_group_teardown(void **state)
{
    (void)state;
    pg_server_stop();
    return 0;
}

/* Runs one SQL query returning one integer on a separate connection. */
static inline int64_t sql_int(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    int64_t v = INT64_MIN;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        fail_msg("%s: %s", sql, msg);
    }
    if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0)) v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PQfinish(c);
    return v;
}

/* Runs SQL statements on a separate connection (fault injection, tampering). */
static inline void sql_exec(const char *url, const char *sql)
{
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) fail_msg("connect: %s", PQerrorMessage(c));
    PGresult *r = PQexec(c, sql);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        PQclear(r);
        PQfinish(c);
        fail_msg("%s: %s", sql, msg);
    }
    PQclear(r);
    PQfinish(c);
}

#define SQL_HEX(col) "upper(encode(" col ", 'hex'))"
#define SQL_BOOM_ON                                                                                \
    "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS"                                   \
    " $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$;"                                        \
    " CREATE TRIGGER boom BEFORE UPDATE ON counters FOR EACH ROW EXECUTE FUNCTION boom();"
#define SQL_BOOM_OFF "DROP TRIGGER boom ON counters"

#endif
