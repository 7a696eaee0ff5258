/* libFuzzer target: the load generator's HTTP/1.1 response parser (src/loadgen/http_parse.c).
 * The first byte picks a split point; the rest is fed once whole and once in two pieces
 * (plus leftovers fed as the next keep-alive response). Both ways must agree, consume no
 * more than given, and a complete response must have a sane status and its whole body. */
#include "core/error.h"
#include "loadgen/http_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static lg_http_resp whole, split;

/* Feeds data as back-to-back responses; returns the last result and the responses seen. */
static int feed(lg_http_resp *r, const uint8_t *data, size_t len, size_t cut, int *responses)
{
    const char *p = (const char *)data;
    size_t off = 0;
    int rc = LG_HTTP_MORE;
    *responses = 0;
    lg_http_resp_reset(r);
    while (off < len) {
        size_t end = off < cut && cut < len ? cut : len, used = 0;
        rc = lg_http_resp_feed(r, p + off, end - off, &used);
        if (used > end - off) abort();
        if (rc == LG_HTTP_MORE && used != end - off) abort(); /* MORE takes everything */
        off += used;
        if (rc < 0) return rc;
        if (rc == LG_HTTP_DONE) {
            if (r->status < 200 || r->status > 599) abort();
            if (r->body_seen != r->content_length) abort();
            if (r->keep_body && (r->body_len != (size_t)r->content_length || r->body[r->body_len]))
                abort();
            if (++*responses > 64) break;
            lg_http_resp_reset(r);
            rc = LG_HTTP_MORE;
        }
    }
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    size_t cut = data[0];
    data++;
    size--;
    whole.keep_body = 1;
    split.keep_body = size & 1; /* also run the path that discards the body */
    int n1, n2;
    int a = feed(&whole, data, size, SIZE_MAX, &n1);
    int b = feed(&split, data, size, cut, &n2);
    if (a != b || n1 != n2) abort();
    return 0;
}
