/* meterd loadgen: option parsing and --help. */
#include "loadgen/options.h"
#include "core/error.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const format_names[] = {"single", "batch", "raw", "envelope", "site", "grpc"};

const char *lg_format_name(lg_format f)
{
    return format_names[f];
}

void lg_opts_help(FILE *f)
{
    fprintf(f,
            "Usage: meterd loadgen [OPTIONS]\n\n"
            "Sends readings to a running meterd over HTTP/1.1 keep-alive (or gRPC) and reports\n"
            "throughput and latency. Every generated (device, metric, ts) is unique within and\n"
            "across runs.\n\n"
            "  --url URL            server (default http://127.0.0.1:8080); with --format grpc\n"
            "                       only --verify uses it (it reads /metrics over HTTP)\n"
            "  --format F           single   one canonical JSON reading per POST /api/v1/readings\n"
            "                       batch    canonical JSON of --batch readings\n"
            "                       raw      POST /api/readings/raw, base64 protobuf MeterData\n"
            "                       envelope POST /api/v1/envelopes, --batch PM entries\n"
            "                       site     one site reading per POST /readings\n"
            "                       grpc     meterd.v1.Meterd/Write of --batch readings (gRPC)\n"
            "                       (default single)\n"
            "  --grpc-addr HOST:PORT\n"
            "                       gRPC server for --format grpc (default: the host of --url,\n"
            "                       port 50051); any gRPC target (dns:///h:p, unix:PATH) works\n"
            "  --batch N            readings per request for batch, raw, envelope, grpc\n"
            "                       (default 1000)\n"
            "  --devices N          devices the readings are spread over (default 1000)\n"
            "  --connections C      keep-alive connections (default 64); grpc: calls in flight,\n"
            "                       over one HTTP/2 channel (TCP connection) per thread\n"
            "  --threads T          client threads, each with its own epoll or gRPC completion\n"
            "                       queue (default 2, 1 on 1 core)\n"
            "  --rate R             requests/s in total, 0 = as fast as possible (default 0); at a\n"
            "                       fixed rate latency counts from the scheduled send time, or\n"
            "                       from the send if earlier: HTTP requests due within the next\n"
            "                       millisecond go out together\n"
            "  --duration S         run for S seconds (default 10)\n"
            "  --count N            send N requests instead of running for a duration\n"
            "  --fleet N            replay N devices reporting every 60 s of simulated time\n"
            "                       (minute-aligned ts, ~1%% resent duplicates, ~1%% late readings)\n"
            "  --timeout S          seconds to wait for one response (default 30; grpc: the\n"
            "                       call deadline)\n"
            "  --verify             at the end wait for meterd_queue_depth 0, then check that\n"
            "                       every 2xx (gRPC OK) reading was stored\n"
            "                       (meterd_readings_stored_total)\n"
            "  --verify-timeout S   how long to wait for the queue to drain (default 300)\n"
            "  --json               print the final summary as one JSON object on stdout; its\n"
            "                       status counts responses by HTTP status, or with --format\n"
            "                       grpc by gRPC status name (\"OK\", \"UNAVAILABLE\", ...)\n"
            "  --no-progress        no live progress line (it is shown when stderr is a TTY)\n"
            "  --help               this text\n\n"
            "Exit status: 0 ok, 1 errors or verification failed, 2 bad usage.\n");
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return MD_ERR_INVALID;
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    if (!*s || *s == '-' || *s == '+') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *out)
{
    if (!*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v) || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* http://host[:port][/prefix]; IPv6 literals in brackets. */
static int parse_url(lg_opts *o, const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "http://", 7))
        return bad(err, errlen, "--url: only http:// URLs are supported: '%s'", url);
    const char *h = url + 7, *end = h + strcspn(h, "/"), *hend, *port = NULL;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb) return bad(err, errlen, "--url: unterminated IPv6 address in '%s'", url);
        h++;
        hend = rb;
        if (rb + 1 < end) {
            if (rb[1] != ':') return bad(err, errlen, "--url: bad port in '%s'", url);
            port = rb + 2;
        }
    } else {
        const char *colon = memchr(h, ':', (size_t)(end - h));
        hend = colon ? colon : end;
        if (colon) port = colon + 1;
    }
    if (hend == h || (size_t)(hend - h) >= sizeof o->host)
        return bad(err, errlen, "--url: missing or too long host in '%s'", url);
    memcpy(o->host, h, (size_t)(hend - h));
    o->host[hend - h] = '\0';
    if (port) {
        size_t n = (size_t)(end - port);
        char tmp[8];
        uint64_t pv;
        if (!n || n >= sizeof tmp) return bad(err, errlen, "--url: bad port in '%s'", url);
        memcpy(tmp, port, n);
        tmp[n] = '\0';
        if (parse_u64(tmp, 1, 65535, &pv)) return bad(err, errlen, "--url: bad port in '%s'", url);
        snprintf(o->port, sizeof o->port, "%u", (unsigned)pv);
    } else {
        strcpy(o->port, "80");
    }
    size_t plen = strlen(end);
    while (plen && end[plen - 1] == '/')
        plen--;
    if (plen >= sizeof o->prefix) return bad(err, errlen, "--url: path too long");
    if (strpbrk(end, "?# \t\r\n")) return bad(err, errlen, "--url: no query, fragment or spaces");
    memcpy(o->prefix, end, plen);
    o->prefix[plen] = '\0';
    return MD_OK;
}

