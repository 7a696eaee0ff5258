/* meterd loadgen: request bodies. Non-fleet keys: reading i of the run goes to device
 * i % devices with ts = start + i / devices µs (per-device requests: request j to device
 * j % devices, readings at start + (j / devices) * batch + k µs). Keys stay unique across
 * runs while no device gets more than 10^6 readings per second of wall time. */
#include "loadgen/payload.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "meterd/v1/meterd.pb-c.h"
#include "meterdata.pb-c.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lg_fifo_entry {
    lg_item item;
    uint64_t release_at; /* stream index from which it may be sent */
    int resent;          /* 1: a copy already went out; 0: held back (late) */
};

int lg_buf_reserve(lg_buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap) return MD_OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return MD_ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return MD_OK;
}

int lg_buf_append(lg_buf *b, const void *s, size_t n)
{
    if (lg_buf_reserve(b, n)) return MD_ERR_NOMEM;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return MD_OK;
}

void lg_buf_free(lg_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int buf_printf(lg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(lg_buf *b, const char *fmt, ...)
{
    for (int round = 0; round < 2; round++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap > b->len ? b->cap - b->len : 0;
        int n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) return MD_ERR_NOMEM;
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return MD_OK;
        }
        if (lg_buf_reserve(b, (size_t)n + 1)) return MD_ERR_NOMEM;
    }
    return MD_ERR_NOMEM;
}

int lg_base64_encode(lg_buf *out, const uint8_t *in, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (lg_buf_reserve(out, (n + 2) / 3 * 4)) return MD_ERR_NOMEM;
    char *o = out->p + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = a[(v >> 6) & 63];
        *o++ = a[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->p);
    out->p[out->len] = '\0';
    return MD_OK;
}

const char *lg_gen_path(lg_format f)
{
    switch (f) {
    case LG_FMT_RAW: return "/api/readings/raw";
    case LG_FMT_ENVELOPE: return "/api/v1/envelopes";
    case LG_FMT_SITE: return "/readings";
    case LG_FMT_GRPC: return "/meterd.v1.Meterd/Write";
    default: return "/api/v1/readings";
    }
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15u;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
    return x ^ (x >> 31);
}

int lg_gen_init(lg_gen *g, const lg_opts *o, unsigned tid, unsigned nthreads, int64_t start_us,
                int64_t fleet_t0_us)
{
    memset(g, 0, sizeof *g);
    g->format = o->format;
    g->batch = o->batch;
    g->devices = o->fleet ? o->fleet : o->devices;
    g->start_us = start_us;
    g->fleet = o->fleet;
    if (o->fleet) {
        /* Fleet keys are minute-aligned, so the run is told apart by its device names. */
        uint64_t run = (uint64_t)(start_us / TIME_US_PER_SEC) % 10000000;
        snprintf(g->dev_prefix, sizeof g->dev_prefix, "fl%" PRIu64 "-", run);
        g->meter_base = (int64_t)run * 100000000 + 1;
        g->f_dev0 = tid;
        g->f_step = nthreads;
        g->f_ndev = g->devices > tid ? (g->devices - tid + nthreads - 1) / nthreads : 0;
        g->f_t0_us = fleet_t0_us;
        g->f_seed = mix64((uint64_t)start_us ^ tid);
        g->fifo_cap = 1024 + g->f_ndev / 25;
        if (!(g->fifo = calloc(g->fifo_cap, sizeof *g->fifo))) return MD_ERR_NOMEM;
    } else {
        strcpy(g->dev_prefix, "lg-");
        g->meter_base = 900000000;
    }
    if (!(g->items = calloc(g->batch, sizeof *g->items))) return MD_ERR_NOMEM;
    return MD_OK;
}

void lg_gen_free(lg_gen *g)
{
    free(g->fifo);
    free(g->items);
    free(g->pb);
    lg_buf_free(&g->bin);
    memset(g, 0, sizeof *g);
}

/* The next reading of the fleet replay: each round every device of this thread reports
 * once at t0 + round minutes; ~1% are held back past the device's next reading (late),
 * ~1% are sent again about a round later (duplicates). */
