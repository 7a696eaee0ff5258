/* Configuration: defaults, then environment variables, then command-line flags. */
#ifndef METERD_CORE_CONFIG_H
#define METERD_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct config {
    char http_addr[256];        /* METERD_HTTP_ADDR   --http-addr   host:port */
    char grpc_addr[256];        /* METERD_GRPC_ADDR   --grpc-addr   host:port ("": no gRPC) */
    char data_dir[1024];        /* METERD_DATA_DIR    --data-dir */
    unsigned http_threads;      /* METERD_HTTP_THREADS --http-threads (0: one per core) */
    unsigned worker_nice;       /* METERD_WORKER_NICE --worker-nice (0..19) */
    unsigned worker_linger_ms;  /* METERD_WORKER_LINGER_MS --worker-linger (0..10000) */
    size_t max_body_bytes;      /* METERD_MAX_BODY_BYTES --max-body-bytes */
    uint64_t max_inflight_bytes; /* METERD_MAX_INFLIGHT_BYTES --max-inflight-bytes (0: none) */
    size_t max_readings;        /* METERD_MAX_READINGS --max-readings (per request) */
    uint64_t max_backlog_bytes; /* METERD_MAX_BACKLOG_BYTES --max-backlog-bytes */
    uint64_t segment_bytes;     /* METERD_SEGMENT_BYTES --segment-bytes */
    unsigned idle_timeout_s;    /* METERD_IDLE_TIMEOUT --idle-timeout */
    unsigned max_connections;   /* METERD_MAX_CONNECTIONS --max-connections */
    int64_t max_future_s;       /* METERD_MAX_FUTURE --max-future (seconds) */
    int64_t envelope_window_s;  /* METERD_ENVELOPE_WINDOW --envelope-window (seconds) */
    char seed_csv[1024];        /* METERD_SEED_CSV --seed-csv FILE (serve: import at start) */
    char csv_device[256];       /* METERD_CSV_DEVICE --device (CSV import: device id) */
    unsigned drain_timeout_s;   /* METERD_DRAIN_TIMEOUT --drain-timeout */
    /* Backends (distributed mode). */
    char queue_backend[16];     /* METERD_QUEUE --queue: wal | amqp | redis */
    char database_url[1024];    /* DATABASE_URL --database-url: postgres://… (empty: SQLite) */
    char rabbitmq_url[1024];    /* RABBITMQ_URL */
    unsigned rabbitmq_prefetch; /* RABBITMQ_PREFETCH */
    char rabbitmq_ingest_exchange[256];    /* RABBITMQ_INGEST_EXCHANGE */
    char rabbitmq_ingest_queue[256];       /* RABBITMQ_INGEST_QUEUE */
    char rabbitmq_ingest_routing_key[256]; /* RABBITMQ_INGEST_ROUTING_KEY */
    char rabbitmq_dlq_queue[256];          /* RABBITMQ_DLQ_QUEUE */
    char rabbitmq_worker_exchange[256];    /* RABBITMQ_WORKER_EXCHANGE */
    int rabbitmq_reading_events;           /* RABBITMQ_READING_EVENTS: one message per reading */
    char redis_host[256];       /* REDIS_HOST */
    unsigned redis_port;        /* REDIS_PORT */
    char redis_stream[256];     /* REDIS_STREAM */
    char consumer_group[256];   /* CONSUMER_GROUP */
    char consumer_name[256];    /* CONSUMER_NAME (default: host name) */
    unsigned redis_claim_idle_ms; /* REDIS_CLAIM_IDLE_MS: XAUTOCLAIM min-idle-time */
    int redis_delete_acked;     /* REDIS_DELETE_ACKED: XDEL after XACK */
    unsigned max_deliveries;    /* METERD_MAX_DELIVERIES: dead-letter after this many deliveries */
    int log_level;              /* METERD_LOG_LEVEL --log-level */
    int access_log;             /* METERD_ACCESS_LOG --access-log */
    int http_fast_lane;         /* METERD_HTTP_FAST_LANE --http-fast-lane */
} config;

/* One configuration option, for --help and the README table. */
typedef struct config_option {
    const char *flag, *env, *arg, *help;
} config_option;

/* Fills c with the defaults. */
void config_defaults(config *c);
/* Applies METERD_* environment variables. 0, or MD_ERR_INVALID with a message in err. */
int config_from_env(config *c, char *err, size_t errlen);
/* Applies flags from argv[first..argc). 0, MD_ERR_INVALID with a message, or 1 when --help was asked. */
int config_from_args(config *c, int argc, char **argv, int first, char *err, size_t errlen);
/* Checks what no single option can: 0, or MD_ERR_INVALID with a message in err. */
int config_check(const config *c, char *err, size_t errlen);
/* Prints the option table (flags, env vars, defaults) to f. */
void config_print_help(void *file);

#endif
