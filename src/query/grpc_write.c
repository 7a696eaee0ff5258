/* meterd.v1.Meterd/Write: the binary ingest path. Checks like POST /api/v1/readings, publishes
 * the canonical batch, and answers from the queue's callback once the batch is durable. */
#include "core/batch.h"
#include "core/error.h"
#include "core/membudget.h"
#include "core/metrics.h"
#include "ingest/ingest.h"
#include "ingest/json_util.h"
#include "meterd/v1/meterd.pb-c.h"
#include "query/grpc_decode.h"
#include "query/grpc_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/support/alloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEVICE_MAX 256
#define METRIC_MAX 128
#define SITE_MAX 256

static const char *const KINDS[] = {"meter", "device", "vehicle", "client"};

/* What the publish callback needs to answer. */
typedef struct write_state {
    char batch_id[37];
    size_t n;
} write_state;

/* 1 when s is well-formed UTF-8 (protobuf-c does not check; JSON output downstream needs it). */
static int utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s++, extra = c < 0x80             ? 0
                                   : (c & 0xE0) == 0xC0 ? 1
                                   : (c & 0xF0) == 0xE0 ? 2
                                   : (c & 0xF8) == 0xF0 ? 3
                                                        : 4;
        if (extra == 4 || (extra == 1 && c < 0xC2) || (extra == 3 && c > 0xF4)) return 0;
        unsigned cp = c & (0x3Fu >> extra);
        for (unsigned i = 0; i < extra; i++, s++) {
            if ((*s & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (*s & 0x3Fu);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
    }
    return 1;
}

/* Checks one id-like string field; fills msg naming readings[i].<name> on failure. */
static int check_string(const char *v, size_t i, const char *name, size_t max, int required,
                        int path_segment, char *msg, size_t msglen)
{
    size_t len = strlen(v);
    if (required && len == 0)
        snprintf(msg, msglen, "readings[%zu].%s: must not be empty", i, name);
    else if (len > max)
        snprintf(msg, msglen, "readings[%zu].%s: %zu bytes exceed the limit of %zu", i, name, len,
                 max);
    else if (!utf8_valid((const unsigned char *)v))
        snprintf(msg, msglen, "readings[%zu].%s: not valid UTF-8", i, name);
    /* ids are one path segment of the read API, where '/' could never be read back */
    else if (path_segment && strchr(v, '/'))
        snprintf(msg, msglen, "readings[%zu].%s: must not contain '/'", i, name);
    else
        return 0;
    return -1;
}

/* Appends readings[i] to b after checking it. 0, MD_ERR_INVALID with msg, or MD_ERR_NOMEM. */
static int add_point(batch *b, const Meterd__V1__Point *p, size_t i, char *msg, size_t msglen)
{
    const char *kind = "device";
    int64_t ts;
    if (check_string(p->device, i, "device", DEVICE_MAX, 1, 1, msg, msglen) ||
        check_string(p->metric, i, "metric", METRIC_MAX, 1, 0, msg, msglen) ||
        check_string(p->site, i, "site", SITE_MAX, 0, 1, msg, msglen))
        return MD_ERR_INVALID;
    if (!p->ts) {
        snprintf(msg, msglen, "readings[%zu].ts: missing", i);
        return MD_ERR_INVALID;
    }
    if (grpcsrv_ts_to_us(p->ts, &ts)) {
        snprintf(msg, msglen, "readings[%zu].ts: %s", i,
                 p->ts->nanos < 0 || p->ts->nanos > 999999999 ? "nanos must be in 0..999999999"
                                                              : "outside years 0001..9999");
        return MD_ERR_INVALID;
    }
    if (p->kind[0]) {
        kind = NULL;
        for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++)
            if (!strcmp(p->kind, KINDS[k])) kind = KINDS[k];
        if (!kind) {
            snprintf(msg, msglen,
                     "readings[%zu].kind: must be one of meter, device, vehicle, client", i);
            return MD_ERR_INVALID;
        }
    }
    /* a non-finite value is kept: the worker stores it as invalid with its reason */
    return batch_add(b, p->device, kind, p->site, p->metric, ts, p->value) ? MD_ERR_NOMEM : 0;
}

/* Provenance of the batch: the peer's address and the client's user agent. */
static int set_client(grpcsrv_rpc *rpc, batch *b)
{
    char ua[256], rid[128], ip[64] = "";
    char *peer = grpc_call_get_peer(rpc->call); /* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000" */
    if (peer) {
        const char *h = strchr(peer, ':');
        h = h ? h + 1 : peer;
        if (*h == '[') {
            const char *e = strchr(++h, ']');
            snprintf(ip, sizeof ip, "%.*s", e ? (int)(e - h) : 0, h);
        } else {
            const char *e = strrchr(h, ':');
            snprintf(ip, sizeof ip, "%.*s", e ? (int)(e - h) : (int)strlen(h), h);
        }
        gpr_free(peer);
    }
    grpcsrv_metadata(rpc, "user-agent", ua, sizeof ua);
    grpcsrv_metadata(rpc, "x-request-id", rid, sizeof rid);
    if (!utf8_valid((unsigned char *)ua)) ua[0] = '\0';
    if (!utf8_valid((unsigned char *)rid)) rid[0] = '\0';
    return batch_set(b, &b->client_ip, ip) || batch_set(b, &b->client_user_agent, ua) ||
           batch_set(b, &b->request_id, rid);
}

