/* meterd: command line and roles. Only wiring lives here. */
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/membudget.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "dlq_cmd.h"
#include "ingest/csv_import.h"
#include "ingest/http.h"
#include "ingest/routes.h"
#include "loadgen/loadgen.h"
#include "query/events_hub.h"
#include "queue/events_bus.h"
#include "query/grpc.h"
#include "query/routes.h"
#include "query/web.h"
#include "queue/amqp.h"
#include "queue/redis.h"
#include "queue/wal.h"
#include "store/pg.h"
#include "store/sqlite.h"
#include "worker/events.h"
#include "worker/worker.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "meterd %s — ingestion pipeline for energy readings\n\n"
               "Usage: meterd COMMAND [OPTIONS]\n\n"
               "Commands:\n"
               "  serve      run everything in one process: HTTP ingest, durable queue, worker,\n"
               "             SQLite store and the read API (the embedded default)\n"
               "  api        distributed mode: HTTP ingest and read API on --queue amqp|redis\n"
               "             and --database-url (run as many as needed)\n"
               "  worker     distributed mode: consume the queue, apply to the store; serves\n"
               "             /health, /ready and /metrics on --http-addr\n"
               "  import FILE.csv [--device NAME]\n"
               "             import a time,<metric> CSV through the queue (idempotent)\n"
               "  dlq list | show ID | replay ID...|--all\n"
               "             dead letters of the queue backend (--queue): list them (one JSON\n"
               "             per line), show one in full, or replay them to the main queue\n"
               "             (meterd dlq --help)\n"
               "  loadgen    send load to a running meterd and report (meterd loadgen --help)\n"
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
    if (rc == MD_OK) rc = config_check(c, err, sizeof err);
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
    membudget_set(c->max_inflight_bytes);
    return 0;
}

/* The pipeline of this process: a queue, a store, and the worker when it consumes. */
typedef struct pipeline {
    queue *q;
    store *s;
    worker *w; /* NULL in the api role */
    events_sub *events; /* api on a broker: the workers' live events; NULL otherwise */
} pipeline;

/* Opens the queue named by --queue for roles (QUEUE_ROLE_*). NULL on error (logged). */
static queue *open_queue(const config *c, int roles)
{
    char err[512], qdir[PATH_MAX];
    queue *q = NULL;
    if (!strcmp(c->queue_backend, "wal")) {
        if (roles != (QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME)) {
            log_error("startup_failed", "the wal queue is embedded in one process: use 'meterd "
                                        "serve', or --queue amqp|redis for api and worker");
            return NULL;
        }
        snprintf(qdir, sizeof qdir, "%s/queue", c->data_dir);
        if (make_dir(qdir)) return NULL;
        wal_config wc = {.segment_bytes = c->segment_bytes,
                         .max_backlog_bytes = c->max_backlog_bytes};
        q = wal_open(qdir, &wc, err, sizeof err);
    } else if (!strcmp(c->queue_backend, "amqp")) {
        /* a consuming process also publishes: the per-reading events */
        q = amqp_queue_open(c, roles & QUEUE_ROLE_CONSUME ? roles | QUEUE_ROLE_PUBLISH : roles,
                            err, sizeof err);
    } else if (!strcmp(c->queue_backend, "redis")) {
        q = redis_queue_open(c, roles, err, sizeof err);
    } else {
        snprintf(err, sizeof err, "unknown queue backend '%s' (wal, amqp or redis)",
                 c->queue_backend);
    }
    if (!q) {
        log_error("startup_failed", "queue: %s", err);
        return NULL;
    }
    /* The WAL budgets its own backlog exactly; a broker's is estimated (queue.h). */
    if (strcmp(c->queue_backend, "wal") && (roles & QUEUE_ROLE_PUBLISH) && c->max_backlog_bytes &&
        queue_budget_start(q, c->max_backlog_bytes)) {
        log_error("startup_failed", "queue: out of memory");
        q->ops->shutdown(q);
        q->ops->close(q);
        return NULL;
    }
    return q;
}

/* Opens PostgreSQL when --database-url is set, else SQLite in the data directory. */
static store *open_store(const config *c)
{
    char err[512], dbpath[PATH_MAX];
    store_rules rules = {.max_future_us = c->max_future_s * TIME_US_PER_SEC};
    store *s;
    if (c->database_url[0]) {
        s = pg_store_open(c->database_url, &rules, err, sizeof err);
    } else {
        snprintf(dbpath, sizeof dbpath, "%s/meterd.db", c->data_dir);
        s = sqlite_store_open(dbpath, &rules, err, sizeof err);
    }
    if (!s) log_error("startup_failed", "store: %s", err);
    return s;
}

