/* POST /api/v1/readings without a DOM: one pass over the body straight into the batch.
 *
 * It accepts only what the jansson decoder (canonical_json.c) accepts, with the same strings
 * and the same doubles, and answers "not handled" for everything else: any error, a key it
 * cannot compare cheaply (escaped unknown keys, more than MAX_KEYS unknown keys in one
 * object), nesting deeper than MAX_DEPTH, numbers too long for its buffers. The jansson
 * decoder then gives the verdict and the message, so errors stay exactly as they were.
 * tests/unit/ingest/test_canonical_json_fast.c and tests/fuzz/fuzz_canonical_json_fast.c
 * compare both halves. */
#include "ingest/canonical_json_fast.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/json_util.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 32 /* jansson allows 2048 */
#define MAX_KEYS 16  /* unknown keys per object, checked for duplicates pairwise */

typedef struct parser {
    const char *p, *end; /* borrowed: the body */
} parser;

typedef struct span {
    const char *s; /* borrowed: the body or a decode buffer; NULL for an escaped string
                    * scanned without a buffer */
    size_t len;
} span;

typedef struct number {
    bool is_int;
    int64_t i;
    double d;
} number;

/* Decode buffers for the escaped strings of one reading (unescaped ones stay in the body). */
typedef struct reading_bufs {
    char key[16]; /* every known key is shorter; a longer escaped key is not handled */
    char device[INGEST_DEVICE_MAX], metric[INGEST_METRIC_MAX], site[INGEST_SITE_MAX];
    char ts[64]; /* longer than any valid RFC 3339 time */
    char kind[8];
} reading_bufs;

/* Unknown keys of one object: jansson rejects duplicates anywhere in the document. */
typedef struct keyset {
    span k[MAX_KEYS];
    unsigned n;
} keyset;

static inline bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* The next byte after JSON whitespace (consumed), or -1 at the end. */
static inline int peek(parser *ps)
{
    const char *p = ps->p;
    while (p < ps->end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    ps->p = p;
    return p < ps->end ? (unsigned char)*p : -1;
}

static inline bool eat(parser *ps, int c)
{
    if (peek(ps) != c) return false;
    ps->p++;
    return true;
}

/* Appends n bytes at out[*o]; buf NULL only counts. False when they do not fit in cap. */
static inline bool put(char *buf, size_t cap, size_t *o, const char *src, size_t n)
{
    if (n > cap - *o) return false;
    if (buf) memcpy(buf + *o, src, n);
    *o += n;
    return true;
}

/* The value of 4 hex digits at p, or -1. */
static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return -1;
    }
    return v;
}

static size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Decodes the escape at *pp ('\\'); false for what jansson rejects: unknown escapes, bad hex,
 * lone or mismatched surrogates, and \u0000 (no JSON_ALLOW_NUL). */
static bool unescape(const char **pp, const char *end, char *buf, size_t cap, size_t *o)
{
    const char *p = *pp;
    char c;
    if (end - p < 2) return false;
    switch (p[1]) {
    case '"':
    case '\\':
    case '/': c = p[1]; break;
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;
    case 'u': {
        if (end - p < 6) return false;
        int cp = hex4(p + 2);
        if (cp < 0) return false;
        p += 6;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return false;
            int lo = hex4(p + 2);
            if (lo < 0xdc00 || lo > 0xdfff) return false;
            cp = ((cp - 0xd800) << 10) + (lo - 0xdc00) + 0x10000;
            p += 6;
        } else if ((cp >= 0xdc00 && cp <= 0xdfff) || cp == 0) {
            return false;
        }
        char u[4];
        *pp = p;
        return put(buf, cap, o, u, utf8_encode((uint32_t)cp, u));
    }
    default: return false;
    }
    *pp = p + 2;
    return put(buf, cap, o, &c, 1);
}

/* Scans the string whose opening quote is at ps->p. A string without escapes is returned as
 * a slice of the body; one with escapes is decoded into buf (cap bytes; buf NULL: validated
 * only and out->s NULL). False for invalid strings (control bytes, bad UTF-8, bad escapes)
 * and for a decoded string longer than cap. */