static void fleet_next(lg_gen *g, lg_item *it, lg_req_info *info)
{
    if (!g->f_ndev) { /* more threads than devices: this thread repeats nothing new */
        it->device = 0;
        it->ts_us = g->f_t0_us;
        it->value = 0;
        return;
    }
    for (;;) {
        if (g->fifo_len) {
            lg_fifo_entry *e = &g->fifo[g->fifo_head];
            if (e->release_at <= g->f_s) {
                *it = e->item;
                if (e->resent) info->resent++;
                else info->late++;
                g->fifo_head = (g->fifo_head + 1) % g->fifo_cap;
                g->fifo_len--;
                return;
            }
        }
        uint64_t s = g->f_s++, r = s / g->f_ndev, k = s % g->f_ndev;
        it->device = g->f_dev0 + k * g->f_step;
        it->ts_us = g->f_t0_us + (int64_t)r * 60 * TIME_US_PER_SEC;
        it->value = 1000.0 + (double)(it->device % 500) + (double)r * 0.25;
        unsigned roll = (unsigned)(mix64(g->f_seed ^ s) % 100);
        if (roll > 1 || g->fifo_len == g->fifo_cap) return;
        lg_fifo_entry *e = &g->fifo[(g->fifo_head + g->fifo_len++) % g->fifo_cap];
        e->item = *it;
        e->release_at = g->f_s + g->f_ndev; /* after this device's next reading */
        e->resent = roll == 1;
        if (e->resent) return; /* send now, and again later */
        /* held back: produce another reading instead */
    }
}

/* Fills g->items[0..n) for request seq. */
static void make_items(lg_gen *g, uint64_t seq, size_t n, lg_req_info *info)
{
    memset(info, 0, sizeof *info);
    info->readings = (uint32_t)n;
    for (size_t k = 0; k < n; k++) {
        lg_item *it = &g->items[k];
        if (g->fleet) {
            fleet_next(g, it, info);
            continue;
        }
        uint64_t i;
        if (g->format == LG_FMT_RAW || g->format == LG_FMT_ENVELOPE) {
            it->device = seq % g->devices;
            i = (seq / g->devices) * g->batch + k;
        } else {
            uint64_t idx = seq * g->batch + k;
            it->device = idx % g->devices;
            i = idx / g->devices;
        }
        it->ts_us = g->start_us + (int64_t)i;
        it->value = 200.0 + (double)((seq * 31 + k) % 97) * 0.5;
    }
}

static int body_canonical(lg_gen *g, size_t n, lg_buf *out)
{
    char ts[32];
    if (lg_buf_append(out, "{\"readings\":[", 13)) return MD_ERR_NOMEM;
    for (size_t k = 0; k < n; k++) {
        const lg_item *it = &g->items[k];
        if (buf_printf(out, "%s{\"device\":\"%s%" PRIu64 "\",\"metric\":\"energy\",\"ts\":\"%s\",\"value\":%.17g}",
                       k ? "," : "", g->dev_prefix, it->device,
                       time_format_rfc3339(it->ts_us, ts), it->value))
            return MD_ERR_NOMEM;
    }
    return lg_buf_append(out, "]}", 2);
}

static int body_site(lg_gen *g, lg_buf *out)
{
    char ts[32];
    const lg_item *it = &g->items[0];
    return buf_printf(out,
                      "{\"site_id\":\"%ssite-%" PRIu64 "\",\"device_id\":\"%s%" PRIu64
                      "\",\"power_reading\":%.17g,\"timestamp\":\"%s\"}",
                      g->dev_prefix, it->device / 100, g->dev_prefix, it->device, it->value,
                      time_format_rfc3339(it->ts_us, ts));
}

static int body_envelope(lg_gen *g, uint64_t seq, size_t n, lg_buf *out)
{
    char ts[32];
    int64_t newest = g->items[0].ts_us;
    for (size_t k = 1; k < n; k++)
        if (g->items[k].ts_us > newest) newest = g->items[k].ts_us;
    /* request_id names the batch: unique per request and run, as a gateway's would be */
    if (buf_printf(out,
                   "{\"request_id\":\"lg-%" PRId64 "-%u-%" PRIu64 "\",\"client_fingerprint\":\"%sfp-%" PRIu64
                   "\",\"ip_address\":\"127.0.0.1\",\"user_agent\":\"meterd-loadgen\","
                   "\"received_at\":\"%s\",\"payload\":{\"PM\":[",
                   g->start_us, (unsigned)g->f_dev0, g->fleet ? g->f_s : seq, g->dev_prefix,
                   g->items[0].device, time_format_rfc3339(newest, ts)))
        return MD_ERR_NOMEM;
    for (size_t k = 0; k < n; k++)
        if (buf_printf(out, "%s{\"date\":\"%s\",\"data\":\"%.17g\",\"name\":\"energy\"}",
                       k ? "," : "", time_format_rfc3339(g->items[k].ts_us, ts),
                       g->items[k].value))
            return MD_ERR_NOMEM;
    return lg_buf_append(out, "]}}", 3);
}

