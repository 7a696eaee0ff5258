/* meterd loadgen: one blocking GET of /metrics, parsed with the load generator's own
 * response parser. Used before and after a run (--verify) and once a second during it. */
#include "loadgen/verify.h"
#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

int lg_metrics_parse(const char *text, lg_server_metrics *m)
{
    static const struct {
        const char *name;
        size_t off;
    } want[] = {
        {"meterd_queue_depth", offsetof(lg_server_metrics, queue_depth)},
        {"meterd_worker_lag_seconds", offsetof(lg_server_metrics, worker_lag_s)},
        {"meterd_readings_stored_total", offsetof(lg_server_metrics, stored)},
        {"meterd_readings_accepted_total", offsetof(lg_server_metrics, accepted)},
        {"meterd_readings_duplicates_total", offsetof(lg_server_metrics, duplicates)},
        {"meterd_readings_conflicts_total", offsetof(lg_server_metrics, conflicts)},
        {"meterd_readings_invalid_total", offsetof(lg_server_metrics, invalid)},
    };
    int found = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        *(double *)((char *)m + want[i].off) = -1;
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (*p == '#') continue;
        for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
            size_t n = strlen(want[i].name);
            if (strncmp(p, want[i].name, n) || p[n] != ' ') continue;
            char *end;
            double v = strtod(p + n + 1, &end);
            if (end != p + n + 1) {
                *(double *)((char *)m + want[i].off) = v;
                found++;
            }
        }
    }
    return found;
}

int lg_metrics_fetch(const lg_shared *sh, int timeout_ms, lg_server_metrics *m, char *err,
                     size_t errlen)
{
    int fd = socket(sh->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return MD_ERR_IO;
    }
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char req[800];
    int rl = snprintf(req, sizeof req,
                      "GET %s/metrics HTTP/1.1\r\nHost: %s\r\nUser-Agent: meterd-loadgen\r\n"
                      "Accept: text/plain\r\nConnection: close\r\n\r\n",
                      sh->o->prefix, sh->host_header);
    lg_http_resp r = {.keep_body = 1};
    lg_http_resp_reset(&r);
    int rc = MD_ERR_IO;
    if (connect(fd, (const struct sockaddr *)&sh->addr, sh->addrlen) ||
        write(fd, req, (size_t)rl) != rl) {
        snprintf(err, errlen, "GET /metrics: %s", strerror(errno));
        goto out;
    }
    for (;;) {
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            snprintf(err, errlen, "GET /metrics: %s", n ? strerror(errno) : "connection closed early");
            goto out;
        }
        size_t used;
        int prc = lg_http_resp_feed(&r, buf, (size_t)n, &used);
        if (prc == LG_HTTP_MORE) continue;
        if (prc != LG_HTTP_DONE) {
            snprintf(err, errlen, "GET /metrics: malformed response: %s", r.err);
            rc = MD_ERR_INVALID;
            goto out;
        }
        break;
    }
    if (r.status != 200) {
        snprintf(err, errlen, "GET /metrics: status %d", r.status);
        rc = MD_ERR_INVALID;
    } else if (lg_metrics_parse(r.body ? r.body : "", m) == 0 || m->stored < 0 ||
               m->queue_depth < 0) {
        snprintf(err, errlen, "GET /metrics: no meterd_readings_stored_total / meterd_queue_depth");
        rc = MD_ERR_INVALID;
    } else {
        rc = MD_OK;
    }
out:
    lg_http_resp_free(&r);
    close(fd);
    return rc;
}
