/* "meterd-wal-buffer": a VFS shim over SQLite's default VFS for the worker's connection.
 *
 * SQLite appends a transaction to its WAL one frame at a time, with two pwrite()s per frame
 * (a 24-byte header, then the page): ~6,000 syscalls for a transaction of 3,000 dirty pages,
 * about a tenth of the worker's time in this paravirtualised guest (docs/decisions.md 32).
 * Here consecutive writes to the WAL file are gathered in a buffer and reach the file in one
 * write when the buffer is full or the run ends: at the next sync, read, size query,
 * truncation, file control, close, or write elsewhere in the file. Every other file, and every
 * other call, goes straight through.
 *
 * Safe only because the connection runs with synchronous=FULL: SQLite then syncs the WAL
 * before it publishes the new frames in the wal-index, so no other connection can look for a
 * frame that is still in this buffer, and a commit is on disk when it returns, as before. A
 * crash loses only what SQLite had not synced yet, as without the shim.
 *
 * It also paces the connection's writes to the disk, WAL and database file alike (decision
 * 35): every WB_PACE_BYTES written, sync_file_range() starts writing them back and waits for
 * the previous WB_PACE_BYTES, so at most two of those are ever in flight. Without it a
 * transaction's WAL (megabytes) or a checkpoint (tens of megabytes) went to the device all at
 * once at the fsync, and the queue's fdatasync, which every acknowledgement waits for, waited
 * behind it. Durability is unchanged: SQLite still syncs where it did. A write-back error seen
 * while waiting is kept and fails every later sync of the file, because the kernel reports it
 * only once per open file and SQLite's own fsync would no longer see it. */
#include "store/sqlite_int.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bytes gathered at most before a write. SQLite's unix VFS cannot write more than 128 KiB in
 * one call (its seekAndWrite() masks the length with 0x1ffff: a 1 MiB write failed as
 * SQLITE_FULL), so 64 KiB, about 16 frames per syscall instead of 2 syscalls per frame. */
#define WB_CAP (64 * 1024)

/* Write-back pacing step: at most two of these are in flight to the device at once. From 64 KiB
 * to 512 KiB the acknowledgement latency was the same; below 256 KiB the worker drained slower,
 * the write-back being started from its own thread more often (decision 35). */
#define WB_PACE_BYTES (256 * 1024)

typedef struct wb_file {
    sqlite3_file base;   /* pMethods: one of wb_methods */
    sqlite3_file *real;  /* the default VFS's file, allocated right after this struct */
    int wal;             /* the WAL file: its writes are gathered */
    unsigned char *buf;  /* WAL only, owned: pending bytes for [off, off + len) */
    sqlite3_int64 off;
    int len;
    int fd;                  /* the real file's descriptor for sync_file_range; -1: not paced */
    sqlite3_int64 lo, hi;    /* span of the writes since the last kick (none when hi == 0) */
    sqlite3_int64 klo, khi;  /* span kicked and not waited for yet (none when khi == 0) */
    sqlite3_int64 unkicked;  /* bytes written since the last kick */
    int wb_errno;            /* a write-back error seen while pacing: every later sync fails */
} wb_file;
/* the real file lives right after it: aligned as SQLite aligns its own file objects */
_Static_assert(sizeof(wb_file) % 8 == 0, "wb_file must keep the real file 8-byte aligned");

static sqlite3_vfs *orig; /* the default VFS */
static atomic_uint wb_failures; /* files whose write-back failed while pacing */

#define REAL(f) (((wb_file *)(f))->real)
#define RM(f) (REAL(f)->pMethods)

/* Errors that say the descriptor cannot be paced at all (not write-back errors). */
static int not_pacable(int e) { return e == EBADF || e == EINVAL || e == ESPIPE || e == ENOSYS; }

/* Waits for the previous kick, then starts write-back of what was written since (see the top
 * of the file). Called after every successful write of [off, off + amt). */
static void pace(wb_file *f, sqlite3_int64 off, int amt)
{
    if (f->fd < 0 || amt <= 0) return;
    if (f->hi == 0) {
        f->lo = off;
        f->hi = off + amt;
    } else {
        if (off < f->lo) f->lo = off;
        if (off + amt > f->hi) f->hi = off + amt;
    }
    f->unkicked += amt;
    if (f->unkicked < WB_PACE_BYTES) return;
    if (f->khi && sync_file_range(f->fd, f->klo, f->khi - f->klo,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER) != 0) {
        if (not_pacable(errno)) {
            f->fd = -1;
            return;
        }
        if (!f->wb_errno) { /* EIO, ENOSPC...: the kernel told only us */
            f->wb_errno = errno;
            atomic_fetch_add(&wb_failures, 1);
            log_error("sqlite_writeback", "writing the store's %s back failed: %s; every "
                      "later commit fails", f->wal ? "WAL" : "database", strerror(errno));
        }
    }
    /* starting write-back reports no write-back error, and one that fails harms nothing */
    if (sync_file_range(f->fd, f->lo, f->hi - f->lo, SYNC_FILE_RANGE_WRITE) != 0 &&
        not_pacable(errno)) {
        f->fd = -1;
        return;
    }
    f->klo = f->lo;
    f->khi = f->hi;
    f->hi = f->unkicked = 0;
}

