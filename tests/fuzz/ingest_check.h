/* Invariants every ingest decoder must keep, whatever the input; shared by the fuzz targets. */
#ifndef METERD_FUZZ_INGEST_CHECK_H
#define METERD_FUZZ_INGEST_CHECK_H

#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/ingest.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* A small limit, so the fuzzer reaches the 413 path with short inputs. */
static const ingest_limits FUZZ_LIMITS = {.max_readings = 64};

static void ingest_check(int rc, batch *b, const ingest_error *e)
{
    if (rc == MD_OK) {
        if (!b || b->n_readings == 0 || b->n_readings > FUZZ_LIMITS.max_readings) abort();
        for (size_t i = 0; i < b->n_readings; i++) {
            const reading *r = &b->readings[i];
            if (!r->device || !r->metric || !r->site || !r->device_kind) abort();
            if (!r->device[0] || !r->metric[0]) abort();
            if (r->ts_us < TIME_MIN_US || r->ts_us > TIME_MAX_US) abort();
            if (strcmp(r->device_kind, "meter") && strcmp(r->device_kind, "device") &&
                strcmp(r->device_kind, "vehicle") && strcmp(r->device_kind, "client"))
                abort();
        }
        batch_free(b);
        return;
    }
    if (b) abort(); /* all or nothing */
    if (rc == MD_ERR_NOMEM) return;
    if (rc != MD_ERR_INVALID || (e->status != 400 && e->status != 413)) abort();
    size_t n = strnlen(e->message, sizeof(e->message));
    if (n == 0 || n == sizeof(e->message)) abort();
    /* The message goes into a JSON reply: jansson must accept it as a string. */
    json_t *s = json_string(e->message);
    if (!s) abort();
    json_decref(s);
}

#endif
