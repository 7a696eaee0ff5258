/* PostgreSQL store: the small in-memory maps apply() uses (names -> index, (a, b, c) ->
 * index) and the metric id cache. No I/O here. */
#include "store/pg_int.h"

#include <stdlib.h>
#include <string.h>

/* Grows *arr (of *cap items of size sz) to hold one more. 0 or -1. */
int pg_grow(void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, nc * sz);
    if (!p) return -1;
    *arr = p;
    *cap = nc;
    return 0;
}

/* ---- hash maps: strings -> index, (a, b, c) -> index ---- */

uint64_t pg_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211u;
    return h;
}

static uint64_t hash3(int64_t a, int64_t b, int64_t c)
{
    uint64_t h = (uint64_t)a * 0x9e3779b97f4a7c15u;
    h ^= (uint64_t)b + 0x7f4a7c159e3779b9u + (h << 6) + (h >> 2);
    h ^= (uint64_t)c + 0x94d049bb133111ebu + (h << 6) + (h >> 2);
    return h ^ (h >> 31);
}

/* Returns the value slot of s (*found set), adding it with -1 when missing; NULL: no memory. */
int32_t *pg_strmap_slot(pg_strmap *m, const char *s, int *found)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        pg_strmap g = {calloc(cap, sizeof(char *)), malloc(cap * sizeof(int32_t)), cap, 0};
        if (!g.k || !g.v) {
            free(g.k);
            free(g.v);
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (!m->k[i]) continue;
            size_t j = pg_hash_str(m->k[i]) & (cap - 1);
            while (g.k[j])
                j = (j + 1) & (cap - 1);
            g.k[j] = m->k[i];
            g.v[j] = m->v[i];
        }
        g.n = m->n;
        free(m->k);
        free(m->v);
        *m = g;
    }
    size_t j = pg_hash_str(s) & (m->cap - 1);
    while (m->k[j] && strcmp(m->k[j], s) != 0)
        j = (j + 1) & (m->cap - 1);
    *found = m->k[j] != NULL;
    if (!*found) {
        m->k[j] = s;
        m->v[j] = -1;
        m->n++;
    }
    return &m->v[j];
}

int32_t *pg_map3_slot(pg_map3 *m, int64_t a, int64_t b, int64_t c, int *found)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 256;
        pg_map3 g = {malloc(cap * 3 * sizeof(int64_t)), malloc(cap * sizeof(int32_t)), cap, m->n};
        if (!g.k || !g.v) {
            free(g.k);
            free(g.v);
            return NULL;
        }
        memset(g.v, 0xff, cap * sizeof(int32_t));
        for (size_t i = 0; i < m->cap; i++) {
            if (m->v[i] < 0) continue;
            int64_t *k = &m->k[3 * i];
            size_t j = hash3(k[0], k[1], k[2]) & (cap - 1);
            while (g.v[j] >= 0)
                j = (j + 1) & (cap - 1);
            memcpy(&g.k[3 * j], k, 3 * sizeof(int64_t));
            g.v[j] = m->v[i];
        }
        free(m->k);
        free(m->v);
        *m = g;
    }
    size_t j = hash3(a, b, c) & (m->cap - 1);
    for (; m->v[j] >= 0; j = (j + 1) & (m->cap - 1)) {
        int64_t *k = &m->k[3 * j];
        if (k[0] == a && k[1] == b && k[2] == c) {
            *found = 1;
            return &m->v[j];
        }
    }
    *found = 0;
    m->k[3 * j] = a, m->k[3 * j + 1] = b, m->k[3 * j + 2] = c;
    m->v[j] = INT32_MAX; /* caller sets it */
    m->n++;
    return &m->v[j];
}

/* ---- metrics: ids from the cache, new names created in their own transaction ---- */

int64_t *pg_metric_slot(pg_store *ps, const char *name, int *found)
{
    if ((ps->met_n + 1) * 2 > ps->met_cap) {
        size_t cap = ps->met_cap ? ps->met_cap * 2 : 64;
        char **k = calloc(cap, sizeof(char *));
        int64_t *v = malloc(cap * sizeof(int64_t));
        if (!k || !v) {
            free(k);
            free(v);
            return NULL;
        }
        for (size_t i = 0; i < ps->met_cap; i++) {
            if (!ps->met_names[i]) continue;
            size_t j = pg_hash_str(ps->met_names[i]) & (cap - 1);
            while (k[j])
                j = (j + 1) & (cap - 1);
            k[j] = ps->met_names[i];
            v[j] = ps->met_ids[i];
        }
        free(ps->met_names);
        free(ps->met_ids);
        ps->met_names = k;
        ps->met_ids = v;
        ps->met_cap = cap;
    }
    size_t j = pg_hash_str(name) & (ps->met_cap - 1);
    while (ps->met_names[j] && strcmp(ps->met_names[j], name) != 0)
        j = (j + 1) & (ps->met_cap - 1);
    *found = ps->met_names[j] != NULL;
    if (!*found) {
        if (!(ps->met_names[j] = strdup(name))) return NULL;
        ps->met_ids[j] = 0;
        ps->met_n++;
    }
    return &ps->met_ids[j];
}

int64_t pg_metric_id(pg_store *ps, const char *name)
{
    int found;
    int64_t *id = pg_metric_slot(ps, name ? name : "", &found);
    return id && found ? *id : 0;
}

