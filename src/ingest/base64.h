/* Strict base64 (RFC 4648 section 4, standard alphabet) decoding for ingest payloads; encoding. */
#ifndef METERD_INGEST_BASE64_H
#define METERD_INGEST_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Returns the buffer size ingest_base64_decode needs for len input characters. */
size_t ingest_base64_max_decoded(size_t len);

/* Decodes len characters of s into out (ingest_base64_max_decoded(len) bytes), padding
 * optional. Rejects other characters (including whitespace and the URL-safe alphabet),
 * misplaced or partial padding, a dangling single character and non-zero unused bits.
 * 0 with *out_len set, or MD_ERR_INVALID with *bad_at = offset of the first bad character. */
int ingest_base64_decode(const char *s, size_t len, uint8_t *out, size_t *out_len, size_t *bad_at);

/* Encodes len bytes with padding into a new NUL-terminated string (owned by the caller), or NULL
 * when out of memory. */
char *ingest_base64_encode(const uint8_t *data, size_t len);

#endif
