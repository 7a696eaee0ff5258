/* POST /ingest/meter and /ingest/vehicle: one AC meter or EV sample, two metrics each. */
#include "core/error.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"

#define ID_MAX 256

/* The shape both routes share: an id, two numbers and a timestamp. */
typedef struct telemetry_format {
    const char *source, *kind, *id_key;
    const char *keys[2];    /* JSON field of each value */
    const char *metrics[2]; /* metric it becomes */
} telemetry_format;

static const telemetry_format AC_METER = {"ingest.meter",
                                          "meter",
                                          "meterId",
                                          {"kwhConsumedAc", "voltage"},
                                          {"kwh_consumed_ac", "voltage"}};
static const telemetry_format VEHICLE = {"ingest.vehicle",
                                         "vehicle",
                                         "vehicleId",
                                         {"kwhDeliveredDc", "batteryTemp"},
                                         {"kwh_delivered_dc", "battery_temp"}};

/* Optional "meterId" of a vehicle: absent, null or "" means no link. */
static int linked_meter(const json_t *root, const char **meter, ingest_error *e)
{
    const json_t *v = json_object_get(root, "meterId");
    *meter = NULL;
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) return MD_OK;
    return ingest_json_string(root, "meterId", ID_MAX, 400, meter, e);
}

static int decode(const telemetry_format *f, const char *body, size_t len, const ingest_limits *lim,
                  batch **out, ingest_error *e)
{
    json_t *root;
    const char *id, *meter = NULL;
    double v[2];
    int64_t ts;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) return rc;
    if ((rc = ingest_json_string(root, f->id_key, ID_MAX, 400, &id, e)) ||
        (rc = ingest_json_required_number(root, f->keys[0], 400, &v[0], e)) ||
        (rc = ingest_json_required_number(root, f->keys[1], 400, &v[1], e)) ||
        (rc = ingest_json_time(root, "timestamp", 400, &ts, e)) ||
        (f == &VEHICLE && (rc = linked_meter(root, &meter, e))) ||
        (rc = ingest_check_count(2, lim, "readings", e)))
        goto done;
    batch *b = batch_new(f->source);
    if (!b || batch_add(b, id, f->kind, "", f->metrics[0], ts, v[0]) ||
        batch_add(b, id, f->kind, "", f->metrics[1], ts, v[1]) ||
        (meter && batch_add_link(b, id, meter, "meter"))) {
        batch_free(b);
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    *out = b;
done:
    json_decref(root);
    return rc;
}

int ingest_ac_meter(const char *body, size_t len, const ingest_limits *lim, batch **out,
                    ingest_error *e)
{
    return decode(&AC_METER, body, len, lim, out, e);
}

int ingest_vehicle(const char *body, size_t len, const ingest_limits *lim, batch **out,
                   ingest_error *e)
{
    return decode(&VEHICLE, body, len, lim, out, e);
}
