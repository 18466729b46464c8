/* err: the one error convention of meshgate.
 * Functions return 0 (or a non-negative count) on success and a negative
 * code on failure: -errno for system errors, or one of MG_E* below.
 * A function that takes a callback and returns an error never calls it. */
#ifndef MG_CORE_ERR_H
#define MG_CORE_ERR_H

#include <errno.h>

enum {
    MG_EBASE = -10000,
    MG_ECONFIG,     /* configuration is invalid (message in the err buffer) */
    MG_EPARSE,      /* malformed input */
    MG_ELIMIT,      /* a configured limit was exceeded */
    MG_ENOROUTE,    /* no route matched */
    MG_ENOENDPOINT, /* cluster has no usable endpoint */
    MG_ELAST
};

#include <stddef.h>

/* Writes a printf-style message to err (when err and errlen are set) and
 * returns MG_ECONFIG: the one helper for "FILE:LINE:COL: message" errors. */
int mg_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Human-readable text for any code above (negative errno included). */
const char *mg_strerror(int code);

#endif
