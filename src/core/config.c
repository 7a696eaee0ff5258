/* Configuration parsing: one table drives flags, environment variables and --help. */
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* K_STR_EMPTY: a string for which an empty environment variable means "" (e.g. disabled)
 * rather than unset. */
enum opt_kind { K_STR, K_STR_EMPTY, K_UINT, K_SIZE, K_BOOL, K_LEVEL };

typedef struct opt {
    config_option o;
    enum opt_kind kind;
    size_t off, size; /* where in struct config */
    const char *deflt;
} opt;

#define F(field) offsetof(config, field), sizeof(((config *)0)->field)

static const opt opts[] = {
    {{"--http-addr", "METERD_HTTP_ADDR", "HOST:PORT", "HTTP listen address"}, K_STR, F(http_addr), "0.0.0.0:8080"},
    {{"--grpc-addr", "METERD_GRPC_ADDR", "HOST:PORT", "gRPC listen address (serve, api); empty: no gRPC"}, K_STR_EMPTY, F(grpc_addr), "0.0.0.0:50051"},
    {{"--data-dir", "METERD_DATA_DIR", "DIR", "where the queue and the SQLite store live"}, K_STR, F(data_dir), "./data"},
    {{"--http-threads", "METERD_HTTP_THREADS", "N", "HTTP threads (0: one per core)"}, K_UINT, F(http_threads), "0"},
    {{"--max-body-bytes", "METERD_MAX_BODY_BYTES", "BYTES", "largest request body; larger → 413 (k/M/G suffixes)"}, K_SIZE, F(max_body_bytes), "16M"},
    {{"--max-inflight-bytes", "METERD_MAX_INFLIGHT_BYTES", "BYTES", "memory for request bodies and gRPC messages in progress, all connections together; above it new requests get 503 + Retry-After (0: no limit)"}, K_SIZE, F(max_inflight_bytes), "256M"},
    {{"--max-readings", "METERD_MAX_READINGS", "N", "most readings in one request; more → 413"}, K_SIZE, F(max_readings), "100000"},
    {{"--max-backlog-bytes", "METERD_MAX_BACKLOG_BYTES", "BYTES", "queue backlog budget; above it ingest answers 503 + Retry-After"}, K_SIZE, F(max_backlog_bytes), "1G"},
    {{"--segment-bytes", "METERD_SEGMENT_BYTES", "BYTES", "write-ahead log segment size (preallocated; the queue keeps about two)"}, K_SIZE, F(segment_bytes), "64M"},
    {{"--idle-timeout", "METERD_IDLE_TIMEOUT", "SECONDS", "close idle or stalled HTTP connections after this"}, K_UINT, F(idle_timeout_s), "30"},
    {{"--max-connections", "METERD_MAX_CONNECTIONS", "N", "most concurrent HTTP connections"}, K_UINT, F(max_connections), "4096"},
    {{"--max-future", "METERD_MAX_FUTURE", "SECONDS", "readings further in the future than this are stored as invalid"}, K_SIZE, F(max_future_s), "300"},
    {{"--envelope-window", "METERD_ENVELOPE_WINDOW", "SECONDS", "gateway envelopes: readings dated further than this from received_at are invalid"}, K_SIZE, F(envelope_window_s), "300"},
    {{"--seed-csv", "METERD_SEED_CSV", "FILE", "serve: import this CSV (time,meterusage) at start; idempotent"}, K_STR, F(seed_csv), ""},
    {{"--device", "METERD_CSV_DEVICE", "NAME", "CSV import: device id of the imported readings"}, K_STR, F(csv_device), "meterusage"},
    {{"--worker-nice", "METERD_WORKER_NICE", "0-19", "serve: the worker thread's nice value (0: none); above 0 ingest and acknowledgements go first"}, K_UINT, F(worker_nice), "10"},
    {{"--worker-linger", "METERD_WORKER_LINGER_MS", "MS", "embedded queue (serve, import): how long the worker gathers readings into one store transaction while they keep coming (a pause of a tenth of it ends the wait; 0: no wait)"}, K_UINT, F(worker_linger_ms), "200"},
    {{"--drain-timeout", "METERD_DRAIN_TIMEOUT", "SECONDS", "on SIGTERM, how long the worker may drain the queue"}, K_UINT, F(drain_timeout_s), "10"},
    {{"--queue", "METERD_QUEUE", "wal|amqp|redis", "queue backend"}, K_STR, F(queue_backend), "wal"},
    {{"--database-url", "DATABASE_URL", "URL", "PostgreSQL store (postgres://…); empty: SQLite in --data-dir"}, K_STR, F(database_url), ""},
    {{"--rabbitmq-url", "RABBITMQ_URL", "URL", "amqp queue: broker URL"}, K_STR, F(rabbitmq_url), "amqp://guest:guest@localhost:5672/"},
    {{"--rabbitmq-prefetch", "RABBITMQ_PREFETCH", "N", "amqp queue: unacknowledged deliveries per worker (1-65535), the most messages one store transaction gathers"}, K_UINT, F(rabbitmq_prefetch), "50"},
    {{"--rabbitmq-ingest-exchange", "RABBITMQ_INGEST_EXCHANGE", "NAME", "amqp queue: ingest exchange"}, K_STR, F(rabbitmq_ingest_exchange), "energy-metering.ingest.exchange"},
    {{"--rabbitmq-ingest-queue", "RABBITMQ_INGEST_QUEUE", "NAME", "amqp queue: ingest queue"}, K_STR, F(rabbitmq_ingest_queue), "energy-metering.ingest.queue"},
    {{"--rabbitmq-ingest-routing-key", "RABBITMQ_INGEST_ROUTING_KEY", "KEY", "amqp queue: ingest routing key"}, K_STR, F(rabbitmq_ingest_routing_key), "meter.reading.ingested"},
    {{"--rabbitmq-dlq-queue", "RABBITMQ_DLQ_QUEUE", "NAME", "amqp queue: dead-letter queue"}, K_STR, F(rabbitmq_dlq_queue), "energy-metering.ingest.dlq"},
    {{"--rabbitmq-worker-exchange", "RABBITMQ_WORKER_EXCHANGE", "NAME", "amqp queue: exchange for per-reading events"}, K_STR, F(rabbitmq_worker_exchange), "energy-metering.worker.events.exchange"},
    {{"--rabbitmq-reading-events", "RABBITMQ_READING_EVENTS", "0|1", "amqp queue: one message per stored reading to the events exchange (0: only the per-commit messages of <exchange>.batched)"}, K_BOOL, F(rabbitmq_reading_events), "1"},
    {{"--redis-host", "REDIS_HOST", "HOST", "redis queue: server host"}, K_STR, F(redis_host), "localhost"},
    {{"--redis-port", "REDIS_PORT", "PORT", "redis queue: server port"}, K_UINT, F(redis_port), "6379"},
    {{"--redis-stream", "REDIS_STREAM", "NAME", "redis queue: stream name"}, K_STR, F(redis_stream), "energy_readings"},
    {{"--consumer-group", "CONSUMER_GROUP", "NAME", "redis queue: consumer group"}, K_STR, F(consumer_group), "processing_group"},
    {{"--consumer-name", "CONSUMER_NAME", "NAME", "redis queue: this consumer's name (default: host name)"}, K_STR, F(consumer_name), ""},
    {{"--redis-claim-idle", "REDIS_CLAIM_IDLE_MS", "MS", "redis queue: take over entries pending this long on another consumer"}, K_UINT, F(redis_claim_idle_ms), "60000"},
    {{"--redis-delete-acked", "REDIS_DELETE_ACKED", "0|1", "redis queue: XDEL entries once acknowledged (0 when other groups read the stream)"}, K_BOOL, F(redis_delete_acked), "1"},
    {{"--max-deliveries", "METERD_MAX_DELIVERIES", "N", "dead-letter a message after this many deliveries"}, K_UINT, F(max_deliveries), "5"},
    {{"--log-level", "METERD_LOG_LEVEL", "LEVEL", "debug | info | warn | error"}, K_LEVEL, F(log_level), "info"},
    {{"--access-log", "METERD_ACCESS_LOG", "0|1", "log every HTTP request (errors are always logged)"}, K_BOOL, F(access_log), "0"},
    {{"--http-fast-lane", "METERD_HTTP_FAST_LANE", "0|1", "serve plain ingest POSTs without libmicrohttpd (0: every request through it)"}, K_BOOL, F(http_fast_lane), "1"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

/* Parses "123", "64k", "16M", "1G" (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-') return MD_ERR_INVALID;
    unsigned shift = 0;
    switch (*end) {
    case '\0': break;
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: return MD_ERR_INVALID;
    }
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end || (shift && v > (UINT64_MAX >> shift))) return MD_ERR_INVALID;
    *out = (uint64_t)v << shift;
    return MD_OK;
}

static int set_opt(config *c, const opt *o, const char *val, const char *source, char *err,
                   size_t errlen)
{
    char *dst = (char *)c + o->off;
    uint64_t v;
    switch (o->kind) {
    case K_STR:
    case K_STR_EMPTY:
        if (strlen(val) >= o->size) goto bad;
        memcpy(dst, val, strlen(val) + 1);
        return MD_OK;
    case K_UINT:
        if (parse_size(val, &v) || v > 1000000000u) goto bad;
        if (o->off == offsetof(config, worker_nice) && v > 19) goto bad; /* nice's range */
        if (o->off == offsetof(config, worker_linger_ms) && v > 10000) goto bad;
        if (o->off == offsetof(config, rabbitmq_prefetch) && (v < 1 || v > 65535))
            goto bad; /* AMQP's prefetch-count is 16 bits, and 0 would be unlimited */
        *(unsigned *)dst = (unsigned)v;
        return MD_OK;
    case K_SIZE:
        if (parse_size(val, &v)) goto bad;
        if (o->size == sizeof(uint64_t)) *(uint64_t *)dst = v;
        else *(size_t *)dst = (size_t)v;
        return MD_OK;
    case K_BOOL:
        if (!strcmp(val, "1") || !strcmp(val, "true") || !strcmp(val, "yes")) *(int *)dst = 1;
        else if (!strcmp(val, "0") || !strcmp(val, "false") || !strcmp(val, "no")) *(int *)dst = 0;
        else goto bad;
        return MD_OK;
    case K_LEVEL: {
        int l = log_level_parse(val);
        if (l < 0) goto bad;
        *(int *)dst = l;
        return MD_OK;
    }
    }
bad:
    snprintf(err, errlen, "%s: invalid value '%s' for %s (%s)", source, val, o->o.arg, o->o.help);
    return MD_ERR_INVALID;
}

