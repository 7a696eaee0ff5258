/* meterd dlq: list, show and replay the dead letters of the configured queue backend
 * (src/queue/dlq.h), rendering each one as JSON: canonical batches decoded (batch id, readings),
 * gateway envelopes previewed or parsed, anything else as base64. */
#include "dlq_cmd.h"

#include "core/batch.h"
#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "ingest/base64.h"
#include "ingest/http.h"
#include "ingest/json_util.h"
#include "queue/dlq.h"

#include <jansson.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREVIEW_CHARS 120

#define SYNOPSIS                                                                                   \
    "Usage: meterd dlq list [OPTIONS]\n"                                                           \
    "       meterd dlq show ID [OPTIONS]\n"                                                        \
    "       meterd dlq replay ID [ID...] [OPTIONS]\n"                                              \
    "       meterd dlq replay --all [OPTIONS]\n"

static void usage(FILE *f)
{
    fprintf(
        f, SYNOPSIS
        "\n"
        "The dead letters of the queue backend chosen by --queue / METERD_QUEUE:\n"
        "  wal    <data-dir>/queue/dead.log (--data-dir)\n"
        "  amqp   the queue RABBITMQ_DLQ_QUEUE (reason in header x-meterd-reason)\n"
        "  redis  the stream <REDIS_STREAM>:dlq\n\n"
        "  list     one JSON object per dead letter on stdout, oldest first: id, reason,\n"
        "           dead_at and deliveries when known, content_type, bytes, and batch_id +\n"
        "           readings for a batch or a preview for a JSON envelope; the count on stderr.\n"
        "           Removes nothing.\n"
        "  show ID  one dead letter in full: the batch with its readings, the envelope as\n"
        "           JSON, or the bytes as base64. Unknown ID: exit 1.\n"
        "  replay   republish to the main queue (same bytes and content type), then remove\n"
        "           from the dead letters once the republish is durable; prints each one\n"
        "           replayed. Every ID must exist, else nothing is replayed (exit 1). The\n"
        "           store skips batches it already has, so a replay is never applied twice.\n"
        "           wal: stop 'meterd serve' first (the queue has one writer); the next\n"
        "           serve processes them. list and show work while it runs.\n\n"
        "Options: the backend options of 'meterd serve --help' (--data-dir, --queue,\n"
        "--rabbitmq-*, --redis-*, ... and their environment variables).\n"
        "Exit status: 0 ok, 1 failed or unknown ID, 2 bad usage.\n");
}

/* data as a JSON string, invalid UTF-8 replaced by U+FFFD, cut after max characters ("…"). */
static json_t *text_json(const uint8_t *data, size_t len, size_t max)
{
    char *out = malloc(len * 3 + 4); /* every byte may become 3; plus "…" and NUL */
    if (!out) return NULL;
    size_t o = 0, i = 0, chars = 0;
    while (i < len && chars < max) {
        size_t l = ingest_utf8_seq(data + i, len - i);
        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, data + i, l);
            o += l;
            i += l;
        }
        chars++;
    }
    if (i < len) {
        memcpy(out + o, "\xe2\x80\xa6", 3);
        o += 3;
    }
    json_t *s = json_stringn(out, o);
    free(out);
    return s;
}

static void set_time(json_t *o, const char *key, int64_t us)
{
    char ts[32];
    json_object_set_new(o, key, json_string(time_format_rfc3339(us, ts)));
}

/* The decoded batch with every reading, as `show` prints it. */
static json_t *batch_json(const batch *b)
{
    char id[37];
    batch_id_format(b->id, id);
    json_t *o = json_pack("{s:s}", "id", id);
    if (!o) return NULL;
    set_time(o, "received_at", b->received_at_us);
    json_object_set_new(o, "source", json_string(b->source));
    json_object_set_new(o, "request_id", json_string(b->request_id));
    json_object_set_new(o, "tenant", json_string(b->tenant));
    json_object_set_new(o, "client",
                        json_pack("{s:s,s:s,s:s}", "ip", b->client_ip, "user_agent",
                                  b->client_user_agent, "fingerprint", b->client_fingerprint));
    json_t *rs = json_array();
    for (size_t i = 0; rs && i < b->n_readings; i++) {
        const reading *r = &b->readings[i];
        char ts[32];
        json_t *x = json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:o,s:i}", "device", r->device, "device_kind", r->device_kind,
            "site", r->site, "metric", r->metric, "ts", time_format_rfc3339(r->ts_us, ts), "value",
            isfinite(r->value) ? json_real(r->value) : json_null(), "quality", (int)r->quality);
        if (x && r->invalid_reason[0])
            json_object_set_new(x, "invalid_reason", json_string(r->invalid_reason));
        json_array_append_new(rs, x);
    }
    json_object_set_new(o, "readings", rs);
    if (b->n_links) {
        json_t *ls = json_array();
        for (size_t i = 0; ls && i < b->n_links; i++)
            json_array_append_new(ls, json_pack("{s:s,s:s,s:s}", "device", b->links[i].device,
                                                "linked_device", b->links[i].linked_device,
                                                "relation", b->links[i].relation));
        json_object_set_new(o, "links", ls);
    }
    return o;
}

