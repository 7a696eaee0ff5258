/* POST /api/readings/raw: {"meter_number":12345,"data":"<base64 protobuf MeterData>"}. */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/base64.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"
#include "meterdata.pb-c.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* Seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the accepted range. */
#define MIN_SECONDS (TIME_MIN_US / TIME_US_PER_SEC)
#define MAX_SECONDS (TIME_MAX_US / TIME_US_PER_SEC)

/* Decodes the base64 "data" field into *pb (owned by the caller). */
static int unpack_data(const json_t *root, MeterData **pb, ingest_error *e)
{
    const json_t *v = json_object_get(root, "data");
    if (!v) return ingest_fail(e, 400, "data: missing");
    if (!json_is_string(v)) return ingest_fail(e, 400, "data: must be a base64 string");
    size_t len = json_string_length(v), n, bad;
    uint8_t *buf = malloc(ingest_base64_max_decoded(len));
    if (!buf) return ingest_fail(e, 500, "out of memory");
    if (ingest_base64_decode(json_string_value(v), len, buf, &n, &bad)) {
        free(buf);
        return ingest_fail(e, 400, "data: not valid base64 (at character %zu)", bad);
    }
    *pb = meter_data__unpack(NULL, n, buf);
    free(buf);
    /* protobuf-c does not tell a malformed message from an allocation failure */
    if (!*pb) return ingest_fail(e, 400, "data: not a valid MeterData protobuf");
    return MD_OK;
}

static int add_reading(batch *b, const char *device, const MeterData__MeterReading *r, size_t i,
                       ingest_error *e)
{
    const Google__Protobuf__Timestamp *t = r->timestamp;
    if (!t) return ingest_fail(e, 400, "data.readings[%zu].timestamp: missing", i);
    if (t->seconds < MIN_SECONDS || t->seconds > MAX_SECONDS)
        return ingest_fail(
            e, 400, "data.readings[%zu].timestamp: seconds %" PRId64 " outside years 0001..9999", i,
            t->seconds);
    if (t->nanos < 0 || t->nanos > 999999999)
        return ingest_fail(e, 400,
                           "data.readings[%zu].timestamp: nanos %" PRId32 " outside 0..999999999",
                           i, t->nanos);
    int64_t ts = t->seconds * TIME_US_PER_SEC + t->nanos / 1000;
    /* Non-finite values pass: the worker stores them as invalid with a reason. */
    if (batch_add(b, device, "meter", "", "energy", ts, r->value))
        return ingest_fail(e, 500, "out of memory");
    return MD_OK;
}

int ingest_meter_raw(const char *body, size_t len, const ingest_limits *lim, batch **out,
                     ingest_error *e)
{
    json_t *root;
    MeterData *pb = NULL;
    batch *b = NULL;
    int64_t meter;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) return rc;
    if ((rc = ingest_json_meter_number(root, &meter, e)) || (rc = unpack_data(root, &pb, e)))
        goto done;
    if (pb->n_readings == 0) {
        rc = ingest_fail(e, 400, "data: MeterData has no readings");
        goto done;
    }
    if ((rc = ingest_check_count(pb->n_readings, lim, "data.readings", e))) goto done;
    if (!(b = batch_new("api.readings.raw"))) {
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    char device[24];
    snprintf(device, sizeof(device), "%" PRId64, meter);
    for (size_t i = 0; i < pb->n_readings; i++)
        if ((rc = add_reading(b, device, pb->readings[i], i, e))) goto done;
done:
    if (pb) meter_data__free_unpacked(pb, NULL);
    json_decref(root);
    if (rc) {
        batch_free(b); /* all or nothing */
        return rc;
    }
    *out = b;
    return MD_OK;
}
