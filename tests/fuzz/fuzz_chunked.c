/* fuzz_chunked: mg_chunked_decode must not crash, must keep data spans
 * inside the bytes it was given, never consume more than it was given, and
 * produce the same data, consumed count and outcome (done / error / need
 * more) whether the input is fed whole or in data-derived pieces with a
 * data-derived number of output slots. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h"

#define CHECK(x) do { if (!(x)) abort(); } while (0)

typedef struct {
    ssize_t result; /* consumed total, or the error */
    int done;
    size_t ndata;
} outcome_t;

/* Feeds buf[0..size) in pieces of `step` new bytes (unconsumed bytes are
 * re-offered), with `slots` output slots per call. Data goes to data[]. */
static outcome_t feed(const char *buf, size_t size, size_t step, size_t slots, char *data)
{
    mg_chunked_t c;
    mg_chunked_reset(&c);
    mg_slice_t out[16];
    outcome_t o = { 0, 0, 0 };
    size_t off = 0, avail = 0;
    for (;;) {
        size_t add = size - off - avail;
        if (add > step)
            add = step;
        avail += add;
        size_t nout = 99;
        int done = -1;
        ssize_t r = mg_chunked_decode(&c, buf + off, avail, out, slots, &nout, &done);
        CHECK(done == 0 || done == 1);
        if (r < 0) {
            CHECK(r == -400);
            o.result = r;
            return o;
        }
        CHECK((size_t)r <= avail);
        CHECK(nout <= slots);
        for (size_t i = 0; i < nout; i++) {
            CHECK(out[i].n > 0);
            CHECK(out[i].p >= buf + off && out[i].p + out[i].n <= buf + off + r);
            memcpy(data + o.ndata, out[i].p, out[i].n);
            o.ndata += out[i].n;
        }
        off += (size_t)r;
        avail -= (size_t)r;
        if (done) {
            o.done = 1;
            break;
        }
        if (r == 0 && add == 0) {
            CHECK(avail == 0); /* without done, everything offered is consumed */
            break;
        }
    }
    o.result = (ssize_t)off;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 1099511628211ull;
    char *d1 = malloc(size + 1), *d2 = malloc(size + 1);
    outcome_t a = feed(buf, size, size ? size : 1, 16, d1);
    CHECK(a.result < 0 || (size_t)a.result <= size);
    CHECK(a.ndata <= size);
    size_t step = 1 + (size_t)(h % 13);
    size_t slots = 1 + (size_t)((h >> 8) % 3);
    outcome_t b = feed(buf, size, step, slots, d2);
    CHECK(a.result == b.result);
    CHECK(a.done == b.done);
    if (a.result >= 0) {
        CHECK(a.ndata == b.ndata);
        CHECK(memcmp(d1, d2, a.ndata) == 0);
    }
    if (size <= 256) {
        outcome_t c = feed(buf, size, 1, 1, d2);
        CHECK(a.result == c.result && a.done == c.done);
        if (a.result >= 0)
            CHECK(a.ndata == c.ndata && memcmp(d1, d2, a.ndata) == 0);
    }
    free(d1);
    free(d2);
    return 0;
}
