/* libFuzzer target: time_parse_iso8601. Accepted input must round-trip through the formatter. */
#include "core/error.h"
#include "core/timeutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int64_t us = 0, again = 0;
    char err[128];
    memset(err, 0x55, sizeof(err));
    int rc = time_parse_iso8601((const char *)data, size, &us, err, sizeof(err));
    if (rc != MD_OK) {
        if (rc != MD_ERR_INVALID || strnlen(err, sizeof(err)) == 0 ||
            strnlen(err, sizeof(err)) == sizeof(err))
            abort();
        return 0;
    }
    if (us < TIME_MIN_US || us > TIME_MAX_US) abort();
    char out[32];
    time_format_rfc3339(us, out);
    if (time_parse_iso8601(out, strlen(out), &again, err, sizeof(err)) != MD_OK || again != us)
        abort();
    /* A tiny error buffer must be fine too. */
    time_parse_iso8601((const char *)data, size, &again, err, 1);
    return 0;
}
