/* Strict base64 decoding: one canonical spelling per byte string, so nothing odd slips past;
 * and the matching encoder. */
#include "ingest/base64.h"
#include "core/error.h"

#include <stdlib.h>

/* 0..63 for the standard alphabet, -1 for everything else ('=' included). */
static int sextet(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

size_t ingest_base64_max_decoded(size_t len)
{
    return len / 4 * 3 + 3;
}

int ingest_base64_decode(const char *s, size_t len, uint8_t *out, size_t *out_len, size_t *bad_at)
{
    size_t n = len, o = 0;
    /* Padding is optional, but when present it must complete the last quantum. */
    if (len % 4 == 0 && len > 0 && s[len - 1] == '=') n = s[len - 2] == '=' ? len - 2 : len - 1;
    if (n % 4 == 1) {
        *bad_at = n - 1;
        return MD_ERR_INVALID;
    }
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = sextet((unsigned char)s[i]);
        if (v < 0) {
            *bad_at = i;
            return MD_ERR_INVALID;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    switch (n % 4) {
    case 2: /* 12 bits, 8 used */
        if (acc & 0xf) goto unused_bits;
        out[o++] = (uint8_t)(acc >> 4);
        break;
    case 3: /* 18 bits, 16 used */
        if (acc & 0x3) goto unused_bits;
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
        break;
    }
    *out_len = o;
    return MD_OK;
unused_bits:
    *bad_at = n - 1;
    return MD_ERR_INVALID;
}

char *ingest_base64_encode(const uint8_t *data, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        out[o++] = abc[v >> 18 & 63];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = i + 1 < len ? abc[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}
