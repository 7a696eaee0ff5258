#include "worker/events.h"
#include "core/timeutil.h"
#include "store/store.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

char *events_reading_json(const batch *b, const reading *r, int outcome, const char *reason,
                          size_t *len)
{
    char ts[32], id[37];
    batch_id_format(b->id, id);
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:o,s:s,s:s,s:s}", "client_id", r->device, "device",
                          r->device, "device_kind", r->device_kind, "metric_name", r->metric,
                          "metric_value", isfinite(r->value) ? json_real(r->value) : json_null(),
                          "reading_timestamp", time_format_rfc3339(r->ts_us, ts),
                          "validation_status",
                          outcome == STORE_OUTCOME_VALID ? "valid" : "invalid", "batch_id", id);
    if (!o) return NULL;
    if (outcome != STORE_OUTCOME_VALID && reason && reason[0])
        json_object_set_new(o, "anomaly_reason", json_string(reason));
    char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
    json_decref(o);
    if (s && len) *len = strlen(s);
    return s;
}

const char *events_routing_key(int outcome)
{
    return outcome == STORE_OUTCOME_VALID ? "reading.valid" : "reading.invalid";
}
