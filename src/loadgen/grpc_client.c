/* meterd loadgen: Write calls on the gRPC C core's completion-queue API. A call slot is idle
 * or busy (one unary call with all six ops in one batch, so one completion ends it). The core
 * does the I/O on its own threads; this thread only builds requests and reads completions. */
#include "loadgen/grpc_client.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "meterd/v1/meterd.pb-c.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_US (100 * 1000) /* pause of a call slot after RESOURCE_EXHAUSTED / UNAVAILABLE */
#define WAIT_US (50 * 1000)   /* longest wait for a completion before looking at the clock */

typedef struct lg_call {
    lg_worker *w; /* borrowed */
    int busy;
    int64_t ready_at_us; /* idle: send from then */
    int64_t sched_us;
    lg_req_info info;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array md_initial, md_trailing;
    grpc_status_code status;
    grpc_slice details;
} lg_call;

struct lg_grpc {
    int inited; /* grpc_init was called */
    grpc_channel *ch;
    grpc_completion_queue *cq;
    void *method;   /* registered /meterd.v1.Meterd/Write */
    lg_call *calls; /* owned, w->nconn of them */
    unsigned n_busy;
    lg_buf body;                  /* packed WriteRequest scratch */
    int64_t unavailable_since_us; /* first UNAVAILABLE since any other answer; 0: none */
};

static gpr_timespec mono_in(int64_t us)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros(us, GPR_TIMESPAN));
}

/* Releases what a finished call holds; the slot becomes idle from ready_at. */
static void call_reset(lg_call *c, int64_t ready_at)
{
    if (c->call) grpc_call_unref(c->call);
    if (c->send) grpc_byte_buffer_destroy(c->send);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    grpc_metadata_array_destroy(&c->md_initial);
    grpc_metadata_array_destroy(&c->md_trailing);
    grpc_slice_unref(c->details);
    c->call = NULL;
    c->send = c->recv = NULL;
    c->busy = 0;
    c->ready_at_us = ready_at;
    c->w->grpc->n_busy--;
}

/* The response message is a WriteResponse acknowledging every reading sent. */
static int response_ok(const lg_call *c, size_t *bytes)
{
    *bytes = 0;
    if (!c->recv) return 0;
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, c->recv)) return 0;
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    *bytes = GRPC_SLICE_LENGTH(s);
    Meterd__V1__WriteResponse *r =
        meterd__v1__write_response__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    int ok = r && r->accepted == c->info.readings && r->batch_id[0];
    if (r) meterd__v1__write_response__free_unpacked(r, NULL);
    return ok;
}

/* The call's batch completed (ok 0: the core could not run it). */
static void call_done(lg_call *c, int ok, int64_t now)
{
    lg_worker *w = c->w;
    lg_grpc *g = w->grpc;
    unsigned code = ok ? (unsigned)c->status : LG_GRPC_CODES;
    size_t bytes_in = 0;
    int valid = code == GRPC_STATUS_OK && response_ok(c, &bytes_in);
    uint64_t lat = now > c->sched_us ? (uint64_t)(now - c->sched_us) : 0;
    pthread_mutex_lock(&w->stats.lock);
    lg_counts *k = &w->stats.c;
    k->bytes_in += bytes_in;
    if (!ok) {
        k->fail[LG_FAIL_IO]++;
    } else if (code == GRPC_STATUS_DEADLINE_EXCEEDED) { /* --timeout, as a call deadline */
        k->fail[LG_FAIL_TIMEOUT]++;
    } else if (code == GRPC_STATUS_OK && !valid) {
        k->fail[LG_FAIL_MALFORMED]++;
    } else {
        k->responses++;
        k->grpc_status[code < LG_GRPC_CODES ? code : GRPC_STATUS_UNKNOWN]++;
        if (code == GRPC_STATUS_OK) {
            k->ok++;
            k->ok_readings += c->info.readings;
            k->ok_resent += c->info.resent;
            k->ok_late += c->info.late;
        } else if (!w->first_error[0]) {
            size_t n = GRPC_SLICE_LENGTH(c->details);
            snprintf(w->first_error, sizeof w->first_error, "%s %.*s", lg_grpc_status_name(code),
                     (int)(n < 160 ? n : 160), (const char *)GRPC_SLICE_START_PTR(c->details));
        }
        lg_hist_record(&w->stats.all, lat);
        lg_hist_record(&w->stats.interval, lat);
    }
    pthread_mutex_unlock(&w->stats.lock);
    if (code == GRPC_STATUS_UNAVAILABLE) { /* no connection, or the server is stopping */
        if (!g->unavailable_since_us) g->unavailable_since_us = now;
    } else {
        g->unavailable_since_us = 0;
    }
    int back_off = code == GRPC_STATUS_UNAVAILABLE || code == GRPC_STATUS_RESOURCE_EXHAUSTED;
    call_reset(c, back_off ? now + RETRY_US : now);
}

