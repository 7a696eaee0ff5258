/* libFuzzer target: the request messages of the gRPC service, decoded and checked by the very
 * functions the handlers run (query/grpc_decode.h). The first byte picks the method, the rest is
 * the message:
 *   0: meterd.v1.Meterd/Write          WriteRequest → canonical batch
 *   1: meterd.v1.Meterd/Query          QueryRequest → device, metric, [from, to), limit
 *   2: meterusage.v1.MeterUsage/GetMetrics   Empty
 *   3: grpc.health.v1.Health/Check     HealthCheckRequest
 * Seeds: tests/fuzz/corpus/grpc_messages/, written by tests/fuzz/grpc_messages_seeds.py. */
#include "ingest_check.h"
#include "meterd/v1/meterd.pb-c.h"
#include "query/grpc_decode.h"

#include <stdint.h>

#define MSG_LEN 300 /* what the handlers pass */

/* A failure names what is wrong in a message the client gets and the log line carries. */
static void check_message(const char *msg)
{
    size_t n = strnlen(msg, MSG_LEN);
    if (n == 0 || n == MSG_LEN) abort();
    json_t *s = json_string(msg); /* log lines are JSON: valid UTF-8 only */
    if (!s) abort();
    json_decref(s);
}

static int utf8_ok(const char *s)
{
    json_t *j = json_string(s);
    json_decref(j);
    return j != NULL;
}

/* An accepted batch holds exactly the request's readings, each passing the Write checks. */
static void check_write(const uint8_t *data, size_t size, batch *b)
{
    Meterd__V1__WriteRequest *req = meterd__v1__write_request__unpack(NULL, size, data);
    if (!req || !b || strcmp(b->source, "grpc.meterd.v1.Write")) abort();
    if (b->n_readings != req->n_readings || b->n_readings == 0) abort();
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        const Meterd__V1__Point *p = req->readings[i];
        if (strcmp(r->device, p->device) || strcmp(r->metric, p->metric) ||
            strcmp(r->site, p->site))
            abort();
        if (strlen(r->device) > 256 || strlen(r->metric) > 128 || strlen(r->site) > 256) abort();
        if (strchr(r->device, '/') || strchr(r->site, '/')) abort();
        if (!utf8_ok(r->device) || !utf8_ok(r->metric) || !utf8_ok(r->site)) abort();
        if (!p->ts || p->ts->nanos < 0 || p->ts->nanos > 999999999 ||
            r->ts_us != p->ts->seconds * TIME_US_PER_SEC + p->ts->nanos / 1000)
            abort();
        if (p->kind[0] ? strcmp(r->device_kind, p->kind) : strcmp(r->device_kind, "device"))
            abort();
        /* NaN != NaN: compare the bits */
        if (memcmp(&r->value, &p->value, sizeof r->value)) abort();
    }
    meterd__v1__write_request__free_unpacked(req, NULL);
    ingest_error e = {0};
    ingest_check(MD_OK, b, &e); /* the common rules and the queue round trip; frees b */
}

static void fuzz_write(const uint8_t *data, size_t size)
{
    char msg[MSG_LEN];
    batch *b = (batch *)1;
    grpc_status_code code = grpcsrv_write_decode(data, size, &FUZZ_LIMITS, &b, msg, sizeof msg);
    if (code == GRPC_STATUS_OK) {
        check_write(data, size, b);
        return;
    }
    if (b) abort(); /* all or nothing */
    if (code != GRPC_STATUS_INVALID_ARGUMENT && code != GRPC_STATUS_RESOURCE_EXHAUSTED) abort();
    check_message(msg);
}

static void fuzz_query(const uint8_t *data, size_t size)
{
    char msg[MSG_LEN];
    grpcsrv_query_args a;
    grpc_status_code code = grpcsrv_query_decode(data, size, &a, msg, sizeof msg);
    if (code == GRPC_STATUS_OK) {
        if (!a.device || !a.device[0] || (a.metric && !a.metric[0]) || a.limit == 0) abort();
        if (a.from_us < TIME_MIN_US || a.to_us > TIME_MAX_US || a.from_us > a.to_us) abort();
    } else {
        if (code != GRPC_STATUS_INVALID_ARGUMENT && code != GRPC_STATUS_RESOURCE_EXHAUSTED) abort();
        check_message(msg);
    }
    grpcsrv_query_args_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    const uint8_t method = data[0] % 4;
    data++, size--;
    char msg[MSG_LEN];
    grpc_status_code code;
    switch (method) {
    case 0:
        fuzz_write(data, size);
        break;
    case 1:
        fuzz_query(data, size);
        break;
    case 2:
        code = grpcsrv_empty_decode(data, size, msg, sizeof msg);
        if (code != GRPC_STATUS_OK) {
            if (code != GRPC_STATUS_INVALID_ARGUMENT) abort();
            check_message(msg);
        }
        break;
    default:
        code = grpcsrv_health_decode(data, size, msg, sizeof msg);
        if (code != GRPC_STATUS_OK) {
            if (code != GRPC_STATUS_INVALID_ARGUMENT && code != GRPC_STATUS_NOT_FOUND) abort();
            check_message(msg);
        }
        break;
    }
    return 0;
}
