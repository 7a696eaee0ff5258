/* One error convention for meterd: 0 on success, a negative md_err otherwise. */
#ifndef METERD_CORE_ERROR_H
#define METERD_CORE_ERROR_H

typedef enum md_err {
    MD_OK = 0,
    MD_ERR_NOMEM = -1,    /* an allocation failed */
    MD_ERR_INVALID = -2,  /* bad input; the message buffer says what and where */
    MD_ERR_IO = -3,       /* a system call failed; errno-based message */
    MD_ERR_CORRUPT = -4,  /* stored data failed its checksum or could not be decoded */
    MD_ERR_FULL = -5,     /* over a budget (backpressure): retry later */
    MD_ERR_CLOSED = -6,   /* the component is shutting down */
    MD_ERR_NOTFOUND = -7, /* no such item */
    MD_ERR_STORE = -8,    /* the store failed (SQL error) */
    MD_ERR_TIMEOUT = -9,  /* nothing happened within the time given */
} md_err;

/* Returns a static, human-readable name for an md_err code. */
const char *md_strerror(int err);

#endif