/* The unix VFS keeps the descriptor right after three pointers (struct unixFile in sqlite3.c,
 * unchanged since 3.7). Used only when that descriptor is this very file: same device and
 * inode as the name. Otherwise, or under another default VFS, writes are not paced. */
static int real_fd(const sqlite3_file *real, const char *name)
{
    struct unix_file_head {
        const void *methods, *vfs, *inode;
        int h;
    };
    struct stat a, b;
    if (!name || strncmp(orig->zName, "unix", 4) != 0) return -1;
    int h = ((const struct unix_file_head *)(const void *)real)->h;
    if (h < 0 || fstat(h, &a) != 0 || stat(name, &b) != 0) return -1;
    return a.st_dev == b.st_dev && a.st_ino == b.st_ino && S_ISREG(a.st_mode) ? h : -1;
}

/* Writes what is gathered. An error is returned by the call that caused the write (a sync,
 * a read...): SQLite then fails that transaction, as it would for the write itself. */
static int wb_flush(wb_file *f)
{
    if (!f->len) return SQLITE_OK;
    int rc = RM(f)->xWrite(f->real, f->buf, f->len, f->off);
    if (rc == SQLITE_OK) pace(f, f->off, f->len);
    f->len = 0;
    return rc;
}

static int wb_close(sqlite3_file *file)
{
    wb_file *f = (wb_file *)file;
    int rc = wb_flush(f);
    int rc2 = RM(f)->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *file, void *p, int amt, sqlite3_int64 off)
{
    int rc = wb_flush((wb_file *)file);
    return rc != SQLITE_OK ? rc : RM(file)->xRead(REAL(file), p, amt, off);
}

static int wb_write(sqlite3_file *file, const void *p, int amt, sqlite3_int64 off)
{
    wb_file *f = (wb_file *)file;
    if (!f->wal) {
        int rc = RM(f)->xWrite(f->real, p, amt, off);
        if (rc == SQLITE_OK) pace(f, off, amt);
        return rc;
    }
    if (f->len && off == f->off + f->len && amt <= WB_CAP - f->len) {
        memcpy(f->buf + f->len, p, (size_t)amt);
        f->len += amt;
        return SQLITE_OK;
    }
    int rc = wb_flush(f);
    if (rc != SQLITE_OK) return rc;
    if (!f->buf) f->buf = malloc(WB_CAP);
    if (!f->buf || amt > WB_CAP) {
        rc = RM(f)->xWrite(f->real, p, amt, off);
        if (rc == SQLITE_OK) pace(f, off, amt);
        return rc;
    }
    memcpy(f->buf, p, (size_t)amt);
    f->off = off;
    f->len = amt;
    return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    int rc = wb_flush((wb_file *)file);
    return rc != SQLITE_OK ? rc : RM(file)->xTruncate(REAL(file), size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
    wb_file *f = (wb_file *)file;
    int rc = wb_flush(f);
    if (rc != SQLITE_OK) return rc;
    if (f->wb_errno) return SQLITE_IOERR_FSYNC;
    rc = RM(f)->xSync(f->real, flags);
    if (rc == SQLITE_OK) f->hi = f->khi = f->unkicked = 0; /* all of it is on disk now */
    return rc;
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    int rc = wb_flush((wb_file *)file);
    return rc != SQLITE_OK ? rc : RM(file)->xFileSize(REAL(file), size);
}

static int wb_file_control(sqlite3_file *file, int op, void *arg)
{
    int rc = wb_flush((wb_file *)file);
    return rc != SQLITE_OK ? rc : RM(file)->xFileControl(REAL(file), op, arg);
}

/* The rest only forward. */
static int wb_lock(sqlite3_file *f, int l) { return RM(f)->xLock(REAL(f), l); }
static int wb_unlock(sqlite3_file *f, int l) { return RM(f)->xUnlock(REAL(f), l); }
static int wb_check_reserved(sqlite3_file *f, int *out)
{
    return RM(f)->xCheckReservedLock(REAL(f), out);
}
static int wb_sector_size(sqlite3_file *f) { return RM(f)->xSectorSize(REAL(f)); }
static int wb_device_chars(sqlite3_file *f) { return RM(f)->xDeviceCharacteristics(REAL(f)); }
static int wb_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp)
{
    return RM(f)->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int wb_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
    return RM(f)->xShmLock(REAL(f), off, n, flags);
}
static void wb_shm_barrier(sqlite3_file *f) { RM(f)->xShmBarrier(REAL(f)); }
static int wb_shm_unmap(sqlite3_file *f, int del) { return RM(f)->xShmUnmap(REAL(f), del); }
static int wb_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
    return RM(f)->xFetch(REAL(f), off, amt, pp);
}
static int wb_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
    return RM(f)->xUnfetch(REAL(f), off, p);
}

