/* sysmem.c — memory and CPUs available to this process: cgroup v2 memory.max and cpu.max, cgroup v1
 * memory.limit_in_bytes and cpu.cfs_quota_us, physical RAM and the affinity mask. */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ortserve/sysmem.h"

/* Reads one unsigned number from a file; "max" and values ≥ 2^62 mean "no limit" (0). */
static uint64_t read_limit(const char *path)
{
    char buf[64];
    uint64_t v = 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    if (fgets(buf, sizeof buf, f) && strncmp(buf, "max", 3) != 0) {
        char *end;
        unsigned long long x = strtoull(buf, &end, 10);
        if (end != buf && x < (1ull << 62))
            v = x;
    }
    fclose(f);
    return v;
}

/* Finds our group path for the v2 hierarchy ("0::/path", ctl_name NULL) or the v1 controller `ctl_name`
 * ("N:...memory...:/path", "N:cpu,cpuacct:/path") in the /proc/self/cgroup format. */
static int find_group(const char *self_cgroup, const char *ctl_name, char *out, size_t cap)
{
    size_t want_len = ctl_name ? strlen(ctl_name) : 0;
    char line[1024];
    int found = 0;
    FILE *f = fopen(self_cgroup, "re");
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        char *path = c2 + 1;
        path[strcspn(path, "\n")] = '\0';
        const char *ctl = c1 + 1;
        int is_v2 = strncmp(line, "0", 1) == 0 && c1 == line + 1 && *ctl == '\0';
        int has_ctl = 0;
        for (const char *p = ctl; ctl_name && *p;) {
            size_t n = strcspn(p, ",");
            if (n == want_len && strncmp(p, ctl_name, n) == 0)
                has_ctl = 1;
            p += n + (p[n] == ',');
        }
        if ((!ctl_name && is_v2) || has_ctl) {
            snprintf(out, cap, "%s", path);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* One group's value read from its directory `gdir` (0: none set there); *present: `file` exists there. */
typedef uint64_t (*group_value_fn)(const char *gdir, const char *file, int *present);

/* The smallest value `read` finds on `group` under `dir` or on any of its ancestors (limits and quotas
 * nest); 0 when none is set. *own tells whether the group's own file exists. */
static uint64_t nested_min(const char *dir, const char *group, const char *file, group_value_fn read, int *own)
{
    char g[512], gdir[1024];
    uint64_t best = 0;
    int present;
    snprintf(g, sizeof g, "%s", strcmp(group, "/") ? group : "");
    *own = 0;
    for (int first = 1;; first = 0) {
        snprintf(gdir, sizeof gdir, "%s%s", dir, g);
        uint64_t v = read(gdir, file, &present);
        if (first)
            *own = present;
        if (v && (best == 0 || v < best))
            best = v;
        char *slash = strrchr(g, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    return best;
}

/* A memory limit file (memory.max, memory.limit_in_bytes) in `gdir`. */
static uint64_t limit_value(const char *gdir, const char *file, int *present)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", gdir, file);
    *present = access(path, R_OK) == 0;
    return *present ? read_limit(path) : 0;
}

/* The value of `key` in a memory.stat file ("key value" lines); 0 when absent. */
static uint64_t stat_value(const char *path, const char *key)
{
    char line[256];
    uint64_t v = 0;
    size_t klen = strlen(key);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            v = strtoull(line + klen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* usage - inactive_file, read from the group directory `gdir` (v2 names, or v1's "total_" ones). */
static uint64_t working_set(const char *gdir, uint64_t usage, int v1)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/memory.stat", gdir);
    uint64_t inactive = stat_value(path, v1 ? "total_inactive_file" : "inactive_file");
    return inactive < usage ? usage - inactive : 0;
}

/* Our group as a path under the mount `dir`. /proc/self/cgroup names it from the hierarchy's root,
 * but a container's cgroup file system is mounted at its own group (cgroup v1, or v2 without a cgroup
 * namespace: /sys/fs/cgroup/memory is /libpod_parent/libpod-<id>), where that path does not exist:
 * the longest suffix of `group` under which `dir` holds `file` is ours ("" for the mount's root). When
 * the group's directory exists as named, or no suffix fits, `group` is left as it was. */
static void mounted_group(const char *dir, char *group, const char *file)
{
    char path[1200];
    struct stat st;
    snprintf(path, sizeof path, "%s%s", dir, strcmp(group, "/") ? group : "");
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return;
    for (const char *g = group;; g = strchr(g + 1, '/')) {
        const char *rel = g && strcmp(g, "/") ? g : "";
        snprintf(path, sizeof path, "%s%s/%s", dir, rel, file);
        if (access(path, R_OK) == 0) {
            memmove(group, rel, strlen(rel) + 1);
            if (!*group)
                strcpy(group, "/");
            return;
        }
        if (!g)
            return;
    }
}

void osv_sysmem_read_at(const char *root, const char *self_cgroup, osv_sysmem_t *out)
{
    char group[512], dir[600], path[1200];
    long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
    int found = 0;
    memset(out, 0, sizeof *out);
    out->physical = pages > 0 && psize > 0 ? (uint64_t)pages * (uint64_t)psize : 0;

    if (find_group(self_cgroup, NULL, group, sizeof group)) {
        mounted_group(root, group, "memory.max");
        uint64_t lim = nested_min(root, group, "memory.max", limit_value, &found);
        if (found) {
            out->cgroup_version = 2;
            out->cgroup_limit = lim;
            snprintf(dir, sizeof dir, "%s%s", root, strcmp(group, "/") ? group : "");
            snprintf(path, sizeof path, "%s/memory.current", dir);
            out->cgroup_usage = read_limit(path);
            out->cgroup_working_set = working_set(dir, out->cgroup_usage, 0);
        }
    }
    if (out->cgroup_version == 0 && find_group(self_cgroup, "memory", group, sizeof group)) {
        snprintf(dir, sizeof dir, "%s/memory", root);
        mounted_group(dir, group, "memory.limit_in_bytes");
        uint64_t lim = nested_min(dir, group, "memory.limit_in_bytes", limit_value, &found);
        if (found) {
            out->cgroup_version = 1;
            out->cgroup_limit = lim;
            char gdir[1200];
            snprintf(gdir, sizeof gdir, "%s%s", dir, strcmp(group, "/") ? group : "");
            snprintf(path, sizeof path, "%s/memory.usage_in_bytes", gdir);
            out->cgroup_usage = read_limit(path);
            out->cgroup_working_set = working_set(gdir, out->cgroup_usage, 1);
        }
    }
    out->effective = out->physical;
    if (out->cgroup_limit && (out->effective == 0 || out->cgroup_limit < out->effective))
        out->effective = out->cgroup_limit;
}

/* ORTSERVE_CGROUP_ROOT and ORTSERVE_PROC_CGROUP point at a cgroup file system mounted elsewhere
 * (and let end-to-end tests drive the memory guard with a fake tree). */
void osv_sysmem_read(osv_sysmem_t *out)
{
    const char *root = getenv("ORTSERVE_CGROUP_ROOT"), *self = getenv("ORTSERVE_PROC_CGROUP");
    osv_sysmem_read_at(root && *root ? root : "/sys/fs/cgroup", self && *self ? self : "/proc/self/cgroup",
                       out);
}

/* ---- CPUs ---------------------------------------------------------------------------------------------- */

/* A quota of `quota` µs per `period` µs as whole CPUs, rounded up (1.5 CPUs keep two threads busy part of
 * the time); 0 for no quota or a file that does not say. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = quota / period + (quota % period != 0);
    return n > 4096 ? 4096 : (int)n;
}

/* cgroup v2's cpu.max ("max 100000" or "150000 100000"), `file` in `gdir`. */
static uint64_t v2_cpus(const char *gdir, const char *file, int *present)
{
    char buf[96], path[1300];
    long long quota = 0, period = 0;
    snprintf(path, sizeof path, "%s/%s", gdir, file);
    FILE *f = fopen(path, "re");
    if (!(*present = f != NULL))
        return 0;
    if (fgets(buf, sizeof buf, f) && strncmp(buf, "max", 3) != 0 && sscanf(buf, "%lld %lld", &quota, &period) != 2)
        quota = 0;
    fclose(f);
    return (uint64_t)quota_cpus(quota, period);
}

/* cgroup v1's quota, `file` (cpu.cfs_quota_us, -1: none) over cpu.cfs_period_us, in `gdir`. */
static uint64_t v1_cpus(const char *gdir, const char *file, int *present)
{
    char path[1300];
    long long quota = 0, period = 0;
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", gdir, file);
    if ((*present = (f = fopen(path, "re")) != NULL)) {
        if (fscanf(f, "%lld", &quota) != 1)
            quota = 0;
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", gdir);
    if (quota > 0 && (f = fopen(path, "re"))) {
        if (fscanf(f, "%lld", &period) != 1)
            period = 0;
        fclose(f);
    }
    return (uint64_t)quota_cpus(quota, period);
}

int osv_sysmem_cpus_at(const char *root, const char *self_cgroup, int allowed)
{
    char group[512], dir[600];
    uint64_t quota = 0;
    int own;
    if (find_group(self_cgroup, NULL, group, sizeof group)) {
        mounted_group(root, group, "cpu.max");
        quota = nested_min(root, group, "cpu.max", v2_cpus, &own);
    }
    if (!quota && find_group(self_cgroup, "cpu", group, sizeof group)) {
        snprintf(dir, sizeof dir, "%s/cpu", root);
        mounted_group(dir, group, "cpu.cfs_quota_us");
        quota = nested_min(dir, group, "cpu.cfs_quota_us", v1_cpus, &own);
    }
    if (allowed < 1)
        allowed = 1;
    return quota && quota < (uint64_t)allowed ? (int)quota : allowed;
}

/* The CPUs the affinity mask allows (a cpuset, taskset), else the online ones. */
static int allowed_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int osv_sysmem_cpus(void)
{
    const char *root = getenv("ORTSERVE_CGROUP_ROOT"), *self = getenv("ORTSERVE_PROC_CGROUP");
    return osv_sysmem_cpus_at(root && *root ? root : "/sys/fs/cgroup", self && *self ? self : "/proc/self/cgroup",
                              allowed_cpus());
}

uint64_t osv_sysmem_rss(void)
{
    unsigned long long size = 0, resident = 0;
    long page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f)
        return 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

uint64_t osv_sysmem_share(const osv_sysmem_t *mem, uint64_t want, uint64_t committed)
{
    uint64_t left;
    if (!mem->cgroup_limit || !mem->cgroup_working_set)
        return want;
    left = mem->cgroup_working_set < mem->cgroup_limit ? mem->cgroup_limit - mem->cgroup_working_set : 0;
    left = left > committed ? left - committed : 0;
    if (want <= left / 2)
        return want;
    return left / 2 > (1ull << 20) ? left / 2 : 1ull << 20;
}
