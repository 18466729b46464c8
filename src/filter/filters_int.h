/* filters_int: the built-in filter specs (one file per family) and small
 * helpers they share. Internal to src/filter. */
#ifndef MG_FILTER_FILTERS_INT_H
#define MG_FILTER_FILTERS_INT_H

#include "filter/registry.h"

/* headers.c */
extern const mg_plugin_spec_t mg_f_add_request_header, mg_f_add_request_headers_if_not_present,
    mg_f_add_response_header, mg_f_dedupe_response_header, mg_f_map_request_header, mg_f_remove_request_header,
    mg_f_remove_response_header, mg_f_set_request_header, mg_f_set_response_header, mg_f_rewrite_response_header,
    mg_f_preserve_host_header, mg_f_set_request_host_header;
/* rewrite.c */
extern const mg_plugin_spec_t mg_f_prefix_path, mg_f_rewrite_path, mg_f_set_path, mg_f_strip_prefix,
    mg_f_add_request_parameter, mg_f_remove_request_parameter;
/* redirect.c */
extern const mg_plugin_spec_t mg_f_redirect_to, mg_f_rewrite_location_response_header, mg_f_set_status;
/* secure.c */
extern const mg_plugin_spec_t mg_f_secure_headers;
/* size.c */
extern const mg_plugin_spec_t mg_f_request_size, mg_f_request_header_size;
/* rate_limit.c */
extern const mg_plugin_spec_t mg_f_request_rate_limiter, mg_f_rate_limiter;
/* resilience_filters.c */
extern const mg_plugin_spec_t mg_f_circuit_breaker, mg_f_retry;
/* unsupported.c */
extern const mg_plugin_spec_t mg_f_unsupported[10];
extern const mg_plugin_spec_t mg_pred_unsupported_readbody, mg_pred_unsupported_cfroute;

/* A header name from config: a non-empty token. */
int mg_f_check_header_name(const mg_plugin_cfg_t *pc, const char *key, char *err, size_t errlen);
/* A header value from config: no CR, LF or NUL. */
int mg_f_check_header_value(const mg_plugin_cfg_t *pc, const char *key, char *err, size_t errlen);
/* Concatenate into arena memory. */
mg_slice_t mg_f_cat(mg_arena_t *a, mg_slice_t x, mg_slice_t y);

/* HTTP status name table (Spring HttpStatus) */
int mg_http_status_parse(const char *s);

#endif
