/* libFuzzer target: ingest_envelope. Bad PM entries are kept as invalid readings, so an
 * accepted envelope may hold empty metrics (always with a reason) or no readings at all. */
#include "ingest_check.h"

#include <math.h>
#include <stdint.h>

#define WINDOW_US (300 * TIME_US_PER_SEC)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch *b = NULL;
    ingest_error e;
    memset(&e, 0x55, sizeof(e));
    int rc = ingest_envelope((const char *)data, size, &FUZZ_LIMITS, WINDOW_US, &b, &e);
    if (rc == MD_OK) {
        if (!b->client_fingerprint[0] || strcmp(b->source, "envelope")) abort();
        for (size_t i = 0; i < b->n_readings; i++) {
            const reading *r = &b->readings[i];
            if (strcmp(r->device, b->client_fingerprint) || strcmp(r->device_kind, "client"))
                abort();
            /* NaN only with a reason; a valid reading is inside the window */
            if (isnan(r->value) && !r->invalid_reason[0]) abort();
            if (!r->invalid_reason[0] && (r->ts_us - b->received_at_us > WINDOW_US ||
                                          b->received_at_us - r->ts_us > WINDOW_US))
                abort();
        }
    }
    ingest_check_ex(rc, b, &e, INGEST_CHECK_EMPTY_BATCH | INGEST_CHECK_EMPTY_METRIC);
    return 0;
}
