/* libFuzzer target: time_parse_gateway_date and time_parse_naive_utc. Whatever they accept is
 * in range and agrees with the strict parser where the strict parser also accepts it. */
#include "core/error.h"
#include "core/timeutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check(int rc, int64_t us, const char *err, size_t cap)
{
    if (rc == MD_OK) {
        if (us < TIME_MIN_US || us > TIME_MAX_US) abort();
    } else if (rc != MD_ERR_INVALID || strnlen(err, cap) == 0 || strnlen(err, cap) == cap) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int64_t g = 0, n = 0, iso = 0;
    char err[160];
    memset(err, 0x55, sizeof(err));
    int rg = time_parse_gateway_date(s, size, &g, err, sizeof(err));
    check(rg, g, err, sizeof(err));
    memset(err, 0x55, sizeof(err));
    int rn = time_parse_naive_utc(s, size, &n, err, sizeof(err));
    check(rn, n, err, sizeof(err));
    int ri = time_parse_iso8601(s, size, &iso, NULL, 0);
    if (ri == MD_OK) {
        /* RFC 3339 is one of the gateway forms, and naive-UTC only widens the strict parser */
        if (rg != MD_OK || g != iso || rn != MD_OK || n != iso) abort();
    }
    if (rg == MD_OK && ri != MD_OK) {
        /* a gateway form: re-express it as RFC 3339 and it must parse to the same instant */
        char out[32];
        time_format_rfc3339(g, out);
        if (time_parse_iso8601(out, strlen(out), &iso, NULL, 0) != MD_OK || iso != g) abort();
    }
    time_parse_gateway_date(s, size, &g, err, 1); /* a tiny buffer is fine too */
    return 0;
}
