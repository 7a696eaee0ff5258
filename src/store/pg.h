/* PostgreSQL store backend (libpq). Uses a TimescaleDB hypertable for readings when
 * CREATE EXTENSION timescaledb succeeds, native monthly range partitions otherwise. */
#ifndef METERD_STORE_PG_H
#define METERD_STORE_PG_H

#include "store/store.h"

#include <stddef.h>

/* Connects to url (postgres://user@host:port/db or a libpq conninfo string), creates or
 * migrates the schema (under an advisory lock: several processes may start at once) and
 * opens a small pool of read connections. NULL on error, message in err.
 * Unlike sqlite, apply() may run in several processes (or stores) at once. */
store *pg_store_open(const char *url, const store_rules *rules, char *err, size_t errlen);

#endif
