/* libFuzzer target: the CSV reader over an in-memory file. Rows are finite and in range,
 * line numbers only grow, and every skip or header failure says why. */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/csv.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_msg(const char *err, size_t cap)
{
    size_t n = strnlen(err, cap);
    if (n == 0 || n == cap) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0; /* fmemopen rejects a zero-size buffer */
    FILE *f = fmemopen((void *)data, size, "r");
    if (!f) return 0;
    char err[256];
    memset(err, 0, sizeof(err));
    csv_reader *r = csv_open(f, err, sizeof(err));
    if (!r) {
        check_msg(err, sizeof(err));
        fclose(f);
        return 0;
    }
    const char *metric = csv_metric(r);
    if (!metric[0] || strlen(metric) > 128) abort();
    uint64_t last = csv_line(r), rows = 0;
    for (;;) {
        int64_t ts;
        double v;
        err[0] = '\0';
        int rc = csv_next(r, &ts, &v, err, sizeof(err));
        if (rc == 0) break;
        if (rc == 1) {
            if (!isfinite(v) || ts < TIME_MIN_US || ts > TIME_MAX_US) abort();
        } else if (rc == MD_ERR_INVALID || rc == MD_ERR_IO) {
            check_msg(err, sizeof(err));
        } else {
            abort();
        }
        if (csv_line(r) <= last) abort();
        last = csv_line(r);
        if (++rows > size) abort(); /* every row consumes at least one byte */
    }
    int64_t ts;
    double v;
    if (csv_next(r, &ts, &v, err, sizeof(err)) != 0) abort(); /* end stays the end */
    csv_close(r);
    fclose(f);
    return 0;
}
