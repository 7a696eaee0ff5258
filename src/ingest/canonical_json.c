/* POST /api/v1/readings: the canonical JSON format, one object per reading. */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/canonical_json_fast.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"

#include <string.h>

static const char *const KINDS[] = {"meter", "device", "vehicle", "client"};

const char *ingest_canonical_kind(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof(KINDS) / sizeof(KINDS[0]); i++)
        if (strncmp(s, KINDS[i], len) == 0 && KINDS[i][len] == '\0') return KINDS[i];
    return NULL;
}

/* Reads a required, non-empty string of at most max bytes. */
static int required_string(const json_t *obj, const char *key, size_t max, size_t idx,
                           const char **out, ingest_error *e)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) return ingest_fail(e, 400, "readings[%zu].%s: missing", idx, key);
    if (!json_is_string(v))
        return ingest_fail(e, 400, "readings[%zu].%s: must be a string", idx, key);
    size_t len = json_string_length(v);
    if (len == 0) return ingest_fail(e, 400, "readings[%zu].%s: must not be empty", idx, key);
    if (len > max)
        return ingest_fail(e, 400, "readings[%zu].%s: %zu bytes exceed the limit of %zu", idx, key,
                           len, max);
    *out = json_string_value(v);
    return MD_OK;
}

static int reading_ts(const json_t *obj, size_t idx, int64_t *ts, ingest_error *e)
{
    const json_t *v = json_object_get(obj, "ts");
    if (!v) return ingest_fail(e, 400, "readings[%zu].ts: missing", idx);
    if (json_is_string(v)) {
        char why[128];
        if (time_parse_iso8601(json_string_value(v), json_string_length(v), ts, why, sizeof(why)))
            return ingest_fail(e, 400, "readings[%zu].ts: %s", idx, why);
        return MD_OK;
    }
    if (json_is_integer(v)) {
        if (time_from_epoch_ms(json_integer_value(v), ts))
            return ingest_fail(
                e, 400, "readings[%zu].ts: epoch milliseconds outside years 0001..9999", idx);
        return MD_OK;
    }
    return ingest_fail(
        e, 400, "readings[%zu].ts: must be an RFC 3339 string or integer epoch milliseconds", idx);
}

/* Optional "kind": one of KINDS; absent or null means "device". */
static int reading_kind(const json_t *obj, size_t idx, const char **kind, ingest_error *e)
{
    const json_t *v = json_object_get(obj, "kind");
    *kind = "device";
    if (!v || json_is_null(v)) return MD_OK;
    if (json_is_string(v) &&
        (*kind = ingest_canonical_kind(json_string_value(v), json_string_length(v))))
        return MD_OK;
    *kind = "device";
    return ingest_fail(e, 400, "readings[%zu].kind: must be one of meter, device, vehicle, client",
                       idx);
}

/* Optional "site": a string of at most INGEST_SITE_MAX bytes; absent or null means "". */
static int reading_site(const json_t *obj, size_t idx, const char **site, ingest_error *e)
{
    const json_t *v = json_object_get(obj, "site");
    *site = "";
    if (!v || json_is_null(v)) return MD_OK;
    if (!json_is_string(v)) return ingest_fail(e, 400, "readings[%zu].site: must be a string", idx);
    if (json_string_length(v) > INGEST_SITE_MAX)
        return ingest_fail(e, 400, "readings[%zu].site: %zu bytes exceed the limit of %d", idx,
                           json_string_length(v), INGEST_SITE_MAX);
    *site = json_string_value(v);
    return MD_OK;
}

/* Checks one element of "readings" and appends it to b. The place for a message is only
 * formatted on error: this runs once per reading. */
static int add_reading(batch *b, const json_t *obj, size_t idx, ingest_error *e)
{
    if (!json_is_object(obj)) return ingest_fail(e, 400, "readings[%zu]: must be an object", idx);

    const char *device, *metric, *kind, *site;
    int64_t ts;
    double value;
    int rc;
    if ((rc = required_string(obj, "device", INGEST_DEVICE_MAX, idx, &device, e)) ||
        (rc = required_string(obj, "metric", INGEST_METRIC_MAX, idx, &metric, e)) ||
        (rc = reading_ts(obj, idx, &ts, e)))
        return rc;
    const json_t *v = json_object_get(obj, "value");
    if (!v) return ingest_fail(e, 400, "readings[%zu].value: missing", idx);
    const char *why;
    if (ingest_json_number(v, &value, &why))
        return ingest_fail(e, 400, "readings[%zu].value: %s", idx, why);
    if ((rc = reading_kind(obj, idx, &kind, e)) || (rc = reading_site(obj, idx, &site, e)))
        return rc;
    if (batch_add(b, device, kind, site, metric, ts, value))
        return ingest_fail(e, 500, "out of memory");
    return MD_OK;
}

int ingest_canonical_json_jansson(const char *body, size_t len, const ingest_limits *lim,
                                  batch **out, ingest_error *e)
{
    json_t *root;
    batch *b = NULL;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) return rc;

    const json_t *rs = json_object_get(root, "readings");
    if (!rs) {
        rc = ingest_fail(e, 400, "readings: missing");
        goto done;
    }
    if (!json_is_array(rs) || json_array_size(rs) == 0) {
        rc = ingest_fail(e, 400, "readings: must be a non-empty array");
        goto done;
    }
    if ((rc = ingest_check_count(json_array_size(rs), lim, "readings", e))) goto done;
    if (!(b = batch_new("api.v1.readings"))) {
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < json_array_size(rs); i++)
        if ((rc = add_reading(b, json_array_get(rs, i), i, e))) goto done;
done:
    json_decref(root);
    if (rc) {
        batch_free(b); /* all or nothing */
        return rc;
    }
    *out = b;
    return MD_OK;
}

/* The single-pass parser takes the bodies it is sure about; jansson decides everything else,
 * so every error and its message come from one place. */
int ingest_canonical_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                          ingest_error *e)
{
    if (ingest_canonical_json_fast(body, len, lim, out) == MD_OK) return MD_OK;
    return ingest_canonical_json_jansson(body, len, lim, out, e);
}
