/* meterd loadgen: wires options, threads, progress, verification and the report. */
#include "loadgen/loadgen.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "loadgen/client.h"
#include "loadgen/grpc_client.h"
#include "loadgen/report.h"
#include "loadgen/verify.h"

#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lg_shared *g_sigshared; /* for the SIGINT handler only */

static void on_sigint(int sig)
{
    (void)sig;
    if (g_sigshared) atomic_store(&g_sigshared->stop, 1);
    signal(SIGINT, SIG_DFL); /* a second ^C ends the process */
}

static int resolve(lg_shared *sh, const lg_opts *o, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC}, *res = NULL;
    int rc = getaddrinfo(o->host, o->port, &hints, &res);
    if (rc || !res) {
        snprintf(err, errlen, "cannot resolve %.120s: %s", o->host, gai_strerror(rc));
        return MD_ERR_INVALID;
    }
    memcpy(&sh->addr, res->ai_addr, res->ai_addrlen);
    sh->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    int v6 = strchr(o->host, ':') != NULL;
    snprintf(sh->host_header, sizeof sh->host_header, "%s%s%s:%s", v6 ? "[" : "", o->host,
             v6 ? "]" : "", o->port);
    return MD_OK;
}

/* Minute-aligned start of the fleet's simulated time, chosen so the replay ends near now. */
static int64_t fleet_t0(const lg_opts *o, int64_t now_us)
{
    const int64_t minute = 60 * TIME_US_PER_SEC;
    double readings = o->count ? (double)o->count * (double)o->batch
                      : o->rate > 0 ? o->rate * o->duration_s * (double)o->batch
                                    : 0;
    int64_t rounds = readings > 0 ? (int64_t)ceil(readings / (double)o->fleet) : 60;
    if (rounds > 1000000) rounds = 1000000;
    return (now_us / minute - rounds) * minute;
}

typedef struct totals {
    lg_counts c;
    lg_hist lat;
    char first_error[200];
} totals;

/* Sums every thread's counters (and, with lat/interval, histograms). */
static void collect(lg_worker *w, unsigned n, totals *t, lg_hist *interval)
{
    memset(&t->c, 0, sizeof t->c);
    if (interval) lg_hist_reset(interval);
    for (unsigned i = 0; i < n; i++) {
        pthread_mutex_lock(&w[i].stats.lock);
        lg_counts_add(&t->c, &w[i].stats.c);
        if (interval) {
            lg_hist_merge(interval, &w[i].stats.interval);
            lg_hist_reset(&w[i].stats.interval);
        }
        if (!t->first_error[0] && w[i].first_error[0])
            memcpy(t->first_error, w[i].first_error, sizeof t->first_error);
        pthread_mutex_unlock(&w[i].stats.lock);
    }
}

/* After the run: waits for queue depth 0, then compares stored readings with what was
 * acknowledged. */
static void verify(lg_shared *sh, const lg_server_metrics *before, const totals *t,
                   lg_verify_result *v)
{
    const lg_opts *o = sh->o;
    lg_server_metrics m, prev = {.stored = -1};
    int64_t t0 = time_mono_us(), limit = t0 + (int64_t)(o->verify_timeout_s * 1e6);
    v->done = 1;
    v->expected = (double)(t->c.ok_readings - t->c.ok_resent);
    for (;;) {
        if (lg_metrics_fetch(sh, 5000, &m, v->err, sizeof v->err)) return;
        if (m.queue_depth == 0) {
            if (!v->drained) v->drain_s = (double)(time_mono_us() - t0) / 1e6;
            v->drained = 1;
            /* counters move just before the ack; one more look confirms they settled */
            if (m.stored - before->stored >= v->expected || m.stored == prev.stored) break;
            prev = m;
        }
        if (time_mono_us() > limit) {
            snprintf(v->err, sizeof v->err, "queue depth still %.0f after %.0f s", m.queue_depth,
                     o->verify_timeout_s);
            break;
        }
        usleep(50000);
    }
    v->stored = m.stored - before->stored;
    v->duplicates = m.duplicates - before->duplicates;
    v->invalid = m.invalid - before->invalid;
    v->ok = v->drained && v->stored >= v->expected;
    if (v->drained && !v->ok)
        snprintf(v->err, sizeof v->err, "%.0f acknowledged readings are not stored",
                 v->expected - v->stored);
}

