/* CSV reader: one record at a time into a fixed buffer, so memory is constant whatever the
 * file size. Quoting follows RFC 4180; a quote only opens a quoted field at its start. */
#include "ingest/csv.h"
#include "core/error.h"
#include "core/timeutil.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define METRIC_MAX 128
#define MAX_FIELDS 3 /* we need 2; a third only tells "too many" */
#define CLIP 64      /* bytes of file content repeated in a message */

typedef struct csv_field {
    char *p;
    size_t len;
} csv_field;

struct csv_reader {
    FILE *f;            /* borrowed */
    uint64_t line;      /* where the last header or row returned started */
    uint64_t rec_line;  /* where the record in buf started */
    uint64_t next_line; /* line of the next byte */
    bool done;          /* EOF or read error seen */
    int time_col;       /* 0 or 1 */
    size_t len;         /* bytes in buf */
    bool too_long;      /* the record did not fit; its tail was dropped */
    char metric[METRIC_MAX + 1];
    char buf[CSV_MAX_LINE + 1];
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MD_ERR_INVALID;
}

/* File content for a message: at most CLIP bytes, non-ASCII and control bytes as '?'. */
static const char *clip(const char *s, size_t len, char out[CLIP + 4])
{
    size_t n = len < CLIP ? len : CLIP;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    strcpy(out + n, n < len ? "..." : "");
    return out;
}

enum { AT_START, UNQUOTED, QUOTED, QUOTE_IN_QUOTED };

/* Reads one record (up to a newline outside quotes) into r->buf. false at end of file. */
static bool read_record(csv_reader *r)
{
    FILE *f = r->f;
    size_t n = 0;
    int c, st = AT_START;
    bool any = false;
    r->rec_line = r->next_line;
    r->too_long = false;
    while ((c = getc_unlocked(f)) != EOF) {
        any = true;
        if (c == '\n') {
            r->next_line++;
            if (st != QUOTED) break;
        } else if (c == '"') {
            st = st == AT_START          ? QUOTED
                 : st == QUOTED          ? QUOTE_IN_QUOTED
                 : st == QUOTE_IN_QUOTED ? QUOTED
                                         : st;
        } else if (c == ',') {
            if (st != QUOTED) st = AT_START;
        } else if (st == AT_START || st == QUOTE_IN_QUOTED) {
            st = UNQUOTED;
        }
        if (n < CSV_MAX_LINE)
            r->buf[n++] = (char)c;
        else
            r->too_long = true;
    }
    if (!any) r->done = true;
    if (n && r->buf[n - 1] == '\r') n--;
    r->buf[n] = '\0';
    r->len = n;
    return any;
}

static bool is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t') return false;
    return true;
}

/* Strips spaces and tabs around an unquoted field. */
static void trim(csv_field *f)
{
    while (f->len && (f->p[0] == ' ' || f->p[0] == '\t')) {
        f->p++;
        f->len--;
    }
    while (f->len && (f->p[f->len - 1] == ' ' || f->p[f->len - 1] == '\t'))
        f->len--;
}

/* Splits r->buf into fields in place (quotes removed, NUL-terminated); keeps the first
 * MAX_FIELDS in out, counts all in *nf. NULL, or a static reason. */
