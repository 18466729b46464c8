/* cluster: the process-wide endpoint registry's slots, their references
 * from cluster sets, the name hash, and the recycling of unused slots when
 * the registry is full (a long-lived gateway whose instances keep changing
 * addresses must not run out). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/cluster.h"
#include "config/config.h"
#include "core/err.h"

static mg_config_t *cfg_of(const char *yaml)
{
    char err[512] = "";
    mg_config_buffer_t b = { "x.yaml", yaml, strlen(yaml) };
    mg_config_t *cfg = NULL;
    if (mg_config_load_buffers(&b, 1, &cfg, err, sizeof err) != 0)
        fail_msg("config: %s", err);
    return cfg;
}

/* A cluster set over one cluster with the given endpoints. */
static int build(mg_config_t **cfg, const char *endpoints, mg_cluster_set_t *set, char *err, size_t errlen)
{
    char y[512];
    snprintf(y, sizeof y, "clusters: {c: {endpoints: [%s]}}\n", endpoints);
    *cfg = cfg_of(y);
    memset(set, 0, sizeof *set);
    return mg_cluster_set_build(*cfg, NULL, set, err, errlen);
}

static mg_ep_stats_t *find(const char *name)
{
    for (uint32_t i = 0; i < mg_ep_registry_count(); i++)
        if (!strcmp(mg_ep_registry_at(i)->name, name))
            return mg_ep_registry_at(i);
    return NULL;
}

static void test_refs_and_recycling(void **state)
{
    (void)state;
    char err[512] = "";
    mg_config_t *c1, *c2, *c3;
    mg_cluster_set_t s1, s2, s3;

    /* slots are shared by address and counted per set */
    assert_int_equal(build(&c1, "127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3", &s1, err, sizeof err), 0);
    assert_int_equal(mg_ep_registry_count(), 3);
    assert_int_equal(build(&c2, "127.0.0.1:2", &s2, err, sizeof err), 0);
    assert_int_equal(mg_ep_registry_count(), 3);
    mg_ep_stats_t *two = find("127.0.0.1:2");
    assert_ptr_equal(s2.clusters[0].eps[0].stats, two);
    assert_int_equal(atomic_load(&two->refs), 2);

    /* full, every slot held: a new address is refused */
    assert_int_equal(build(&c3, "127.0.0.1:4", &s3, err, sizeof err), MG_ECONFIG);
    assert_non_null(strstr(err, "too many distinct endpoints"));
    mg_cluster_set_free(&s3);
    mg_config_free(c3);

    /* s1 goes: :1 and :3 are free again, :2 is still held by s2 */
    mg_cluster_set_free(&s1);
    mg_config_free(c1);
    assert_int_equal(atomic_load(&two->refs), 1);
    mg_ep_stats_t *one = find("127.0.0.1:1"), *three = find("127.0.0.1:3");
    uint32_t i1 = one->index, i3 = three->index;
    /* a slot with a connection still open is not recycled */
    atomic_store(&one->w[0].idle, 1);
    atomic_fetch_add(&one->w[0].requests, 7);
    atomic_fetch_add(&three->w[0].requests, 5);
    uint64_t recycled = mg_ep_registry_recycled();
    assert_int_equal(build(&c3, "127.0.0.1:4", &s3, err, sizeof err), 0);
    assert_int_equal(mg_ep_registry_recycled(), recycled + 1);
    assert_int_equal(mg_ep_registry_count(), 3);
    mg_ep_stats_t *four = s3.clusters[0].eps[0].stats;
    assert_ptr_equal(four, three); /* the same slot, renamed, counters restarted */
    assert_int_equal(four->index, i3);
    assert_string_equal(four->name, "127.0.0.1:4");
    assert_int_equal(atomic_load(&four->w[0].requests), 0);
    assert_null(find("127.0.0.1:3"));
    assert_ptr_equal(find("127.0.0.1:1"), one);
    assert_int_equal(one->index, i1);

    /* the name hash follows the renames: existing names still resolve to
     * their slots, the recycled old name gets a slot again once one frees */
    mg_config_t *c4;
    mg_cluster_set_t s4;
    assert_int_equal(build(&c4, "127.0.0.1:2, 127.0.0.1:4", &s4, err, sizeof err), 0);
    assert_ptr_equal(s4.clusters[0].eps[0].stats, two);
    assert_ptr_equal(s4.clusters[0].eps[1].stats, four);
    assert_int_equal(atomic_load(&four->refs), 2);
    mg_cluster_set_free(&s4);
    mg_config_free(c4);
    atomic_store(&one->w[0].idle, 0);
    assert_int_equal(build(&c4, "127.0.0.1:3", &s4, err, sizeof err), 0);
    assert_ptr_equal(s4.clusters[0].eps[0].stats, one);
    assert_string_equal(one->name, "127.0.0.1:3");
    assert_null(find("127.0.0.1:1"));

    mg_cluster_set_free(&s2);
    mg_cluster_set_free(&s3);
    mg_cluster_set_free(&s4);
    mg_config_free(c2);
    mg_config_free(c3);
    mg_config_free(c4);
    assert_int_equal(atomic_load(&two->refs), 0);
    assert_int_equal(atomic_load(&four->refs), 0);
}

int main(void)
{
    mg_ep_registry_init(1);
    mg_ep_registry_limit(3);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refs_and_recycling),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