static bool scan_string(parser *ps, char *buf, size_t cap, span *out)
{
    const char *p = ps->p + 1, *end = ps->end, *start = p;
    /* 8 bytes at a time up to the first byte that needs a look: '"', '\\', < 0x20, >= 0x80
     * (the borrow tricks can only misfire above a real hit, and the lowest hit is taken). */
    const uint64_t ones = UINT64_C(0x0101010101010101), high = ones << 7;
    while (end - p >= 8) {
        uint64_t x, q, bs;
        memcpy(&x, p, 8);
        q = x ^ (ones * '"');
        bs = x ^ (ones * '\\');
        uint64_t hit =
            (((q - ones) & ~q) | ((bs - ones) & ~bs) | ((x - ones * 0x20) & ~x) | x) & high;
        if (hit) {
            p += __builtin_ctzll(hit) >> 3;
            break;
        }
        p += 8;
    }
    for (;;) {
        if (p >= end) return false;
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            out->s = start;
            out->len = (size_t)(p - start);
            ps->p = p + 1;
            return true;
        }
        if (c == '\\') break;
        if (c < 0x20) return false;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t n = ingest_utf8_seq((const unsigned char *)p, (size_t)(end - p));
        if (!n) return false;
        p += n;
    }
    size_t o = 0;
    if (!put(buf, cap, &o, start, (size_t)(p - start))) return false;
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"') {
            out->s = buf;
            out->len = o;
            ps->p = p + 1;
            return true;
        }
        if (c == '\\') {
            if (!unescape(&p, end, buf, cap, &o)) return false;
            continue;
        }
        if (c < 0x20) return false;
        size_t n = c < 0x80 ? 1 : ingest_utf8_seq((const unsigned char *)p, (size_t)(end - p));
        if (!n || !put(buf, cap, &o, p, n)) return false;
        p += n;
    }
    return false;
}

/* Powers of ten that a double holds exactly. */
static const double POW10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                               1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                               1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Scans a JSON number as jansson does: no fraction and no exponent is an integer (int64; more
 * than 18 digits is not handled here), anything else a real as strtod reads it, and a real
 * that overflows to infinity is an error. */
static bool scan_number(parser *ps, number *out)
{
    const char *p = ps->p, *end = ps->end, *start = p;
    bool neg = false, real = false, many = false;
    uint64_t m = 0; /* the significant digits, while there are at most 19 */
    int sig = 0, int_digits = 0, frac_digits = 0;
    int64_t ex = 0;

#define DIGIT(c)                                                                                 \
    do {                                                                                         \
        if (m || (c) != '0') {                                                                   \
            if (sig < 19) {                                                                      \
                m = m * 10 + (uint64_t)((c) - '0');                                              \
                sig++;                                                                           \
            } else {                                                                             \
                many = true;                                                                     \
            }                                                                                    \
        }                                                                                        \
    } while (0)

    if (p < end && *p == '-') {
        neg = true;
        p++;
    }
    if (p >= end || !is_digit(*p)) return false;
    if (*p == '0') {
        p++;
        int_digits = 1;
        if (p < end && is_digit(*p)) return false; /* leading zero */
    } else {
        while (p < end && is_digit(*p)) {
            DIGIT(*p);
            int_digits++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        real = true;
        p++;
        if (p >= end || !is_digit(*p)) return false;
        while (p < end && is_digit(*p)) {
            DIGIT(*p);
            frac_digits++;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        real = true;
        p++;
        bool eneg = false;
        if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
        if (p >= end || !is_digit(*p)) return false;
        while (p < end && is_digit(*p)) {
            if (ex < 100000) ex = ex * 10 + (*p - '0'); /* far past any double: strtod decides */
            p++;
        }
        if (eneg) ex = -ex;
    }
#undef DIGIT
    ps->p = p;

    if (!real) {
        if (int_digits > 18) return false;
        out->is_int = true;
        out->i = neg ? -(int64_t)m : (int64_t)m;
        return true;
    }
    out->is_int = false;
#if FLT_EVAL_METHOD == 0
    /* Exact mantissa times an exact power of ten: one correctly rounded IEEE operation, the
     * same double glibc's strtod gives (Clinger's fast path). */
    int64_t e10 = ex - frac_digits;
    if (!many && m <= (UINT64_C(1) << 53) && e10 >= -22 && e10 <= 22) {
        double d = (double)m;
        d = e10 < 0 ? d / POW10[-e10] : d * POW10[e10];
        out->d = neg ? -d : d;
        return true;
    }
#endif
    char tmp[128];
    size_t n = (size_t)(p - start);
    if (n >= sizeof tmp) return false;
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    char *stop;
    errno = 0;
    double d = strtod(tmp, &stop);
    if (stop != tmp + n) return false; /* a locale with another decimal point */
    if ((d == HUGE_VAL || d == -HUGE_VAL) && errno == ERANGE) return false;
    out->d = d;
    return true;
}

static bool scan_literal(parser *ps, const char *lit, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, lit, n) != 0) return false;
    ps->p += n;
    return true;
}

