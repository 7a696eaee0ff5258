/* One gRPC call: its life (references, close batch), request decoding, replies and streams. */
#include "core/log.h"
#include "core/membudget.h"
#include "core/timeutil.h"
#include "query/grpc_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void rpc_free(grpcsrv_rpc *rpc)
{
    grpcsrv *srv = rpc->srv;
    if (rpc->state_free) rpc->state_free(rpc->state);
    if (rpc->payload) grpc_byte_buffer_destroy(rpc->payload);
    if (rpc->out) grpc_byte_buffer_destroy(rpc->out);
    grpc_metadata_array_destroy(&rpc->md);
    grpc_call_details_destroy(&rpc->details);
    if (rpc->call) grpc_call_unref(rpc->call);
    membudget_give(rpc->charged);
    free(rpc);
    pthread_mutex_lock(&srv->mu);
    srv->live--;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->mu);
}

void grpcsrv_unref(grpcsrv_rpc *rpc)
{
    if (atomic_fetch_sub(&rpc->refs, 1) == 1) rpc_free(rpc);
}

/* The close batch completed: the call is over, one way or another. */
static void on_close(void *owner, int ok)
{
    (void)ok;
    grpcsrv_rpc *rpc = owner;
    atomic_store(&rpc->closed, 1);
    grpcsrv_unref(rpc);
}

/* A call arrived (ok) or the server is shutting down (!ok). */
static void on_new(void *owner, int ok)
{
    grpcsrv_rpc *rpc = owner;
    grpcsrv *srv = rpc->srv;
    if (!ok) {
        grpcsrv_unref(rpc);
        return;
    }
    if (!rpc->method->handle) rpc->deadline = rpc->details.deadline;
    /* Keep one request outstanding per method; refusing is only possible when stopping. */
    if (!atomic_load(&srv->stopping) && grpcsrv_request(srv, rpc->method))
        log_warn("grpc_request_failed", "cannot wait for more %s calls", rpc->method->path);
    grpc_op op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    op.data.recv_close_on_server.cancelled = &rpc->close_cancelled;
    atomic_fetch_add(&rpc->refs, 1);
    if (grpc_call_start_batch(rpc->call, &op, 1, &rpc->t_close, NULL) != GRPC_CALL_OK) {
        atomic_store(&rpc->closed, 1);
        atomic_fetch_sub(&rpc->refs, 1);
    }
    rpc->method->handle_call(rpc);
}

int grpcsrv_request(grpcsrv *srv, const grpcsrv_method *m)
{
    grpcsrv_rpc *rpc = calloc(1, sizeof *rpc);
    if (!rpc) return -1;
    rpc->srv = srv;
    rpc->method = m;
    atomic_init(&rpc->refs, 1);
    grpc_metadata_array_init(&rpc->md);
    grpc_call_details_init(&rpc->details);
    rpc->t_new = (grpcsrv_tag){on_new, rpc};
    rpc->t_close = (grpcsrv_tag){on_close, rpc};
    pthread_mutex_lock(&srv->mu);
    srv->live++;
    pthread_mutex_unlock(&srv->mu);
    grpc_call_error ce;
    if (m->handle)
        ce = grpc_server_request_registered_call(srv->server, m->handle, &rpc->call, &rpc->deadline,
                                                 &rpc->md, &rpc->payload, srv->cq, srv->cq,
                                                 &rpc->t_new);
    else
        ce = grpc_server_request_call(srv->server, &rpc->call, &rpc->details, &rpc->md, srv->cq,
                                      srv->cq, &rpc->t_new);
    if (ce == GRPC_CALL_OK) return 0;
    grpcsrv_unref(rpc);
    return -1;
}

int grpcsrv_payload(grpcsrv_rpc *rpc, grpc_slice *out)
{
    if (!rpc->payload) return -1;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, rpc->payload)) return -1;
    *out = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    return 0;
}

grpc_status_code grpcsrv_decode_call(grpcsrv_rpc *rpc,
                                     grpc_status_code (*decode)(const uint8_t *data, size_t len,
                                                                char *msg, size_t msglen),
                                     char *msg, size_t msglen)
{
    grpc_slice s;
    if (grpcsrv_payload(rpc, &s)) return decode(NULL, 0, msg, msglen);
    grpc_status_code code = decode(GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), msg, msglen);
    grpc_slice_unref(s);
    return code;
}

