/* meterd loadgen: one thread = one epoll loop driving its share of keep-alive
 * connections, one state machine per connection. */
#ifndef METERD_LOADGEN_CLIENT_H
#define METERD_LOADGEN_CLIENT_H

#include "loadgen/http_parse.h"
#include "loadgen/options.h"
#include "loadgen/payload.h"
#include "loadgen/stats.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* What every thread of a run shares (read-only but for the atomics). */
typedef struct lg_shared {
    const lg_opts *o;                 /* borrowed */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char host_header[280];
    int64_t start_mono_us, end_mono_us; /* end is 0 with --count */
    int64_t start_wall_us, fleet_t0_us;
    atomic_uint_fast64_t next_seq;    /* request numbers handed out */
    atomic_int stop;                  /* stop sending new requests (SIGINT) */
} lg_shared;

typedef struct lg_conn lg_conn;
typedef struct lg_grpc lg_grpc;

typedef struct lg_worker {
    lg_shared *sh;    /* borrowed */
    unsigned tid, nconn;
    lg_conn *conns;   /* owned */
    lg_grpc *grpc;    /* owned: --format grpc (grpc_client.c); conns, idle and ep stay unused */
    unsigned *idle;   /* owned stack of idle connection indexes */
    unsigned n_idle, n_closed;
    int ep;
    lg_gen gen;
    lg_stats stats;
    double interval_us, next_sched_us; /* fixed rate: send schedule */
    int64_t last_send_us;              /* monotonic time of the last request written */
    int64_t last_up_us;                /* last connect or response: no progress → give up */
    char first_error[200];             /* status and body of the first non-2xx (under lock) */
    pthread_t thread;
    int rc;           /* 0, or MD_ERR_* if the thread gave up */
    atomic_int finished;
    char err[160];
} lg_worker;

/* The part of a worker common to HTTP and gRPC: stats and generator for thread tid. */
int lg_worker_init(lg_worker *w, lg_shared *sh, unsigned tid, unsigned nconn);
/* Prepares and starts thread tid with nconn connections. 0, or an MD_ERR_* code with err. */
int lg_worker_start(lg_worker *w, lg_shared *sh, unsigned tid, unsigned nconn);
/* Waits for the thread to finish its requests and frees its connections (stats stay). */
void lg_worker_join(lg_worker *w);
/* Frees what join left (stats, generator). */
void lg_worker_free(lg_worker *w);

#endif
