/* Ingest decoders: each turns one wire format into a canonical batch, whole or not at all. */
#ifndef METERD_INGEST_INGEST_H
#define METERD_INGEST_INGEST_H

#include "core/batch.h"

#include <stddef.h>

/* Why a request was rejected: the HTTP status (400, 413, 422) and a message that names
 * the place of the fault, e.g. "readings[3].ts: not an ISO 8601 timestamp". */
typedef struct ingest_error {
    int status;
    char message[256];
    char field[64]; /* FastAPI-style loc of the fault ("site_id"), "" when not one field */
    char type[48];  /* FastAPI-style error type ("missing", "string_type", "value_error") */
} ingest_error;

typedef struct ingest_limits {
    size_t max_readings; /* readings per request; more → 413 */
} ingest_limits;

/* POST /api/v1/readings: {"readings":[{"device","metric","ts","value"[,"kind","site"]}...]}.
 * 0 with *out (owned by caller), MD_ERR_INVALID with e filled, or MD_ERR_NOMEM. */
int ingest_canonical_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                          ingest_error *e);

/* POST /api/readings: {"meter_number":12345,"readings":{"<RFC 3339>":value,...}}. Same returns. */
int ingest_meter_json(const char *body, size_t len, const ingest_limits *lim, batch **out,
                      ingest_error *e);

/* POST /api/readings/raw: {"meter_number":12345,"data":"<base64 protobuf MeterData>"}. Same returns. */
int ingest_meter_raw(const char *body, size_t len, const ingest_limits *lim, batch **out,
                     ingest_error *e);

/* POST /readings (and /api/readings with site_id):
 * {"site_id","device_id","power_reading","timestamp"} → device device_id (kind device, site
 * site_id), metric "power". Errors are status 422 with field and type set. */
int ingest_site_reading(const char *body, size_t len, const ingest_limits *lim, batch **out,
                        ingest_error *e);

/* POST /ingest/meter: {"meterId","kwhConsumedAc","voltage","timestamp"} → kind meter,
 * metrics kwh_consumed_ac and voltage. 400 on errors. */
int ingest_ac_meter(const char *body, size_t len, const ingest_limits *lim, batch **out,
                    ingest_error *e);

/* POST /ingest/vehicle: {"vehicleId","kwhDeliveredDc","batteryTemp","timestamp"[,"meterId"]}
 * → kind vehicle, metrics kwh_delivered_dc and battery_temp; meterId adds a link
 * (vehicle → meter, relation "meter"). 400 on errors. */
int ingest_vehicle(const char *body, size_t len, const ingest_limits *lim, batch **out,
                   ingest_error *e);

/* POST /api/v1/envelopes: the gateway envelope {request_id, client_fingerprint, ip_address,
 * user_agent, received_at, payload{PM[{date,data,name}]}} → kind client, device = fingerprint,
 * metric = name. Readings that fail checks (date format or outside ±window_us of received_at,
 * data not a number or < 0, empty name) are kept with invalid_reason set; only an undecodable
 * envelope is an error (400). Also used by the AMQP consumer. */
int ingest_envelope(const char *body, size_t len, const ingest_limits *lim, int64_t window_us,
                    batch **out, ingest_error *e);

#endif
