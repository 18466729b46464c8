/* log: leveled diagnostics to stderr, one write(2) per line so lines from
 * different threads never interleave. Any thread. Not the access log
 * (see obs/accesslog.h). */
#ifndef MG_CORE_LOG_H
#define MG_CORE_LOG_H

typedef enum { MG_LOG_DEBUG, MG_LOG_INFO, MG_LOG_WARN, MG_LOG_ERROR } mg_log_level_t;

extern mg_log_level_t mg_log_min_level;

void mg_log(mg_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define mg_debug(...) do { if (mg_log_min_level <= MG_LOG_DEBUG) mg_log(MG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define mg_info(...) mg_log(MG_LOG_INFO, __VA_ARGS__)
#define mg_warn(...) mg_log(MG_LOG_WARN, __VA_ARGS__)
#define mg_error(...) mg_log(MG_LOG_ERROR, __VA_ARGS__)

#endif
