/* test_sysmem.c — cgroup v2/v1 memory limits and CPU quotas read from fake cgroup trees. */
#include <stdarg.h>
#include <string.h>

#include "testutil.h"

static void v2_limit_and_usage(void **state)
{
    char root[256], self[300];
    osv_sysmem_t m;
    (void)state;
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    osv_test_write_file(root, "self_cgroup", "0::/kubepods/pod1/ctr\n");
    osv_test_write_file(root, "cg/kubepods/pod1/ctr/memory.max", "134217728\n");
    osv_test_write_file(root, "cg/kubepods/pod1/ctr/memory.current", "5000000\n");
    osv_test_write_file(root, "cg/kubepods/pod1/ctr/memory.stat",
                        "anon 3000000\nactive_file 800000\ninactive_file_x 7\ninactive_file 1200000\n");
    osv_test_write_file(root, "cg/kubepods/pod1/memory.max", "max\n");
    char cg[300];
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_version, 2);
    assert_int_equal(m.cgroup_limit, 134217728);
    assert_int_equal(m.cgroup_usage, 5000000);
    assert_int_equal(m.cgroup_working_set, 5000000 - 1200000); /* the exact key, not a prefix */
    assert_true(m.physical > 0);
    assert_int_equal(m.effective, m.cgroup_limit < m.physical ? m.cgroup_limit : m.physical);
    osv_test_rmtree(root);
}

static void v2_parent_limit_applies(void **state)
{
    char root[256], self[300], cg[300];
    osv_sysmem_t m;
    (void)state;
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", "0::/a/b\n");
    osv_test_write_file(root, "cg/a/b/memory.max", "max\n");
    osv_test_write_file(root, "cg/a/memory.max", "67108864\n");
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_version, 2);
    assert_int_equal(m.cgroup_limit, 67108864);
    osv_test_rmtree(root);
}

static void v1_fallback(void **state)
{
    char root[256], self[300], cg[300];
    osv_sysmem_t m;
    (void)state;
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", "9:name=systemd:/\n4:memory:/ortserve-bench\n0::/\n");
    osv_test_write_file(root, "cg/memory/ortserve-bench/memory.limit_in_bytes", "268435456\n");
    osv_test_write_file(root, "cg/memory/ortserve-bench/memory.usage_in_bytes", "1234\n");
    osv_test_write_file(root, "cg/memory/ortserve-bench/memory.stat",
                        "inactive_file 1000\ntotal_inactive_file 234\n");
    osv_test_write_file(root, "cg/memory/memory.limit_in_bytes",
                        "9223372036854771712\n"); /* v1 "unlimited" */
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_version, 1);
    assert_int_equal(m.cgroup_limit, 268435456);
    assert_int_equal(m.cgroup_usage, 1234);
    assert_int_equal(m.cgroup_working_set, 1000); /* v1 counts the hierarchy: total_inactive_file */
    assert_int_equal(m.effective, 268435456);
    osv_test_rmtree(root);
}

/* In a container on cgroup v1 (or v2 without a cgroup namespace) the file system is mounted at the
 * container's own group, while /proc/self/cgroup names it from the hierarchy's root. */
static void container_mount_is_the_group(void **state)
{
    char root[256], self[300], cg[300];
    osv_sysmem_t m;
    (void)state;
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", "4:memory:/libpod_parent/libpod-0123abcd\n0::/libpod_parent/libpod-0123abcd\n");
    osv_test_write_file(root, "cg/memory/memory.limit_in_bytes", "536870912\n");
    osv_test_write_file(root, "cg/memory/memory.usage_in_bytes", "40000000\n");
    osv_test_write_file(root, "cg/memory/memory.stat", "total_inactive_file 1000000\n");
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_version, 1);
    assert_int_equal(m.cgroup_limit, 536870912);
    assert_int_equal(m.cgroup_usage, 40000000);
    assert_int_equal(m.cgroup_working_set, 39000000);
    osv_test_rmtree(root);

    /* A sub-group of the container's (its part of the path below the mount is kept), on v2. */
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", "0::/system.slice/docker-99.scope/app\n");
    osv_test_write_file(root, "cg/memory.max", "1073741824\n");
    osv_test_write_file(root, "cg/app/memory.max", "268435456\n");
    osv_test_write_file(root, "cg/app/memory.current", "1000\n");
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_version, 2);
    assert_int_equal(m.cgroup_limit, 268435456);
    assert_int_equal(m.cgroup_usage, 1000);
    osv_test_rmtree(root);

    /* On a host the group's directory exists: a suffix that names another group is never taken. */
    osv_test_tmpdir(root, sizeof root);
    snprintf(self, sizeof self, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", "0::/user.slice/b\n");
    osv_test_write_file(root, "cg/user.slice/b/cgroup.procs", "1\n");
    osv_test_write_file(root, "cg/b/memory.max", "1048576\n");
    osv_sysmem_read_at(cg, self, &m);
    assert_int_equal(m.cgroup_limit, 0);
    osv_test_rmtree(root);
}