grpc_status_code grpcsrv_write_decode(const uint8_t *data, size_t len, const ingest_limits *lim,
                                      batch **out, char *msg, size_t msglen)
{
    *out = NULL;
    Meterd__V1__WriteRequest *req =
        data ? meterd__v1__write_request__unpack(NULL, len, data) : NULL;
    if (!req) {
        snprintf(msg, msglen, "request: not a meterd.v1.WriteRequest");
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    grpc_status_code code = GRPC_STATUS_OK;
    ingest_error e = {0};
    batch *b = NULL;
    if (req->n_readings == 0) {
        snprintf(msg, msglen, "readings: must not be empty");
        code = GRPC_STATUS_INVALID_ARGUMENT;
    } else if (ingest_check_count(req->n_readings, lim, "readings", &e)) {
        snprintf(msg, msglen, "%s", e.message);
        code = GRPC_STATUS_INVALID_ARGUMENT;
    } else if (!(b = batch_new("grpc.meterd.v1.Write"))) {
        snprintf(msg, msglen, "out of memory");
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    for (size_t i = 0; code == GRPC_STATUS_OK && i < req->n_readings; i++) {
        int rc = add_point(b, req->readings[i], i, msg, msglen);
        if (rc == MD_ERR_NOMEM) {
            snprintf(msg, msglen, "out of memory");
            code = GRPC_STATUS_RESOURCE_EXHAUSTED;
        } else if (rc) {
            code = GRPC_STATUS_INVALID_ARGUMENT;
        }
    }
    meterd__v1__write_request__free_unpacked(req, NULL);
    if (code != GRPC_STATUS_OK)
        batch_free(b); /* all or nothing */
    else
        *out = b;
    return code;
}

/* Decodes and checks the call's request into *out, with the caller's provenance. 0, or a
 * gRPC status with msg. */
static grpc_status_code decode(grpcsrv_rpc *rpc, batch **out, char *msg, size_t msglen)
{
    grpc_slice s;
    int have = grpcsrv_payload(rpc, &s) == 0;
    grpc_status_code code =
        grpcsrv_write_decode(have ? GRPC_SLICE_START_PTR(s) : NULL, have ? GRPC_SLICE_LENGTH(s) : 0,
                             &rpc->srv->in->limits, out, msg, msglen);
    if (have) grpc_slice_unref(s);
    if (code == GRPC_STATUS_OK && set_client(rpc, *out)) {
        batch_free(*out);
        *out = NULL;
        snprintf(msg, msglen, "out of memory");
        code = GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    return code;
}

/* Queue callback (a queue thread): the batch is durable, or definitely not. */
static void on_durable(void *arg, int status, const char *position)
{
    grpcsrv_rpc *rpc = arg;
    write_state *st = rpc->state;
    if (status != MD_OK) {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_UNAVAILABLE,
                      "the queue could not make the batch durable: %s", md_strerror(status));
        return;
    }
    metrics_add(MC_BATCHES_ACCEPTED, 1);
    metrics_add(MC_READINGS_ACCEPTED, st->n);
    Meterd__V1__WriteResponse resp = METERD__V1__WRITE_RESPONSE__INIT;
    resp.batch_id = st->batch_id;
    resp.accepted = (uint32_t)st->n;
    resp.position = (char *)(position ? position : "");
    grpcsrv_reply_ok(rpc, grpcsrv_pack(&resp.base));
}

void grpcsrv_handle_write(grpcsrv_rpc *rpc)
{
    grpcsrv *srv = rpc->srv;
    char msg[300];
    batch *b;
    if (atomic_load(&srv->in->closing) || atomic_load(&srv->stopping)) {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_UNAVAILABLE,
                      "shutting down; retry on another instance");
        return;
    }
    /* the message is held until the call ends; counted like an HTTP body */
    uint64_t size = rpc->payload ? grpc_byte_buffer_length(rpc->payload) : 0;
    if (membudget_take(size)) {
        metrics_add(MC_REJECTED_MEMORY, 1);
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "request messages in memory are over the budget of %" PRIu64
                      " bytes (--max-inflight-bytes); retry later",
                      membudget_max());
        return;
    }
    rpc->charged = size;
    grpc_status_code code = decode(rpc, &b, msg, sizeof msg);
    if (code != GRPC_STATUS_OK) {
        grpcsrv_reply(rpc, NULL, code, "%s", msg);
        return;
    }
    write_state *st = malloc(sizeof *st);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (!st || batch_encode(b, &buf, &len)) {
        free(st);
        batch_free(b);
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    st->n = b->n_readings;
    batch_id_format(b->id, st->batch_id);
    batch_free(b);
    rpc->state = st;
    rpc->state_free = free;
    queue *q = srv->in->q;
    int rc = queue_publish(q, buf, len, on_durable, rpc); /* the reference goes with it */
    free(buf);
    if (rc == MD_OK) return;
    if (rc == MD_ERR_FULL) {
        metrics_add(MC_REJECTED_BACKPRESSURE, 1);
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_RESOURCE_EXHAUSTED,
                      "queue backlog over budget; retry later");
    } else {
        grpcsrv_reply(rpc, NULL, GRPC_STATUS_UNAVAILABLE, "queue unavailable; retry later");
    }
}
