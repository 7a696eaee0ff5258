/* The fast lane's request parser (http_fast.c): decides whether a peeked buffer starts with
 * one complete, plain HTTP/1.1 request it may serve, and splits it up in place. Pure: no I/O,
 * no allocation, so it is unit-tested and fuzzed on its own. */
#ifndef METERD_INGEST_HTTP_FAST_PARSE_H
#define METERD_INGEST_HTTP_FAST_PARSE_H

#include <stddef.h>
#include <stdint.h>

#define FAST_MAX_HEADERS 32

typedef struct fast_msg {
    const char *method, *target; /* NUL-terminated, inside the buffer */
    const char *hdr[FAST_MAX_HEADERS][2]; /* name, value (trimmed); NUL-terminated */
    size_t n_hdr;
    int close;          /* Connection: close */
    const char *body;   /* Content-Length bytes, not NUL-terminated */
    size_t body_len;
    size_t total;       /* bytes of the request, headers and body */
} fast_msg;

enum { FAST_MINE = 0, FAST_NOT_MINE = 1, FAST_MORE = 2 };

/* buf[0..n) is what the socket holds; buf[n] must be writable (a NUL goes there). FAST_MINE
 * when it starts with a complete request: request line `METHOD /path HTTP/1.1` with no query,
 * '%' or '#'; token header names; exactly one Host; one Content-Length of at most max_body;
 * no Transfer-Encoding, Expect or Upgrade; at most FAST_MAX_HEADERS headers. FAST_MORE when
 * the request is not complete yet but may still be: no blank line after the headers yet, or
 * headers that qualify with the body still short (method and target are then set). Anything
 * else is FAST_NOT_MINE (libmicrohttpd's to answer). The buffer is modified either way. */
int fast_parse(char *buf, size_t n, uint64_t max_body, fast_msg *m);

/* Case-insensitive match of one token in a comma-separated list (Connection: keep-alive, close). */
int fast_has_token(const char *list, const char *tok);

#endif