int lg_opts_parse(lg_opts *o, int argc, char **argv, int first, char *err, size_t errlen)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    memset(o, 0, sizeof *o);
    o->format = LG_FMT_SINGLE;
    o->devices = 1000;
    o->connections = 64;
    o->threads = cpus >= 2 ? 2 : 1;
    o->timeout_s = 30;
    o->verify_timeout_s = 300;
    o->progress = isatty(STDERR_FILENO);
    int batch_set = 0, dur_set = 0, grpc_set = 0;
    uint64_t u;
    double d;
    if (parse_url(o, "http://127.0.0.1:8080", err, errlen)) return MD_ERR_INVALID;

    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        char name[32];
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        if (nlen >= sizeof name) nlen = sizeof name - 1;
        memcpy(name, a, nlen);
        name[nlen] = '\0';
#define FLAG(s) (!strcmp(name, s))
        if (FLAG("--help") || FLAG("-h")) return 1;
        if (FLAG("--json") || FLAG("--verify") || FLAG("--no-progress")) {
            if (eq) return bad(err, errlen, "%s takes no value", name);
            if (FLAG("--json")) o->json = 1;
            else if (FLAG("--verify")) o->verify = 1;
            else o->progress = 0;
            continue;
        }
        if (eq) v = eq + 1;
        else if (i + 1 < argc) v = argv[++i];
        else return bad(err, errlen, "%s needs a value", name);

        if (FLAG("--url")) {
            if (parse_url(o, v, err, errlen)) return MD_ERR_INVALID;
        } else if (FLAG("--grpc-addr")) {
            if (!*v || strlen(v) >= sizeof o->grpc_addr || strpbrk(v, " \t\r\n"))
                return bad(err, errlen, "--grpc-addr: '%s' is not a HOST:PORT", v);
            strcpy(o->grpc_addr, v);
            grpc_set = 1;
        } else if (FLAG("--format")) {
            size_t f;
            for (f = 0; f < sizeof format_names / sizeof *format_names; f++)
                if (!strcmp(v, format_names[f])) break;
            if (f == sizeof format_names / sizeof *format_names)
                return bad(err, errlen,
                           "--format: '%s' is not one of single, batch, raw, envelope, site, grpc",
                           v);
            o->format = (lg_format)f;
        } else if (FLAG("--batch")) {
            if (parse_u64(v, 1, 1000000, &u))
                return bad(err, errlen, "--batch: '%s' is not an integer in 1..1000000", v);
            o->batch = (size_t)u;
            batch_set = 1;
        } else if (FLAG("--devices")) {
            if (parse_u64(v, 1, 100000000, &o->devices))
                return bad(err, errlen, "--devices: '%s' is not an integer in 1..100000000", v);
        } else if (FLAG("--connections")) {
            if (parse_u64(v, 1, 100000, &u))
                return bad(err, errlen, "--connections: '%s' is not an integer in 1..100000", v);
            o->connections = (unsigned)u;
        } else if (FLAG("--threads")) {
            if (parse_u64(v, 1, 256, &u))
                return bad(err, errlen, "--threads: '%s' is not an integer in 1..256", v);
            o->threads = (unsigned)u;
        } else if (FLAG("--rate")) {
            if (parse_double(v, 0, 1e8, &o->rate))
                return bad(err, errlen, "--rate: '%s' is not a number in 0..1e8", v);
        } else if (FLAG("--duration")) {
            if (parse_double(v, 0.001, 1e7, &o->duration_s))
                return bad(err, errlen, "--duration: '%s' is not a positive number of seconds", v);
            dur_set = 1;
        } else if (FLAG("--count")) {
            if (parse_u64(v, 1, UINT64_C(1) << 48, &o->count))
                return bad(err, errlen, "--count: '%s' is not a positive integer", v);
        } else if (FLAG("--fleet")) {
            if (parse_u64(v, 1, 100000000, &o->fleet))
                return bad(err, errlen, "--fleet: '%s' is not an integer in 1..100000000", v);
        } else if (FLAG("--timeout")) {
            if (parse_double(v, 0.001, 1e6, &d))
                return bad(err, errlen, "--timeout: '%s' is not a positive number of seconds", v);
            o->timeout_s = d;
        } else if (FLAG("--verify-timeout")) {
            if (parse_double(v, 0.001, 1e6, &d))
                return bad(err, errlen,
                           "--verify-timeout: '%s' is not a positive number of seconds", v);
            o->verify_timeout_s = d;
        } else {
            return bad(err, errlen, "unknown option '%s' (see meterd loadgen --help)", a);
        }
#undef FLAG
    }
    if (dur_set && o->count) return bad(err, errlen, "--duration and --count exclude each other");
    if (!dur_set && !o->count) o->duration_s = 10;
    int batched = o->format == LG_FMT_BATCH || o->format == LG_FMT_RAW ||
                  o->format == LG_FMT_ENVELOPE || o->format == LG_FMT_GRPC;
    /* these carry any device in any reading; raw and envelope are one device per request */
    int mixed = o->format == LG_FMT_BATCH || o->format == LG_FMT_GRPC;
    if (batch_set && !batched)
        return bad(err, errlen, "--batch applies to --format batch, raw, envelope or grpc, not %s",
                   lg_format_name(o->format));
    if (o->fleet && batch_set && !mixed)
        return bad(err, errlen,
                   "--fleet sends one reading per request except with --format batch or grpc");
    o->batch = batched && !(o->fleet && !mixed) ? (batch_set ? o->batch : 1000) : 1;
    if (grpc_set && o->format != LG_FMT_GRPC)
        return bad(err, errlen, "--grpc-addr applies to --format grpc only");
    if (o->format == LG_FMT_GRPC && !grpc_set) /* the server's default gRPC port */
        snprintf(o->grpc_addr, sizeof o->grpc_addr, "%s%s%s:50051", strchr(o->host, ':') ? "[" : "",
                 o->host, strchr(o->host, ':') ? "]" : "");
    if (o->threads > o->connections) o->threads = o->connections;
    return MD_OK;
}
