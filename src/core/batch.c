/* Canonical batch: arena-backed strings, protobuf-c encoding, UUIDv7 ids. */
#include "core/batch.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "meterd/v1/batch.pb-c.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct batch_arena_block {
    batch_arena_block *next;
    size_t used, cap;
    char data[];
};

#define ARENA_BLOCK 8192

static char *arena_alloc(batch *b, size_t n)
{
    batch_arena_block *blk = b->arena;
    if (!blk || blk->cap - blk->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        blk = malloc(sizeof(*blk) + cap);
        if (!blk) return NULL;
        blk->used = 0;
        blk->cap = cap;
        blk->next = b->arena;
        b->arena = blk;
    }
    char *p = blk->data + blk->used;
    blk->used += n;
    return p;
}

const char *batch_strndup(batch *b, const char *s, size_t len)
{
    char *p = arena_alloc(b, len + 1);
    if (!p) return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

int batch_set(batch *b, const char **field, const char *value)
{
    const char *p = batch_strndup(b, value ? value : "", value ? strlen(value) : 0);
    if (!p) return MD_ERR_NOMEM;
    *field = p;
    return MD_OK;
}

/* Per-thread splitmix64, seeded once from getrandom: ids need uniqueness, not secrecy, and a
 * getrandom call per id was ~1% of the CPU of single-reading ingest. */
static uint64_t id_random(void)
{
    static __thread uint64_t state;
    static __thread int seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof state, 0) != sizeof state)
            state = (uint64_t)time_now_us() ^ (uint64_t)(uintptr_t)&state;
        seeded = 1;
    }
    uint64_t z = (state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void batch_id_new(uint8_t id[16])
{
    uint64_t ms = (uint64_t)(time_now_us() / 1000);
    uint64_t a = id_random(), b = id_random();
    for (int i = 0; i < 6; i++) id[i] = (uint8_t)(ms >> (40 - 8 * i));
    for (int i = 0; i < 2; i++) id[6 + i] = (uint8_t)(a >> (8 * i));
    for (int i = 0; i < 8; i++) id[8 + i] = (uint8_t)(b >> (8 * i));
    id[6] = (uint8_t)(0x70 | (id[6] & 0x0f)); /* version 7 */
    id[8] = (uint8_t)(0x80 | (id[8] & 0x3f)); /* RFC 4122 variant */
}

/* FNV-1a, 64-bit, from a given basis: two bases give 128 bits of a stable hash. */
static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

void batch_id_from_key(uint8_t id[16], int64_t ms, const char *key, size_t len)
{
    uint64_t a = fnv1a(UINT64_C(0xcbf29ce484222325), key, len);
    uint64_t b = fnv1a(UINT64_C(0x84222325cbf29ce4), key, len);
    for (int i = 0; i < 6; i++) id[i] = (uint8_t)((uint64_t)ms >> (40 - 8 * i));
    for (int i = 0; i < 5; i++) id[6 + i] = (uint8_t)(a >> (8 * i));
    for (int i = 0; i < 5; i++) id[11 + i] = (uint8_t)(b >> (8 * i));
    id[6] = (uint8_t)(0x70 | (id[6] & 0x0f));
    id[8] = (uint8_t)(0x80 | (id[8] & 0x3f));
}

void batch_id_format(const uint8_t id[16], char out[37])
{
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[id[i] >> 4];
        out[o++] = hex[id[i] & 15];
    }
    out[o] = '\0';
}

batch *batch_new(const char *source)
{
    batch *b = calloc(1, sizeof(*b));
    if (!b) return NULL;
    batch_id_new(b->id);
    b->received_at_us = time_now_us();
    if (batch_set(b, &b->source, source) || batch_set(b, &b->request_id, "")) {
        batch_free(b);
        return NULL;
    }
    b->tenant = b->client_ip = b->client_user_agent = b->client_fingerprint = b->request_id;
    return b;
}

void batch_free(batch *b)
{
    if (!b) return;
    batch_arena_block *blk = b->arena;
    while (blk) {
        batch_arena_block *next = blk->next;
        free(blk);
        blk = next;
    }
    free(b->readings);
    free(b->links);
    free(b);
}

/* Returns prev when it equals s[0..len) (the common case: one device per batch), else a copy.
 * s holds no NUL, so strncmp matching len bytes means prev[len] is in bounds. */