/* Starts Write call seq on an idle slot. */
static int call_start(lg_call *c, uint64_t seq, int64_t sched, int64_t now)
{
    lg_worker *w = c->w;
    lg_grpc *g = w->grpc;
    g->body.len = 0;
    if (lg_gen_body(&w->gen, seq, &g->body, &c->info)) return MD_ERR_NOMEM;
    grpc_slice s = grpc_slice_from_copied_buffer(g->body.p, g->body.len);
    c->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    c->call =
        grpc_channel_create_registered_call(g->ch, NULL, GRPC_PROPAGATE_DEFAULTS, g->cq, g->method,
                                            mono_in((int64_t)(w->sh->o->timeout_s * 1e6)), NULL);
    grpc_metadata_array_init(&c->md_initial);
    grpc_metadata_array_init(&c->md_trailing);
    c->details = grpc_empty_slice();
    c->recv = NULL;
    c->busy = 1;
    c->sched_us = sched;
    g->n_busy++;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->md_initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->md_trailing;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    pthread_mutex_lock(&w->stats.lock);
    w->stats.c.sent++;
    w->stats.c.sent_readings += c->info.readings;
    w->stats.c.bytes_out += g->body.len;
    pthread_mutex_unlock(&w->stats.lock);
    w->last_send_us = now;
    if (!c->call || grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK)
        call_done(c, 0, now);
    return MD_OK;
}

/* Fills idle slots with calls: as soon as possible, or on the fixed schedule. */
static int issue(lg_worker *w, int64_t now, int *done_issuing)
{
    lg_shared *sh = w->sh;
    const lg_opts *o = sh->o;
    if (atomic_load(&sh->stop) || (sh->end_mono_us && now >= sh->end_mono_us)) {
        *done_issuing = 1;
        return MD_OK;
    }
    for (unsigned i = 0; i < w->nconn; i++) {
        lg_call *c = &w->grpc->calls[i];
        if (c->busy || c->ready_at_us > now) continue;
        int64_t sched = now;
        if (o->rate > 0) {
            if (w->next_sched_us > (double)now) return MD_OK;
            sched = (int64_t)w->next_sched_us;
        }
        uint64_t seq = atomic_fetch_add(&sh->next_seq, 1);
        if (o->count && seq >= o->count) {
            *done_issuing = 1;
            return MD_OK;
        }
        if (o->rate > 0) w->next_sched_us += w->interval_us;
        int rc = call_start(c, seq, sched, now);
        if (rc) return rc;
    }
    return MD_OK;
}

/* Runs every completion that is ready, waiting up to wait_us for the first. */
static void poll_completions(lg_grpc *g, int64_t wait_us)
{
    gpr_timespec until = wait_us < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : mono_in(wait_us);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(g->cq, until, NULL);
        if (ev.type != GRPC_OP_COMPLETE) return;
        call_done(ev.tag, ev.success, time_mono_us());
        until = gpr_inf_past(GPR_CLOCK_MONOTONIC);
    }
}

