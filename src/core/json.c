/* json: see json.h. */
#include "core/json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

void mg_buf_init(mg_buf_t *b) { b->p = NULL; b->len = b->cap = 0; b->oom = 0; }
void mg_buf_free(mg_buf_t *b) { free(b->p); mg_buf_init(b); }

int mg_buf_reserve_slow(mg_buf_t *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    if (b->len + extra + 1 < b->len) {
        b->oom = 1;
        return -1;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void mg_buf_add_u64(mg_buf_t *b, unsigned long long v)
{
    char tmp[24];
    char *e = tmp + sizeof tmp, *p = e;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mg_buf_add(b, p, (size_t)(e - p));
}

void mg_buf_addf(mg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || mg_buf_reserve_slow(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mg_buf_json_str(mg_buf_t *b, mg_slice_t s)
{
    static const char hex[] = "0123456789abcdef";
    mg_buf_add(b, "\"", 1);
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            char e[2] = { '\\', (char)c };
            mg_buf_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            char e[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
            mg_buf_add(b, e, 6);
        } else {
            mg_buf_add(b, (const char *)&s.p[i], 1);
        }
    }
    mg_buf_add(b, "\"", 1);
}