static const char *intern(batch *b, const char *prev, const char *s, size_t len)
{
    if (prev && strncmp(prev, s, len) == 0 && prev[len] == '\0') return prev;
    return batch_strndup(b, s, len);
}

int batch_addn(batch *b, const char *device, size_t device_len, const char *kind, size_t kind_len,
               const char *site, size_t site_len, const char *metric, size_t metric_len,
               int64_t ts_us, double value)
{
    if (b->n_readings == b->cap_readings) {
        size_t cap = b->cap_readings ? b->cap_readings * 2 : 16;
        reading *r = realloc(b->readings, cap * sizeof(*r));
        if (!r) return MD_ERR_NOMEM;
        b->readings = r;
        b->cap_readings = cap;
    }
    const reading *prev = b->n_readings ? &b->readings[b->n_readings - 1] : NULL;
    reading *r = &b->readings[b->n_readings];
    r->device = intern(b, prev ? prev->device : NULL, device, device_len);
    r->device_kind = intern(b, prev ? prev->device_kind : NULL, kind, kind_len);
    r->site = intern(b, prev ? prev->site : NULL, site, site_len);
    r->metric = intern(b, prev ? prev->metric : NULL, metric, metric_len);
    if (!r->device || !r->device_kind || !r->site || !r->metric) return MD_ERR_NOMEM;
    r->ts_us = ts_us;
    r->value = value;
    r->quality = 0;
    r->invalid_reason = "";
    b->n_readings++;
    return MD_OK;
}

int batch_add(batch *b, const char *device, const char *kind, const char *site,
              const char *metric, int64_t ts_us, double value)
{
    if (!device) device = "";
    if (!kind) kind = "device";
    if (!site) site = "";
    if (!metric) metric = "";
    return batch_addn(b, device, strlen(device), kind, strlen(kind), site, strlen(site), metric,
                      strlen(metric), ts_us, value);
}

int batch_mark_invalid(batch *b, const char *reason)
{
    if (!b->n_readings) return MD_ERR_INVALID;
    const char *p = batch_strndup(b, reason, strlen(reason));
    if (!p) return MD_ERR_NOMEM;
    b->readings[b->n_readings - 1].invalid_reason = p;
    return MD_OK;
}

int batch_add_link(batch *b, const char *device, const char *linked_device, const char *relation)
{
    batch_link *l = realloc(b->links, (b->n_links + 1) * sizeof(*l));
    if (!l) return MD_ERR_NOMEM;
    b->links = l;
    l = &b->links[b->n_links];
    l->device = batch_strndup(b, device, strlen(device));
    l->linked_device = batch_strndup(b, linked_device, strlen(linked_device));
    l->relation = batch_strndup(b, relation, strlen(relation));
    if (!l->device || !l->linked_device || !l->relation) return MD_ERR_NOMEM;
    b->n_links++;
    return MD_OK;
}

