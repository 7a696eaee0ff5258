/* Checks shared by the JSON ingest decoders. */
#include "ingest/json_util.h"
#include "core/error.h"
#include "core/timeutil.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Overlong forms, surrogates and code points past U+10FFFF are invalid, as in jansson. */
size_t ingest_utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80) return 1;
    size_t len;
    uint32_t cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Formats into e->message; the body of ingest_fail and ingest_fail_at. */
static int fail_v(ingest_error *e, int status, const char *fmt, va_list ap)
{
    char tmp[512];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    size_t tlen = n < 0 ? 0 : (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1;

    /* The message ends up in a JSON response: keep it valid UTF-8 without control bytes,
     * and cut it at a character boundary. */
    const size_t cap = sizeof(e->message) - 4; /* room for "..." and NUL */
    size_t o = 0, i = 0;
    bool cut = false;
    while (i < tlen) {
        const unsigned char *c = (const unsigned char *)tmp + i;
        size_t l = ingest_utf8_seq(c, tlen - i);
        if (o + (l ? l : 1) > cap) {
            cut = true;
            break;
        }
        if (l == 0 || c[0] < 0x20 || c[0] == 0x7f) {
            e->message[o++] = '?';
            i++;
        } else {
            memcpy(e->message + o, c, l);
            o += l;
            i += l;
        }
    }
    if (cut) {
        memcpy(e->message + o, "...", 3);
        o += 3;
    }
    e->message[o] = '\0';
    e->status = status;
    e->field[0] = e->type[0] = '\0';
    return status == 500 ? MD_ERR_NOMEM : MD_ERR_INVALID;
}

int ingest_fail(ingest_error *e, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(e, status, fmt, ap);
    va_end(ap);
    return rc;
}

int ingest_fail_at(ingest_error *e, int status, const char *field, const char *type,
                   const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(e, status, fmt, ap);
    va_end(ap);
    snprintf(e->field, sizeof(e->field), "%s", field);
    snprintf(e->type, sizeof(e->type), "%s", type);
    return rc;
}

char *ingest_quote(const char *s, size_t len, char *out, size_t outlen)
{
    const size_t max_in = 64;
    size_t o = 0;
    bool cut = false;
    if (len > max_in) {
        len = max_in;
        /* don't split a UTF-8 sequence */
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80)
            len--;
        cut = true;
    }
    /* worst case per input byte: "\u00XX" (6), plus quotes, "..." and NUL */
    if (outlen < 2) {
        if (outlen) out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    size_t i = 0;
    for (; i < len && o + 12 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (i < len) cut = true;
    if (cut && o + 4 < outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    if (o + 1 < outlen) out[o++] = '"';
    out[o] = '\0';
    return out;
}

int ingest_json_load_object(const char *body, size_t len, json_t **root, ingest_error *e)
{
    json_error_t je;
    *root = NULL;
    /* No JSON_DISABLE_EOF_CHECK: trailing data after the object is an error. */
    json_t *r = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES, &je);
    if (!r) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return ingest_fail(e, 500, "out of memory");
        return ingest_fail_at(e, 400, "", "json_invalid", "malformed JSON at line %d, column %d: %s",
                              je.line, je.column, je.text);
    }
    if (!json_is_object(r)) {
        json_decref(r);
        return ingest_fail_at(e, 400, "", "model_attributes_type", "body: must be a JSON object");
    }
    *root = r;
    return MD_OK;
}

int ingest_json_meter_number(const json_t *root, int64_t *out, ingest_error *e)
{
    const json_t *v = json_object_get(root, "meter_number");
    if (!v) return ingest_fail(e, 400, "meter_number: missing");
    if (json_is_integer(v) && json_integer_value(v) > 0) {
        *out = json_integer_value(v);
        return MD_OK;
    }
    if (json_is_string(v)) {
        /* Some clients send the number as text; same range as the integer form. */
        const char *s = json_string_value(v);
        size_t len = json_string_length(v);
        uint64_t n = 0;
        bool ok = len >= 1 && len <= 19;
        for (size_t i = 0; ok && i < len; i++) {
            ok = s[i] >= '0' && s[i] <= '9';
            n = n * 10 + (uint64_t)(s[i] - '0');
        }
        if (ok && n >= 1 && n <= (uint64_t)INT64_MAX) {
            *out = (int64_t)n;
            return MD_OK;
        }
    }
    return ingest_fail(e, 400, "meter_number: must be a positive integer");
}

int ingest_json_number(const json_t *v, double *out, const char **why)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n > INGEST_MAX_EXACT_INT || n < -INGEST_MAX_EXACT_INT) {
            *why = "integer out of range (magnitude above 2^53)";
            return MD_ERR_INVALID;
        }
        *out = (double)n;
        return MD_OK;
    }
    if (json_is_real(v)) {
        *out = json_real_value(v); /* jansson already refuses NaN, Infinity and overflow */
        return MD_OK;
    }
    *why = "must be a number";
    return MD_ERR_INVALID;
}

int ingest_check_count(size_t n, const ingest_limits *lim, const char *where, ingest_error *e)
{
    if (lim && lim->max_readings && n > lim->max_readings)
        return ingest_fail(e, 413, "%s: %zu readings exceed the limit of %zu", where, n,
                           lim->max_readings);
    return MD_OK;
}

int ingest_json_string(const json_t *obj, const char *key, size_t max, int status,
                       const char **out, ingest_error *e)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return ingest_fail_at(e, status, key, "missing", "%s: missing", key);
    if (!json_is_string(v))
        return ingest_fail_at(e, status, key, "string_type", "%s: must be a string", key);
    size_t len = json_string_length(v);
    if (len == 0)
        return ingest_fail_at(e, status, key, "string_too_short", "%s: must not be empty", key);
    if (len > max)
        return ingest_fail_at(e, status, key, "string_too_long",
                              "%s: %zu bytes exceed the limit of %zu", key, len, max);
    *out = json_string_value(v);
    return MD_OK;
}

int ingest_json_required_number(const json_t *obj, const char *key, int status, double *out,
                                ingest_error *e)
{
    const json_t *v = json_object_get(obj, key);
    const char *why;
    if (!v) return ingest_fail_at(e, status, key, "missing", "%s: missing", key);
    if (ingest_json_number(v, out, &why))
        return ingest_fail_at(e, status, key, json_is_integer(v) ? "value_error" : "float_type",
                              "%s: %s", key, why);
    return MD_OK;
}

int ingest_json_time(const json_t *obj, const char *key, int status, int64_t *out,
                     ingest_error *e)
{
    const json_t *v = json_object_get(obj, key);
    char why[128];
    if (!v) return ingest_fail_at(e, status, key, "missing", "%s: missing", key);
    if (!json_is_string(v))
        return ingest_fail_at(e, status, key, "datetime_type", "%s: must be an RFC 3339 string",
                              key);
    if (time_parse_iso8601(json_string_value(v), json_string_length(v), out, why, sizeof(why)))
        return ingest_fail_at(e, status, key, "datetime_parsing", "%s: %s", key, why);
    return MD_OK;
}
