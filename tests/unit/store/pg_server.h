/* A real PostgreSQL 15 for the store tests, started once per test binary on a free loopback
 * port in a temporary directory (docs: /work/shared/TESTING.md), stopped at exit even when a
 * test fails. Missing binaries are a failure, not a skip: CI installs postgresql-15. */
#ifndef METERD_TESTS_STORE_PG_SERVER_H
#define METERD_TESTS_STORE_PG_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PG_BIN "/usr/lib/postgresql/15/bin"

typedef struct pg_server {
    char dir[64]; /* temp dir; the cluster is in dir/pg/data */
    int port;
    int running;
} pg_server;

static pg_server pg_srv;

static int pg_server_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Runs cmd as the postgres user (root drops to it, as postgres refuses to run as root). */
static int pg_server_run(const char *cmd)
{
    char full[1024];
    if (geteuid() == 0)
        snprintf(full, sizeof(full), "su postgres -s /bin/sh -c \"%s\"", cmd);
    else
        snprintf(full, sizeof(full), "%s", cmd);
    return system(full);
}

static void pg_server_stop(void)
{
    if (pg_srv.running) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), PG_BIN "/pg_ctl -D %s/pg/data stop -m fast >/dev/null 2>&1",
                 pg_srv.dir);
        pg_server_run(cmd);
        pg_srv.running = 0;
    }
    if (pg_srv.dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pg_srv.dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", pg_srv.dir);
        pg_srv.dir[0] = '\0';
    }
}

/* Starts the server; 0, or -1 with a message on stderr. */
static int pg_server_start(void)
{
    if (access(PG_BIN "/initdb", X_OK) != 0 || access(PG_BIN "/postgres", X_OK) != 0) {
        fprintf(stderr, "PostgreSQL 15 binaries missing in " PG_BIN " (apt-get install"
                        " postgresql-15)\n");
        return -1;
    }
    snprintf(pg_srv.dir, sizeof(pg_srv.dir), "/tmp/meterd-pg-XXXXXX");
    if (!mkdtemp(pg_srv.dir)) return -1;
    atexit(pg_server_stop);
    char cmd[768];
    snprintf(cmd, sizeof(cmd), "chmod 755 %s && mkdir %s/pg && %s %s/pg", pg_srv.dir, pg_srv.dir,
             geteuid() == 0 ? "chown postgres:postgres" : "true", pg_srv.dir);
    if (system(cmd) != 0) return -1;
    snprintf(cmd, sizeof(cmd),
             PG_BIN "/initdb -D %s/pg/data -A trust -U postgres >%s/pg/initdb.log 2>&1",
             pg_srv.dir, pg_srv.dir);
    if (pg_server_run(cmd) != 0) {
        fprintf(stderr, "initdb failed, see %s/pg/initdb.log\n", pg_srv.dir);
        return -1;
    }
    for (int attempt = 0; attempt < 3 && !pg_srv.running; attempt++) {
        pg_srv.port = pg_server_free_port();
        snprintf(cmd, sizeof(cmd),
                 PG_BIN "/postgres -D %s/pg/data -p %d -k %s/pg -c listen_addresses=127.0.0.1"
                        " -c fsync=on >%s/pg/server.log 2>&1 &",
                 pg_srv.dir, pg_srv.port, pg_srv.dir, pg_srv.dir);
        if (pg_server_run(cmd) != 0) continue;
        pg_srv.running = 1; /* from now on stop() runs pg_ctl */
        for (int i = 0; i < 150; i++) {
            snprintf(cmd, sizeof(cmd), PG_BIN "/pg_isready -q -h 127.0.0.1 -p %d", pg_srv.port);
            if (system(cmd) == 0) return 0;
            usleep(100 * 1000);
        }
        snprintf(cmd, sizeof(cmd), PG_BIN "/pg_ctl -D %s/pg/data stop -m fast >/dev/null 2>&1",
                 pg_srv.dir);
        pg_server_run(cmd);
        pg_srv.running = 0;
    }
    fprintf(stderr, "postgres did not start, see %s/pg/server.log\n", pg_srv.dir);
    return -1;
}

#endif
