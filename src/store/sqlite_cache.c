/* In-memory maps of the SQLite store: name -> id caches, the per-transaction live rows
 * and the per-transaction rollup buckets.
 * Open addressing with linear probing, power-of-two capacities, grown at 1/2 load. */
#include "store/sqlite_int.h"

#include <stdlib.h>
#include <string.h>

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static uint64_t hash_pair(int64_t a, int64_t b)
{
    uint64_t h = (uint64_t)a * 0x9E3779B97F4A7C15ULL ^ (uint64_t)b * 0xC2B2AE3D27D4EB4FULL;
    return h ^ (h >> 29);
}

sqlite_name *sqlite_names_get(const sqlite_name_map *m, const char *name)
{
    if (!m->cap) return NULL;
    uint64_t h = hash_str(name);
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        sqlite_name *e = m->slots[i];
        if (!e) return NULL;
        if (e->hash == h && strcmp(e->name, name) == 0) return e;
    }
}

static void names_insert_slot(sqlite_name **slots, size_t cap, sqlite_name *e)
{
    size_t i = e->hash & (cap - 1);
    while (slots[i])
        i = (i + 1) & (cap - 1);
    slots[i] = e;
}

sqlite_name *sqlite_names_put(sqlite_name_map *m, const char *name, int64_t id)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        sqlite_name **slots = calloc(cap, sizeof(*slots));
        if (!slots) return NULL;
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i]) names_insert_slot(slots, cap, m->slots[i]);
        free(m->slots);
        m->slots = slots;
        m->cap = cap;
    }
    sqlite_name *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->name = strdup(name);
    if (!e->name) {
        free(e);
        return NULL;
    }
    e->hash = hash_str(name);
    e->id = id;
    names_insert_slot(m->slots, m->cap, e);
    m->n++;
    return e;
}

void sqlite_names_clear(sqlite_name_map *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i]) continue;
        free(m->slots[i]->name);
        free(m->slots[i]);
        m->slots[i] = NULL;
    }
    m->n = 0;
}

void sqlite_names_free(sqlite_name_map *m)
{
    sqlite_names_clear(m);
    free(m->slots);
    m->slots = NULL;
    m->cap = 0;
}

long sqlite_live_find(const sqlite_live_map *m, int64_t dev, int64_t met)
{
    if (!m->cap) return -1;
    for (size_t i = hash_pair(dev, met) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t k = m->slots[i];
        if (k < 0) return -1;
        if (m->items[k].device_id == dev && m->items[k].metric_id == met) return k;
    }
}

/* Puts index k at the first free slot from hash h (linear probing; the table is at most half full). */
static void slot_insert(int32_t *slots, size_t cap, size_t h, int32_t k)
{
    size_t i = h & (cap - 1);
    while (slots[i] >= 0)
        i = (i + 1) & (cap - 1);
    slots[i] = k;
}

typedef size_t (*item_hash_fn)(const void *items, size_t k);

/* Makes room for item n of an index map: grows items (elem bytes each) and, past half load,
 * doubles the slot table and re-inserts every item with hash_at. 0 or -1 (no memory). */
static int index_map_reserve(void **items, size_t elem, size_t n, size_t *cap_items,
                             int32_t **slots, size_t *cap, item_hash_fn hash_at)
{
    if (n >= INT32_MAX) return -1;
    if (n == *cap_items) {
        size_t c = *cap_items ? *cap_items * 2 : 256;
        void *grown = realloc(*items, c * elem);
        if (!grown) return -1;
        *items = grown;
        *cap_items = c;
    }
    if ((n + 1) * 2 > *cap) {
        size_t c = *cap ? *cap * 2 : 512;
        int32_t *t = malloc(c * sizeof(*t));
        if (!t) return -1;
        memset(t, 0xff, c * sizeof(*t)); /* all -1 */
        for (size_t k = 0; k < n; k++)
            slot_insert(t, c, hash_at(*items, k), (int32_t)k);
        free(*slots);
        *slots = t;
        *cap = c;
    }
    return 0;
}

static size_t live_hash_at(const void *items, size_t k)
{
    const sqlite_live *l = (const sqlite_live *)items + k;
    return (size_t)hash_pair(l->device_id, l->metric_id);
}

long sqlite_live_add(sqlite_live_map *m, int64_t dev, int64_t met)
{
    if (index_map_reserve((void **)&m->items, sizeof(*m->items), m->n, &m->cap_items, &m->slots,
                          &m->cap, live_hash_at))
        return -1;
    int32_t k = (int32_t)m->n++;
    memset(&m->items[k], 0, sizeof(m->items[k]));
    m->items[k].device_id = dev;
    m->items[k].metric_id = met;
    slot_insert(m->slots, m->cap, live_hash_at(m->items, (size_t)k), k);
    return k;
}

void sqlite_live_clear(sqlite_live_map *m)
{
    for (size_t k = 0; k < m->n; k++)
        free(m->items[k].reason);
    m->n = 0;
    if (m->cap) memset(m->slots, 0xff, m->cap * sizeof(*m->slots));
}

void sqlite_live_free(sqlite_live_map *m)
{
    sqlite_live_clear(m);
    free(m->items);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static size_t rollup_hash(int64_t dev, int64_t met, int64_t bucket)
{
    uint64_t h = hash_pair(dev, met) ^ (uint64_t)bucket * 0xFF51AFD7ED558CCDULL;
    return (size_t)(h ^ (h >> 31));
}

static size_t rollup_hash_at(const void *items, size_t k)
{
    const sqlite_rollup *r = (const sqlite_rollup *)items + k;
    return rollup_hash(r->device_id, r->metric_id, r->bucket_us);
}

long sqlite_rollup_entry(sqlite_rollup_map *m, int64_t dev, int64_t met, int64_t bucket_us)
{
    if (m->cap) {
        for (size_t i = rollup_hash(dev, met, bucket_us) & (m->cap - 1);;
             i = (i + 1) & (m->cap - 1)) {
            int32_t k = m->slots[i];
            if (k < 0) break;
            const sqlite_rollup *e = &m->items[k];
            if (e->device_id == dev && e->metric_id == met && e->bucket_us == bucket_us) return k;
        }
    }
    if (index_map_reserve((void **)&m->items, sizeof(*m->items), m->n, &m->cap_items, &m->slots,
                          &m->cap, rollup_hash_at))
        return -1;
    int32_t k = (int32_t)m->n++;
    memset(&m->items[k], 0, sizeof(m->items[k]));
    m->items[k].device_id = dev;
    m->items[k].metric_id = met;
    m->items[k].bucket_us = bucket_us;
    slot_insert(m->slots, m->cap, rollup_hash_at(m->items, (size_t)k), k);
    return k;
}

void sqlite_rollup_clear(sqlite_rollup_map *m)
{
    m->n = 0;
    if (m->cap) memset(m->slots, 0xff, m->cap * sizeof(*m->slots));
}

void sqlite_rollup_free(sqlite_rollup_map *m)
{
    free(m->items);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}
