/* The WAL buffer shim (src/store/sqlite_vfs.c): a transaction's WAL reaches the file in a few
 * large writes instead of two per page, and what is committed is what every other connection
 * reads, before and after the files are reopened without the shim. Its writes go to the disk
 * as they are made, not all at the next fsync. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "store/sqlite_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The shim's sync_file_range() calls land here: this definition takes the place of libc's in
 * this test binary. fail_waits makes every wait report a write-back error, as a failing disk
 * would. */
static int fail_waits;
int sync_file_range(int fd, off64_t off, off64_t n, unsigned int flags)
{
    if (fail_waits && (flags & SYNC_FILE_RANGE_WAIT_AFTER)) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_sync_file_range, fd, off, n, flags);
}

typedef struct fx {
    char dir[64];
    char path[128];
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/meterd-vfs-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void exec_ok(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, msg ? msg : "?");
}

static sqlite3 *open_db(const char *path, const char *vfs)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                     SQLITE_OK);
    exec_ok(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                " PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = 2000;");
    return db;
}

static int64_t query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static void assert_integrity_ok(sqlite3 *db)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
}

/* Write syscalls of this process so far (/proc/self/io syscw: write, pwrite, ...). */
static long syscw(void)
{
    FILE *fp = fopen("/proc/self/io", "r");
    assert_non_null(fp);
    char line[128];
    long v = -1;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "syscw: %ld", &v) == 1) break;
    fclose(fp);
    assert_true(v >= 0);
    return v;
}

/* Write syscalls of one transaction of 1,000 rows of ~3 KB (about a page each). */
static long writes_of_a_transaction(const char *path, const char *vfs)
{
    sqlite3 *db = open_db(path, vfs);
    exec_ok(db, "CREATE TABLE IF NOT EXISTS t(x BLOB)");
    long before = syscw();
    exec_ok(db, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
                " INSERT INTO t SELECT randomblob(3000) FROM n; COMMIT;");
    long n = syscw() - before;
    sqlite3_close(db);
    return n;
}

static void a_transaction_reaches_the_wal_in_a_few_writes(void **state)
{
    fx *f = *state;
    const char *vfs = sqlite_wal_buffer_vfs();
    assert_non_null(vfs);
    char other[160];
    snprintf(other, sizeof other, "%s/plain.db", f->dir);
    long plain = writes_of_a_transaction(other, NULL);
    long shim = writes_of_a_transaction(f->path, vfs);
    /* two per page without the shim; ~4 MB in 64 KiB writes with it */
    print_message("write syscalls of the transaction: %ld without the shim, %ld with it\n", plain,
                  shim);
    assert_true(plain >= 2000);
    if (shim * 10 > plain) fail_msg("%ld write syscalls with the shim, %ld without", shim, plain);
}

/* After every commit a reader on the default VFS sees exactly the committed rows. */
static void readers_see_every_commit_and_the_files_reopen_without_the_shim(void **state)
{
    fx *f = *state;
    sqlite3 *w = open_db(f->path, sqlite_wal_buffer_vfs());
    exec_ok(w, "CREATE TABLE t(i INTEGER PRIMARY KEY, x BLOB)");
    sqlite3 *r = open_db(f->path, NULL);
    for (int round = 0; round < 20; round++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)"
                 " INSERT INTO t(x) SELECT zeroblob(500 + %d * 10 + i) FROM n; COMMIT;",
                 round);
        exec_ok(w, sql);
        assert_int_equal(query_int(r, "SELECT count(*) FROM t"), (round + 1) * 100);
    }
    int64_t bytes = query_int(r, "SELECT sum(length(x)) FROM t");
    sqlite3_close(r);
    sqlite3_close(w);
    sqlite3 *again = open_db(f->path, NULL);
    assert_int_equal(query_int(again, "SELECT count(*) FROM t"), 2000);
    assert_int_equal(query_int(again, "SELECT sum(length(x)) FROM t"), bytes);
    assert_integrity_ok(again);
    sqlite3_close(again);
}

