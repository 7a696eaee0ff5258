/* libFuzzer target: the single-pass parser of POST /api/v1/readings against the jansson
 * decoder. Aborts when the fast path accepts a body that jansson rejects or builds another
 * batch from it, and when batch_encode differs from protobuf-c's packer. */
#include "../unit/core/batch_pb_ref.h"
#include "ingest/canonical_json_fast.h"
#include "ingest_check.h"

#include <stdint.h>

/* Same readings, value bits included, and the same bytes once id and receive time agree. */
static void expect_same_batch(batch *f, const batch *j)
{
    if (f->n_readings != j->n_readings || f->n_links || j->n_links) abort();
    for (size_t i = 0; i < j->n_readings; i++) {
        const reading *a = &f->readings[i], *b = &j->readings[i];
        if (strcmp(a->device, b->device) || strcmp(a->device_kind, b->device_kind) ||
            strcmp(a->site, b->site) || strcmp(a->metric, b->metric) || a->ts_us != b->ts_us ||
            memcmp(&a->value, &b->value, sizeof(double)) || a->quality != b->quality ||
            strcmp(a->invalid_reason, b->invalid_reason))
            abort();
    }
    memcpy(f->id, j->id, 16);
    f->received_at_us = j->received_at_us;
    uint8_t *fb, *jb, *ref;
    size_t flen, jlen, rlen;
    if (batch_encode(f, &fb, &flen) || batch_encode(j, &jb, &jlen)) return; /* no memory */
    if (batch_pb_ref_encode(j, &ref, &rlen) == 0) {
        if (rlen != jlen || memcmp(ref, jb, jlen)) abort();
        free(ref);
    }
    if (flen != jlen || memcmp(fb, jb, jlen)) abort();
    free(fb);
    free(jb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *body = (const char *)data;
    batch *fast = NULL, *slow = NULL;
    ingest_error e;
    memset(&e, 0, sizeof(e));
    int frc = ingest_canonical_json_fast(body, size, &FUZZ_LIMITS, &fast);
    int jrc = ingest_canonical_json_jansson(body, size, &FUZZ_LIMITS, &slow, &e);
    if (frc != MD_OK) {
        if (frc != MD_ERR_INVALID || fast) abort();
    } else {
        if (jrc != MD_OK) abort(); /* accepted what jansson rejects */
        expect_same_batch(fast, slow);
        ingest_check(MD_OK, fast, &e); /* frees fast */
    }
    ingest_check(jrc, slow, &e); /* frees slow */
    return 0;
}
