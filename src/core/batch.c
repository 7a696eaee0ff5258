/* Canonical batch: arena-backed strings, protobuf-c encoding, UUIDv7 ids. */
#include "core/batch.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "meterd/v1/batch.pb-c.h"

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

/* Returns prev when it equals s (the common case: one device per batch), else a copy. */
static const char *intern(batch *b, const char *prev, const char *s)
{
    if (!s) s = "";
    if (prev && strcmp(prev, s) == 0) return prev;
    return batch_strndup(b, s, strlen(s));
}

int batch_add(batch *b, const char *device, const char *kind, const char *site,
              const char *metric, int64_t ts_us, double value)
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
    r->device = intern(b, prev ? prev->device : NULL, device);
    r->device_kind = intern(b, prev ? prev->device_kind : NULL, kind ? kind : "device");
    r->site = intern(b, prev ? prev->site : NULL, site);
    r->metric = intern(b, prev ? prev->metric : NULL, metric);
    if (!r->device || !r->device_kind || !r->site || !r->metric) return MD_ERR_NOMEM;
    r->ts_us = ts_us;
    r->value = value;
    r->quality = 0;
    r->invalid_reason = "";
    b->n_readings++;
    return MD_OK;
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

int batch_encode(const batch *b, uint8_t **out, size_t *out_len)
{
    Meterd__V1__Batch pb = METERD__V1__BATCH__INIT;
    Meterd__V1__Client client = METERD__V1__CLIENT__INIT;
    pb.id.data = (uint8_t *)b->id;
    pb.id.len = 16;
    pb.received_at_us = b->received_at_us;
    pb.source = (char *)b->source;
    pb.request_id = (char *)b->request_id;
    pb.tenant = (char *)b->tenant;
    if (b->client_fingerprint[0] || b->client_ip[0] || b->client_user_agent[0]) {
        client.ip = (char *)b->client_ip;
        client.user_agent = (char *)b->client_user_agent;
        client.fingerprint = (char *)b->client_fingerprint;
        pb.client = &client;
    }
    Meterd__V1__Reading *rs = NULL;
    Meterd__V1__Reading **rp = NULL;
    if (b->n_readings) {
        rs = malloc(b->n_readings * sizeof(*rs));
        rp = malloc(b->n_readings * sizeof(*rp));
        if (!rs || !rp) {
            free(rs);
            free(rp);
            return MD_ERR_NOMEM;
        }
    }
    for (size_t i = 0; i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        meterd__v1__reading__init(&rs[i]);
        rs[i].device = (char *)r->device;
        rs[i].device_kind = (char *)r->device_kind;
        rs[i].site = (char *)r->site;
        rs[i].metric = (char *)r->metric;
        rs[i].ts_us = r->ts_us;
        rs[i].value = r->value;
        rs[i].quality = r->quality;
        rs[i].invalid_reason = (char *)(r->invalid_reason ? r->invalid_reason : "");
        rp[i] = &rs[i];
    }
    Meterd__V1__Link *ls = NULL;
    Meterd__V1__Link **lp = NULL;
    if (b->n_links) {
        ls = malloc(b->n_links * sizeof(*ls));
        lp = malloc(b->n_links * sizeof(*lp));
        if (!ls || !lp) {
            free(ls);
            free(lp);
            free(rs);
            free(rp);
            return MD_ERR_NOMEM;
        }
    }
    for (size_t i = 0; i < b->n_links; i++) {
        meterd__v1__link__init(&ls[i]);
        ls[i].device = (char *)b->links[i].device;
        ls[i].linked_device = (char *)b->links[i].linked_device;
        ls[i].relation = (char *)b->links[i].relation;
        lp[i] = &ls[i];
    }
    pb.n_links = b->n_links;
    pb.links = lp;
    pb.n_readings = b->n_readings;
    pb.readings = rp;
    size_t len = meterd__v1__batch__get_packed_size(&pb);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf) meterd__v1__batch__pack(&pb, buf);
    free(rs);
    free(rp);
    free(ls);
    free(lp);
    if (!buf) return MD_ERR_NOMEM;
    *out = buf;
    *out_len = len;
    return MD_OK;
}

int batch_decode(const uint8_t *buf, size_t len, batch **out, char *err, size_t errlen)
{
    *out = NULL;
    Meterd__V1__Batch *pb = meterd__v1__batch__unpack(NULL, len, buf);
    if (!pb) {
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
    meterd__v1__batch__free_unpacked(pb, NULL);
    if (rc == MD_OK) {
        *out = b;
    } else {
        batch_free(b);
        if (rc == MD_ERR_NOMEM) snprintf(err, errlen, "batch: out of memory");
    }
    return rc;
}
