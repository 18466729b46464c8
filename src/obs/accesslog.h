/* accesslog: one JSON line per request, written without blocking workers.
 *
 * Each worker appends lines to its own buffer (no lock). Full buffers, and
 * partial ones every flush interval, are handed to one writer thread over a
 * bounded queue; when the queue is full the buffer's lines are dropped and
 * counted (mg_alog_dropped), never waited for. */
#ifndef MG_OBS_ACCESSLOG_H
#define MG_OBS_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/json.h"

typedef struct {
    mg_buf_t buf;
    uint32_t lines;
} mg_alog_worker_t;

/* target: NULL or "off" (disabled), "stderr", or a file path (appended).
 * Returns 0 or -errno. Call once, before workers start. */
int mg_alog_start(const char *target);
bool mg_alog_enabled(void);
/* Worker side: the line must end with '\n'. */
void mg_alog_append(mg_alog_worker_t *w, const char *line, size_t n);
void mg_alog_flush(mg_alog_worker_t *w);
/* Flush everything queued and stop the writer thread. */
void mg_alog_stop(void);
uint64_t mg_alog_dropped(void);

#endif
