/* HTTP server glue over libmicrohttpd (internal epoll thread pool, suspend/resume).
 *
 * A request's life: first call → route match, early checks (404/405/415/413 by
 * Content-Length); upload calls → body accumulated up to the limit; final call → the
 * handler runs. If the handler answered, the response is queued at once; otherwise the
 * connection is suspended until http_respond_* is called from another thread (the queue's
 * commit thread), which resumes it. That is what lets many requests share one fsync. */
#include "ingest/http.h"
#include "ingest/http_internal.h"
#include "core/batch.h"
#include "core/error.h"
#include "core/log.h"
#include "core/membudget.h"
#include "core/metrics.h"
#include "core/timeutil.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* libmicrohttpd's per-connection pool holds the headers and the read buffer, and it is zeroed
 * for every request: at 64 KiB that memset was ~5% of the CPU of single-reading POSTs. */
#define HTTP_CONN_MEMORY (16 * 1024)
/* A rejected body up to this size is read and dropped before the error is sent: a client that
 * is still uploading when the server closes gets a reset instead of the error. Larger bodies
 * are answered at once and the connection closed. */
#define DISCARD_LIMIT ((uint64_t)64 * 1024 * 1024)

size_t http_routes_copy(http_route *routes, size_t cap, const http_route *table, size_t n)
{
    if (n > cap) return 0;
    memcpy(routes, table, n * sizeof *table);
    return n;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return status < 500 ? "Client Error" : "Server Error";
}

/* Matches path against pattern; on success fills params (owned copies). */
static int route_match(const char *pattern, const char *path, char **params)
{
    unsigned np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (p[0] == '{' && p[1] == '}') {
            const char *end = strchr(s, '/');
            size_t len = end ? (size_t)(end - s) : strlen(s);
            if (len == 0 || np >= MAX_PARAMS) goto fail;
            params[np] = strndup(s, len);
            if (!params[np]) goto fail;
            np++;
            s += len;
            p += 2;
        } else if (*p == *s) {
            p++;
            s++;
        } else {
            goto fail;
        }
    }
    if (*p == '\0' && *s == '\0') return 1;
fail:
    for (unsigned i = 0; i < np; i++) {
        free(params[i]);
        params[i] = NULL;
    }
    return 0;
}

static void request_free(http_request *r)
{
    for (int i = 0; i < MAX_PARAMS; i++) free(r->params[i]);
    for (int i = 0; i < MAX_EXTRA_HEADERS; i++) {
        free(r->extra[i][0]);
        free(r->extra[i][1]);
    }
    if (r->resp) MHD_destroy_response(r->resp);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    free(r->body);
    membudget_give(r->charged);
    free(r);
}

/* Takes X-Request-Id when it is short and printable, else makes one. */
static void set_request_id(http_request *r)
{
    const char *h = http_header(r, "X-Request-Id");
    if (h) {
        size_t n = strlen(h);
        int ok = n > 0 && n < sizeof r->request_id;
        for (size_t i = 0; ok && i < n; i++) ok = h[i] > 32 && h[i] < 127 && h[i] != '"';
        if (ok) {
            memcpy(r->request_id, h, n + 1);
            return;
        }
    }
    uint8_t id[16];
    char text[37];
    batch_id_new(id);
    batch_id_format(id, text);
    memcpy(r->request_id, text, sizeof text);
}

