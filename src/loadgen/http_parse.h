/* Incremental HTTP/1.1 response parser for the load generator: status line, headers,
 * Content-Length bodies (chunked is refused). Bytes may arrive split anywhere. */
#ifndef METERD_LOADGEN_HTTP_PARSE_H
#define METERD_LOADGEN_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define LG_HTTP_HEAD_MAX 8192 /* a larger header block is an error */

enum { LG_HTTP_MORE = 0, LG_HTTP_DONE = 1 }; /* errors are MD_ERR_INVALID / MD_ERR_NOMEM */

typedef struct lg_http_resp {
    int status;            /* 100..599 once the head is parsed */
    int minor;             /* HTTP/1.<minor> */
    int keep_alive;        /* 1 unless "Connection: close" or HTTP/1.0 without keep-alive */
    int64_t content_length;
    int64_t body_seen;
    int retry_after;       /* seconds from Retry-After, -1 when absent */
    int head_done;
    size_t head_len;
    char head[LG_HTTP_HEAD_MAX];
    int keep_body;         /* set by the caller: collect the body into body/body_len */
    char *body;            /* owned; NUL-terminated when kept */
    size_t body_len, body_cap;
    char err[96];          /* why the response was malformed */
} lg_http_resp;

/* Prepares r for a new response (keeps keep_body and the body buffer). */
void lg_http_resp_reset(lg_http_resp *r);
/* Frees the body buffer. */
void lg_http_resp_free(lg_http_resp *r);
/* Feeds len bytes; *used = bytes consumed (less than len only when DONE: the rest belongs
 * to the next response). Returns LG_HTTP_MORE, LG_HTTP_DONE, MD_ERR_INVALID (r->err says
 * why) or MD_ERR_NOMEM. */
int lg_http_resp_feed(lg_http_resp *r, const char *buf, size_t len, size_t *used);

#endif
