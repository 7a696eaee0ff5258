/* libFuzzer target: ingest_canonical_json (POST /api/v1/readings bodies). */
#include "ingest_check.h"

#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch *b = NULL;
    ingest_error e;
    memset(&e, 0, sizeof(e));
    int rc = ingest_canonical_json((const char *)data, size, &FUZZ_LIMITS, &b, &e);
    ingest_check(rc, b, &e);
    return 0;
}