/* Content-Type check for JSON routes: application/json (any parameters) or none at all. */
static int is_json_type(const char *ct)
{
    if (!ct) return 1;
    while (*ct == ' ') ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Routes the request; leaves r->route NULL and sets reject_* when nothing fits. */
static void route_request(http_request *r)
{
    http_server *s = r->srv;
    char allow[128] = "";
    for (size_t i = 0; i < s->n_routes; i++) {
        const http_route *rt = &s->routes[i];
        char *params[MAX_PARAMS] = {0};
        if (!route_match(rt->pattern, r->path, params)) continue;
        if (strcmp(rt->method, r->method) == 0 ||
            (strcmp(r->method, "HEAD") == 0 && strcmp(rt->method, "GET") == 0)) {
            memcpy(r->params, params, sizeof params);
            r->route = rt;
            return;
        }
        for (int k = 0; k < MAX_PARAMS; k++) free(params[k]);
        if (!strstr(allow, rt->method)) {
            if (allow[0]) strncat(allow, ", ", sizeof allow - strlen(allow) - 1);
            strncat(allow, rt->method, sizeof allow - strlen(allow) - 1);
        }
    }
    if (allow[0]) {
        r->reject_status = 405;
        snprintf(r->reject_msg, sizeof r->reject_msg, "method %s is not allowed on %s; use %s",
                 r->method, r->path, allow);
        http_add_header(r, "Allow", allow);
    } else {
        r->reject_status = 404;
        snprintf(r->reject_msg, sizeof r->reject_msg, "no route for %s %s", r->method, r->path);
    }
}

int http_route_takes_body(const http_server *s, const char *method, const char *path)
{
    for (size_t i = 0; i < s->n_routes; i++) {
        const http_route *rt = &s->routes[i];
        char *params[MAX_PARAMS] = {0};
        if (rt->body == HTTP_BODY_NONE || strcmp(rt->method, method) != 0 ||
            !route_match(rt->pattern, path, params))
            continue;
        for (int k = 0; k < MAX_PARAMS; k++) free(params[k]);
        return 1;
    }
    return 0;
}

/* Takes n more bytes of body memory from the budget; over it the request is refused with a 503
 * (its body is read and dropped, like a 413's). 0, or -1 when refused. */
static int body_charge(http_request *r, uint64_t n)
{
    if (membudget_take(n) == 0) {
        r->charged += n;
        return 0;
    }
    metrics_add(MC_REJECTED_MEMORY, 1);
    r->reject_status = 503;
    snprintf(r->reject_msg, sizeof r->reject_msg,
             "request bodies in memory are over the budget of %" PRIu64
             " bytes (--max-inflight-bytes); retry later",
             membudget_max());
    http_add_header(r, "Retry-After", "1");
    return -1;
}

/* Early checks that need no body: content type and declared length. */
static void check_headers(http_request *r)
{
    const char *len = http_header(r, "Content-Length");
    r->declared_len = len ? strtoull(len, NULL, 10) : UINT64_MAX;
    if (!r->route || r->route->body == HTTP_BODY_NONE) return;
    const char *ct = http_header(r, "Content-Type");
    if (r->route->body == HTTP_BODY_JSON && !is_json_type(ct)) {
        r->reject_status = 415;
        snprintf(r->reject_msg, sizeof r->reject_msg,
                 "Content-Type must be application/json, not '%.80s'", ct);
        return;
    }
    const char *cl = http_header(r, "Content-Length");
    if (cl) {
        unsigned long long n = strtoull(cl, NULL, 10);
        if (n > r->srv->cfg.max_body_bytes) {
            r->reject_status = 413;
            snprintf(r->reject_msg, sizeof r->reject_msg,
                     "body of %llu bytes exceeds the limit of %zu bytes", n,
                     r->srv->cfg.max_body_bytes);
        } else if (n > 0 && body_charge(r, n + 1) == 0) {
            r->body = malloc(n + 1);
            r->body_cap = r->body ? n + 1 : 0;
            if (!r->body) { /* append_body takes what it grows to */
                membudget_give(n + 1);
                r->charged -= n + 1;
            }
        }
    }
}

/* Appends upload data; over the limit the rest is read and dropped, then 413. */
static void append_body(http_request *r, const char *data, size_t n)
{
    if (r->reject_status) {
        r->discarded += n;
        return;
    }
    if (r->body_len + n > r->srv->cfg.max_body_bytes) {
        r->reject_status = 413;
        snprintf(r->reject_msg, sizeof r->reject_msg, "body exceeds the limit of %zu bytes",
                 r->srv->cfg.max_body_bytes);
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = (r->body_cap ? r->body_cap : 4096);
        while (cap < r->body_len + n + 1) cap *= 2;
        if (body_charge(r, cap - r->body_cap)) {
            r->discarded += n;
            return;
        }
        char *b = realloc(r->body, cap);
        if (!b) {
            r->reject_status = 503;
            snprintf(r->reject_msg, sizeof r->reject_msg, "out of memory reading the body");
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

http_request *http_request_begin(http_server *s, const char *method, const char *url,
                                 struct MHD_Connection *conn, fast_conn *fc)
{
    http_request *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    r->srv = s;
    r->conn = conn;
    r->fc = fc;
    r->method = method;
    r->path = strdup(url);
    r->start_us = time_mono_us();
    /* counted before draining is read: http_quiesce sets draining, then waits for the
     * count, so it either waits for this request or this request sees draining */
    atomic_fetch_add(&s->in_flight, 1);
    r->admitted = 1;
    if (!r->path) {
        http_request_end(r, 0, 0);
        return NULL;
    }
    set_request_id(r);
    route_request(r);
    check_headers(r);
    if (atomic_load(&s->draining)) {
        r->admitted = 0;
        atomic_fetch_sub(&s->in_flight, 1);
        r->reject_status = 503;
        snprintf(r->reject_msg, sizeof r->reject_msg, "shutting down; retry on another instance");
        http_add_header(r, "Retry-After", "5");
        http_add_header(r, "Connection", "close");
    }
    return r;
}

void http_request_run(http_request *r)
{
    r->phase = PH_HANDLING;
    if (r->reject_status) http_respond_error(r, r->reject_status, "%s", r->reject_msg);
    else r->route->handler(r, r->route->ctx);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_server *s = cls;
    http_request *r = *con_cls;
    if (!r) {
        r = http_request_begin(s, method, url, conn, NULL);
        if (!r) return MHD_NO;
        *con_cls = r;
        if ((r->reject_status == 413 || r->reject_status == 415) &&
            r->declared_len > DISCARD_LIMIT) {
            /* too big even to drop politely: answer now, MHD closes the connection */
            r->phase = PH_HANDLING;
            http_respond_error(r, r->reject_status, "%s", r->reject_msg);
        } else {
            return MHD_YES;
        }
    } else if (r->phase == PH_RECEIVING) {
        if (*upload_data_size) {
            append_body(r, upload_data, *upload_data_size);
            *upload_data_size = 0;
            return r->discarded > DISCARD_LIMIT ? MHD_NO : MHD_YES;
        }
        http_request_run(r);
    }
    pthread_mutex_lock(&r->mu);
    if (!r->resp) {
        r->state = ST_SUSPENDED;
        MHD_suspend_connection(conn);
        pthread_mutex_unlock(&r->mu);
        return MHD_YES;
    }
    pthread_mutex_unlock(&r->mu);
    return MHD_queue_response(conn, (unsigned)r->status, r->resp);
}

void http_request_end(http_request *r, int status, int completed)
{
    http_server *s = r->srv;
    if (status >= 200 && status < 300 && r->route && r->route->body != HTTP_BODY_NONE)
        metrics_observe_ingest(time_mono_us() - r->start_us);
    if (s->cfg.access_log || status >= 400 || !completed) {
        log_level lvl = status >= 500 || status == 0 ? LOG_WARN : LOG_INFO;
        if (log_enabled(lvl)) {
            json_t *f = json_pack("{s:s,s:s,s:s,s:i,s:f,s:b}", "request_id", r->request_id,
                                  "method", r->method ? r->method : "", "path",
                                  r->path ? r->path : "", "status", status, "duration_ms",
                                  (double)(time_mono_us() - r->start_us) / 1000.0, "completed",
                                  completed);
            log_emit(lvl, "http_request", f, "%s %s -> %d", r->method ? r->method : "",
                     r->path ? r->path : "", status);
        }
    }
    int admitted = r->admitted;
    request_free(r);
    if (admitted) atomic_fetch_sub(&s->in_flight, 1);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)cls;
    http_request *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    http_request_end(r, r->resp ? r->status : 0, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
}

/* A connection MHD took from the fast lane is closed. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    (void)conn;
    (void)socket_context;
    http_server *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) atomic_fetch_sub(&s->connections, 1);
}

/* Counts the answer in the HTTP metrics. */
static void count_status(int status)
{
    metrics_add(MC_HTTP_REQUESTS, 1);
    if (status >= 500) metrics_add(MC_HTTP_5XX, 1);
    else if (status >= 400) metrics_add(MC_HTTP_4XX, 1);
}

/* Stores the response; resumes the connection when the handler had already returned. */
void http_respond_mhd(http_request *r, int status, struct MHD_Response *resp)
{
    if (!resp) {
        status = 500;
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        if (!resp) abort(); /* nothing sensible left to do */
    }
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    for (int i = 0; i < MAX_EXTRA_HEADERS; i++)
        if (r->extra[i][0]) MHD_add_response_header(resp, r->extra[i][0], r->extra[i][1]);
    count_status(status);
    struct MHD_Connection *conn = r->conn;
    pthread_mutex_lock(&r->mu);
    r->status = status;
    r->resp = resp;
    int suspended = r->state == ST_SUSPENDED;
    pthread_mutex_unlock(&r->mu);
    /* r may be freed by MHD from here on */
    if (suspended) MHD_resume_connection(conn);
}

void http_respond_text(http_request *r, int status, const char *content_type, char *body,
                       size_t len)
{
    if (r->fc) {
        count_status(status);
        http_fast_respond(r, status, content_type, body, len);
        free(body);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) free(body);
    else MHD_add_response_header(resp, "Content-Type", content_type);
    http_respond_mhd(r, status, resp);
}

void http_respond_static(http_request *r, int status, const char *content_type,
                         const void *body, size_t len)
{
    if (r->fc) {
        count_status(status);
        http_fast_respond(r, status, content_type, body, len);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (resp) MHD_add_response_header(resp, "Content-Type", content_type);
    http_respond_mhd(r, status, resp);
}

/* Smallest precision (15..17 significant digits) at which every real in j reads back exactly:
 * 1234.56 prints as 1234.56, not 1234.5599999999999, and nothing is ever rounded off. */
static int real_precision(const json_t *j, int p)
{
    if (p == 17) return p;
    if (json_is_real(j)) {
        char buf[40];
        double v = json_real_value(j);
        while (p < 17) {
            snprintf(buf, sizeof buf, "%.*g", p, v);
            if (strtod(buf, NULL) == v) break;
            p++;
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j) && p < 17; i++)
            p = real_precision(json_array_get(j, i), p);
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) p = real_precision(v, p);
    }
    return p;
}

int http_json_real_precision(const json_t *j)
{
    return real_precision(j, 15);
}

void http_respond_json(http_request *r, int status, json_t *body)
{
    size_t flags = JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                   JSON_REAL_PRECISION(real_precision(body, 15));
    char *text = json_dumps(body, flags);
    json_decref(body);
    if (!text) {
        if (r->fc) http_respond_static(r, 500, NULL, "", 0);
        else http_respond_mhd(r, 500, NULL);
        return;
    }
    http_respond_text(r, status, "application/json", text, strlen(text));
}

static void respond_error_v(http_request *r, int status, json_t *detail, const char *fmt,
                            va_list ap)
{
    char msg[512], ts[32];
    vsnprintf(msg, sizeof msg, fmt, ap);
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:s,s:s}", "statusCode", status, "error",
                          http_reason(status), "message", msg, "path", r->path ? r->path : "",
                          "timestamp", time_format_rfc3339(time_now_us(), ts), "request_id",
                          r->request_id);
    if (o && detail) json_object_set_new(o, "detail", detail);
    else json_decref(detail);
    http_respond_json(r, status, o);
}

void http_respond_error(http_request *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(r, status, NULL, fmt, ap);
    va_end(ap);
}

void http_respond_error_with(http_request *r, int status, json_t *detail, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    respond_error_v(r, status, detail, fmt, ap);
    va_end(ap);
}

void http_add_header(http_request *r, const char *name, const char *value)
{
    for (int i = 0; i < MAX_EXTRA_HEADERS; i++) {
        if (r->extra[i][0]) continue;
        r->extra[i][0] = strdup(name);
        r->extra[i][1] = strdup(value);
        return;
    }
}

const char *http_method(const http_request *r)
{
    return r->method;
}
const char *http_path(const http_request *r)
{
    return r->path;
}
const char *http_param(const http_request *r, unsigned n)
{
    return n < MAX_PARAMS ? r->params[n] : NULL;
}
const char *http_query(const http_request *r, const char *key)
{
    if (r->fc) return NULL; /* the fast lane takes no request with a query string */
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, key);
}
const char *http_header(const http_request *r, const char *name)
{
    if (r->fc) return http_fast_header(r, name);
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}
const char *http_body(const http_request *r, size_t *len)
{
    *len = r->body_len;
    return r->body ? r->body : "";
}
const char *http_request_id(const http_request *r)
{
    return r->request_id;
}

