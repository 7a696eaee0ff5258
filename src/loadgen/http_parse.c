/* HTTP/1.1 response parsing for the load generator (RFC 9112 subset meterd produces). */
#include "loadgen/http_parse.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int fail(lg_http_resp *r, const char *why)
{
    snprintf(r->err, sizeof r->err, "%s", why);
    return MD_ERR_INVALID;
}

void lg_http_resp_reset(lg_http_resp *r)
{
    r->status = r->minor = 0;
    r->keep_alive = 1;
    r->content_length = -1;
    r->body_seen = 0;
    r->retry_after = -1;
    r->head_done = 0;
    r->head_len = 0;
    r->body_len = 0;
    r->err[0] = '\0';
}

void lg_http_resp_free(lg_http_resp *r)
{
    free(r->body);
    r->body = NULL;
    r->body_cap = r->body_len = 0;
}

/* Parses a non-negative decimal of at most 18 digits spanning [s, e); -1 otherwise. */
static int64_t parse_uint(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    if (s == e || e - s > 18) return -1;
    int64_t n = 0;
    for (; s < e; s++) {
        if (*s < '0' || *s > '9') return -1;
        n = n * 10 + (*s - '0');
    }
    return n;
}

/* Whether the value [s, e) contains the comma-separated token tok (case-insensitive). */
static int has_token(const char *s, const char *e, const char *tok)
{
    size_t n = strlen(tok);
    while (s < e) {
        while (s < e && (*s == ' ' || *s == '\t' || *s == ','))
            s++;
        const char *t = s;
        while (t < e && *t != ',')
            t++;
        const char *te = t;
        while (te > s && (te[-1] == ' ' || te[-1] == '\t'))
            te--;
        if ((size_t)(te - s) == n && !strncasecmp(s, tok, n)) return 1;
        s = t;
    }
    return 0;
}

static int header(lg_http_resp *r, const char *name, size_t nlen, const char *v, const char *ve)
{
#define IS(lit) (nlen == sizeof(lit) - 1 && !strncasecmp(name, lit, nlen))
    if (IS("content-length")) {
        int64_t n = parse_uint(v, ve);
        if (n < 0) return fail(r, "bad Content-Length");
        if (r->content_length >= 0 && r->content_length != n)
            return fail(r, "conflicting Content-Length headers");
        r->content_length = n;
    } else if (IS("transfer-encoding")) {
        return fail(r, "Transfer-Encoding is not supported");
    } else if (IS("connection")) {
        if (has_token(v, ve, "close")) r->keep_alive = 0;
        else if (has_token(v, ve, "keep-alive")) r->keep_alive = 1;
    } else if (IS("retry-after")) {
        int64_t n = parse_uint(v, ve);
        r->retry_after = n >= 0 && n < 86400 ? (int)n : -1;
    }
#undef IS
    return MD_OK;
}

/* Parses the complete head (status line + headers, CRLF CRLF included) in r->head. */
static int parse_head(lg_http_resp *r)
{
    const char *p = r->head, *end = r->head + r->head_len;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol || eol == p || eol[-1] != '\r') return fail(r, "status line not ended by CRLF");
    /* "HTTP/1.x SSS[ reason]" */
    if (eol - p < 12 || memcmp(p, "HTTP/1.", 7) || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return fail(r, "bad status line");
    r->minor = p[7] - '0';
    if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
        return fail(r, "bad status code");
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (eol - p > 13 && p[12] != ' ') return fail(r, "bad status line");
    if (eol - p == 13 && p[12] != '\r') return fail(r, "bad status line");
    if (r->minor == 0) r->keep_alive = 0;
    for (p = eol + 1; p < end;) {
        eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol || eol[-1] != '\r') return fail(r, "header line not ended by CRLF");
        const char *le = eol - 1; /* at the CR */
        if (le == p) break;        /* the empty line */
        if (*p == ' ' || *p == '\t') return fail(r, "obsolete header line folding");
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (!colon || colon == p) return fail(r, "header without a name");
        for (const char *c = p; c < colon; c++)
            if (*c <= ' ' || *c >= 127) return fail(r, "bad character in a header name");
        if (r->minor == 0 && (size_t)(colon - p) == 10 && !strncasecmp(p, "connection", 10) &&
            has_token(colon + 1, le, "keep-alive"))
            r->keep_alive = 1;
        else {
            int rc = header(r, p, (size_t)(colon - p), colon + 1, le);
            if (rc) return rc;
        }
        p = eol + 1;
    }
    int bodyless = r->status < 200 || r->status == 204 || r->status == 304;
    if (bodyless) {
        if (r->content_length > 0) return fail(r, "body on a status that has none");
        r->content_length = 0;
    } else if (r->content_length < 0) {
        return fail(r, "no Content-Length");
    }
    if (r->status < 200) return fail(r, "interim 1xx responses are not expected");
    return MD_OK;
}

static int keep(lg_http_resp *r, const char *buf, size_t n)
{
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1)
            cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return MD_ERR_NOMEM;
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, buf, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
    return MD_OK;
}

int lg_http_resp_feed(lg_http_resp *r, const char *buf, size_t len, size_t *used)
{
    size_t i = 0;
    *used = 0;
    if (!r->head_done) {
        /* Copy byte by byte until the blank line, so a split anywhere is fine. */
        while (i < len) {
            if (r->head_len >= sizeof r->head) return fail(r, "header block too large");
            char c = buf[i++];
            r->head[r->head_len++] = c;
            if (c == '\n' && r->head_len >= 4 && !memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4))
                break;
        }
        if (r->head_len < 4 || memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4)) {
            *used = i;
            return LG_HTTP_MORE;
        }
        int rc = parse_head(r);
        if (rc) return rc;
        r->head_done = 1;
        if (r->keep_body && keep(r, "", 0)) return MD_ERR_NOMEM;
    }
    size_t want = (size_t)(r->content_length - r->body_seen);
    size_t n = len - i < want ? len - i : want;
    if (n && r->keep_body && keep(r, buf + i, n)) return MD_ERR_NOMEM;
    r->body_seen += (int64_t)n;
    i += n;
    *used = i;
    return r->body_seen == r->content_length ? LG_HTTP_DONE : LG_HTTP_MORE;
}
