/* Unit tests for the WAL's dead-letter replay (src/queue/wal_dlq.c). Each test runs in its own
 * temp dir: messages are nacked into dead.log through the real queue, then replayed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/config.h"
#include "core/error.h"
#include "queue/dlq.h"
#include "queue/queue.h"
#include "queue/wal.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define TMPDIR_PREFIX "/tmp/meterd-wal-dlq"
#include "queue/tmpdir_fixture.h"
#include "queue/wal_fixture.h"

static queue *open_wal(const char *dir)
{
    return open_wal_with(dir, NULL);
}

/* Publishes each payload, consumes it and nacks it with reason "r<i>": dead letters 1..n. */
static void make_dead_letters(const char *dir, const char *const *payloads, size_t n)
{
    queue *q = open_wal(dir);
    for (size_t i = 0; i < n; i++) {
        queue_msg m;
        char reason[32];
        assert_int_equal(queue_publish_wait(q, (const uint8_t *)payloads[i], strlen(payloads[i])),
                         0);
        assert_int_equal(q->ops->consume(q, &m, 1000), 0);
        snprintf(reason, sizeof reason, "r%zu", i);
        assert_int_equal(q->ops->nack(q, &m, reason), 0);
    }
    close_wal(q);
}

static dlq *open_dlq(const char *dir, uint64_t backlog)
{
    config c;
    char err[256];
    config_defaults(&c);
    c.max_backlog_bytes = backlog;
    dlq *d = wal_dlq_open(dir, &c, err, sizeof err);
    assert_non_null(d);
    return d;
}

typedef struct seen {
    size_t n;
    char ids[8][24];
    char data[8][32];
} seen;

static int collect(void *arg, const dlq_entry *e)
{
    seen *s = arg;
    if (s->n < 8) {
        snprintf(s->ids[s->n], sizeof s->ids[0], "%s", e->id);
        snprintf(s->data[s->n], sizeof s->data[0], "%.*s", (int)e->len, (const char *)e->data);
    }
    s->n++;
    return 0;
}

static seen list_all(dlq *d)
{
    seen s = {0};
    char err[256];
    assert_int_equal(d->ops->list(d, collect, &s, err, sizeof err), 0);
    return s;
}

/* The next message of the queue, or "" when there is none. */
static void next_msg(queue *q, char *out, size_t outlen)
{
    queue_msg m;
    out[0] = '\0';
    if (q->ops->consume(q, &m, 0) != 0) return;
    snprintf(out, outlen, "%.*s", (int)m.len, (const char *)m.data);
    assert_int_equal(q->ops->ack(q, &m), 0);
}

static void test_replay_by_id_republishes_then_removes_only_that_one(void **state)
{
    fixture *f = *state;
    const char *p[] = {"alpha", "beta", "gamma"};
    make_dead_letters(f->dir, p, 3);
    dlq *d = open_dlq(f->dir, 0);
    seen s = list_all(d);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.ids[1], "2");

    char err[512];
    const char *ids[] = {"2"};
    seen r = {0};
    assert_int_equal(d->ops->replay(d, ids, 1, collect, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.data[0], "beta");
    s = list_all(d);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.data[0], "alpha");
    assert_string_equal(s.data[1], "gamma");

    /* unknown ids, alone or among known ones: nothing happens */
    const char *bad[] = {"1", "99"};
    memset(&r, 0, sizeof r);
    assert_int_equal(d->ops->replay(d, bad, 2, collect, &r, err, sizeof err), MD_ERR_NOTFOUND);
    assert_non_null(strstr(err, "99"));
    const char *word[] = {"x1"};
    assert_int_equal(d->ops->replay(d, word, 1, collect, &r, err, sizeof err), MD_ERR_NOTFOUND);
    assert_int_equal(r.n, 0);
    assert_int_equal(list_all(d).n, 2);
    d->ops->close(d);

    queue *q = open_wal(f->dir);
    char got[32];
    next_msg(q, got, sizeof got);
    assert_string_equal(got, "beta");
    next_msg(q, got, sizeof got);
    assert_string_equal(got, "");
    close_wal(q);
}

static void test_replay_is_refused_while_the_queue_is_open(void **state)
{
    fixture *f = *state;
    const char *p[] = {"alpha"};
    make_dead_letters(f->dir, p, 1);
    queue *q = open_wal(f->dir); /* as a running serve holds it */
    dlq *d = open_dlq(f->dir, 0);
    char err[512];
    seen r = {0};
    assert_int_equal(d->ops->replay(d, NULL, 0, collect, &r, err, sizeof err), MD_ERR_CLOSED);
    assert_non_null(strstr(err, "in use by a running meterd"));
    assert_int_equal(r.n, 0);
    assert_int_equal(list_all(d).n, 1); /* listing still works */
    char got[32];
    next_msg(q, got, sizeof got);
    assert_string_equal(got, ""); /* nothing was republished */
    close_wal(q);
    d->ops->close(d);
}

static void test_replay_all_stops_at_the_backlog_budget_and_keeps_the_rest(void **state)
{
    fixture *f = *state;
    const char *p[] = {"one", "two", "three"};
    make_dead_letters(f->dir, p, 3);
    dlq *d = open_dlq(f->dir, 24 + 5 + 24 + 5); /* room for two small records */
    char err[512];
    seen r = {0};
    assert_int_equal(d->ops->replay(d, NULL, 0, collect, &r, err, sizeof err), MD_ERR_FULL);
    assert_non_null(strstr(err, "backlog budget"));
    assert_int_equal(r.n, 2);
    seen s = list_all(d);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.data[0], "three");
    d->ops->close(d);

    queue *q = open_wal(f->dir); /* serve drains the queue ... */
    char got[32];
    next_msg(q, got, sizeof got);
    assert_string_equal(got, "one");
    next_msg(q, got, sizeof got);
    assert_string_equal(got, "two");
    close_wal(q);
    d = open_dlq(f->dir, 24 + 5 + 24 + 5); /* ... and the rest fits now */
    memset(&r, 0, sizeof r);
    assert_int_equal(d->ops->replay(d, NULL, 0, collect, &r, err, sizeof err), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(list_all(d).n, 0);
    memset(&r, 0, sizeof r);
    assert_int_equal(d->ops->replay(d, NULL, 0, collect, &r, err, sizeof err), 0); /* no-op */
    assert_int_equal(r.n, 0);
    d->ops->close(d);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_replay_by_id_republishes_then_removes_only_that_one),
        T(test_replay_is_refused_while_the_queue_is_open),
        T(test_replay_all_stops_at_the_backlog_budget_and_keeps_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
