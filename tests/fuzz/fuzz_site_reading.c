/* libFuzzer target: ingest_site_reading (POST /readings bodies); every rejection is a 422. */
#include "ingest_check.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch *b = NULL;
    ingest_error e;
    memset(&e, 0x55, sizeof(e)); /* stale bytes must not survive into field or type */
    int rc = ingest_site_reading((const char *)data, size, &FUZZ_LIMITS, &b, &e);
    if (rc == MD_ERR_INVALID && e.status != 422) abort();
    if (rc == MD_OK && (b->n_readings != 1 || strcmp(b->readings[0].metric, "power"))) abort();
    ingest_check_ex(rc, b, &e, INGEST_CHECK_422);
    return 0;
}
