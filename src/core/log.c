#include "core/log.h"
#include "core/timeutil.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_int min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level lvl)
{
    atomic_store(&min_level, (int)lvl);
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0) return i;
    if (strcmp(s, "warning") == 0) return LOG_WARN;
    return -1;
}

int log_enabled(log_level lvl)
{
    return (int)lvl >= atomic_load(&min_level);
}

void log_emit(log_level lvl, const char *event, json_t *fields, const char *fmt, ...)
{
    if (!log_enabled(lvl)) {
        json_decref(fields);
        return;
    }
    char msg[1024], ts[32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *o = json_object();
    if (!o) {
        json_decref(fields);
        return;
    }
    json_object_set_new(o, "ts", json_string(time_format_rfc3339(time_now_us(), ts)));
    json_object_set_new(o, "level", json_string(level_names[lvl]));
    json_object_set_new(o, "event", json_string(event));
    if (msg[0]) json_object_set_new(o, "msg", json_string(msg));
    if (fields) json_object_update(o, fields);
    json_decref(fields);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!line) return;
    size_t n = strlen(line);
    line[n] = '\n'; /* one write per line keeps lines whole across threads */
    ssize_t w = write(STDERR_FILENO, line, n + 1);
    (void)w;
    free(line);
}