static const char *split(csv_reader *r, csv_field out[MAX_FIELDS], size_t *nf)
{
    char *b = r->buf;
    size_t i = 0, len = r->len, n = 0;
    for (;;) {
        csv_field f;
        if (i < len && b[i] == '"') {
            size_t w = ++i;
            f.p = b + w;
            for (;;) {
                if (i >= len) return "unterminated quoted field";
                if (b[i] == '"') {
                    if (i + 1 < len && b[i + 1] == '"') {
                        b[w++] = '"';
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                b[w++] = b[i++];
            }
            f.len = (size_t)(b + w - f.p);
            if (i < len && b[i] != ',') return "unexpected character after a closing quote";
        } else {
            f.p = b + i;
            while (i < len && b[i] != ',') {
                if (b[i] == '"') return "quote inside an unquoted field";
                i++;
            }
            f.len = (size_t)(b + i - f.p);
            trim(&f);
        }
        if (n < MAX_FIELDS) out[n] = f;
        n++;
        if (i >= len) break;
        i++; /* the comma */
    }
    for (size_t k = 0; k < n && k < MAX_FIELDS; k++)
        out[k].p[out[k].len] = '\0';
    *nf = n;
    return NULL;
}

/* Checks the header; fills r->time_col and r->metric. */
static int read_header(csv_reader *r, char *err, size_t errlen)
{
    do {
        if (!read_record(r)) {
            if (ferror(r->f)) return fail(err, errlen, "read error: %s", strerror(errno));
            return fail(err, errlen, "empty file: no header line");
        }
    } while (!r->too_long && is_blank(r->buf, r->len));
    r->line = r->rec_line;
    unsigned long long line = (unsigned long long)r->line;
    if (r->too_long)
        return fail(err, errlen, "line %llu: header longer than %d bytes", line, CSV_MAX_LINE);
    if (memchr(r->buf, '\0', r->len)) return fail(err, errlen, "line %llu: header: NUL byte", line);
    csv_field f[MAX_FIELDS];
    size_t nf;
    const char *why = split(r, f, &nf);
    if (why) return fail(err, errlen, "line %llu: header: %s", line, why);
    if (nf != 2)
        return fail(err, errlen,
                    "line %llu: header: want 2 columns (time and one value column), got %zu", line,
                    nf);
    bool t0 = strcasecmp(f[0].p, "time") == 0, t1 = strcasecmp(f[1].p, "time") == 0;
    if (!t0 && !t1) return fail(err, errlen, "line %llu: header: missing column 'time'", line);
    if (t0 && t1) return fail(err, errlen, "line %llu: header: missing a value column", line);
    r->time_col = t0 ? 0 : 1;
    const csv_field *m = &f[1 - r->time_col];
    if (m->len == 0)
        return fail(err, errlen, "line %llu: header: the value column has no name", line);
    if (m->len > METRIC_MAX)
        return fail(err, errlen, "line %llu: header: value column name over %d bytes", line,
                    METRIC_MAX);
    for (size_t i = 0; i < m->len; i++) {
        char c = m->p[i];
        r->metric[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    r->metric[m->len] = '\0';
    return MD_OK;
}

csv_reader *csv_open(FILE *f, char *err, size_t errlen)
{
    csv_reader *r = malloc(sizeof(*r));
    if (!r) {
        fail(err, errlen, "out of memory");
        return NULL;
    }
    r->f = f;
    r->line = 0;
    r->next_line = 1;
    r->done = false;
    int c = getc_unlocked(f);
    if (c == 0xef) { /* UTF-8 byte order mark */
        int c2 = getc_unlocked(f), c3 = getc_unlocked(f);
        if (c2 != 0xbb || c3 != 0xbf) {
            fail(err, errlen, "line 1: header: not UTF-8 text");
            free(r);
            return NULL;
        }
    } else if (c != EOF) {
        ungetc(c, f);
    }
    if (read_header(r, err, errlen)) {
        free(r);
        return NULL;
    }
    return r;
}

const char *csv_metric(const csv_reader *r)
{
    return r->metric;
}

uint64_t csv_line(const csv_reader *r)
{
    return r->line;
}

void csv_close(csv_reader *r)
{
    free(r);
}

/* A decimal number: what strtod takes, whole, no hex; *finite false for NaN, inf, overflow. */
static bool parse_value(const char *s, double *out, bool *finite)
{
    if (strpbrk(s, "xX")) return false;
    char *end;
    *out = strtod(s, &end);
    if (end == s || *end) return false;
    *finite = isfinite(*out);
    return true;
}

int csv_next(csv_reader *r, int64_t *ts_us, double *value, char *err, size_t errlen)
{
    if (r->done) return 0;
    do {
        if (!read_record(r)) {
            if (!ferror(r->f)) return 0;
            fail(err, errlen, "line %llu: read error: %s", (unsigned long long)r->rec_line,
                 strerror(errno));
            return MD_ERR_IO;
        }
    } while (!r->too_long && is_blank(r->buf, r->len));
    r->line = r->rec_line;
    unsigned long long line = (unsigned long long)r->line;
    if (r->too_long)
        return fail(err, errlen, "line %llu: longer than %d bytes", line, CSV_MAX_LINE);
    csv_field f[MAX_FIELDS];
    size_t nf;
    char q[CLIP + 4], why[128];
    const char *bad = split(r, f, &nf);
    if (bad) return fail(err, errlen, "line %llu: %s", line, bad);
    if (nf != 2) return fail(err, errlen, "line %llu: want 2 columns, got %zu", line, nf);
    const csv_field *t = &f[r->time_col], *v = &f[1 - r->time_col];
    if (t->len == 0) return fail(err, errlen, "line %llu: empty time", line);
    if (time_parse_naive_utc(t->p, t->len, ts_us, why, sizeof(why)))
        return fail(err, errlen, "line %llu: bad time '%s': %s", line, clip(t->p, t->len, q), why);
    if (v->len == 0) return fail(err, errlen, "line %llu: empty value", line);
    bool finite = false;
    if (strlen(v->p) != v->len || !parse_value(v->p, value, &finite))
        return fail(err, errlen, "line %llu: value '%s' is not a number", line,
                    clip(v->p, v->len, q));
    if (!finite)
        return fail(err, errlen, "line %llu: value '%s' is not a finite number", line,
                    clip(v->p, v->len, q));
    return 1;
}