static events_hub *hub; /* live events for SSE (serve, api); NULL otherwise */

static events_pub *redis_events; /* a redis worker's events channel; NULL otherwise */

/* Worker events to the Redis events channel (and this process's hub): for `meterd api`s. */
static void redis_event_sink(void *arg, const batch *b, const reading *r, int outcome,
                             const char *reason)
{
    (void)arg;
    if (outcome != STORE_OUTCOME_VALID && outcome != STORE_OUTCOME_INVALID) return;
    if (hub) events_hub_sink(hub, b, r, outcome, reason);
    if (!events_pub_wanted(redis_events)) return; /* nobody listens: render nothing */
    char stack[1024];
    size_t len;
    char *json = events_reading_json_in(stack, sizeof stack, b, r, outcome, reason, &len);
    if (!json) return;
    events_pub_send(redis_events, json, len);
    events_json_release(json, stack);
}

static void redis_event_flush(void *arg)
{
    (void)arg;
    events_pub_flush(redis_events);
}

static events_lines amqp_lines; /* an amqp worker's events of the current commit */
static int amqp_reading_events = 1; /* RABBITMQ_READING_EVENTS */

static void amqp_event_flush(void *arg)
{
    if (amqp_lines.len) amqp_queue_publish_event_lines(arg, amqp_lines.buf, amqp_lines.len);
    amqp_lines.len = 0;
}

/* Worker events to the AMQP events exchange, one per stored reading (not duplicates), for any
 * consumer, unless RABBITMQ_READING_EVENTS=0; and the same events of a commit as one message to
 * the .batched exchange, for the `meterd api`s (docs/decisions.md 24). */
static void amqp_event_sink(void *arg, const batch *b, const reading *r, int outcome,
                            const char *reason)
{
    if (outcome != STORE_OUTCOME_VALID && outcome != STORE_OUTCOME_INVALID) return;
    if (hub) events_hub_sink(hub, b, r, outcome, reason);
    char stack[1024];
    size_t len;
    char *json = events_reading_json_in(stack, sizeof stack, b, r, outcome, reason, &len);
    if (!json) return;
    if (amqp_reading_events) amqp_queue_publish_event(arg, events_routing_key(outcome), json, len);
    if (events_lines_full(&amqp_lines, len)) amqp_event_flush(arg);
    events_lines_add(&amqp_lines, json, len);
    events_json_release(json, stack);
}

static int pipeline_open(const config *c, int roles, pipeline *p)
{
    char err[512];
    memset(p, 0, sizeof *p);
    if (make_dir(c->data_dir)) return -1;
    if (!(p->q = open_queue(c, roles))) return -1;
    if (!(p->s = open_store(c))) {
        /* nothing more to open */
    } else if (!(roles & QUEUE_ROLE_CONSUME)) {
        /* api: the live events of the workers come through the broker */
        if (hub && strcmp(c->queue_backend, "wal") &&
            !(p->events = events_sub_start(c, events_hub_relay, hub, err, sizeof err)))
            log_warn("events_subscriber", "no live events: %s", err);
        return 0;
    } else {
        worker_config wc = {.envelope_window_us = c->envelope_window_s * TIME_US_PER_SEC,
                            /* only where ingest shares the process: serve */
                            .nice = roles & QUEUE_ROLE_PUBLISH ? (int)c->worker_nice : 0,
                            /* a broker stops delivering at its prefetch: nothing to wait for */
                            .linger_ms = strcmp(c->queue_backend, "wal") ? 0
                                                                         : (int)c->worker_linger_ms};
        if (!strcmp(c->queue_backend, "amqp")) {
            amqp_reading_events = c->rabbitmq_reading_events;
            wc.sink = amqp_event_sink;
            wc.sink_flush = amqp_event_flush;
            wc.sink_arg = p->q;
        } else if (!strcmp(c->queue_backend, "redis") && (redis_events = events_pub_new(c))) {
            wc.sink = redis_event_sink;
            wc.sink_flush = redis_event_flush;
        } else if (hub) {
            wc.sink = events_hub_sink;
            wc.sink_arg = hub;
        }
        if ((p->w = worker_start(p->q, p->s, &wc, err, sizeof err))) return 0;
        log_error("startup_failed", "worker: %s", err);
    }
    if (p->s) p->s->ops->close(p->s);
    p->q->ops->shutdown(p->q);
    queue_close(p->q);
    return -1;
}

/* Stops publishing, lets the worker drain for up to drain_ms, closes everything. Returns what
 * this process leaves undone: with a worker the queue's depth; in the api role 0, because
 * shutdown has made every publish durable and the broker's backlog is the workers' to drain. */
