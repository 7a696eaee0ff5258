/* Real RabbitMQ / Redis servers for queue tests, started on a free loopback port in a temp dir
 * (as in /work/shared/TESTING.md) and stopped in teardown. Missing binaries make setup fail,
 * never skip: CI installs them. Header-only; include from one test file per binary. */
#ifndef METERD_TESTS_QUEUE_SERVERS_H
#define METERD_TESTS_QUEUE_SERVERS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct test_server {
    char dir[64];     /* temp dir, removed at stop */
    char node[96];    /* rabbitmq node name */
    int port;
    int dist_port;
    int running;
    char start_cmd[2048];
} test_server;

static inline int srv_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l)) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* 1 when something accepts TCP connections on 127.0.0.1:port. */
static inline int srv_port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

static inline int srv_wait_port(int port, int want_open, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 100) {
        if (srv_port_open(port) == want_open) return 0;
        usleep(100 * 1000);
    }
    return -1;
}

static inline int srv_have(const char *path)
{
    if (access(path, X_OK) == 0) return 1;
    fprintf(stderr, "servers.h: %s is missing (install rabbitmq-server / redis-server)\n", path);
    return 0;
}

static inline int srv_mkdtemp(test_server *s, const char *prefix)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/%s-XXXXXX", prefix);
    if (!mkdtemp(s->dir)) return -1;
    return chmod(s->dir, 0755);
}

static inline int srv_run(const char *cmd)
{
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* (Re)starts the RabbitMQ node of s; ready when the AMQP port accepts connections. */
static inline int srv_rabbit_start_again(test_server *s)
{
    if (srv_run(s->start_cmd)) return -1;
    if (srv_wait_port(s->port, 1, 60000)) {
        fprintf(stderr, "servers.h: rabbitmq did not come up; logs in %s/rmq/log\n", s->dir);
        return -1;
    }
    /* The port opens before the node accepts logins (seconds on a busy, fresh CI machine):
     * wait for the application itself. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rabbitmqctl -n %s await_startup --timeout 60 > /dev/null 2>&1",
             s->node);
    if (srv_run(cmd)) {
        fprintf(stderr, "servers.h: rabbitmq did not finish starting; logs in %s/rmq/log\n", s->dir);
        return -1;
    }
    s->running = 1;
    return 0;
}

static inline int srv_rabbit_start(test_server *s)
{
    memset(s, 0, sizeof *s);
    if (!srv_have("/usr/sbin/rabbitmq-server") || !srv_have("/usr/sbin/rabbitmqctl")) return -1;
    if (srv_mkdtemp(s, "meterd-rmq")) return -1;
    s->port = srv_free_port();
    s->dist_port = srv_free_port();
    snprintf(s->node, sizeof s->node, "meterdtest%d@localhost", (int)getpid());
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %1$s/rmq/mnesia %1$s/rmq/log && echo '[].' > %1$s/rmq/enabled_plugins && "
             "chown -R rabbitmq:rabbitmq %1$s/rmq",
             s->dir);
    if (srv_run(cmd)) return -1;
    snprintf(s->start_cmd, sizeof s->start_cmd,
             "cd %1$s && env RABBITMQ_NODE_PORT=%2$d RABBITMQ_NODENAME=%3$s "
             "RABBITMQ_DIST_PORT=%4$d RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 "
             "RABBITMQ_MNESIA_BASE=%1$s/rmq/mnesia RABBITMQ_LOG_BASE=%1$s/rmq/log "
             "RABBITMQ_FEATURE_FLAGS_FILE=%1$s/rmq/feature_flags "
             "RABBITMQ_PID_FILE=%1$s/rmq/pid RABBITMQ_ENABLED_PLUGINS_FILE=%1$s/rmq/enabled_plugins "
             "setsid rabbitmq-server > %1$s/server.out 2>&1 < /dev/null &",
             s->dir, s->port, s->node, s->dist_port);
    return srv_rabbit_start_again(s);
}

static inline void srv_rabbit_stop(test_server *s)
{
    if (s->running) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "rabbitmqctl -n %s stop > /dev/null 2>&1", s->node);
        if (srv_run(cmd)) fprintf(stderr, "servers.h: rabbitmqctl stop failed\n");
        srv_wait_port(s->port, 0, 30000);
        s->running = 0;
    }
}

static inline void srv_rabbit_destroy(test_server *s)
{
    srv_rabbit_stop(s);
    if (s->dir[0]) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s; rm -f erl_crash.dump", s->dir);
        srv_run(cmd);
        s->dir[0] = '\0';
    }
}

/* Redis with AOF and fsync on every write, so a kill -9 loses nothing that was answered. */
static inline int srv_redis_start_again(test_server *s)
{
    if (srv_run(s->start_cmd)) return -1;
    if (srv_wait_port(s->port, 1, 20000)) return -1;
    s->running = 1;
    return 0;
}

static inline int srv_redis_start(test_server *s)
{
    memset(s, 0, sizeof *s);
    if (!srv_have("/usr/bin/redis-server")) return -1;
    if (srv_mkdtemp(s, "meterd-redis")) return -1;
    s->port = srv_free_port();
    snprintf(s->start_cmd, sizeof s->start_cmd,
             "redis-server --port %2$d --bind 127.0.0.1 --save '' --appendonly yes "
             "--appendfsync always --dir %1$s --daemonize yes --pidfile %1$s/redis.pid "
             "--logfile %1$s/redis.log",
             s->dir, s->port);
    return srv_redis_start_again(s);
}

/* Kills redis (SIGKILL: a crash) and waits until the port is closed. */
static inline void srv_redis_kill(test_server *s)
{
    char path[128];
    snprintf(path, sizeof path, "%s/redis.pid", s->dir);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1) pid = 0;
        fclose(f);
    }
    if (pid > 0) kill(pid, SIGKILL);
    srv_wait_port(s->port, 0, 10000);
    unlink(path);
    s->running = 0;
}

static inline void srv_redis_destroy(test_server *s)
{
    if (s->running) srv_redis_kill(s);
    if (s->dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
        srv_run(cmd);
        s->dir[0] = '\0';
    }
}

#endif
