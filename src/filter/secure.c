/* secure: Spring's SecureHeaders filter. Adds the recommended security
 * headers to responses (when the upstream did not set them), with Spring's
 * default values; args override a value (by its Spring property name) or
 * `disable` headers by their lowercase names. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "filter/filters_int.h"

static const struct {
    const char *header, *lower, *prop, *value;
} defaults[] = {
    { "X-Xss-Protection", "x-xss-protection", "xss-protection-header", "1 ; mode=block" },
    { "Strict-Transport-Security", "strict-transport-security", "strict-transport-security", "max-age=631138519" },
    { "X-Frame-Options", "x-frame-options", "frame-options", "DENY" },
    { "X-Content-Type-Options", "x-content-type-options", "content-type-options", "nosniff" },
    { "Referrer-Policy", "referrer-policy", "referrer-policy", "no-referrer" },
    { "Content-Security-Policy", "content-security-policy", "content-security-policy",
      "default-src 'self' https:; font-src 'self' https: data:; img-src 'self' https: data:; object-src 'none'; "
      "script-src https:; style-src 'self' https: 'unsafe-inline'" },
    { "X-Download-Options", "x-download-options", "download-options", "noopen" },
    { "X-Permitted-Cross-Domain-Policies", "x-permitted-cross-domain-policies", "permitted-cross-domain-policies",
      "none" },
};
#define NDEF (sizeof defaults / sizeof defaults[0])

typedef struct {
    bool on[NDEF];
    const char *value[NDEF]; /* into values[] or defaults */
    char *own[NDEF];
} sec_st;

static void sec_free(void *st)
{
    sec_st *s = st;
    if (!s) return;
    for (size_t i = 0; i < NDEF; i++) free(s->own[i]);
    free(s);
}

static int sec_compile(const mg_plugin_cfg_t *pc, void **out, char *err, size_t errlen)
{
    sec_st *s = calloc(1, sizeof *s);
    if (!s) return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
    for (size_t i = 0; i < NDEF; i++) {
        s->on[i] = true;
        s->value[i] = defaults[i].value;
    }
    const mg_arg_cfg_t *dis = mg_plugin_arg(pc, "disable");
    for (size_t k = 0; dis && k < dis->nvalues; k++) {
        size_t i = 0;
        while (i < NDEF && strcasecmp(dis->values[k], defaults[i].lower) != 0) i++;
        if (i == NDEF) {
            const char *names[NDEF];
            for (size_t j = 0; j < NDEF; j++) names[j] = defaults[j].lower;
            const char *sug = mg_suggest(dis->values[k], strlen(dis->values[k]), names, NDEF);
            sec_free(s);
            return mg_plugin_error(err, errlen, &dis->pos, "disable: unknown header '%.60s'%s%s%s", dis->values[k],
                                   sug ? " (did you mean " : "", sug ? sug : "", sug ? "?)" : "");
        }
        s->on[i] = false;
    }
    for (size_t i = 0; i < NDEF; i++) {
        const mg_arg_cfg_t *a = mg_plugin_arg(pc, defaults[i].prop);
        if (!a) continue;
        if (strpbrk(a->values[0], "\r\n")) {
            sec_free(s);
            return mg_plugin_error(err, errlen, &a->pos, "%s: header value must not contain CR or LF", defaults[i].prop);
        }
        if (!(s->own[i] = strdup(a->values[0]))) {
            sec_free(s);
            return mg_plugin_error(err, errlen, &pc->pos, "out of memory");
        }
        s->value[i] = s->own[i];
    }
    *out = s;
    return 0;
}

static void sec_resp(const void *st, const mg_req_view_t *req, mg_resp_view_t *resp)
{
    const sec_st *s = st;
    for (size_t i = 0; i < NDEF; i++) {
        if (!s->on[i]) continue;
        mg_slice_t name = mg_slice_cstr(defaults[i].header);
        if (!mg_hdr_get(&resp->headers, name))
            mg_hdr_add(resp->arena, &resp->headers, name, mg_slice_cstr(s->value[i]));
    }
}

const mg_plugin_spec_t mg_f_secure_headers = {
    .name = "SecureHeaders", .kind = MG_PLUGIN_FILTER,
    .args = { { "disable", MG_ARG_LIST }, { "xss-protection-header", 0 }, { "strict-transport-security", 0 },
              { "frame-options", 0 }, { "content-type-options", 0 }, { "referrer-policy", 0 },
              { "content-security-policy", 0 }, { "download-options", 0 }, { "permitted-cross-domain-policies", 0 } },
    .shortcut = MG_SHORTCUT_GATHER, .compile = sec_compile, .free = sec_free, .response = sec_resp,
};
