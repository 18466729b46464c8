/* Files of the repository (examples/, the seed) for unit tests, found from
 * this source file's location so a test runs from any build directory. */
#ifndef MG_TEST_REPO_FILE_H
#define MG_TEST_REPO_FILE_H

#include <stdio.h>
#include <string.h>

/* out = "<repo>/<rel>" */
static inline void mg_test_repo_path(char *out, size_t n, const char *rel)
{
    const char *src = __FILE__, *slash = strrchr(src, '/');
    snprintf(out, n, "%.*s/../../%s", (int)(slash ? slash - src : 1), slash ? src : ".", rel);
}

/* The file's text (up to 64 KiB) in one of 4 rotating static buffers, or
 * NULL when it cannot be opened. */
static inline char *mg_test_slurp(const char *rel)
{
    char path[4096];
    mg_test_repo_path(path, sizeof path, rel);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[4][65536];
    static int k;
    char *b = buf[k++ % 4];
    size_t n = fread(b, 1, sizeof buf[0] - 1, f);
    b[n] = '\0';
    fclose(f);
    return b;
}

#endif