static uint64_t pipeline_close(pipeline *p, int drain_ms)
{
    p->q->ops->shutdown(p->q);
    if (p->w) worker_stop(p->w, drain_ms);
    events_sub_stop(p->events);
    events_pub_free(redis_events); /* the worker's sink has stopped */
    events_lines_free(&amqp_lines);
    redis_events = NULL;
    queue_stats qs = {0};
    if (p->w) queue_get_stats(p->q, &qs);
    p->s->ops->close(p->s);
    queue_close(p->q);
    return qs.depth;
}

typedef struct seed_job {
    queue *q;
    const config *c;
    pthread_t thread;
} seed_job;

/* serve --seed-csv: imports the file through the queue like any client would. */
static void *seed_main(void *arg)
{
    seed_job *j = arg;
    csv_import_stats st;
    char err[512];
    if (csv_import(j->q, j->c->seed_csv, j->c->csv_device, &st, NULL, NULL, err, sizeof err))
        log_error("seed_failed", "%s: %s", j->c->seed_csv, err);
    else
        log_emit(LOG_INFO, "seed_done",
                 json_pack("{s:s,s:I,s:I,s:I}", "file", j->c->seed_csv, "rows",
                           (json_int_t)st.rows, "published", (json_int_t)st.published,
                           "skipped", (json_int_t)st.skipped),
                 "seeded %llu readings from %s", (unsigned long long)st.published,
                 j->c->seed_csv);
    return NULL;
}

/* serve (both roles), api (publish + read side) or worker (consume; /health, /ready, /metrics
 * only). Runs until SIGTERM/SIGINT, then drains and exits 0. */
static int cmd_run(int argc, char **argv, const char *role)
{
    config c;
    int rc = load_config(&c, argc, argv, 2, role);
    if (rc) return rc == 1 ? 0 : 2;
    int roles = !strcmp(role, "api")      ? QUEUE_ROLE_PUBLISH
                : !strcmp(role, "worker") ? QUEUE_ROLE_CONSUME
                                          : QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME;

    /* Signals are taken by sigwait in this thread only; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((roles & QUEUE_ROLE_PUBLISH) && !(hub = events_hub_new())) {
        log_error("startup_failed", "events: out of memory");
        return 1;
    }
    pipeline p;
    if (pipeline_open(&c, roles, &p)) return 1;
    static ingest_ctx ictx;
    static query_ctx qctx;
    ictx.q = p.q;
    ictx.limits.max_readings = c.max_readings;
    ictx.envelope_window_us = c.envelope_window_s * TIME_US_PER_SEC;
    qctx.s = p.s;
    qctx.q = p.q;
    qctx.w = p.w;
    http_route routes[64];
    size_t n = 0;
    if (roles & QUEUE_ROLE_PUBLISH) {
        n += ingest_routes(routes, 64, &ictx);
        n += query_routes(routes + n, 64 - n, &qctx);
        n += web_routes(routes + n, 64 - n, &qctx, hub, &c);
    } else {
        n += query_ops_routes(routes, 64, &qctx);
    }
    http_config hc = {.addr = c.http_addr, .threads = c.http_threads,
                      .max_body_bytes = c.max_body_bytes, .idle_timeout_s = c.idle_timeout_s,
                      .max_connections = c.max_connections, .access_log = c.access_log,
                      .fast_lane = c.http_fast_lane};
    char err[512];
    http_server *http = http_start(&hc, routes, n, err, sizeof err);
    if (!http) {
        log_error("startup_failed", "http: %s", err);
        pipeline_close(&p, 0);
        return 1;
    }
    grpcsrv *grpc = NULL;
    if (c.grpc_addr[0] && (roles & QUEUE_ROLE_PUBLISH)) {
        grpc = grpcsrv_start(c.grpc_addr, &qctx, &ictx, c.csv_device, "meterusage", err,
                             sizeof err);
        if (!grpc) {
            log_error("startup_failed", "grpc: %s", err);
            http_stop(http);
            pipeline_close(&p, 0);
            return 1;
        }
    }
    seed_job seed = {.q = p.q, .c = &c};
    int seeding = c.seed_csv[0] && (roles & QUEUE_ROLE_PUBLISH) && pthread_create(&seed.thread, NULL, seed_main, &seed) == 0;
    atomic_store(&qctx.ready, 1);
    log_emit(LOG_INFO, "started",
             json_pack("{s:s,s:s,s:i,s:s,s:s,s:s}", "role", role, "http_addr", c.http_addr,
                       "port", (int)http_port(http), "data_dir", c.data_dir, "queue",
                       p.q->ops->name, "store", p.s->ops->name),
             "meterd %s %s on %s", METERD_VERSION, role, c.http_addr);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_info("stopping", "signal %d: draining (timeout %u s)", sig, c.drain_timeout_s);
    atomic_store(&qctx.ready, 0);
    atomic_store(&ictx.closing, 1);
    http_quiesce(http, 5000);
    grpcsrv_stop(grpc); /* before the queue and store close: calls still use them */
    if (seeding) pthread_join(seed.thread, NULL); /* the queue is still open: it finishes */
    uint64_t left = pipeline_close(&p, (int)c.drain_timeout_s * 1000);
    http_stop(http);
    events_hub_free(hub); /* after http_stop: no stream is left */
    hub = NULL;
    log_emit(LOG_INFO, "stopped", json_pack("{s:I}", "queue_depth", (json_int_t)left),
             "stopped cleanly");
    return 0;
}

