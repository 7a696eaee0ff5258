/* libFuzzer target: the fast lane's request parser (src/ingest/http_fast_parse.c). The input is
 * the socket's bytes, copied into a buffer of exactly size + 1 so ASan sees any access past
 * buf[n]. A request taken must keep everything the header promises; the result must not
 * depend on the run, on the bytes after the request, or on max_body beyond its one limit. */
#include "ingest/http_fast_parse.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_BODY (1u << 20)

/* Parses a fresh copy of data[0..n); *out keeps the (modified) buffer. */
static int parse_copy(const uint8_t *data, size_t n, uint64_t max_body, fast_msg *m, char **out)
{
    char *buf = malloc(n + 1);
    if (!buf) abort();
    if (n) memcpy(buf, data, n);
    int rc = fast_parse(buf, n, max_body, m);
    if (rc != FAST_MINE && rc != FAST_NOT_MINE && rc != FAST_MORE) abort();
    *out = buf;
    return rc;
}

/* p is inside buf[0..n] and a NUL follows it there; returns its length. */
static size_t check_str(const char *buf, size_t n, const char *p)
{
    if (!p || p < buf || p > buf + n) abort();
    const char *nul = memchr(p, '\0', (size_t)(buf + n + 1 - p));
    if (!nul) abort();
    return (size_t)(nul - p);
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Recomputed from the parsed headers, independently of the parser. */
static int list_has_close(const char *v)
{
    for (;;) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        if (!*v) return 0;
        size_t len = strcspn(v, ",");
        size_t t = len;
        while (t && (v[t - 1] == ' ' || v[t - 1] == '\t'))
            t--;
        if (t == 5 && !strncasecmp(v, "close", 5)) return 1;
        v += len;
    }
}

static void check_mine(const char *buf, size_t n, const fast_msg *m, uint64_t max_body)
{
    if (m->total > n || m->total == 0) abort();
    if (!m->body || m->body < buf || m->body + m->body_len != buf + m->total) abort();
    if (m->body_len > max_body) abort();

    size_t ml = check_str(buf, n, m->method);
    if (m->method != buf || ml == 0) abort();
    for (size_t i = 0; i < ml; i++)
        if (!is_tchar((unsigned char)m->method[i])) abort();
    size_t tl = check_str(buf, n, m->target);
    if (m->target[0] != '/') abort();
    for (size_t i = 0; i < tl; i++) {
        unsigned char ch = (unsigned char)m->target[i];
        if (ch <= 0x20 || ch == '?' || ch == '%' || ch == '#') abort();
    }
    if (m->target + tl >= m->body) abort();

    if (m->n_hdr > FAST_MAX_HEADERS) abort();
    int hosts = 0, lengths = 0, close = 0;
    for (size_t i = 0; i < m->n_hdr; i++) {
        const char *name = m->hdr[i][0], *value = m->hdr[i][1];
        size_t nl = check_str(buf, n, name), vl = check_str(buf, n, value);
        if (name + nl >= m->body || value + vl >= m->body) abort(); /* in the head */
        if (nl == 0) abort();
        for (size_t j = 0; j < nl; j++)
            if (!is_tchar((unsigned char)name[j])) abort();
        for (size_t j = 0; j < vl; j++) {
            unsigned char ch = (unsigned char)value[j];
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f) abort();
        }
        if (vl &&
            (value[0] == ' ' || value[0] == '\t' || value[vl - 1] == ' ' || value[vl - 1] == '\t'))
            abort(); /* not trimmed */
        if (!strcasecmp(name, "Host")) hosts++;
        if (!strcasecmp(name, "Transfer-Encoding") || !strcasecmp(name, "Expect") ||
            !strcasecmp(name, "Upgrade"))
            abort();
        if (!strcasecmp(name, "Connection") && list_has_close(value)) close = 1;
        if (!strcasecmp(name, "Content-Length")) {
            lengths++;
            if (vl == 0 || strspn(value, "0123456789") != vl) abort();
            uint64_t v = 0;
            for (size_t j = 0; j < vl; j++) {
                if (v > (UINT64_MAX - 9) / 10) abort(); /* taken, yet not a sane number */
                v = v * 10 + (uint64_t)(value[j] - '0');
            }
            if (v != m->body_len) abort();
        }
    }
    if (hosts != 1 || lengths != 1) abort();
    if (close != m->close) abort();
}

/* Same outcome, same offsets, same strings, same modified buffer. */
static void check_same(const char *a, const fast_msg *ma, const char *b, const fast_msg *mb)
{
#define SAME_PTR(x, y) ((x)-a == (y)-b)
    if (!SAME_PTR(ma->method, mb->method) || !SAME_PTR(ma->target, mb->target) ||
        !SAME_PTR(ma->body, mb->body) || ma->n_hdr != mb->n_hdr || ma->close != mb->close ||
        ma->body_len != mb->body_len || ma->total != mb->total)
        abort();
    for (size_t i = 0; i < ma->n_hdr; i++)
        if (!SAME_PTR(ma->hdr[i][0], mb->hdr[i][0]) || !SAME_PTR(ma->hdr[i][1], mb->hdr[i][1]))
            abort();
    if (memcmp(a, b, (size_t)(ma->body - a))) abort(); /* the head, split in place */
#undef SAME_PTR
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fast_msg m, m2;
    char *buf, *buf2;
    int rc = parse_copy(data, size, MAX_BODY, &m, &buf);

    /* determinism: a second copy parses the same way */
    int rc2 = parse_copy(data, size, MAX_BODY, &m2, &buf2);
    if (rc != rc2) abort();
    if (rc == FAST_MINE)
        check_same(buf, &m, buf2, &m2);
    else if (memcmp(buf, buf2, size + 1))
        abort();
    free(buf2);

    if (rc == FAST_MINE) {
        check_mine(buf, size, &m, MAX_BODY);
        /* the request alone parses the same; one byte less is not complete yet */
        if (parse_copy(data, m.total, MAX_BODY, &m2, &buf2) != FAST_MINE) abort();
        check_same(buf, &m, buf2, &m2);
        free(buf2);
        if (parse_copy(data, m.total - 1, MAX_BODY, &m2, &buf2) != FAST_MORE) abort();
        free(buf2);
        /* max_body is the only thing a smaller limit changes */
        if (parse_copy(data, size, m.body_len, &m2, &buf2) != FAST_MINE) abort();
        check_same(buf, &m, buf2, &m2);
        free(buf2);
        if (m.body_len) {
            if (parse_copy(data, size, m.body_len - 1, &m2, &buf2) != FAST_NOT_MINE) abort();
            free(buf2);
        }
    }
    free(buf);
    return 0;
}
