/* Backend-independent dead-letter helpers: picking the backend, classifying an entry. */
#include "queue/dlq.h"

#include <stdio.h>
#include <string.h>

dlq *dlq_open(const config *c, char *err, size_t errlen)
{
    if (!strcmp(c->queue_backend, "wal")) {
        char qdir[sizeof c->data_dir + 8];
        snprintf(qdir, sizeof qdir, "%s/queue", c->data_dir);
        return wal_dlq_open(qdir, c, err, errlen);
    }
    if (!strcmp(c->queue_backend, "amqp")) return amqp_dlq_open(c, err, errlen);
    if (!strcmp(c->queue_backend, "redis")) return redis_dlq_open(c, err, errlen);
    snprintf(err, errlen, "unknown queue backend '%s' (wal, amqp or redis)", c->queue_backend);
    return NULL;
}

/* The worker's rule (worker.c decode, amqp_consume.c map_content_type): application/json is an
 * envelope; without a content type a body starting with '{' is one too; the rest is protobuf. */
int dlq_entry_is_json(const dlq_entry *e)
{
    const char *ct = e->content_type ? e->content_type : "";
    if (ct[0]) return strncmp(ct, "application/json", 16) == 0;
    size_t i = 0;
    while (i < e->len &&
           (e->data[i] == ' ' || e->data[i] == '\t' || e->data[i] == '\r' || e->data[i] == '\n'))
        i++;
    return i < e->len && e->data[i] == '{';
}

void dlq_hash_id(const uint8_t *data, size_t len, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