/* The body: a batch (id and count; full: decoded), an envelope (preview; full: parsed), or
 * bytes that are neither (the decoder's error; full: base64). */
static void body_json(json_t *o, const dlq_entry *e, bool full)
{
    if (dlq_entry_is_json(e)) {
        json_error_t je;
        json_t *env = full ? json_loadb((const char *)e->data, e->len, 0, &je) : NULL;
        if (env) {
            json_object_set_new(o, "envelope", env);
        } else if (full) {
            json_object_set_new(o, "parse_error", json_string(je.text));
            json_object_set_new(o, "body", text_json(e->data, e->len, (size_t)-1));
        } else {
            json_object_set_new(o, "preview", text_json(e->data, e->len, PREVIEW_CHARS));
        }
        return;
    }
    batch *b = NULL;
    char err[256];
    if (batch_decode(e->data, e->len, &b, err, sizeof err) == MD_OK) {
        char id[37];
        batch_id_format(b->id, id);
        json_object_set_new(o, "batch_id", json_string(id));
        json_object_set_new(o, "source", json_string(b->source));
        json_object_set_new(o, "readings", json_integer((json_int_t)b->n_readings));
        if (full) json_object_set_new(o, "batch", batch_json(b));
        batch_free(b);
        return;
    }
    json_object_set_new(o, "decode_error", json_string(err));
    if (full) {
        char *b64 = ingest_base64_encode(e->data, e->len);
        if (b64) json_object_set_new(o, "body_base64", json_string(b64));
        free(b64);
    }
}

/* One dead letter as JSON: the list line, or (full) everything. NULL when out of memory. */
static json_t *entry_json(const dlq_entry *e, bool full)
{
    json_t *o = json_pack("{s:s}", "id", e->id);
    if (!o) return NULL;
    if (e->seq) json_object_set_new(o, "seq", json_integer((json_int_t)e->seq));
    if (e->source_id && e->source_id[0] && strcmp(e->source_id, e->id) != 0)
        json_object_set_new(o, "source_id", json_string(e->source_id));
    json_object_set_new(o, "reason",
                        text_json((const uint8_t *)e->reason, strlen(e->reason), (size_t)-1));
    if (e->deliveries) json_object_set_new(o, "deliveries", json_integer(e->deliveries));
    if (e->dead_at_us) set_time(o, "dead_at", e->dead_at_us);
    const char *ct = e->content_type && e->content_type[0] ? e->content_type
                     : dlq_entry_is_json(e)                ? "application/json"
                                                           : DLQ_BATCH_CT;
    json_object_set_new(o, "content_type", json_string(ct));
    json_object_set_new(o, "bytes", json_integer((json_int_t)e->len));
    body_json(o, e, full);
    return o;
}

/* Prints o (stolen) as one line, or indented; reals with the fewest digits that read back. */
static void print_json(json_t *o, bool indent)
{
    if (!o) {
        fprintf(stderr, "meterd dlq: out of memory\n");
        return;
    }
    size_t flags = JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(http_json_real_precision(o)) |
                   (indent ? JSON_INDENT(2) : JSON_COMPACT);
    char *s = json_dumps(o, flags);
    json_decref(o);
    if (s) puts(s);
    free(s);
}

typedef struct walk {
    const char *want; /* show: the id looked for */
    bool found;
    size_t n;
} walk;

static int print_line(void *arg, const dlq_entry *e)
{
    walk *w = arg;
    w->n++;
    print_json(entry_json(e, false), false);
    fflush(stdout);
    return 0;
}

static int print_match(void *arg, const dlq_entry *e)
{
    walk *w = arg;
    if (strcmp(e->id, w->want) != 0) return 0;
    w->found = true;
    print_json(entry_json(e, true), true);
    return 1;
}

/* Splits argv[3..] into positional arguments and options for config_from_args (every config
 * option takes a value: "--x V" or "--x=V"). --all is taken out too. */