/* Adds an unknown key of one object; false for a duplicate, an escaped key (not compared
 * here) or one key too many. */
static bool keyset_add(keyset *ks, span k)
{
    if (!k.s || ks->n == MAX_KEYS) return false;
    for (unsigned i = 0; i < ks->n; i++)
        if (ks->k[i].len == k.len && memcmp(ks->k[i].s, k.s, k.len) == 0) return false;
    ks->k[ks->n++] = k;
    return true;
}

static bool skip_value(parser *ps, int depth);

/* After a member or element: consumes ',' (more follow) or close (*done set); false for
 * anything else. */
static inline bool next_or_close(parser *ps, int close, bool *done)
{
    int c = peek(ps);
    if (c != ',' && c != close) return false;
    ps->p++;
    *done = c == close;
    return true;
}

/* Validates an object nobody reads, at ps->p ('{'). */
static bool skip_object(parser *ps, int depth)
{
    keyset ks;
    ks.n = 0;
    ps->p++;
    if (peek(ps) == '}') {
        ps->p++;
        return true;
    }
    for (bool done = false; !done;) {
        span k;
        if (peek(ps) != '"' || !scan_string(ps, NULL, SIZE_MAX, &k) || !keyset_add(&ks, k) ||
            !eat(ps, ':') || !skip_value(ps, depth + 1) || !next_or_close(ps, '}', &done))
            return false;
    }
    return true;
}

static bool skip_array(parser *ps, int depth)
{
    ps->p++;
    if (peek(ps) == ']') {
        ps->p++;
        return true;
    }
    for (bool done = false; !done;)
        if (!skip_value(ps, depth + 1) || !next_or_close(ps, ']', &done)) return false;
    return true;
}

/* Validates any JSON value at depth (the root object is 1). */
static bool skip_value(parser *ps, int depth)
{
    if (depth > MAX_DEPTH) return false;
    int c = peek(ps);
    span s;
    number n;
    switch (c) {
    case '{': return skip_object(ps, depth);
    case '[': return skip_array(ps, depth);
    case '"': return scan_string(ps, NULL, SIZE_MAX, &s);
    case 't': return scan_literal(ps, "true", 4);
    case 'f': return scan_literal(ps, "false", 5);
    case 'n': return scan_literal(ps, "null", 4);
    default: return (c == '-' || is_digit(c)) && scan_number(ps, &n);
    }
}

enum { F_DEVICE = 1, F_METRIC = 2, F_TS = 4, F_VALUE = 8, F_KIND = 16, F_SITE = 32 };
#define F_REQUIRED (F_DEVICE | F_METRIC | F_TS | F_VALUE)

static unsigned field_of(span k)
{
    switch (k.len) {
    case 2: return memcmp(k.s, "ts", 2) == 0 ? F_TS : 0;
    case 4:
        return memcmp(k.s, "kind", 4) == 0 ? F_KIND : memcmp(k.s, "site", 4) == 0 ? F_SITE : 0;
    case 5: return memcmp(k.s, "value", 5) == 0 ? F_VALUE : 0;
    case 6:
        return memcmp(k.s, "device", 6) == 0   ? F_DEVICE
               : memcmp(k.s, "metric", 6) == 0 ? F_METRIC
                                                : 0;
    default: return 0;
    }
}

/* A non-empty string of at most max bytes into buf (cap >= max, or the slice in the body). */
static bool string_field(parser *ps, int c, char *buf, size_t cap, size_t max, span *out)
{
    return c == '"' && scan_string(ps, buf, cap, out) && out->len >= 1 && out->len <= max;
}

