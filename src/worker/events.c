/* Per-reading events, written by hand: the worker renders one per stored reading, and building
 * a jansson object for each (json_pack + json_dumps, a dozen allocations) took over half of a
 * PostgreSQL worker's CPU. The output is byte for byte what that jansson code wrote
 * (tests/unit/worker/test_events.c keeps it as the reference). */
#include "worker/events.h"
#include "core/timeutil.h"
#include "ingest/json_util.h"
#include "store/store.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Worst case of one escaped input byte: \u00XX (6) or U+FFFD for an invalid byte (3). */
#define ESC_MAX 6

static char *put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* A JSON string: jansson's escapes (\" \\ \b \f \n \r \t, \u00XX for other controls; '/' and
 * non-ASCII kept), invalid UTF-8 bytes replaced by U+FFFD. */
static char *put_str(char *o, const char *str)
{
    static const char hex[] = "0123456789ABCDEF"; /* jansson writes \u001F */
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    size_t n = strlen((const char *)s);
    *o++ = '"';
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            *o++ = (char)c;
            i++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = ingest_utf8_seq(s + i, n - i);
            if (l) o = put(o, (const char *)s + i, l);
            else o = PUT_LIT(o, "\xef\xbf\xbd");
            i += l ? l : 1;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            o = PUT_LIT(o, "u00");
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
        i++;
    }
    *o++ = '"';
    return o;
}

/* jansson's jsonp_dtostr with precision 15: "%.15g", ".0" when there is neither '.' nor 'e',
 * and no '+' or leading zeros in the exponent. */
static char *put_real(char *o, double v)
{
    if (!isfinite(v)) return PUT_LIT(o, "null");
    char b[40];
    int n = snprintf(b, sizeof b, "%.15g", v);
    if (n < 0 || n >= (int)sizeof b - 2) return PUT_LIT(o, "null"); /* cannot happen */
    char *e = memchr(b, 'e', (size_t)n);
    if (!e && !memchr(b, '.', (size_t)n)) {
        b[n++] = '.';
        b[n++] = '0';
        b[n] = '\0';
    }
    if (e) {
        char *start = e + 1, *end = e + 2;
        if (*start == '-') start++;
        while (*end == '0') end++;
        if (end != start) {
            memmove(start, end, (size_t)(b + n + 1 - end));
            n -= (int)(end - start);
        }
    }
    return put(o, b, (size_t)n);
}

static size_t bound(const reading *r, const char *reason)
{
    size_t n = strlen(r->device) * 2 + strlen(r->device_kind ? r->device_kind : "") +
               strlen(r->metric) + (reason ? strlen(reason) : 0);
    return n * ESC_MAX + 320; /* names, number, time stamp, batch id, punctuation */
}

static size_t render(char *out, const batch *b, const reading *r, int outcome, const char *reason)
{
    char ts[32], id[37];
    char *o = out;
    o = PUT_LIT(o, "{\"client_id\":");
    o = put_str(o, r->device);
    o = PUT_LIT(o, ",\"device\":");
    o = put_str(o, r->device);
    o = PUT_LIT(o, ",\"device_kind\":");
    o = put_str(o, r->device_kind);
    o = PUT_LIT(o, ",\"metric_name\":");
    o = put_str(o, r->metric);
    o = PUT_LIT(o, ",\"metric_value\":");
    o = put_real(o, r->value);
    o = PUT_LIT(o, ",\"reading_timestamp\":\"");
    const char *t = time_format_rfc3339(r->ts_us, ts);
    o = put(o, t, strlen(t));
    o = outcome == STORE_OUTCOME_VALID ? PUT_LIT(o, "\",\"validation_status\":\"valid\"")
                                       : PUT_LIT(o, "\",\"validation_status\":\"invalid\"");
    o = PUT_LIT(o, ",\"batch_id\":\"");
    batch_id_format(b->id, id);
    o = put(o, id, 36);
    *o++ = '"';
    if (outcome != STORE_OUTCOME_VALID && reason && reason[0]) {
        o = PUT_LIT(o, ",\"anomaly_reason\":");
        o = put_str(o, reason);
    }
    *o++ = '}';
    *o = '\0';
    return (size_t)(o - out);
}

char *events_reading_json_in(char *stack, size_t stack_len, const batch *b, const reading *r,
                             int outcome, const char *reason, size_t *len)
{
    size_t need = bound(r, reason);
    char *out = need <= stack_len ? stack : malloc(need);
    if (!out) return NULL;
    size_t n = render(out, b, r, outcome, reason);
    if (len) *len = n;
    return out;
}

void events_json_release(char *json, const char *stack)
{
    if (json != stack) free(json);
}

char *events_reading_json(const batch *b, const reading *r, int outcome, const char *reason,
                          size_t *len)
{
    char *out = malloc(bound(r, reason));
    if (!out) return NULL;
    size_t n = render(out, b, r, outcome, reason);
    if (len) *len = n;
    return out;
}

const char *events_routing_key(int outcome)
{
    return outcome == STORE_OUTCOME_VALID ? "reading.valid" : "reading.invalid";
}
