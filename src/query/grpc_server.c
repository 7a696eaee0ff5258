/* The gRPC server: listening, the completion-queue threads, method table, graceful stop. */
#include "core/error.h"
#include "core/log.h"
#include "query/grpc_internal.h"

#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Largest request message: a Write of --max-readings (100000 by default) fits easily. */
#define GRPCSRV_MAX_RECV_BYTES (64 * 1024 * 1024)
/* On stop, how long running calls may take before they are cancelled. */
#define GRPCSRV_GRACE_MS 2000

/* Runs completion-queue events until the queue is shut down. Handlers never wait on the disk
 * for long: a Write's durability arrives on a queue thread, which finishes the call itself. */
static void *cq_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-grpc");
    grpcsrv *g = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        grpcsrv_tag *t = ev.tag;
        t->fn(t->owner, ev.success);
    }
    return NULL;
}

static void on_shutdown(void *owner, int ok)
{
    (void)ok;
    grpcsrv *g = owner;
    pthread_mutex_lock(&g->mu);
    g->shutdown_done = 1;
    pthread_cond_broadcast(&g->cond);
    pthread_mutex_unlock(&g->mu);
}

/* Waits until the shutdown tag came and every rpc is freed; 0, or -1 after timeout_ms
 * (timeout_ms < 0: no limit). */
static int wait_drained(grpcsrv *g, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    while (!(g->shutdown_done && g->live == 0)) {
        if (timeout_ms < 0)
            pthread_cond_wait(&g->cond, &g->mu);
        else if (pthread_cond_timedwait(&g->cond, &g->mu, &until)) {
            rc = g->shutdown_done && g->live == 0 ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

static void set_methods(grpcsrv *g)
{
    const grpcsrv_method m[GRPCSRV_N_METHODS + 1] = {
        {"/meterd.v1.Meterd/Write", NULL, grpcsrv_handle_write},
        {"/meterd.v1.Meterd/Query", NULL, grpcsrv_handle_query},
        {"/meterusage.v1.MeterUsage/GetMetrics", NULL, grpcsrv_handle_get_metrics},
        {"/grpc.health.v1.Health/Check", NULL, grpcsrv_handle_health_check},
        /* every other method (Health/Watch, reflection, …): UNIMPLEMENTED, not left waiting */
        {"*", NULL, grpcsrv_handle_unknown},
    };
    memcpy(g->methods, m, sizeof m);
}

/* Frees what start created, after the threads are gone (or were never started). */
static void destroy(grpcsrv *g)
{
    if (g->server) grpc_server_destroy(g->server);
    if (g->cq) grpc_completion_queue_destroy(g->cq);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->mu);
    free(g);
    grpc_shutdown();
}

/* Shuts the completion queue down and joins the threads, which drain it first. */
static void stop_threads(grpcsrv *g)
{
    grpc_completion_queue_shutdown(g->cq);
    if (!g->n_threads) cq_main(g); /* the queue must be drained before it is destroyed */
    for (int i = 0; i < g->n_threads; i++)
        pthread_join(g->threads[i], NULL);
    g->n_threads = 0;
}

grpcsrv *grpcsrv_start(const char *addr, query_ctx *q, ingest_ctx *in, const char *seed_device,
                       const char *seed_metric, char *err, size_t errlen)
{
    if (!addr || !addr[0]) {
        snprintf(err, errlen, "no gRPC address");
        return NULL;
    }
    grpcsrv *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    grpc_init();
    g->q = q;
    g->in = in;
    snprintf(g->seed_device, sizeof g->seed_device, "%s", seed_device ? seed_device : "");
    snprintf(g->seed_metric, sizeof g->seed_metric, "%s", seed_metric ? seed_metric : "");
    atomic_init(&g->stopping, 0);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, NULL);
    g->t_shutdown = (grpcsrv_tag){on_shutdown, g};
    set_methods(g);

    grpc_arg args[1] = {{.type = GRPC_ARG_INTEGER,
                         .key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = GRPCSRV_MAX_RECV_BYTES}};
    grpc_channel_args chargs = {.num_args = 1, .args = args};
    g->cq = grpc_completion_queue_create_for_next(NULL);
    g->server = grpc_server_create(&chargs, NULL);
    if (!g->cq || !g->server) {
        snprintf(err, errlen, "cannot create the gRPC server");
        destroy(g);
        return NULL;
    }
    grpc_server_register_completion_queue(g->server, g->cq, NULL);
    for (int i = 0; i < GRPCSRV_N_METHODS; i++) {
        g->methods[i].handle = grpc_server_register_method(
            g->server, g->methods[i].path, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!g->methods[i].handle) {
            snprintf(err, errlen, "cannot register %s", g->methods[i].path);
            destroy(g);
            return NULL;
        }
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    g->port = grpc_server_add_http2_port(g->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (g->port <= 0) {
        snprintf(err, errlen, "cannot listen on %s (address in use or not a host:port)", addr);
        destroy(g);
        return NULL;
    }
    grpc_server_start(g->server);
    for (int i = 0; i < GRPCSRV_CQ_THREADS; i++) {
        if (pthread_create(&g->threads[i], NULL, cq_main, g)) break;
        g->n_threads++;
    }
    int ok = g->n_threads > 0;
    for (int i = 0; ok && i <= GRPCSRV_N_METHODS; i++)
        ok = grpcsrv_request(g, &g->methods[i]) == 0;
    if (!ok) {
        snprintf(err, errlen, "cannot start the gRPC threads (out of memory)");
        atomic_store(&g->stopping, 1);
        grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
        grpc_server_cancel_all_calls(g->server);
        if (g->n_threads) wait_drained(g, -1);
        stop_threads(g);
        destroy(g);
        return NULL;
    }
    log_emit(LOG_INFO, "grpc_started", json_pack("{s:s,s:i}", "grpc_addr", addr, "port", g->port),
             "gRPC on %s (port %d)", addr, g->port);
    return g;
}

int grpcsrv_port(const grpcsrv *g)
{
    return g ? g->port : 0;
}

void grpcsrv_stop(grpcsrv *g)
{
    if (!g) return;
    atomic_store(&g->stopping, 1);
    grpc_server_shutdown_and_notify(g->server, g->cq, &g->t_shutdown);
    if (wait_drained(g, GRPCSRV_GRACE_MS)) {
        log_info("grpc_cancelling", "cancelling the gRPC calls still running");
        grpc_server_cancel_all_calls(g->server);
        wait_drained(g, -1); /* a Write still waits for its queue callback, which always comes */
    }
    stop_threads(g);
    destroy(g);
    log_info("grpc_stopped", "gRPC stopped");
}
