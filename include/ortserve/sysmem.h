/* ortserve/sysmem.h — how much memory and how many CPUs this process may use: cgroup v2, cgroup v1,
 * physical RAM, the affinity mask.
 *
 * Reads /proc/self/cgroup and the matching controller files. Used to size the slot pool (memory) and
 * the loops and workers (CPUs), and exported as metrics. No state; thread-safe. */
#ifndef ORTSERVE_SYSMEM_H
#define ORTSERVE_SYSMEM_H

#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct osv_sysmem {
    uint64_t physical;           /* physical RAM in bytes */
    uint64_t cgroup_limit;       /* memory limit of our cgroup; 0 = none found or unlimited */
    uint64_t cgroup_usage;       /* current usage charged to our cgroup; 0 when unknown */
    uint64_t cgroup_working_set; /* usage minus inactive file cache (which the kernel reclaims before
                                  * an OOM kill), as the kubelet counts it; 0 when unknown */
    int cgroup_version;          /* 2, 1, or 0 when no memory controller was found */
    uint64_t effective;          /* min(physical, cgroup_limit when set) */
} osv_sysmem_t;

/* Fills *out. Never fails: missing files leave the cgroup fields 0. The environment variables
 * ORTSERVE_CGROUP_ROOT (default /sys/fs/cgroup) and ORTSERVE_PROC_CGROUP (default /proc/self/cgroup)
 * move the files it reads. getenv: do not call while another thread changes the environment. */
OSV_API void osv_sysmem_read(osv_sysmem_t *out);

/* A budget of `want` bytes under the memory plan: when the cgroup has a limit, at most half of what
 * it has left (limit minus working set) once `committed` bytes promised elsewhere are kept out — the
 * other half stays for what no budget covers — but at least 1 MiB, so that a process in a group too
 * small for its load still starts (and answers 503 for what does not fit). Without a limit: want.
 * Pure function of *mem. */
OSV_API uint64_t osv_sysmem_share(const osv_sysmem_t *mem, uint64_t want, uint64_t committed);

/* Resident memory of this process in bytes (/proc/self/statm), 0 when unknown. Thread-safe. */
OSV_API uint64_t osv_sysmem_rss(void);

/* CPUs this process can keep busy: those its affinity mask allows (a cpuset, taskset), lowered to a
 * cgroup CPU quota rounded up (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us; the smallest over
 * the group and its ancestors); at least 1. Sizes the loops and workers left to their defaults, as a
 * container's `--cpus` or a Kubernetes CPU limit says. Reads the same environment as osv_sysmem_read. */
OSV_API int osv_sysmem_cpus(void);

/* The same from cgroup files under `root` and the membership file `self_cgroup`, with `allowed` CPUs in
 * the affinity mask: lets tests supply fake trees. */
OSV_API int osv_sysmem_cpus_at(const char *root, const char *self_cgroup, int allowed);

/* The same, reading cgroup files under `root` (normally "/sys/fs/cgroup") and the membership file
 * `self_cgroup` (normally "/proc/self/cgroup"): lets tests supply fake trees. */
OSV_API void osv_sysmem_read_at(const char *root, const char *self_cgroup, osv_sysmem_t *out);

#ifdef __cplusplus
}
#endif
#endif