static void *grpc_main(void *arg)
{
    lg_worker *w = arg;
    lg_shared *sh = w->sh;
    lg_grpc *g = w->grpc;
    const lg_opts *o = sh->o;
    int done_issuing = 0;
    w->next_sched_us = (double)sh->start_mono_us;
    for (;;) {
        int64_t now = time_mono_us();
        if (!done_issuing && (w->rc = issue(w, now, &done_issuing))) {
            snprintf(w->err, sizeof w->err, "cannot build a request: %s", md_strerror(w->rc));
            break;
        }
        if (done_issuing && !g->n_busy) break;
        if (g->unavailable_since_us &&
            now - g->unavailable_since_us > (int64_t)(o->timeout_s * 1e6)) {
            w->rc = MD_ERR_IO; /* every call keeps failing: the server is not there */
            snprintf(w->err, sizeof w->err, "no gRPC connection to %.100s for %.0f s", o->grpc_addr,
                     o->timeout_s);
            break;
        }
        int64_t wait = WAIT_US;
        if (!done_issuing && o->rate > 0 && g->n_busy < w->nconn) {
            double d = w->next_sched_us - (double)now;
            wait = d <= 0 ? 0 : d < WAIT_US ? (int64_t)d : WAIT_US;
        }
        poll_completions(g, wait);
    }
    for (unsigned i = 0; i < w->nconn; i++) /* after an error: end what is still running */
        if (g->calls[i].busy) grpc_call_cancel(g->calls[i].call, NULL);
    while (g->n_busy)
        poll_completions(g, -1);
    atomic_store(&w->finished, 1);
    return NULL;
}

int lg_grpc_worker_start(lg_worker *w, lg_shared *sh, unsigned tid, unsigned ncalls)
{
    int rc = lg_worker_init(w, sh, tid, ncalls);
    if (rc) return rc;
    lg_grpc *g = w->grpc = calloc(1, sizeof *g);
    if (!g || !(g->calls = calloc(ncalls, sizeof *g->calls))) return MD_ERR_NOMEM;
    grpc_init();
    g->inited = 1;
    /* A local subchannel pool: each thread's channel gets its own connection. Reconnects are
     * retried after 100 ms to 1 s; GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is not set: gRPC core
     * takes it as the connect timeout too, and at 100 ms a handshake with a busy server was
     * cut off, failing every call queued on it with UNAVAILABLE (`tcp handshaker shutdown`). */
    grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL,
         .value.integer = 1},
        {.type = GRPC_ARG_STRING,
         .key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING,
         .value.string = (char *)"meterd-loadgen"},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
         .value.integer = 100},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         .value.integer = 1000},
    };
    grpc_channel_args chargs = {.num_args = sizeof args / sizeof args[0], .args = args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    g->ch = grpc_channel_create(sh->o->grpc_addr, creds, &chargs);
    grpc_channel_credentials_release(creds);
    g->cq = grpc_completion_queue_create_for_next(NULL);
    if (!g->ch || !g->cq) {
        snprintf(w->err, sizeof w->err, "cannot create a gRPC channel to %.100s", sh->o->grpc_addr);
        return MD_ERR_INVALID;
    }
    g->method = grpc_channel_register_call(g->ch, lg_gen_path(LG_FMT_GRPC), NULL, NULL);
    for (unsigned i = 0; i < ncalls; i++)
        g->calls[i].w = w;
    if (sh->o->rate > 0) w->interval_us = 1e6 * sh->o->threads / sh->o->rate;
    if (pthread_create(&w->thread, NULL, grpc_main, w)) {
        snprintf(w->err, sizeof w->err, "cannot start a thread");
        return MD_ERR_NOMEM;
    }
    return MD_OK;
}

void lg_grpc_worker_free(lg_worker *w)
{
    lg_grpc *g = w->grpc;
    if (g) {
        if (g->ch) grpc_channel_destroy(g->ch);
        if (g->cq) { /* a completion queue must be drained before it is destroyed */
            grpc_completion_queue_shutdown(g->cq);
            while (
                grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
                GRPC_QUEUE_SHUTDOWN)
                ;
            grpc_completion_queue_destroy(g->cq);
        }
        if (g->inited) grpc_shutdown();
        free(g->calls);
        lg_buf_free(&g->body);
        free(g);
        w->grpc = NULL;
    }
    lg_worker_free(w);
}