/* The encoder writes meterd.v1.Batch by hand, byte for byte what protobuf-c 1.4 packs
 * (field order, proto3 defaults left out: "" strings, 0 integers, a double == 0, so -0.0
 * too); tests/unit/core/test_batch.c holds it to meterd__v1__batch__pack. protobuf-c's
 * reflective packer was ~10% of the CPU of JSON batch ingest. */

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static uint64_t zigzag(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* Size of a length-delimited field (one-byte tag) of len bytes; 0 when len is 0. */
static size_t delimited_size(size_t len)
{
    return len ? 1 + varint_size(len) + len : 0;
}

static uint8_t *put_delimited(uint8_t *p, uint8_t tag, const void *s, size_t len)
{
    if (!len) return p;
    *p++ = tag;
    p = put_varint(p, len);
    memcpy(p, s, len);
    return p + len;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Lengths of a reading's strings, measured once for the size pass and the write pass. */
typedef struct reading_lens {
    size_t device, kind, site, metric, reason, total;
} reading_lens;

/* Consecutive readings share interned strings (batch_addn): a pointer equal to the previous
 * reading's has its length already. */
static void reading_measure(const reading *r, const reading *prev, const reading_lens *pl,
                            reading_lens *l)
{
#define LEN(f, lf) (prev && r->f == prev->f ? pl->lf : slen(r->f))
    l->device = LEN(device, device);
    l->kind = LEN(device_kind, kind);
    l->site = LEN(site, site);
    l->metric = LEN(metric, metric);
    l->reason = LEN(invalid_reason, reason);
#undef LEN
    l->total = delimited_size(l->device) + delimited_size(l->kind) + delimited_size(l->site) +
               delimited_size(l->metric) + (r->ts_us ? 1 + varint_size(zigzag(r->ts_us)) : 0) +
               (r->value != 0 ? 9 : 0) + (r->quality ? 1 + varint_size(r->quality) : 0) +
               delimited_size(l->reason);
}

static uint8_t *reading_put(uint8_t *p, const reading *r, const reading_lens *l)
{
    *p++ = 0x3a; /* Batch.readings = 7, length-delimited */
    p = put_varint(p, l->total);
    p = put_delimited(p, 0x0a, r->device, l->device);
    p = put_delimited(p, 0x12, r->device_kind, l->kind);
    p = put_delimited(p, 0x1a, r->site, l->site);
    p = put_delimited(p, 0x22, r->metric, l->metric);
    if (r->ts_us) {
        *p++ = 0x28;
        p = put_varint(p, zigzag(r->ts_us));
    }
    if (r->value != 0) {
        *p++ = 0x31;
        memcpy(p, &r->value, 8); /* little-endian hosts only, like the rest of the wire code */
        p += 8;
    }
    if (r->quality) {
        *p++ = 0x38;
        p = put_varint(p, r->quality);
    }
    return put_delimited(p, 0x42, r->invalid_reason, l->reason);
}

int batch_encode(const batch *b, uint8_t **out, size_t *out_len)
{
    size_t src = slen(b->source), req = slen(b->request_id), ten = slen(b->tenant);
    size_t ip = slen(b->client_ip), ua = slen(b->client_user_agent),
           fp = slen(b->client_fingerprint);
    size_t client = ip || ua || fp
                        ? delimited_size(ip) + delimited_size(ua) + delimited_size(fp)
                        : SIZE_MAX; /* SIZE_MAX: no Client message */
    reading_lens one, *lens = b->n_readings > 1 ? malloc(b->n_readings * sizeof(*lens)) : &one;
    size_t *link_lens = b->n_links ? malloc(b->n_links * 4 * sizeof(size_t)) : NULL;
    if (!lens || (b->n_links && !link_lens)) {
        if (lens != &one) free(lens);
        free(link_lens);
        return MD_ERR_NOMEM;
    }

    size_t len = 18 + (b->received_at_us ? 1 + varint_size(zigzag(b->received_at_us)) : 0) +
                 delimited_size(src) + delimited_size(req) + delimited_size(ten) +
                 (client != SIZE_MAX ? 1 + varint_size(client) + client : 0);
    for (size_t i = 0; i < b->n_readings; i++) {
        reading_measure(&b->readings[i], i ? &b->readings[i - 1] : NULL, i ? &lens[i - 1] : NULL,
                        &lens[i]);
        len += 1 + varint_size(lens[i].total) + lens[i].total;
    }
    for (size_t i = 0; i < b->n_links; i++) {
        size_t *l = &link_lens[4 * i];
        l[0] = slen(b->links[i].device);
        l[1] = slen(b->links[i].linked_device);
        l[2] = slen(b->links[i].relation);
        l[3] = delimited_size(l[0]) + delimited_size(l[1]) + delimited_size(l[2]);
        len += 1 + varint_size(l[3]) + l[3];
    }

    uint8_t *buf = malloc(len), *p = buf;
    if (buf) {
        p = put_delimited(p, 0x0a, b->id, 16);
        if (b->received_at_us) {
            *p++ = 0x10;
            p = put_varint(p, zigzag(b->received_at_us));
        }
        p = put_delimited(p, 0x1a, b->source, src);
        p = put_delimited(p, 0x22, b->request_id, req);
        if (client != SIZE_MAX) {
            *p++ = 0x2a;
            p = put_varint(p, client);
            p = put_delimited(p, 0x0a, b->client_ip, ip);
            p = put_delimited(p, 0x12, b->client_user_agent, ua);
            p = put_delimited(p, 0x1a, b->client_fingerprint, fp);
        }
        p = put_delimited(p, 0x32, b->tenant, ten);
        for (size_t i = 0; i < b->n_readings; i++)
            p = reading_put(p, &b->readings[i], &lens[i]);
        for (size_t i = 0; i < b->n_links; i++) {
            const size_t *l = &link_lens[4 * i];
            *p++ = 0x42;
            p = put_varint(p, l[3]);
            p = put_delimited(p, 0x0a, b->links[i].device, l[0]);
            p = put_delimited(p, 0x12, b->links[i].linked_device, l[1]);
            p = put_delimited(p, 0x1a, b->links[i].relation, l[2]);
        }
    }
    if (lens != &one) free(lens);
    free(link_lens);
    if (!buf) return MD_ERR_NOMEM;
    *out = buf;
    *out_len = (size_t)(p - buf);
    return MD_OK;
}

/* protobuf-c's allocations while one record is unpacked: bumped from a few large chunks, all
 * freed together, instead of a malloc and a free per reading and per string (together ~5 % of
 * the worker's time draining JSON batches, perf with DWARF call graphs). */
typedef struct unpack_chunk {
    struct unpack_chunk *next;
    size_t used, cap;
    max_align_t data[];
} unpack_chunk;

static void *unpack_alloc(void *arg, size_t size)
{
    unpack_chunk **head = arg;
    if (size > SIZE_MAX / 4) return NULL; /* no wrap-around below */
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    unpack_chunk *c = *head;
    if (!c || c->cap - c->used < size) {
        size_t cap = c ? c->cap * 2 : 64 * 1024;
        if (cap < size) cap = size;
        unpack_chunk *n = malloc(sizeof *n + cap);
        if (!n) return NULL;
        *n = (unpack_chunk){.next = c, .cap = cap};
        *head = c = n;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    return p;
}

static void unpack_free(void *arg, void *p)
{
    (void)arg;
    (void)p; /* all of it goes at once, in unpack_release */
}

static void unpack_release(unpack_chunk *c)
{
    for (unpack_chunk *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

int batch_decode(const uint8_t *buf, size_t len, batch **out, char *err, size_t errlen)
{
    *out = NULL;
    unpack_chunk *chunks = NULL;
    ProtobufCAllocator alloc = {
        .alloc = unpack_alloc, .free = unpack_free, .allocator_data = &chunks};
    Meterd__V1__Batch *pb = meterd__v1__batch__unpack(&alloc, len, buf);
    if (!pb) {
        unpack_release(chunks);
        snprintf(err, errlen, "batch: not a valid protobuf meterd.v1.Batch (%zu bytes)", len);
        return MD_ERR_CORRUPT;
    }
    int rc = MD_ERR_NOMEM;
    batch *b = NULL;
    if (pb->id.len != 16) {
        snprintf(err, errlen, "batch: id has %zu bytes, want 16", pb->id.len);
        rc = MD_ERR_CORRUPT;
        goto done;
    }
    b = batch_new(pb->source);
    if (!b) goto done;
    memcpy(b->id, pb->id.data, 16);
    b->received_at_us = pb->received_at_us;
    if (batch_set(b, &b->request_id, pb->request_id) || batch_set(b, &b->tenant, pb->tenant))
        goto done;
    if (pb->client &&
        (batch_set(b, &b->client_ip, pb->client->ip) ||
         batch_set(b, &b->client_user_agent, pb->client->user_agent) ||
         batch_set(b, &b->client_fingerprint, pb->client->fingerprint)))
        goto done;
    for (size_t i = 0; i < pb->n_readings; i++) {
        const Meterd__V1__Reading *r = pb->readings[i];
        if (batch_add(b, r->device, r->device_kind[0] ? r->device_kind : "device", r->site,
                      r->metric, r->ts_us, r->value))
            goto done;
        b->readings[b->n_readings - 1].quality = r->quality;
        if (r->invalid_reason[0] && batch_mark_invalid(b, r->invalid_reason)) goto done;
    }
    for (size_t i = 0; i < pb->n_links; i++) {
        const Meterd__V1__Link *l = pb->links[i];
        if (batch_add_link(b, l->device, l->linked_device, l->relation)) goto done;
    }
    rc = MD_OK;
done:
    unpack_release(chunks); /* pb and everything in it */
    if (rc == MD_OK) {
        *out = b;
    } else {
        batch_free(b);
        if (rc == MD_ERR_NOMEM) snprintf(err, errlen, "batch: out of memory");
    }
    return rc;
}
