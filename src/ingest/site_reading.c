/* POST /readings: one reading of one device at a site, with FastAPI-style 422 errors. */
#include "core/error.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"

#define ID_MAX 256

int ingest_site_reading(const char *body, size_t len, const ingest_limits *lim, batch **out,
                        ingest_error *e)
{
    json_t *root;
    const char *site, *device;
    double value;
    int64_t ts;
    *out = NULL;
    int rc = ingest_json_load_object(body, len, &root, e);
    if (rc) {
        /* This API's clients expect every rejection as a 422 validation error. */
        if (rc == MD_ERR_INVALID) e->status = 422;
        return rc;
    }
    if ((rc = ingest_json_string(root, "site_id", ID_MAX, 422, &site, e)) ||
        (rc = ingest_json_string(root, "device_id", ID_MAX, 422, &device, e)) ||
        (rc = ingest_json_required_number(root, "power_reading", 422, &value, e)) ||
        (rc = ingest_json_time(root, "timestamp", 422, &ts, e)) ||
        (rc = ingest_check_count(1, lim, "readings", e)))
        goto done;
    batch *b = batch_new("readings.site");
    if (!b || batch_add(b, device, "device", site, "power", ts, value)) {
        batch_free(b);
        rc = ingest_fail(e, 500, "out of memory");
        goto done;
    }
    *out = b;
done:
    json_decref(root);
    return rc;
}
