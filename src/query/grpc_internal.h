/* Shared by the gRPC service files: the server, one call (rpc) and its completion tags. */
#ifndef METERD_QUERY_GRPC_INTERNAL_H
#define METERD_QUERY_GRPC_INTERNAL_H

#include "google/protobuf/timestamp.pb-c.h"
#include "query/grpc.h"

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct grpcsrv_rpc grpcsrv_rpc;

/* What a completion-queue event runs: fn(owner, ok). Every tag given to the core is one. */
typedef struct grpcsrv_tag {
    void (*fn)(void *owner, int ok);
    void *owner;
} grpcsrv_tag;

/* One method: its path, its handle from grpc_server_register_method (NULL: the catch-all for
 * unknown methods) and the handler that runs when a call with its request message arrives. */
typedef struct grpcsrv_method {
    const char *path;
    void *handle;
    void (*handle_call)(grpcsrv_rpc *rpc);
} grpcsrv_method;

#define GRPCSRV_N_METHODS 4
#define GRPCSRV_CQ_THREADS 2

struct grpcsrv {
    query_ctx *q;   /* borrowed */
    ingest_ctx *in; /* borrowed */
    char seed_device[256], seed_metric[128];
    grpc_server *server;
    grpc_completion_queue *cq;
    grpcsrv_method methods[GRPCSRV_N_METHODS + 1]; /* the last one is the catch-all */
    pthread_t threads[GRPCSRV_CQ_THREADS];
    int n_threads;
    int port;
    atomic_int stopping;
    grpcsrv_tag t_shutdown;
    pthread_mutex_t mu; /* guards live, shutdown_done; cond signals changes */
    pthread_cond_t cond;
    long live;         /* rpcs allocated and not yet freed */
    int shutdown_done; /* the server shutdown tag completed */
};

/* One call. The handler owns one reference from the moment the call arrives; it travels with
 * each send batch (or the queue's publish callback) and ends with grpcsrv_reply. The close
 * batch (RECV_CLOSE_ON_SERVER) holds its own reference. */
struct grpcsrv_rpc {
    grpcsrv *srv;
    const grpcsrv_method *method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details; /* catch-all calls only */
    grpc_byte_buffer *payload; /* the request message; NULL when the client sent none */
    atomic_int refs;
    atomic_int closed;     /* the call is over: cancelled, deadline passed, or status sent */
    int close_cancelled;   /* filled by RECV_CLOSE_ON_SERVER */
    int sent_initial;      /* initial metadata sent (streams) */
    grpc_byte_buffer *out; /* the message in flight; destroyed when its batch completes */
    void (*on_sent)(grpcsrv_rpc *rpc, int ok); /* what to do when the send completes */
    grpcsrv_tag t_new, t_close, t_send;
    uint64_t charged; /* bytes taken from the request-memory budget (core/membudget.h) */
    void *state; /* handler state, freed with state_free */
    void (*state_free)(void *state);
};

/* grpc_call.c */
/* Asks the core for the next call of method m. 0, or -1 (no memory or the server refused). */
int grpcsrv_request(grpcsrv *srv, const grpcsrv_method *m);
/* The request message's bytes in *out (grpc_slice_unref it): 0, or -1 when there is none. */
int grpcsrv_payload(grpcsrv_rpc *rpc, grpc_slice *out);
/* Runs one of the grpc_decode.h checks that need nothing but the bytes on the call's request
 * (data NULL when there is none); returns its status, msg filled on failure. */
grpc_status_code grpcsrv_decode_call(grpcsrv_rpc *rpc,
                                     grpc_status_code (*decode)(const uint8_t *data, size_t len,
                                                                char *msg, size_t msglen),
                                     char *msg, size_t msglen);
/* m encoded as a byte buffer for a send (owned by the caller until handed to a send). */
grpc_byte_buffer *grpcsrv_pack(const ProtobufCMessage *m);
/* Ends the call: sends msg (taken; may be NULL), then status code with the formatted message.
 * Consumes the handler's reference. Safe from any thread. */
void grpcsrv_reply(grpcsrv_rpc *rpc, grpc_byte_buffer *msg, grpc_status_code code, const char *fmt,
                   ...) __attribute__((format(printf, 4, 5)));
/* Ends the call with msg (taken; may be NULL) and status OK. */
#define grpcsrv_reply_ok(rpc, msg) grpcsrv_reply((rpc), (msg), GRPC_STATUS_OK, "%s", "")
/* Sends one stream message (taken); on_sent(rpc, ok) runs on a queue thread when the transport
 * took it (ok 0: the call is gone). The handler's reference travels with the batch. */
void grpcsrv_send(grpcsrv_rpc *rpc, grpc_byte_buffer *msg,
                  void (*on_sent)(grpcsrv_rpc *rpc, int ok));
/* Drops a reference without sending anything (the call is already over). */
void grpcsrv_unref(grpcsrv_rpc *rpc);
/* 1 when the call is over (cancelled, deadline passed) or the server is stopping. */
int grpcsrv_should_stop(grpcsrv_rpc *rpc);
/* A request metadata value (e.g. "user-agent") copied into out (""/0 when absent). */
int grpcsrv_metadata(grpcsrv_rpc *rpc, const char *key, char *out, size_t outlen);
/* Converts a Timestamp to µs: 0, or -1 outside years 0001..9999 or nanos outside 0..999999999. */
int grpcsrv_ts_to_us(const Google__Protobuf__Timestamp *ts, int64_t *us);
/* Fills a google.protobuf.Timestamp (initialised by the caller) from µs. */
void grpcsrv_us_to_ts(int64_t us, Google__Protobuf__Timestamp *ts);

/* Handlers: grpc_write.c, grpc_read.c, grpc_health.c */
void grpcsrv_handle_write(grpcsrv_rpc *rpc);
void grpcsrv_handle_query(grpcsrv_rpc *rpc);
void grpcsrv_handle_get_metrics(grpcsrv_rpc *rpc);
void grpcsrv_handle_health_check(grpcsrv_rpc *rpc);
void grpcsrv_handle_unknown(grpcsrv_rpc *rpc);

#endif
