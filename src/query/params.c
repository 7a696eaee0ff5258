#include "query/params.h"
#include "core/error.h"
#include "core/timeutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int params_time(const char *name, const char *v, int64_t dflt, int64_t *out, char *err,
                size_t errlen)
{
    if (!v || !*v) {
        *out = dflt;
        return MD_OK;
    }
    char *end;
    errno = 0;
    long long ms = strtoll(v, &end, 10);
    if (*end == '\0' && !errno) {
        if (time_from_epoch_ms(ms, out) == MD_OK) return MD_OK;
    } else {
        char why[128];
        if (time_parse_iso8601(v, strlen(v), out, why, sizeof why) == MD_OK) return MD_OK;
    }
    snprintf(err, errlen, "%s: not an ISO 8601 timestamp or epoch milliseconds: '%.64s'", name, v);
    return MD_ERR_INVALID;
}

int params_limit(const char *v, size_t dflt, size_t max, size_t *out, char *err, size_t errlen)
{
    if (!v || !*v) {
        *out = dflt;
        return MD_OK;
    }
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*end || errno || n < 1 || (unsigned long long)n > max) {
        snprintf(err, errlen, "limit: must be an integer from 1 to %zu, not '%.32s'", max, v);
        return MD_ERR_INVALID;
    }
    *out = (size_t)n;
    return MD_OK;
}

char *params_cursor_encode(int64_t ts_us, const char *key)
{
    size_t kl = strlen(key);
    char *out = malloc(24 + 2 * kl);
    if (!out) return NULL;
    int n = sprintf(out, "%lld.", (long long)ts_us);
    for (size_t i = 0; i < kl; i++) n += sprintf(out + n, "%02x", (unsigned char)key[i]);
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int params_cursor_decode(const char *v, int64_t *ts_us, char **key)
{
    char *end;
    errno = 0;
    long long ts = strtoll(v, &end, 10);
    if (errno || end == v || *end != '.') return MD_ERR_INVALID;
    const char *h = end + 1;
    size_t hl = strlen(h);
    if (hl % 2) return MD_ERR_INVALID;
    char *k = malloc(hl / 2 + 1);
    if (!k) return MD_ERR_NOMEM;
    for (size_t i = 0; i < hl / 2; i++) {
        int a = hexval(h[2 * i]), b = hexval(h[2 * i + 1]);
        if (a < 0 || b < 0 || (a == 0 && b == 0)) {
            free(k);
            return MD_ERR_INVALID;
        }
        k[i] = (char)(a * 16 + b);
    }
    k[hl / 2] = '\0';
    *ts_us = ts;
    *key = k;
    return MD_OK;
}