static void no_cgroup_means_physical(void **state)
{
    osv_sysmem_t m;
    (void)state;
    osv_sysmem_read_at("/nonexistent", "/nonexistent/cgroup", &m);
    assert_int_equal(m.cgroup_version, 0);
    assert_int_equal(m.cgroup_limit, 0);
    assert_int_equal(m.effective, m.physical);
    osv_sysmem_read(&m); /* the real machine: must not fail, physical is known */
    assert_true(m.physical > (64ull << 20));
}

/* CPUs under a fake tree: `self` is /proc/self/cgroup, then (path, content) pairs ending in NULL. */
static int cpus_with(int allowed, const char *self, ...)
{
    char root[256], selfp[300], cg[300];
    va_list ap;
    osv_test_tmpdir(root, sizeof root);
    snprintf(selfp, sizeof selfp, "%s/self_cgroup", root);
    snprintf(cg, sizeof cg, "%s/cg", root);
    osv_test_write_file(root, "self_cgroup", self);
    va_start(ap, self);
    for (const char *path; (path = va_arg(ap, const char *));)
        osv_test_write_file(root, path, va_arg(ap, const char *));
    va_end(ap);
    int n = osv_sysmem_cpus_at(cg, selfp, allowed);
    osv_test_rmtree(root);
    return n;
}

static void cpus_v2_quota(void **state)
{
    (void)state;
    /* 1.5 CPUs keep two threads busy part of the time: rounded up */
    assert_int_equal(cpus_with(8, "0::/kubepods/pod/ctr\n", "cg/kubepods/pod/ctr/cpu.max", "150000 100000\n", NULL), 2);
    assert_int_equal(cpus_with(8, "0::/a\n", "cg/a/cpu.max", "50000 100000\n", NULL), 1);
    /* "max": no quota, the affinity mask decides */
    assert_int_equal(cpus_with(3, "0::/a\n", "cg/a/cpu.max", "max 100000\n", NULL), 3);
    /* a parent's quota bounds its children */
    assert_int_equal(cpus_with(8, "0::/a/b\n", "cg/a/b/cpu.max", "max 100000\n", "cg/a/cpu.max", "300000 100000\n",
                               NULL),
                     3);
    /* fewer CPUs in the mask than the quota: the mask */
    assert_int_equal(cpus_with(2, "0::/a\n", "cg/a/cpu.max", "400000 100000\n", NULL), 2);
    /* a container whose mount is its own group (no such path below the mount) */
    assert_int_equal(cpus_with(8, "0::/system.slice/libpod-77.scope\n", "cg/cpu.max", "200000 100000\n", NULL), 2);
    /* garbage is no quota */
    assert_int_equal(cpus_with(4, "0::/a\n", "cg/a/cpu.max", "lots\n", NULL), 4);
}

/* cgroup v1: a quota of `quota` µs per 100 000 µs in the cpu controller's folder `gdir` (under the root). */
static int cpus_v1(int allowed, const char *self, const char *gdir, const char *quota)
{
    char qpath[256], ppath[256];
    snprintf(qpath, sizeof qpath, "%s/cpu.cfs_quota_us", gdir);
    snprintf(ppath, sizeof ppath, "%s/cpu.cfs_period_us", gdir);
    return cpus_with(allowed, self, qpath, quota, ppath, "100000\n", NULL);
}

static void cpus_v1_quota(void **state)
{
    (void)state;
    assert_int_equal(cpus_v1(8, "9:memory:/x\n4:cpu,cpuacct:/grp\n", "cg/cpu/grp", "250000\n"), 3);
    assert_int_equal(cpus_v1(6, "4:cpu,cpuacct:/grp\n", "cg/cpu/grp", "-1\n"), 6);
    /* "cpuacct" alone is not the cpu controller */
    assert_int_equal(cpus_v1(6, "4:cpuacct:/grp\n", "cg/cpu/grp", "100000\n"), 6);
    /* the container's mount is its group */
    assert_int_equal(cpus_v1(8, "4:cpu,cpuacct:/libpod_parent/libpod-1\n", "cg/cpu", "100000\n"), 1);
}

static void cpus_without_cgroup(void **state)
{
    (void)state;
    assert_int_equal(osv_sysmem_cpus_at("/nonexistent", "/nonexistent/cgroup", 5), 5);
    assert_int_equal(osv_sysmem_cpus_at("/nonexistent", "/nonexistent/cgroup", 0), 1);
    assert_true(osv_sysmem_cpus() >= 1); /* the real machine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v2_limit_and_usage),
        cmocka_unit_test(v2_parent_limit_applies),
        cmocka_unit_test(v1_fallback),
        cmocka_unit_test(container_mount_is_the_group),
        cmocka_unit_test(no_cgroup_means_physical),
        cmocka_unit_test(cpus_v2_quota),
        cmocka_unit_test(cpus_v1_quota),
        cmocka_unit_test(cpus_without_cgroup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
