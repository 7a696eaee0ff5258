/* POST /api/v1/envelopes and the AMQP consumer: the gateway envelope. Only an undecodable
 * envelope is rejected; a bad PM entry becomes a reading marked invalid with its reason. */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FINGERPRINT_MAX 256
#define QUOTE_MAX 64 /* bytes of client input repeated in a reason */

/* Reasons of one PM entry, joined with "; " (usually there is one). */
typedef struct reasons {
    char text[512];
    size_t len;
} reasons;

static void reason_add(reasons *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason_add(reasons *r, const char *fmt, ...)
{
    if (r->len && r->len + 2 < sizeof(r->text)) {
        memcpy(r->text + r->len, "; ", 3);
        r->len += 2;
    }
    size_t room = sizeof(r->text) - r->len;
    if (room < 2) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->text + r->len, room, fmt, ap);
    va_end(ap);
    if (n > 0) r->len += (size_t)n < room ? (size_t)n : room - 1;
}

/* Client text for a reason: at most QUOTE_MAX bytes, cut at a UTF-8 boundary (jansson
 * strings are valid UTF-8), "..." when cut. */
static const char *clip(const char *s, size_t len, char out[QUOTE_MAX + 4])
{
    size_t n = len;
    if (n > QUOTE_MAX) {
        n = QUOTE_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out, s, n);
    strcpy(out + n, n < len ? "..." : "");
    /* an embedded NUL would end the reason early anyway; keep what precedes it */
    return out;
}

/* "date": the reading's time; on failure ts = received_at and a reason. */
static void entry_date(const json_t *v, int64_t received_at, int64_t window_us, int64_t *ts,
                       reasons *r)
{
    char q[QUOTE_MAX + 4];
    *ts = received_at;
    if (!v || json_is_null(v)) {
        reason_add(r, "date is missing");
        return;
    }
    if (!json_is_string(v)) {
        reason_add(r, "invalid date format: not a string");
        return;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (time_parse_gateway_date(s, len, ts, NULL, 0)) {
        *ts = received_at;
        reason_add(r, "invalid date format: '%s'", clip(s, len, q));
        return;
    }
    int64_t d = *ts - received_at; /* both within years 0001..9999: no overflow */
    if (window_us > 0 && (d > window_us || d < -window_us)) {
        if (window_us % TIME_US_PER_SEC == 0)
            reason_add(r, "timestamp outside \u00b1%" PRId64 " s of received_at",
                       window_us / TIME_US_PER_SEC);
        else
            reason_add(r, "timestamp outside \u00b1%.6g s of received_at",
                       (double)window_us / TIME_US_PER_SEC);
    }
}

/* A decimal number as text: what strtod takes, whole, finite, no hex. */
static bool parse_decimal(const char *s, size_t len, double *out)
{
    if (len == 0 || strlen(s) != len || strpbrk(s, "xX")) return false;
    char *end;
    double d = strtod(s, &end);
    if (end != s + len || !isfinite(d)) return false;
    *out = d;
    return true;
}

/* "data": the value, from a numeric string or a JSON number; NaN and a reason otherwise.
 * A negative value stays valid here: the worker's anomaly rule owns that check. */
static void entry_data(const json_t *v, double *value, reasons *r)
{
    char q[QUOTE_MAX + 4];
    const char *why;
    *value = NAN;
    if (!v || json_is_null(v)) {
        reason_add(r, "data is missing");
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        if (!parse_decimal(s, len, value)) {
            *value = NAN;
            reason_add(r, "data is not a number: '%s'", clip(s, len, q));
        }
    } else if (json_is_number(v)) {
        if (ingest_json_number(v, value, &why)) {
            *value = NAN;
            reason_add(r, "data is not a number: %s", why);
        }
    } else {
        reason_add(r, "data is not a number");
    }
}

static int add_entry(batch *b, const char *device, const json_t *pm, size_t i, int64_t window_us,
                     ingest_error *e)
{
    if (!json_is_object(pm)) return ingest_fail(e, 400, "payload.PM[%zu]: must be an object", i);
    reasons r = {.len = 0};
    r.text[0] = '\0';
    int64_t ts;
    double value;
    entry_date(json_object_get(pm, "date"), b->received_at_us, window_us, &ts, &r);
    entry_data(json_object_get(pm, "data"), &value, &r);
    const json_t *n = json_object_get(pm, "name");
    const char *metric = json_is_string(n) ? json_string_value(n) : "";
    if (!metric[0])
        reason_add(&r, json_is_string(n) || !n || json_is_null(n) ? "metric name is empty"
                                                                  : "metric name is not a string");
    if (batch_add(b, device, "client", "", metric, ts, value) ||
        (r.len && batch_mark_invalid(b, r.text)))
        return ingest_fail(e, 500, "out of memory");
    return MD_OK;
}

/* Optional string of the envelope; absent or not a string means "". */
static const char *optional_string(const json_t *root, const char *key)
{
    const json_t *v = json_object_get(root, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

int ingest_envelope(const char *body, size_t len, const ingest_limits *lim, int64_t window_us,
                    batch **out, ingest_error *e)
{
    json_t *root;
    const char *fingerprint;
    int64_t received_at;
    batch *b = NULL;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) return rc;
    if ((rc = ingest_json_string(root, "client_fingerprint", FINGERPRINT_MAX, 400, &fingerprint,
                                 e)) ||
        (rc = ingest_json_time(root, "received_at", 400, &received_at, e)))
        goto done;
    const json_t *payload = json_object_get(root, "payload");
    if (!payload || !json_is_object(payload)) {
        rc = ingest_fail_at(e, 400, "payload", payload ? "model_type" : "missing", "payload: %s",
                            payload ? "must be an object" : "missing");
        goto done;
    }
    const json_t *pms = json_object_get(payload, "PM");
    if (!pms || !json_is_array(pms)) {
        rc = ingest_fail_at(e, 400, "payload.PM", pms ? "list_type" : "missing", "payload.PM: %s",
                            pms ? "must be an array" : "missing");
        goto done;
    }
    if ((rc = ingest_check_count(json_array_size(pms), lim, "payload.PM", e))) goto done;
    if (!(b = batch_new("envelope")) ||
        batch_set(b, &b->request_id, optional_string(root, "request_id")) ||
        batch_set(b, &b->client_fingerprint, fingerprint) ||
        batch_set(b, &b->client_ip, optional_string(root, "ip_address")) ||
        batch_set(b, &b->client_user_agent, optional_string(root, "user_agent"))) {
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    /* The gateway's receive time is what the worker's time window is measured from. */
    b->received_at_us = received_at;
    if (b->request_id[0]) { /* a redelivered envelope is the same batch, applied once */
        char key[600];
        int n = snprintf(key, sizeof key, "%s\n%s", fingerprint, b->request_id);
        batch_id_from_key(b->id, received_at / 1000, key, n < (int)sizeof key ? (size_t)n : sizeof key - 1);
    }
    for (size_t i = 0; i < json_array_size(pms); i++)
        if ((rc = add_entry(b, fingerprint, json_array_get(pms, i), i, window_us, e))) goto done;
done:
    json_decref(root);
    if (rc) {
        batch_free(b); /* all or nothing */
        return rc;
    }
    *out = b;
    return MD_OK;
}
