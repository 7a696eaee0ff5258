/* SQLite store backend (WAL mode). */
#ifndef METERD_STORE_SQLITE_H
#define METERD_STORE_SQLITE_H

#include "store/store.h"

/* Opens (creating or migrating) the database at path. NULL on error, message in err. */
store *sqlite_store_open(const char *path, const store_rules *rules, char *err, size_t errlen);

#endif