int loadgen_main(int argc, char **argv)
{
    static lg_opts o;
    static lg_shared sh;
    char err[256];
    int rc = lg_opts_parse(&o, argc, argv, 2, err, sizeof err);
    if (rc == 1) {
        lg_opts_help(stdout);
        return 0;
    }
    if (rc) {
        fprintf(stderr, "meterd loadgen: %s\n", err);
        return 2;
    }
    sh.o = &o;
    if (resolve(&sh, &o, err, sizeof err)) {
        fprintf(stderr, "meterd loadgen: %s\n", err);
        return 2;
    }
    char url[600];
    int grpc = o.format == LG_FMT_GRPC;
    if (grpc)
        snprintf(url, sizeof url, "grpc://%s%s", o.grpc_addr, lg_gen_path(o.format));
    else
        snprintf(url, sizeof url, "http://%s%s%s", sh.host_header, o.prefix, lg_gen_path(o.format));
    signal(SIGPIPE, SIG_IGN);

    lg_server_metrics before = {0};
    lg_verify_result vr = {0};
    if (o.verify && lg_metrics_fetch(&sh, 5000, &before, err, sizeof err)) {
        fprintf(stderr, "meterd loadgen: --verify: %s\n", err);
        return 1;
    }
    sh.start_wall_us = time_now_us();
    sh.fleet_t0_us = o.fleet ? fleet_t0(&o, sh.start_wall_us) : 0;
    sh.start_mono_us = time_mono_us();
    sh.end_mono_us = o.count ? 0 : sh.start_mono_us + (int64_t)(o.duration_s * 1e6);
    g_sigshared = &sh;
    signal(SIGINT, on_sigint);

    lg_worker *w = calloc(o.threads, sizeof *w);
    static totals t, last;
    static lg_hist interval;
    if (!w) {
        fprintf(stderr, "meterd loadgen: out of memory\n");
        return 1;
    }
    unsigned started = 0;
    for (; started < o.threads; started++) {
        unsigned n = o.connections / o.threads + (started < o.connections % o.threads);
        rc = grpc ? lg_grpc_worker_start(&w[started], &sh, started, n)
                  : lg_worker_start(&w[started], &sh, started, n);
        if (rc) {
            fprintf(stderr, "meterd loadgen: %s\n", w[started].err[0] ? w[started].err : md_strerror(rc));
            atomic_store(&sh.stop, 1);
            (grpc ? lg_grpc_worker_free : lg_worker_free)(&w[started]);
            break;
        }
    }

    int64_t last_tick = sh.start_mono_us;
    for (;;) {
        unsigned fin = 0;
        for (unsigned i = 0; i < started; i++)
            fin += (unsigned)atomic_load(&w[i].finished);
        if (fin == started) break;
        usleep(20000);
        int64_t now = time_mono_us();
        if (now - last_tick < 1000000) continue;
        double dt = (double)(now - last_tick) / 1e6;
        last_tick = now;
        if (o.verify) { /* sample the server's lag while the load runs */
            lg_server_metrics m;
            char e2[200];
            if (!lg_metrics_fetch(&sh, 1000, &m, e2, sizeof e2)) {
                if (m.worker_lag_s > vr.max_lag_s) vr.max_lag_s = m.worker_lag_s;
                if (m.queue_depth > vr.max_depth) vr.max_depth = m.queue_depth;
            }
        }
        if (o.progress) {
            collect(w, started, &t, &interval);
            lg_counts d = t.c;
            const uint64_t *a = (const uint64_t *)&last.c;
            uint64_t *dd = (uint64_t *)&d;
            for (size_t i = 0; i < sizeof d / sizeof(uint64_t); i++)
                dd[i] -= a[i];
            lg_report_progress(stderr, (double)(now - sh.start_mono_us) / 1e6, dt, &d, &t.c,
                               &interval);
            last.c = t.c;
        }
    }
    int worker_failed = 0;
    for (unsigned i = 0; i < started; i++) {
        lg_worker_join(&w[i]);
        if (w[i].rc) {
            fprintf(stderr, "meterd loadgen: thread %u: %s\n", i, w[i].err);
            worker_failed = 1;
        }
    }
    double elapsed = (double)(time_mono_us() - sh.start_mono_us) / 1e6;
    if (o.progress) fputc('\n', stderr);
    collect(w, started, &t, NULL);
    lg_hist_reset(&t.lat);
    for (unsigned i = 0; i < started; i++)
        lg_hist_merge(&t.lat, &w[i].stats.all);
    if (o.verify) verify(&sh, &before, &t, &vr);

    lg_summary s = {.o = &o, .url = url, .elapsed_s = elapsed, .c = &t.c, .lat = &t.lat,
                    .first_error = t.first_error, .v = vr};
    lg_report_final(stdout, &s, o.json);
    for (unsigned i = 0; i < started; i++)
        (grpc ? lg_grpc_worker_free : lg_worker_free)(&w[i]);
    free(w);
    g_sigshared = NULL;
    int failed = worker_failed || started < o.threads || lg_counts_errors(&t.c) > 0 ||
                 (o.verify && !vr.ok);
    return failed ? 1 : 0;
}