/* Resolves "host:port" ("[v6]:port" too) into a socket address. */
static int resolve(const char *addr, struct sockaddr_storage *ss, int *v6, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr || strlen(addr) >= sizeof host) {
        snprintf(err, errlen, "http address '%s': want HOST:PORT", addr);
        return MD_ERR_INVALID;
    }
    size_t hl = (size_t)(colon - addr);
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *res = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
    if (rc) {
        snprintf(err, errlen, "http address '%s': %s", addr, gai_strerror(rc));
        return MD_ERR_INVALID;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    return MD_OK;
}

/* A non-blocking listening socket on ss (address reuse on, backlog 1024); -1 on error. */
static int listen_on(const struct sockaddr_storage *ss, int v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (v6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (const struct sockaddr *)ss, len) || listen(fd, 1024)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* libmicrohttpd's fatal errors: one JSON log line saying where, like every other error, then
 * abort (MHD requires that the handler does not return). */
static void on_mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    log_error("http_panic", "libmicrohttpd panic at %s:%u: %s", file ? file : "?", line,
              reason ? reason : "(no reason given)");
    abort();
}

http_server *http_start(const http_config *cfg, const http_route *routes, size_t n_routes,
                        char *err, size_t errlen)
{
    MHD_set_panic_func(on_mhd_panic, NULL);
    struct sockaddr_storage ss;
    int v6 = 0;
    if (resolve(cfg->addr, &ss, &v6, err, errlen)) return NULL;
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = *cfg;
    pthread_mutex_init(&s->streams_mu, NULL);
    s->routes = routes;
    s->n_routes = n_routes;
    unsigned threads = cfg->threads ? cfg->threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    s->lfd = listen_on(&ss, v6);
    if (s->lfd < 0) {
        snprintf(err, errlen, "cannot listen on %s (address in use or not permitted?)", cfg->addr);
        pthread_mutex_destroy(&s->streams_mu);
        free(s);
        return NULL;
    }
    /* MHD gets its connections from the fast lane (MHD_add_connection) */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    s->d = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_CONNECTION_TIMEOUT,
        cfg->idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
        MHD_OPTION_THREAD_POOL_SIZE, threads > 1 ? threads : 0, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_CONN_MEMORY, MHD_OPTION_END);
    if (!s->d || !(s->fast = http_fast_start(s, s->lfd, threads, err, errlen))) {
        if (!s->d) snprintf(err, errlen, "http: libmicrohttpd did not start");
        else MHD_stop_daemon(s->d);
        close(s->lfd);
        pthread_mutex_destroy(&s->streams_mu);
        free(s);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    getsockname(s->lfd, (struct sockaddr *)&bound, &bl);
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    return s;
}

unsigned http_port(http_server *s)
{
    return s->port;
}

void http_quiesce(http_server *s, int timeout_ms)
{
    /* Not MHD_quiesce_daemon(): with MHD_USE_EPOLL and a thread pool (libmicrohttpd 0.9.75)
     * it races with the workers' own removal of the listen socket from their epoll sets and
     * can MHD_PANIC(). And it only stops new connections: a request on a connection accepted
     * earlier still reached its route after pipeline_close() had freed the worker (SIGSEGV
     * seen in 4 of 200 stops under load). The socket now stays open until http_stop; what
     * arrives meanwhile is answered 503 before any route runs (docs/decisions.md, 20). */
    atomic_store(&s->draining, 1);
    http_streams_close(s); /* streams never finish on their own */
    for (int waited = 0; atomic_load(&s->in_flight) > 0 && waited < timeout_ms; waited += 10)
        usleep(10 * 1000);
}

void http_stop(http_server *s)
{
    if (!s) return;
    http_streams_close(s);
    http_fast_stop(s->fast); /* first: it hands connections to MHD */
    MHD_stop_daemon(s->d);
    close(s->lfd);
    pthread_mutex_destroy(&s->streams_mu);
    free(s);
}
