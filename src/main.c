/* meterd: command line and roles. Only wiring lives here. */
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "ingest/http.h"
#include "ingest/routes.h"
#include "query/routes.h"
#include "queue/wal.h"
#include "store/sqlite.h"
#include "worker/worker.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f, "meterd %s — ingestion pipeline for energy readings\n\n"
               "Usage: meterd COMMAND [OPTIONS]\n\n"
               "Commands:\n"
               "  serve      run everything in one process: HTTP ingest, durable queue, worker,\n"
               "             SQLite store and the read API (the embedded default)\n"
               "  dlq list   print the dead letters of the queue in --data-dir, one JSON per line\n"
               "  version    print the version\n"
               "  help       this text; 'meterd serve --help' lists the options\n",
            METERD_VERSION);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST) return 0;
    fprintf(stderr, "meterd: cannot create directory %s: %s\n", path, strerror(errno));
    return -1;
}

/* Loads defaults, METERD_* variables and flags. Returns 0, 1 (help printed) or 2 (error). */
static int load_config(config *c, int argc, char **argv, int first, const char *cmd)
{
    char err[256];
    config_defaults(c);
    int rc = config_from_env(c, err, sizeof err);
    if (rc == MD_OK) rc = config_from_args(c, argc, argv, first, err, sizeof err);
    if (rc == 1) {
        printf("Usage: meterd %s [OPTIONS]\n\n", cmd);
        config_print_help(stdout);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "meterd %s: %s\n", cmd, err);
        return 2;
    }
    log_set_level((log_level)c->log_level);
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    config c;
    int rc = load_config(&c, argc, argv, 2, "serve");
    if (rc) return rc == 1 ? 0 : 2;

    char qdir[PATH_MAX], dbpath[PATH_MAX], err[512];
    if (make_dir(c.data_dir)) return 1;
    snprintf(qdir, sizeof qdir, "%s/queue", c.data_dir);
    snprintf(dbpath, sizeof dbpath, "%s/meterd.db", c.data_dir);
    if (make_dir(qdir)) return 1;

    /* Signals are taken by sigwait in this thread only; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    wal_config wc = {.segment_bytes = c.segment_bytes, .max_backlog_bytes = c.max_backlog_bytes};
    queue *q = wal_open(qdir, &wc, err, sizeof err);
    if (!q) {
        log_error("startup_failed", "queue: %s", err);
        return 1;
    }
    store_rules rules = {.max_future_us = c.max_future_s * TIME_US_PER_SEC};
    store *s = sqlite_store_open(dbpath, &rules, err, sizeof err);
    if (!s) {
        log_error("startup_failed", "store: %s", err);
        q->ops->shutdown(q);
        q->ops->close(q);
        return 1;
    }
    worker *w = worker_start(q, s, err, sizeof err);
    if (!w) {
        log_error("startup_failed", "worker: %s", err);
        s->ops->close(s);
        q->ops->shutdown(q);
        q->ops->close(q);
        return 1;
    }

    static ingest_ctx ictx;
    static query_ctx qctx;
    ictx.q = q;
    ictx.limits.max_readings = c.max_readings;
    qctx.s = s;
    qctx.q = q;
    qctx.w = w;
    http_route routes[64];
    size_t n = ingest_routes(routes, 64, &ictx);
    n += query_routes(routes + n, 64 - n, &qctx);
    http_config hc = {.addr = c.http_addr, .threads = c.http_threads,
                      .max_body_bytes = c.max_body_bytes, .idle_timeout_s = c.idle_timeout_s,
                      .max_connections = c.max_connections, .access_log = c.access_log};
    http_server *http = http_start(&hc, routes, n, err, sizeof err);
    if (!http) {
        log_error("startup_failed", "http: %s", err);
        q->ops->shutdown(q);
        worker_stop(w, 0);
        s->ops->close(s);
        q->ops->close(q);
        return 1;
    }
    atomic_store(&qctx.ready, 1);
    log_emit(LOG_INFO, "started",
             json_pack("{s:s,s:i,s:s,s:s,s:s}", "http_addr", c.http_addr, "port",
                       (int)http_port(http), "data_dir", c.data_dir, "queue", q->ops->name,
                       "store", s->ops->name),
             "meterd %s serving on %s", METERD_VERSION, c.http_addr);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("stopping", "signal %d: draining (timeout %u s)", sig, c.drain_timeout_s);
    atomic_store(&qctx.ready, 0);
    atomic_store(&ictx.closing, 1);
    http_quiesce(http, 5000);
    q->ops->shutdown(q);
    worker_stop(w, (int)c.drain_timeout_s * 1000);
    http_stop(http);
    queue_stats qs = {0};
    q->ops->stats(q, &qs);
    s->ops->close(s);
    q->ops->close(q);
    log_emit(LOG_INFO, "stopped", json_pack("{s:I}", "queue_depth", (json_int_t)qs.depth),
             "stopped cleanly");
    return 0;
}

static int print_dead_letter(void *arg, const wal_dead_letter *d)
{
    (void)arg;
    char ts[32];
    json_t *o = json_pack("{s:I,s:s,s:s,s:I}", "seq", (json_int_t)d->seq, "dead_at",
                          time_format_rfc3339(d->dead_at_us, ts), "reason", d->reason, "bytes",
                          (json_int_t)d->len);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line) puts(line);
    free(line);
    return 0;
}

static int cmd_dlq(int argc, char **argv)
{
    if (argc < 3 || strcmp(argv[2], "list") != 0) {
        fprintf(stderr, "usage: meterd dlq list [--data-dir DIR]\n");
        return 2;
    }
    config c;
    int rc = load_config(&c, argc, argv, 3, "dlq list");
    if (rc) return rc == 1 ? 0 : 2;
    char qdir[PATH_MAX];
    snprintf(qdir, sizeof qdir, "%s/queue", c.data_dir);
    if (wal_dlq_list(qdir, print_dead_letter, NULL)) {
        fprintf(stderr, "meterd dlq: cannot read the dead letters in %s\n", qdir);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve")) return cmd_serve(argc, argv);
    if (!strcmp(cmd, "dlq")) return cmd_dlq(argc, argv);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("meterd %s\n", METERD_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "meterd: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
