#include "query/common.h"
#include "core/error.h"
#include "core/timeutil.h"
#include "query/params.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *query_time_json(int64_t us)
{
    char buf[32];
    return json_string(time_format_rfc3339(us, buf));
}

json_t *query_device_json(const store_device *d)
{
    json_t *o = json_pack("{s:s,s:s,s:o,s:o}", "id", d->id, "kind", d->kind, "first_seen_at",
                          query_time_json(d->first_seen_us), "last_seen_at",
                          query_time_json(d->last_seen_us));
    if (o && d->site[0]) json_object_set_new(o, "site", json_string(d->site));
    return o;
}

json_t *query_reading_json(const store_reading *r, int with_device)
{
    json_t *o = json_object();
    if (!o) return NULL;
    if (with_device) json_object_set_new(o, "device", json_string(r->device));
    json_object_set_new(o, "metric", json_string(r->metric));
    json_object_set_new(o, "ts", query_time_json(r->ts_us));
    json_object_set_new(o, "value", isfinite(r->value) ? json_real(r->value) : json_null());
    json_object_set_new(o, "status", json_string(r->valid ? "valid" : "invalid"));
    if (!r->valid) json_object_set_new(o, "reason", json_string(r->reason));
    json_object_set_new(o, "received_at", query_time_json(r->received_at_us));
    return o;
}

int query_parse_range(http_request *req, int64_t *from_us, int64_t *to_us, size_t *limit,
                      size_t default_limit, size_t max_limit, int64_t *after_ts,
                      char **after_key)
{
    char err[200];
    const char *cur = http_query(req, "cursor");
    if (params_time("from", http_query(req, "from"), *from_us, from_us, err, sizeof err) ||
        params_time("to", http_query(req, "to"), *to_us, to_us, err, sizeof err) ||
        params_limit(http_query(req, "limit"), default_limit, max_limit, limit, err,
                     sizeof err)) {
        http_respond_error(req, 400, "%s", err);
        return -1;
    }
    if (*from_us > *to_us) {
        http_respond_error(req, 400, "from: must not be after to");
        return -1;
    }
    if (cur && *cur && params_cursor_decode(cur, after_ts, after_key)) {
        http_respond_error(req, 400, "cursor: not a cursor returned by this API");
        return -1;
    }
    return 0;
}

typedef struct kind_buf {
    char *kind;
    size_t len;
    int found;
} kind_buf;

static int take_kind(void *arg, const store_device *d)
{
    kind_buf *k = arg;
    snprintf(k->kind, k->len, "%s", d->kind);
    k->found = 1;
    return 1;
}

int query_find_device(query_ctx *ctx, const char *id, char *kind, size_t kindlen)
{
    char dummy[16];
    kind_buf k = {kind ? kind : dummy, kind ? kindlen : sizeof dummy, 0};
    int rc = ctx->s->ops->device(ctx->s, id, take_kind, &k);
    if (rc == MD_OK || rc == MD_ERR_NOTFOUND) return k.found;
    return -1;
}

double query_lag_seconds(const queue_stats *qs)
{
    if (!qs->depth || !qs->oldest_unacked_us) return 0.0;
    double lag = (double)(time_now_us() - qs->oldest_unacked_us) / 1e6;
    return lag > 0 ? lag : 0.0;
}

json_t *query_cursor_json(int64_t ts, const char *key)
{
    if (!key) return json_null();
    char *cur = params_cursor_encode(ts, key);
    json_t *j = cur ? json_string(cur) : json_null();
    free(cur);
    return j;
}

#define KEY_SEP '\x1f'

int query_parse_readings_range(http_request *req, store_readings_query *q, int by_device,
                               char **after)
{
    *after = NULL;
    if (query_parse_range(req, &q->from_us, &q->to_us, &q->limit, QUERY_DEFAULT_LIMIT,
                          QUERY_MAX_LIMIT, &q->after_ts_us, after))
        return -1;
    if (!*after) return 0;
    if (!by_device) {
        q->after_metric = *after;
        return 0;
    }
    char *sep = strchr(*after, KEY_SEP);
    if (!sep) {
        free(*after);
        *after = NULL;
        http_respond_error(req, 400, "cursor: not a cursor returned by this API");
        return -1;
    }
    *sep = '\0';
    q->after_device = *after;
    q->after_metric = sep + 1;
    return 0;
}

char *query_device_metric_key(const char *device, const char *metric)
{
    size_t n = strlen(device) + strlen(metric) + 2;
    char *k = malloc(n);
    if (k) snprintf(k, n, "%s%c%s", device, KEY_SEP, metric);
    return k;
}
