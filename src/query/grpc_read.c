/* The read side over gRPC: meterd.v1.Meterd/Query (a stream, paged through the store) and
 * meterusage.v1.MeterUsage/GetMetrics (the seeded meter in one message). */
#include "core/error.h"
#include "core/timeutil.h"
#include "meterd/v1/meterd.pb-c.h"
#include "meterusage.pb-c.h"
#include "query/common.h"
#include "query/grpc_internal.h"

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

/* Checks the request and fills st; a gRPC status (with msg) when it is not acceptable. */
static grpc_status_code query_parse(const Meterd__V1__QueryRequest *req, query_state *st, char *msg,
                                    size_t msglen)
{
    st->q.from_us = TIME_MIN_US;
    st->q.to_us = TIME_MAX_US;
    if (!req->device[0]) {
        snprintf(msg, msglen, "device: must not be empty");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (req->from && grpcsrv_ts_to_us(req->from, &st->q.from_us)) {
        snprintf(msg, msglen, "from: not a time in years 0001..9999");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (req->to && grpcsrv_ts_to_us(req->to, &st->q.to_us)) {
        snprintf(msg, msglen, "to: not a time in years 0001..9999");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (st->q.from_us > st->q.to_us) {
        snprintf(msg, msglen, "from: must not be after to");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    st->remaining = req->limit ? req->limit : UINT64_MAX;
    st->device = strdup(req->device);
    st->metric = req->metric[0] ? strdup(req->metric) : NULL;
    st->page = malloc(QUERY_PAGE * sizeof *st->page);
    if (!st->device || (req->metric[0] && !st->metric) || !st->page) {
        snprintf(msg, msglen, "out of memory");
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    st->q.device = st->device;
    st->q.metric = st->metric;
    st->q.after_ts_us = TIME_MIN_US;
    return GRPC_STATUS_OK;
}

void grpcsrv_handle_query(grpcsrv_rpc *rpc)
{
    char msg[300];
    Meterd__V1__QueryRequest *req =
        (Meterd__V1__QueryRequest *)grpcsrv_unpack(rpc, &meterd__v1__query_request__descriptor);
    if (!req) {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                      "request: not a meterd.v1.QueryRequest");
        return;
    }
    query_state *st = calloc(1, sizeof *st);
    grpc_status_code code =
        st ? query_parse(req, st, msg, sizeof msg) : GRPC_STATUS_RESOURCE_EXHAUSTED;
    protobuf_c_message_free_unpacked(&req->base, NULL);
    if (!st) snprintf(msg, sizeof msg, "out of memory");
    if (st) {
        rpc->state = st;
        rpc->state_free = query_state_free;
    }
    if (code != GRPC_STATUS_OK) {
        grpcsrv_reply(rpc, NULL, code, "%s", msg);
        return;
    }
    int found = query_find_device(rpc->srv->q, st->device, NULL, 0);
    if (found < 0)
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_INTERNAL, "store error reading the device");
    else if (!found)
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_NOT_FOUND, "device '%.256s' not found", st->device);
    else
        query_next(rpc, 1);
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
    ProtobufCMessage *req = grpcsrv_unpack(rpc, &meterusage__v1__empty__descriptor);
    if (!req) {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_INVALID_ARGUMENT,
                      "request: not a meterusage.v1.Empty");
        return;
    }
    protobuf_c_message_free_unpacked(req, NULL);
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
