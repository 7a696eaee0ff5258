/* libFuzzer target: ingest_ac_meter and ingest_vehicle; the first byte picks the decoder. */
#include "ingest_check.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int vehicle = data[0] & 1;
    batch *b = NULL;
    ingest_error e;
    memset(&e, 0x55, sizeof(e));
    int rc = (vehicle ? ingest_vehicle : ingest_ac_meter)((const char *)data + 1, size - 1,
                                                          &FUZZ_LIMITS, &b, &e);
    if (rc == MD_OK) {
        if (b->n_readings != 2 || b->n_links > (size_t)vehicle) abort();
        if (strcmp(b->readings[0].device_kind, vehicle ? "vehicle" : "meter")) abort();
        if (b->readings[0].ts_us != b->readings[1].ts_us) abort();
    }
    ingest_check_ex(rc, b, &e, 0);
    return 0;
}
