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

/* What a decoder may legitimately do beyond the common rules. */
enum {
    INGEST_CHECK_422 = 1,          /* rejects with 422 (FastAPI-style), with a type */
    INGEST_CHECK_EMPTY_BATCH = 2,  /* accepts a batch of zero readings */
    INGEST_CHECK_EMPTY_METRIC = 4, /* emits "" metrics, always marked invalid with a reason */
};

static inline void ingest_check_ex(int rc, batch *b, const ingest_error *e, unsigned allow)
{
    if (rc == MD_OK) {
        if (!b || b->n_readings > FUZZ_LIMITS.max_readings) abort();
        if (b->n_readings == 0 && !(allow & INGEST_CHECK_EMPTY_BATCH)) abort();
        for (size_t i = 0; i < b->n_readings; i++) {
            const reading *r = &b->readings[i];
            if (!r->device || !r->metric || !r->site || !r->device_kind || !r->invalid_reason)
                abort();
            if (!r->device[0]) abort();
            if (!r->metric[0] && (!(allow & INGEST_CHECK_EMPTY_METRIC) || !r->invalid_reason[0]))
                abort();
            if (r->ts_us < TIME_MIN_US || r->ts_us > TIME_MAX_US) abort();
            if (strcmp(r->device_kind, "meter") && strcmp(r->device_kind, "device") &&
                strcmp(r->device_kind, "vehicle") && strcmp(r->device_kind, "client"))
                abort();
        }
        for (size_t i = 0; i < b->n_links; i++)
            if (!b->links[i].device[0] || !b->links[i].linked_device[0]) abort();
        /* Whatever was accepted must survive the queue encoding. */
        uint8_t *buf;
        size_t len;
        batch *back = NULL;
        char err[128];
        if (batch_encode(b, &buf, &len) == MD_OK) {
            if (batch_decode(buf, len, &back, err, sizeof(err)) == MD_OK) {
                if (back->n_readings != b->n_readings || back->n_links != b->n_links) abort();
                batch_free(back);
            }
            free(buf);
        }
        batch_free(b);
        return;
    }
    if (b) abort(); /* all or nothing */
    if (rc == MD_ERR_NOMEM) return;
    if (rc != MD_ERR_INVALID) abort();
    if (e->status == 422) {
        if (!(allow & INGEST_CHECK_422) || !e->type[0]) abort();
    } else if (e->status != 400 && e->status != 413) {
        abort();
    }
    size_t n = strnlen(e->message, sizeof(e->message));
    if (n == 0 || n == sizeof(e->message)) abort();
    if (strnlen(e->field, sizeof(e->field)) == sizeof(e->field)) abort();
    if (strnlen(e->type, sizeof(e->type)) == sizeof(e->type)) abort();
    /* The message goes into a JSON reply: jansson must accept it as a string. */
    json_t *s = json_string(e->message);
    if (!s) abort();
    json_decref(s);
}

static inline void ingest_check(int rc, batch *b, const ingest_error *e)
{
    ingest_check_ex(rc, b, e, 0);
}

#endif
