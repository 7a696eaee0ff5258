/* The read side over gRPC: meterd.v1.Meterd/Query (a stream, paged through the store) and
 * meterusage.v1.MeterUsage/GetMetrics (the seeded meter in one message). */
#include "core/error.h"
#include "core/timeutil.h"
#include "ingest/json_util.h"
#include "meterd/v1/meterd.pb-c.h"
#include "meterusage.pb-c.h"
#include "query/common.h"
#include "query/grpc_decode.h"
#include "query/grpc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Readings fetched per store query while streaming: bounds memory and the time one
 * completion-queue event spends in the store. */
#define QUERY_PAGE 512

typedef struct query_state {
    store_readings_query q;
    char *device, *metric;   /* owned: the request's */
    char *after_metric;      /* owned: cursor (metric of the last row sent) */
    uint64_t remaining;      /* readings still allowed by the request's limit; UINT64_MAX: all */
    grpc_byte_buffer **page; /* owned: encoded Points of the current page */
    size_t n, next;
    int last_page; /* the store has nothing after this page */
    int nomem;
} query_state;

static void query_state_free(void *arg)
{
    query_state *st = arg;
    for (size_t i = st->next; i < st->n; i++)
        grpc_byte_buffer_destroy(st->page[i]);
    free(st->page);
    free(st->device);
    free(st->metric);
    free(st->after_metric);
    free(st);
}

/* Store row → an encoded Point appended to the page. */
static int page_row(void *arg, const store_reading *r)
{
    query_state *st = arg;
    Meterd__V1__Point p = METERD__V1__POINT__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    grpcsrv_us_to_ts(r->ts_us, &ts);
    p.device = (char *)r->device;
    p.metric = (char *)r->metric;
    p.ts = &ts;
    p.value = r->value;
    p.site = (char *)(r->site ? r->site : "");
    p.valid = r->valid != 0;
    p.reason = (char *)(r->reason ? r->reason : "");
    char *m = strdup(r->metric);
    if (!m) {
        st->nomem = 1;
        return 1;
    }
    free(st->after_metric);
    st->after_metric = m;
    st->q.after_ts_us = r->ts_us;
    st->page[st->n++] = grpcsrv_pack(&p.base);
    return 0;
}

/* Fetches the next page after the cursor. 0 or MD_ERR_STORE / MD_ERR_NOMEM. */
static int fetch_page(grpcsrv_rpc *rpc, query_state *st)
{
    st->n = st->next = 0;
    size_t want = st->remaining < QUERY_PAGE ? (size_t)st->remaining : QUERY_PAGE;
    st->q.limit = want;
    st->q.after_metric = st->after_metric;
    int rc = rpc->srv->q->s->ops->readings(rpc->srv->q->s, &st->q, page_row, st);
    st->q.after_metric = NULL;
    if (rc) return rc;
    if (st->nomem) return MD_ERR_NOMEM;
    if (st->n < want) st->last_page = 1;
    st->remaining -= st->n;
    if (st->remaining == 0) st->last_page = 1;
    return MD_OK;
}

