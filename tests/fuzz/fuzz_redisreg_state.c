/* fuzz_redisreg_state: the TTL check state read back from Redis by the
 * shared registry backend. Whatever decodes must re-encode and decode to
 * the same values. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discovery/redisreg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mg_redisreg_state_t s;
    if (mg_redisreg_state_decode((const char *)data, size, &s) != 0) return 0;
    mg_buf_t b;
    mg_buf_init(&b);
    mg_redisreg_state_encode(&b, s.instance_id, s.status, s.output, s.deadline_ms);
    mg_redisreg_state_t t;
    if (!b.oom) {
        if (mg_redisreg_state_decode(b.p, b.len, &t) != 0) abort();
        if (strcmp(s.instance_id, t.instance_id) || strcmp(s.output, t.output) || s.status != t.status ||
            s.deadline_ms != t.deadline_ms)
            abort();
        mg_redisreg_state_free(&t);
    }
    mg_buf_free(&b);
    mg_redisreg_state_free(&s);
    return 0;
}