/* One element of "readings" at ps->p ('{'), appended to b when it is valid. */
static bool parse_reading(parser *ps, reading_bufs *rb, batch *b)
{
    span device = {0}, metric = {0}, site = {"", 0}, t;
    const char *kind = "device";
    int64_t ts = 0;
    double value = 0;
    unsigned seen = 0;
    keyset ks;
    ks.n = 0;
    number n;
    ps->p++;
    for (bool done = false; !done;) {
        span k;
        if (peek(ps) != '"' || !scan_string(ps, rb->key, sizeof rb->key, &k) || !eat(ps, ':'))
            return false;
        unsigned f = field_of(k);
        if (f & seen) return false; /* duplicate key */
        seen |= f;
        int c = peek(ps);
        switch (f) {
        case F_DEVICE:
            if (!string_field(ps, c, rb->device, sizeof rb->device, INGEST_DEVICE_MAX, &device))
                return false;
            break;
        case F_METRIC:
            if (!string_field(ps, c, rb->metric, sizeof rb->metric, INGEST_METRIC_MAX, &metric))
                return false;
            break;
        case F_TS:
            if (c == '"') {
                if (!scan_string(ps, rb->ts, sizeof rb->ts, &t) ||
                    time_parse_iso8601(t.s, t.len, &ts, NULL, 0) != MD_OK)
                    return false;
            } else if (!(c == '-' || is_digit(c)) || !scan_number(ps, &n) || !n.is_int ||
                       time_from_epoch_ms(n.i, &ts) != MD_OK) {
                return false;
            }
            break;
        case F_VALUE:
            if (!(c == '-' || is_digit(c)) || !scan_number(ps, &n)) return false;
            if (n.is_int) {
                if (n.i > INGEST_MAX_EXACT_INT || n.i < -INGEST_MAX_EXACT_INT) return false;
                value = (double)n.i;
            } else {
                value = n.d;
            }
            break;
        case F_KIND:
            if (c == 'n') {
                if (!scan_literal(ps, "null", 4)) return false;
            } else if (c != '"' || !scan_string(ps, rb->kind, sizeof rb->kind, &t) ||
                       !(kind = ingest_canonical_kind(t.s, t.len))) {
                return false;
            }
            break;
        case F_SITE:
            if (c == 'n') {
                if (!scan_literal(ps, "null", 4)) return false;
            } else if (c != '"' || !scan_string(ps, rb->site, sizeof rb->site, &site) ||
                       site.len > INGEST_SITE_MAX) {
                return false;
            }
            break;
        default:
            /* An escaped unknown key was decoded into rb->key: not compared here. */
            if (k.s == rb->key || !keyset_add(&ks, k) || !skip_value(ps, 4)) return false;
        }
        if (!next_or_close(ps, '}', &done)) return false;
    }
    return (seen & F_REQUIRED) == F_REQUIRED &&
           batch_addn(b, device.s, device.len, kind, strlen(kind), site.s, site.len, metric.s,
                      metric.len, ts, value) == MD_OK;
}

/* The value of "readings": a non-empty array of reading objects, at most max of them. */
static bool parse_readings(parser *ps, size_t max, reading_bufs *rb, batch *b)
{
    if (!eat(ps, '[')) return false;
    for (bool done = false; !done;)
        if (peek(ps) != '{' || b->n_readings == max || !parse_reading(ps, rb, b) ||
            !next_or_close(ps, ']', &done))
            return false;
    return true;
}

int ingest_canonical_json_fast(const char *body, size_t len, const ingest_limits *lim,
                               batch **out)
{
    parser ps = {body, body + len};
    reading_bufs rb;
    keyset ks;
    ks.n = 0;
    batch *b = NULL;
    size_t max = lim && lim->max_readings ? lim->max_readings : SIZE_MAX;
    *out = NULL;
    if (!body || !eat(&ps, '{')) return MD_ERR_INVALID;
    for (bool done = false; !done;) {
        span k;
        if (peek(&ps) != '"' || !scan_string(&ps, rb.key, sizeof rb.key, &k) || !eat(&ps, ':'))
            goto fail;
        if (k.len == 8 && memcmp(k.s, "readings", 8) == 0) {
            if (b || !(b = batch_new("api.v1.readings")) || !parse_readings(&ps, max, &rb, b))
                goto fail;
        } else if (k.s == rb.key || !keyset_add(&ks, k) || !skip_value(&ps, 2)) {
            goto fail;
        }
        if (!next_or_close(&ps, '}', &done)) goto fail;
    }
    if (!b || peek(&ps) != -1) goto fail; /* no "readings", or data after the object */
    *out = b;
    return MD_OK;
fail:
    batch_free(b);
    return MD_ERR_INVALID;
}