/* Sends the next reading, or ends the stream; runs again when the transport took it. */
static void query_next(grpcsrv_rpc *rpc, int ok)
{
    query_state *st = rpc->state;
    if (!ok || atomic_load(&rpc->closed)) {
        grpcsrv_unref(rpc); /* cancelled or past the deadline: nobody listens any more */
        return;
    }
    if (st->next == st->n && !st->last_page) {
        if (grpcsrv_should_stop(rpc)) {
            if (atomic_load(&rpc->srv->stopping))
                grpcsrv_reply(rpc, NULL, GRPC_STATUS_UNAVAILABLE, "shutting down");
            else
                grpcsrv_reply(rpc, NULL, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
            return;
        }
        int rc = fetch_page(rpc, st);
        if (rc) {
            grpcsrv_reply(rpc, NULL, GRPC_STATUS_INTERNAL, "store error reading readings: %s",
                          md_strerror(rc));
            return;
        }
    }
    if (st->next < st->n) {
        grpc_byte_buffer *bb = st->page[st->next++];
        grpcsrv_send(rpc, bb, query_next);
        return;
    }
    grpcsrv_reply_ok(rpc, NULL);
}

grpc_status_code grpcsrv_query_decode(const uint8_t *data, size_t len, grpcsrv_query_args *out,
                                      char *msg, size_t msglen)
{
    memset(out, 0, sizeof *out);
    out->from_us = TIME_MIN_US;
    out->to_us = TIME_MAX_US;
    Meterd__V1__QueryRequest *req =
        data ? meterd__v1__query_request__unpack(NULL, len, data) : NULL;
    grpc_status_code code = GRPC_STATUS_INVALID_ARGUMENT;
    if (!req)
        snprintf(msg, msglen, "request: not a meterd.v1.QueryRequest");
    else if (!req->device[0])
        snprintf(msg, msglen, "device: must not be empty");
    else if (req->from && grpcsrv_ts_to_us(req->from, &out->from_us))
        snprintf(msg, msglen, "from: not a time in years 0001..9999");
    else if (req->to && grpcsrv_ts_to_us(req->to, &out->to_us))
        snprintf(msg, msglen, "to: not a time in years 0001..9999");
    else if (out->from_us > out->to_us)
        snprintf(msg, msglen, "from: must not be after to");
    else if (!(out->device = strdup(req->device)) ||
             (req->metric[0] && !(out->metric = strdup(req->metric)))) {
        snprintf(msg, msglen, "out of memory");
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    } else {
        out->limit = req->limit ? req->limit : UINT64_MAX;
        code = GRPC_STATUS_OK;
    }
    if (req) meterd__v1__query_request__free_unpacked(req, NULL);
    return code;
}

void grpcsrv_query_args_free(grpcsrv_query_args *a)
{
    free(a->device);
    free(a->metric);
    a->device = a->metric = NULL;
}

void grpcsrv_handle_query(grpcsrv_rpc *rpc)
{
    char msg[300];
    grpcsrv_query_args args;
    grpc_slice s;
    int have = grpcsrv_payload(rpc, &s) == 0;
    grpc_status_code code =
        grpcsrv_query_decode(have ? GRPC_SLICE_START_PTR(s) : NULL,
                             have ? GRPC_SLICE_LENGTH(s) : 0, &args, msg, sizeof msg);
    if (have) grpc_slice_unref(s);
    query_state *st = code == GRPC_STATUS_OK ? calloc(1, sizeof *st) : NULL;
    if (st && !(st->page = malloc(QUERY_PAGE * sizeof *st->page))) {
        free(st);
        st = NULL;
    }
    if (code == GRPC_STATUS_OK && !st) {
        snprintf(msg, sizeof msg, "out of memory");
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    if (code != GRPC_STATUS_OK) {
        grpcsrv_query_args_free(&args);
        grpcsrv_reply(rpc, NULL, code, "%s", msg);
        return;
    }
    st->device = args.device; /* the state owns them now */
    st->metric = args.metric;
    st->remaining = args.limit;
    st->q.device = st->device;
    st->q.metric = st->metric;
    st->q.from_us = args.from_us;
    st->q.to_us = args.to_us;
    st->q.after_ts_us = TIME_MIN_US;
    rpc->state = st;
    rpc->state_free = query_state_free;
    int found = query_find_device(rpc->srv->q, st->device, NULL, 0);
    if (found < 0) {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_INTERNAL, "store error reading the device");
    } else if (!found) { /* the id is the client's bytes: made valid UTF-8 for the log line */
        ingest_error e;
        ingest_fail(&e, 404, "device '%.200s' not found", st->device);
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_NOT_FOUND, "%s", e.message);
    } else {
        query_next(rpc, 1);
    }
}

