/* fuzz_path: the first line is a PathPattern; every further line is a path
 * matched against it. Captured values must lie inside the path, and
 * matching with and without vars must agree. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route/path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t plen = nl ? (size_t)(nl - s) : size;
    char *pat = malloc(plen + 1);
    if (!pat) return 0;
    memcpy(pat, s, plen);
    pat[plen] = '\0';
    mg_path_pattern_t *p = NULL;
    char err[256];
    int rc = mg_path_compile(pat, &p, err, sizeof err);
    free(pat);
    if (rc != 0) {
        if (p) abort();
        return 0;
    }
    size_t off = nl ? plen + 1 : size;
    while (off <= size) {
        const char *line = s + off;
        const char *e = memchr(line, '\n', size - off);
        size_t n = e ? (size_t)(e - line) : size - off;
        /* an exact-size copy so ASan catches reads past the path */
        char *path = malloc(n ? n : 1);
        if (!path) break;
        memcpy(path, line, n);
        mg_path_vars_t v;
        bool m = mg_path_match(p, path, n, &v);
        if (m != mg_path_match(p, path, n, NULL)) abort();
        if (m) {
            if (v.n > MG_PATH_MAX_VARS) abort();
            for (size_t i = 0; i < v.n; i++) {
                if (v.value[i].n && (v.value[i].p < path || v.value[i].p + v.value[i].n > path + n)) abort();
                if (!v.name[i].p) abort();
            }
        } else if (v.n != 0) {
            abort();
        }
        free(path);
        if (!e) break;
        off += n + 1;
    }
    mg_path_free(p);
    return 0;
}