/* One method table per version of the real file's, so SQLite sees the same capabilities. */
#define WB_METHODS(v)                                                                            \
    {                                                                                            \
        .iVersion = (v), .xClose = wb_close, .xRead = wb_read, .xWrite = wb_write,               \
        .xTruncate = wb_truncate, .xSync = wb_sync, .xFileSize = wb_file_size,                   \
        .xLock = wb_lock, .xUnlock = wb_unlock, .xCheckReservedLock = wb_check_reserved,         \
        .xFileControl = wb_file_control, .xSectorSize = wb_sector_size,                          \
        .xDeviceCharacteristics = wb_device_chars, .xShmMap = (v) >= 2 ? wb_shm_map : NULL,      \
        .xShmLock = (v) >= 2 ? wb_shm_lock : NULL,                                               \
        .xShmBarrier = (v) >= 2 ? wb_shm_barrier : NULL,                                         \
        .xShmUnmap = (v) >= 2 ? wb_shm_unmap : NULL, .xFetch = (v) >= 3 ? wb_fetch : NULL,       \
        .xUnfetch = (v) >= 3 ? wb_unfetch : NULL,                                                \
    }
static const sqlite3_io_methods wb_methods[3] = {WB_METHODS(1), WB_METHODS(2), WB_METHODS(3)};

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags,
                   int *out_flags)
{
    (void)vfs;
    wb_file *f = (wb_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)(f + 1);
    int rc = orig->xOpen(orig, name, f->real, flags, out_flags);
    const sqlite3_io_methods *m = f->real->pMethods;
    if (rc != SQLITE_OK || !m) {
        if (m) m->xClose(f->real);
        f->base.pMethods = NULL; /* SQLite does not close a file whose open failed */
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    f->wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->fd = real_fd(f->real, name);
    f->base.pMethods = &wb_methods[(m->iVersion < 1 ? 1 : m->iVersion > 3 ? 3 : m->iVersion) - 1];
    return SQLITE_OK;
}

/* The VFS calls that are not about one file go to the default VFS. */
static int wb_delete(sqlite3_vfs *v, const char *n, int sync)
{
    (void)v;
    return orig->xDelete(orig, n, sync);
}
static int wb_access(sqlite3_vfs *v, const char *n, int flags, int *out)
{
    (void)v;
    return orig->xAccess(orig, n, flags, out);
}
static int wb_full_pathname(sqlite3_vfs *v, const char *n, int len, char *out)
{
    (void)v;
    return orig->xFullPathname(orig, n, len, out);
}
static void *wb_dlopen(sqlite3_vfs *v, const char *n)
{
    (void)v;
    return orig->xDlOpen(orig, n);
}
static void wb_dlerror(sqlite3_vfs *v, int len, char *out)
{
    (void)v;
    orig->xDlError(orig, len, out);
}
static void (*wb_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void)
{
    (void)v;
    return orig->xDlSym(orig, h, sym);
}
static void wb_dlclose(sqlite3_vfs *v, void *h)
{
    (void)v;
    orig->xDlClose(orig, h);
}
static int wb_randomness(sqlite3_vfs *v, int len, char *out)
{
    (void)v;
    return orig->xRandomness(orig, len, out);
}
static int wb_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return orig->xSleep(orig, us);
}
static int wb_current_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return orig->xCurrentTime(orig, out);
}
static int wb_last_error(sqlite3_vfs *v, int len, char *out)
{
    (void)v;
    return orig->xGetLastError(orig, len, out);
}
static int wb_current_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return orig->xCurrentTimeInt64(orig, out);
}

static sqlite3_vfs wb_vfs = {
    .iVersion = 2,
    .mxPathname = 0, /* set from the default VFS */
    .zName = SQLITE_WAL_BUFFER_VFS,
    .xOpen = wb_open,
    .xDelete = wb_delete,
    .xAccess = wb_access,
    .xFullPathname = wb_full_pathname,
    .xDlOpen = wb_dlopen,
    .xDlError = wb_dlerror,
    .xDlSym = wb_dlsym,
    .xDlClose = wb_dlclose,
    .xRandomness = wb_randomness,
    .xSleep = wb_sleep,
    .xCurrentTime = wb_current_time,
    .xGetLastError = wb_last_error,
    .xCurrentTimeInt64 = wb_current_time64,
};

static int registered = SQLITE_ERROR;

static void register_vfs(void)
{
    orig = sqlite3_vfs_find(NULL);
    if (!orig || orig->iVersion < 2 || !orig->xCurrentTimeInt64) return;
    wb_vfs.szOsFile = (int)sizeof(wb_file) + orig->szOsFile;
    wb_vfs.mxPathname = orig->mxPathname;
    registered = sqlite3_vfs_register(&wb_vfs, 0);
}

unsigned sqlite_wal_buffer_failures(void) { return atomic_load(&wb_failures); }

const char *sqlite_wal_buffer_vfs(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_vfs);
    return registered == SQLITE_OK ? SQLITE_WAL_BUFFER_VFS : NULL;
}
