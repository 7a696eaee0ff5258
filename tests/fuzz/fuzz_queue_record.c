/* libFuzzer target: a queue record's payload (meterd.v1.Batch, src/core/batch.c batch_decode),
 * as the worker reads it back from the WAL, RabbitMQ or Redis: in distributed mode any client
 * of the broker can publish one. Whatever the bytes, decoding either fails with
 * MD_ERR_CORRUPT and a message, or gives a batch that encodes and decodes back to the same
 * readings. Seeds: tests/fuzz/corpus/queue_record/ (records of a real queue). */
#include "core/batch.h"
#include "core/error.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int same_str(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    batch *b = NULL;
    char err[128] = "";
    int rc = batch_decode(data, size, &b, err, sizeof err);
    if (rc != MD_OK) {
        if (b || !err[0]) abort();
        if (rc != MD_ERR_CORRUPT && rc != MD_ERR_NOMEM) abort();
        return 0;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    batch *back = NULL;
    if (batch_encode(b, &buf, &len) != MD_OK) abort();
    if (batch_decode(buf, len, &back, err, sizeof err) != MD_OK) abort();
    if (back->n_readings != b->n_readings || back->n_links != b->n_links) abort();
    if (memcmp(back->id, b->id, sizeof b->id) || back->received_at_us != b->received_at_us)
        abort();
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *x = &b->readings[i], *y = &back->readings[i];
        if (!same_str(x->device, y->device) || !same_str(x->metric, y->metric) ||
            !same_str(x->site, y->site) || !same_str(x->device_kind, y->device_kind) ||
            !same_str(x->invalid_reason, y->invalid_reason) || x->ts_us != y->ts_us ||
            x->quality != y->quality)
            abort();
        /* equal as numbers: NaN stays NaN; -0.0 comes back as 0 (batch_encode leaves a zero
         * value out, as proto3 does with defaults) */
        if (!(x->value == y->value || (isnan(x->value) && isnan(y->value)))) abort();
    }
    for (size_t i = 0; i < b->n_links; i++)
        if (!same_str(b->links[i].device, back->links[i].device) ||
            !same_str(b->links[i].linked_device, back->links[i].linked_device) ||
            !same_str(b->links[i].relation, back->links[i].relation))
            abort();
    free(buf);
    batch_free(back);
    batch_free(b);
    return 0;
}
