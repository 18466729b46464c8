/* err: text for the error codes in err.h. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *mg_strerror(int code)
{
    switch (code) {
    case MG_ECONFIG: return "invalid configuration";
    case MG_EPARSE: return "malformed input";
    case MG_ELIMIT: return "limit exceeded";
    case MG_ENOROUTE: return "no route";
    case MG_ENOENDPOINT: return "no usable endpoint";
    default: break;
    }
    if (code < 0 && code > MG_EBASE)
        return strerror(-code);
    return "unknown error";
}

int mg_errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return MG_ECONFIG;
}
