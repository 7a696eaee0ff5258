#include "core/error.h"

const char *md_strerror(int err)
{
    switch (err) {
    case MD_OK: return "ok";
    case MD_ERR_NOMEM: return "out of memory";
    case MD_ERR_INVALID: return "invalid input";
    case MD_ERR_IO: return "i/o error";
    case MD_ERR_CORRUPT: return "corrupt data";
    case MD_ERR_FULL: return "over budget, retry later";
    case MD_ERR_CLOSED: return "shutting down";
    case MD_ERR_NOTFOUND: return "not found";
    case MD_ERR_STORE: return "store error";
    case MD_ERR_TIMEOUT: return "timed out";
    }
    return "unknown error";
}
