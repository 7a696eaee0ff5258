/* The reference encoding of a batch: protobuf-c's meterd__v1__batch__pack over the generated
 * structs, as batch_encode did before it wrote the bytes itself. Tests and fuzz targets hold
 * batch_encode to it byte for byte. */
#ifndef METERD_TESTS_BATCH_PB_REF_H
#define METERD_TESTS_BATCH_PB_REF_H

#include "core/batch.h"
#include "meterd/v1/batch.pb-c.h"

#include <stdlib.h>

/* The packed batch in a malloc'd buffer (*out owned by the caller); 0, or -1 (no memory). */
static inline int batch_pb_ref_encode(const batch *b, uint8_t **out, size_t *out_len)
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
    size_t nr = b->n_readings, nl = b->n_links;
    Meterd__V1__Reading *rs = calloc(nr + 1, sizeof(*rs));
    Meterd__V1__Reading **rp = calloc(nr + 1, sizeof(*rp));
    Meterd__V1__Link *ls = calloc(nl + 1, sizeof(*ls));
    Meterd__V1__Link **lp = calloc(nl + 1, sizeof(*lp));
    uint8_t *buf = NULL;
    size_t len = 0;
    if (rs && rp && ls && lp) {
        for (size_t i = 0; i < nr; i++) {
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
        for (size_t i = 0; i < nl; i++) {
            meterd__v1__link__init(&ls[i]);
            ls[i].device = (char *)b->links[i].device;
            ls[i].linked_device = (char *)b->links[i].linked_device;
            ls[i].relation = (char *)b->links[i].relation;
            lp[i] = &ls[i];
        }
        pb.n_readings = nr;
        pb.readings = rp;
        pb.n_links = nl;
        pb.links = lp;
        len = meterd__v1__batch__get_packed_size(&pb);
        if ((buf = malloc(len ? len : 1))) meterd__v1__batch__pack(&pb, buf);
    }
    free(rs);
    free(rp);
    free(ls);
    free(lp);
    if (!buf) return -1;
    *out = buf;
    *out_len = len;
    return 0;
}

#endif
