/* The fast lane's request parser: see http_fast_parse.h. */
#include "ingest/http_fast_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

int fast_has_token(const char *list, const char *tok)
{
    size_t n = strlen(tok);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t')) t--;
        if ((size_t)(t - p) == n && strncasecmp(p, tok, n) == 0) return 1;
        p = e;
    }
    return 0;
}

static int is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static int all_tchars(const char *p, const char *end)
{
    if (p == end) return 0;
    for (; p < end; p++)
        if (!is_tchar((unsigned char)*p)) return 0;
    return 1;
}

/* One header line [p, eol): split in place and checked; updates what the lane cares about. */
static int header(char *p, char *eol, uint64_t max_body, fast_msg *m, int64_t *clen, int *host)
{
    char *colon = memchr(p, ':', (size_t)(eol - p));
    if (!colon || !all_tchars(p, colon) || m->n_hdr == FAST_MAX_HEADERS) return FAST_NOT_MINE;
    char *v = colon + 1, *ve = eol;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    for (char *t = v; t < ve; t++)
        if (((unsigned char)*t < ' ' && *t != '\t') || *t == 127) return FAST_NOT_MINE;
    *colon = '\0';
    *ve = '\0';
    m->hdr[m->n_hdr][0] = p;
    m->hdr[m->n_hdr][1] = v;
    m->n_hdr++;
    if (!strcasecmp(p, "Content-Length")) {
        size_t len = strlen(v);
        if (*clen >= 0 || len == 0 || len > 12 || strspn(v, "0123456789") != len)
            return FAST_NOT_MINE;
        *clen = strtoll(v, NULL, 10);
        if ((uint64_t)*clen > max_body) return FAST_NOT_MINE;
    } else if (!strcasecmp(p, "Transfer-Encoding") || !strcasecmp(p, "Expect") ||
               !strcasecmp(p, "Upgrade")) {
        return FAST_NOT_MINE;
    } else if (!strcasecmp(p, "Host")) {
        ++*host;
    } else if (!strcasecmp(p, "Connection") && fast_has_token(v, "close")) {
        m->close = 1;
    }
    return FAST_MINE;
}

int fast_parse(char *buf, size_t n, uint64_t max_body, fast_msg *m)
{
    memset(m, 0, sizeof *m);
    buf[n] = '\0';
    char *end = strstr(buf, "\r\n\r\n"); /* stops at a NUL: such a request is not ours */
    if (!end) return strlen(buf) == n ? FAST_MORE : FAST_NOT_MINE;
    /* request line: METHOD SP /path SP HTTP/1.1 CRLF */
    char *p = buf, *sp = strchr(p, ' ');
    if (!sp || sp > end || !all_tchars(p, sp)) return FAST_NOT_MINE;
    *sp = '\0';
    m->method = p;
    p = sp + 1;
    if (*p != '/' || !(sp = strchr(p, ' ')) || sp > end) return FAST_NOT_MINE;
    for (char *t = p; t < sp; t++)
        if ((unsigned char)*t <= ' ' || (unsigned char)*t >= 127 || strchr("?%#", *t))
            return FAST_NOT_MINE;
    *sp = '\0';
    m->target = p;
    p = sp + 1;
    if (p + 10 > end + 2 || memcmp(p, "HTTP/1.1\r\n", 10) != 0) return FAST_NOT_MINE;
    p += 10;
    int64_t clen = -1;
    int host = 0;
    while (p < end + 2) {
        char *eol = strstr(p, "\r\n"); /* found: end is one */
        if (header(p, eol, max_body, m, &clen, &host)) return FAST_NOT_MINE;
        p = eol + 2;
    }
    if (clen < 0 || host != 1) return FAST_NOT_MINE;
    size_t head = (size_t)(end + 4 - buf);
    if ((uint64_t)clen > n - head) return FAST_MORE;
    m->body = end + 4;
    m->body_len = (size_t)clen;
    m->total = head + (size_t)clen;
    return FAST_MINE;
}