/* 20 MB in one transaction: more than the buffer and than the page cache, so SQLite spills
 * pages to the WAL mid-transaction and reads them back; then a checkpoint reads the WAL. A
 * rolled-back transaction of the same size leaves nothing. */
static void large_transactions_rollbacks_and_checkpoints_stay_consistent(void **state)
{
    fx *f = *state;
    sqlite3 *w = open_db(f->path, sqlite_wal_buffer_vfs());
    exec_ok(w, "CREATE TABLE t(i INTEGER PRIMARY KEY, x BLOB);"
               " BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
               " INSERT INTO t(x) SELECT randomblob(4000) FROM n; COMMIT;");
    exec_ok(w, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
               " INSERT INTO t(x) SELECT randomblob(4000) FROM n;"
               " UPDATE t SET x = zeroblob(10) WHERE i <= 100; ROLLBACK;");
    assert_int_equal(query_int(w, "SELECT count(*) FROM t"), 5000);
    assert_int_equal(query_int(w, "SELECT count(*) FROM t WHERE length(x) = 4000"), 5000);
    exec_ok(w, "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(w);
    sqlite3 *again = open_db(f->path, NULL);
    assert_int_equal(query_int(again, "SELECT count(*) FROM t WHERE length(x) = 4000"), 5000);
    sqlite3_close(again);
}

/* Bytes of path in the page cache not yet on the device (dirty or being written), from
 * cachestat(2) (Linux 6.5); -1 when the kernel has no cachestat. */
static long long unwritten_bytes(const char *path)
{
    struct {
        uint64_t off, len;
    } range = {0, 0}; /* len 0: to the end of the file */
    struct {
        uint64_t cache, dirty, writeback, evicted, recently_evicted;
    } cs = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    long rc = syscall(451 /* __NR_cachestat */, fd, &range, &cs, 0);
    int e = errno;
    close(fd);
    if (rc != 0 && (e == ENOSYS || e == EPERM)) return -1;
    assert_int_equal(rc, 0);
    return (long long)(cs.dirty + cs.writeback) * sysconf(_SC_PAGESIZE);
}

/* 20 MB in one transaction, then the checkpoint on close, both with synchronous=OFF so that
 * nothing is synced: what is still unwritten in the WAL after the transaction, and in the
 * database after the checkpoint. */
static void unwritten_after_transaction_and_checkpoint(const char *path, const char *vfs,
                                                       long long *wal, long long *db)
{
    sqlite3 *c = open_db(path, vfs);
    exec_ok(c, "PRAGMA synchronous = OFF; CREATE TABLE t(i INTEGER PRIMARY KEY, x BLOB);"
               " BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)"
               " INSERT INTO t(x) SELECT randomblob(4000) FROM n; COMMIT;");
    char wal_path[200];
    snprintf(wal_path, sizeof wal_path, "%s-wal", path);
    *wal = unwritten_bytes(wal_path);
    sqlite3_close(c); /* the last connection checkpoints the WAL into the database */
    *db = unwritten_bytes(path);
}

/* Every 256 KiB the shim starts writing back and waits for the 256 KiB before: a
 * transaction's WAL and a checkpoint never sit in the page cache for the next fsync to push
 * out at once (the queue's fsyncs waited behind that, decision 35). */
static void writes_reach_the_disk_as_they_are_made(void **state)
{
    fx *f = *state;
    char plain[160];
    snprintf(plain, sizeof plain, "%s/plain.db", f->dir);
    long long plain_wal, plain_db, wal, db;
    unwritten_after_transaction_and_checkpoint(plain, NULL, &plain_wal, &plain_db);
    unwritten_after_transaction_and_checkpoint(f->path, sqlite_wal_buffer_vfs(), &wal, &db);
    print_message("unwritten after 20 MB: WAL %lld B without the shim, %lld B with it; database "
                  "after the checkpoint %lld B without, %lld B with\n",
                  plain_wal, wal, plain_db, db);
    if (plain_wal < 0) skip(); /* no cachestat(2) in this kernel */
    /* the shim's bound: two steps in flight, the 64 KiB buffer, the WAL and page headers */
    assert_true(wal >= 0 && wal <= 1024 * 1024);
    assert_true(db >= 0 && db <= 1024 * 1024);
    /* and without it, unless this kernel wrote back on its own: the test can tell them apart */
    if (plain_wal < 10 * 1024 * 1024 || plain_db < 10 * 1024 * 1024)
        print_message("the kernel wrote back without the shim too: nothing to compare\n");
}

/* The kernel reports a write-back error once per open file, and here the shim's wait is the
 * one told: the transaction must fail all the same, and so must every later one, and a store
 * of this process must stop answering its ping (the worker then waits instead of retrying
 * and dead-lettering batches). */
static void a_write_back_error_fails_this_commit_and_every_later_one(void **state)
{
    fx *f = *state;
    char other[160];
    snprintf(other, sizeof other, "%s/store.db", f->dir);
    store_rules rules = {.max_future_us = 300000000};
    char err[256] = "";
    store *s = sqlite_store_open(other, &rules, err, sizeof err);
    if (!s) fail_msg("open: %s", err);
    assert_int_equal(s->ops->ping(s), MD_OK);

    sqlite3 *w = open_db(f->path, sqlite_wal_buffer_vfs());
    sqlite3_extended_result_codes(w, 1);
    exec_ok(w, "CREATE TABLE t(i INTEGER PRIMARY KEY, x BLOB); INSERT INTO t(x) VALUES (1);");
    unsigned failures = sqlite_wal_buffer_failures();
    fail_waits = 1;
    int rc = sqlite3_exec(w, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n"
                             " WHERE i < 1000) INSERT INTO t(x) SELECT randomblob(4000) FROM n;"
                             " COMMIT;", NULL, NULL, NULL);
    fail_waits = 0;
    assert_int_equal(rc, SQLITE_IOERR_FSYNC);
    assert_int_equal(sqlite_wal_buffer_failures(), failures + 1);
    sqlite3_exec(w, "ROLLBACK", NULL, NULL, NULL); /* if SQLite left it open */
    /* the disk "works" again, but what the kernel dropped cannot be trusted: still failing */
    assert_int_equal(sqlite3_exec(w, "INSERT INTO t(x) VALUES (2)", NULL, NULL, NULL),
                     SQLITE_IOERR_FSYNC);
    assert_int_equal(s->ops->ping(s), MD_ERR_STORE);
    sqlite3_close(w);
    s->ops->close(s);

    /* A commit whose sync failed has an unknown outcome (SQLite's contract): recovery keeps it
     * if its frames reached the file, as the small one's did here, since only the waits
     * "failed". The worker acks nothing that failed, and the queue redelivers it. What must
     * not happen is half a transaction, or the failed large one coming back. */
    sqlite3 *again = open_db(f->path, NULL);
    int64_t rows = query_int(again, "SELECT count(*) FROM t");
    if (rows != 1 && rows != 2) fail_msg("%lld rows after reopening", (long long)rows);
    assert_integrity_ok(again);
    sqlite3_close(again);
    s = sqlite_store_open(other, &rules, err, sizeof err); /* a restart starts afresh */
    if (!s) fail_msg("reopen: %s", err);
    assert_int_equal(s->ops->ping(s), MD_OK);
    s->ops->close(s);
}

int main(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(a_transaction_reaches_the_wal_in_a_few_writes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            readers_see_every_commit_and_the_files_reopen_without_the_shim, setup, teardown),
        cmocka_unit_test_setup_teardown(
            large_transactions_rollbacks_and_checkpoints_stay_consistent, setup, teardown),
        cmocka_unit_test_setup_teardown(writes_reach_the_disk_as_they_are_made, setup, teardown),
        cmocka_unit_test_setup_teardown(a_write_back_error_fails_this_commit_and_every_later_one,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