typedef struct pb_scratch {
    MeterData__MeterReading r;
    Google__Protobuf__Timestamp t;
} pb_scratch;

static int body_raw(lg_gen *g, size_t n, lg_buf *out)
{
    if (g->pb_cap < n) {
        void *p = realloc(g->pb, n * (sizeof(pb_scratch) + sizeof(void *)));
        if (!p) return MD_ERR_NOMEM;
        g->pb = p;
        g->pb_cap = n;
    }
    pb_scratch *s = g->pb;
    MeterData__MeterReading **ptrs = (MeterData__MeterReading **)(s + g->pb_cap);
    for (size_t k = 0; k < n; k++) {
        meter_data__meter_reading__init(&s[k].r);
        google__protobuf__timestamp__init(&s[k].t);
        int64_t us = g->items[k].ts_us;
        s[k].t.seconds = us / TIME_US_PER_SEC;
        s[k].t.nanos = (int32_t)(us % TIME_US_PER_SEC) * 1000;
        s[k].r.timestamp = &s[k].t;
        s[k].r.value = g->items[k].value;
        ptrs[k] = &s[k].r;
    }
    MeterData md = METER_DATA__INIT;
    md.n_readings = n;
    md.readings = ptrs;
    size_t plen = meter_data__get_packed_size(&md);
    g->bin.len = 0;
    if (lg_buf_reserve(&g->bin, plen)) return MD_ERR_NOMEM;
    g->bin.len = meter_data__pack(&md, (uint8_t *)g->bin.p);
    /* a per-device request: every reading has the same device */
    if (buf_printf(out, "{\"meter_number\":%" PRId64 ",\"data\":\"",
                   g->meter_base + (int64_t)g->items[0].device) ||
        lg_base64_encode(out, (const uint8_t *)g->bin.p, g->bin.len))
        return MD_ERR_NOMEM;
    return lg_buf_append(out, "\"}", 2);
}

typedef struct grpc_scratch {
    Meterd__V1__Point p;
    Google__Protobuf__Timestamp t;
    char device[56];
} grpc_scratch;

/* A packed meterd.v1.WriteRequest (binary, no framing: the gRPC client adds that). */
static int body_grpc(lg_gen *g, size_t n, lg_buf *out)
{
    if (g->pb_cap < n) {
        void *p = realloc(g->pb, n * (sizeof(grpc_scratch) + sizeof(void *)));
        if (!p) return MD_ERR_NOMEM;
        g->pb = p;
        g->pb_cap = n;
    }
    grpc_scratch *s = g->pb;
    Meterd__V1__Point **ptrs = (Meterd__V1__Point **)(s + g->pb_cap);
    for (size_t k = 0; k < n; k++) {
        meterd__v1__point__init(&s[k].p);
        google__protobuf__timestamp__init(&s[k].t);
        int64_t us = g->items[k].ts_us;
        s[k].t.seconds = us / TIME_US_PER_SEC;
        s[k].t.nanos = (int32_t)(us % TIME_US_PER_SEC) * 1000;
        snprintf(s[k].device, sizeof s[k].device, "%s%" PRIu64, g->dev_prefix, g->items[k].device);
        s[k].p.device = s[k].device;
        s[k].p.metric = "energy";
        s[k].p.ts = &s[k].t;
        s[k].p.value = g->items[k].value;
        ptrs[k] = &s[k].p;
    }
    Meterd__V1__WriteRequest req = METERD__V1__WRITE_REQUEST__INIT;
    req.n_readings = n;
    req.readings = ptrs;
    size_t plen = meterd__v1__write_request__get_packed_size(&req);
    if (lg_buf_reserve(out, plen)) return MD_ERR_NOMEM;
    out->len += meterd__v1__write_request__pack(&req, (uint8_t *)out->p + out->len);
    return MD_OK;
}

int lg_gen_body(lg_gen *g, uint64_t seq, lg_buf *out, lg_req_info *info)
{
    size_t n = g->batch;
    make_items(g, seq, n, info);
    switch (g->format) {
    case LG_FMT_RAW: return body_raw(g, n, out);
    case LG_FMT_ENVELOPE: return body_envelope(g, seq, n, out);
    case LG_FMT_SITE: return body_site(g, out);
    case LG_FMT_GRPC: return body_grpc(g, n, out);
    default: return body_canonical(g, n, out);
    }
}
