/* The SSE hub: a list of clients, each a bounded byte buffer behind one mutex.
 * The sink formats the event once, appends it to every matching client and wakes its stream;
 * MHD's thread drains the buffer through hub_read. Heartbeat comments every 15 s keep
 * proxies from closing idle streams and let MHD notice clients that went away. */
#include "query/events_hub.h"
#include "core/log.h"
#include "store/store.h"
#include "worker/events.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct hub_client {
    events_hub *hub;     /* borrowed */
    http_stream *stream; /* borrowed; NULL until the response is set up */
    char *device;        /* owned; NULL: every device */
    char *buf;           /* owned, EVENTS_HUB_CLIENT_BUFFER bytes */
    size_t len;
    int dropped;
    int linked;
    struct hub_client *prev, *next;
} hub_client;

struct events_hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hub_client *clients;
    atomic_int n_clients;
    int stop;
    pthread_t heartbeat;
    uint64_t delivered, dropped;
};

/* Appends to a client; on overflow the client is dropped. Caller holds h->mu. */
static void client_push(hub_client *c, const char *data, size_t n)
{
    if (c->dropped) return;
    if (c->len + n > EVENTS_HUB_CLIENT_BUFFER) {
        c->dropped = 1;
        c->hub->dropped++;
        log_warn("sse_client_dropped", "an SSE client fell %zu bytes behind: dropped", c->len);
    } else {
        memcpy(c->buf + c->len, data, n);
        c->len += n;
    }
    if (c->stream) http_stream_wake(c->stream);
}

static void *heartbeat_main(void *arg)
{
    pthread_setname_np(pthread_self(), "md-heartbeat");
    events_hub *h = arg;
    static const char beat[] = ": heartbeat\n\n";
    pthread_mutex_lock(&h->mu);
    while (!h->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += EVENTS_HUB_HEARTBEAT_MS / 1000;
        int rc = pthread_cond_timedwait(&h->cv, &h->mu, &ts);
        if (h->stop) break;
        if (rc == ETIMEDOUT)
            for (hub_client *c = h->clients; c; c = c->next) client_push(c, beat, sizeof beat - 1);
    }
    pthread_mutex_unlock(&h->mu);
    return NULL;
}

events_hub *events_hub_new(void)
{
    events_hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    if (pthread_create(&h->heartbeat, NULL, heartbeat_main, h)) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

void events_hub_free(events_hub *h)
{
    if (!h) return;
    pthread_mutex_lock(&h->mu);
    h->stop = 1;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->heartbeat, NULL);
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void events_hub_sink(void *arg, const batch *b, const reading *r, int outcome, const char *reason)
{
    events_hub *h = arg;
    if (atomic_load(&h->n_clients) == 0) return; /* the common case: nobody listens */
    if (outcome != STORE_OUTCOME_VALID && outcome != STORE_OUTCOME_INVALID) return;
    char stack[1024];
    size_t len;
    char *json = events_reading_json_in(stack, sizeof stack, b, r, outcome, reason, &len);
    if (!json) return;
    events_hub_push_json(h, r->device, json, len);
    events_json_release(json, stack);
}

void events_hub_push_json(events_hub *h, const char *device, const char *json, size_t len)
{
    if (atomic_load(&h->n_clients) == 0) return;
    char *ev = malloc(len + 9);
    if (!ev) return;
    memcpy(ev, "data: ", 6);
    memcpy(ev + 6, json, len);
    memcpy(ev + 6 + len, "\n\n", 3);
    pthread_mutex_lock(&h->mu);
    for (hub_client *c = h->clients; c; c = c->next) {
        if (c->device && (!device || strcmp(c->device, device) != 0)) continue;
        client_push(c, ev, len + 8);
        h->delivered++;
    }
    pthread_mutex_unlock(&h->mu);
    free(ev);
}

void events_hub_relay(void *hub, const char *json, size_t len)
{
    events_hub *h = hub;
    if (atomic_load(&h->n_clients) == 0) return;
    json_t *ev = json_loadb(json, len, 0, NULL);
    if (!json_is_object(ev)) { /* not one of ours: nothing to show */
        json_decref(ev);
        return;
    }
    events_hub_push_json(h, json_string_value(json_object_get(ev, "device")), json, len);
    json_decref(ev);
}

/* MHD wants body bytes: whatever is buffered, -1 once dropped. */
static long hub_read(void *ctx, char *buf, size_t max)
{
    hub_client *c = ctx;
    events_hub *h = c->hub;
    pthread_mutex_lock(&h->mu);
    long n;
    if (c->dropped) {
        n = -1;
    } else {
        size_t k = c->len < max ? c->len : max;
        memcpy(buf, c->buf, k);
        memmove(c->buf, c->buf + k, c->len - k);
        c->len -= k;
        n = (long)k;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

static void hub_release(void *ctx)
{
    hub_client *c = ctx;
    events_hub *h = c->hub;
    pthread_mutex_lock(&h->mu);
    if (c->linked) {
        if (c->prev) c->prev->next = c->next;
        else h->clients = c->next;
        if (c->next) c->next->prev = c->prev;
        atomic_fetch_sub(&h->n_clients, 1);
    }
    pthread_mutex_unlock(&h->mu);
    free(c->device);
    free(c->buf);
    free(c);
}

void events_hub_handle(http_request *req, void *arg)
{
    events_hub *h = arg;
    static const char hello[] = "retry: 2000\n: connected\n\n";
    const char *dev = http_query(req, "device");
    if (atomic_load(&h->n_clients) >= EVENTS_HUB_MAX_CLIENTS) {
        http_add_header(req, "Retry-After", "5");
        http_respond_error(req, 503, "too many event streams (%d)", EVENTS_HUB_MAX_CLIENTS);
        return;
    }
    hub_client *c = calloc(1, sizeof *c);
    if (c) c->buf = malloc(EVENTS_HUB_CLIENT_BUFFER);
    if (c && dev && *dev) c->device = strdup(dev);
    if (!c || !c->buf || (dev && *dev && !c->device)) {
        if (c) free(c->buf);
        free(c);
        http_respond_error(req, 503, "out of memory opening the event stream");
        return;
    }
    c->hub = h;
    memcpy(c->buf, hello, sizeof hello - 1);
    c->len = sizeof hello - 1;
    pthread_mutex_lock(&h->mu);
    c->linked = 1;
    c->next = h->clients;
    if (h->clients) h->clients->prev = c;
    h->clients = c;
    atomic_fetch_add(&h->n_clients, 1);
    pthread_mutex_unlock(&h->mu);
    /* MHD reads the body only after this handler returns, so c lives at least until then */
    http_stream *st = http_respond_stream(req, 200, "text/event-stream", hub_read, hub_release, c);
    if (!st) return;
    pthread_mutex_lock(&h->mu);
    c->stream = st;
    pthread_mutex_unlock(&h->mu);
}

void events_hub_get_stats(events_hub *h, events_hub_stats *st)
{
    pthread_mutex_lock(&h->mu);
    st->clients = (uint64_t)atomic_load(&h->n_clients);
    st->delivered = h->delivered;
    st->dropped = h->dropped;
    pthread_mutex_unlock(&h->mu);
}