void config_defaults(config *c)
{
    char err[64];
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_OPTS; i++) set_opt(c, &opts[i], opts[i].deflt, "default", err, sizeof err);
}

int config_from_env(config *c, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const char *v = getenv(opts[i].o.env);
        if (v && (*v || opts[i].kind == K_STR_EMPTY)) {
            int rc = set_opt(c, &opts[i], v, opts[i].o.env, err, errlen);
            if (rc) return rc;
        }
    }
    return MD_OK;
}

int config_from_args(config *c, int argc, char **argv, int first, char *err, size_t errlen)
{
    for (int a = first; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) return 1;
        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const opt *o = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (strlen(opts[i].o.flag) == nlen && !strncmp(opts[i].o.flag, arg, nlen)) o = &opts[i];
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return MD_ERR_INVALID;
        }
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "option %s needs a value (%s)", o->o.flag, o->o.arg);
                return MD_ERR_INVALID;
            }
            val = argv[++a];
        }
        int rc = set_opt(c, o, val, o->o.flag, err, errlen);
        if (rc) return rc;
    }
    return MD_OK;
}

int config_check(const config *c, char *err, size_t errlen)
{
    if (c->max_inflight_bytes && c->max_inflight_bytes < c->max_body_bytes) {
        snprintf(err, errlen,
                 "--max-inflight-bytes (%" PRIu64 ") must be at least --max-body-bytes (%zu), or "
                 "a request of the largest size could never be taken",
                 c->max_inflight_bytes, c->max_body_bytes);
        return MD_ERR_INVALID;
    }
    return MD_OK;
}

void config_print_help(void *file)
{
    FILE *f = file;
    fprintf(f, "Options (flag, environment variable, default):\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s %s", opts[i].o.flag, opts[i].o.arg);
        fprintf(f, "  %-28s %s\n  %-28s   env %s, default %s\n", left, opts[i].o.help, "",
                opts[i].o.env, opts[i].deflt);
    }
}
