/* Checks shared by the JSON ingest decoders: loading, error messages, common fields. */
#ifndef METERD_INGEST_JSON_UTIL_H
#define METERD_INGEST_JSON_UTIL_H

#include "ingest/ingest.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Largest integer a double holds exactly; larger JSON integers are rejected, not rounded. */
#define INGEST_MAX_EXACT_INT (INT64_C(1) << 53)

/* Length of the valid UTF-8 sequence at s[0..n) (n > 0), or 0 when it is invalid or truncated. */
size_t ingest_utf8_seq(const unsigned char *s, size_t n);

/* Fills e (message printf-style, truncated and made valid UTF-8 so any JSON writer takes it).
 * Returns MD_ERR_INVALID, or MD_ERR_NOMEM when status is 500. */
int ingest_fail(ingest_error *e, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ingest_fail that also names the field and the FastAPI-style error type (copied into e;
 * ingest_fail leaves both empty). */
int ingest_fail_at(ingest_error *e, int status, const char *field, const char *type,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Parses body as one JSON object (no trailing data, no duplicate keys) into *root (owned by
 * the caller). 0, MD_ERR_INVALID ("malformed JSON at line L, column C: ...") or MD_ERR_NOMEM.
 * e->type is "json_invalid" (malformed) or "model_attributes_type" (not an object). */
int ingest_json_load_object(const char *body, size_t len, json_t **root, ingest_error *e);

/* Reads "meter_number": a JSON integer 1..2^63-1 or a string of 1-19 digits in that range.
 * 0 or MD_ERR_INVALID. */
int ingest_json_meter_number(const json_t *root, int64_t *out, ingest_error *e);

/* Reads a JSON number (integer up to 2^53 in magnitude, or real) as a double. 0, or
 * MD_ERR_INVALID with *why set to a static reason ("must be a number", ...) for the caller
 * to prefix with the place; e is not touched, so the hot path formats nothing. */
int ingest_json_number(const json_t *v, double *out, const char **why);

/* 0, or MD_ERR_INVALID with status 413 when n exceeds lim->max_readings (NULL or 0: no limit). */
int ingest_check_count(size_t n, const ingest_limits *lim, const char *where, ingest_error *e);

/* Writes s (len bytes) into out as a quoted, escaped string for error messages, shortened
 * to at most ~64 characters. Returns out. */
char *ingest_quote(const char *s, size_t len, char *out, size_t outlen);

/* Required fields of a flat JSON object, failing with status, field = key and a type.
 * A non-empty string of at most max bytes (*out borrowed from obj): "<key>: missing"
 * (missing), "<key>: must be a string" (string_type), "<key>: must not be empty"
 * (string_too_short), "<key>: N bytes exceed the limit of M" (string_too_long). */
int ingest_json_string(const json_t *obj, const char *key, size_t max, int status,
                       const char **out, ingest_error *e);
/* A JSON number: "<key>: missing", "<key>: must be a number" (float_type),
 * "<key>: integer out of range (magnitude above 2^53)" (value_error). */
int ingest_json_required_number(const json_t *obj, const char *key, int status, double *out,
                                ingest_error *e);
/* An RFC 3339 string: "<key>: missing", "<key>: must be an RFC 3339 string" (datetime_type),
 * "<key>: <time_parse_iso8601 reason>" (datetime_parsing). */
int ingest_json_time(const json_t *obj, const char *key, int status, int64_t *out,
                     ingest_error *e);

#endif
