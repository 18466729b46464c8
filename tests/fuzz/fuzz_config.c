/* fuzz_config: the YAML loader, the merge and the route table build.
 * The input is split at NUL bytes into up to 4 "files" that are merged in
 * order, as with `meshgate run -c a -c b`. A config that loads must build a
 * route table, and matching a few paths against it must not crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "http/http1.h"
#include "route/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = { "a.yaml", "b.yaml", "c.yaml", "d.yaml" };
    mg_config_buffer_t bufs[4];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= size && n < 4; i++) {
        if (i == size || data[i] == 0 || n == 3) {
            if (n == 3) i = size; /* the last file takes the rest */
            bufs[n] = (mg_config_buffer_t){ names[n], (const char *)data + start, i - start };
            n++;
            start = i + 1;
        }
    }
    char err[256];
    mg_config_t *cfg = NULL;
    if (mg_config_load_buffers(bufs, n, &cfg, err, sizeof err) != 0) {
        if (cfg || !memchr(err, '\0', sizeof err)) abort();
        return 0;
    }
    mg_route_table_t *t = NULL;
    if (mg_route_table_build(cfg, &t, err, sizeof err) != 0) abort(); /* the loader validated every path */
    static const char *const paths[] = { "/", "/api/users/42", "/a/b/c/", "", "/x.png" };
    static mg_http_msg_t req;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        req.path = mg_slice_cstr(paths[i]);
        mg_path_vars_t v;
        const mg_route_t *r = mg_route_match(t, &(mg_match_ctx_t){ .req = &req }, &v);
        if (r && r->cfg->cluster_index >= cfg->nclusters) abort();
    }
    mg_route_table_free(t);
    mg_config_free(cfg);
    return 0;
}
