/* Table-driven config error tests, shared by the config unit tests: each
 * case's YAML (after an optional common head) is loaded as one file of the
 * given name and must be refused with exactly the expected
 * "FILE:LINE:COL: message". Every mismatch is printed, then counted. */
#ifndef MG_TEST_CFG_ERRORS_H
#define MG_TEST_CFG_ERRORS_H

#include <stdio.h>
#include <string.h>

#include "config/config.h"

typedef struct {
    const char *what, *yaml, *error;
} mg_cfg_err_case_t;

static inline int mg_cfg_err_failures(const mg_cfg_err_case_t *cases, size_t n, const char *file, const char *head)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char y[8192], err[1024] = "";
        snprintf(y, sizeof y, "%s%s", head ? head : "", cases[i].yaml);
        mg_config_buffer_t b = { file, y, strlen(y) };
        mg_config_t *cfg = NULL;
        if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) == 0) {
            print_error("%s: loaded, want error '%s'\n", cases[i].what, cases[i].error);
            mg_config_free(cfg);
            failures++;
        } else if (strcmp(err, cases[i].error) != 0) {
            print_error("%s:\n  got  '%s'\n  want '%s'\n", cases[i].what, err, cases[i].error);
            failures++;
        }
    }
    return failures;
}

/* cases: an array (not a pointer) of mg_cfg_err_case_t */
#define MG_CFG_ERRORS_CHECK(cases, file, head) \
    assert_int_equal(mg_cfg_err_failures((cases), sizeof(cases) / sizeof((cases)[0]), (file), (head)), 0)

#endif
