/* fuzz_locator: the discovery locator's SpEL subset. The input is split at
 * the first newline: an expression, then a service id. A success gives a
 * bounded string; a failure gives no output and a message; and with a
 * template that evaluated, a config naming it must load or fail cleanly,
 * and a derived config must compile to a route table and free cleanly. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "config/locator.h"
#include "core/err.h"
#include "route/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (memchr(data, '\0', size)) return 0;
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t elen = nl ? (size_t)(nl - s) : size;
    char *expr = strndup(s, elen);
    char *sid = nl ? strndup(nl + 1, size - elen - 1) : strdup("svc");
    if (!expr || !sid) abort();
    char err[256], *out = NULL;
    err[0] = '\0';
    int rc = mg_locator_eval(expr, sid, &out, err, sizeof err);
    if (rc == 0) {
        if (!out || strlen(out) >= 4096) abort();
    } else {
        if (out || rc != MG_EPARSE || !memchr(err, '\0', sizeof err) || !err[0]) abort();
    }
    free(out);

    /* the expression as a locator filter value, in a config */
    char yaml[2048];
    int n = snprintf(yaml, sizeof yaml,
                     "discovery:\n  locator:\n    enabled: true\n    filters:\n"
                     "      - name: SetPath\n        args:\n          template: \"%.*s\"\n",
                     (int)(elen > 1000 ? 1000 : elen), expr);
    mg_config_buffer_t b = { "f.yaml", yaml, (size_t)n < sizeof yaml ? (size_t)n : sizeof yaml - 1 };
    mg_config_t *cfg = NULL;
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) == 0) {
        const char *names[] = { sid };
        mg_config_t *d = NULL;
        if (mg_locator_derive(cfg, names, 1, &d, err, sizeof err) != 0) abort(); /* only -ENOMEM */
        /* every generated route was validated: the table must build */
        mg_route_table_t *t = NULL;
        if (mg_route_table_build(d, &t, err, sizeof err) != 0) abort();
        mg_route_table_free(t);
        mg_config_free(d);
    } else if (cfg) {
        abort();
    }
    free(expr);
    free(sid);
    return 0;
}