static void import_progress(const csv_import_stats *st, void *arg)
{
    (void)arg;
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\r%llu rows read, %llu queued, %llu skipped",
                (unsigned long long)st->rows, (unsigned long long)st->published,
                (unsigned long long)st->skipped);
}

/* meterd import FILE.csv: through the same queue and worker as everything else, then drain. */
static int cmd_import(int argc, char **argv)
{
    if (argc < 3 || argv[2][0] == '-') {
        if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
            printf("Usage: meterd import FILE.csv [--device NAME] [--data-dir DIR]\n\n"
                   "Imports a CSV with header time,<metric> (UTC times like 2019-01-01 00:15:00).\n"
                   "Importing the same file again adds nothing. Stop 'meterd serve' on the same\n"
                   "data directory first, or use 'meterd serve --seed-csv FILE'. With\n"
                   "--database-url the rows go to PostgreSQL through a private queue in\n"
                   "--data-dir (not the broker), while api and worker processes keep running.\n");
            return 0;
        }
        fprintf(stderr, "usage: meterd import FILE.csv [--device NAME] [--data-dir DIR]\n");
        return 2;
    }
    config c;
    int rc = load_config(&c, argc, argv, 3, "import");
    if (rc) return rc == 1 ? 0 : 2;
    /* With PostgreSQL, the import applies the file itself through a private WAL in --data-dir,
     * not through the shared broker: running workers would take its batches, and its summary
     * could not say what it stored. Same decoder, worker and store; idempotent all the same. */
    if (strcmp(c.queue_backend, "wal") && c.database_url[0])
        snprintf(c.queue_backend, sizeof c.queue_backend, "wal");
    pipeline p;
    if (pipeline_open(&c, QUEUE_ROLE_PUBLISH | QUEUE_ROLE_CONSUME, &p)) return 1;
    uint64_t stored0 = metrics_get(MC_READINGS_STORED), dup0 = metrics_get(MC_READINGS_DUPLICATE),
             conf0 = metrics_get(MC_READINGS_CONFLICT), inv0 = metrics_get(MC_READINGS_INVALID);
    csv_import_stats st;
    char err[512];
    rc = csv_import(p.q, argv[2], c.csv_device, &st, import_progress, NULL, err, sizeof err);
    if (isatty(STDERR_FILENO)) fputc('\n', stderr);
    pipeline_close(&p, INT32_MAX); /* an import waits for every row to be applied */
    if (rc) {
        fprintf(stderr, "meterd import: %s\n", err);
        return 1;
    }
    json_t *o = json_pack(
        "{s:s,s:I,s:I,s:I,s:I,s:I,s:I}", "file", argv[2], "rows_read", (json_int_t)st.rows,
        "stored", (json_int_t)(metrics_get(MC_READINGS_STORED) - stored0), "skipped",
        (json_int_t)st.skipped, "duplicates",
        (json_int_t)(metrics_get(MC_READINGS_DUPLICATE) - dup0), "conflicts",
        (json_int_t)(metrics_get(MC_READINGS_CONFLICT) - conf0), "invalid",
        (json_int_t)(metrics_get(MC_READINGS_INVALID) - inv0));
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (line) puts(line);
    free(line);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "serve") || !strcmp(cmd, "api") || !strcmp(cmd, "worker"))
        return cmd_run(argc, argv, cmd);
    if (!strcmp(cmd, "dlq")) return dlq_cmd_main(argc, argv);
    if (!strcmp(cmd, "import")) return cmd_import(argc, argv);
    if (!strcmp(cmd, "loadgen")) return loadgen_main(argc, argv);
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