grpc_byte_buffer *grpcsrv_pack(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(len); /* gpr allocations abort when out of memory */
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* A handler batch completed: release its message, then let the handler go on. */
static void on_sent(void *owner, int ok)
{
    grpcsrv_rpc *rpc = owner;
    if (rpc->out) grpc_byte_buffer_destroy(rpc->out);
    rpc->out = NULL;
    void (*next)(grpcsrv_rpc *, int) = rpc->on_sent;
    rpc->on_sent = NULL;
    if (next)
        next(rpc, ok);
    else
        grpcsrv_unref(rpc);
}

static const char *const CODE_NAMES[] = {
    "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED"};

void grpcsrv_reply(grpcsrv_rpc *rpc, grpc_byte_buffer *msg, grpc_status_code code, const char *fmt,
                   ...)
{
    char details[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(details, sizeof details, fmt, ap);
    va_end(ap);
    if (code != GRPC_STATUS_OK) {
        int server_fault = code == GRPC_STATUS_INTERNAL || code == GRPC_STATUS_UNAVAILABLE ||
                           code == GRPC_STATUS_RESOURCE_EXHAUSTED;
        const char *name =
            (unsigned)code < sizeof CODE_NAMES / sizeof CODE_NAMES[0] ? CODE_NAMES[code] : "?";
        log_emit(server_fault ? LOG_WARN : LOG_INFO, "grpc_error",
                 json_pack("{s:s,s:s,s:s}", "method", rpc->method->path, "code", name, "message",
                           details),
                 "%s: %s %s", rpc->method->path, name, details);
    }
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!rpc->sent_initial) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    rpc->sent_initial = 1;
    if (msg) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = msg;
    }
    grpc_slice d = grpc_slice_from_copied_string(details);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = &d;
    rpc->out = msg;
    rpc->on_sent = NULL;
    rpc->t_send = (grpcsrv_tag){on_sent, rpc};
    grpc_call_error ce = grpc_call_start_batch(rpc->call, ops, n, &rpc->t_send, NULL);
    grpc_slice_unref(d);
    if (ce != GRPC_CALL_OK) {
        log_warn("grpc_batch_failed", "%s: %s", rpc->method->path, grpc_call_error_to_string(ce));
        on_sent(rpc, 0);
    }
}

void grpcsrv_send(grpcsrv_rpc *rpc, grpc_byte_buffer *msg, void (*then)(grpcsrv_rpc *rpc, int ok))
{
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof ops);
    if (!rpc->sent_initial) ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    rpc->sent_initial = 1;
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = msg;
    rpc->out = msg;
    rpc->on_sent = then;
    rpc->t_send = (grpcsrv_tag){on_sent, rpc};
    if (grpc_call_start_batch(rpc->call, ops, n, &rpc->t_send, NULL) != GRPC_CALL_OK)
        on_sent(rpc, 0);
}

int grpcsrv_should_stop(grpcsrv_rpc *rpc)
{
    if (atomic_load(&rpc->closed) || atomic_load(&rpc->srv->stopping)) return 1;
    gpr_timespec now = gpr_now(rpc->deadline.clock_type);
    return gpr_time_cmp(now, rpc->deadline) >= 0;
}

int grpcsrv_metadata(grpcsrv_rpc *rpc, const char *key, char *out, size_t outlen)
{
    out[0] = '\0';
    for (size_t i = 0; i < rpc->md.count; i++) {
        if (grpc_slice_str_cmp(rpc->md.metadata[i].key, key) != 0) continue;
        grpc_slice v = rpc->md.metadata[i].value;
        size_t len = GRPC_SLICE_LENGTH(v);
        if (len >= outlen) len = outlen - 1;
        memcpy(out, GRPC_SLICE_START_PTR(v), len);
        out[len] = '\0';
        return 1;
    }
    return 0;
}

int grpcsrv_ts_to_us(const Google__Protobuf__Timestamp *ts, int64_t *us)
{
    if (ts->nanos < 0 || ts->nanos > 999999999) return -1;
    if (ts->seconds < TIME_MIN_US / TIME_US_PER_SEC || ts->seconds > TIME_MAX_US / TIME_US_PER_SEC)
        return -1;
    *us = ts->seconds * TIME_US_PER_SEC + ts->nanos / 1000;
    return 0;
}

void grpcsrv_us_to_ts(int64_t us, Google__Protobuf__Timestamp *ts)
{
    int64_t s = us / TIME_US_PER_SEC, rem = us % TIME_US_PER_SEC;
    if (rem < 0) {
        s--;
        rem += TIME_US_PER_SEC;
    }
    ts->seconds = s;
    ts->nanos = (int32_t)(rem * 1000);
}
