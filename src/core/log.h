/* Structured logging: one JSON object per line on stderr. Thread-safe. */
#ifndef METERD_CORE_LOG_H
#define METERD_CORE_LOG_H

#include <jansson.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 } log_level;

/* Sets the lowest level written. */
void log_set_level(log_level lvl);
/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int log_level_parse(const char *s);
/* Returns 1 when lvl would be written. */
int log_enabled(log_level lvl);
/* Writes {"ts","level","event","msg",...fields}; fields is stolen (may be NULL). */
void log_emit(log_level lvl, const char *event, json_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define log_info(event, ...) log_emit(LOG_INFO, event, NULL, __VA_ARGS__)
#define log_warn(event, ...) log_emit(LOG_WARN, event, NULL, __VA_ARGS__)
#define log_error(event, ...) log_emit(LOG_ERROR, event, NULL, __VA_ARGS__)

#endif
