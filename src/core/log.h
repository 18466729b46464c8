/* log: leveled diagnostics to stderr, one write(2) per line so lines from
 * different threads never interleave. Any thread. Not the access log
 * (see obs/accesslog.h). */
#ifndef MG_CORE_LOG_H
#define MG_CORE_LOG_H

#include <stdint.h>

typedef enum { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR } mg_log_level_t;

extern mg_log_level_t mg_log_min_level;

void mg_log(mg_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mg_debug(...) do { if (mg_log_min_level <= MG_LOG_DEBUG) mg_log(MG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define mg_info(...) mg_log(MG_LOG_INFO, __VA_ARGS__)
#define mg_warn(...) mg_log(MG_LOG_WARN, __VA_ARGS__)
#define mg_error(...) mg_log(MG_LOG_ERROR, __VA_ARGS__)

/* A warning that can repeat (on every reconnect attempt, every rebuild...)
 * is printed at most once per interval; the ones in between are counted
 * and the count is added to the next one printed. One limiter per source,
 * used by one thread (zero-initialized). */
typedef struct {
    uint64_t last_ms; /* monotonic; 0 = never printed */
    uint64_t suppressed;
} mg_warn_limit_t;

void mg_warn_limited(mg_warn_limit_t *l, uint64_t every_ms, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