static int split_args(int argc, char **argv, char **pos, int *npos, char **opts, int *nopts,
                      bool *all)
{
    *npos = *nopts = 0;
    *all = false;
    for (int a = 3; a < argc; a++) {
        const char *s = argv[a];
        if (!strcmp(s, "--all")) {
            *all = true;
        } else if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            return 1;
        } else if (s[0] == '-' && s[1]) {
            opts[(*nopts)++] = argv[a];
            if (!strchr(s, '=') && a + 1 < argc) opts[(*nopts)++] = argv[++a];
        } else {
            pos[(*npos)++] = argv[a];
        }
    }
    return 0;
}

int dlq_cmd_main(int argc, char **argv)
{
    const char *sub = argc >= 3 ? argv[2] : "";
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        usage(stdout);
        return 0;
    }
    bool list = !strcmp(sub, "list"), show = !strcmp(sub, "show"), replay = !strcmp(sub, "replay");
    if (!list && !show && !replay) {
        if (sub[0]) fprintf(stderr, "meterd dlq: unknown subcommand '%s'\n", sub);
        fprintf(stderr, SYNOPSIS "'meterd dlq --help' says more.\n");
        return 2;
    }
    char **pos = calloc((size_t)argc + 1, sizeof *pos),
         **opts = calloc((size_t)argc + 1, sizeof *opts);
    if (!pos || !opts) {
        free(pos);
        free(opts);
        fprintf(stderr, "meterd dlq: out of memory\n");
        return 1;
    }
    int npos, nopts, rc = 0;
    bool all;
    if (split_args(argc, argv, pos, &npos, opts + 1, &nopts, &all)) {
        usage(stdout);
        goto out;
    }
    if ((list && (npos || all)) || (show && (npos != 1 || all)) ||
        (replay && ((npos > 0) == all))) {
        fprintf(stderr, "meterd dlq %s: %s\n" SYNOPSIS "'meterd dlq --help' says more.\n", sub,
                list   ? "takes no arguments"
                : show ? "needs exactly one ID"
                : all  ? "takes IDs or --all, not both"
                       : "needs an ID (or several) or --all");
        rc = 2;
        goto out;
    }
    config c;
    char err[1024];
    config_defaults(&c);
    int crc = config_from_env(&c, err, sizeof err);
    if (crc == MD_OK) crc = config_from_args(&c, nopts + 1, opts, 1, err, sizeof err);
    if (crc) {
        fprintf(stderr, "meterd dlq %s: %s\n", sub, err);
        rc = 2;
        goto out;
    }
    if (strcmp(c.queue_backend, "wal") && strcmp(c.queue_backend, "amqp") &&
        strcmp(c.queue_backend, "redis")) {
        fprintf(stderr, "meterd dlq %s: unknown queue backend '%s' (wal, amqp or redis)\n", sub,
                c.queue_backend);
        rc = 2;
        goto out;
    }
    log_set_level((log_level)c.log_level);
    dlq *d = dlq_open(&c, err, sizeof err);
    if (!d) {
        fprintf(stderr, "meterd dlq %s: %s\n", sub, err);
        rc = 1;
        goto out;
    }
    walk w = {.want = show ? pos[0] : NULL};
    if (list || show) {
        int r = d->ops->list(d, list ? print_line : print_match, &w, err, sizeof err);
        if (r) {
            fprintf(stderr, "meterd dlq %s: %s\n", sub, err);
            rc = 1;
        } else if (list) {
            fprintf(stderr, "%zu dead letter%s in %s\n", w.n, w.n == 1 ? "" : "s", d->where);
        } else if (!w.found) {
            fprintf(stderr,
                    "meterd dlq show: no dead letter with id %s in %s ('meterd dlq list' "
                    "prints the ids)\n",
                    pos[0], d->where);
            rc = 1;
        }
    } else {
        int r = d->ops->replay(d, (const char *const *)pos, (size_t)npos, print_line, &w, err,
                               sizeof err);
        fprintf(stderr, "%zu dead letter%s replayed from %s to %s\n", w.n, w.n == 1 ? "" : "s",
                d->where, d->target);
        if (r) {
            fprintf(stderr, "meterd dlq replay: %s\n", err);
            rc = 1;
        } else if (w.n && !strcmp(d->ops->name, "wal")) {
            fprintf(stderr, "start 'meterd serve' on this data directory to process them\n");
        }
    }
    d->ops->close(d);
out:
    free(pos);
    free(opts);
    return rc;
}
