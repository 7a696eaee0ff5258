/* The two halves of ingest_canonical_json (POST /api/v1/readings): a single-pass parser for
 * the common case and the jansson decoder that owns every error. Exposed for the
 * differential tests; everything else calls ingest_canonical_json. */
#ifndef METERD_INGEST_CANONICAL_JSON_FAST_H
#define METERD_INGEST_CANONICAL_JSON_FAST_H

#include "ingest/ingest.h"

#include <stddef.h>

/* Longest accepted strings, in bytes of UTF-8. */
#define INGEST_DEVICE_MAX 256
#define INGEST_METRIC_MAX 128
#define INGEST_SITE_MAX 256

/* The static name ("meter", "device", "vehicle", "client") equal to s[0..len), or NULL. */
const char *ingest_canonical_kind(const char *s, size_t len);

/* Builds the batch straight from the body, without a DOM. 0 with *out (owned by the caller)
 * only for a body the jansson decoder accepts too, with the same readings; MD_ERR_INVALID
 * ("not handled": invalid, unusual or out of memory) with *out NULL otherwise, and the
 * caller runs ingest_canonical_json_jansson for the verdict and the message. */
int ingest_canonical_json_fast(const char *body, size_t len, const ingest_limits *lim,
                               batch **out);

/* The reference decoder over a jansson DOM; same contract as ingest_canonical_json. */
int ingest_canonical_json_jansson(const char *body, size_t len, const ingest_limits *lim,
                                  batch **out, ingest_error *e);

#endif
