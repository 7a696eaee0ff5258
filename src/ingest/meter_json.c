/* POST /api/readings: {"meter_number":12345,"readings":{"<RFC 3339>":value,...}}. */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"

#include <inttypes.h>
#include <stdio.h>

/* Fails with the place readings["<key>"] in front of why. */
static int key_fail(const char *key, size_t klen, const char *why, ingest_error *e)
{
    char q[400];
    return ingest_fail(e, 400, "readings[%s]: %s", ingest_quote(key, klen, q, sizeof(q)), why);
}

/* Checks one "timestamp": value pair and appends it to b. */
static int add_reading(batch *b, const char *device, const char *key, size_t klen, const json_t *v,
                       ingest_error *e)
{
    char why[128];
    const char *reason;
    int64_t ts;
    double value;
    if (time_parse_iso8601(key, klen, &ts, why, sizeof(why))) return key_fail(key, klen, why, e);
    if (ingest_json_number(v, &value, &reason)) return key_fail(key, klen, reason, e);
    if (batch_add(b, device, "meter", "", "energy", ts, value))
        return ingest_fail(e, 500, "out of memory");
    return MD_OK;
}

int ingest_meter_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                      ingest_error *e)
{
    json_t *root;
    batch *b = NULL;
    int64_t meter;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) return rc;
    if ((rc = ingest_json_meter_number(root, &meter, e))) goto done;

    json_t *rs = json_object_get(root, "readings");
    if (!rs) {
        rc = ingest_fail(e, 400, "readings: missing");
        goto done;
    }
    if (!json_is_object(rs) || json_object_size(rs) == 0) {
        rc = ingest_fail(e, 400, "readings: must be a non-empty object");
        goto done;
    }
    if ((rc = ingest_check_count(json_object_size(rs), lim, "readings", e))) goto done;
    if (!(b = batch_new("api.readings"))) {
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    char device[24];
    snprintf(device, sizeof(device), "%" PRId64, meter);
    const char *key;
    size_t klen;
    json_t *v;
    /* jansson keeps document order, so the first bad key reported is the first in the body */
    json_object_keylen_foreach(rs, key, klen, v)
    {
        if ((rc = add_reading(b, device, key, klen, v, e))) goto done;
    }
done:
    json_decref(root);
    if (rc) {
        batch_free(b); /* all or nothing */
        return rc;
    }
    *out = b;
    return MD_OK;
}
