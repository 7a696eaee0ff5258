/* libFuzzer target: ingest_meter_raw (POST /api/readings/raw) and its base64 decoder.
 * The first byte picks what the rest is, so each layer is reached without the fuzzer having to
 * produce the layers above it:
 *   0: the whole HTTP body;
 *   1: a MeterData protobuf, base64-encoded into a valid body;
 *   2: the "data" string itself (printable ASCII, so the JSON around it stays valid),
 *      also decoded directly: accepted base64 must re-encode to the very same text. */
#include "ingest/base64.h"
#include "ingest_check.h"

#include <stdint.h>
#include <stdio.h>

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 of in; padded or not. Returns the length written (out needs 4*(n/3+1)+1). */
static size_t encode(const uint8_t *in, size_t n, char *out, int pad)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = B64[v >> 6 & 63];
        else if (pad)
            out[o++] = '=';
        if (i + 2 < n)
            out[o++] = B64[v & 63];
        else if (pad)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static void check_base64(const char *s, size_t len)
{
    uint8_t *out = malloc(ingest_base64_max_decoded(len));
    char *again = malloc(len + 8);
    if (!out || !again) abort();
    size_t n = 0, bad = 0;
    if (ingest_base64_decode(s, len, out, &n, &bad) == MD_OK) {
        if (n > ingest_base64_max_decoded(len)) abort();
        int padded = len > 0 && s[len - 1] == '=';
        if (len % 4 == 0 && n % 3 != 0 && !padded) abort();
        size_t m = encode(out, n, again, padded || len % 4 == 0);
        if (m != len || memcmp(again, s, len) != 0) abort(); /* one spelling per byte string */
    } else if (bad >= len && len > 0) {
        abort();
    }
    free(out);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const uint8_t mode = data[0] % 3;
    data++, size--;
    char *body = malloc(size * 2 + 64);
    if (!body) return 0;
    size_t len;
    if (mode == 0) {
        memcpy(body, data, size);
        len = size;
    } else if (mode == 1) {
        len = (size_t)sprintf(body, "{\"meter_number\":7,\"data\":\"");
        len += encode(data, size, body + len, 1);
        len += (size_t)sprintf(body + len, "\"}");
    } else {
        len = (size_t)sprintf(body, "{\"meter_number\":7,\"data\":\"");
        size_t start = len;
        for (size_t i = 0; i < size; i++) {
            char c = (char)(data[i] % 95 + 32);
            body[len++] = c == '"' || c == '\\' ? '=' : c;
        }
        check_base64(body + start, len - start);
        len += (size_t)sprintf(body + len, "\"}");
    }
    batch *b = NULL;
    ingest_error e;
    memset(&e, 0, sizeof(e));
    int rc = ingest_meter_raw(body, len, &FUZZ_LIMITS, &b, &e);
    ingest_check(rc, b, &e);
    free(body);
    return 0;
}