grpc_status_code grpcsrv_empty_decode(const uint8_t *data, size_t len, char *msg, size_t msglen)
{
    Meterusage__V1__Empty *req = data ? meterusage__v1__empty__unpack(NULL, len, data) : NULL;
    if (!req) {
        snprintf(msg, msglen, "request: not a meterusage.v1.Empty");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    meterusage__v1__empty__free_unpacked(req, NULL);
    return GRPC_STATUS_OK;
}

/* GetMetrics: valid (ts, value) rows of the seeded meter, collected page by page. */
typedef struct metrics_rows {
    Meterusage__V1__Metric *metrics;
    Google__Protobuf__Timestamp *times;
    size_t n, cap;
    int64_t last_ts;
    size_t page_rows;
    int nomem;
} metrics_rows;

static int metrics_row(void *arg, const store_reading *r)
{
    metrics_rows *m = arg;
    m->page_rows++;
    m->last_ts = r->ts_us;
    if (!r->valid) return 0;
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 1024;
        Meterusage__V1__Metric *nm = realloc(m->metrics, cap * sizeof *nm);
        if (nm) m->metrics = nm;
        Google__Protobuf__Timestamp *nt = realloc(m->times, cap * sizeof *nt);
        if (nt) m->times = nt;
        if (!nm || !nt) {
            m->nomem = 1;
            return 1;
        }
        m->cap = cap;
    }
    Google__Protobuf__Timestamp *t = &m->times[m->n];
    Meterusage__V1__Metric *x = &m->metrics[m->n++];
    *t = (Google__Protobuf__Timestamp)GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    *x = (Meterusage__V1__Metric)METERUSAGE__V1__METRIC__INIT;
    grpcsrv_us_to_ts(r->ts_us, t);
    x->meterusage = r->value;
    return 0;
}

void grpcsrv_handle_get_metrics(grpcsrv_rpc *rpc)
{
    grpcsrv *srv = rpc->srv;
    char msg[300];
    grpc_status_code code = grpcsrv_decode_call(rpc, grpcsrv_empty_decode, msg, sizeof msg);
    if (code != GRPC_STATUS_OK) {
        grpcsrv_reply(rpc, NULL, code, "%s", msg);
        return;
    }
    metrics_rows m = {0};
    store_readings_query q = {.device = srv->seed_device,
                              .metric = srv->seed_metric,
                              .from_us = TIME_MIN_US,
                              .to_us = TIME_MAX_US,
                              .limit = QUERY_MAX_LIMIT};
    int rc = MD_OK, stopped = 0;
    do { /* one metric: the cursor is (last ts, that metric) */
        if ((stopped = grpcsrv_should_stop(rpc))) break; /* never a silently partial answer */
        m.page_rows = 0;
        rc = srv->q->s->ops->readings(srv->q->s, &q, metrics_row, &m);
        q.after_ts_us = m.last_ts;
        q.after_metric = srv->seed_metric;
    } while (rc == MD_OK && !m.nomem && m.page_rows == q.limit);
    grpc_byte_buffer *bb = NULL;
    if (rc == MD_OK && !m.nomem && !stopped) {
        Meterusage__V1__Metric **ptrs = malloc((m.n ? m.n : 1) * sizeof *ptrs);
        if (ptrs) {
            for (size_t i = 0; i < m.n; i++) {
                m.metrics[i].time = &m.times[i];
                ptrs[i] = &m.metrics[i];
            }
            Meterusage__V1__MetricsResponse resp = METERUSAGE__V1__METRICS_RESPONSE__INIT;
            resp.n_metrics = m.n;
            resp.metrics = ptrs;
            bb = grpcsrv_pack(&resp.base);
            free(ptrs);
        } else {
            m.nomem = 1;
        }
    }
    free(m.metrics);
    free(m.times);
    if (bb)
        grpcsrv_reply_ok(rpc, bb);
    else if (stopped)
        grpcsrv_reply(rpc, NULL,
                      atomic_load(&srv->stopping) ? GRPC_STATUS_UNAVAILABLE
                                                  : GRPC_STATUS_DEADLINE_EXCEEDED,
                      "%s", atomic_load(&srv->stopping) ? "shutting down" : "deadline exceeded");
    else if (m.nomem)
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    else
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_INTERNAL, "store error reading %s: %s",
                      srv->seed_device, md_strerror(rc));
}
