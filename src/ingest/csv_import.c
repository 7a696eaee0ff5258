#include "ingest/csv_import.h"
#include "core/batch.h"
#include "core/error.h"
#include "core/log.h"
#include "ingest/csv.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define IMPORT_BATCH 5000
#define PROGRESS_EVERY 100000

/* Publishes one batch, waiting while the queue is over its backlog budget. */
static int publish(queue *q, batch *b, csv_import_stats *st, char *err, size_t errlen)
{
    uint8_t *buf;
    size_t len;
    if (batch_encode(b, &buf, &len)) {
        snprintf(err, errlen, "out of memory");
        return MD_ERR_NOMEM;
    }
    int rc;
    while ((rc = queue_publish_wait(q, buf, len)) == MD_ERR_FULL) usleep(50 * 1000);
    free(buf);
    if (rc) {
        snprintf(err, errlen, "queue: %s", md_strerror(rc));
        return rc;
    }
    st->published += b->n_readings;
    st->batches++;
    return MD_OK;
}

int csv_import(queue *q, const char *path, const char *device, csv_import_stats *st,
               csv_import_progress progress, void *arg, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return MD_ERR_IO;
    }
    csv_reader *r = csv_open(f, err, errlen);
    if (!r) {
        fclose(f);
        return MD_ERR_INVALID;
    }
    int rc = MD_OK;
    batch *b = NULL;
    for (;;) {
        int64_t ts;
        double v;
        char why[256];
        int got = csv_next(r, &ts, &v, why, sizeof why);
        if (got == 0) break;
        if (got == MD_ERR_IO) {
            snprintf(err, errlen, "reading %s: %s", path, why);
            rc = MD_ERR_IO;
            break;
        }
        st->rows++;
        if (got < 0) {
            st->skipped++;
            if (st->skipped <= 10) log_emit(LOG_INFO, "csv_row_skipped", NULL, "%s", why);
        } else {
            if (!b && !(b = batch_new("import.csv"))) {
                rc = MD_ERR_NOMEM;
                break;
            }
            if ((rc = batch_add(b, device, "meter", "", csv_metric(r), ts, v))) break;
            if (b->n_readings == IMPORT_BATCH) {
                rc = publish(q, b, st, err, errlen);
                batch_free(b);
                b = NULL;
                if (rc) break;
            }
        }
        if (progress && st->rows % PROGRESS_EVERY == 0) progress(st, arg);
    }
    if (rc == MD_OK && b && b->n_readings) rc = publish(q, b, st, err, errlen);
    if (rc == MD_ERR_NOMEM) snprintf(err, errlen, "out of memory");
    batch_free(b);
    csv_close(r);
    fclose(f);
    return rc;
}
